//! Feasibility: node readiness, datacenters, pools, drivers, constraints,
//! distinct hosts/property, resources, class caching.

use proto::model::{
    Constraint, DrainStrategy, DriverInfo, Job, ALLOC_CLIENT_RUNNING, EVAL_STATUS_BLOCKED,
    EVAL_STATUS_COMPLETE, NODE_SCHEDULING_INELIGIBLE, NODE_STATUS_DOWN, NODE_STATUS_INIT,
};

use super::*;
use crate::scheduler::constraint::{
    check_operand, resolve_target, OperandCache, Version, VersionConstraints,
};
use crate::scheduler::harness::mock;
use crate::scheduler::{compute_node_class, glob_match};

fn constraint(l: &str, op: &str, r: &str) -> Constraint {
    Constraint {
        l_target: l.to_string(),
        r_target: r.to_string(),
        operand: op.to_string(),
    }
}

/// Places one allocation of a job with `constraint` on a single node set up
/// by `tweak`; returns whether it was placed, and the filter reasons.
fn places_with(c: Constraint, tweak: impl FnOnce(&mut Node)) -> (bool, BTreeMap<String, u64>) {
    let mut h = Harness::new();
    h.upsert_node(node_with(0, tweak));
    let job = job_with("c", 1, |job| job.constraints.push(c));
    h.upsert_job(job);
    let result = h.register_eval("c");
    let placed = !placed(&result).is_empty();
    let reasons = if placed {
        BTreeMap::new()
    } else {
        failed_metric(&result, "web").constraint_filtered
    };
    (placed, reasons)
}

fn set_attr(key: &str, value: &str) -> impl FnOnce(&mut Node) {
    let (key, value) = (key.to_string(), value.to_string());
    move |node: &mut Node| {
        node.attributes.insert(key, value);
    }
}

#[test]
fn every_operand_through_the_scheduler() {
    let cases: Vec<(Constraint, &str, &str, bool)> = vec![
        // (constraint, attribute key, attribute value on the node, placed?)
        (
            constraint("${attr.kernel.name}", "=", "linux"),
            "kernel.name",
            "linux",
            true,
        ),
        (
            constraint("${attr.kernel.name}", "=", "windows"),
            "kernel.name",
            "linux",
            false,
        ),
        (
            constraint("${attr.kernel.name}", "==", "linux"),
            "kernel.name",
            "linux",
            true,
        ),
        (
            constraint("${attr.kernel.name}", "is", "darwin"),
            "kernel.name",
            "linux",
            false,
        ),
        (
            constraint("${attr.kernel.name}", "!=", "windows"),
            "kernel.name",
            "linux",
            true,
        ),
        (
            constraint("${attr.kernel.name}", "not", "linux"),
            "kernel.name",
            "linux",
            false,
        ),
        (constraint("${attr.missing}", "!=", "x"), "other", "y", true),
        (
            constraint("${attr.cpu.numcores}", "<", "16"),
            "cpu.numcores",
            "8",
            true,
        ),
        (
            constraint("${attr.cpu.numcores}", "<", "16"),
            "cpu.numcores",
            "32",
            false,
        ),
        (
            constraint("${attr.cpu.numcores}", "<=", "8"),
            "cpu.numcores",
            "8",
            true,
        ),
        (
            constraint("${attr.cpu.numcores}", ">", "8"),
            "cpu.numcores",
            "8",
            false,
        ),
        (
            constraint("${attr.cpu.numcores}", ">=", "8"),
            "cpu.numcores",
            "8",
            true,
        ),
        // Numeric, not lexical: "10" > "9".
        (
            constraint("${attr.cpu.numcores}", ">", "9"),
            "cpu.numcores",
            "10",
            true,
        ),
        // Floats.
        (constraint("${attr.load}", "<", "1.5"), "load", "0.75", true),
        // Lexical when not numbers.
        (constraint("${attr.zone}", "<", "b"), "zone", "a", true),
        (constraint("${attr.zone}", ">=", "b"), "zone", "a", false),
        (
            constraint("${attr.kernel.version}", "regexp", "^5\\.1[0-9]"),
            "kernel.version",
            "5.15.0",
            true,
        ),
        (
            constraint("${attr.kernel.version}", "regexp", "^4\\."),
            "kernel.version",
            "5.15.0",
            false,
        ),
        (
            constraint("${attr.nomad.version}", "version", ">= 1.2, < 2.0"),
            "nomad.version",
            "1.7.2",
            true,
        ),
        (
            constraint("${attr.nomad.version}", "version", ">= 1.8"),
            "nomad.version",
            "1.7.2",
            false,
        ),
        (
            constraint("${attr.nomad.version}", "version", "~> 1.7"),
            "nomad.version",
            "1.9.0",
            true,
        ),
        (
            constraint("${attr.nomad.version}", "version", "~> 1.7.0"),
            "nomad.version",
            "1.8.0",
            false,
        ),
        (
            constraint("${attr.nomad.version}", "version", ">= 1.2"),
            "nomad.version",
            "1.7.0-beta1",
            false,
        ),
        (
            constraint("${attr.nomad.version}", "semver", ">= 1.2.0"),
            "nomad.version",
            "1.7.0-beta1",
            true,
        ),
        (
            constraint("${attr.nomad.version}", "semver", "< 1.7.0"),
            "nomad.version",
            "1.7.0-rc.1",
            true,
        ),
        (
            constraint("${attr.nomad.version}", "semver", ">= 1.2.0"),
            "nomad.version",
            "1.2.3.4",
            false,
        ),
        (
            constraint("${attr.features}", "set_contains", "a,c"),
            "features",
            "a, b, c",
            true,
        ),
        (
            constraint("${attr.features}", "set_contains", "a,d"),
            "features",
            "a,b,c",
            false,
        ),
        (
            constraint("${attr.features}", "set_contains_all", "b"),
            "features",
            "a,b,c",
            true,
        ),
        (
            constraint("${attr.features}", "set_contains_any", "x, c"),
            "features",
            "a,b,c",
            true,
        ),
        (
            constraint("${attr.features}", "set_contains_any", "x,y"),
            "features",
            "a,b,c",
            false,
        ),
        (constraint("${attr.gpu}", "is_set", ""), "gpu", "1", true),
        (constraint("${attr.gpu}", "is_set", ""), "other", "1", false),
        (
            constraint("${attr.gpu}", "is_not_set", ""),
            "other",
            "1",
            true,
        ),
        (
            constraint("${attr.gpu}", "is_not_set", ""),
            "gpu",
            "1",
            false,
        ),
        (
            constraint("${attr.x}", "bogus-operand", "1"),
            "x",
            "1",
            false,
        ),
    ];
    for (c, key, value, want) in cases {
        let text = format!("{} {} {}", c.l_target, c.operand, c.r_target);
        let (placed, reasons) = places_with(c, set_attr(key, value));
        assert_eq!(placed, want, "{text} with {key}={value}");
        if !want {
            assert_eq!(reasons.get(&text), Some(&1), "{text}: {reasons:?}");
        }
    }
}

#[test]
fn node_interpolations() {
    let cases = vec![
        (
            constraint("${node.unique.id}", "=", &mock::node_id(0)),
            true,
        ),
        (constraint("${node.unique.id}", "=", "other"), false),
        (constraint("${node.datacenter}", "=", "dc1"), true),
        (constraint("${node.unique.name}", "=", "node-0"), true),
        (constraint("${node.class}", "=", "gpu"), true),
        (constraint("${node.pool}", "=", "default"), true),
        (constraint("${meta.rack}", "=", "r1"), true),
        (constraint("${meta.rack}", "=", "r2"), false),
        (constraint("${meta.missing}", "is_not_set", ""), true),
        (constraint("linux", "=", "${attr.kernel.name}"), true),
    ];
    for (c, want) in cases {
        let text = format!("{} {} {}", c.l_target, c.operand, c.r_target);
        let (placed, _) = places_with(c, |node| {
            node.node_class = "gpu".to_string();
            node.meta.insert("rack".to_string(), "r1".to_string());
        });
        assert_eq!(placed, want, "{text}");
    }
}

#[test]
fn operand_unit_cases() {
    let mut cache = OperandCache::default();
    let mut check =
        |op: &str, l: Option<&str>, r: Option<&str>| check_operand(&mut cache, op, l, r);
    assert!(!check("=", None, Some("x")));
    assert!(check("!=", None, Some("x")));
    assert!(!check("<", None, Some("1")));
    assert!(
        !check("regexp", Some("abc"), Some("(")),
        "invalid regex never matches"
    );
    assert!(check("regexp", Some("abc"), Some("b")), "unanchored");
    assert!(!check("version", Some("not-a-version"), Some(">= 1.0")));
    assert!(!check("version", Some("1.0"), Some("~~ 1.0")));
    assert!(check("distinct_hosts", None, None));

    let node = mock::node(3);
    assert_eq!(resolve_target("${attr.kernel.name}", &node), Some("linux"));
    assert_eq!(resolve_target("${attr.nope}", &node), None);
    assert_eq!(resolve_target("${nonsense}", &node), None);
    assert_eq!(resolve_target("literal", &node), Some("literal"));
}

#[test]
fn versions() {
    let v = |s: &str| Version::parse(s, false).unwrap_or_else(|| panic!("{s}"));
    assert!(v("1.2") < v("1.2.1"));
    assert!(v("v1.10.0") > v("1.9.9"));
    assert!(v("1.2.0-beta") < v("1.2.0"));
    assert!(v("1.2.0-alpha.1") < v("1.2.0-alpha.beta"));
    assert!(v("1.2.0-2") < v("1.2.0-11"));
    assert!(v("1.2.3+meta") == v("1.2.3"));
    assert!(Version::parse("1.2.3.4", true).is_none());
    assert!(Version::parse("1.2.3.4", false).is_some());
    let c = |s: &str, semver: bool| VersionConstraints::parse(s, semver).unwrap();
    assert!(c("~> 1.2", false).matches(&v("1.9")));
    assert!(!c("~> 1.2", false).matches(&v("2.0")));
    assert!(c("~> 1.2.3", false).matches(&v("1.2.9")));
    assert!(!c("~> 1.2.3", false).matches(&v("1.3.0")));
    assert!(c("!= 1.2.3", false).matches(&v("1.2.4")));
    assert!(c("= 1.2.3-beta", false).matches(&v("1.2.3-beta")));
    assert!(c(">= 1.2.3-beta, < 1.2.3-rc2", false).matches(&v("1.2.3-rc1")));
    // go-version: a constraint without a pre-release never matches one.
    assert!(!c("< 1.2.3", false).matches(&v("1.2.3-rc1")));
    assert!(c("< 1.2.3", true).matches(&v("1.2.3-rc1")));
    assert!(VersionConstraints::parse(">= x", false).is_none());
}

#[test]
fn globs() {
    assert!(glob_match("*", "anything"));
    assert!(glob_match("dc-*", "dc-east"));
    assert!(!glob_match("dc-*", "eu-dc"));
    assert!(glob_match("*-east", "dc-east"));
    assert!(glob_match("d*-*t", "dc-east"));
    assert!(!glob_match("dc1", "dc10"));
}

#[test]
fn datacenters_with_globs() {
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        node_with(0, |n| n.datacenter = "dc-east".into()),
        node_with(1, |n| n.datacenter = "dc-west".into()),
        node_with(2, |n| n.datacenter = "eu".into()),
    ]);
    h.upsert_job(job_with("glob", 6, |job| {
        job.datacenters = vec!["dc-*".into()]
    }));
    let result = h.register_eval("glob");
    assert_eq!(placed(&result).len(), 6);
    assert!(placed(&result)
        .iter()
        .all(|a| a.node_id != mock::node_id(2)));

    h.upsert_job(job_with("star", 3, |job| {
        job.datacenters = vec!["*".into()]
    }));
    let result = h.register_eval("star");
    assert_eq!(placed(&result).len(), 3);

    h.upsert_job(job_with("none", 1, |job| {
        job.datacenters = vec!["asia".into()]
    }));
    let result = h.register_eval("none");
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.nodes_evaluated, 0);
    assert!(metric.nodes_available.is_empty());
    assert_eq!(metric.nodes_in_pool, 3);
}

#[test]
fn node_pools() {
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        node_with(0, |n| n.node_pool = "default".into()),
        node_with(1, |n| n.node_pool = String::new()),
        node_with(2, |n| n.node_pool = "gpu".into()),
    ]);
    let on = |h: &mut Harness, id: &str, pool: &str| {
        h.upsert_job(job_with(id, 6, |job| {
            job.node_pool = pool.into();
            job.task_groups[0].tasks[0].resources.cpu = 100;
        }));
        let result = h.register_eval(id);
        let nodes: std::collections::BTreeSet<String> =
            placed(&result).iter().map(|a| a.node_id.clone()).collect();
        let metric: AllocMetric = metric_of(placed(&result)[0]);
        (nodes, metric.nodes_in_pool)
    };
    let (default_nodes, in_pool) = on(&mut h, "a", "default");
    assert!(!default_nodes.contains(&mock::node_id(2)));
    assert_eq!(in_pool, 2, "an empty node pool counts as default");
    let (gpu_nodes, in_pool) = on(&mut h, "b", "gpu");
    assert_eq!(
        gpu_nodes.into_iter().collect::<Vec<_>>(),
        vec![mock::node_id(2)]
    );
    assert_eq!(in_pool, 1);
    let (_, in_pool) = on(&mut h, "c", "all");
    assert_eq!(in_pool, 3);
}

#[test]
fn node_status_eligibility_and_drain() {
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        node_with(0, |n| n.status = NODE_STATUS_DOWN.into()),
        node_with(1, |n| n.status = NODE_STATUS_INIT.into()),
        node_with(2, |n| {
            n.scheduling_eligibility = NODE_SCHEDULING_INELIGIBLE.into()
        }),
        node_with(3, |n| {
            n.drain = true;
            n.drain_strategy = Some(DrainStrategy::default());
        }),
        mock::node(4),
    ]);
    h.upsert_job(mock::job("web", 2));
    let result = h.register_eval("web");
    assert_eq!(placed(&result).len(), 2);
    assert!(placed(&result)
        .iter()
        .all(|a| a.node_id == mock::node_id(4)));
}

#[test]
fn drivers() {
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        // Driver detected but unhealthy.
        node_with(0, |n| {
            n.drivers.insert(
                "docker".into(),
                DriverInfo {
                    detected: true,
                    healthy: false,
                    ..DriverInfo::default()
                },
            );
        }),
        // Driver only known through an attribute.
        node_with(1, |n| {
            n.drivers.clear();
            n.attributes.insert("driver.docker".into(), "1".into());
        }),
        // Attribute says false.
        node_with(2, |n| {
            n.drivers.clear();
            n.attributes.insert("driver.docker".into(), "false".into());
        }),
        // No docker at all.
        mock::node(3),
    ]);
    h.upsert_job(job_with("d", 1, |job| {
        job.task_groups[0].tasks[0].driver = "docker".into();
    }));
    let result = h.register_eval("d");
    assert_eq!(placed(&result)[0].node_id, mock::node_id(1));

    h.upsert_job(job_with("nod", 1, |job| {
        job.task_groups[0].tasks[0].driver = "qemu".into();
    }));
    let result = h.register_eval("nod");
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.constraint_filtered.get("missing drivers"), Some(&4));
    assert_eq!(metric.nodes_filtered, 4);
}

#[test]
fn host_volumes() {
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        node_with(0, |n| {
            n.host_volumes.insert(
                "data".into(),
                serde_json::json!({"Path": "/srv", "ReadOnly": true}),
            );
        }),
        node_with(1, |n| {
            n.host_volumes.insert(
                "data".into(),
                serde_json::json!({"Path": "/srv", "ReadOnly": false}),
            );
        }),
        mock::node(2),
    ]);
    let request = |read_only: bool| serde_json::json!({"Name": "data", "Type": "host", "Source": "data", "ReadOnly": read_only});
    h.upsert_job(job_with("rw", 1, |job| {
        job.task_groups[0]
            .volumes
            .insert("data".into(), request(false));
    }));
    let result = h.register_eval("rw");
    assert_eq!(placed(&result)[0].node_id, mock::node_id(1));
    h.upsert_job(job_with("ro", 3, |job| {
        job.task_groups[0]
            .volumes
            .insert("data".into(), request(true));
        job.task_groups[0]
            .constraints
            .push(constraint("", "distinct_hosts", ""));
    }));
    let result = h.register_eval("ro");
    assert_eq!(placed(&result).len(), 2);
    let metric = failed_metric(&result, "web");
    assert_eq!(
        metric
            .constraint_filtered
            .get("missing compatible host volumes"),
        Some(&1)
    );
}

#[test]
fn job_group_and_task_level_constraints() {
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        node_with(0, |n| {
            n.meta.insert("tier".into(), "a".into());
        }),
        node_with(1, |n| {
            n.meta.insert("tier".into(), "b".into());
            n.attributes.insert("arch".into(), "arm64".into());
        }),
        node_with(2, |n| {
            n.meta.insert("tier".into(), "b".into());
            n.attributes.insert("arch".into(), "amd64".into());
            n.node_class = "big".into();
        }),
    ]);
    h.upsert_job(job_with("levels", 1, |job| {
        job.constraints.push(constraint("${meta.tier}", "=", "b"));
        job.task_groups[0]
            .constraints
            .push(constraint("${attr.arch}", "=", "amd64"));
        job.task_groups[0].tasks[0]
            .constraints
            .push(constraint("${node.class}", "=", "big"));
    }));
    let result = h.register_eval("levels");
    assert_eq!(placed(&result)[0].node_id, mock::node_id(2));

    // Nothing satisfies a task constraint: the reason names it.
    h.upsert_job(job_with("task-only", 1, |job| {
        job.task_groups[0].tasks[0].constraints.push(constraint(
            "${attr.kernel.name}",
            "=",
            "windows",
        ));
    }));
    let result = h.register_eval("task-only");
    let metric = failed_metric(&result, "web");
    assert_eq!(
        metric
            .constraint_filtered
            .get("${attr.kernel.name} = windows"),
        Some(&3)
    );
    assert_eq!(metric.class_filtered.get("big"), Some(&1));
    assert_eq!(result.eval_update.status, EVAL_STATUS_COMPLETE);
    let blocked = result.blocked_eval.expect("blocked eval");
    assert_eq!(blocked.status, EVAL_STATUS_BLOCKED);
    assert!(blocked.class_eligibility.values().all(|eligible| !eligible));
    assert_eq!(result.eval_update.blocked_eval, blocked.id);
    assert_eq!(result.eval_update.queued_allocations.get("web"), Some(&1));
}

#[test]
fn distinct_hosts_job_and_group() {
    let mut h = harness_with_nodes(3);
    h.upsert_job(job_with("dh", 4, |job| {
        job.task_groups[0]
            .constraints
            .push(constraint("", "distinct_hosts", "true"));
    }));
    let result = h.register_eval("dh");
    assert_eq!(placed(&result).len(), 3);
    assert!(per_node(&h, "dh").values().all(|n| *n == 1));
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.constraint_filtered.get("distinct_hosts"), Some(&3));

    // Job level: two groups never share a node.
    let mut h = harness_with_nodes(4);
    h.upsert_job(job_with("dh2", 2, |job| {
        job.constraints.push(constraint("", "distinct_hosts", ""));
        let mut second = job.task_groups[0].clone();
        second.name = "api".into();
        job.task_groups.push(second);
    }));
    let result = h.register_eval("dh2");
    assert_eq!(placed(&result).len(), 4);
    assert!(per_node(&h, "dh2").values().all(|n| *n == 1));
}

#[test]
fn distinct_property_with_limit() {
    let mut h = Harness::new();
    h.upsert_nodes(
        (0..6)
            .map(|i| {
                node_with(i, |n| {
                    n.meta.insert("rack".into(), format!("r{}", i % 3));
                })
            })
            .collect(),
    );
    h.upsert_job(job_with("dp", 7, |job| {
        job.task_groups[0]
            .constraints
            .push(constraint("${meta.rack}", "distinct_property", "2"));
    }));
    let result = h.register_eval("dp");
    assert_eq!(placed(&result).len(), 6);
    let mut per_rack = BTreeMap::new();
    for alloc in h.live_allocs("dp") {
        let node = h.state.nodes.get(&alloc.node_id).unwrap();
        *per_rack.entry(node.meta["rack"].clone()).or_insert(0) += 1;
    }
    assert!(per_rack.values().all(|n| *n == 2), "{per_rack:?}");
    let metric = failed_metric(&result, "web");
    assert_eq!(
        metric
            .constraint_filtered
            .get("${meta.rack} distinct_property 2"),
        Some(&6)
    );

    // Default limit 1; nodes without the property are filtered.
    let mut h = Harness::new();
    h.upsert_nodes(vec![
        node_with(0, |n| {
            n.meta.insert("zone".into(), "a".into());
        }),
        node_with(1, |n| {
            n.meta.insert("zone".into(), "a".into());
        }),
        mock::node(2),
    ]);
    h.upsert_job(job_with("dp1", 2, |job| {
        job.constraints
            .push(constraint("${meta.zone}", "distinct_property", ""));
    }));
    let result = h.register_eval("dp1");
    assert_eq!(placed(&result).len(), 1);
}

#[test]
fn resources_fit_with_reserved_and_existing() {
    let mut h = Harness::new();
    h.upsert_node(node_with(0, |n| {
        n.reserved_resources.cpu.cpu_shares = 1000;
        n.reserved_resources.memory.memory_mb = 1024;
    }));
    // 3000 MHz free: seven 400 MHz allocations.
    h.upsert_job(job_with("fit", 8, |job| {
        job.task_groups[0].tasks[0].resources.cpu = 400;
    }));
    let result = h.register_eval("fit");
    assert_eq!(placed(&result).len(), 7);
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.dimension_exhausted.get("cpu"), Some(&1));
    assert_eq!(metric.nodes_exhausted, 1);
    assert_eq!(metric.coalesced_failures, 0);
    assert_eq!(result.eval_update.queued_allocations.get("web"), Some(&1));

    // Memory-bound job on top of the existing ones: 7 * 256 + 6000 > 7168.
    h.upsert_job(job_with("mem", 1, |job| {
        job.task_groups[0].tasks[0].resources.cpu = 1;
        job.task_groups[0].tasks[0].resources.memory_mb = 6000;
    }));
    let result = h.register_eval("mem");
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.dimension_exhausted.get("memory"), Some(&1));

    // Disk.
    h.upsert_job(job_with("disk", 1, |job| {
        job.task_groups[0].tasks[0].resources.cpu = 1;
        job.task_groups[0].tasks[0].resources.memory_mb = 10;
        job.task_groups[0].ephemeral_disk.size_mb = 200 * 1024;
    }));
    let result = h.register_eval("disk");
    let metric = failed_metric(&result, "web");
    assert_eq!(metric.dimension_exhausted.get("disk"), Some(&1));

    // Stopping allocations frees their resources.
    let ids: Vec<String> = h.live_allocs("fit").iter().map(|a| a.id.clone()).collect();
    h.update_allocs(&ids, |a| {
        a.client_status = proto::model::ALLOC_CLIENT_COMPLETE.into()
    });
    let result = h.register_eval("mem");
    assert_eq!(placed(&result).len(), 1);
}

#[test]
fn static_and_dynamic_ports() {
    let mut h = harness_with_nodes(1);
    h.update_node(&mock::node_id(0), |n| {
        n.reserved_resources.networks.reserved_host_ports = "22,8000-8002".into();
    });
    let with_port = |id: &str, port: i64| {
        job_with(id, 1, |job| {
            job.task_groups[0]
                .networks
                .push(proto::model::NetworkResource {
                    reserved_ports: vec![proto::model::Port {
                        label: "http".into(),
                        value: port,
                        ..Default::default()
                    }],
                    dynamic_ports: vec![proto::model::Port {
                        label: "admin".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
        })
    };
    h.upsert_job(with_port("p1", 8080));
    let result = h.register_eval("p1");
    let alloc = placed(&result)[0];
    let ports = &alloc.allocated_resources.as_ref().unwrap().shared.ports;
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].value, 8080);
    assert!((20_000..=32_000).contains(&ports[1].value));
    assert_eq!(ports[0].host_ip, "10.0.0.1");

    // Same static port again: collision.
    h.upsert_job(with_port("p2", 8080));
    let result = h.register_eval("p2");
    let metric = failed_metric(&result, "web");
    assert_eq!(
        metric
            .dimension_exhausted
            .get("network: reserved port collision"),
        Some(&1)
    );
    // A port the node reserves.
    h.upsert_job(with_port("p3", 8001));
    let result = h.register_eval("p3");
    assert!(placed(&result).is_empty());
}

#[test]
fn reserved_cores() {
    let mut h = harness_with_nodes(1);
    h.upsert_job(job_with("cores", 3, |job| {
        let res = &mut job.task_groups[0].tasks[0].resources;
        res.cpu = 0;
        res.cores = 2;
    }));
    let result = h.register_eval("cores");
    assert_eq!(placed(&result).len(), 2);
    let mut cores: Vec<u32> = placed(&result)
        .iter()
        .flat_map(|a| {
            a.allocated_resources.as_ref().unwrap().tasks["web"]
                .cpu
                .reserved_cores
                .clone()
        })
        .collect();
    cores.sort_unstable();
    assert_eq!(cores, vec![0, 1, 2, 3]);
    assert_eq!(
        placed(&result)[0]
            .allocated_resources
            .as_ref()
            .unwrap()
            .tasks["web"]
            .cpu
            .cpu_shares,
        2000
    );
    let metric = failed_metric(&result, "web");
    assert!(
        metric.dimension_exhausted.contains_key("cpu")
            || metric.dimension_exhausted.contains_key("cores")
    );
}

#[test]
fn computed_class_ignores_unique_attributes() {
    let a = node_with(0, |n| {
        n.attributes.insert("unique.hostname".into(), "a".into());
    });
    let b = node_with(1, |n| {
        n.attributes.insert("unique.hostname".into(), "b".into());
    });
    let c = node_with(2, |n| {
        n.attributes.insert("kernel.name".into(), "windows".into());
    });
    assert_eq!(compute_node_class(&a), compute_node_class(&b));
    assert_ne!(compute_node_class(&a), compute_node_class(&c));
    let d = node_with(3, |n| {
        n.drivers.get_mut("raw_exec").unwrap().healthy = false
    });
    assert_ne!(compute_node_class(&a), compute_node_class(&d));
}

#[test]
fn class_cache_is_bypassed_for_unique_constraints() {
    // Two nodes of the same class; a constraint on the unique id must still
    // tell them apart.
    let mut h = harness_with_nodes(2);
    h.config.candidate_limit = Some(10);
    h.upsert_job(job_with("u", 1, |job| {
        job.constraints
            .push(constraint("${node.unique.id}", "=", &mock::node_id(1)));
    }));
    for _ in 0..5 {
        let job = h.job("u");
        let eval = h.eval_for(&job, "job-register");
        let result = h.schedule(&eval).unwrap();
        assert_eq!(placed(&result)[0].node_id, mock::node_id(1));
        assert!(result.blocked_eval.is_none());
    }
    // With nothing feasible, the blocked eval says the class escaped.
    h.upsert_job(job_with("u2", 1, |job| {
        job.constraints
            .push(constraint("${attr.unique.hostname}", "=", "nope"));
    }));
    let result = h.register_eval("u2");
    assert!(result.blocked_eval.unwrap().escaped_computed_class);
}

#[test]
fn ten_thousand_nodes() {
    let mut h = Harness::new();
    let nodes: Vec<Node> = (0..10_000)
        .map(|i| {
            node_with(i, |n| {
                n.datacenter = format!("dc{}", i % 4);
                n.node_class = format!("class-{}", i % 8);
                n.attributes.insert(
                    "kernel.name".into(),
                    if i % 10 == 0 { "windows" } else { "linux" }.into(),
                );
            })
        })
        .collect();
    h.upsert_nodes(nodes);
    let job: Job = job_with("big", 200, |job| {
        job.datacenters = vec!["dc*".into()];
        job.constraints
            .push(constraint("${attr.kernel.name}", "=", "linux"));
        job.task_groups[0]
            .constraints
            .push(constraint("${node.class}", "regexp", "class-[0-6]"));
    });
    h.upsert_job(job);
    let result = h.register_eval("big");
    assert_eq!(placed(&result).len(), 200);
    assert!(result.eval_update.failed_tg_allocs.is_empty());

    // A system job evaluates every node.
    let mut system = mock::system_job("everywhere");
    system.datacenters = vec!["*".into()];
    system
        .constraints
        .push(constraint("${attr.kernel.name}", "=", "linux"));
    h.upsert_job(system);
    let result = h.register_eval("everywhere");
    assert_eq!(placed(&result).len(), 9_000);
    h.run_allocs("everywhere", false);
    assert!(h
        .live_allocs("everywhere")
        .iter()
        .all(|a| a.client_status == ALLOC_CLIENT_RUNNING));
}
