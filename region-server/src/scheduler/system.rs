//! The system and sysbatch scheduler: one allocation of each group on every
//! feasible node, including nodes that join later; allocations leave nodes
//! that go down, drain, or stop qualifying.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proto::model::{
    Allocation, Evaluation, ALLOC_CLIENT_LOST, EVAL_STATUS_PENDING, EVAL_TRIGGER_ROLLING_UPDATE,
};

use super::common::{new_alloc, stopped_copy, Failures, Outcome};
use super::context::EvalState;
use super::feasible::{node_draining, node_lost, CandidateNodes, Feasibility};
use super::names::alloc_name;
use super::plan::Plan;
use super::rank::Stack;
use super::reconcile::{
    is_outdated, ALLOC_LOST, ALLOC_MIGRATING, ALLOC_NODE_INFEASIBLE, ALLOC_NODE_TAINTED,
    ALLOC_NOT_NEEDED, ALLOC_UPDATING,
};
use super::update::tasks_updated;
use super::{DesiredUpdates, PlanAnnotations, SchedulerContext, SchedulerResult};
use proto::model::time::format_rfc3339 as format_rfc3339_nanos;

/// Description of rolling-update follow-up evaluations.
const ROLLING_UPDATE_DESC: &str = "created to continue a rolling update";

struct Placement {
    group: String,
    node: Arc<proto::model::Node>,
    previous: Option<Arc<Allocation>>,
    destructive: bool,
}

/// Processes a system (`sysbatch == false`) or sysbatch evaluation.
#[allow(clippy::too_many_lines)]
pub fn process(ctx: &SchedulerContext, eval: &Evaluation, sysbatch: bool) -> SchedulerResult {
    let state = ctx.state;
    let now = ctx.now;
    let job = state.job(&eval.namespace, &eval.job_id);
    let plan = Plan {
        eval_id: eval.id.clone(),
        priority: eval.priority,
        job: job.as_deref().cloned(),
        all_at_once: job.as_ref().is_some_and(|j| j.all_at_once),
        snapshot_index: state.index,
        ..Plan::default()
    };
    let mut es = EvalState::new(state, ctx.rng_seed, plan, &eval.namespace, &eval.job_id);
    let allocs = state.allocs_by_job(&eval.namespace, &eval.job_id);
    let mut desired: BTreeMap<String, DesiredUpdates> = BTreeMap::new();

    let lost_node = |node_id: &str| state.nodes.get(node_id).is_none_or(|node| node_lost(node));

    let Some(job) = job.as_deref().filter(|j| !j.stop && !j.is_template()) else {
        for alloc in allocs.iter().filter(|a| !a.terminal()) {
            desired.entry(alloc.task_group.clone()).or_default().stop += 1;
            let lost = lost_node(&alloc.node_id);
            es.stop(stopped_copy(
                alloc,
                if lost { ALLOC_LOST } else { ALLOC_NOT_NEEDED },
                lost.then_some(ALLOC_CLIENT_LOST),
                now,
            ));
        }
        let plan = std::mem::take(&mut es.plan);
        return Outcome {
            eval,
            now,
            snapshot_index: state.index,
            failures: Failures::default(),
            queued: BTreeMap::new(),
            feasibility: None,
            followup_evals: Vec::new(),
            next_eval: None,
            deployment_id: None,
            annotations: PlanAnnotations {
                desired_tg_updates: desired,
                preempted_allocs: Vec::new(),
            },
        }
        .finish(&mut es, plan);
    };

    let candidates = CandidateNodes::collect(state, job);
    let eligible: BTreeMap<String, Arc<proto::model::Node>> = candidates
        .ready
        .iter()
        .map(|n| (n.id.clone(), n.clone()))
        .collect();
    let mut feas = Feasibility::new(job, ctx.config.feasibility_cache);
    let stack = Stack::new(&candidates, ctx.rng_seed, false, ctx.config);

    // Live allocations per (group, node), oldest first; the latest terminal
    // allocation per (group, node).
    let mut live: BTreeMap<(String, String), Vec<Arc<Allocation>>> = BTreeMap::new();
    let mut terminal: BTreeMap<(String, String), Arc<Allocation>> = BTreeMap::new();
    for alloc in &allocs {
        let key = (alloc.task_group.clone(), alloc.node_id.clone());
        if alloc.terminal() {
            let newer = terminal
                .get(&key)
                .is_none_or(|t| (t.create_index, &t.id) < (alloc.create_index, &alloc.id));
            if newer {
                terminal.insert(key, alloc.clone());
            }
        } else {
            live.entry(key).or_default().push(alloc.clone());
        }
    }
    for list in live.values_mut() {
        list.sort_by(|a, b| (a.create_index, &a.id).cmp(&(b.create_index, &b.id)));
    }

    let mut limit = job
        .update
        .as_ref()
        .filter(|u| u.max_parallel > 0)
        .map_or(usize::MAX, |u| u.max_parallel as usize);
    let mut limit_reached = false;
    let mut placements: Vec<Placement> = Vec::new();

    // Groups removed from the job.
    for ((group, _), list) in &live {
        if job.task_group(group).is_none() {
            for alloc in list {
                desired.entry(group.clone()).or_default().stop += 1;
                es.stop(stopped_copy(alloc, ALLOC_NOT_NEEDED, None, now));
            }
        }
    }

    for group in &job.task_groups {
        let counts = desired.entry(group.name.clone()).or_default();
        let mut node_ids: BTreeSet<String> = eligible.keys().cloned().collect();
        node_ids.extend(
            live.keys()
                .filter(|(g, _)| *g == group.name)
                .map(|(_, node)| node.clone()),
        );
        for node_id in node_ids {
            let key = (group.name.clone(), node_id.clone());
            let node = state.nodes.get(&node_id);
            if let Some(list) = live.get(&key) {
                let keep = &list[0];
                for extra in &list[1..] {
                    counts.stop += 1;
                    es.stop(stopped_copy(extra, ALLOC_NOT_NEEDED, None, now));
                }
                let Some(node) = node else {
                    counts.stop += 1;
                    es.stop(stopped_copy(keep, ALLOC_LOST, Some(ALLOC_CLIENT_LOST), now));
                    continue;
                };
                if node_lost(node) {
                    counts.stop += 1;
                    es.stop(stopped_copy(keep, ALLOC_LOST, Some(ALLOC_CLIENT_LOST), now));
                    continue;
                }
                let ignore_drain = node
                    .drain_strategy
                    .as_ref()
                    .is_some_and(|d| d.ignore_system_jobs);
                if keep.desired_transition.migrate == Some(true)
                    || (node_draining(node) && ctx.config.migrate_on_drain && !ignore_drain)
                {
                    counts.migrate += 1;
                    es.stop(stopped_copy(keep, ALLOC_MIGRATING, None, now));
                    continue;
                }
                if !eligible.contains_key(&node_id) {
                    if candidates.not_ready.contains(&node_id) || node_draining(node) {
                        counts.ignore += 1;
                    } else {
                        counts.stop += 1;
                        es.stop(stopped_copy(keep, ALLOC_NODE_TAINTED, None, now));
                    }
                    continue;
                }
                let feasible = feas.check(node, group).is_ok();
                if !is_outdated(keep, job) {
                    if feasible {
                        counts.ignore += 1;
                    } else {
                        counts.stop += 1;
                        es.stop(stopped_copy(keep, ALLOC_NODE_INFEASIBLE, None, now));
                    }
                    continue;
                }
                let destructive = keep
                    .job
                    .as_deref()
                    .is_none_or(|old| tasks_updated(job, old, &group.name));
                if !destructive {
                    if feasible {
                        counts.in_place_update += 1;
                        let mut updated = (**keep).clone();
                        updated.job = Some(es.job_arc(job));
                        updated.job_version = job.version;
                        updated.eval_id = eval.id.clone();
                        updated.modify_time = now;
                        es.place(updated);
                    } else {
                        counts.stop += 1;
                        es.stop(stopped_copy(keep, ALLOC_NODE_INFEASIBLE, None, now));
                    }
                    continue;
                }
                if limit == 0 {
                    counts.ignore += 1;
                    limit_reached = true;
                    continue;
                }
                limit -= 1;
                counts.destructive_update += 1;
                placements.push(Placement {
                    group: group.name.clone(),
                    node: eligible[&node_id].clone(),
                    previous: Some(keep.clone()),
                    destructive: true,
                });
                continue;
            }

            // No live allocation here.
            let Some(node) = eligible.get(&node_id) else {
                continue;
            };
            let previous = terminal.get(&key).cloned();
            if sysbatch {
                if let Some(done) = &previous {
                    if !is_outdated(done, job) {
                        counts.ignore += 1;
                        continue;
                    }
                }
            }
            counts.place += 1;
            placements.push(Placement {
                group: group.name.clone(),
                node: node.clone(),
                previous,
                destructive: false,
            });
        }
    }

    // Place.
    let mut failures = Failures::default();
    let mut queued: BTreeMap<String, i64> = job
        .task_groups
        .iter()
        .map(|g| (g.name.clone(), 0))
        .collect();
    for placement in placements {
        let Some(group) = job.task_group(&placement.group) else {
            continue;
        };
        if let (true, Some(prev)) = (placement.destructive, &placement.previous) {
            es.stop(stopped_copy(prev, ALLOC_UPDATING, None, now));
        }
        let (selected, metric) = stack.select_node(&mut es, &mut feas, job, group, &placement.node);
        let Some(selected) = selected else {
            let counts = desired.entry(group.name.clone()).or_default();
            if metric.nodes_filtered > 0 {
                // The node does not qualify: not a failure for system jobs.
                if placement.destructive {
                    counts.destructive_update = counts.destructive_update.saturating_sub(1);
                    counts.stop += 1;
                } else {
                    counts.place = counts.place.saturating_sub(1);
                }
                continue;
            }
            if let (true, Some(prev)) = (placement.destructive, &placement.previous) {
                es.unstop(&prev.node_id, &prev.id);
            }
            failures.record(&group.name, metric);
            *queued.entry(group.name.clone()).or_default() += 1;
            continue;
        };
        let mut alloc = new_alloc(
            &mut es,
            eval,
            job,
            group,
            alloc_name(&job.id, &group.name, 0),
            selected,
            &metric,
            None,
            now,
        );
        if let Some(prev) = &placement.previous {
            alloc.previous_allocation = prev.id.clone();
            if let Some(stopped) = es
                .plan
                .node_update
                .get_mut(&prev.node_id)
                .and_then(|list| list.iter_mut().find(|a| a.id == prev.id))
            {
                stopped.next_allocation = alloc.id.clone();
            }
        }
        es.place(alloc);
    }

    // A rolling update that hit its limit continues in a later evaluation.
    let mut followup_evals = Vec::new();
    let mut next_eval = None;
    if limit_reached {
        let wait = job
            .update
            .as_ref()
            .map_or(0, |u| u.stagger.max(u.min_healthy_time));
        let id = es.ids.uuid();
        next_eval = Some(id.clone());
        followup_evals.push(Evaluation {
            id,
            namespace: job.namespace.clone(),
            priority: eval.priority,
            r#type: job.r#type.clone(),
            triggered_by: EVAL_TRIGGER_ROLLING_UPDATE.to_string(),
            job_id: job.id.clone(),
            job_modify_index: job.job_modify_index,
            status: EVAL_STATUS_PENDING.to_string(),
            status_description: ROLLING_UPDATE_DESC.to_string(),
            wait,
            wait_until: Some(format_rfc3339_nanos(now.saturating_add(wait))),
            previous_eval: eval.id.clone(),
            create_time: now,
            modify_time: now,
            ..Evaluation::default()
        });
    }

    let plan = std::mem::take(&mut es.plan);
    Outcome {
        eval,
        now,
        snapshot_index: state.index,
        failures,
        queued,
        feasibility: Some(&feas),
        followup_evals,
        next_eval,
        deployment_id: None,
        annotations: PlanAnnotations {
            desired_tg_updates: desired,
            preempted_allocs: Vec::new(),
        },
    }
    .finish(&mut es, plan)
}
