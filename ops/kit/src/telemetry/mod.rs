//! Logging and metrics, shared by every Atoll process.
//!
//! # Metrics
//!
//! A process keeps its metrics in one [`Metrics`] (a [`prometheus::Registry`]
//! whose families are exported as `atoll_<name>`, with constant labels such as
//! `region`). Components register their own families on it — counters,
//! gauges and histograms updated where things happen, or custom
//! [`prometheus::core::Collector`]s that compute their values at scrape time —
//! and serve them with [`Metrics::routes`]:
//!
//! - `GET /metrics` and `GET /v1/metrics?format=prometheus`: the Prometheus
//!   text exposition ([`encode_prometheus`]);
//! - `GET /v1/metrics`: the JSON shape of Nomad's `/v1/metrics`
//!   ([`encode_nomad_json`]).
//!
//! Request metrics come from two tower layers: [`HttpMetricsLayer`] for axum
//! routers (labelled by the matched route template, never the raw path) and
//! [`GrpcMetricsLayer`] for tonic servers (by service, method and gRPC status).
//!
//! Naming: `atoll_` prefix (added by the registry, so families are
//! registered without it), snake_case, base units in the name (`_seconds`,
//! `_bytes`), counters end in `_total`, labels have few values (never ids of
//! allocations, jobs or nodes).
//!
//! [`write_file_sd`] keeps a Prometheus file-based service discovery list
//! (`<data-dir>/prometheus/targets.json`, see [`file_sd_path`]) of the
//! processes to scrape.
//!
//! # Logs
//!
//! [`init_logging`] installs a `tracing` subscriber writing to stderr, either
//! human-readable or one JSON object per line, filtered by `EnvFilter`
//! directives (`info,region_server::raft=debug`).
//!
//! # Nomad JSON mapping
//!
//! Nomad's metrics come from go-metrics' in-memory sink, which aggregates over
//! fixed intervals. Prometheus metrics are cumulative instead, so the mapping is:
//!
//! - **Names**: the family name with its first two `_` turned into `.`
//!   (`atoll_raft_commit_index` becomes `atoll.raft.commit_index`), see
//!   [`nomad_metric_name`]. Prometheus names cannot contain `.`, and the first two
//!   segments are, by convention, the program and the subsystem.
//! - **Gauges** (and untyped metrics) go to `Gauges` with their current `Value`.
//! - **Counters** go to `Counters` as one reading of the cumulative total:
//!   `Count` 1, and `Sum`, `Min`, `Max`, `Mean` and `Rate` all equal to the
//!   total, `Stddev` 0. (There is no interval to divide by, so `Rate` is the
//!   total too.)
//! - **Histograms** go to `Samples`: `Count` and `Sum` are exact, `Mean` is
//!   `Sum / Count`, `Rate` equals `Sum`; `Min`, `Max` and `Stddev` are estimated
//!   from the buckets (lower edge of the first non-empty bucket, upper edge of the
//!   last non-empty finite bucket, bucket midpoints).
//! - **Summaries** go to `Samples` too: `Count`, `Sum`, `Mean` exact, `Min` and
//!   `Max` from the lowest and highest quantile, `Stddev` 0.
//!
//! Labels become the `Labels` object of each entry.

mod file_sd;
mod grpc;
mod http;
mod logging;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::core::Collector;
use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde_json::{json, Map, Value};

pub use self::file_sd::{file_sd_json, file_sd_path, write_file_sd, ScrapeTarget, TargetRole};
pub use self::grpc::{GrpcMetricsBody, GrpcMetricsLayer, GrpcMetricsService};
pub use self::http::{HttpMetricsLayer, HttpMetricsService};
pub use self::logging::{init_logging, init_tracing, log_filter, subscriber};

/// The prefix every family gets: `atoll_<name>`.
pub const PREFIX: &str = "atoll";

/// The content type of the Prometheus text exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets for request and apply latencies, in seconds (0.5 ms to
/// 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A metric could not be created or registered (bad name, duplicate).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The log level directives do not parse.
    #[error("invalid log level {directives:?}: {reason}")]
    LogFilter {
        /// The directives as given.
        directives: String,
        /// What is wrong with them.
        reason: String,
    },
    /// A global `tracing` subscriber is installed already.
    #[error("logging is already set up: {0}")]
    LogInit(String),
}

/// A process's metrics: one registry, families exported as `atoll_<name>`
/// with the constant labels given at creation. Cloning shares the registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry whose families get the `atoll_` prefix and
    /// `const_labels` (e.g. `[("region", "eu")]`) on every sample.
    pub fn new(const_labels: &[(&str, &str)]) -> Result<Self, TelemetryError> {
        let labels: HashMap<String, String> = const_labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let labels = (!labels.is_empty()).then_some(labels);
        Ok(Self {
            registry: Registry::new_custom(Some(PREFIX.into()), labels)?,
        })
    }

    /// The underlying registry (for code that takes a `&Registry`, such as
    /// the gossip pool).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Register `collector` and hand it back (metrics are cheap handles:
    /// the returned clone updates the registered one).
    pub fn register<C: Collector + Clone + 'static>(
        &self,
        collector: C,
    ) -> Result<C, TelemetryError> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    /// A registered counter `atoll_<name>` (`name` should end in `_total`).
    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, TelemetryError> {
        self.register(IntCounter::new(name, help)?)
    }

    /// A registered counter family with `labels`.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, TelemetryError> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// A registered gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, TelemetryError> {
        self.register(IntGauge::new(name, help)?)
    }

    /// A registered gauge family with `labels`.
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, TelemetryError> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    /// A registered histogram family with `labels` and [`LATENCY_BUCKETS`]
    /// (for durations in seconds).
    pub fn latency_histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<HistogramVec, TelemetryError> {
        self.register(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?)
    }

    /// The HTTP request metrics (`atoll_http_requests_total`,
    /// `atoll_http_request_duration_seconds`) as a layer for an axum router.
    /// Create it once per process; clone the layer for more routers.
    pub fn http_layer(&self) -> Result<HttpMetricsLayer, TelemetryError> {
        HttpMetricsLayer::new(self)
    }

    /// The gRPC request metrics (`atoll_grpc_requests_total`,
    /// `atoll_grpc_request_duration_seconds`) as a layer for a tonic server.
    /// Create it once per process.
    pub fn grpc_layer(&self) -> Result<GrpcMetricsLayer, TelemetryError> {
        GrpcMetricsLayer::new(self)
    }

    /// The Prometheus text exposition of the registry.
    pub fn render_prometheus(&self) -> String {
        encode_prometheus(&self.registry)
    }

    /// The registry in the shape of Nomad's `/v1/metrics`.
    pub fn render_nomad_json(&self) -> Value {
        encode_nomad_json(&self.registry)
    }

    /// `GET /metrics` (Prometheus text) and `GET /v1/metrics` (Nomad JSON,
    /// or Prometheus text with `?format=prometheus`), to merge into a
    /// component's router.
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let text = self.registry.clone();
        let v1 = self.registry.clone();
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let r = text.clone();
                    async move { prometheus_response(&r) }
                }),
            )
            .route(
                "/v1/metrics",
                get(move |Query(q): Query<Vec<(String, String)>>| {
                    let r = v1.clone();
                    async move { metrics_response(&r, &q) }
                }),
            )
    }
}

/// The answer to `GET /v1/metrics` with query pairs `query`: Nomad JSON by
/// default, Prometheus text for `format=prometheus`, 400 for other formats.
pub fn metrics_response(registry: &Registry, query: &[(String, String)]) -> Response {
    match query
        .iter()
        .rev()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
    {
        None | Some("") | Some("json") => nomad_json_response(registry),
        Some(f) if f.eq_ignore_ascii_case("prometheus") => prometheus_response(registry),
        Some(other) => (
            ::http::StatusCode::BAD_REQUEST,
            format!("Unknown metrics format {other:?}: expected \"prometheus\" or none"),
        )
            .into_response(),
    }
}

/// The Prometheus text exposition of `registry` as an HTTP response.
pub fn prometheus_response(registry: &Registry) -> Response {
    (
        [(::http::header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        encode_prometheus(registry),
    )
        .into_response()
}

/// Nomad's `/v1/metrics` JSON of `registry` as an HTTP response.
pub fn nomad_json_response(registry: &Registry) -> Response {
    axum::Json(encode_nomad_json(registry)).into_response()
}

/// The Prometheus text exposition (version 0.0.4) of everything in `registry`.
///
/// Should encoding fail (an invalid metric, which registration normally
/// prevents), the output ends with a `#` comment describing the error, which
/// scrapers ignore.
pub fn encode_prometheus(registry: &prometheus::Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(err) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %err, "encoding metrics failed");
        buf.extend_from_slice(format!("\n# error encoding metrics: {err}\n").as_bytes());
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The metric name Nomad's JSON uses for a Prometheus family name: the first two
/// `_` become `.` (`atoll_raft_commit_index` -> `atoll.raft.commit_index`).
pub fn nomad_metric_name(family: &str) -> String {
    family.replacen('_', ".", 2)
}

/// The registry in the shape of Nomad's `GET /v1/metrics`:
/// `{"Timestamp", "Gauges", "Counters", "Samples"}`. See the module docs for how
/// Prometheus metric types map onto it.
pub fn encode_nomad_json(registry: &prometheus::Registry) -> Value {
    let mut gauges = Vec::new();
    let mut counters = Vec::new();
    let mut samples = Vec::new();
    for family in registry.gather() {
        encode_family(&family, &mut gauges, &mut counters, &mut samples);
    }
    json!({
        "Timestamp": nomad_timestamp(SystemTime::now()),
        "Gauges": gauges,
        "Counters": counters,
        "Samples": samples,
    })
}

fn encode_family(
    family: &MetricFamily,
    gauges: &mut Vec<Value>,
    counters: &mut Vec<Value>,
    samples: &mut Vec<Value>,
) {
    let name = nomad_metric_name(family.name());
    for metric in family.get_metric() {
        let labels = labels(metric);
        match family.get_field_type() {
            MetricType::GAUGE => gauges.push(json!({
                "Name": name,
                "Value": metric.get_gauge().get_value(),
                "Labels": labels,
            })),
            #[allow(deprecated)] // untyped is deprecated in the plain model, still gathered
            MetricType::UNTYPED => gauges.push(json!({
                "Name": name,
                "Value": metric.get_untyped().get_value(),
                "Labels": labels,
            })),
            MetricType::COUNTER => {
                let v = metric.get_counter().get_value();
                counters.push(aggregate(&name, labels, 1, v, v, v, 0.0, v));
            }
            MetricType::HISTOGRAM => samples.push(histogram_sample(&name, labels, metric)),
            MetricType::SUMMARY => {
                let s = metric.get_summary();
                let count = s.sample_count();
                let sum = s.sample_sum();
                let mean = mean(sum, count);
                let values = s.get_quantile().iter().map(|q| q.value());
                let (min, max) = values
                    .filter(|v| v.is_finite())
                    .fold(None, |acc: Option<(f64, f64)>, v| match acc {
                        None => Some((v, v)),
                        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
                    })
                    .unwrap_or((mean, mean));
                samples.push(aggregate(&name, labels, count, sum, min, max, 0.0, sum));
            }
        }
    }
}

fn labels(metric: &Metric) -> Value {
    let map: Map<String, Value> = metric
        .get_label()
        .iter()
        .map(|l| (l.name().to_string(), Value::String(l.value().to_string())))
        .collect();
    Value::Object(map)
}

fn mean(sum: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// One go-metrics `AggregateSample` entry.
#[allow(clippy::too_many_arguments)]
fn aggregate(
    name: &str,
    labels: Value,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    stddev: f64,
    rate: f64,
) -> Value {
    json!({
        "Name": name,
        "Count": count,
        "Rate": rate,
        "Sum": sum,
        "Min": min,
        "Max": max,
        "Mean": mean(sum, count),
        "Stddev": stddev,
        "Labels": labels,
    })
}

fn histogram_sample(name: &str, labels: Value, metric: &Metric) -> Value {
    let h = metric.get_histogram();
    let count = h.get_sample_count();
    let sum = h.get_sample_sum();
    let mean = mean(sum, count);

    // Non-cumulative buckets as (lower edge, upper edge, observations). The
    // first bucket's lower edge is unknown: take 0 for the usual non-negative
    // bounds, else its upper edge.
    let mut buckets = Vec::new();
    let mut lower = h
        .get_bucket()
        .first()
        .map(|b| b.upper_bound().min(0.0))
        .unwrap_or(0.0);
    let mut seen = 0u64;
    for b in h.get_bucket() {
        let upper = b.upper_bound();
        let cumulative = b.cumulative_count();
        buckets.push((lower, upper, cumulative.saturating_sub(seen)));
        seen = seen.max(cumulative);
        lower = upper;
    }
    // Observations above the last explicit bound (the implicit +Inf bucket).
    if count > seen {
        buckets.push((lower, f64::INFINITY, count - seen));
    }

    let (mut min, mut max) = (mean, mean);
    let mut variance = 0.0;
    let non_empty: Vec<_> = buckets.iter().filter(|(_, _, n)| *n > 0).collect();
    if let (Some(first), Some(last)) = (non_empty.first(), non_empty.last()) {
        min = first.0.min(mean);
        max = if last.1.is_finite() { last.1 } else { last.0 }.max(mean);
        for (lo, hi, n) in &non_empty {
            let mid = if hi.is_finite() { (lo + hi) / 2.0 } else { *lo };
            variance += *n as f64 * (mid - mean).powi(2);
        }
        variance /= count.max(1) as f64;
    }
    aggregate(name, labels, count, sum, min, max, variance.sqrt(), sum)
}

/// A timestamp the way Nomad prints it: `2024-05-01 12:00:00 +0000 UTC`
/// (Go's `time.Time.String()` of a UTC time rounded to the second).
fn nomad_timestamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamp_format() {
        assert_eq!(nomad_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 +0000 UTC");
        // 2024-02-29 13:14:15 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_709_212_455);
        assert_eq!(nomad_timestamp(t), "2024-02-29 13:14:15 +0000 UTC");
        // 2000-12-31 23:59:59 UTC
        let t = UNIX_EPOCH + Duration::from_secs(978_307_199);
        assert_eq!(nomad_timestamp(t), "2000-12-31 23:59:59 +0000 UTC");
    }

    #[test]
    fn names() {
        assert_eq!(
            nomad_metric_name("atoll_raft_commit_index"),
            "atoll.raft.commit_index"
        );
        assert_eq!(nomad_metric_name("atoll_up"), "atoll.up");
    }
}
