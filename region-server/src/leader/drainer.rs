//! The node drainer: moves allocations off draining nodes at the pace the
//! jobs allow, enforces the drain deadline, and ends drains that have
//! nothing left (Nomad's `drainer` package, reduced to what Atoll models).
//!
//! Each pass reads the state and decides, per draining node, which live
//! allocations to mark with `DesiredTransition.Migrate` (one `AllocMigrate`
//! entry with an evaluation per job; the scheduler then stops and replaces
//! them):
//! * service allocations, per task group, while fewer than the group's
//!   `Migrate.MaxParallel` migrations are in flight (a marked allocation
//!   not yet stopped, or a replacement of a migrated allocation not yet
//!   running);
//! * batch allocations only at the deadline (they may finish first);
//! * system and sysbatch allocations once nothing else is left, unless
//!   `IgnoreSystemJobs`;
//! * everything at the deadline (`ForceDeadline` passed, or `Deadline < 0`).
//!
//! When nothing that must leave is left, the drain completes through Raft:
//! `DrainStrategy` cleared, `LastDrain` recorded, the node stays
//! ineligible. The drainer keeps no state: a new leader carries on.
//! The scheduler's own `migrate_on_drain` shortcut is off while it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proto::model::{Allocation, Evaluation, Node};
use tokio::sync::watch;

use super::now_ns;
use super::periodic::new_eval;
use crate::service::Service;
use crate::state::{table, Command, Tables};

/// Longest sleep between passes.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What one pass decided for one node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeDrainPlan {
    /// Allocations to mark for migration.
    pub migrate: Vec<String>,
    /// Evaluations for their jobs.
    pub evals: Vec<Evaluation>,
    /// Nothing is left: the drain completes.
    pub complete: bool,
    /// When the deadline passes, if it is still ahead (Unix ns).
    pub deadline: Option<i64>,
}

fn is_system(t: &Tables, alloc: &Allocation) -> bool {
    let job_type = t
        .job(&alloc.namespace, &alloc.job_id)
        .map(|j| j.r#type.clone())
        .or_else(|| alloc.job.as_ref().map(|j| j.r#type.clone()))
        .unwrap_or_default();
    job_type == "system" || job_type == "sysbatch"
}

fn is_batch(t: &Tables, alloc: &Allocation) -> bool {
    t.job(&alloc.namespace, &alloc.job_id)
        .is_some_and(|j| j.r#type == "batch")
}

fn marked(alloc: &Allocation) -> bool {
    alloc.desired_transition.migrate == Some(true)
}

/// Migrations of `alloc`'s group in flight anywhere.
fn in_flight(t: &Tables, alloc: &Allocation) -> i64 {
    t.allocs_by_job(&alloc.namespace, &alloc.job_id)
        .iter()
        .filter(|a| a.task_group == alloc.task_group && !a.terminal())
        .filter(|a| {
            marked(a)
                || (a.client_status != "running"
                    && !a.previous_allocation.is_empty()
                    && t.allocs
                        .get(&a.previous_allocation)
                        .is_some_and(|p| marked(p)))
        })
        .count() as i64
}

fn max_parallel(t: &Tables, alloc: &Allocation) -> i64 {
    t.job(&alloc.namespace, &alloc.job_id)
        .and_then(|j| {
            j.task_group(&alloc.task_group)
                .and_then(|g| g.migrate.as_ref().map(|m| m.max_parallel))
        })
        .unwrap_or(1)
        .max(1)
}

/// Decide what to do for draining `node` at `now`.
pub fn plan_node(t: &Tables, node: &Node, now: i64) -> NodeDrainPlan {
    let mut plan = NodeDrainPlan::default();
    let Some(strategy) = node.drain_strategy.as_ref() else {
        return plan;
    };
    let deadline = if strategy.deadline < 0 {
        Some(i64::MIN)
    } else {
        strategy
            .force_deadline
            .as_deref()
            .and_then(proto::model::time::parse_rfc3339)
    };
    let forced = deadline.is_some_and(|d| d <= now);
    plan.deadline = deadline.filter(|_| !forced);

    let live: Vec<Arc<Allocation>> = t
        .allocs_by_node(&node.id)
        .into_iter()
        .filter(|a| !a.terminal())
        .collect();
    let (system, others): (Vec<_>, Vec<_>) = live.into_iter().partition(|a| is_system(t, a));
    let system: Vec<_> = if strategy.ignore_system_jobs {
        Vec::new()
    } else {
        system
    };
    if others.is_empty() && system.is_empty() {
        plan.complete = true;
        return plan;
    }

    let mut chosen: Vec<&Arc<Allocation>> = Vec::new();
    if forced {
        chosen.extend(others.iter().chain(&system).filter(|a| !marked(a)));
    } else if others.is_empty() {
        chosen.extend(system.iter().filter(|a| !marked(a)));
    } else {
        // Service allocations at each group's MaxParallel; batch ones wait
        // for the deadline.
        let mut budget: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for alloc in others.iter().filter(|a| !marked(a) && !is_batch(t, a)) {
            let key = (
                alloc.namespace.clone(),
                alloc.job_id.clone(),
                alloc.task_group.clone(),
            );
            let left = budget
                .entry(key)
                .or_insert_with(|| max_parallel(t, alloc) - in_flight(t, alloc));
            if *left > 0 {
                *left -= 1;
                chosen.push(alloc);
            }
        }
    }

    let mut jobs: BTreeMap<(String, String), ()> = BTreeMap::new();
    let now_eval = now.max(0);
    for alloc in chosen {
        plan.migrate.push(alloc.id.clone());
        if jobs
            .insert((alloc.namespace.clone(), alloc.job_id.clone()), ())
            .is_none()
        {
            if let Some(job) = t.job(&alloc.namespace, &alloc.job_id) {
                let mut eval = new_eval(&job, "node-drain", now_eval);
                eval.node_id = node.id.clone();
                eval.node_modify_index = node.modify_index;
                plan.evals.push(eval);
            }
        }
    }
    plan
}

/// Drain nodes while this server leads.
pub async fn run(service: Service, mut stop: watch::Receiver<bool>) {
    loop {
        let t = service.store.snapshot();
        let now = now_ns();
        let mut sleep = MAX_SLEEP;
        let draining: Vec<Arc<Node>> = t
            .nodes
            .values()
            .filter(|n| n.drain_strategy.is_some())
            .cloned()
            .collect();
        for node in draining {
            let plan = plan_node(&t, &node, now);
            if let Some(deadline) = plan.deadline {
                let wait = u64::try_from(deadline.saturating_sub(now)).unwrap_or(0);
                sleep = sleep.min(Duration::from_nanos(wait));
            }
            let cmd = if plan.complete {
                tracing::info!(node = %node.id, "drain: complete");
                Command::NodeDrainComplete {
                    node_id: node.id.clone(),
                    now,
                }
            } else if !plan.migrate.is_empty() {
                tracing::info!(node = %node.id, allocs = plan.migrate.len(), "drain: migrating");
                Command::AllocMigrate {
                    alloc_ids: plan.migrate,
                    evals: plan.evals,
                }
            } else {
                continue;
            };
            if let Err(e) = service.write(cmd).await {
                tracing::warn!(node = %node.id, error = %e, "drain: write failed; retrying");
            }
        }
        if !super::wait_for_change_or_stop(
            &service,
            &[table::NODES, table::ALLOCS, table::JOBS],
            sleep,
            &mut stop,
        )
        .await
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::harness::{mock, Harness};
    use proto::model::{DrainStrategy, SECOND};

    /// One node with 3 allocations of service `web` (MaxParallel 1), one of
    /// batch `crunch`, one of system `agent`.
    fn setup() -> (Harness, String) {
        let mut h = Harness::new();
        h.upsert_node(mock::node(0));
        h.upsert_job(mock::job("web", 3));
        h.register_eval("web");
        h.upsert_job(mock::batch_job("crunch", 1));
        h.register_eval("crunch");
        h.upsert_job(mock::system_job("agent"));
        h.register_eval("agent");
        h.run_allocs("web", true);
        let node = mock::node_id(0);
        (h, node)
    }

    fn drain(h: &mut Harness, node: &str, deadline: i64, ignore_system: bool) {
        let now = h.now;
        h.update_node(node, |n| {
            n.drain = true;
            n.scheduling_eligibility = "ineligible".into();
            n.drain_strategy = Some(DrainStrategy {
                deadline,
                ignore_system_jobs: ignore_system,
                force_deadline: (deadline > 0)
                    .then(|| proto::model::time::format_rfc3339(now + deadline)),
                started_at: Some(proto::model::time::format_rfc3339(now)),
            });
        });
    }

    fn plan(h: &Harness, node: &str, now: i64) -> NodeDrainPlan {
        let n = h.state.nodes.get(node).cloned().expect("node");
        plan_node(&h.state, &n, now)
    }

    fn job_of(h: &Harness, id: &str) -> String {
        h.state
            .allocs
            .get(id)
            .map(|a| a.job_id.clone())
            .unwrap_or_default()
    }

    fn mark(h: &mut Harness, ids: &[String]) {
        h.update_allocs(ids, |a| a.desired_transition.migrate = Some(true));
    }

    #[test]
    fn service_allocations_move_at_max_parallel_then_batch_at_the_deadline() {
        let (mut h, node) = setup();
        drain(&mut h, &node, 60 * SECOND, false);
        let now = h.now;
        let p = plan(&h, &node, now);
        // MaxParallel 1: one web allocation; batch and system wait.
        assert_eq!(p.migrate.len(), 1);
        assert_eq!(job_of(&h, &p.migrate[0]), "web");
        assert_eq!(p.evals.len(), 1);
        assert_eq!(p.evals[0].job_id, "web");
        assert_eq!(p.evals[0].node_id, node);
        assert_eq!(p.deadline, Some(now + 60 * SECOND));
        assert!(!p.complete);
        // While it is in flight, nothing more moves.
        mark(&mut h, &p.migrate);
        assert!(plan(&h, &node, now).migrate.is_empty());
        // At the deadline everything left goes, system jobs included.
        let late = plan(&h, &node, now + 61 * SECOND);
        let mut jobs: Vec<String> = late.migrate.iter().map(|id| job_of(&h, id)).collect();
        jobs.sort();
        assert_eq!(jobs, ["agent", "crunch", "web", "web"]);
        assert_eq!(late.deadline, None);
    }

    #[test]
    fn system_allocations_go_last_or_stay_when_ignored_and_the_drain_completes() {
        let (mut h, node) = setup();
        // Force (-1): everything but system allocations, which are ignored.
        drain(&mut h, &node, -1, true);
        let p = plan(&h, &node, h.now);
        let mut jobs: Vec<String> = p.migrate.iter().map(|id| job_of(&h, id)).collect();
        jobs.sort();
        assert_eq!(jobs, ["crunch", "web", "web", "web"]);
        // Once they are gone, the drain is complete although the system
        // allocation still runs.
        let gone = p.migrate.clone();
        h.update_allocs(&gone, |a| a.desired_status = "stop".into());
        assert!(plan(&h, &node, h.now).complete);

        // Without IgnoreSystemJobs the system allocation moves last.
        let (mut h, node) = setup();
        drain(&mut h, &node, 0, false);
        let others: Vec<String> = h
            .state
            .allocs_by_node(&node)
            .iter()
            .filter(|a| a.job_id != "agent")
            .map(|a| a.id.clone())
            .collect();
        h.update_allocs(&others, |a| a.desired_status = "stop".into());
        let p = plan(&h, &node, h.now);
        assert_eq!(p.migrate.len(), 1);
        assert_eq!(job_of(&h, &p.migrate[0]), "agent");
        assert!(!p.complete);
        assert_eq!(p.deadline, None, "deadline 0 means none");
    }

    #[test]
    fn completion_clears_the_strategy_and_records_last_drain() {
        let (mut h, node) = setup();
        drain(&mut h, &node, 0, false);
        let index = h.state.index + 1;
        h.state.apply(
            index,
            Command::NodeDrainComplete {
                node_id: node.clone(),
                now: h.now + SECOND,
            },
        );
        let n = h.state.nodes.get(&node).cloned().expect("node");
        assert!(n.drain_strategy.is_none() && !n.drain);
        assert_eq!(n.scheduling_eligibility, "ineligible");
        let last = n.last_drain.clone().expect("last drain");
        assert_eq!(last.status, "complete");
        assert!(!last.started_at.is_empty() && !last.updated_at.is_empty());
    }
}
