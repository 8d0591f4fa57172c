//! Deployments through the harness: rolling updates bounded by
//! `MaxParallel` and health, canaries and their promotion, paused and
//! failed deployments, progress deadlines and auto-revert (with the
//! leader's deployment watcher's pure decisions).

use proto::model::{
    Deployment, Job, UpdateStrategy, ALLOC_DESIRED_STOP, DEPLOYMENT_STATUS_CANCELLED,
    DEPLOYMENT_STATUS_FAILED, DEPLOYMENT_STATUS_PAUSED, DEPLOYMENT_STATUS_RUNNING,
    DEPLOYMENT_STATUS_SUCCESSFUL, MINUTE, SECOND,
};

use super::*;
use crate::leader::deployments::{
    decide, failure, Action, FAILED_ALLOCATIONS, FAILED_PROGRESS_DEADLINE,
};
use crate::scheduler::{parse_rfc3339_nanos, DEPLOYMENT_DESC_NEEDS_PROMOTION};
use crate::state::{Command, CommandResponse};

fn strategy(max_parallel: i64, canary: i64) -> UpdateStrategy {
    UpdateStrategy {
        max_parallel,
        canary,
        ..UpdateStrategy::service_default()
    }
}

/// Version `v` of job `web` (the env var makes each version destructive).
fn version(count: i64, v: u32, update: UpdateStrategy) -> Job {
    job_with("web", count, |job| {
        job.update = Some(update);
        if v > 0 {
            job.task_groups[0].tasks[0]
                .env
                .insert("VERSION".into(), v.to_string());
        }
    })
}

fn deployment(h: &Harness, id: &str) -> Deployment {
    (**h.state.deployments.get(id).expect("deployment stored")).clone()
}

fn latest(h: &Harness) -> Deployment {
    (*crate::scheduler::common::latest_deployment(&h.state, "default", "web")
        .expect("a deployment"))
    .clone()
}

fn ids_of(allocs: &[&Allocation]) -> Vec<String> {
    allocs.iter().map(|a| a.id.clone()).collect()
}

fn live_versions(h: &Harness) -> Vec<u64> {
    let mut v: Vec<u64> = h.live_allocs("web").iter().map(|a| a.job_version).collect();
    v.sort_unstable();
    v
}

/// Version 0 placed, running and healthy, its deployment successful.
fn deployed_v0(nodes: usize, count: i64, update: UpdateStrategy) -> Harness {
    let mut h = harness_with_nodes(nodes);
    h.upsert_job(version(count, 0, update));
    h.register_eval("web");
    h.run_allocs("web", true);
    let done = h.register_eval("web");
    assert_eq!(
        done.plan.deployment_updates[0].status,
        DEPLOYMENT_STATUS_SUCCESSFUL
    );
    assert!(
        h.job("web").stable,
        "a successful deployment makes its version stable"
    );
    h
}

#[test]
fn rolling_update_honours_max_parallel_and_health() {
    let mut h = deployed_v0(6, 4, strategy(2, 0));
    h.upsert_job(version(4, 1, strategy(2, 0)));
    let first = h.register_eval("web");
    assert_eq!(placed(&first).len(), 2);
    assert_eq!(stopped(&first).len(), 2);
    let d = first
        .plan
        .deployment
        .clone()
        .expect("a deployment for version 1");
    assert_eq!(d.job_version, 1);
    let stored = deployment(&h, &d.id);
    let web = &stored.task_groups["web"];
    assert_eq!(web.desired_total, 4);
    assert_eq!(web.placed_allocs, 2, "the state counts placements");
    assert_eq!(web.healthy_allocs, 0);
    assert!(
        web.require_progress_by.is_some(),
        "first placement starts the progress deadline"
    );
    assert!(!h.job("web").stable);

    // Nothing more while the new allocations are not healthy.
    let again = h.register_eval("web");
    assert!(placed(&again).is_empty() && stopped(&again).is_empty());

    // One healthy: one more slot.
    let new_ids = ids_of(&placed(&first));
    h.set_health(&new_ids[..1], true);
    let next = h.register_eval("web");
    assert_eq!(
        next.annotations.desired_tg_updates["web"].destructive_update,
        1
    );
    assert_eq!(deployment(&h, &d.id).task_groups["web"].healthy_allocs, 1);

    // Everything healthy: the last one, then success.
    let mut rounds = 0;
    loop {
        h.run_allocs("web", true);
        let r = h.register_eval("web");
        if let Some(u) = r.plan.deployment_updates.first() {
            assert_eq!(u.status, DEPLOYMENT_STATUS_SUCCESSFUL);
            break;
        }
        rounds += 1;
        assert!(rounds < 5, "the rollout converges");
    }
    let done = deployment(&h, &d.id);
    assert_eq!(done.status, DEPLOYMENT_STATUS_SUCCESSFUL);
    assert_eq!(done.task_groups["web"].healthy_allocs, 4);
    assert_eq!(done.task_groups["web"].placed_allocs, 4);
    assert_eq!(live_versions(&h), vec![1, 1, 1, 1]);
    assert!(h.job("web").stable);
}

#[test]
fn an_unhealthy_allocation_stops_the_rollout() {
    let mut h = deployed_v0(6, 4, strategy(2, 0));
    h.upsert_job(version(4, 1, strategy(2, 0)));
    let first = h.register_eval("web");
    let new_ids = ids_of(&placed(&first));
    h.set_health(&new_ids[..1], true);
    h.set_health(&new_ids[1..2], false);
    let r = h.register_eval("web");
    assert!(placed(&r).is_empty() && stopped(&r).is_empty());
    let d = latest(&h);
    assert_eq!(d.task_groups["web"].unhealthy_allocs, 1);
    assert_eq!(d.task_groups["web"].healthy_allocs, 1);
}

#[test]
fn canaries_first_then_promotion_replaces_the_rest() {
    let mut h = deployed_v0(8, 3, strategy(1, 1));
    let before: Vec<String> = h.live_allocs("web").iter().map(|a| a.id.clone()).collect();
    h.upsert_job(version(3, 1, strategy(1, 1)));
    let r = h.register_eval("web");
    // One canary beside the three old allocations, named after one of them.
    assert_eq!(placed(&r).len(), 1);
    assert!(stopped(&r).is_empty());
    let canary = placed(&r)[0].clone();
    assert_eq!(canary.name, "web.web[0]");
    assert!(canary.deployment_status.as_ref().is_some_and(|s| s.canary));
    assert_eq!(r.annotations.desired_tg_updates["web"].canary, 1);
    assert_eq!(
        r.annotations.desired_tg_updates["web"].destructive_update,
        0
    );
    let d = r.plan.deployment.clone().expect("deployment");
    assert_eq!(d.status_description, DEPLOYMENT_DESC_NEEDS_PROMOTION);
    let stored = deployment(&h, &d.id);
    assert_eq!(stored.task_groups["web"].desired_canaries, 1);
    assert_eq!(
        stored.task_groups["web"].placed_canaries,
        vec![canary.id.clone()]
    );
    assert_eq!(live_versions(&h), vec![0, 0, 0, 1]);

    // The canary is not healthy yet: promotion is refused, nothing moves.
    let refused = h.apply_command(Command::DeploymentPromote {
        deployment_id: d.id.clone(),
        all: true,
        groups: Vec::new(),
        eval: None,
        now: h.now,
    });
    assert!(
        matches!(&refused, CommandResponse::Conflict(m) if m.contains("0/1 healthy")),
        "{refused:?}"
    );
    h.set_health(std::slice::from_ref(&canary.id), true);
    let waiting = h.register_eval("web");
    assert!(placed(&waiting).is_empty() && stopped(&waiting).is_empty());
    assert!(
        waiting.plan.deployment_updates.is_empty(),
        "not complete before promotion"
    );

    // Promoted: the canary stops being one, its namesake goes, and the
    // others are replaced one at a time.
    let promoted = h.apply_command(Command::DeploymentPromote {
        deployment_id: d.id.clone(),
        all: true,
        groups: Vec::new(),
        eval: None,
        now: h.now,
    });
    assert!(
        matches!(promoted, CommandResponse::Job { .. }),
        "{promoted:?}"
    );
    assert!(deployment(&h, &d.id).task_groups["web"].promoted);
    let c = h.state.allocs.get(&canary.id).expect("canary");
    assert!(!c.deployment_status.as_ref().is_some_and(|s| s.canary));
    let r = h.register_eval("web");
    let stopped_names: Vec<String> = stopped(&r).iter().map(|a| a.name.clone()).collect();
    assert!(
        stopped_names.contains(&"web.web[0]".to_string()),
        "{stopped_names:?}"
    );
    assert_eq!(
        r.annotations.desired_tg_updates["web"].destructive_update,
        1
    );
    let mut rounds = 0;
    loop {
        h.run_allocs("web", true);
        let r = h.register_eval("web");
        if r.plan
            .deployment_updates
            .iter()
            .any(|u| u.status == DEPLOYMENT_STATUS_SUCCESSFUL)
        {
            break;
        }
        rounds += 1;
        assert!(rounds < 6, "the rollout converges");
    }
    assert_eq!(live_versions(&h), vec![1, 1, 1]);
    assert!(h.live_allocs("web").iter().all(|a| !before.contains(&a.id)));
    assert!(
        h.live_allocs("web").iter().any(|a| a.id == canary.id),
        "the canary stays"
    );
}

#[test]
fn paused_deployment_places_nothing_until_resumed() {
    let mut h = deployed_v0(6, 3, strategy(1, 0));
    h.upsert_job(version(3, 1, strategy(1, 0)));
    let first = h.register_eval("web");
    let d = first.plan.deployment.clone().expect("deployment");
    let pause = |status: &str| Command::DeploymentStatusUpdate {
        deployment_id: d.id.clone(),
        status: status.to_string(),
        status_description: String::new(),
        job: None,
        eval: None,
        now: 0,
    };
    assert!(matches!(
        h.apply_command(pause(DEPLOYMENT_STATUS_PAUSED)),
        CommandResponse::Job { .. }
    ));
    h.run_allocs("web", true);
    let r = h.register_eval("web");
    assert!(placed(&r).is_empty() && stopped(&r).is_empty());
    assert_eq!(r.annotations.desired_tg_updates["web"].ignore, 3);
    h.apply_command(pause(DEPLOYMENT_STATUS_RUNNING));
    let r = h.register_eval("web");
    assert_eq!(
        r.annotations.desired_tg_updates["web"].destructive_update,
        1
    );
}

#[test]
fn failed_deployment_stops_canaries_and_replacements() {
    let mut h = deployed_v0(8, 3, strategy(1, 1));
    h.upsert_job(version(3, 1, strategy(1, 1)));
    let r = h.register_eval("web");
    let d = r.plan.deployment.clone().expect("deployment");
    let canary = placed(&r)[0].id.clone();
    let failed = h.apply_command(Command::DeploymentStatusUpdate {
        deployment_id: d.id.clone(),
        status: DEPLOYMENT_STATUS_FAILED.into(),
        status_description: "Deployment marked as failed".into(),
        job: None,
        eval: None,
        now: 0,
    });
    assert!(matches!(failed, CommandResponse::Job { .. }));
    let r = h.register_eval("web");
    assert_eq!(ids_of(&stopped(&r)), vec![canary.clone()]);
    assert!(placed(&r).is_empty());
    assert_eq!(live_versions(&h), vec![0, 0, 0]);
    // A terminal deployment takes no more status changes.
    let again = h.apply_command(Command::DeploymentStatusUpdate {
        deployment_id: d.id.clone(),
        status: DEPLOYMENT_STATUS_RUNNING.into(),
        status_description: String::new(),
        job: None,
        eval: None,
        now: 0,
    });
    assert!(matches!(again, CommandResponse::Conflict(_)), "{again:?}");
    assert_eq!(deployment(&h, &d.id).status, DEPLOYMENT_STATUS_FAILED);
}

#[test]
fn auto_revert_registers_the_stable_version_again() {
    let auto = UpdateStrategy {
        auto_revert: true,
        progress_deadline: Some(0),
        ..strategy(1, 0)
    };
    let mut h = deployed_v0(6, 2, auto.clone());
    let v0_spec = h.job("web");
    h.upsert_job(version(2, 1, auto.clone()));
    let first = h.register_eval("web");
    let d = first.plan.deployment.clone().expect("deployment");
    let watched = deployment(&h, &d.id);
    assert_eq!(decide(&h.state, &watched, h.now, 0).action, Action::None);

    // The new allocation turns unhealthy: the watcher fails the
    // deployment and rolls back to version 0's spec as version 2.
    let new_id = ids_of(&placed(&first));
    h.set_health(&new_id, false);
    let watched = deployment(&h, &d.id);
    let decision = decide(&h.state, &watched, h.now, 0);
    assert_eq!(decision.action, Action::Fail(FAILED_ALLOCATIONS));
    let f = failure(&h.state, &watched, FAILED_ALLOCATIONS, h.now);
    assert_eq!(f.reverted_version, Some(0));
    assert_eq!(
        f.description,
        "Failed due to unhealthy allocations - rolling back to job version 0"
    );
    let eval = f.eval.clone().expect("an evaluation");
    let response = h.apply_command(f.command(&d.id, h.now));
    assert!(
        matches!(response, CommandResponse::Job { version: 2, .. }),
        "{response:?}"
    );
    assert_eq!(deployment(&h, &d.id).status, DEPLOYMENT_STATUS_FAILED);
    let reverted = h.job("web");
    assert_eq!(reverted.version, 2);
    assert!(
        !reverted.spec_changed(&v0_spec),
        "version 2 is version 0's spec"
    );
    assert!(h.state.evals.contains_key(&eval.id));

    // The scheduler rolls the job back: a new deployment for version 2.
    let mut eval = eval;
    eval.job_modify_index = reverted.job_modify_index;
    let r = h.process(&eval);
    let rollback = r.plan.deployment.clone().expect("deployment of version 2");
    assert_eq!(rollback.job_version, 2);
    let mut rounds = 0;
    loop {
        h.run_allocs("web", true);
        let r = h.register_eval("web");
        if r.plan
            .deployment_updates
            .iter()
            .any(|u| u.status == DEPLOYMENT_STATUS_SUCCESSFUL)
        {
            break;
        }
        rounds += 1;
        assert!(rounds < 6, "the rollback converges");
    }
    assert!(h.live_allocs("web").iter().all(|a| a.job_version == 2));
    assert!(h.job("web").stable);
    // Without a stable version to go back to, nothing is registered.
    let mut h = harness_with_nodes(3);
    h.upsert_job(version(1, 0, auto));
    let r = h.register_eval("web");
    let d = deployment(&h, &r.plan.deployment.clone().expect("deployment").id);
    let f = failure(&h.state, &d, FAILED_ALLOCATIONS, h.now);
    assert!(f.job.is_none());
    assert!(f
        .description
        .ends_with("no stable job version to auto revert to"));
}

#[test]
fn progress_deadline_fails_a_stalled_deployment() {
    let update = UpdateStrategy {
        progress_deadline: Some(MINUTE),
        healthy_deadline: 30 * SECOND,
        ..strategy(1, 0)
    };
    let mut h = deployed_v0(4, 2, update.clone());
    h.upsert_job(version(2, 1, update));
    let first = h.register_eval("web");
    let d = deployment(&h, &first.plan.deployment.clone().expect("deployment").id);
    let by = d.task_groups["web"]
        .require_progress_by
        .as_deref()
        .and_then(parse_rfc3339_nanos)
        .expect("deadline");
    assert_eq!(by, h.now + MINUTE);
    let early = decide(&h.state, &d, h.now + 30 * SECOND, 0);
    assert_eq!(early.action, Action::None);
    assert_eq!(early.wake_at, Some(by));
    // An unhealthy allocation in a group with a deadline does not fail it
    // at once; the deadline does.
    h.set_health(&ids_of(&placed(&first)), false);
    let d = deployment(&h, &d.id);
    assert_eq!(
        decide(&h.state, &d, h.now + 30 * SECOND, u64::MAX).action,
        Action::None
    );
    assert_eq!(
        decide(&h.state, &d, by, u64::MAX).action,
        Action::Fail(FAILED_PROGRESS_DEADLINE)
    );
    // A paused deployment is left alone, deadline or not.
    let paused = Deployment {
        status: DEPLOYMENT_STATUS_PAUSED.into(),
        ..d
    };
    assert_eq!(
        decide(&h.state, &paused, by + MINUTE, 0).action,
        Action::None
    );
}

#[test]
fn health_changes_create_evaluations_and_auto_promote() {
    let update = UpdateStrategy {
        auto_promote: true,
        ..strategy(1, 1)
    };
    let mut h = deployed_v0(6, 2, update.clone());
    h.upsert_job(version(2, 1, update));
    let r = h.register_eval("web");
    let d = deployment(&h, &r.plan.deployment.clone().expect("deployment").id);
    let canary = placed(&r)[0].id.clone();
    let idle = decide(&h.state, &d, h.now, 0);
    assert_eq!(idle.action, Action::None);
    h.set_health(std::slice::from_ref(&canary), true);
    let d = deployment(&h, &d.id);
    let decision = decide(&h.state, &d, h.now, 0);
    assert_eq!(decision.action, Action::Promote);
    assert!(decision.health_index > 0);
    let promoted = h.apply_command(Command::DeploymentPromote {
        deployment_id: d.id.clone(),
        all: true,
        groups: Vec::new(),
        eval: None,
        now: h.now,
    });
    assert!(matches!(promoted, CommandResponse::Job { .. }));
    let d = deployment(&h, &d.id);
    // Promoted, and that health change was acted upon: nothing more.
    assert_eq!(
        decide(&h.state, &d, h.now, decision.health_index).action,
        Action::None
    );
    let r = h.register_eval("web");
    let stops: Vec<&Allocation> = stopped(&r);
    assert!(stops
        .iter()
        .all(|a| a.desired_status == ALLOC_DESIRED_STOP && a.id != canary));
    assert_eq!(
        r.annotations.desired_tg_updates["web"].destructive_update,
        1
    );
    // A new health report makes an evaluation.
    h.run_allocs("web", true);
    let d = deployment(&h, &d.id);
    assert_eq!(
        decide(&h.state, &d, h.now, decision.health_index).action,
        Action::Evaluate
    );
}

#[test]
fn a_newer_version_cancels_the_deployment_and_its_canaries() {
    let mut h = deployed_v0(8, 2, strategy(1, 1));
    h.upsert_job(version(2, 1, strategy(1, 1)));
    let r = h.register_eval("web");
    let d = r.plan.deployment.clone().expect("deployment");
    let canary = placed(&r)[0].id.clone();
    h.upsert_job(version(2, 2, strategy(1, 1)));
    let r = h.register_eval("web");
    assert!(r
        .plan
        .deployment_updates
        .iter()
        .any(|u| u.deployment_id == d.id && u.status == DEPLOYMENT_STATUS_CANCELLED));
    assert!(
        ids_of(&stopped(&r)).contains(&canary),
        "the old canary is stopped"
    );
    assert_eq!(placed(&r).len(), 1, "a canary of version 2");
    assert_eq!(r.plan.deployment.as_ref().map(|d| d.job_version), Some(2));
}
