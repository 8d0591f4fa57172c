//! The gateway's metrics, in its own Prometheus registry: served at
//! `/metrics` and `/v1/metrics?format=prometheus`.
//!
//! - `atoll_gateway_forwarded_requests_total{region, method, status}`:
//!   requests forwarded to a region, by the status the region answered
//!   (`503` when there was no path).
//! - `atoll_gateway_forward_latency_seconds{region, method}`: time from the
//!   gateway sending a request to the region's response head arriving.
//! - `atoll_gateway_region_reachable{region}`: 1 while gossip knows a live
//!   server of the region, 0 once it knows none.
//! - `atoll_gateway_forward_retries_total{region}`: attempts moved on to
//!   another server of the region.
//! - `atoll_gateway_rollouts{state}`: multi-region rollouts this gateway
//!   runs, by state.

use ops_kit::telemetry::{Metrics as Registry, TelemetryError};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec};

/// The gateway's metric families.
#[derive(Clone)]
pub struct Metrics {
    /// The registry all of them live in (gossip and HTTP metrics too):
    /// `atoll_` is prefixed to every family.
    pub telemetry: Registry,
    /// Forwarded requests by region, method and answered status.
    pub forwarded: IntCounterVec,
    /// Forwarding latency to the response head, by region and method.
    pub latency: HistogramVec,
    /// Whether a region has a live server, by region.
    pub reachable: IntGaugeVec,
    /// Retries on another server, by region.
    pub retries: IntCounterVec,
    /// Multi-region rollouts by state.
    pub rollouts: IntGaugeVec,
}

impl Metrics {
    /// Fresh metrics in a new registry.
    pub fn new() -> Result<Self, TelemetryError> {
        let telemetry = Registry::new(&[])?;
        let forwarded = telemetry.counter_vec(
            "gateway_forwarded_requests_total",
            "Requests forwarded to a region, by answered status",
            &["region", "method", "status"],
        )?;
        let latency = telemetry.register(HistogramVec::new(
            HistogramOpts::new(
                "gateway_forward_latency_seconds",
                "Time from forwarding a request to the region's response head",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["region", "method"],
        )?)?;
        let reachable = telemetry.gauge_vec(
            "gateway_region_reachable",
            "1 while gossip knows a live server of the region",
            &["region"],
        )?;
        let retries = telemetry.counter_vec(
            "gateway_forward_retries_total",
            "Forwarding attempts moved on to another server of the region",
            &["region"],
        )?;
        let rollouts = telemetry.gauge_vec(
            "gateway_rollouts",
            "Multi-region rollouts run by this gateway, by state",
            &["state"],
        )?;
        Ok(Self {
            telemetry,
            forwarded,
            latency,
            reachable,
            retries,
            rollouts,
        })
    }

    /// The registry, for code that takes a `&prometheus::Registry`.
    pub fn registry(&self) -> &prometheus::Registry {
        self.telemetry.registry()
    }

    /// Every metric in Prometheus' text format.
    pub fn text(&self) -> String {
        self.telemetry.render_prometheus()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_appear_in_the_text() {
        let m = Metrics::new().expect("metrics");
        m.forwarded.with_label_values(&["eu", "GET", "200"]).inc();
        m.latency.with_label_values(&["eu", "GET"]).observe(0.001);
        m.reachable.with_label_values(&["eu"]).set(1);
        let text = m.text();
        assert!(text.contains(
            "atoll_gateway_forwarded_requests_total{method=\"GET\",region=\"eu\",status=\"200\"} 1"
        ));
        assert!(text.contains("atoll_gateway_region_reachable{region=\"eu\"} 1"));
        assert!(text.contains("atoll_gateway_forward_latency_seconds_bucket"));
    }
}
