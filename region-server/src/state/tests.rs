//! Unit and property tests of the state tables.

use std::time::Duration;

use proptest::prelude::*;
use proto::model::{Allocation, Evaluation, Job, Task, TaskGroup};

use super::snapshot_file::{tables_from_rows, tables_to_rows};
use super::*;

/// A valid, canonicalized job with one group and task.
pub(crate) fn job(id: &str) -> Job {
    let mut j = Job {
        id: id.to_string(),
        task_groups: vec![TaskGroup {
            name: "g".into(),
            count: 1,
            tasks: vec![Task {
                name: "t".into(),
                driver: "raw_exec".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    j.canonicalize();
    j
}

fn eval(id: &str, job: &str) -> Evaluation {
    Evaluation {
        id: id.into(),
        namespace: "default".into(),
        job_id: job.into(),
        status: "pending".into(),
        ..Default::default()
    }
}

fn register(t: &mut Tables, index: u64, j: Job, eval_id: &str) -> CommandResponse {
    let e = eval(eval_id, &j.id);
    t.apply(
        index,
        Command::JobRegister {
            job: Box::new(j),
            eval: Some(Box::new(e)),
            now: index as i64 * 1000,
            enforce_index: None,
        },
    )
}

#[test]
fn register_versions_only_on_spec_change() {
    let mut t = Tables::default();
    let r1 = register(&mut t, 10, job("web"), "e1");
    assert_eq!(
        r1,
        CommandResponse::Job {
            job_modify_index: 10,
            version: 0,
            eval_id: Some("e1".into()),
            eval_create_index: 10
        }
    );
    // Same spec: no new version, same JobModifyIndex, but a new evaluation.
    let r2 = register(&mut t, 11, job("web"), "e2");
    assert!(matches!(
        r2,
        CommandResponse::Job {
            job_modify_index: 10,
            version: 0,
            ..
        }
    ));
    assert_eq!(t.evals_by_job("default", "web").len(), 2);
    // Changed spec: version 1, create index kept.
    let mut changed = job("web");
    changed.priority = 70;
    register(&mut t, 12, changed, "e3");
    let j = t.job("default", "web").expect("job");
    assert_eq!(
        (
            j.version,
            j.create_index,
            j.modify_index,
            j.job_modify_index
        ),
        (1, 10, 12, 12)
    );
    assert_eq!(t.job_versions("default", "web").len(), 2);
    assert_eq!(t.table_index(table::JOBS), 12);
    assert_eq!(t.table_index(table::EVALS), 12);
}

#[test]
fn versions_are_capped() {
    let mut t = Tables::default();
    for i in 0..10u64 {
        let mut j = job("web");
        j.priority = 10 + i as i64;
        register(&mut t, 100 + i, j, &format!("e{i}"));
    }
    let versions = t.job_versions("default", "web");
    assert_eq!(versions.len(), JOB_TRACKED_VERSIONS);
    assert_eq!(versions[0].version, 9, "newest first");
    assert_eq!(versions.last().map(|j| j.version), Some(4));
}

#[test]
fn deregister_stops_then_purge_removes() {
    let mut t = Tables::default();
    register(&mut t, 1, job("web"), "e1");
    let stop = Command::JobDeregister {
        namespace: "default".into(),
        job_id: "web".into(),
        purge: false,
        eval: Some(Box::new(eval("e2", "web"))),
        now: 7,
    };
    assert!(matches!(
        t.apply(2, stop),
        CommandResponse::Job { version: 1, .. }
    ));
    let j = t.job("default", "web").expect("still there");
    assert!(j.stop);
    assert_eq!(
        j.status, "pending",
        "its deregister evaluation is still to run"
    );
    let mut done = eval("e2", "web");
    done.status = "complete".into();
    t.apply(3, Command::EvalUpsert { evals: vec![done] });
    let mut first = eval("e1", "web");
    first.status = "complete".into();
    t.apply(3, Command::EvalUpsert { evals: vec![first] });
    assert_eq!(t.job("default", "web").expect("job").status, "dead");
    let purge = Command::JobDeregister {
        namespace: "default".into(),
        job_id: "web".into(),
        purge: true,
        eval: None,
        now: 8,
    };
    t.apply(4, purge.clone());
    assert!(t.job("default", "web").is_none());
    assert!(t.job_versions("default", "web").is_empty());
    assert!(matches!(t.apply(5, purge), CommandResponse::NotFound(_)));
}

#[test]
fn enforce_index_conflicts() {
    let mut t = Tables::default();
    register(&mut t, 5, job("web"), "e1");
    let cmd = |idx| Command::JobRegister {
        job: Box::new(job("web")),
        eval: None,
        now: 0,
        enforce_index: Some(idx),
    };
    assert!(matches!(t.apply(6, cmd(4)), CommandResponse::Conflict(_)));
    assert!(matches!(t.apply(7, cmd(5)), CommandResponse::Job { .. }));
}

#[test]
fn a_batch_applies_in_order_and_answers_each_command() {
    let register = |id: &str, eval_id: &str, enforce_index| Command::JobRegister {
        job: Box::new(job(id)),
        eval: Some(Box::new(eval(eval_id, id))),
        now: 1000,
        enforce_index,
    };
    let mut batched = Tables::default();
    let responses = batched.apply_batch(
        7,
        vec![
            register("web", "e1", None),
            register("api", "e2", None),
            // Sees the registration before it in the same batch.
            register("web", "e3", Some(0)),
        ],
    );
    assert_eq!(responses.len(), 3);
    assert!(matches!(
        &responses[0],
        CommandResponse::Job {
            job_modify_index: 7,
            eval_create_index: 7,
            ..
        }
    ));
    assert!(matches!(&responses[1], CommandResponse::Job { .. }));
    assert!(matches!(&responses[2], CommandResponse::Conflict(_)));
    assert_eq!(
        batched.job("default", "api").map(|j| j.create_index),
        Some(7)
    );
    assert_eq!(batched.index, 7);

    // The same commands one by one at the same index give the same state.
    let mut one_by_one = Tables::default();
    one_by_one.apply(7, register("web", "e1", None));
    one_by_one.apply(7, register("api", "e2", None));
    one_by_one.apply(7, register("web", "e3", Some(0)));
    assert_eq!(rows_json(&batched), rows_json(&one_by_one));

    // Applied as a whole, a batch answers Ok.
    let mut whole = Tables::default();
    let r = whole.apply(7, Command::Batch(vec![register("web", "e1", None)]));
    assert_eq!(r, CommandResponse::Ok);
    assert!(whole.job("default", "web").is_some());
}

#[test]
fn alloc_indexes_follow_moves() {
    let mut t = Tables::default();
    let a = Allocation {
        id: "a1".into(),
        namespace: "default".into(),
        job_id: "web".into(),
        node_id: "n1".into(),
        eval_id: "e1".into(),
        ..Default::default()
    };
    t.apply(
        1,
        Command::AllocUpsert {
            allocs: vec![a.clone()],
        },
    );
    t.apply(
        1,
        Command::EvalUpsert {
            evals: vec![eval("e1", "web")],
        },
    );
    assert_eq!(t.allocs_by_node("n1").len(), 1);
    assert_eq!(t.allocs_by_eval("e1").len(), 1);
    let moved = Allocation {
        node_id: "n2".into(),
        ..a
    };
    t.apply(
        2,
        Command::AllocUpsert {
            allocs: vec![moved],
        },
    );
    assert!(t.allocs_by_node("n1").is_empty());
    assert_eq!(t.allocs_by_node("n2").len(), 1);
    let got = t.allocs.get("a1").expect("alloc");
    assert_eq!((got.create_index, got.modify_index), (1, 2));
    assert_eq!(t.allocs_by_job("default", "web").len(), 1);
}

#[tokio::test]
async fn blocking_wait_wakes_on_change_and_times_out() {
    let store = StateStore::default();
    let s2 = store.clone();
    let waiter = tokio::spawn(async move {
        s2.wait_for_change(&[table::JOBS], 0, Duration::from_secs(10))
            .await
            .table_index(table::JOBS)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut t = (*store.snapshot()).clone();
    register(&mut t, 3, job("web"), "e1");
    store.publish(t);
    let idx = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("task");
    assert_eq!(idx, 3);
    let start = std::time::Instant::now();
    let t = store
        .wait_for_change(&[table::JOBS], 3, Duration::from_millis(200))
        .await;
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(t.table_index(table::JOBS), 3);
    // A change to another table does not wake a jobs watcher.
    assert!(store.wait_applied(3, Duration::from_millis(10)).await);
    assert!(!store.wait_applied(4, Duration::from_millis(10)).await);
}

#[derive(Debug, Clone)]
enum Op {
    Register(u8, i64),
    Stop(u8),
    Purge(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 1i64..100).prop_map(|(j, p)| Op::Register(j, p)),
        (0u8..4).prop_map(Op::Stop),
        (0u8..4).prop_map(Op::Purge),
    ]
}

fn to_command(op: &Op, i: usize) -> Command {
    match op {
        Op::Register(j, p) => {
            let mut jb = job(&format!("job{j}"));
            jb.priority = *p;
            Command::JobRegister {
                job: Box::new(jb),
                eval: Some(Box::new(eval(&format!("e{i}"), &format!("job{j}")))),
                now: i as i64,
                enforce_index: None,
            }
        }
        Op::Stop(j) | Op::Purge(j) => Command::JobDeregister {
            namespace: "default".into(),
            job_id: format!("job{j}"),
            purge: matches!(op, Op::Purge(_)),
            eval: None,
            now: i as i64,
        },
    }
}

fn rows_json(t: &Tables) -> Vec<(String, String, serde_json::Value)> {
    let mut rows: Vec<_> = tables_to_rows(t)
        .into_iter()
        .map(|r| {
            let v = serde_json::from_str(&r.value).expect("row json");
            (r.kind, r.key, v)
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows
}

proptest! {
    /// Applying the same commands gives the same state (followers agree with
    /// the leader), and a snapshot's rows rebuild exactly that state.
    #[test]
    fn apply_is_deterministic_and_snapshots_roundtrip(ops in proptest::collection::vec(op(), 1..40)) {
        let mut a = Tables::default();
        let mut b = Tables::default();
        for (i, op) in ops.iter().enumerate() {
            let ra = a.apply(i as u64 + 1, to_command(op, i));
            let rb = b.apply(i as u64 + 1, to_command(op, i));
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(rows_json(&a), rows_json(&b));
        let rebuilt = tables_from_rows(tables_to_rows(&a)).expect("rows");
        prop_assert_eq!(rows_json(&rebuilt), rows_json(&a));
        prop_assert_eq!(rebuilt.evals_by_job.len(), a.evals_by_job.len());
        // Every job's versions are bounded and its summary exists.
        for ((ns, id), j) in a.jobs.iter() {
            let v = a.job_versions(ns, id);
            prop_assert!(v.len() <= JOB_TRACKED_VERSIONS);
            prop_assert_eq!(v[0].version, j.version);
            prop_assert!(a.job_summaries.contains_key(&(ns.clone(), id.clone())));
        }
    }
}

#[test]
fn restore_keeps_indexes_growing() {
    // Region A is far along; region B is fresh.
    let mut a = Tables::default();
    for i in 0..5u64 {
        let mut j = job("web");
        j.priority = 10 + i as i64;
        register(&mut a, 100 + i, j, &format!("e{i}"));
    }
    let rows = tables_to_rows(&a);
    let mut b = Tables::default();
    register(&mut b, 3, job("other"), "x");
    b.apply(4, Command::Restore { rows });
    assert_eq!(b.index, 4, "the raw Raft index is kept for apply waits");
    let restored = b.job("default", "web").expect("restored");
    assert_eq!(restored.modify_index, 104, "object indexes are as saved");
    assert!(
        b.job("default", "other").is_none(),
        "restore replaces the state"
    );
    let after_restore = b.table_index(table::JOBS);
    assert!(
        after_restore > 104,
        "blocking queries see the restore: {after_restore}"
    );
    // New writes continue above the restored indexes.
    register(&mut b, 5, job("new"), "y");
    let new = b.job("default", "new").expect("new job");
    assert!(
        new.create_index > after_restore,
        "{} > {after_restore}",
        new.create_index
    );
    // And the offset survives a snapshot of B.
    let b2 = tables_from_rows(tables_to_rows(&b)).expect("rows");
    assert_eq!(b2.index_offset, b.index_offset);
    assert_eq!(b2.index, 5);
}

#[test]
fn job_status_follows_allocations_and_evaluations() {
    let mut t = Tables::default();
    register(&mut t, 1, job("web"), "e1");
    assert_eq!(t.job("default", "web").expect("job").status, "pending");
    let alloc = Allocation {
        id: "a1".into(),
        namespace: "default".into(),
        job_id: "web".into(),
        node_id: "n1".into(),
        desired_status: "run".into(),
        client_status: "running".into(),
        ..Default::default()
    };
    let mut done = eval("e1", "web");
    done.status = "complete".into();
    t.apply(
        2,
        Command::PlanResults {
            allocs: vec![alloc.clone()],
            evals: vec![done],
            deployments: Vec::new(),
        },
    );
    let j = t.job("default", "web").expect("job");
    assert_eq!(j.status, "running");
    assert_eq!(j.modify_index, 2, "a status change is a change of the job");
    let failed = Allocation {
        client_status: "failed".into(),
        ..alloc
    };
    t.apply(
        3,
        Command::AllocClientUpdate {
            allocs: vec![failed],
            evals: Vec::new(),
        },
    );
    assert_eq!(t.job("default", "web").expect("job").status, "dead");
}

#[test]
fn gc_collects_dead_batch_jobs_by_age_and_never_live_ones() {
    let mut t = Tables::default();
    let batch = |id: &str| Job {
        r#type: "batch".into(),
        ..job(id)
    };
    // "done": a batch job whose allocation completed at t = 5000;
    // "busy": a batch job whose allocation still runs.
    register(&mut t, 1, batch("done"), "e1");
    register(&mut t, 2, batch("busy"), "e2");
    let alloc = |id: &str, job: &str, status: &str| Allocation {
        id: id.into(),
        namespace: "default".into(),
        job_id: job.into(),
        node_id: "n1".into(),
        desired_status: "run".into(),
        client_status: status.into(),
        modify_time: 5000,
        ..Default::default()
    };
    let complete = |id: &str, job: &str| Evaluation {
        status: "complete".into(),
        modify_time: 4000,
        ..eval(id, job)
    };
    t.apply(
        3,
        Command::PlanResults {
            allocs: vec![
                alloc("a1", "done", "complete"),
                alloc("a2", "busy", "running"),
            ],
            evals: vec![complete("e1", "done"), complete("e2", "busy")],
            deployments: Vec::new(),
        },
    );
    assert_eq!(t.job("default", "done").expect("job").status, "dead");
    assert_eq!(
        t.dead_jobs(None),
        vec![("default".to_string(), "done".to_string())]
    );
    // Too recent for the threshold: kept.
    t.apply(4, Command::GcBefore { job_before: 5000 });
    assert!(t.job("default", "done").is_some(), "active at 5000");
    // Old enough: the job, its allocation and evaluation go; "busy" stays.
    t.apply(5, Command::GcBefore { job_before: 5001 });
    assert!(t.job("default", "done").is_none());
    assert!(!t.allocs.contains_key("a1") && !t.evals.contains_key("e1"));
    assert!(t.job("default", "busy").is_some() && t.allocs.contains_key("a2"));
    // Forced GC ignores age but still never takes a live job.
    t.apply(6, Command::Gc);
    assert!(t.job("default", "busy").is_some());
    // A service job whose allocations all ended is dead but not
    // collectable until it is stopped (Nomad's jobIsGCable).
    register(&mut t, 7, job("svc"), "e3");
    t.apply(
        8,
        Command::PlanResults {
            allocs: vec![alloc("a3", "svc", "failed")],
            evals: vec![complete("e3", "svc")],
            deployments: Vec::new(),
        },
    );
    assert_eq!(t.job("default", "svc").expect("job").status, "dead");
    t.apply(9, Command::Gc);
    assert!(
        t.job("default", "svc").is_some(),
        "a dead service job stays"
    );
}

/// A deployment of job `web` version 0 with one group `g`.
fn deployment(id: &str, progress_deadline: i64) -> proto::model::Deployment {
    proto::model::Deployment {
        id: id.into(),
        namespace: "default".into(),
        job_id: "web".into(),
        job_version: 0,
        status: "running".into(),
        task_groups: [(
            "g".to_string(),
            proto::model::DeploymentState {
                desired_total: 2,
                desired_canaries: 1,
                progress_deadline,
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn deployed_alloc(id: &str, deployment: &str, canary: bool, time: i64) -> Allocation {
    Allocation {
        id: id.into(),
        namespace: "default".into(),
        job_id: "web".into(),
        node_id: "n1".into(),
        task_group: "g".into(),
        deployment_id: deployment.into(),
        deployment_status: canary.then(|| proto::model::AllocDeploymentStatus {
            canary: true,
            ..Default::default()
        }),
        modify_time: time,
        ..Default::default()
    }
}

#[test]
fn deployment_counters_follow_placements_and_client_health() {
    let mut t = Tables::default();
    register(&mut t, 1, job("web"), "e1");
    let second = 1_000_000_000;
    t.apply(
        2,
        Command::PlanResults {
            allocs: vec![
                deployed_alloc("c1", "d1", true, 100 * second),
                deployed_alloc("a1", "d1", false, 100 * second),
            ],
            evals: Vec::new(),
            deployments: vec![deployment("d1", 60 * second)],
        },
    );
    let d = t.deployments.get("d1").expect("deployment");
    let g = &d.task_groups["g"];
    assert_eq!(g.placed_allocs, 2, "placed with the deployment in one plan");
    assert_eq!(g.placed_canaries, vec!["c1".to_string()]);
    assert_eq!(
        g.require_progress_by
            .as_deref()
            .and_then(proto::model::time::parse_rfc3339),
        Some(160 * second)
    );
    // The client reports health; it cannot clear the canary flag.
    let report = |id: &str, healthy: bool, at: i64| Allocation {
        id: id.into(),
        client_status: "running".into(),
        deployment_status: Some(proto::model::AllocDeploymentStatus {
            healthy: Some(healthy),
            timestamp: Some(proto::model::time::format_rfc3339(at)),
            canary: false,
            modify_index: 0,
        }),
        ..Default::default()
    };
    t.apply(
        3,
        Command::AllocClientUpdate {
            allocs: vec![report("c1", true, 130 * second)],
            evals: Vec::new(),
        },
    );
    let c1 = t.allocs.get("c1").expect("canary");
    let status = c1.deployment_status.as_ref().expect("status");
    assert!(status.canary && status.healthy == Some(true));
    assert_eq!(status.modify_index, 3, "a health change is stamped");
    let g = t.deployments.get("d1").expect("deployment").task_groups["g"].clone();
    assert_eq!((g.healthy_allocs, g.unhealthy_allocs), (1, 0));
    assert_eq!(
        g.require_progress_by
            .as_deref()
            .and_then(proto::model::time::parse_rfc3339),
        Some(190 * second),
        "a newly healthy allocation pushes the deadline out"
    );
    // The same report again changes nothing; healthy to unhealthy moves
    // the counts.
    t.apply(
        4,
        Command::AllocClientUpdate {
            allocs: vec![report("c1", true, 130 * second)],
            evals: Vec::new(),
        },
    );
    assert_eq!(t.deployments.get("d1").expect("d").modify_index, 3);
    t.apply(
        5,
        Command::AllocClientUpdate {
            allocs: vec![report("c1", false, 140 * second)],
            evals: Vec::new(),
        },
    );
    let g = t.deployments.get("d1").expect("deployment").task_groups["g"].clone();
    assert_eq!((g.healthy_allocs, g.unhealthy_allocs), (0, 1));

    // Promotion needs healthy canaries; a terminal deployment takes
    // nothing more.
    let promote = Command::DeploymentPromote {
        deployment_id: "d1".into(),
        all: true,
        groups: Vec::new(),
        eval: None,
        now: 200 * second,
    };
    assert!(
        matches!(t.apply(6, promote.clone()), CommandResponse::Conflict(m) if m.contains("0/1"))
    );
    let unknown_group = Command::DeploymentPromote {
        deployment_id: "d1".into(),
        all: false,
        groups: vec!["nope".into()],
        eval: None,
        now: 0,
    };
    assert!(matches!(
        t.apply(7, unknown_group),
        CommandResponse::Conflict(_)
    ));
    let health = Command::DeploymentAllocHealth {
        deployment_id: "d1".into(),
        healthy: vec!["c1".into()],
        unhealthy: Vec::new(),
        fail: None,
        job: None,
        eval: Some(Box::new(eval("e2", "web"))),
        now: 210 * second,
    };
    assert!(matches!(
        t.apply(8, health),
        CommandResponse::Job { eval_id: Some(ref e), .. } if e == "e2"
    ));
    assert!(matches!(
        t.apply(9, promote.clone()),
        CommandResponse::Job { .. }
    ));
    let d = t.deployments.get("d1").expect("deployment");
    assert!(d.task_groups["g"].promoted);
    assert_eq!(
        d.task_groups["g"]
            .require_progress_by
            .as_deref()
            .and_then(proto::model::time::parse_rfc3339),
        Some(260 * second),
        "promotion restarts the progress deadline"
    );
    let c1 = t.allocs.get("c1").expect("canary");
    assert!(!c1.deployment_status.as_ref().expect("status").canary);
    let fail = Command::DeploymentStatusUpdate {
        deployment_id: "d1".into(),
        status: "failed".into(),
        status_description: "Deployment marked as failed".into(),
        job: None,
        eval: None,
        now: 0,
    };
    assert!(matches!(
        t.apply(10, fail.clone()),
        CommandResponse::Job { .. }
    ));
    assert!(matches!(t.apply(11, fail), CommandResponse::Conflict(_)));
    assert!(matches!(t.apply(12, promote), CommandResponse::Conflict(_)));
    // A plan made earlier does not revive it.
    t.apply(
        13,
        Command::PlanResults {
            allocs: Vec::new(),
            evals: Vec::new(),
            deployments: vec![proto::model::Deployment {
                status: "successful".into(),
                ..deployment("d1", 0)
            }],
        },
    );
    assert_eq!(t.deployments.get("d1").expect("d").status, "failed");
    assert!(!t.job("default", "web").expect("job").stable);
}

#[test]
fn job_stability_and_successful_deployments() {
    let mut t = Tables::default();
    register(&mut t, 1, job("web"), "e1");
    let stable = |version| Command::JobStability {
        namespace: "default".into(),
        job_id: "web".into(),
        version,
        stable: true,
    };
    assert!(matches!(
        t.apply(2, stable(7)),
        CommandResponse::NotFound(_)
    ));
    assert_eq!(t.apply(3, stable(0)), CommandResponse::Ok);
    assert!(t.job("default", "web").expect("job").stable);
    assert!(t.job_versions("default", "web")[0].stable);
    // A deployment that succeeds marks its version stable.
    let mut v1 = job("web");
    v1.meta.insert("v".into(), "1".into());
    register(&mut t, 4, v1, "e2");
    assert!(!t.job("default", "web").expect("job").stable);
    let mut d = deployment("d1", 0);
    d.job_version = 1;
    t.apply(
        5,
        Command::PlanResults {
            allocs: Vec::new(),
            evals: Vec::new(),
            deployments: vec![d.clone()],
        },
    );
    t.apply(
        6,
        Command::PlanResults {
            allocs: Vec::new(),
            evals: Vec::new(),
            deployments: vec![proto::model::Deployment {
                status: "successful".into(),
                ..d
            }],
        },
    );
    let job = t.job("default", "web").expect("job");
    assert!(job.stable && job.version == 1);
    assert!(t.job_versions("default", "web").iter().all(|j| j.stable));
}

/// A job register wrapped as request `id` of server 1, made at `at_s`.
fn once(id: &str, at_s: i64, j: Job, eval_id: &str) -> Command {
    Command::Once {
        request: RequestId {
            id: id.into(),
            origin: 1,
            at: at_s * 1_000_000_000,
        },
        cmd: Box::new(Command::JobRegister {
            eval: Some(Box::new(eval(eval_id, &j.id))),
            job: Box::new(j),
            now: at_s,
            enforce_index: None,
        }),
    }
}

fn purge(id: &str) -> Command {
    Command::JobDeregister {
        namespace: "default".into(),
        job_id: id.into(),
        purge: true,
        eval: None,
        now: 0,
    }
}

#[test]
fn a_request_that_reaches_the_log_twice_is_applied_once() {
    let mut t = Tables::default();
    let first = t.apply(10, once("r1", 100, job("web"), "e1"));
    assert!(matches!(first, CommandResponse::Job { .. }));
    // A later write deletes the job; then the retried copy of r1 commits.
    t.apply(11, purge("web"));
    let again = t.apply(12, once("r1", 100, job("web"), "e1"));
    assert_eq!(again, first, "the copy gets the first copy's answer");
    assert!(
        t.job("default", "web").is_none(),
        "the delete that followed the first copy stands"
    );
    assert!(t.evals.contains_key("e1"));

    // Inside a batch too.
    let r = t.apply(13, Command::Batch(vec![once("r1", 100, job("web"), "e1")]));
    assert_eq!(r, CommandResponse::Ok);
    assert!(t.job("default", "web").is_none());

    // The table survives a snapshot, so a server that installs one still
    // refuses the copy.
    let mut restored = tables_from_rows(tables_to_rows(&t)).expect("rows");
    assert_eq!(restored.requests.len(), 1);
    restored.apply(14, once("r1", 100, job("web"), "e1"));
    assert!(restored.job("default", "web").is_none());
    assert_eq!(rows_json(&restored), rows_json(&t));

    // A new request registers again.
    t.apply(15, once("r2", 101, job("web"), "e2"));
    assert!(t.job("default", "web").is_some());
}

#[test]
fn an_operator_restore_keeps_the_regions_own_requests() {
    let mut donor = Tables::default();
    donor.apply(3, once("donor-req", 5, job("api"), "e9"));
    let rows = tables_to_rows(&donor);

    let mut t = Tables::default();
    t.apply(10, once("r1", 100, job("web"), "e1"));
    t.apply(11, Command::Restore { rows });
    assert!(t.job("default", "api").is_some());
    assert!(t.job("default", "web").is_none());
    assert!(t.requests.get("r1").is_some());
    assert!(t.requests.get("donor-req").is_none());
    // A late copy of r1 is still not applied over the restored state.
    t.apply(12, once("r1", 100, job("web"), "e1"));
    assert!(t.job("default", "web").is_none());
}
