//! The reconciler of service and batch jobs: compares the groups' desired
//! allocations with the existing ones and decides what to place, stop,
//! update in place, replace, migrate and reschedule (Nomad's
//! `allocReconciler`, simplified: no disconnect handling), with Nomad's
//! deployments: canaries placed first and kept beside the old allocations
//! until promotion, destructive updates limited to `MaxParallel` minus the
//! deployment's allocations not yet healthy, nothing more while a
//! deployment is paused, failed or has an unhealthy allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proto::model::{
    Allocation, Deployment, DeploymentState, Evaluation, Job, Node, TaskGroup,
    ALLOC_CLIENT_COMPLETE, ALLOC_CLIENT_FAILED, ALLOC_CLIENT_LOST, ALLOC_DESIRED_EVICT,
    ALLOC_DESIRED_STOP, DEPLOYMENT_STATUS_CANCELLED, DEPLOYMENT_STATUS_FAILED,
    DEPLOYMENT_STATUS_PAUSED, DEPLOYMENT_STATUS_PENDING, DEPLOYMENT_STATUS_RUNNING,
    DEPLOYMENT_STATUS_SUCCESSFUL, EVAL_STATUS_PENDING, EVAL_TRIGGER_RETRY_FAILED_ALLOC,
    NODE_STATUS_DISCONNECTED,
};

use super::feasible::{node_draining, node_lost};
use super::names::{name_index, NameIndex};
use super::plan::DeploymentStatusUpdate;
use super::reschedule::{next_reschedule_time, policy_of, ran_successfully};
use super::rng::SeededRng;
use super::DesiredUpdates;
use proto::model::time::format_rfc3339 as format_rfc3339_nanos;

/// Stop description: the allocation is no longer wanted.
pub const ALLOC_NOT_NEEDED: &str = "alloc not needed due to job update";
/// Stop description: the allocation moves off its draining node.
pub const ALLOC_MIGRATING: &str = "alloc is being migrated";
/// Stop description: the allocation is replaced by a new version.
pub const ALLOC_UPDATING: &str = "alloc is being updated due to job update";
/// Stop description: the allocation's node is down.
pub const ALLOC_LOST: &str = "alloc is lost since its node is down";
/// Stop description: the failed allocation was replaced.
pub const ALLOC_RESCHEDULED: &str = "alloc was rescheduled because it failed";
/// Stop description: the node no longer qualifies for the job.
pub const ALLOC_NODE_TAINTED: &str = "alloc not needed as node is tainted";
/// Stop description: the node no longer satisfies the job's constraints.
pub const ALLOC_NODE_INFEASIBLE: &str = "alloc not needed as node no longer satisfies the job";
/// Description of follow-up evaluations for delayed rescheduling.
pub const RESCHEDULING_FOLLOWUP_DESC: &str = "created for delayed rescheduling";
/// Failed allocations whose reschedule times are this close share one
/// follow-up evaluation.
pub const BATCHED_FAILED_ALLOC_WINDOW: i64 = 5 * proto::model::SECOND;
/// A failed allocation due this soon is rescheduled now.
pub const RESCHEDULE_WINDOW: i64 = proto::model::SECOND;
/// Description of a deployment waiting for its canaries to be promoted.
pub const DEPLOYMENT_DESC_NEEDS_PROMOTION: &str =
    "Deployment is running but requires manual promotion";
/// Description of a deployment whose canaries are promoted automatically.
pub const DEPLOYMENT_DESC_AUTO_PROMOTION: &str =
    "Deployment is running pending automatic promotion";

/// How an existing allocation relates to a new job version.
#[derive(Debug, Clone)]
pub enum UpdateDecision {
    /// Nothing to do.
    Ignore,
    /// Update in place: the updated allocation.
    InPlace(Box<Allocation>),
    /// Replace it.
    Destructive,
}

/// One allocation to place.
#[derive(Debug, Clone)]
pub struct PlaceRequest {
    /// Its name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// The allocation it replaces, if any.
    pub previous: Option<Arc<Allocation>>,
    /// It replaces a failed allocation.
    pub reschedule: bool,
    /// It replaces a lost allocation.
    pub lost: bool,
    /// It replaces a migrating allocation.
    pub migrate: bool,
    /// It replaces an allocation of an older version, which must be stopped
    /// first (and kept if the placement fails).
    pub destructive: bool,
    /// It is a canary of the deployment.
    pub canary: bool,
}

impl PlaceRequest {
    fn new(name: String, group: &str) -> Self {
        Self {
            name,
            group: group.to_string(),
            previous: None,
            reschedule: false,
            lost: false,
            migrate: false,
            destructive: false,
            canary: false,
        }
    }
}

/// One allocation to stop.
#[derive(Debug, Clone)]
pub struct StopRequest {
    /// The allocation.
    pub alloc: Arc<Allocation>,
    /// Why.
    pub description: &'static str,
    /// New client status (`lost`), if any.
    pub client_status: Option<&'static str>,
}

/// What the reconciler decided.
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// New placements (fresh, lost replacements, migrations, reschedules).
    pub place: Vec<PlaceRequest>,
    /// Replacements of allocations of an older version.
    pub destructive: Vec<PlaceRequest>,
    /// In-place updates.
    pub inplace: Vec<Allocation>,
    /// Stops.
    pub stop: Vec<StopRequest>,
    /// Allocations updated without a state change (follow-up eval ids).
    pub attribute_updates: Vec<Allocation>,
    /// Follow-up evaluations for delayed rescheduling.
    pub followup_evals: Vec<Evaluation>,
    /// A deployment to create.
    pub deployment: Option<Deployment>,
    /// The deployment placements belong to (new or existing).
    pub deployment_id: Option<String>,
    /// Deployment status changes.
    pub deployment_updates: Vec<DeploymentStatusUpdate>,
    /// Per-group counts for the plan annotations.
    pub desired: BTreeMap<String, DesiredUpdates>,
}

/// Inputs of the reconciler.
pub struct Reconciler<'a, F>
where
    F: FnMut(&Allocation, &Job, &TaskGroup) -> UpdateDecision,
{
    /// The job (`None` when purged).
    pub job: Option<&'a Job>,
    /// ID of the job.
    pub job_id: &'a str,
    /// Batch semantics: completed allocations are done.
    pub batch: bool,
    /// The job's allocations (every status).
    pub allocs: Vec<Arc<Allocation>>,
    /// Nodes of those allocations that are down, disconnected, draining or
    /// gone (`None`).
    pub tainted: BTreeMap<String, Option<Arc<Node>>>,
    /// Treat allocations on draining nodes as migrating.
    pub migrate_on_drain: bool,
    /// The evaluation being processed.
    pub eval: &'a Evaluation,
    /// Now, in Unix nanoseconds.
    pub now: i64,
    /// The job's latest deployment.
    pub deployment: Option<Arc<Deployment>>,
    /// In-place or destructive?
    pub update_fn: F,
    /// Id generator.
    pub ids: &'a mut SeededRng,
}

/// Sorts allocations by name index, then creation.
fn sort_allocs(allocs: &mut [Arc<Allocation>]) {
    allocs.sort_by(|a, b| {
        (name_index(&a.name), a.create_index, &a.id).cmp(&(
            name_index(&b.name),
            b.create_index,
            &b.id,
        ))
    });
}

fn job_modify_index_of(alloc: &Allocation) -> Option<u64> {
    alloc.job.as_ref().map(|job| job.job_modify_index)
}

/// Nomad's `shouldFilter`: (counts as untainted, ignore entirely).
fn should_filter(alloc: &Allocation, batch: bool) -> (bool, bool) {
    if batch {
        match alloc.desired_status.as_str() {
            ALLOC_DESIRED_STOP => {
                return if ran_successfully(alloc) {
                    (true, false)
                } else {
                    (false, true)
                };
            }
            ALLOC_DESIRED_EVICT => return (false, true),
            _ => {}
        }
        if alloc.client_status == ALLOC_CLIENT_FAILED {
            return (false, false);
        }
        return (true, false);
    }
    if matches!(
        alloc.desired_status.as_str(),
        ALLOC_DESIRED_STOP | ALLOC_DESIRED_EVICT
    ) {
        return (false, true);
    }
    if matches!(
        alloc.client_status.as_str(),
        ALLOC_CLIENT_COMPLETE | ALLOC_CLIENT_LOST
    ) {
        return (false, true);
    }
    (false, false)
}

fn health(alloc: &Allocation) -> Option<bool> {
    alloc
        .deployment_status
        .as_ref()
        .and_then(|status| status.healthy)
}

impl<F> Reconciler<'_, F>
where
    F: FnMut(&Allocation, &Job, &TaskGroup) -> UpdateDecision,
{
    /// Runs the reconciliation.
    pub fn compute(mut self) -> Reconciliation {
        let mut out = Reconciliation::default();
        let mut by_group: BTreeMap<String, Vec<Arc<Allocation>>> = BTreeMap::new();
        for alloc in std::mem::take(&mut self.allocs) {
            by_group
                .entry(alloc.task_group.clone())
                .or_default()
                .push(alloc);
        }
        for allocs in by_group.values_mut() {
            sort_allocs(allocs);
        }

        let job = match self.job {
            Some(job) if !job.stop && !job.is_template() => job,
            _ => {
                self.handle_stop(&by_group, &mut out);
                return out;
            }
        };

        // Deployment bookkeeping (service jobs only): the latest deployment
        // is current while it deploys this job version and has not
        // succeeded; otherwise it is old (and cancelled if still active).
        let mut current_deployment: Option<Deployment> = None;
        let mut old_deployment: Option<Arc<Deployment>> = None;
        if !self.batch {
            if let Some(latest) = &self.deployment {
                let same_version = latest.job_version == job.version
                    && latest.job_create_index == job.create_index;
                if same_version && latest.status != DEPLOYMENT_STATUS_SUCCESSFUL {
                    current_deployment = Some((**latest).clone());
                } else {
                    if !same_version && latest.active() {
                        out.deployment_updates.push(DeploymentStatusUpdate {
                            deployment_id: latest.id.clone(),
                            status: DEPLOYMENT_STATUS_CANCELLED.to_string(),
                            status_description: "Cancelled due to newer version of job".to_string(),
                        });
                    }
                    old_deployment = Some(latest.clone());
                }
            }
        }
        let mut new_deployment: Option<Deployment> = None;
        let mut complete = true;

        // Groups no longer in the job: stop everything.
        for (name, allocs) in &by_group {
            if job.task_group(name).is_none() {
                let desired = out.desired.entry(name.clone()).or_default();
                for alloc in allocs.iter().filter(|a| !a.terminal()) {
                    desired.stop += 1;
                    out.stop.push(StopRequest {
                        alloc: alloc.clone(),
                        description: ALLOC_NOT_NEEDED,
                        client_status: None,
                    });
                }
            }
        }

        for group in &job.task_groups {
            let allocs = by_group.remove(&group.name).unwrap_or_default();
            let group_complete = self.compute_group(
                job,
                group,
                allocs,
                current_deployment.as_ref(),
                old_deployment.as_deref(),
                &mut new_deployment,
                &mut out,
            );
            complete &= group_complete;
        }

        if let Some(deployment) = &current_deployment {
            if complete && deployment.active() {
                out.deployment_updates.push(DeploymentStatusUpdate {
                    deployment_id: deployment.id.clone(),
                    status: DEPLOYMENT_STATUS_SUCCESSFUL.to_string(),
                    status_description: "Deployment completed successfully".to_string(),
                });
            }
            if deployment.active() {
                out.deployment_id = Some(deployment.id.clone());
            }
        }
        if let Some(mut deployment) = new_deployment {
            let needs_promotion = deployment
                .task_groups
                .values()
                .any(|s| s.desired_canaries > 0 && !s.promoted);
            if needs_promotion {
                let auto = deployment
                    .task_groups
                    .values()
                    .filter(|s| s.desired_canaries > 0)
                    .all(|s| s.auto_promote);
                deployment.status_description = if auto {
                    DEPLOYMENT_DESC_AUTO_PROMOTION
                } else {
                    DEPLOYMENT_DESC_NEEDS_PROMOTION
                }
                .to_string();
            }
            out.deployment_id = Some(deployment.id.clone());
            out.deployment = Some(deployment);
        }
        out
    }

    fn handle_stop(
        &mut self,
        by_group: &BTreeMap<String, Vec<Arc<Allocation>>>,
        out: &mut Reconciliation,
    ) {
        if let Some(latest) = &self.deployment {
            if latest.active() {
                out.deployment_updates.push(DeploymentStatusUpdate {
                    deployment_id: latest.id.clone(),
                    status: DEPLOYMENT_STATUS_CANCELLED.to_string(),
                    status_description: "Cancelled because job is stopped".to_string(),
                });
            }
        }
        for (name, allocs) in by_group {
            let desired = out.desired.entry(name.clone()).or_default();
            for alloc in allocs.iter().filter(|a| !a.terminal()) {
                let lost = match self.tainted.get(&alloc.node_id) {
                    Some(None) => true,
                    Some(Some(node)) => node_lost(node),
                    None => false,
                };
                desired.stop += 1;
                out.stop.push(StopRequest {
                    alloc: alloc.clone(),
                    description: if lost { ALLOC_LOST } else { ALLOC_NOT_NEEDED },
                    client_status: lost.then_some(ALLOC_CLIENT_LOST),
                });
            }
        }
    }

    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    fn compute_group(
        &mut self,
        job: &Job,
        group: &TaskGroup,
        mut all: Vec<Arc<Allocation>>,
        deployment: Option<&Deployment>,
        old_deployment: Option<&Deployment>,
        new_deployment: &mut Option<Deployment>,
        out: &mut Reconciliation,
    ) -> bool {
        let mut desired = DesiredUpdates::default();

        // Batch: terminal allocations of older versions are history.
        if self.batch {
            all.retain(|alloc| {
                let older = alloc
                    .job
                    .as_ref()
                    .is_some_and(|j| j.version < job.version || j.create_index < job.create_index);
                !(older && alloc.terminal())
            });
        }

        let update = group
            .update
            .as_ref()
            .filter(|u| u.max_parallel > 0 && !self.batch);
        let group_state = deployment.and_then(|d| d.task_groups.get(&group.name));
        let promoted = group_state.is_some_and(|s| s.promoted);
        let paused = deployment.is_some_and(|d| {
            d.status == DEPLOYMENT_STATUS_PAUSED || d.status == DEPLOYMENT_STATUS_PENDING
        });
        let failed = deployment.is_some_and(|d| d.status == DEPLOYMENT_STATUS_FAILED);
        let mut desired_canaries = group_state.map(|s| s.desired_canaries).unwrap_or(0);

        // Canaries: unpromoted ones of an older or a failed deployment are
        // stopped; the current deployment's live canaries are kept apart
        // (those on lost or draining nodes are stopped, and replaced as
        // canaries; failed ones are replaced as canaries too).
        let mut cancel: BTreeSet<&str> = BTreeSet::new();
        for d in old_deployment
            .into_iter()
            .chain(deployment.filter(|d| d.status == DEPLOYMENT_STATUS_FAILED))
        {
            if let Some(state) = d.task_groups.get(&group.name).filter(|s| !s.promoted) {
                cancel.extend(state.placed_canaries.iter().map(String::as_str));
            }
        }
        let canary_ids: BTreeSet<&str> = group_state
            .map(|s| s.placed_canaries.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mut canaries: Vec<Arc<Allocation>> = Vec::new();
        let mut kept = Vec::with_capacity(all.len());
        for alloc in all {
            if cancel.contains(alloc.id.as_str()) {
                if !alloc.terminal() {
                    desired.stop += 1;
                    out.stop.push(StopRequest {
                        alloc,
                        description: ALLOC_NOT_NEEDED,
                        client_status: None,
                    });
                }
                continue;
            }
            if canary_ids.contains(alloc.id.as_str()) && !cancel.contains(alloc.id.as_str()) {
                if alloc.terminal() && !promoted {
                    continue;
                }
                if !alloc.terminal() {
                    let lost = match self.tainted.get(&alloc.node_id) {
                        Some(None) => true,
                        Some(Some(node)) => node_lost(node),
                        None => false,
                    };
                    let draining = alloc.desired_transition.migrate == Some(true)
                        || self.tainted.get(&alloc.node_id).is_some_and(|node| {
                            node.as_ref().is_some_and(|n| {
                                self.migrate_on_drain && node_draining(n) && !node_lost(n)
                            })
                        });
                    if lost || draining {
                        out.stop.push(StopRequest {
                            alloc,
                            description: if lost { ALLOC_LOST } else { ALLOC_MIGRATING },
                            client_status: lost.then_some(ALLOC_CLIENT_LOST),
                        });
                        continue;
                    }
                    if alloc.client_status != ALLOC_CLIENT_FAILED || promoted {
                        canaries.push(alloc.clone());
                    } else {
                        continue;
                    }
                }
            }
            kept.push(alloc);
        }
        let all = kept;

        // Lost allocations already stopped by an earlier evaluation whose
        // replacement was not placed then (the plan applier rejected it, or
        // no node had room): a placement under the same name replaces them.
        let mut unreplaced_lost: BTreeMap<String, Arc<Allocation>> = all
            .iter()
            .filter(|a| {
                a.terminal() && a.client_status == ALLOC_CLIENT_LOST && a.next_allocation.is_empty()
            })
            .map(|a| (a.name.clone(), a.clone()))
            .collect();

        // Split by the state of their nodes.
        let mut untainted = Vec::new();
        let mut migrate = Vec::new();
        let mut lost = Vec::new();
        for alloc in &all {
            if alloc.terminal() {
                untainted.push(alloc.clone());
                continue;
            }
            if alloc.desired_transition.migrate == Some(true) {
                migrate.push(alloc.clone());
                continue;
            }
            match self.tainted.get(&alloc.node_id) {
                Some(None) => lost.push(alloc.clone()),
                Some(Some(node)) if node_lost(node) => {
                    if node.status == NODE_STATUS_DISCONNECTED
                        && group.max_client_disconnect.is_some()
                    {
                        // Keep it until the node reconnects.
                        untainted.push(alloc.clone());
                    } else {
                        lost.push(alloc.clone());
                    }
                }
                Some(Some(node)) if self.migrate_on_drain && node_draining(node) => {
                    migrate.push(alloc.clone());
                }
                _ => untainted.push(alloc.clone()),
            }
        }

        // Failed allocations: reschedule now, later, or leave them be.
        let (mut untainted, reschedule_now, reschedule_later) =
            self.filter_by_reschedulable(group, untainted, deployment);
        self.create_reschedule_later_evals(job, &reschedule_later, out);

        let mut names = NameIndex::new(
            &job.id,
            &group.name,
            group.count,
            untainted
                .iter()
                .chain(&migrate)
                .chain(&reschedule_now)
                .chain(&lost)
                .map(|a| a.name.as_str()),
        );

        // Stop what is not needed.
        for alloc in &lost {
            out.stop.push(StopRequest {
                alloc: alloc.clone(),
                description: ALLOC_LOST,
                client_status: Some(ALLOC_CLIENT_LOST),
            });
            desired.stop += 1;
        }
        let canarying_before = desired_canaries != 0 && !promoted;
        let stopped = self.compute_stop(
            group,
            &mut names,
            &mut untainted,
            &mut migrate,
            &canaries,
            canarying_before,
            out,
        );
        desired.stop += stopped as u64;

        // Updates of allocations of an older version.
        let mut destructive = Vec::new();
        let mut inplace_count = 0usize;
        let mut kept = Vec::new();
        for alloc in untainted {
            match (self.update_fn)(&alloc, job, group) {
                UpdateDecision::Ignore => {
                    desired.ignore += 1;
                    kept.push(alloc);
                }
                UpdateDecision::InPlace(updated) => {
                    desired.in_place_update += 1;
                    inplace_count += 1;
                    out.inplace.push(*updated);
                    kept.push(alloc);
                }
                UpdateDecision::Destructive => destructive.push(alloc),
            }
        }
        let mut untainted = kept;
        if canarying_before {
            let ids: BTreeSet<&str> = canaries.iter().map(|a| a.id.as_str()).collect();
            untainted.retain(|a| !ids.contains(a.id.as_str()));
        }

        // Canaries, before any destructive update.
        let strategy_canaries = update.map(|u| u.canary).unwrap_or(0);
        let requires_canaries =
            !destructive.is_empty() && (canaries.len() as i64) < strategy_canaries && !promoted;
        let mut canary_place = Vec::new();
        if requires_canaries {
            desired_canaries = strategy_canaries;
            if !paused && !failed {
                let n = (strategy_canaries - canaries.len() as i64) as usize;
                let taken: BTreeSet<String> = canaries.iter().map(|a| a.name.clone()).collect();
                let replaced: BTreeSet<u64> = destructive
                    .iter()
                    .filter_map(|a| name_index(&a.name))
                    .collect();
                for name in names.next_canaries(n, &taken, &replaced) {
                    let mut request = PlaceRequest::new(name, &group.name);
                    request.canary = true;
                    canary_place.push(request);
                }
                desired.canary += n as u64;
            }
        }
        let is_canarying = desired_canaries != 0 && !promoted;
        let place_ready = !paused && !failed && !is_canarying;

        // How many replacements this evaluation may make: MaxParallel minus
        // the deployment's allocations not yet healthy; none while the
        // deployment waits (paused, failed, canaries unpromoted) or has an
        // unhealthy allocation.
        let mut limit = match update {
            None => usize::MAX,
            Some(_) if destructive.is_empty() && migrate.is_empty() => usize::MAX,
            Some(update) => match deployment {
                None => update.max_parallel.max(0) as usize,
                Some(_) if !place_ready => 0,
                Some(d) => {
                    let mut limit = update.max_parallel;
                    let mut unhealthy = false;
                    for alloc in untainted
                        .iter()
                        .filter(|a| a.deployment_id == d.id && !a.terminal())
                    {
                        match health(alloc) {
                            Some(true) => {}
                            Some(false) => unhealthy = true,
                            None => limit -= 1,
                        }
                    }
                    if unhealthy {
                        0
                    } else {
                        limit.max(0) as usize
                    }
                }
            },
        };

        // Placements: reschedules, lost replacements, missing allocations.
        // While the deployment waits only replacements of lost allocations
        // and of failed ones outside a failed deployment are placed.
        let mut place = Vec::new();
        let mut rescheduled = 0usize;
        for alloc in &reschedule_now {
            let of_failed = failed && deployment.is_some_and(|d| d.id == alloc.deployment_id);
            if !place_ready && of_failed {
                continue;
            }
            let mut request = PlaceRequest::new(alloc.name.clone(), &group.name);
            request.previous = Some(alloc.clone());
            request.reschedule = true;
            place.push(request);
            rescheduled += 1;
        }
        let mut existing =
            untainted.len() + destructive.len() + migrate.len() + reschedule_now.len();
        let count = group.count.max(0) as usize;
        for alloc in &lost {
            if existing >= count {
                break;
            }
            existing += 1;
            let mut request = PlaceRequest::new(alloc.name.clone(), &group.name);
            request.previous = Some(alloc.clone());
            request.lost = true;
            place.push(request);
        }
        if existing < count && place_ready {
            for name in names.next(count - existing) {
                let mut request = PlaceRequest::new(name, &group.name);
                if let Some(prev) = unreplaced_lost.remove(&request.name) {
                    request.previous = Some(prev);
                    request.lost = true;
                }
                place.push(request);
            }
        }
        desired.place += (place.len() + canary_place.len()) as u64;
        desired.stop += rescheduled as u64;
        limit -= place.len().min(limit);

        // Destructive updates, within the limit.
        let take = if place_ready {
            destructive.len().min(limit)
        } else {
            0
        };
        desired.destructive_update += take as u64;
        desired.ignore += (destructive.len() - take) as u64;
        let destructive_count = destructive.len();
        for alloc in destructive.iter().take(take) {
            let mut request = PlaceRequest::new(alloc.name.clone(), &group.name);
            request.previous = Some(alloc.clone());
            request.destructive = true;
            out.destructive.push(request);
        }

        // Migrations.
        desired.migrate += migrate.len() as u64;
        for alloc in &migrate {
            out.stop.push(StopRequest {
                alloc: alloc.clone(),
                description: ALLOC_MIGRATING,
                client_status: None,
            });
            let mut request = PlaceRequest::new(alloc.name.clone(), &group.name);
            request.previous = Some(alloc.clone());
            request.migrate = true;
            place.push(request);
        }
        let place_count = place.len();
        let canary_count = canary_place.len();
        out.place.extend(canary_place);
        out.place.extend(place);

        // Deployments (service jobs with a rolling update strategy).
        if let Some(update) = update {
            let existing_deployment = group_state.is_some();
            let updating_spec = destructive_count > 0 || inplace_count > 0;
            let had_running = all.iter().any(|alloc| {
                alloc
                    .job
                    .as_ref()
                    .is_some_and(|j| j.version == job.version && j.create_index == job.create_index)
            });
            let changes = destructive_count + inplace_count + place_count + canary_count;
            if !existing_deployment && changes > 0 && (!had_running || updating_spec) {
                let deployment = new_deployment.get_or_insert_with(|| Deployment {
                    id: self.ids.uuid(),
                    namespace: job.namespace.clone(),
                    job_id: job.id.clone(),
                    job_version: job.version,
                    job_modify_index: job.modify_index,
                    job_spec_modify_index: job.job_modify_index,
                    job_create_index: job.create_index,
                    is_multiregion: job.is_multiregion(),
                    task_groups: BTreeMap::new(),
                    status: DEPLOYMENT_STATUS_RUNNING.to_string(),
                    status_description: "Deployment is running".to_string(),
                    create_index: 0,
                    modify_index: 0,
                });
                deployment.task_groups.insert(
                    group.name.clone(),
                    DeploymentState {
                        auto_revert: update.auto_revert,
                        auto_promote: update.auto_promote,
                        progress_deadline: update.progress_deadline_ns(),
                        desired_total: group.count,
                        desired_canaries,
                        ..DeploymentState::default()
                    },
                );
            }
        }

        out.desired.insert(group.name.clone(), desired);

        let mut group_complete = destructive_count
            + inplace_count
            + place_count
            + reschedule_now.len()
            + reschedule_later.len()
            == 0
            && !requires_canaries;
        if group_complete {
            if let Some(state) = group_state {
                if state.healthy_allocs < state.desired_total.max(state.desired_canaries)
                    || (state.desired_canaries > 0 && !state.promoted)
                {
                    group_complete = false;
                }
            }
        }
        group_complete
    }

    /// Splits the untainted allocations into those that count (untainted),
    /// failed ones to replace now, and failed ones to replace later (with
    /// their reschedule time).
    #[allow(clippy::type_complexity)]
    fn filter_by_reschedulable(
        &self,
        group: &TaskGroup,
        allocs: Vec<Arc<Allocation>>,
        deployment: Option<&Deployment>,
    ) -> (
        Vec<Arc<Allocation>>,
        Vec<Arc<Allocation>>,
        Vec<(Arc<Allocation>, i64)>,
    ) {
        let mut untainted = Vec::new();
        let mut now_list = Vec::new();
        let mut later = Vec::new();
        for alloc in allocs {
            if !alloc.next_allocation.is_empty() && alloc.terminal() {
                continue;
            }
            let (_, ignore) = should_filter(&alloc, self.batch);
            if ignore {
                continue;
            }
            if alloc.client_status != ALLOC_CLIENT_FAILED {
                untainted.push(alloc);
                continue;
            }
            // Within an active deployment a failed allocation waits for the
            // deployment to end, unless it may be replaced: marked for
            // rescheduling, or unhealthy in a group with a progress deadline
            // (Nomad's deployment watcher allows those replacements).
            if let Some(d) = deployment.filter(|d| d.active() && alloc.deployment_id == d.id) {
                let progress_based = d
                    .task_groups
                    .get(&group.name)
                    .is_some_and(|s| s.progress_deadline > 0);
                let allowed = alloc.desired_transition.reschedule == Some(true)
                    || (progress_based && health(&alloc) == Some(false));
                if !allowed {
                    untainted.push(alloc);
                    continue;
                }
            }
            if alloc.desired_transition.force_reschedule == Some(true) {
                now_list.push(alloc);
                continue;
            }
            let policy = policy_of(&alloc, group.reschedule_policy.as_ref());
            let (time, eligible) = next_reschedule_time(&alloc, policy, self.now);
            if eligible
                && (alloc.followup_eval_id == self.eval.id || time - self.now <= RESCHEDULE_WINDOW)
            {
                now_list.push(alloc);
                continue;
            }
            if eligible && alloc.followup_eval_id.is_empty() {
                later.push((alloc.clone(), time));
            }
            untainted.push(alloc);
        }
        (untainted, now_list, later)
    }

    /// One follow-up evaluation per batch of failed allocations due within
    /// a few seconds of each other; the allocations learn its id.
    fn create_reschedule_later_evals(
        &mut self,
        job: &Job,
        later: &[(Arc<Allocation>, i64)],
        out: &mut Reconciliation,
    ) {
        if later.is_empty() {
            return;
        }
        let mut sorted: Vec<&(Arc<Allocation>, i64)> = later.iter().collect();
        sorted.sort_by_key(|(alloc, time)| (*time, alloc.id.clone()));
        let mut batch_start = i64::MIN;
        let mut eval_id = String::new();
        for (alloc, time) in sorted {
            if eval_id.is_empty() || *time - batch_start >= BATCHED_FAILED_ALLOC_WINDOW {
                batch_start = *time;
                eval_id = self.ids.uuid();
                out.followup_evals.push(Evaluation {
                    id: eval_id.clone(),
                    namespace: job.namespace.clone(),
                    priority: self.eval.priority,
                    r#type: job.r#type.clone(),
                    triggered_by: EVAL_TRIGGER_RETRY_FAILED_ALLOC.to_string(),
                    job_id: job.id.clone(),
                    job_modify_index: job.job_modify_index,
                    status: EVAL_STATUS_PENDING.to_string(),
                    status_description: RESCHEDULING_FOLLOWUP_DESC.to_string(),
                    wait_until: Some(format_rfc3339_nanos(*time)),
                    previous_eval: self.eval.id.clone(),
                    create_time: self.now,
                    modify_time: self.now,
                    ..Evaluation::default()
                });
            }
            let mut updated = (**alloc).clone();
            updated.followup_eval_id = eval_id.clone();
            out.attribute_updates.push(updated);
        }
    }

    /// Stops allocations beyond the group's count, highest indexes first,
    /// migrating ones before running ones. Returns how many.
    #[allow(clippy::too_many_arguments)]
    fn compute_stop(
        &mut self,
        group: &TaskGroup,
        names: &mut NameIndex,
        untainted: &mut Vec<Arc<Allocation>>,
        migrate: &mut Vec<Arc<Allocation>>,
        canaries: &[Arc<Allocation>],
        is_canarying: bool,
        out: &mut Reconciliation,
    ) -> usize {
        let count = group.count.max(0) as usize;
        let canary_ids: BTreeSet<&str> = canaries.iter().map(|a| a.id.as_str()).collect();
        // Canaries do not count against the group's count until promoted.
        let counted = if is_canarying {
            untainted
                .iter()
                .filter(|a| !canary_ids.contains(a.id.as_str()))
                .count()
        } else {
            untainted.len()
        };
        let mut remove = (counted + migrate.len()).saturating_sub(count);
        if remove == 0 {
            return 0;
        }
        let mut stopped = 0;
        // Once promoted, the canaries replace their namesakes first.
        if !is_canarying && !canaries.is_empty() {
            let canary_names: BTreeSet<&str> = canaries.iter().map(|a| a.name.as_str()).collect();
            let mut keep = Vec::new();
            for alloc in untainted.drain(..) {
                if remove > 0
                    && !alloc.terminal()
                    && !canary_ids.contains(alloc.id.as_str())
                    && canary_names.contains(alloc.name.as_str())
                {
                    out.stop.push(StopRequest {
                        alloc,
                        description: ALLOC_NOT_NEEDED,
                        client_status: None,
                    });
                    stopped += 1;
                    remove -= 1;
                } else {
                    keep.push(alloc);
                }
            }
            *untainted = keep;
            if remove == 0 {
                return stopped;
            }
        }
        let protected = |alloc: &Allocation| is_canarying && canary_ids.contains(alloc.id.as_str());
        // Terminal allocations are not stopped again, but keep their slot.
        if !migrate.is_empty() {
            let migrating = NameIndex::new(
                self.job_id,
                &group.name,
                group.count,
                migrate.iter().map(|a| a.name.as_str()),
            );
            let remove_names = migrating.highest(remove);
            let mut keep = Vec::new();
            for alloc in migrate.drain(..) {
                if remove > 0 && remove_names.contains(&alloc.name) {
                    if let Some(index) = name_index(&alloc.name) {
                        names.unset(index);
                    }
                    out.stop.push(StopRequest {
                        alloc,
                        description: ALLOC_NOT_NEEDED,
                        client_status: None,
                    });
                    stopped += 1;
                    remove -= 1;
                } else {
                    keep.push(alloc);
                }
            }
            *migrate = keep;
            if remove == 0 {
                return stopped;
            }
        }
        let remove_names: BTreeSet<String> = names.highest(remove);
        let mut keep = Vec::new();
        for alloc in untainted.drain(..) {
            if remove > 0
                && !alloc.terminal()
                && !protected(&alloc)
                && remove_names.contains(&alloc.name)
            {
                out.stop.push(StopRequest {
                    alloc,
                    description: ALLOC_NOT_NEEDED,
                    client_status: None,
                });
                stopped += 1;
                remove -= 1;
            } else {
                keep.push(alloc);
            }
        }
        // Duplicate names: stop from the end.
        while remove > 0 {
            let Some(pos) = keep.iter().rposition(|a| !a.terminal() && !protected(a)) else {
                break;
            };
            let alloc = keep.remove(pos);
            out.stop.push(StopRequest {
                alloc,
                description: ALLOC_NOT_NEEDED,
                client_status: None,
            });
            stopped += 1;
            remove -= 1;
        }
        *untainted = keep;
        stopped
    }
}

/// Whether the allocation runs an older spec than `job`.
pub fn is_outdated(alloc: &Allocation, job: &Job) -> bool {
    match job_modify_index_of(alloc) {
        Some(index) => index != job.job_modify_index,
        None => alloc.job_version != job.version,
    }
}
