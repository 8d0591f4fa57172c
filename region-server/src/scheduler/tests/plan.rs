//! The plan applier's re-check.

use proto::model::{NODE_SCHEDULING_INELIGIBLE, NODE_STATUS_DOWN};

use super::*;
use crate::scheduler::evaluate_plan;
use crate::scheduler::harness::mock;

fn hungry(id: &str) -> Job {
    job_with(id, 1, |job| {
        job.task_groups[0].tasks[0].resources.cpu = 3000;
    })
}

#[test]
fn two_workers_racing_for_one_node() {
    let mut h = harness_with_nodes(1);
    let a = h.upsert_job(hungry("a"));
    let b = h.upsert_job(hungry("b"));
    let eval_a = h.eval_for(&a, "job-register");
    let eval_b = h.eval_for(&b, "job-register");
    // Both workers schedule from the same snapshot: both fit.
    let plan_a = h.schedule(&eval_a).unwrap().plan;
    let plan_b = h.schedule(&eval_b).unwrap().plan;
    assert_eq!(plan_a.node_allocation.len(), 1);
    assert_eq!(plan_b.node_allocation.len(), 1);

    let first = h.apply_plan(&plan_a);
    assert!(first.is_full_commit());
    assert_eq!(first.refresh_index, 0);
    let second = h.apply_plan(&plan_b);
    assert_eq!(second.rejected_nodes, vec![mock::node_id(0)]);
    assert!(second.node_allocation.is_empty());
    assert!(second.refresh_index >= h.state.table_index("allocs"));
    assert!(second.rejection_reasons[&mock::node_id(0)].contains("cpu"));
    assert_eq!(h.live_allocs("a").len(), 1);
    assert!(h.live_allocs("b").is_empty());

    // The loser retries against the new state and is told why it fails.
    let retry = h.process(&eval_b);
    assert!(placed(&retry).is_empty());
    assert_eq!(failed_metric(&retry, "web").dimension_exhausted["cpu"], 1);
}

#[test]
fn partial_commit_keeps_the_nodes_that_fit() {
    let mut h = harness_with_nodes(2);
    let job = h.upsert_job(job_with("spread", 2, |job| {
        job.task_groups[0].tasks[0].resources.cpu = 3000;
    }));
    let eval = h.eval_for(&job, "job-register");
    let plan = h.schedule(&eval).unwrap().plan;
    assert_eq!(plan.node_allocation.len(), 2);
    // Meanwhile node 1 goes down.
    h.update_node(&mock::node_id(1), |n| n.status = NODE_STATUS_DOWN.into());
    let result = evaluate_plan(&h.state, &plan);
    assert_eq!(result.rejected_nodes, vec![mock::node_id(1)]);
    assert_eq!(result.node_allocation.len(), 1);

    // All at once: nothing.
    let mut plan = plan;
    plan.all_at_once = true;
    let result = evaluate_plan(&h.state, &plan);
    assert!(result.node_allocation.is_empty() && result.node_update.is_empty());
}

#[test]
fn ineligible_nodes_take_updates_but_not_new_allocations() {
    let mut h = harness_with_nodes(1);
    h.upsert_job(job_with("web", 1, |job| job.update = None));
    h.register_eval("web");
    // An in-place update and a stop are fine on an ineligible node.
    h.upsert_job(job_with("web", 1, |job| {
        job.update = None;
        job.priority = 60;
    }));
    let job = h.job("web");
    let eval = h.eval_for(&job, "job-register");
    let update_plan = h.schedule(&eval).unwrap().plan;
    h.upsert_job(mock::job("other", 1));
    let other = h.job("other");
    let eval = h.eval_for(&other, "job-register");
    let new_plan = h.schedule(&eval).unwrap().plan;

    h.update_node(&mock::node_id(0), |n| {
        n.scheduling_eligibility = NODE_SCHEDULING_INELIGIBLE.into();
    });
    assert!(evaluate_plan(&h.state, &update_plan).is_full_commit());
    let rejected = evaluate_plan(&h.state, &new_plan);
    assert_eq!(rejected.rejected_nodes, vec![mock::node_id(0)]);

    // Stops are accepted even on a node that is gone.
    h.stop_job("default", "web");
    let job = h.job("web");
    let eval = h.eval_for(&job, "job-deregister");
    let stop_plan = h.schedule(&eval).unwrap().plan;
    h.state.nodes.remove(&mock::node_id(0));
    assert!(evaluate_plan(&h.state, &stop_plan).is_full_commit());
}
