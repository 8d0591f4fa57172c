//! The agent's Prometheus metrics, on the same machinery as the servers'
//! (`ops_kit::telemetry`): counters of the conversation with the servers,
//! updated where it happens, and gauges of the node's allocations computed
//! when scraped. Served at `/metrics` and `/v1/metrics` on the agent's HTTP
//! address, with the HTTP request metrics of that server.

use std::sync::Arc;

use ops_kit::telemetry::{HttpMetricsLayer, Metrics, TelemetryError};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};

use crate::agent::NodeCore;

/// Client statuses exported even at zero.
const ALLOC_STATUSES: &[&str] = &[
    proto::model::ALLOC_CLIENT_PENDING,
    proto::model::ALLOC_CLIENT_RUNNING,
    proto::model::ALLOC_CLIENT_COMPLETE,
    proto::model::ALLOC_CLIENT_FAILED,
    proto::model::ALLOC_CLIENT_LOST,
];

/// Counters of a node's conversation with the servers. Cheap handles; a
/// simulated fleet keeps one unregistered set per node, a real agent
/// registers its node's set.
#[derive(Clone)]
pub struct CoreMetrics {
    /// Successful registrations.
    pub registrations: IntCounter,
    /// Successful heartbeats.
    pub heartbeats: IntCounter,
    /// Failed heartbeat rounds (no server answered).
    pub heartbeat_failures: IntCounter,
    /// UpdateAllocations calls that succeeded.
    pub update_batches: IntCounter,
    /// Allocation updates sent.
    pub updates_sent: IntCounter,
    /// Allocation watch events received.
    pub watch_events: IntCounter,
    /// Allocations started.
    pub allocs_started: IntCounter,
}

impl CoreMetrics {
    fn create() -> Result<Self, prometheus::Error> {
        let c = IntCounter::new;
        Ok(Self {
            registrations: c(
                "client_registrations_total",
                "Successful registrations with the servers",
            )?,
            heartbeats: c(
                "client_heartbeats_total",
                "Successful heartbeats to the leader",
            )?,
            heartbeat_failures: c(
                "client_heartbeat_failures_total",
                "Heartbeat attempts no server answered",
            )?,
            update_batches: c(
                "client_alloc_update_batches_total",
                "Batches of allocation status updates the servers accepted",
            )?,
            updates_sent: c(
                "client_alloc_updates_total",
                "Allocation status updates the servers accepted",
            )?,
            watch_events: c(
                "client_watch_events_total",
                "Allocation watch events received from the servers",
            )?,
            allocs_started: c(
                "client_allocations_started_total",
                "Allocations this agent started",
            )?,
        })
    }

    /// Registers the counters on `metrics`.
    pub fn register(&self, metrics: &Metrics) -> Result<(), TelemetryError> {
        for c in [
            &self.registrations,
            &self.heartbeats,
            &self.heartbeat_failures,
            &self.update_batches,
            &self.updates_sent,
            &self.watch_events,
            &self.allocs_started,
        ] {
            metrics.register(c.clone())?;
        }
        Ok(())
    }
}

impl Default for CoreMetrics {
    /// Unregistered counters.
    fn default() -> Self {
        // Names are constants known to be valid.
        Self::create().unwrap_or_else(|e| unreachable!("static client metrics: {e}"))
    }
}

/// The node's gauges, computed when scraped.
#[derive(Clone)]
struct NodeCollector {
    core: Arc<NodeCore>,
    registered: IntGauge,
    allocations: IntGaugeVec,
}

impl NodeCollector {
    fn new(core: Arc<NodeCore>) -> Result<Self, prometheus::Error> {
        Ok(Self {
            core,
            registered: IntGauge::new(
                "client_registered",
                "1 while the node is registered with the servers",
            )?,
            allocations: IntGaugeVec::new(
                Opts::new(
                    "client_allocations",
                    "Allocations this agent knows, by client status",
                ),
                &["status"],
            )?,
        })
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.registered.desc();
        d.extend(self.allocations.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.registered.set(i64::from(self.core.is_registered()));
        self.allocations.reset();
        for s in ALLOC_STATUSES {
            self.allocations.with_label_values(&[*s]).set(0);
        }
        for v in self.core.allocations() {
            self.allocations
                .with_label_values(&[v.client_status.as_str()])
                .inc();
        }
        let mut out = self.registered.collect();
        out.extend(self.allocations.collect());
        out
    }
}

/// The agent's registry (labelled `region`) with the node's counters and
/// gauges, and the HTTP layer for its server.
pub fn agent_metrics(
    region: &str,
    core: Arc<NodeCore>,
) -> Result<(Metrics, HttpMetricsLayer), TelemetryError> {
    let metrics = Metrics::new(&[("region", region)])?;
    core.metrics.register(&metrics)?;
    metrics.register(NodeCollector::new(core)?)?;
    let http = metrics.http_layer()?;
    Ok((metrics, http))
}
