//! Prometheus text and Nomad JSON encodings of a registry, the metrics
//! endpoints, and the HTTP and gRPC request layers.

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

fn value(metrics: &ops_kit::telemetry::Metrics, family: &str, labels: &[(&str, &str)]) -> f64 {
    let families = metrics.registry().gather();
    let Some(f) = families.iter().find(|f| f.name() == family) else {
        return 0.0;
    };
    f.get_metric()
        .iter()
        .find(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| {
            if f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
                m.get_histogram().get_sample_count() as f64
            } else {
                m.get_counter().get_value()
            }
        })
        .unwrap_or(0.0)
}

async fn call(app: &axum::Router, uri: &str) -> (http::StatusCode, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http_layer_counts_by_route_template_and_endpoints_serve_both_formats() {
    let metrics = ops_kit::telemetry::Metrics::new(&[("region", "eu")]).unwrap();
    let app: axum::Router = axum::Router::new()
        .route("/v1/job/{id}", axum::routing::get(|| async { "job" }))
        .merge(metrics.routes())
        .layer(metrics.http_layer().unwrap());

    assert_eq!(call(&app, "/v1/job/abc").await.0, http::StatusCode::OK);
    assert_eq!(call(&app, "/v1/job/def").await.0, http::StatusCode::OK);
    assert_eq!(
        call(&app, "/no/such/thing").await.0,
        http::StatusCode::NOT_FOUND
    );

    let job = [
        ("route", "/v1/job/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(value(&metrics, "atoll_http_requests_total", &job), 2.0);
    assert_eq!(
        value(
            &metrics,
            "atoll_http_request_duration_seconds",
            &[("route", "/v1/job/{id}"), ("method", "GET")]
        ),
        2.0
    );

    let (status, text) = call(&app, "/metrics").await;
    assert_eq!(status, http::StatusCode::OK);
    let line = text
        .lines()
        .find(|l| l.starts_with("atoll_http_requests_total{") && l.contains("status=\"200\""))
        .unwrap_or_else(|| panic!("no request counter in {text}"));
    for part in [
        "method=\"GET\"",
        "region=\"eu\"",
        "route=\"/v1/job/{id}\"",
        "} 2",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert_eq!(
        value(
            &metrics,
            "atoll_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "{text}"
    );
    // Raw paths never become labels.
    assert!(
        !text.contains("abc") && !text.contains("/no/such"),
        "{text}"
    );

    let (status, text2) = call(&app, "/v1/metrics?format=prometheus").await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        text2.contains("# TYPE atoll_http_requests_total counter"),
        "{text2}"
    );

    let (status, json) = call(&app, "/v1/metrics").await;
    assert_eq!(status, http::StatusCode::OK);
    let json: Value = serde_json::from_str(&json).unwrap();
    for key in ["Timestamp", "Gauges", "Counters", "Samples"] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
    assert!(
        json["Counters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Name"] == "atoll.http.requests_total" && c["Labels"]["region"] == "eu"),
        "{json}"
    );

    assert_eq!(
        call(&app, "/v1/metrics?format=xml").await.0,
        http::StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn grpc_layer_reads_the_status_from_trailers_or_head() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt};

    let metrics = ops_kit::telemetry::Metrics::new(&[]).unwrap();
    let layer = metrics.grpc_layer().unwrap();
    let svc = tower::service_fn(|req: http::Request<()>| async move {
        let path = req.uri().path().to_string();
        let mut trailers = http::HeaderMap::new();
        let resp = if path.ends_with("/Fail") {
            // Trailers-only: the status is in the head.
            http::Response::builder()
                .header("grpc-status", "14")
                .body(Full::new(Bytes::new()).with_trailers(std::future::ready(None)))
                .unwrap()
        } else {
            let code = if path.ends_with("/Missing") { "5" } else { "0" };
            trailers.insert("grpc-status", http::HeaderValue::from_static(code));
            http::Response::new(
                Full::new(Bytes::from_static(b"msg"))
                    .with_trailers(std::future::ready(Some(Ok(trailers)))),
            )
        };
        Ok::<_, std::convert::Infallible>(resp)
    });
    let svc = layer.layer(svc);
    let req = |p: &str| http::Request::post(p).body(()).unwrap();

    for p in [
        "/atoll.Raft/Append",
        "/atoll.Raft/Append",
        "/atoll.Client/Missing",
        "/atoll.Client/Fail",
    ] {
        let resp = svc.clone().oneshot(req(p)).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
    }
    // A response whose stream the client abandons.
    let resp = svc
        .clone()
        .oneshot(req("/atoll.Client/Watch"))
        .await
        .unwrap();
    drop(resp);

    let v = |s: &str, m: &str, st: &str| {
        value(
            &metrics,
            "atoll_grpc_requests_total",
            &[("service", s), ("method", m), ("status", st)],
        )
    };
    assert_eq!(v("atoll.Raft", "Append", "OK"), 2.0);
    assert_eq!(v("atoll.Client", "Missing", "NotFound"), 1.0);
    assert_eq!(v("atoll.Client", "Fail", "Unavailable"), 1.0);
    assert_eq!(v("atoll.Client", "Watch", "Cancelled"), 1.0);
    assert_eq!(
        value(
            &metrics,
            "atoll_grpc_request_duration_seconds",
            &[("service", "atoll.Raft"), ("method", "Append")]
        ),
        2.0
    );
}
