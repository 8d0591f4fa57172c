//! The working state of one evaluation: the plan being built and what it
//! implies for every node (resources in use) and for the job (where its
//! allocations are), so later placements see earlier ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proto::model::{Allocation, Job};

use super::constraint::resolve_target;
use super::plan::Plan;
use super::resources::NodeUsage;
use super::rng::SeededRng;
use crate::state::Tables;

/// Separates the random streams derived from the seed.
const STREAM_IDS: u64 = 1;
const STREAM_PORTS: u64 = 2;
/// Stream for shuffling candidate nodes.
pub const STREAM_SHUFFLE: u64 = 3;

/// The plan under construction and its consequences.
pub struct EvalState<'a> {
    /// The snapshot the evaluation reads.
    pub state: &'a Tables,
    /// The plan being built.
    pub plan: Plan,
    /// Generator of ids (allocations, evaluations, deployments).
    pub ids: SeededRng,
    /// Generator of dynamic ports.
    pub ports: SeededRng,
    usage: HashMap<String, NodeUsage>,
    /// Proposed live allocations of the job: id -> (node, group).
    job_allocs: BTreeMap<String, (String, String)>,
    /// Proposed live allocations of the job per node: node -> id -> group.
    job_by_node: HashMap<String, BTreeMap<String, String>>,
    /// Counts of the job's (or a group's) live allocations per value of a
    /// node property, built on first use and kept up to date.
    property_counts: HashMap<(String, Option<String>), BTreeMap<String, u64>>,
    /// The evaluation's job as the state holds it: placed allocations
    /// share it instead of each getting a copy.
    job: Option<Arc<Job>>,
}

impl<'a> EvalState<'a> {
    /// A fresh state for an evaluation of job `(namespace, job_id)`.
    pub fn new(state: &'a Tables, seed: u64, plan: Plan, namespace: &str, job_id: &str) -> Self {
        let mut out = Self {
            state,
            plan,
            ids: SeededRng::new(seed, STREAM_IDS),
            ports: SeededRng::new(seed, STREAM_PORTS),
            usage: HashMap::new(),
            job_allocs: BTreeMap::new(),
            job_by_node: HashMap::new(),
            property_counts: HashMap::new(),
            job: state.job(namespace, job_id),
        };
        for alloc in state.allocs_by_job(namespace, job_id) {
            if !alloc.terminal() {
                out.track_job_alloc(&alloc);
            }
        }
        out
    }

    /// `job` as the allocations of this plan hold it: the state's own
    /// `Arc` when `job` is the evaluation's job (always, in the
    /// schedulers), a copy otherwise.
    pub fn job_arc(&self, job: &Job) -> Arc<Job> {
        match &self.job {
            Some(shared) if std::ptr::eq(Arc::as_ptr(shared), job) => shared.clone(),
            _ => Arc::new(job.clone()),
        }
    }

    fn track_job_alloc(&mut self, alloc: &Allocation) {
        self.job_allocs.insert(
            alloc.id.clone(),
            (alloc.node_id.clone(), alloc.task_group.clone()),
        );
        self.job_by_node
            .entry(alloc.node_id.clone())
            .or_default()
            .insert(alloc.id.clone(), alloc.task_group.clone());
        let node = self.state.nodes.get(&alloc.node_id).cloned();
        for ((attribute, group), counts) in &mut self.property_counts {
            if group.as_ref().is_some_and(|g| *g != alloc.task_group) {
                continue;
            }
            if let Some(value) = node.as_deref().and_then(|n| resolve_target(attribute, n)) {
                *counts.entry(value.to_string()).or_default() += 1;
            }
        }
    }

    fn untrack_job_alloc(&mut self, id: &str) {
        let Some((node_id, group)) = self.job_allocs.remove(id) else {
            return;
        };
        if let Some(on_node) = self.job_by_node.get_mut(&node_id) {
            on_node.remove(id);
        }
        let node = self.state.nodes.get(&node_id).cloned();
        for ((attribute, scope), counts) in &mut self.property_counts {
            if scope.as_ref().is_some_and(|g| *g != group) {
                continue;
            }
            if let Some(value) = node.as_deref().and_then(|n| resolve_target(attribute, n)) {
                if let Some(count) = counts.get_mut(value) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        counts.remove(value);
                    }
                }
            }
        }
    }

    /// Whether the state's allocation `id` is live and counted on its node.
    fn live_in_state(&self, id: &str) -> Option<Allocation> {
        self.state
            .allocs
            .get(id)
            .filter(|alloc| !alloc.terminal())
            .map(|alloc| (**alloc).clone())
    }

    /// Plans a stop (or eviction, or lost marking) of `alloc` (the updated
    /// copy, with its new statuses).
    pub fn stop(&mut self, alloc: Allocation) {
        if let Some(old) = self.live_in_state(&alloc.id) {
            let replaced = self
                .plan
                .node_allocation
                .get(&old.node_id)
                .is_some_and(|list| list.iter().any(|a| a.id == old.id));
            if !replaced {
                if let Some(usage) = self.usage.get_mut(&old.node_id) {
                    usage.remove(&old);
                }
            }
        }
        self.untrack_job_alloc(&alloc.id);
        self.plan.append_stop(alloc);
    }

    /// Undoes a planned stop.
    pub fn unstop(&mut self, node_id: &str, id: &str) {
        if self.plan.pop_stop(node_id, id).is_none() {
            return;
        }
        if let Some(old) = self.live_in_state(id) {
            if let Some(usage) = self.usage.get_mut(node_id) {
                usage.add(&old);
            }
            self.track_job_alloc(&old);
        }
    }

    /// Plans a new allocation or an update of an existing one.
    pub fn place(&mut self, alloc: Allocation) {
        if let Some(usage) = self.usage.get_mut(&alloc.node_id) {
            if let Some(old) = self.state.allocs.get(&alloc.id).filter(|a| !a.terminal()) {
                usage.remove(old);
            }
            if !alloc.terminal() {
                usage.add(&alloc);
            }
        }
        self.untrack_job_alloc(&alloc.id);
        if !alloc.terminal() {
            self.track_job_alloc(&alloc);
        }
        self.plan.append_alloc(alloc);
    }

    /// What the allocations that would run on the node use.
    pub fn usage(&mut self, node_id: &str) -> &NodeUsage {
        if !self.usage.contains_key(node_id) {
            let usage = self.compute_usage(node_id);
            self.usage.insert(node_id.to_string(), usage);
        }
        &self.usage[node_id]
    }

    fn compute_usage(&self, node_id: &str) -> NodeUsage {
        let stopped: Vec<&str> = self
            .plan
            .node_update
            .get(node_id)
            .map(|l| l.iter().map(|a| a.id.as_str()).collect())
            .unwrap_or_default();
        let planned = self.plan.node_allocation.get(node_id);
        let mut usage = NodeUsage::default();
        for alloc in self.state.allocs_by_node(node_id) {
            if alloc.terminal()
                || stopped.contains(&alloc.id.as_str())
                || planned.is_some_and(|l| l.iter().any(|a| a.id == alloc.id))
            {
                continue;
            }
            usage.add(&alloc);
        }
        for alloc in planned.into_iter().flatten() {
            if !alloc.terminal() {
                usage.add(alloc);
            }
        }
        usage
    }

    /// Live allocations of the job on a node (of one group, if given).
    pub fn job_allocs_on_node(&self, node_id: &str, group: Option<&str>) -> usize {
        self.job_by_node.get(node_id).map_or(0, |allocs| {
            allocs
                .values()
                .filter(|g| group.is_none_or(|want| *g == want))
                .count()
        })
    }

    /// Live allocations of the job (of one group, if given) per value of the
    /// node property `attribute` (e.g. `${node.datacenter}`).
    pub fn property_counts(
        &mut self,
        attribute: &str,
        group: Option<&str>,
    ) -> &BTreeMap<String, u64> {
        let key = (attribute.to_string(), group.map(str::to_string));
        if !self.property_counts.contains_key(&key) {
            let mut counts = BTreeMap::new();
            for (node_id, alloc_group) in self.job_allocs.values() {
                if group.is_some_and(|g| g != alloc_group) {
                    continue;
                }
                let node = self.state.nodes.get(node_id);
                if let Some(value) = node.and_then(|n| resolve_target(attribute, n)) {
                    *counts.entry(value.to_string()).or_default() += 1;
                }
            }
            self.property_counts.insert(key.clone(), counts);
        }
        &self.property_counts[&key]
    }
}
