//! Property tests: plans never over-commit a node, and repeated evaluations
//! converge on the desired counts when there is room.

use proptest::prelude::*;
use proto::model::{Job, Node};

use super::*;
use crate::scheduler::harness::mock;
use crate::scheduler::resources::{alloc_resources, node_available, Comparable};

#[derive(Debug, Clone)]
struct NodeSpec {
    cpu: i64,
    memory_mb: i64,
    reserved_cpu: i64,
}

#[derive(Debug, Clone)]
struct JobSpec {
    count: i64,
    cpu: i64,
    memory_mb: i64,
    batch: bool,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (1000i64..8000, 512i64..16_384, 0i64..500).prop_map(|(cpu, memory_mb, reserved_cpu)| NodeSpec {
        cpu,
        memory_mb,
        reserved_cpu,
    })
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (0i64..8, 100i64..3000, 64i64..4096, any::<bool>()).prop_map(
        |(count, cpu, memory_mb, batch)| JobSpec {
            count,
            cpu,
            memory_mb,
            batch,
        },
    )
}

fn build_node(i: usize, spec: &NodeSpec) -> Node {
    let mut node = mock::node(i);
    node.node_resources.cpu.cpu_shares = spec.cpu;
    node.node_resources.memory.memory_mb = spec.memory_mb;
    node.reserved_resources.cpu.cpu_shares = spec.reserved_cpu;
    node
}

fn build_job(i: usize, spec: &JobSpec) -> Job {
    let id = format!("job-{i}");
    let mut job = if spec.batch {
        mock::batch_job(&id, spec.count)
    } else {
        mock::job(&id, spec.count)
    };
    let res = &mut job.task_groups[0].tasks[0].resources;
    res.cpu = spec.cpu;
    res.memory_mb = spec.memory_mb;
    job.task_groups[0].ephemeral_disk.size_mb = 100;
    job
}

fn assert_no_overcommit(h: &Harness) -> Result<(), TestCaseError> {
    for node in h.state.nodes.values() {
        let mut used = Comparable::default();
        for alloc in h.state.allocs_by_node(&node.id) {
            if !alloc.terminal() {
                used = used.plus(alloc_resources(&alloc));
            }
        }
        let available = node_available(node);
        prop_assert!(
            available.superset(&used).is_ok(),
            "node {} over-committed: {:?} > {:?}",
            node.id,
            used,
            available
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn plans_never_overcommit(
        nodes in prop::collection::vec(node_spec(), 1..6),
        jobs in prop::collection::vec(job_spec(), 1..5),
        seed in any::<u64>(),
        racing in any::<bool>(),
    ) {
        let mut h = Harness::new();
        h.seed = seed;
        h.upsert_nodes(nodes.iter().enumerate().map(|(i, s)| build_node(i, s)).collect());
        let stored: Vec<_> = jobs.iter().enumerate().map(|(i, s)| h.upsert_job(build_job(i, s))).collect();
        if racing {
            // Every worker schedules from the same snapshot; the applier
            // sorts it out.
            let evals: Vec<_> = stored.iter().map(|job| h.eval_for(job, "job-register")).collect();
            let plans: Vec<_> = evals.iter().map(|eval| h.schedule(eval).unwrap().plan).collect();
            for plan in &plans {
                h.apply_plan(plan);
                assert_no_overcommit(&h)?;
            }
        }
        for _ in 0..2 {
            for job in &stored {
                h.register_eval(&job.id);
                assert_no_overcommit(&h)?;
            }
        }
        // Shrink a node and scale everything up: still no over-commit for
        // new placements (existing ones are the operator's business).
        for job in &stored {
            let mut bigger = (**job).clone();
            bigger.task_groups[0].count += 2;
            h.upsert_job(bigger);
            h.register_eval(&job.id);
            assert_no_overcommit(&h)?;
        }
    }

    #[test]
    fn converges_on_the_desired_count(
        counts in prop::collection::vec(0i64..6, 1..5),
        node_count in 3usize..8,
        seed in any::<u64>(),
        fail_some in any::<bool>(),
    ) {
        let mut h = harness_with_nodes(node_count);
        h.seed = seed;
        for (i, count) in counts.iter().enumerate() {
            let mut job = with_update(mock::job(&format!("job-{i}"), *count), None);
            for group in &mut job.task_groups {
                group.tasks[0].resources.cpu = 100;
                group.tasks[0].resources.memory_mb = 64;
            }
            h.upsert_job(job);
        }
        for round in 0..3 {
            for i in 0..counts.len() {
                h.register_eval(&format!("job-{i}"));
            }
            if round == 0 && fail_some {
                // A node goes down; its allocations must be replaced.
                h.update_node(&mock::node_id(0), |n| n.status = "down".into());
            }
        }
        for (i, count) in counts.iter().enumerate() {
            let id = format!("job-{i}");
            let live = h.live_allocs(&id);
            prop_assert_eq!(live.len() as i64, *count, "job {}", id);
            let mut names: Vec<String> = live.iter().map(|a| a.name.clone()).collect();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len() as i64, *count, "distinct names for {}", id);
            prop_assert!(live.iter().all(|a| a.node_id != mock::node_id(0) || !fail_some));
            // Stable: another evaluation changes nothing.
            let result = h.register_eval(&id);
            prop_assert!(result.plan.node_allocation.is_empty() && result.plan.node_update.is_empty());
        }
    }
}
