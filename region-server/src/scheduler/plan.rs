//! Plans (what an evaluation wants committed), their annotations, and the
//! re-check the leader's plan applier runs against newer state.

use std::collections::{BTreeMap, BTreeSet};

use proto::model::{Allocation, Deployment, Job};
use serde::{Deserialize, Serialize};

use super::resources::NodeUsage;
use crate::state::{table, Tables};

/// A change of an existing deployment's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentStatusUpdate {
    /// The deployment.
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    /// Its new status (`successful`, `cancelled`, ...).
    pub status: String,
    /// Why.
    pub status_description: String,
}

/// What the scheduler wants committed for one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Plan {
    /// The evaluation that made the plan.
    #[serde(rename = "EvalID")]
    pub eval_id: String,
    /// The evaluation's priority.
    pub priority: i64,
    /// The job version the plan was made for (`None` when it was purged).
    pub job: Option<Job>,
    /// Commit everything or nothing (the job's `AllAtOnce`).
    pub all_at_once: bool,
    /// Allocations to stop, evict or mark lost, per node: full allocations
    /// with their new `DesiredStatus`, `DesiredDescription` and, for lost
    /// ones, `ClientStatus`.
    pub node_update: BTreeMap<String, Vec<Allocation>>,
    /// New or updated allocations per node: full allocations with `Job`,
    /// `Resources` and `AllocatedResources`.
    pub node_allocation: BTreeMap<String, Vec<Allocation>>,
    /// A deployment to create.
    pub deployment: Option<Deployment>,
    /// Status changes of existing deployments.
    pub deployment_updates: Vec<DeploymentStatusUpdate>,
    /// The Raft index of the snapshot the plan was made from.
    pub snapshot_index: u64,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_no_op(&self) -> bool {
        self.node_update.values().all(Vec::is_empty)
            && self.node_allocation.values().all(Vec::is_empty)
            && self.deployment.is_none()
            && self.deployment_updates.is_empty()
    }

    /// Adds a stop (or eviction, or lost marking) of an allocation.
    pub fn append_stop(&mut self, alloc: Allocation) {
        self.node_update
            .entry(alloc.node_id.clone())
            .or_default()
            .push(alloc);
    }

    /// Removes the stop of allocation `id` on `node_id`, if planned.
    pub fn pop_stop(&mut self, node_id: &str, id: &str) -> Option<Allocation> {
        let list = self.node_update.get_mut(node_id)?;
        let pos = list.iter().position(|alloc| alloc.id == id)?;
        let alloc = list.remove(pos);
        if list.is_empty() {
            self.node_update.remove(node_id);
        }
        Some(alloc)
    }

    /// Adds a new or updated allocation.
    pub fn append_alloc(&mut self, alloc: Allocation) {
        self.node_allocation
            .entry(alloc.node_id.clone())
            .or_default()
            .push(alloc);
    }

    /// Every allocation of the plan that is new (not in `state`).
    pub fn placements<'a>(&'a self, state: &'a Tables) -> impl Iterator<Item = &'a Allocation> {
        self.node_allocation
            .values()
            .flatten()
            .filter(|alloc| !state.allocs.contains_key(&alloc.id))
    }
}

/// The part of a plan that still holds against newer state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlanResult {
    /// Stops to commit, per node.
    pub node_update: BTreeMap<String, Vec<Allocation>>,
    /// Allocations to commit, per node.
    pub node_allocation: BTreeMap<String, Vec<Allocation>>,
    /// The deployment to create, if still wanted.
    pub deployment: Option<Deployment>,
    /// Deployment status changes to commit.
    pub deployment_updates: Vec<DeploymentStatusUpdate>,
    /// Nodes whose part of the plan was rejected, with why.
    pub rejected_nodes: Vec<String>,
    /// Why each rejected node was rejected.
    pub rejection_reasons: BTreeMap<String, String>,
    /// When something was rejected: the index the scheduler's state must
    /// reach before it retries (the newest node or allocation change), so
    /// it sees what made the plan fail. 0 when everything was accepted.
    pub refresh_index: u64,
}

impl PlanResult {
    /// Whether the whole plan was accepted.
    pub fn is_full_commit(&self) -> bool {
        self.rejected_nodes.is_empty()
    }
}

/// Re-checks `plan` against `state` (newer than the snapshot the plan was
/// made from), node by node, as the leader's plan applier does before
/// committing (optimistic concurrency between scheduler workers):
///
/// * a node that only loses allocations (or only sees terminal allocations
///   updated) always accepts its part;
/// * a node that receives allocations must still exist and be ready; new
///   allocations also need it eligible and not draining (in-place updates
///   of allocations already on it do not);
/// * everything that would then run on the node (its non-terminal
///   allocations minus the plan's stops and updates, plus the plan's
///   allocations) must fit its resources, without port or core collisions.
///
/// Returns the accepted subset and the rejected nodes. With
/// `plan.all_at_once`, one rejected node rejects the whole plan.
pub fn evaluate_plan(state: &Tables, plan: &Plan) -> PlanResult {
    let mut result = PlanResult::default();
    let nodes: BTreeSet<&String> = plan
        .node_update
        .keys()
        .chain(plan.node_allocation.keys())
        .collect();
    for node_id in nodes {
        match evaluate_node(state, plan, node_id) {
            Ok(()) => {
                if let Some(update) = plan.node_update.get(node_id).filter(|u| !u.is_empty()) {
                    result.node_update.insert(node_id.clone(), update.clone());
                }
                if let Some(allocs) = plan.node_allocation.get(node_id).filter(|a| !a.is_empty()) {
                    result
                        .node_allocation
                        .insert(node_id.clone(), allocs.clone());
                }
            }
            Err(reason) => {
                result.rejected_nodes.push(node_id.clone());
                result.rejection_reasons.insert(node_id.clone(), reason);
            }
        }
    }
    if !result.rejected_nodes.is_empty() {
        result.refresh_index = state.max_index(&[table::NODES, table::ALLOCS]).max(1);
        if plan.all_at_once {
            result.node_update.clear();
            result.node_allocation.clear();
            return result;
        }
    }
    result.deployment = plan.deployment.clone();
    result.deployment_updates = plan.deployment_updates.clone();
    result
}

fn evaluate_node(state: &Tables, plan: &Plan, node_id: &str) -> Result<(), String> {
    let Some(allocs) = plan.node_allocation.get(node_id).filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    // Updates of terminal allocations (follow-up evaluation ids) need
    // nothing from the node.
    if allocs.iter().all(Allocation::terminal) {
        return Ok(());
    }
    let Some(node) = state.nodes.get(node_id) else {
        return Err("node does not exist".to_string());
    };
    if node.status != proto::model::NODE_STATUS_READY {
        return Err(format!("node is {}, not ready for placements", node.status));
    }
    let existing = state.allocs_by_node(node_id);
    let existing_ids: BTreeSet<&str> = existing.iter().map(|a| a.id.as_str()).collect();
    let has_new = allocs
        .iter()
        .any(|alloc| !alloc.terminal() && !existing_ids.contains(alloc.id.as_str()));
    if has_new && !node.ready_for_scheduling() {
        return Err("node is ineligible or draining".to_string());
    }
    let mut removed: BTreeSet<&str> = allocs.iter().map(|a| a.id.as_str()).collect();
    if let Some(update) = plan.node_update.get(node_id) {
        removed.extend(update.iter().map(|a| a.id.as_str()));
    }
    let mut usage = NodeUsage::default();
    for alloc in &existing {
        if !alloc.terminal() && !removed.contains(alloc.id.as_str()) {
            usage.add(alloc);
        }
    }
    for alloc in allocs {
        if !alloc.terminal() {
            usage.add(alloc);
        }
    }
    usage
        .fits(node)
        .map_err(|dimension| format!("resources exhausted: {dimension}"))
}
