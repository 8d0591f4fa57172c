//! The deployment watcher (Nomad's `deploymentwatcher`), run by the leader
//! and rebuilt on every leadership change from the state alone.
//!
//! Allocation health comes from the client agents: each agent watches its
//! allocations' task states (`health_check = "task_states"`, and `checks`,
//! as there are no service checks here) and reports `DeploymentStatus`
//! healthy once every task ran for `min_healthy_time`, unhealthy when a
//! task fails or `healthy_deadline` passes. The state counts those reports
//! in each deployment's groups and moves their `RequireProgressBy`.
//!
//! For every running deployment the watcher then decides, from a snapshot
//! and the time ([`decide`] is pure):
//! * an unhealthy allocation in a group without a progress deadline, or a
//!   group that missed its `RequireProgressBy`, fails the deployment; with
//!   `auto_revert` the latest stable job version is registered again as a
//!   new version in the same Raft entry;
//! * canaries of groups that all `auto_promote` are promoted once healthy;
//! * any new health report creates an evaluation, so the scheduler goes on
//!   with the rollout (and marks the deployment successful at the end,
//!   which makes the job version stable).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proto::model::time::parse_rfc3339;
use proto::model::{
    Deployment, Evaluation, Job, DEPLOYMENT_STATUS_FAILED, DEPLOYMENT_STATUS_RUNNING,
    EVAL_STATUS_PENDING, EVAL_TRIGGER_DEPLOYMENT_WATCHER,
};
use tokio::sync::watch;

use super::now_ns;
use crate::service::Service;
use crate::state::{table, Command, Tables};

/// Failure description: an allocation became unhealthy.
pub const FAILED_ALLOCATIONS: &str = "Failed due to unhealthy allocations";
/// Failure description: no progress before the deadline.
pub const FAILED_PROGRESS_DEADLINE: &str = "Failed due to progress deadline";
/// Failure description: an operator failed the deployment.
pub const FAILED_BY_USER: &str = "Deployment marked as failed";

/// What the watcher does about one deployment now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Fail it with this description (rollback decided by [`failure`]).
    Fail(&'static str),
    /// Promote its canaries (every group).
    Promote,
    /// Create an evaluation so the scheduler continues the rollout.
    Evaluate,
}

/// The watcher's decision about one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The newest allocation health change seen (`DeploymentStatus.ModifyIndex`).
    pub health_index: u64,
    /// When to look again at the latest (the nearest progress deadline), in
    /// Unix nanoseconds.
    pub wake_at: Option<i64>,
}

/// Decides what to do about deployment `d` at `now`, given the newest
/// health change already acted upon.
pub fn decide(t: &Tables, d: &Deployment, now: i64, seen_health_index: u64) -> Decision {
    let allocs: Vec<_> = t
        .allocs_by_job(&d.namespace, &d.job_id)
        .into_iter()
        .filter(|a| a.deployment_id == d.id)
        .collect();
    let health_index = allocs
        .iter()
        .filter_map(|a| a.deployment_status.as_ref())
        .filter(|s| s.healthy.is_some())
        .map(|s| s.modify_index)
        .max()
        .unwrap_or(0)
        .max(seen_health_index);
    let decision = |action| Decision {
        action,
        health_index,
        wake_at: None,
    };
    if d.status != DEPLOYMENT_STATUS_RUNNING {
        return Decision {
            health_index: seen_health_index,
            ..decision(Action::None)
        };
    }
    // An unhealthy allocation fails a group that has no progress deadline.
    let unhealthy = allocs.iter().any(|a| {
        !a.server_terminal()
            && a.deployment_status
                .as_ref()
                .is_some_and(|s| s.healthy == Some(false))
            && d.task_groups
                .get(&a.task_group)
                .is_some_and(|s| s.progress_deadline == 0)
    });
    if unhealthy {
        return decision(Action::Fail(FAILED_ALLOCATIONS));
    }
    let mut wake_at: Option<i64> = None;
    for state in d.task_groups.values() {
        let done = state.healthy_allocs >= state.desired_total.max(state.desired_canaries)
            && (state.desired_canaries == 0 || state.promoted);
        let by = state.require_progress_by.as_deref().and_then(parse_rfc3339);
        if let (false, true, Some(by)) = (done, state.progress_deadline > 0, by) {
            if now >= by {
                return decision(Action::Fail(FAILED_PROGRESS_DEADLINE));
            }
            wake_at = Some(wake_at.map_or(by, |w| w.min(by)));
        }
    }
    let canary_groups: Vec<_> = d
        .task_groups
        .iter()
        .filter(|(_, s)| s.desired_canaries > 0 && !s.promoted)
        .collect();
    if !canary_groups.is_empty() && canary_groups.iter().all(|(_, s)| s.auto_promote) {
        let ready = canary_groups.iter().all(|(_, s)| {
            let healthy = s
                .placed_canaries
                .iter()
                .filter_map(|id| t.allocs.get(id))
                .filter(|a| {
                    !a.terminal()
                        && a.deployment_status
                            .as_ref()
                            .is_some_and(|st| st.healthy == Some(true))
                })
                .count() as i64;
            healthy >= s.desired_canaries
        });
        if ready {
            return Decision {
                wake_at,
                ..decision(Action::Promote)
            };
        }
    }
    let action = if health_index > seen_health_index {
        Action::Evaluate
    } else {
        Action::None
    };
    Decision {
        wake_at,
        ..decision(action)
    }
}

/// An evaluation of `job` for deployment `deployment_id`.
pub fn deployment_eval(job: &Job, deployment_id: &str, now: i64) -> Evaluation {
    Evaluation {
        id: uuid::Uuid::new_v4().to_string(),
        namespace: job.namespace.clone(),
        priority: job.priority,
        r#type: job.r#type.clone(),
        triggered_by: EVAL_TRIGGER_DEPLOYMENT_WATCHER.to_string(),
        job_id: job.id.clone(),
        job_modify_index: job.job_modify_index,
        deployment_id: deployment_id.to_string(),
        status: EVAL_STATUS_PENDING.to_string(),
        create_time: now,
        modify_time: now,
        ..Evaluation::default()
    }
}

/// How a deployment fails: its description, the job version registered
/// again when it rolls back, and the evaluation that follows.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The failed deployment's status description.
    pub description: String,
    /// The stable version's spec to register as a new version (auto-revert).
    pub job: Option<Job>,
    /// The version rolled back to.
    pub reverted_version: Option<u64>,
    /// The evaluation to create.
    pub eval: Option<Evaluation>,
}

impl Failure {
    /// The command that commits this failure of deployment `id`.
    pub fn command(self, id: &str, now: i64) -> Command {
        Command::DeploymentStatusUpdate {
            deployment_id: id.to_string(),
            status: DEPLOYMENT_STATUS_FAILED.to_string(),
            status_description: self.description,
            job: self.job.map(Box::new),
            eval: self.eval.map(Box::new),
            now,
        }
    }
}

/// The newest stable version of a job other than `version`.
pub fn latest_stable(t: &Tables, namespace: &str, job_id: &str, version: u64) -> Option<Arc<Job>> {
    t.job_versions(namespace, job_id)
        .into_iter()
        .find(|j| j.stable && j.version != version)
}

/// How deployment `d` fails with `base` as the reason (Nomad's rules):
/// when a group has `auto_revert` and the job still runs the deployed
/// version, the newest stable version is registered again, unless the
/// current job has the same spec.
pub fn failure(t: &Tables, d: &Deployment, base: &str, now: i64) -> Failure {
    let current = t.job(&d.namespace, &d.job_id);
    let mut out = Failure {
        description: base.to_string(),
        job: None,
        reverted_version: None,
        eval: current
            .as_deref()
            .map(|job| deployment_eval(job, &d.id, now)),
    };
    let rollback = d.task_groups.values().any(|s| s.auto_revert);
    let Some(current) = current.filter(|j| j.version == d.job_version && rollback) else {
        return out;
    };
    match latest_stable(t, &d.namespace, &d.job_id, d.job_version) {
        None => {
            out.description = format!("{base} - no stable job version to auto revert to");
        }
        Some(stable) if !current.spec_changed(&stable) => {
            out.description = format!(
                "{base} - not rolling back to stable job version {} as current job has same specification",
                stable.version
            );
        }
        Some(stable) => {
            out.description = format!("{base} - rolling back to job version {}", stable.version);
            out.reverted_version = Some(stable.version);
            let mut job = (*stable).clone();
            job.stable = false;
            out.job = Some(job);
        }
    }
    out
}

/// Watches the running deployments while this server leads.
pub async fn watch_deployments(service: Service, mut stop: watch::Receiver<bool>) {
    let tables = [table::DEPLOYMENTS, table::ALLOCS, table::JOBS];
    let mut seen: HashMap<String, u64> = HashMap::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let t = service.store.snapshot();
        let now = now_ns();
        let mut wake_at: Option<i64> = None;
        let active: Vec<Arc<Deployment>> = t
            .deployments
            .values()
            .filter(|d| d.active())
            .cloned()
            .collect();
        seen.retain(|id, _| active.iter().any(|d| d.id == *id));
        for d in active {
            let decision = decide(&t, &d, now, seen.get(&d.id).copied().unwrap_or(0));
            if let Some(w) = decision.wake_at {
                wake_at = Some(wake_at.map_or(w, |x| x.min(w)));
            }
            let cmd = match decision.action {
                Action::None => continue,
                Action::Fail(reason) => {
                    tracing::info!(deployment = %d.id, job = %d.job_id, reason, "deployment failed");
                    failure(&t, &d, reason, now).command(&d.id, now)
                }
                Action::Promote => Command::DeploymentPromote {
                    deployment_id: d.id.clone(),
                    all: true,
                    groups: Vec::new(),
                    eval: t
                        .job(&d.namespace, &d.job_id)
                        .map(|job| Box::new(deployment_eval(&job, &d.id, now))),
                    now,
                },
                Action::Evaluate => {
                    let Some(job) = t.job(&d.namespace, &d.job_id) else {
                        continue;
                    };
                    Command::EvalUpsert {
                        evals: vec![deployment_eval(&job, &d.id, now)],
                    }
                }
            };
            match service.write(cmd).await {
                Ok((response, _)) => {
                    if !matches!(
                        response,
                        crate::state::CommandResponse::Ok
                            | crate::state::CommandResponse::Job { .. }
                    ) {
                        tracing::debug!(deployment = %d.id, ?response, "deployment watcher");
                    }
                    seen.insert(d.id.clone(), decision.health_index);
                }
                Err(e) => tracing::warn!(deployment = %d.id, error = %e, "deployment watcher"),
            }
        }
        let wait_ns = wake_at
            .map(|w| (w - now_ns()).clamp(10_000_000, 1_000_000_000))
            .unwrap_or(1_000_000_000);
        tokio::select! {
            _ = service.store.wait_for_change(&tables, t.max_index(&tables), Duration::from_nanos(wait_ns as u64)) => {}
            _ = stop.changed() => return,
        }
    }
}
