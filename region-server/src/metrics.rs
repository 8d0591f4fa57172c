//! The server's Prometheus metrics: Raft, HTTP, and state gauges.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::sync::watch;

use crate::service::Service;

/// Every metric family a region server exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served at `/v1/metrics` and `/metrics`.
    pub registry: Registry,
    raft_term: IntGauge,
    raft_applied_index: IntGauge,
    raft_last_log_index: IntGauge,
    raft_is_leader: IntGauge,
    raft_leader_changes: IntCounter,
    raft_last_contact_ms: IntGauge,
    /// HTTP requests by route, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route and method.
    pub http_latency: HistogramVec,
    jobs: IntGaugeVec,
    allocs: IntGaugeVec,
    nodes: IntGaugeVec,
    evals: IntGaugeVec,
}

impl Metrics {
    /// Register every family, labelled with `region`.
    pub fn new(region: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(
            Some("atoll".into()),
            Some(std::collections::HashMap::from([(
                "region".to_string(),
                region.to_string(),
            )])),
        )?;
        let g = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let m = IntGauge::new(name, help)?;
            registry.register(Box::new(m.clone()))?;
            Ok(m)
        };
        let gv =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let m = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(m.clone()))?;
                Ok(m)
            };
        let raft_leader_changes = IntCounter::new(
            "raft_leader_changes_total",
            "Leader changes seen by this server",
        )?;
        registry.register(Box::new(raft_leader_changes.clone()))?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["route", "method"],
        )?;
        registry.register(Box::new(http_latency.clone()))?;
        Ok(Self {
            raft_term: g("raft_term", "Current Raft term")?,
            raft_applied_index: g("raft_applied_index", "Last Raft index applied to the state")?,
            raft_last_log_index: g("raft_last_log_index", "Last Raft index in the local log")?,
            raft_is_leader: g(
                "raft_is_leader",
                "1 when this server is the region's leader",
            )?,
            raft_leader_changes,
            raft_last_contact_ms: g(
                "raft_last_contact_milliseconds",
                "Time since the leader was last heard from",
            )?,
            http_requests,
            http_latency,
            jobs: gv("state_jobs", "Jobs by status", &["status"])?,
            allocs: gv(
                "state_allocations",
                "Allocations by client status",
                &["status"],
            )?,
            nodes: gv("state_nodes", "Nodes by status", &["status"])?,
            evals: gv("state_evaluations", "Evaluations by status", &["status"])?,
            registry,
        })
    }

    /// Refresh the gauges from Raft and the state once a second.
    pub async fn sample_loop(self, service: Service, mut shutdown: watch::Receiver<bool>) {
        let mut last_leader = None;
        loop {
            let m = service.raft.metrics().borrow().clone();
            self.raft_term.set(m.current_term as i64);
            self.raft_applied_index
                .set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
            self.raft_last_log_index
                .set(m.last_log_index.unwrap_or(0) as i64);
            self.raft_is_leader
                .set(i64::from(m.state == openraft::ServerState::Leader));
            if m.current_leader.is_some() && m.current_leader != last_leader {
                self.raft_leader_changes.inc();
                last_leader = m.current_leader;
            }
            self.raft_last_contact_ms
                .set(service.last_contact_ms() as i64);
            let t = service.store.snapshot();
            count(&self.jobs, t.jobs.values().map(|j| j.status.as_str()));
            count(
                &self.allocs,
                t.allocs.values().map(|a| a.client_status.as_str()),
            );
            count(&self.nodes, t.nodes.values().map(|n| n.status.as_str()));
            count(&self.evals, t.evals.values().map(|e| e.status.as_str()));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn count<'a>(gauge: &IntGaugeVec, statuses: impl Iterator<Item = &'a str>) {
    let mut counts = std::collections::BTreeMap::<&str, i64>::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    gauge.reset();
    for (s, n) in counts {
        gauge.with_label_values(&[s]).set(n);
    }
}
