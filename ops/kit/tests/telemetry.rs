//! Prometheus text and Nomad JSON encodings of a registry.

use ops_kit::telemetry::{encode_nomad_json, encode_prometheus, init_tracing};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::Value;

fn registry() -> Registry {
    let registry = Registry::new();
    let commits = IntCounter::new("atoll_raft_commits_total", "Raft entries committed").unwrap();
    commits.inc_by(42);
    registry.register(Box::new(commits)).unwrap();

    let index = IntGauge::new("atoll_raft_commit_index", "Last committed index").unwrap();
    index.set(7);
    registry.register(Box::new(index)).unwrap();

    let jobs = IntGaugeVec::new(
        Opts::new("atoll_jobs_running", "Running jobs by namespace"),
        &["namespace"],
    )
    .unwrap();
    jobs.with_label_values(&["default"]).set(3);
    registry.register(Box::new(jobs)).unwrap();

    let latency = Histogram::with_opts(
        HistogramOpts::new("atoll_rpc_latency_seconds", "RPC latency").buckets(vec![0.1, 1.0]),
    )
    .unwrap();
    for v in [0.05, 0.5, 0.5, 2.0] {
        latency.observe(v);
    }
    registry.register(Box::new(latency)).unwrap();
    registry
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("array")
        .iter()
        .find(|m| m["Name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {list}"))
}

#[test]
fn prometheus_text() {
    let text = encode_prometheus(&registry());
    assert!(
        text.contains("# TYPE atoll_raft_commits_total counter"),
        "{text}"
    );
    assert!(text.contains("atoll_raft_commits_total 42"), "{text}");
    assert!(
        text.contains("# TYPE atoll_raft_commit_index gauge"),
        "{text}"
    );
    assert!(text.contains("atoll_raft_commit_index 7"), "{text}");
    assert!(
        text.contains("atoll_jobs_running{namespace=\"default\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE atoll_rpc_latency_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("atoll_rpc_latency_seconds_bucket{le=\"0.1\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("atoll_rpc_latency_seconds_bucket{le=\"1\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("atoll_rpc_latency_seconds_bucket{le=\"+Inf\"} 4"),
        "{text}"
    );
    assert!(text.contains("atoll_rpc_latency_seconds_count 4"), "{text}");
    assert!(
        text.contains("atoll_rpc_latency_seconds_sum 3.05"),
        "{text}"
    );
}

#[test]
fn nomad_json_shape() {
    let json = encode_nomad_json(&registry());
    let ts = json["Timestamp"].as_str().expect("Timestamp");
    assert!(ts.ends_with(" +0000 UTC") && ts.len() == 29, "{ts}");

    let gauge = find(&json["Gauges"], "atoll.raft.commit_index");
    assert_eq!(gauge["Value"], 7.0);
    assert_eq!(gauge["Labels"], serde_json::json!({}));
    let jobs = find(&json["Gauges"], "atoll.jobs.running");
    assert_eq!(jobs["Value"], 3.0);
    assert_eq!(jobs["Labels"], serde_json::json!({"namespace": "default"}));

    let counter = find(&json["Counters"], "atoll.raft.commits_total");
    for field in [
        "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels",
    ] {
        assert!(
            counter.get(field).is_some(),
            "counter lacks {field}: {counter}"
        );
    }
    assert_eq!(counter["Sum"], 42.0);
    assert_eq!(counter["Count"], 1);

    let sample = find(&json["Samples"], "atoll.rpc.latency_seconds");
    for field in [
        "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels",
    ] {
        assert!(
            sample.get(field).is_some(),
            "sample lacks {field}: {sample}"
        );
    }
    assert_eq!(sample["Count"], 4);
    let sum = sample["Sum"].as_f64().expect("Sum");
    assert!((sum - 3.05).abs() < 1e-9, "{sum}");
    let mean = sample["Mean"].as_f64().expect("Mean");
    assert!((mean - 3.05 / 4.0).abs() < 1e-9, "{mean}");
    let (min, max) = (
        sample["Min"].as_f64().unwrap(),
        sample["Max"].as_f64().unwrap(),
    );
    assert!(min <= mean && mean <= max, "{min} {mean} {max}");
    assert_eq!(min, 0.0);
    assert_eq!(max, 1.0);
    assert!(sample["Stddev"].as_f64().unwrap() > 0.0);

    // Nothing landed in the wrong list.
    assert_eq!(json["Gauges"].as_array().unwrap().len(), 2);
    assert_eq!(json["Counters"].as_array().unwrap().len(), 1);
    assert_eq!(json["Samples"].as_array().unwrap().len(), 1);
}

#[test]
fn empty_registry() {
    let registry = Registry::new();
    assert_eq!(encode_prometheus(&registry), "");
    let json = encode_nomad_json(&registry);
    assert_eq!(json["Gauges"], serde_json::json!([]));
    assert_eq!(json["Counters"], serde_json::json!([]));
    assert_eq!(json["Samples"], serde_json::json!([]));
}

#[test]
fn init_tracing_is_idempotent() {
    init_tracing("info");
    init_tracing("debug");
    tracing::info!("still fine");
}
