//! Ranking: bin-packing and spread fitness, anti-affinity, affinities,
//! spread blocks, the limited scan.

use proto::model::{Affinity, Spread, SpreadTarget};

use super::*;
use crate::scheduler::harness::mock;
use crate::scheduler::resources::{score_fit_binpack, score_fit_spread, Comparable};
use crate::scheduler::SchedulerAlgorithm;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn binpack_known_values() {
    let node = mock::node(0); // 4000 MHz, 8192 MB
    let used = |cpu, memory_mb| Comparable {
        cpu,
        memory_mb,
        ..Comparable::default()
    };
    // 25% used on both: 20 - 2 * 10^0.75.
    assert!(close(
        score_fit_binpack(&node, &used(1000, 2048)),
        8.753_173_496_193_018
    ));
    // Empty node: 20 - (10 + 10) = 0.
    assert!(close(score_fit_binpack(&node, &used(0, 0)), 0.0));
    // Full node: 20 - (1 + 1) = 18.
    assert!(close(score_fit_binpack(&node, &used(4000, 8192)), 18.0));
    // Half: 20 - 2 * 10^0.5.
    assert!(close(
        score_fit_binpack(&node, &used(2000, 4096)),
        20.0 - 2.0 * 10f64.sqrt()
    ));
    // Spread is the inverse: (10^0.75 * 2) - 2.
    assert!(close(
        score_fit_spread(&node, &used(1000, 2048)),
        9.246_826_503_806_982
    ));
    assert!(close(score_fit_spread(&node, &used(0, 0)), 18.0));

    // Reserved resources shrink the denominator: 1000 of 3000 MHz, 2048 of
    // 6144 MB used = 1/3.
    let mut reserved = mock::node(1);
    reserved.reserved_resources.cpu.cpu_shares = 1000;
    reserved.reserved_resources.memory.memory_mb = 2048;
    let expect = 20.0 - 2.0 * 10f64.powf(2.0 / 3.0);
    assert!(close(
        score_fit_binpack(&reserved, &used(1000, 2048)),
        expect
    ));
}

#[test]
fn binpack_score_is_reported_normalized() {
    let mut h = harness_with_nodes(1);
    h.upsert_job(job_with("one", 1, |job| {
        let res = &mut job.task_groups[0].tasks[0].resources;
        res.cpu = 1000;
        res.memory_mb = 2048;
    }));
    let result = h.register_eval("one");
    let alloc = placed(&result)[0];
    let metric: AllocMetric = metric_of(alloc);
    let top = &metric.score_meta_data[0];
    assert_eq!(top.node_id, mock::node_id(0));
    assert!(close(top.scores["binpack"], 8.753_173_496_193_018 / 18.0));
    assert!(close(top.norm_score, 8.753_173_496_193_018 / 18.0));
    assert_eq!(metric.nodes_evaluated, 1);
}

/// Two nodes, one already half full with another job's allocation.
fn half_full() -> Harness {
    let mut h = harness_with_nodes(2);
    h.upsert_job(job_with("filler", 1, |job| {
        job.constraints.push(proto::model::Constraint {
            l_target: "${node.unique.id}".into(),
            r_target: mock::node_id(0),
            operand: "=".into(),
        });
        let res = &mut job.task_groups[0].tasks[0].resources;
        res.cpu = 2000;
        res.memory_mb = 4096;
    }));
    h.register_eval("filler");
    h
}

#[test]
fn binpack_prefers_fuller_nodes_spread_prefers_emptier() {
    for seed in 0..5 {
        let mut h = half_full();
        h.seed = seed;
        h.upsert_job(mock::job("web", 1));
        let result = h.register_eval("web");
        assert_eq!(
            placed(&result)[0].node_id,
            mock::node_id(0),
            "binpack, seed {seed}"
        );

        let mut h = half_full();
        h.seed = seed;
        h.config.algorithm = SchedulerAlgorithm::Spread;
        h.upsert_job(mock::job("web", 1));
        let result = h.register_eval("web");
        assert_eq!(
            placed(&result)[0].node_id,
            mock::node_id(1),
            "spread, seed {seed}"
        );
    }
}

/// The operator's scheduler configuration in the state decides the
/// algorithm over the server's default, both ways.
#[test]
fn operator_scheduler_configuration_picks_the_algorithm() {
    for (stored, default, want) in [
        ("spread", SchedulerAlgorithm::Binpack, 1),
        ("binpack", SchedulerAlgorithm::Spread, 0),
    ] {
        let mut h = half_full();
        h.config.algorithm = default;
        let index = h.state.index + 1;
        h.state.apply(
            index,
            crate::state::Command::SchedulerSetConfig {
                config: Box::new(proto::model::SchedulerConfiguration {
                    scheduler_algorithm: stored.into(),
                    ..Default::default()
                }),
                cas_index: None,
            },
        );
        h.upsert_job(mock::job("web", 1));
        let result = h.register_eval("web");
        assert_eq!(placed(&result)[0].node_id, mock::node_id(want), "{stored}");
    }
}

#[test]
fn job_anti_affinity_spreads_a_group() {
    for seed in 0..5 {
        let mut h = harness_with_nodes(2);
        h.seed = seed;
        h.upsert_job(mock::job("web", 2));
        h.register_eval("web");
        assert_eq!(per_node(&h, "web").len(), 2, "seed {seed}");
    }
    // The penalty is visible in the metrics: -(collisions + 1) / count.
    let mut h = harness_with_nodes(1);
    h.upsert_job(mock::job("web", 4));
    let result = h.register_eval("web");
    let last = placed(&result)
        .into_iter()
        .find(|a| a.name == "web.web[3]")
        .unwrap();
    let metric: AllocMetric = metric_of(last);
    assert!(close(
        metric.score_meta_data[0].scores["job-anti-affinity"],
        -1.0
    ));
}

#[test]
fn affinities_attract_and_repel() {
    let racks = |h: &mut Harness| {
        h.upsert_nodes(
            (0..6)
                .map(|i| {
                    node_with(i, |n| {
                        n.meta.insert("rack".into(), format!("r{}", i % 3));
                    })
                })
                .collect(),
        );
    };
    for seed in 0..5 {
        let mut h = Harness::new();
        h.seed = seed;
        racks(&mut h);
        h.upsert_job(job_with("aff", 1, |job| {
            job.task_groups[0].affinities.push(Affinity {
                l_target: "${meta.rack}".into(),
                r_target: "r1".into(),
                operand: "=".into(),
                weight: 100,
            });
        }));
        let result = h.register_eval("aff");
        let node = h
            .state
            .nodes
            .get(&placed(&result)[0].node_id)
            .unwrap()
            .clone();
        assert_eq!(node.meta["rack"], "r1", "seed {seed}");
        let metric: AllocMetric = metric_of(placed(&result)[0]);
        assert!(close(
            metric.score_meta_data[0].scores["node-affinity"],
            1.0
        ));

        let mut h = Harness::new();
        h.seed = seed;
        racks(&mut h);
        h.upsert_job(job_with("anti", 4, |job| {
            job.affinities.push(Affinity {
                l_target: "${meta.rack}".into(),
                r_target: "r0".into(),
                operand: "=".into(),
                weight: -100,
            });
        }));
        h.register_eval("anti");
        for alloc in h.live_allocs("anti") {
            let node = h.state.nodes.get(&alloc.node_id).unwrap();
            assert_ne!(node.meta["rack"], "r0", "seed {seed}");
        }
    }
}

#[test]
fn spread_with_targets() {
    for seed in 0..4 {
        let mut h = Harness::new();
        h.seed = seed;
        h.upsert_nodes(
            (0..10)
                .map(|i| {
                    node_with(i, |n| {
                        n.datacenter = if i < 5 { "dc1" } else { "dc2" }.into()
                    })
                })
                .collect(),
        );
        h.upsert_job(job_with("spread", 10, |job| {
            job.datacenters = vec!["dc1".into(), "dc2".into()];
            job.task_groups[0].spreads.push(Spread {
                attribute: "${node.datacenter}".into(),
                weight: 100,
                spread_target: vec![
                    SpreadTarget {
                        value: "dc1".into(),
                        percent: 70,
                    },
                    SpreadTarget {
                        value: "dc2".into(),
                        percent: 30,
                    },
                ],
            });
        }));
        h.register_eval("spread");
        let mut per_dc = BTreeMap::new();
        for alloc in h.live_allocs("spread") {
            let node = h.state.nodes.get(&alloc.node_id).unwrap();
            *per_dc.entry(node.datacenter.clone()).or_insert(0) += 1;
        }
        assert_eq!(per_dc.get("dc1"), Some(&7), "seed {seed}: {per_dc:?}");
        assert_eq!(per_dc.get("dc2"), Some(&3), "seed {seed}: {per_dc:?}");
    }
}

#[test]
fn even_spread_without_targets() {
    let mut h = Harness::new();
    h.upsert_nodes(
        (0..9)
            .map(|i| node_with(i, |n| n.datacenter = format!("dc{}", i % 3)))
            .collect(),
    );
    // Even spread without targets.
    h.upsert_job(job_with("even", 6, |job| {
        job.datacenters = vec!["*".into()];
        job.spreads.push(Spread {
            attribute: "${node.datacenter}".into(),
            weight: 50,
            spread_target: Vec::new(),
        });
        let res = &mut job.task_groups[0].tasks[0].resources;
        res.cpu = 100;
    }));
    h.register_eval("even");
    let mut per_dc = BTreeMap::new();
    for alloc in h.live_allocs("even") {
        let node = h.state.nodes.get(&alloc.node_id).unwrap();
        *per_dc.entry(node.datacenter.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_dc.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
}

#[test]
fn spread_with_an_implicit_target() {
    // 75% on dc0, the rest (the implicit target) on other values.
    for seed in 0..4 {
        let mut h = Harness::new();
        h.seed = seed;
        h.upsert_nodes(
            (0..6)
                .map(|i| node_with(i, |n| n.datacenter = format!("dc{}", i % 2)))
                .collect(),
        );
        h.upsert_job(job_with("most", 4, |job| {
            job.datacenters = vec!["*".into()];
            job.task_groups[0].spreads.push(Spread {
                attribute: "${node.datacenter}".into(),
                weight: 100,
                spread_target: vec![SpreadTarget {
                    value: "dc0".into(),
                    percent: 75,
                }],
            });
        }));
        h.register_eval("most");
        let on_dc0 = h
            .live_allocs("most")
            .iter()
            .filter(|a| h.state.nodes.get(&a.node_id).unwrap().datacenter == "dc0")
            .count();
        assert_eq!(on_dc0, 3, "seed {seed}");
    }
}

#[test]
fn limited_candidate_scan() {
    // 64 empty nodes: a service placement scores ceil(log2(64)) = 6 nodes,
    // a batch placement 2 (power of two choices).
    let mut h = harness_with_nodes(64);
    h.upsert_job(mock::job("svc", 1));
    let result = h.register_eval("svc");
    let metric: AllocMetric = metric_of(placed(&result)[0]);
    assert_eq!(metric.nodes_evaluated, 6);

    h.upsert_job(mock::batch_job("bat", 1));
    let result = h.register_eval("bat");
    let metric: AllocMetric = metric_of(placed(&result)[0]);
    assert_eq!(metric.nodes_evaluated, 2);

    // Configured limit.
    h.config.candidate_limit = Some(10);
    h.upsert_job(mock::job("svc10", 1));
    let result = h.register_eval("svc10");
    let metric: AllocMetric = metric_of(placed(&result)[0]);
    assert_eq!(metric.nodes_evaluated, 10);
}

#[test]
fn same_seed_same_plan() {
    let run = |seed: u64| {
        let mut h = harness_with_nodes(20);
        h.seed = seed;
        h.upsert_job(mock::job("web", 5));
        let job = h.job("web");
        let eval = h.eval_for(&job, "job-register");
        h.schedule(&eval).unwrap()
    };
    assert_eq!(run(7), run(7));
    let nodes = |r: &SchedulerResult| {
        placed(r)
            .iter()
            .map(|a| a.node_id.clone())
            .collect::<Vec<_>>()
    };
    assert!((0..10).any(|seed| nodes(&run(seed)) != nodes(&run(7))));
}
