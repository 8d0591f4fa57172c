//! Logging and metrics.
//!
//! Logs go to stderr through `tracing-subscriber`. Metrics live in a
//! [`prometheus::Registry`] and are exposed two ways: the Prometheus text format
//! ([`encode_prometheus`]) and the JSON shape of Nomad's `/v1/metrics`
//! ([`encode_nomad_json`]).
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

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber that writes human-readable lines to stderr.
///
/// The filter comes from `RUST_LOG` when it is set and valid, else from
/// `default_filter` (e.g. `"info,atoll=debug"`). Calling it again, or after
/// another subscriber was installed, does nothing.
pub fn init_tracing(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
