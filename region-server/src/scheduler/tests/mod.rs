//! Scheduler tests, through the harness.

use std::collections::BTreeMap;

use proto::model::{Allocation, Job, Node};

use super::harness::{mock, Harness};
use super::{AllocMetric, SchedulerResult};

mod deployments;
mod feasibility;
mod generic;
mod plan;
mod properties;
mod rank;
mod system;

/// A harness with `n` mock nodes.
fn harness_with_nodes(n: usize) -> Harness {
    let mut h = Harness::new();
    h.upsert_nodes((0..n).map(mock::node).collect());
    h
}

/// New allocations of a result's plan (not yet in the state: no create
/// index).
fn placed(result: &SchedulerResult) -> Vec<&Allocation> {
    result
        .plan
        .node_allocation
        .values()
        .flatten()
        .filter(|a| a.create_index == 0)
        .collect()
}

/// The scheduler's metric of a placed allocation.
fn metric_of(alloc: &Allocation) -> AllocMetric {
    alloc
        .metrics
        .as_ref()
        .expect("placed allocations carry metrics")
        .decode()
        .expect("AllocMetric JSON")
}

/// Updated existing allocations of a result's plan (in place).
fn updated(result: &SchedulerResult) -> Vec<&Allocation> {
    result
        .plan
        .node_allocation
        .values()
        .flatten()
        .filter(|a| a.create_index != 0)
        .collect()
}

/// Stops of a result's plan.
fn stopped(result: &SchedulerResult) -> Vec<&Allocation> {
    result.plan.node_update.values().flatten().collect()
}

/// The failure metric of `group`, decoded.
fn failed_metric(result: &SchedulerResult, group: &str) -> AllocMetric {
    let value = result
        .eval_update
        .failed_tg_allocs
        .get(group)
        .unwrap_or_else(|| panic!("no failure for {group}: {:?}", result.eval_update));
    serde_json::from_value(value.clone()).expect("AllocMetric JSON")
}

/// Live allocations of a job per node id.
fn per_node(h: &Harness, job: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for alloc in h.live_allocs(job) {
        *out.entry(alloc.node_id.clone()).or_default() += 1;
    }
    out
}

/// A job with the given tweak applied to its group.
///
/// The job-level `Update` the tweak leaves is the update strategy of every
/// group; `None` means no update strategy at all.
fn job_with(id: &str, count: i64, tweak: impl FnOnce(&mut Job)) -> Job {
    let mut job = mock::job(id, count);
    tweak(&mut job);
    let update = job.update.clone();
    job.canonicalize();
    with_update(job, update)
}

/// The job with `update` as the update strategy of the job and every
/// group (canonicalization would otherwise fill in the default).
fn with_update(mut job: Job, update: Option<proto::model::UpdateStrategy>) -> Job {
    job.update.clone_from(&update);
    for group in &mut job.task_groups {
        group.update.clone_from(&update);
    }
    job
}

/// A node with the given tweak.
fn node_with(i: usize, tweak: impl FnOnce(&mut Node)) -> Node {
    let mut node = mock::node(i);
    tweak(&mut node);
    node
}
