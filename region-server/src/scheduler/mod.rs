//! The scheduler: given a consistent state snapshot and an evaluation, it
//! decides what should change (a [`Plan`]) and how the evaluation ends.
//!
//! It is pure and deterministic: no I/O, no clock, no Raft and no global
//! randomness. The caller supplies the time ([`SchedulerContext::now`]) and a
//! seed ([`SchedulerContext::rng_seed`]) from which every id, node shuffle
//! and dynamic port is derived, so the same inputs give the same plan.
//!
//! * [`process`] runs one evaluation: the service and batch schedulers
//!   (reconciler + ranked placement) or the system and sysbatch schedulers
//!   (one allocation per feasible node);
//! * [`evaluate_plan`] re-checks a plan against newer state, node by node,
//!   for the leader's plan applier;
//! * [`harness`] builds states, runs evaluations and applies plans in tests
//!   and benchmarks.
//!
//! The model is Nomad's `scheduler` package: feasibility checks with
//! per-class caching, bin-packing and spread scoring with job anti-affinity,
//! affinities and spread blocks over a limited, shuffled candidate scan, and
//! a reconciler for rolling updates, migrations, lost allocations and
//! rescheduling.

use std::collections::BTreeMap;

use proto::model::{
    Evaluation, JOB_TYPE_BATCH, JOB_TYPE_SERVICE, JOB_TYPE_SYSBATCH, JOB_TYPE_SYSTEM,
};
use serde::{Deserialize, Serialize};

mod class;
mod common;
pub mod constraint;
mod context;
mod feasible;
mod generic;
pub mod harness;
mod metrics;
mod names;
mod plan;
mod rank;
mod reconcile;
mod reschedule;
pub mod resources;
mod rng;
mod system;

mod update;

#[cfg(test)]
mod tests;

pub use class::{compute_node_class, node_class};
pub use feasible::{glob_match, in_datacenters, in_node_pool};
pub use metrics::{AllocMetric, NodeScoreMeta};
pub use names::{alloc_name, name_index};
pub use plan::{evaluate_plan, DeploymentStatusUpdate, Plan, PlanResult};
pub use proto::model::time::{
    format_rfc3339 as format_rfc3339_nanos, parse_rfc3339 as parse_rfc3339_nanos,
};
pub use reconcile::{
    ALLOC_LOST, ALLOC_MIGRATING, ALLOC_NODE_INFEASIBLE, ALLOC_NODE_TAINTED, ALLOC_NOT_NEEDED,
    ALLOC_RESCHEDULED, ALLOC_UPDATING, DEPLOYMENT_DESC_AUTO_PROMOTION,
    DEPLOYMENT_DESC_NEEDS_PROMOTION,
};
pub use reschedule::{next_delay, next_reschedule_time};
pub use update::tasks_updated;

/// Everything an evaluation is processed with.
pub struct SchedulerContext<'a> {
    /// A consistent snapshot of the state.
    pub state: &'a crate::state::Tables,
    /// Now, in nanoseconds since the Unix epoch, supplied by the caller.
    pub now: i64,
    /// Scheduler settings.
    pub config: &'a SchedulerConfig,
    /// Seed of every random choice (ids, node order, ports).
    pub rng_seed: u64,
}

/// How nodes are scored for fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerAlgorithm {
    /// Prefer the fullest nodes (Nomad's default).
    #[default]
    Binpack,
    /// Prefer the emptiest nodes.
    Spread,
}

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// `binpack` or `spread`.
    pub algorithm: SchedulerAlgorithm,
    /// How many feasible nodes with room to score per placement; `None` for
    /// Nomad's rule: 2 for batch jobs, `max(2, ceil(log2(nodes)))` otherwise.
    /// Groups with affinities or spreads always look at every node.
    pub candidate_limit: Option<usize>,
    /// How many low-scoring nodes may be set aside for better ones.
    pub max_skip: usize,
    /// Cache feasibility per computed node class.
    pub feasibility_cache: bool,
    /// Treat every allocation on a draining node as migrating (for clusters
    /// without a drainer that sets `DesiredTransition.Migrate` itself).
    pub migrate_on_drain: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            algorithm: SchedulerAlgorithm::Binpack,
            candidate_limit: None,
            max_skip: 3,
            feasibility_cache: true,
            migrate_on_drain: true,
        }
    }
}

/// Counts of one group's changes in a plan (Nomad's `DesiredUpdates`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DesiredUpdates {
    /// Allocations left as they are.
    pub ignore: u64,
    /// New allocations.
    pub place: u64,
    /// Allocations moved off draining nodes.
    pub migrate: u64,
    /// Allocations stopped.
    pub stop: u64,
    /// Allocations updated in place.
    pub in_place_update: u64,
    /// Allocations replaced by a new version.
    pub destructive_update: u64,
    /// Canaries placed.
    pub canary: u64,
    /// Allocations preempted (always 0: preemption is not implemented).
    pub preemptions: u64,
}

/// What a plan does per group (Nomad's `PlanAnnotations`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PlanAnnotations {
    /// Changes per group name.
    #[serde(rename = "DesiredTGUpdates")]
    pub desired_tg_updates: BTreeMap<String, DesiredUpdates>,
    /// Allocations preempted (always empty).
    pub preempted_allocs: Vec<serde_json::Value>,
}

/// The outcome of processing one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerResult {
    /// What to commit.
    pub plan: Plan,
    /// The evaluation as it ends: `Status` (`complete`, or `blocked` when a
    /// blocked evaluation is re-blocked), `FailedTGAllocs`,
    /// `QueuedAllocations`, `BlockedEval`, `NextEval`, `DeploymentID`,
    /// `SnapshotIndex`, `ModifyTime`.
    pub eval_update: Evaluation,
    /// A new blocked evaluation for the placements that failed (status
    /// `blocked`, with `ClassEligibility` and `EscapedComputedClass`).
    pub blocked_eval: Option<Evaluation>,
    /// Evaluations to create for later: delayed reschedules (`WaitUntil`)
    /// and rolling updates of system jobs.
    pub followup_evals: Vec<Evaluation>,
    /// Per group: Place, Stop, InPlaceUpdate, DestructiveUpdate, Migrate,
    /// Ignore.
    pub annotations: PlanAnnotations,
}

/// Why an evaluation could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// The evaluation's type has no scheduler here (e.g. `_core`).
    #[error("unsupported evaluation type {0:?}")]
    UnsupportedType(String),
    /// The evaluation names no job.
    #[error("evaluation {0} names no job")]
    MissingJob(String),
}

/// Processes one evaluation against the snapshot in `ctx`.
///
/// Service and batch evaluations run the reconciler and place new
/// allocations on the best of a limited, shuffled set of feasible nodes;
/// system and sysbatch evaluations keep one allocation per feasible node.
/// Placements that fail are reported in `FailedTGAllocs` and a blocked
/// evaluation; failed allocations waiting for their reschedule delay get a
/// follow-up evaluation.
pub fn process(
    ctx: &SchedulerContext,
    eval: &Evaluation,
) -> Result<SchedulerResult, SchedulerError> {
    if eval.job_id.is_empty() {
        return Err(SchedulerError::MissingJob(eval.id.clone()));
    }
    // The operator's scheduler configuration, when set, decides the
    // algorithm (Nomad: SchedulerConfiguration.SchedulerAlgorithm).
    let operator_config;
    let operator_ctx;
    let ctx = match ctx.state.scheduler_config.as_deref() {
        Some(sc) => {
            operator_config = SchedulerConfig {
                algorithm: if sc.scheduler_algorithm == proto::model::SCHEDULER_ALGORITHM_SPREAD {
                    SchedulerAlgorithm::Spread
                } else {
                    SchedulerAlgorithm::Binpack
                },
                ..ctx.config.clone()
            };
            operator_ctx = SchedulerContext {
                state: ctx.state,
                now: ctx.now,
                config: &operator_config,
                rng_seed: ctx.rng_seed,
            };
            &operator_ctx
        }
        None => ctx,
    };
    let eval_type = eval.r#type.as_str();
    if !matches!(
        eval_type,
        JOB_TYPE_SERVICE | JOB_TYPE_BATCH | JOB_TYPE_SYSTEM | JOB_TYPE_SYSBATCH
    ) {
        return Err(SchedulerError::UnsupportedType(eval.r#type.clone()));
    }
    // A job re-registered with another type is scheduled by its own type.
    let job_type = ctx
        .state
        .job(&eval.namespace, &eval.job_id)
        .map(|job| job.r#type.clone())
        .filter(|t| {
            matches!(
                t.as_str(),
                JOB_TYPE_SERVICE | JOB_TYPE_BATCH | JOB_TYPE_SYSTEM | JOB_TYPE_SYSBATCH
            )
        })
        .unwrap_or_else(|| eval_type.to_string());
    match job_type.as_str() {
        JOB_TYPE_SYSTEM | JOB_TYPE_SYSBATCH => {
            Ok(system::process(ctx, eval, job_type == JOB_TYPE_SYSBATCH))
        }
        _ => Ok(generic::process(ctx, eval, job_type == JOB_TYPE_BATCH)),
    }
}
