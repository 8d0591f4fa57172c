//! Service and batch jobs: the reconciler and placement.

use proto::model::{
    Constraint, RescheduleEvent, ReschedulePolicy, RescheduleTracker, TaskState, UpdateStrategy,
    ALLOC_CLIENT_COMPLETE, ALLOC_CLIENT_FAILED, ALLOC_CLIENT_LOST, ALLOC_DESIRED_RUN,
    ALLOC_DESIRED_STOP, DEPLOYMENT_STATUS_CANCELLED, DEPLOYMENT_STATUS_RUNNING,
    DEPLOYMENT_STATUS_SUCCESSFUL, EVAL_STATUS_BLOCKED, EVAL_STATUS_COMPLETE,
    EVAL_TRIGGER_NODE_UPDATE, EVAL_TRIGGER_RETRY_FAILED_ALLOC, MINUTE, NODE_STATUS_DOWN, SECOND,
};

use std::sync::Arc;

use super::*;
use crate::scheduler::harness::mock;
use crate::scheduler::{
    format_rfc3339_nanos, next_delay, parse_rfc3339_nanos, ALLOC_LOST, ALLOC_MIGRATING,
    ALLOC_NOT_NEEDED, ALLOC_RESCHEDULED, ALLOC_UPDATING,
};

fn names(allocs: &[&Allocation]) -> Vec<String> {
    let mut names: Vec<String> = allocs.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names
}

fn live_names(h: &Harness, job: &str) -> Vec<String> {
    let mut names: Vec<String> = h.live_allocs(job).iter().map(|a| a.name.clone()).collect();
    names.sort();
    names
}

#[test]
fn places_a_new_service_job() {
    let mut h = harness_with_nodes(10);
    h.upsert_job(mock::job("web", 3));
    let result = h.register_eval("web");
    assert_eq!(
        names(&placed(&result)),
        vec!["web.web[0]", "web.web[1]", "web.web[2]"]
    );
    for alloc in placed(&result) {
        assert_eq!(alloc.desired_status, ALLOC_DESIRED_RUN);
        assert_eq!(alloc.client_status, "pending");
        assert_eq!(alloc.eval_id, result.eval_update.id);
        assert!(alloc.job.is_some());
        let res = alloc.allocated_resources.as_ref().unwrap();
        assert_eq!(res.tasks["web"].cpu.cpu_shares, 500);
        assert_eq!(res.tasks["web"].memory.memory_mb, 256);
        assert_eq!(res.shared.disk_mb, 300);
        assert!(alloc.metrics.is_some());
    }
    assert_eq!(result.eval_update.status, EVAL_STATUS_COMPLETE);
    assert_eq!(result.eval_update.queued_allocations.get("web"), Some(&0));
    assert!(result.eval_update.failed_tg_allocs.is_empty());
    assert!(result.blocked_eval.is_none());
    let desired = &result.annotations.desired_tg_updates["web"];
    assert_eq!(desired.place, 3);
    // Service jobs with an update strategy get a deployment.
    let deployment = result.plan.deployment.as_ref().expect("deployment");
    assert_eq!(deployment.status, DEPLOYMENT_STATUS_RUNNING);
    assert_eq!(deployment.task_groups["web"].desired_total, 3);
    assert!(placed(&result)
        .iter()
        .all(|a| a.deployment_id == deployment.id));
    assert_eq!(result.eval_update.deployment_id, deployment.id);

    // Running the same evaluation again changes nothing.
    let again = h.register_eval("web");
    assert!(placed(&again).is_empty() && stopped(&again).is_empty());
    assert_eq!(again.annotations.desired_tg_updates["web"].ignore, 3);
}

#[test]
fn annotations_use_nomads_json_shape() {
    let mut h = harness_with_nodes(2);
    h.upsert_job(mock::job("web", 2));
    let result = h.register_eval("web");
    let json = serde_json::to_value(&result.annotations).unwrap();
    assert_eq!(json["DesiredTGUpdates"]["web"]["Place"], 2);
    assert_eq!(json["DesiredTGUpdates"]["web"]["InPlaceUpdate"], 0);
    assert_eq!(json["DesiredTGUpdates"]["web"]["DestructiveUpdate"], 0);
}

#[test]
fn count_up_and_down() {
    let mut h = harness_with_nodes(5);
    h.upsert_job(mock::job("web", 3));
    h.register_eval("web");
    h.upsert_job(mock::job("web", 5));
    let result = h.register_eval("web");
    assert_eq!(names(&placed(&result)), vec!["web.web[3]", "web.web[4]"]);
    assert_eq!(live_names(&h, "web").len(), 5);

    h.upsert_job(mock::job("web", 2));
    let result = h.register_eval("web");
    assert_eq!(
        names(&stopped(&result)),
        vec!["web.web[2]", "web.web[3]", "web.web[4]"]
    );
    for alloc in stopped(&result) {
        assert_eq!(alloc.desired_status, ALLOC_DESIRED_STOP);
        assert_eq!(alloc.desired_description, ALLOC_NOT_NEEDED);
    }
    assert_eq!(live_names(&h, "web"), vec!["web.web[0]", "web.web[1]"]);
    let desired = &result.annotations.desired_tg_updates["web"];
    assert_eq!(desired.stop, 3);
    // Scaling is an in-place change of the job for the survivors.
    assert_eq!(desired.in_place_update, 2);

    // Back up: the freed indexes are reused, lowest first.
    h.upsert_job(mock::job("web", 4));
    let result = h.register_eval("web");
    assert_eq!(names(&placed(&result)), vec!["web.web[2]", "web.web[3]"]);
    assert_eq!(updated(&result).len(), 2);
    assert_eq!(
        live_names(&h, "web"),
        vec!["web.web[0]", "web.web[1]", "web.web[2]", "web.web[3]"]
    );
}

#[test]
fn stopping_and_purging_a_job() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(mock::job("web", 3));
    let first = h.register_eval("web");
    let deployment = first.plan.deployment.clone().unwrap();
    h.stop_job("default", "web");
    let result = h.register_eval("web");
    assert_eq!(stopped(&result).len(), 3);
    assert!(placed(&result).is_empty());
    assert!(h.live_allocs("web").is_empty());
    assert_eq!(
        result.plan.deployment_updates[0].deployment_id,
        deployment.id
    );
    assert_eq!(
        result.plan.deployment_updates[0].status,
        DEPLOYMENT_STATUS_CANCELLED
    );

    // A purged job: every allocation is stopped too.
    let mut h = harness_with_nodes(3);
    h.upsert_job(mock::job("gone", 2));
    h.register_eval("gone");
    let job = h.job("gone");
    let index = h.state.index + 1;
    h.state.apply(
        index,
        crate::state::Command::JobDeregister {
            namespace: "default".into(),
            job_id: "gone".into(),
            purge: true,
            eval: None,
            now: 0,
        },
    );
    let eval = h.eval_for(&job, "job-deregister");
    let result = h.process(&eval);
    assert_eq!(stopped(&result).len(), 2);
    assert!(result.plan.job.is_none());
}

#[test]
fn removed_group_is_stopped() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(job_with("two", 1, |job| {
        let mut api = job.task_groups[0].clone();
        api.name = "api".into();
        job.task_groups.push(api);
    }));
    h.register_eval("two");
    assert_eq!(h.live_allocs("two").len(), 2);
    h.upsert_job(mock::job("two", 1));
    let result = h.register_eval("two");
    assert_eq!(names(&stopped(&result)), vec!["two.api[0]"]);
}

#[test]
fn in_place_versus_destructive_updates() {
    let mut h = harness_with_nodes(4);
    h.upsert_job(job_with("web", 2, |job| job.update = None));
    h.register_eval("web");
    let before: Vec<String> = h.live_allocs("web").iter().map(|a| a.id.clone()).collect();

    // Non-destructive: kill timeout, a constraint that still holds, priority.
    h.upsert_job(job_with("web", 2, |job| {
        job.update = None;
        job.priority = 70;
        job.task_groups[0].tasks[0].kill_timeout = 30 * SECOND;
        job.constraints.push(Constraint {
            l_target: "${attr.kernel.name}".into(),
            r_target: "linux".into(),
            operand: "=".into(),
        });
    }));
    let result = h.register_eval("web");
    assert!(stopped(&result).is_empty() && placed(&result).is_empty());
    let ids: Vec<String> = updated(&result).iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| before.contains(id)));
    assert!(updated(&result)
        .iter()
        .all(|a| a.job.as_ref().unwrap().priority == 70 && a.job_version == 1));
    assert_eq!(
        result.annotations.desired_tg_updates["web"].in_place_update,
        2
    );

    // Destructive: driver config, env, meta or resources.
    for (what, change) in [
        (
            "config",
            Box::new(|job: &mut Job| {
                job.task_groups[0].tasks[0]
                    .config
                    .insert("run_for".into(), serde_json::json!("20s"));
            }) as Box<dyn Fn(&mut Job)>,
        ),
        (
            "env",
            Box::new(|job: &mut Job| {
                job.task_groups[0].tasks[0]
                    .env
                    .insert("A".into(), "1".into());
            }),
        ),
        (
            "meta",
            Box::new(|job: &mut Job| {
                job.task_groups[0].meta.insert("owner".into(), "me".into());
            }),
        ),
        (
            "memory",
            Box::new(|job: &mut Job| {
                job.task_groups[0].tasks[0].resources.memory_mb = 512;
            }),
        ),
    ] {
        let mut h = harness_with_nodes(4);
        h.upsert_job(job_with("web", 2, |job| job.update = None));
        h.register_eval("web");
        let before: Vec<String> = h.live_allocs("web").iter().map(|a| a.id.clone()).collect();
        h.upsert_job(job_with("web", 2, |job| {
            job.update = None;
            change(job);
        }));
        let result = h.register_eval("web");
        assert_eq!(stopped(&result).len(), 2, "{what}");
        assert_eq!(placed(&result).len(), 2, "{what}");
        for alloc in stopped(&result) {
            assert_eq!(alloc.desired_description, ALLOC_UPDATING);
            assert!(!alloc.next_allocation.is_empty());
        }
        for alloc in placed(&result) {
            assert!(!before.contains(&alloc.id));
            assert!(before.contains(&alloc.previous_allocation));
        }
        assert_eq!(
            result.annotations.desired_tg_updates["web"].destructive_update, 2,
            "{what}"
        );
        assert_eq!(live_names(&h, "web"), vec!["web.web[0]", "web.web[1]"]);
    }
}

#[test]
fn destructive_updates_honour_max_parallel() {
    let update = UpdateStrategy {
        max_parallel: 2,
        ..UpdateStrategy::service_default()
    };
    let mut h = harness_with_nodes(6);
    h.upsert_job(job_with("web", 5, |job| job.update = Some(update.clone())));
    let first = h.register_eval("web");
    let first_deployment = first.plan.deployment.clone().unwrap();
    h.run_allocs("web", true);

    let v1 = |job: &mut Job| {
        job.update = Some(UpdateStrategy {
            max_parallel: 2,
            ..UpdateStrategy::service_default()
        });
        job.task_groups[0].tasks[0]
            .env
            .insert("VERSION".into(), "1".into());
    };
    h.upsert_job(job_with("web", 5, v1));
    let result = h.register_eval("web");
    let desired = &result.annotations.desired_tg_updates["web"];
    assert_eq!(desired.destructive_update, 2);
    assert_eq!(desired.ignore, 3);
    assert_eq!(placed(&result).len(), 2);
    let deployment = result.plan.deployment.clone().expect("new deployment");
    assert_eq!(deployment.job_version, 1);
    assert!(
        result
            .plan
            .deployment_updates
            .iter()
            .any(|u| u.deployment_id == first_deployment.id
                && u.status == DEPLOYMENT_STATUS_CANCELLED)
    );

    // The new allocations are not healthy yet: nothing more.
    let result = h.register_eval("web");
    assert!(placed(&result).is_empty());
    assert_eq!(result.annotations.desired_tg_updates["web"].ignore, 5);

    // Healthy: the next two, then the last one.
    h.run_allocs("web", true);
    let result = h.register_eval("web");
    assert_eq!(
        result.annotations.desired_tg_updates["web"].destructive_update,
        2
    );
    h.run_allocs("web", true);
    let result = h.register_eval("web");
    assert_eq!(
        result.annotations.desired_tg_updates["web"].destructive_update,
        1
    );
    h.run_allocs("web", true);
    let result = h.register_eval("web");
    assert!(placed(&result).is_empty() && stopped(&result).is_empty());
    assert_eq!(result.plan.deployment_updates.len(), 1);
    assert_eq!(
        result.plan.deployment_updates[0].deployment_id,
        deployment.id
    );
    assert_eq!(
        result.plan.deployment_updates[0].status,
        DEPLOYMENT_STATUS_SUCCESSFUL
    );
    assert!(h
        .live_allocs("web")
        .iter()
        .all(|a| a.job_version == 1 && a.deployment_id == deployment.id));
    assert_eq!(h.live_allocs("web").len(), 5);
}

#[test]
fn batch_updates_are_not_rate_limited() {
    let mut h = harness_with_nodes(4);
    h.upsert_job(mock::batch_job("b", 4));
    h.register_eval("b");
    let mut job = mock::batch_job("b", 4);
    job.task_groups[0].tasks[0]
        .env
        .insert("X".into(), "1".into());
    h.upsert_job(job);
    let result = h.register_eval("b");
    assert_eq!(
        result.annotations.desired_tg_updates["web"].destructive_update,
        4
    );
    assert!(result.plan.deployment.is_none());
}

#[test]
fn lost_allocations_are_replaced() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(job_with("web", 3, |job| job.update = None));
    h.register_eval("web");
    h.run_allocs("web", false);
    let victim = h.live_allocs("web")[0].node_id.clone();
    let on_victim: Vec<Arc<Allocation>> = h
        .live_allocs("web")
        .into_iter()
        .filter(|a| a.node_id == victim)
        .collect();
    h.update_node(&victim, |n| n.status = NODE_STATUS_DOWN.into());
    let job = h.job("web");
    let mut eval = h.eval_for(&job, EVAL_TRIGGER_NODE_UPDATE);
    eval.node_id = victim.clone();
    let result = h.process(&eval);
    assert_eq!(stopped(&result).len(), on_victim.len());
    for alloc in stopped(&result) {
        assert_eq!(alloc.client_status, ALLOC_CLIENT_LOST);
        assert_eq!(alloc.desired_status, ALLOC_DESIRED_STOP);
        assert_eq!(alloc.desired_description, ALLOC_LOST);
    }
    assert_eq!(placed(&result).len(), on_victim.len());
    for alloc in placed(&result) {
        assert_ne!(alloc.node_id, victim);
        let prev = on_victim
            .iter()
            .find(|a| a.id == alloc.previous_allocation)
            .expect("replaces a lost alloc");
        assert_eq!(prev.name, alloc.name);
    }
    assert_eq!(h.live_allocs("web").len(), 3);
}

/// A lost allocation whose stop committed without its replacement (the
/// plan applier rejected the placement, or no node had room) is still the
/// replacement's `PreviousAllocation` when a later evaluation places it,
/// and learns its `NextAllocation`.
#[test]
fn lost_allocation_stopped_earlier_is_linked_to_its_late_replacement() {
    let mut h = harness_with_nodes(1);
    h.upsert_job(job_with("web", 1, |job| job.update = None));
    h.register_eval("web");
    h.run_allocs("web", false);
    let lost = h.live_allocs("web")[0].clone();
    h.update_node(&lost.node_id, |n| n.status = NODE_STATUS_DOWN.into());
    let job = h.job("web");
    let mut eval = h.eval_for(&job, EVAL_TRIGGER_NODE_UPDATE);
    eval.node_id = lost.node_id.clone();
    // No other node: the stop commits, the placement fails and blocks.
    let result = h.process(&eval);
    assert_eq!(stopped(&result).len(), 1);
    assert!(placed(&result).is_empty());
    let blocked = result.blocked_eval.clone().expect("blocked");
    assert_eq!(h.allocs("web")[0].client_status, ALLOC_CLIENT_LOST);

    // A node arrives; the blocked evaluation places the replacement.
    h.upsert_node(mock::node(1));
    let done = h.process(&blocked);
    let new = placed(&done);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].previous_allocation, lost.id);
    assert_eq!(new[0].name, lost.name);
    let old = h
        .allocs("web")
        .into_iter()
        .find(|a| a.id == lost.id)
        .expect("old alloc");
    assert_eq!(old.next_allocation, new[0].id);
    assert_eq!(old.client_status, ALLOC_CLIENT_LOST);
    assert_eq!(old.desired_status, ALLOC_DESIRED_STOP);

    // Once linked, it is not linked again.
    let again = h.register_eval("web");
    assert!(placed(&again).is_empty());
}

#[test]
fn draining_node_allocations_migrate() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(job_with("web", 3, |job| job.update = None));
    h.register_eval("web");
    let victim = h.live_allocs("web")[0].node_id.clone();
    let moving = per_node(&h, "web")[&victim];
    h.update_node(&victim, |n| {
        n.drain = true;
        n.drain_strategy = Some(Default::default());
        n.scheduling_eligibility = "ineligible".into();
    });
    let result = h.register_eval("web");
    assert_eq!(
        result.annotations.desired_tg_updates["web"].migrate as usize,
        moving
    );
    assert!(stopped(&result)
        .iter()
        .all(|a| a.desired_description == ALLOC_MIGRATING && a.node_id == victim));
    assert!(placed(&result).iter().all(|a| a.node_id != victim));
    assert_eq!(per_node(&h, "web").get(&victim), None);
    assert_eq!(h.live_allocs("web").len(), 3);

    // An explicit migrate transition works on any node.
    let alloc = h.live_allocs("web")[0].clone();
    h.update_alloc(&alloc.id, |a| a.desired_transition.migrate = Some(true));
    let result = h.register_eval("web");
    assert_eq!(stopped(&result)[0].id, alloc.id);
    assert_eq!(placed(&result)[0].name, alloc.name);
}

/// A failed allocation of job `web` (count 1, the given policy).
fn failed_setup(policy: ReschedulePolicy, failed_ago: i64) -> (Harness, Arc<Allocation>) {
    let mut h = harness_with_nodes(2);
    h.upsert_job(job_with("web", 1, |job| {
        job.update = None;
        job.task_groups[0].reschedule_policy = Some(policy);
    }));
    h.register_eval("web");
    let alloc = h.live_allocs("web")[0].clone();
    let finished = format_rfc3339_nanos(h.now - failed_ago);
    h.update_alloc(&alloc.id, |a| {
        a.client_status = ALLOC_CLIENT_FAILED.into();
        a.task_states.insert(
            "web".into(),
            TaskState {
                state: "dead".into(),
                failed: true,
                finished_at: Some(finished.clone()),
                ..TaskState::default()
            },
        );
    });
    let alloc = h.state.allocs.get(&alloc.id).unwrap().clone();
    (h, alloc)
}

fn constant_policy(delay: i64, attempts: i64) -> ReschedulePolicy {
    ReschedulePolicy {
        attempts,
        interval: 60 * MINUTE,
        delay,
        delay_function: "constant".into(),
        max_delay: 0,
        unlimited: false,
    }
}

#[test]
fn reschedule_now_when_the_delay_has_passed() {
    let (mut h, failed) = failed_setup(constant_policy(5 * SECOND, 2), 10 * SECOND);
    let job = h.job("web");
    let eval = h.eval_for(&job, EVAL_TRIGGER_RETRY_FAILED_ALLOC);
    let result = h.process(&eval);
    assert_eq!(placed(&result).len(), 1);
    let new = placed(&result)[0];
    assert_eq!(new.previous_allocation, failed.id);
    assert_eq!(new.name, failed.name);
    assert_ne!(new.node_id, failed.node_id, "the failed node is penalized");
    let tracker = new.reschedule_tracker.as_ref().unwrap();
    assert_eq!(tracker.events.len(), 1);
    assert_eq!(tracker.events[0].prev_alloc_id, failed.id);
    assert_eq!(tracker.events[0].delay, 5 * SECOND);
    let old = stopped(&result)[0];
    assert_eq!(old.id, failed.id);
    assert_eq!(old.desired_description, ALLOC_RESCHEDULED);
    assert_eq!(old.next_allocation, new.id);
    assert!(result.followup_evals.is_empty());

    // The replaced allocation is never rescheduled again.
    let result = h.register_eval("web");
    assert!(placed(&result).is_empty());
}

#[test]
fn reschedule_later_with_a_followup_eval() {
    let (mut h, failed) = failed_setup(constant_policy(30 * SECOND, 2), 0);
    let job = h.job("web");
    let eval = h.eval_for(&job, EVAL_TRIGGER_RETRY_FAILED_ALLOC);
    let result = h.process(&eval);
    assert!(result
        .plan
        .node_allocation
        .values()
        .flatten()
        .all(|a| a.id == failed.id));
    assert_eq!(result.followup_evals.len(), 1);
    let followup = &result.followup_evals[0];
    assert_eq!(followup.triggered_by, EVAL_TRIGGER_RETRY_FAILED_ALLOC);
    assert_eq!(followup.previous_eval, eval.id);
    assert_eq!(
        parse_rfc3339_nanos(followup.wait_until.as_deref().unwrap()),
        Some(h.now + 30 * SECOND)
    );
    let annotated = h.state.allocs.get(&failed.id).unwrap();
    assert_eq!(annotated.followup_eval_id, followup.id);
    assert_eq!(result.annotations.desired_tg_updates["web"].place, 0);

    // Another evaluation before the time does not create a second follow-up.
    let again = h.register_eval("web");
    assert!(again.followup_evals.is_empty());
    assert!(placed(&again).is_empty());

    // The follow-up, when it runs, reschedules.
    h.advance(30 * SECOND);
    let followup = followup.clone();
    let result = h.process(&followup);
    let new = placed(&result)
        .into_iter()
        .find(|a| a.id != failed.id)
        .expect("replacement");
    assert_eq!(new.previous_allocation, failed.id);
}

#[test]
fn reschedule_attempts_are_limited() {
    let (mut h, failed) = failed_setup(constant_policy(5 * SECOND, 1), 10 * SECOND);
    // One reschedule already happened within the interval.
    h.update_alloc(&failed.id, |a| {
        a.reschedule_tracker = Some(RescheduleTracker {
            events: vec![RescheduleEvent {
                reschedule_time: a.create_time - MINUTE,
                prev_alloc_id: "older".into(),
                prev_node_id: "n".into(),
                delay: 5 * SECOND,
            }],
        });
    });
    let result = h.register_eval("web");
    assert!(placed(&result).is_empty());
    assert!(result.followup_evals.is_empty());
    assert_eq!(result.eval_update.status, EVAL_STATUS_COMPLETE);

    // No reschedule policy attempts at all.
    let (mut h, _) = failed_setup(constant_policy(5 * SECOND, 0), 10 * SECOND);
    let result = h.register_eval("web");
    assert!(placed(&result).is_empty());

    // Unlimited reschedules ignore attempts.
    let policy = ReschedulePolicy {
        unlimited: true,
        ..constant_policy(5 * SECOND, 0)
    };
    let (mut h, _) = failed_setup(policy, 10 * SECOND);
    let result = h.register_eval("web");
    assert_eq!(placed(&result).len(), 1);
}

#[test]
fn reschedule_delay_functions() {
    let with_events = |delays: &[i64]| Allocation {
        reschedule_tracker: Some(RescheduleTracker {
            events: delays
                .iter()
                .map(|d| RescheduleEvent {
                    reschedule_time: 1_000 * SECOND,
                    delay: *d,
                    ..RescheduleEvent::default()
                })
                .collect(),
        }),
        modify_time: 1_001 * SECOND,
        ..Allocation::default()
    };
    let policy = |function: &str| ReschedulePolicy {
        delay: 5 * SECOND,
        delay_function: function.into(),
        max_delay: 60 * SECOND,
        unlimited: true,
        ..ReschedulePolicy::default()
    };
    let now = 1_001 * SECOND;
    assert_eq!(
        next_delay(&with_events(&[]), &policy("exponential"), now),
        5 * SECOND
    );
    assert_eq!(
        next_delay(&with_events(&[5 * SECOND]), &policy("exponential"), now),
        10 * SECOND
    );
    assert_eq!(
        next_delay(&with_events(&[40 * SECOND]), &policy("exponential"), now),
        60 * SECOND
    );
    assert_eq!(
        next_delay(&with_events(&[40 * SECOND]), &policy("constant"), now),
        5 * SECOND
    );
    assert_eq!(
        next_delay(
            &with_events(&[5 * SECOND, 5 * SECOND]),
            &policy("fibonacci"),
            now
        ),
        10 * SECOND
    );
    assert_eq!(
        next_delay(
            &with_events(&[5 * SECOND, 10 * SECOND]),
            &policy("fibonacci"),
            now
        ),
        15 * SECOND
    );
    assert_eq!(
        next_delay(
            &with_events(&[40 * SECOND, 50 * SECOND]),
            &policy("fibonacci"),
            now
        ),
        60 * SECOND
    );
    // Capped, but the failure came long after the last reschedule: reset.
    let late = 2_000 * SECOND;
    let mut alloc = with_events(&[40 * SECOND]);
    alloc.modify_time = late;
    assert_eq!(next_delay(&alloc, &policy("exponential"), late), 5 * SECOND);
}

#[test]
fn batch_completed_allocations_are_not_replaced() {
    let mut h = harness_with_nodes(2);
    h.upsert_job(mock::batch_job("b", 2));
    h.register_eval("b");
    let ids: Vec<String> = h.live_allocs("b").iter().map(|a| a.id.clone()).collect();
    h.update_allocs(&ids, |a| a.client_status = ALLOC_CLIENT_COMPLETE.into());
    let result = h.register_eval("b");
    assert!(placed(&result).is_empty() && stopped(&result).is_empty());

    // A service job's completed allocation is replaced.
    let mut h = harness_with_nodes(2);
    h.upsert_job(mock::job("s", 1));
    h.register_eval("s");
    let ids: Vec<String> = h.live_allocs("s").iter().map(|a| a.id.clone()).collect();
    h.update_allocs(&ids, |a| a.client_status = ALLOC_CLIENT_COMPLETE.into());
    let result = h.register_eval("s");
    assert_eq!(placed(&result).len(), 1);
}

#[test]
fn batch_failed_allocation_uses_the_batch_policy() {
    // Batch default: one attempt a day after 5 seconds.
    let mut h = harness_with_nodes(2);
    h.upsert_job(mock::batch_job("b", 1));
    h.register_eval("b");
    let alloc = h.live_allocs("b")[0].clone();
    h.update_alloc(&alloc.id, |a| {
        a.client_status = ALLOC_CLIENT_FAILED.into();
        a.modify_time = 1;
    });
    let result = h.register_eval("b");
    assert_eq!(placed(&result).len(), 1);
    let new = placed(&result)[0].clone();
    h.update_alloc(&new.id, |a| {
        a.client_status = ALLOC_CLIENT_FAILED.into();
        a.modify_time = 2;
    });
    let result = h.register_eval("b");
    assert!(placed(&result).is_empty(), "attempts used up");
}

#[test]
fn failed_placements_block_and_reblock() {
    let mut h = harness_with_nodes(1);
    h.upsert_job(job_with("big", 3, |job| {
        job.task_groups[0].tasks[0].resources.cpu = 1500;
    }));
    let result = h.register_eval("big");
    assert_eq!(placed(&result).len(), 2);
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.nodes_evaluated, 1);
    assert_eq!(metric.nodes_exhausted, 1);
    assert_eq!(metric.dimension_exhausted["cpu"], 1);
    assert_eq!(metric.nodes_available["dc1"], 1);
    assert!(metric.summary().contains("cpu: 1"), "{}", metric.summary());
    let json = &result.eval_update.failed_tg_allocs["web"];
    for key in [
        "NodesEvaluated",
        "NodesFiltered",
        "NodesExhausted",
        "ClassFiltered",
        "ConstraintFiltered",
        "DimensionExhausted",
        "CoalescedFailures",
        "ScoreMetaData",
        "NodesAvailable",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    let blocked = result.blocked_eval.clone().unwrap();
    assert_eq!(blocked.status, EVAL_STATUS_BLOCKED);
    assert_eq!(blocked.triggered_by, "queued-allocs");
    assert_eq!(blocked.previous_eval, result.eval_update.id);
    assert_eq!(
        blocked.class_eligibility.values().filter(|e| **e).count(),
        1
    );

    // Processing the blocked evaluation without new capacity re-blocks it.
    let again = h.process(&blocked);
    assert_eq!(again.eval_update.status, EVAL_STATUS_BLOCKED);
    assert_eq!(again.eval_update.id, blocked.id);
    assert!(again.blocked_eval.is_none());

    // With a new node it completes.
    h.upsert_node(mock::node(1));
    let done = h.process(&blocked);
    assert_eq!(done.eval_update.status, EVAL_STATUS_COMPLETE);
    assert_eq!(placed(&done).len(), 1);
    assert_eq!(h.live_allocs("big").len(), 3);
}

#[test]
fn sticky_disk_prefers_the_previous_node() {
    let mut h = harness_with_nodes(5);
    h.upsert_job(job_with("s", 1, |job| {
        job.update = None;
        job.task_groups[0].ephemeral_disk.sticky = true;
    }));
    h.register_eval("s");
    let old = h.live_allocs("s")[0].clone();
    h.upsert_job(job_with("s", 1, |job| {
        job.update = None;
        job.task_groups[0].ephemeral_disk.sticky = true;
        job.task_groups[0].tasks[0]
            .env
            .insert("V".into(), "2".into());
    }));
    let result = h.register_eval("s");
    assert_eq!(placed(&result)[0].node_id, old.node_id);
}

#[test]
fn unsupported_evaluations_are_errors() {
    let mut h = harness_with_nodes(1);
    let job = h.upsert_job(mock::job("web", 1));
    let mut eval = h.eval_for(&job, "scheduled");
    eval.r#type = "_core".into();
    assert_eq!(
        h.schedule(&eval),
        Err(crate::scheduler::SchedulerError::UnsupportedType(
            "_core".into()
        ))
    );
    let mut eval = h.eval_for(&job, "job-register");
    eval.job_id = String::new();
    assert!(matches!(
        h.schedule(&eval),
        Err(crate::scheduler::SchedulerError::MissingJob(_))
    ));
}
