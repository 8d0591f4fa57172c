//! System and sysbatch jobs.

use proto::model::{
    Constraint, DrainStrategy, UpdateStrategy, ALLOC_CLIENT_COMPLETE, ALLOC_CLIENT_LOST,
    EVAL_TRIGGER_NODE_UPDATE, EVAL_TRIGGER_ROLLING_UPDATE, NODE_SCHEDULING_INELIGIBLE,
    NODE_STATUS_DOWN,
};

use super::*;
use crate::scheduler::harness::mock;
use crate::scheduler::{ALLOC_LOST, ALLOC_MIGRATING, ALLOC_NODE_INFEASIBLE, ALLOC_NODE_TAINTED};

fn linux_only(id: &str) -> Job {
    let mut job = mock::system_job(id);
    job.constraints.push(Constraint {
        l_target: "${attr.kernel.name}".into(),
        r_target: "linux".into(),
        operand: "=".into(),
    });
    job
}

#[test]
fn one_allocation_per_feasible_node() {
    let mut h = harness_with_nodes(4);
    h.upsert_node(node_with(4, |n| {
        n.attributes.insert("kernel.name".into(), "windows".into());
    }));
    h.upsert_job(linux_only("agent"));
    let result = h.register_eval("agent");
    assert_eq!(placed(&result).len(), 4);
    assert_eq!(per_node(&h, "agent").len(), 4);
    assert!(!per_node(&h, "agent").contains_key(&mock::node_id(4)));
    assert!(placed(&result).iter().all(|a| a.name == "agent.agent[0]"));
    // An infeasible node is not a failure for a system job.
    assert!(result.eval_update.failed_tg_allocs.is_empty());
    assert!(result.blocked_eval.is_none());
    assert_eq!(result.annotations.desired_tg_updates["agent"].place, 4);

    let again = h.register_eval("agent");
    assert!(placed(&again).is_empty() && stopped(&again).is_empty());
    assert_eq!(again.annotations.desired_tg_updates["agent"].ignore, 4);
}

#[test]
fn a_new_node_gets_an_allocation() {
    let mut h = harness_with_nodes(2);
    h.upsert_job(mock::system_job("agent"));
    h.register_eval("agent");
    h.upsert_node(mock::node(7));
    let job = h.job("agent");
    let mut eval = h.eval_for(&job, EVAL_TRIGGER_NODE_UPDATE);
    eval.node_id = mock::node_id(7);
    let result = h.process(&eval);
    assert_eq!(placed(&result).len(), 1);
    assert_eq!(placed(&result)[0].node_id, mock::node_id(7));
    assert_eq!(per_node(&h, "agent").len(), 3);
}

#[test]
fn nodes_that_stop_qualifying_lose_their_allocation() {
    let mut h = harness_with_nodes(5);
    h.upsert_job(linux_only("agent"));
    h.register_eval("agent");
    // Node 0 now runs windows: infeasible.
    h.update_node(&mock::node_id(0), |n| {
        n.attributes.insert("kernel.name".into(), "windows".into());
    });
    // Node 1 moved to another datacenter.
    h.update_node(&mock::node_id(1), |n| n.datacenter = "dc9".into());
    // Node 2 is down.
    h.update_node(&mock::node_id(2), |n| n.status = NODE_STATUS_DOWN.into());
    // Node 3 drains.
    h.update_node(&mock::node_id(3), |n| {
        n.drain = true;
        n.drain_strategy = Some(DrainStrategy::default());
        n.scheduling_eligibility = NODE_SCHEDULING_INELIGIBLE.into();
    });
    let result = h.register_eval("agent");
    let by_node: BTreeMap<String, &Allocation> = stopped(&result)
        .into_iter()
        .map(|a| (a.node_id.clone(), a))
        .collect();
    assert_eq!(
        by_node[&mock::node_id(0)].desired_description,
        ALLOC_NODE_INFEASIBLE
    );
    assert_eq!(
        by_node[&mock::node_id(1)].desired_description,
        ALLOC_NODE_TAINTED
    );
    assert_eq!(by_node[&mock::node_id(2)].desired_description, ALLOC_LOST);
    assert_eq!(by_node[&mock::node_id(2)].client_status, ALLOC_CLIENT_LOST);
    assert_eq!(
        by_node[&mock::node_id(3)].desired_description,
        ALLOC_MIGRATING
    );
    assert!(placed(&result).is_empty());
    assert_eq!(
        per_node(&h, "agent").keys().cloned().collect::<Vec<_>>(),
        vec![mock::node_id(4)]
    );
}

#[test]
fn ineligible_nodes_and_drains_that_ignore_system_jobs_keep_allocations() {
    let mut h = harness_with_nodes(2);
    h.upsert_job(mock::system_job("agent"));
    h.register_eval("agent");
    h.update_node(&mock::node_id(0), |n| {
        n.scheduling_eligibility = NODE_SCHEDULING_INELIGIBLE.into();
    });
    h.update_node(&mock::node_id(1), |n| {
        n.drain = true;
        n.drain_strategy = Some(DrainStrategy {
            ignore_system_jobs: true,
            ..DrainStrategy::default()
        });
    });
    let result = h.register_eval("agent");
    assert!(stopped(&result).is_empty() && placed(&result).is_empty());
    assert_eq!(h.live_allocs("agent").len(), 2);
}

#[test]
fn exhausted_nodes_are_failures() {
    let mut h = harness_with_nodes(3);
    // Fill node 1.
    h.upsert_job(job_with("hog", 1, |job| {
        job.constraints.push(Constraint {
            l_target: "${node.unique.id}".into(),
            r_target: mock::node_id(1),
            operand: "=".into(),
        });
        job.task_groups[0].tasks[0].resources.cpu = 3950;
    }));
    h.register_eval("hog");
    h.upsert_job(mock::system_job("agent"));
    let result = h.register_eval("agent");
    assert_eq!(placed(&result).len(), 2);
    let metric = failed_metric(&result, "agent");
    assert_eq!(metric.dimension_exhausted["cpu"], 1);
    assert_eq!(result.eval_update.queued_allocations["agent"], 1);
    assert!(result.blocked_eval.is_some());
}

#[test]
fn sysbatch_runs_once_per_node() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(mock::sysbatch_job("once"));
    h.register_eval("once");
    let ids: Vec<String> = h.live_allocs("once").iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    h.update_allocs(&ids, |a| a.client_status = ALLOC_CLIENT_COMPLETE.into());
    let result = h.register_eval("once");
    assert!(placed(&result).is_empty());
    // A new version runs again.
    let mut job = mock::sysbatch_job("once");
    job.task_groups[0].tasks[0]
        .env
        .insert("V".into(), "2".into());
    h.upsert_job(job);
    let result = h.register_eval("once");
    assert_eq!(placed(&result).len(), 3);
    // A system job's completed allocation is replaced on the same node.
    let mut h = harness_with_nodes(1);
    h.upsert_job(mock::system_job("agent"));
    h.register_eval("agent");
    let old = h.live_allocs("agent")[0].clone();
    h.update_alloc(&old.id, |a| a.client_status = ALLOC_CLIENT_COMPLETE.into());
    let result = h.register_eval("agent");
    assert_eq!(placed(&result)[0].previous_allocation, old.id);
}

#[test]
fn rolling_update_of_a_system_job() {
    let mut h = harness_with_nodes(5);
    let mut job = mock::system_job("agent");
    job.update = Some(UpdateStrategy {
        max_parallel: 2,
        ..UpdateStrategy::service_default()
    });
    h.upsert_job(job.clone());
    h.register_eval("agent");
    job.task_groups[0].tasks[0]
        .env
        .insert("V".into(), "2".into());
    h.upsert_job(job);
    let result = h.register_eval("agent");
    let desired = &result.annotations.desired_tg_updates["agent"];
    assert_eq!(desired.destructive_update, 2);
    assert_eq!(desired.ignore, 3);
    assert_eq!(placed(&result).len(), 2);
    assert_eq!(stopped(&result).len(), 2);
    let next = &result.followup_evals[0];
    assert_eq!(next.triggered_by, EVAL_TRIGGER_ROLLING_UPDATE);
    assert_eq!(result.eval_update.next_eval, next.id);
    assert!(next.wait_until.is_some());
    let next = next.clone();
    let result = h.process(&next);
    assert_eq!(
        result.annotations.desired_tg_updates["agent"].destructive_update,
        2
    );
    let result = h.register_eval("agent");
    assert_eq!(
        result.annotations.desired_tg_updates["agent"].destructive_update,
        1
    );
    assert!(result.followup_evals.is_empty());
    assert!(h.live_allocs("agent").iter().all(|a| a.job_version == 1));
    assert_eq!(h.live_allocs("agent").len(), 5);
}

#[test]
fn stopping_a_system_job() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(mock::system_job("agent"));
    h.register_eval("agent");
    h.stop_job("default", "agent");
    let result = h.register_eval("agent");
    assert_eq!(stopped(&result).len(), 3);
    assert!(h.live_allocs("agent").is_empty());
}
