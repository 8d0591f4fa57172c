//! Pieces shared by the schedulers: building allocations, stopped copies,
//! and the evaluation's outcome (failed groups, blocked evaluation).

use std::collections::BTreeMap;
use std::sync::Arc;

use proto::model::{
    Allocation, Deployment, Evaluation, Job, Resources, TaskGroup, ALLOC_CLIENT_PENDING,
    ALLOC_DESIRED_RUN, ALLOC_DESIRED_STOP, EVAL_STATUS_BLOCKED, EVAL_STATUS_COMPLETE,
    EVAL_TRIGGER_QUEUED_ALLOCS,
};

use super::context::EvalState;
use super::feasible::Feasibility;
use super::metrics::AllocMetric;
use super::rank::Selected;
use super::{PlanAnnotations, SchedulerResult};
use crate::state::Tables;

/// Description of blocked evaluations.
pub const BLOCKED_EVAL_DESC: &str = "created to place remaining allocations";

/// The job's most recent deployment.
pub fn latest_deployment(state: &Tables, namespace: &str, job_id: &str) -> Option<Arc<Deployment>> {
    state
        .deployments
        .values()
        .filter(|d| d.namespace == namespace && d.job_id == job_id)
        .max_by_key(|d| (d.create_index, d.id.clone()))
        .cloned()
}

/// A stopped copy of an allocation.
pub fn stopped_copy(
    alloc: &Allocation,
    description: &str,
    client_status: Option<&str>,
    now: i64,
) -> Allocation {
    let mut stopped = alloc.clone();
    stopped.desired_status = ALLOC_DESIRED_STOP.to_string();
    stopped.desired_description = description.to_string();
    if let Some(status) = client_status {
        stopped.client_status = status.to_string();
    }
    stopped.modify_time = now;
    stopped
}

/// A new allocation of `group` on the selected node.
#[allow(clippy::too_many_arguments)]
pub fn new_alloc(
    es: &mut EvalState,
    eval: &Evaluation,
    job: &Job,
    group: &TaskGroup,
    name: String,
    selected: Selected,
    metric: &AllocMetric,
    deployment_id: Option<&str>,
    now: i64,
) -> Allocation {
    let shared = &selected.resources.shared;
    let mut legacy = Resources {
        disk_mb: shared.disk_mb,
        networks: shared.networks.clone(),
        ..Resources::default()
    };
    for task in selected.resources.tasks.values() {
        legacy.cpu += task.cpu.cpu_shares;
        legacy.cores += task.cpu.reserved_cores.len() as i64;
        legacy.memory_mb += task.memory.memory_mb;
        legacy.memory_max_mb += task.memory.memory_max_mb;
    }
    Allocation {
        id: es.ids.uuid(),
        namespace: job.namespace.clone(),
        eval_id: eval.id.clone(),
        name,
        node_id: selected.node.id.clone(),
        node_name: selected.node.name.clone(),
        job_id: job.id.clone(),
        job: Some(es.job_arc(job)),
        task_group: group.name.clone(),
        resources: Some(legacy),
        allocated_resources: Some(selected.resources),
        metrics: metric.to_raw(),
        desired_status: ALLOC_DESIRED_RUN.to_string(),
        client_status: ALLOC_CLIENT_PENDING.to_string(),
        deployment_id: deployment_id.unwrap_or_default().to_string(),
        create_time: now,
        modify_time: now,
        job_version: job.version,
        ..Allocation::default()
    }
}

/// Failed placements per group.
#[derive(Default)]
pub struct Failures {
    /// The first failure's metric per group, with later ones coalesced.
    pub by_group: BTreeMap<String, AllocMetric>,
}

impl Failures {
    /// Records a failed placement of `group`.
    pub fn record(&mut self, group: &str, metric: AllocMetric) {
        match self.by_group.get_mut(group) {
            Some(first) => first.coalesced_failures += 1,
            None => {
                self.by_group.insert(group.to_string(), metric);
            }
        }
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.by_group.is_empty()
    }
}

/// Everything needed to finish an evaluation.
pub struct Outcome<'a> {
    /// The evaluation processed.
    pub eval: &'a Evaluation,
    /// Now.
    pub now: i64,
    /// Snapshot index.
    pub snapshot_index: u64,
    /// Failed placements.
    pub failures: Failures,
    /// Unplaced allocations per group.
    pub queued: BTreeMap<String, i64>,
    /// The feasibility checker (class eligibility for blocked evals).
    pub feasibility: Option<&'a Feasibility>,
    /// Follow-up evaluations.
    pub followup_evals: Vec<Evaluation>,
    /// The follow-up evaluation that continues this one (`NextEval`).
    pub next_eval: Option<String>,
    /// The deployment the evaluation worked on.
    pub deployment_id: Option<String>,
    /// Annotations.
    pub annotations: PlanAnnotations,
}

impl Outcome<'_> {
    /// The result: the evaluation's update and, when placements failed, a
    /// blocked evaluation (or the evaluation itself re-blocked).
    pub fn finish(self, es: &mut EvalState, plan: super::Plan) -> SchedulerResult {
        let eval = self.eval;
        let mut update = eval.clone();
        update.status = EVAL_STATUS_COMPLETE.to_string();
        update.status_description = String::new();
        update.queued_allocations = self.queued;
        update.failed_tg_allocs = self
            .failures
            .by_group
            .iter()
            .map(|(group, metric)| (group.clone(), metric.to_value()))
            .collect();
        update.snapshot_index = self.snapshot_index;
        update.modify_time = self.now;
        if let Some(next) = &self.next_eval {
            update.next_eval = next.clone();
        }
        if let Some(deployment) = &self.deployment_id {
            update.deployment_id = deployment.clone();
        }

        let mut blocked_eval = None;
        if !self.failures.is_empty() {
            let class_eligibility = self
                .feasibility
                .map(Feasibility::class_eligibility)
                .unwrap_or_default();
            let escaped = self.feasibility.is_some_and(Feasibility::escaped);
            let reasons: Vec<String> = self
                .failures
                .by_group
                .iter()
                .map(|(group, metric)| format!("{group}: {}", metric.summary()))
                .collect();
            tracing::debug!(eval = %eval.id, job = %eval.job_id, "placements failed: {}", reasons.join("; "));
            if eval.status == EVAL_STATUS_BLOCKED {
                update.status = EVAL_STATUS_BLOCKED.to_string();
                update.status_description = BLOCKED_EVAL_DESC.to_string();
                update.class_eligibility = class_eligibility;
                update.escaped_computed_class = escaped;
            } else {
                let id = es.ids.uuid();
                update.blocked_eval = id.clone();
                blocked_eval = Some(Evaluation {
                    id,
                    namespace: eval.namespace.clone(),
                    priority: eval.priority,
                    r#type: eval.r#type.clone(),
                    triggered_by: EVAL_TRIGGER_QUEUED_ALLOCS.to_string(),
                    job_id: eval.job_id.clone(),
                    job_modify_index: eval.job_modify_index,
                    status: EVAL_STATUS_BLOCKED.to_string(),
                    status_description: BLOCKED_EVAL_DESC.to_string(),
                    previous_eval: eval.id.clone(),
                    failed_tg_allocs: update.failed_tg_allocs.clone(),
                    class_eligibility,
                    escaped_computed_class: escaped,
                    queued_allocations: update.queued_allocations.clone(),
                    create_time: self.now,
                    modify_time: self.now,
                    ..Evaluation::default()
                });
            }
        }
        SchedulerResult {
            plan,
            eval_update: update,
            blocked_eval,
            followup_evals: self.followup_evals,
            annotations: self.annotations,
        }
    }
}
