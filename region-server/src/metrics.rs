//! The server's Prometheus metrics.
//!
//! Three kinds of families:
//!
//! - **Updated where things happen**: HTTP and gRPC requests (tower layers
//!   from `ops_kit::telemetry`), Raft apply latency (the state machine),
//!   leader changes (a task woken by Raft's metrics channel, idle otherwise),
//!   and the leader's work: plan queue, plan apply latency, placements,
//!   evaluations acked/nacked/failed, heartbeats expired ([`LeaderMetrics`]).
//! - **Computed at scrape time** by [`ServerCollector`]: Raft's term and
//!   indexes, last contact, replication lag, the broker's queues, heartbeat
//!   timers, and the state's jobs/allocations/nodes/evaluations by status.
//!   The status counts are recounted only when their table changed since the
//!   previous scrape (its table index moved), so an idle region costs
//!   nothing between scrapes and no more than a comparison at a scrape.
//! - **Gossip**: registered by the gossip pool itself (`atoll_gossip_*`).
//!
//! Every family carries the constant label `region`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ops_kit::telemetry::{GrpcMetricsLayer, HttpMetricsLayer, TelemetryError, LATENCY_BUCKETS};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use tokio::sync::watch;

use crate::leader::LeaderHandle;
use crate::raft::log_store::Appended;
use crate::service::Service;
use crate::state::{table, Tables};

/// The statuses exported even when no row has them (so `== 0` alerts and
/// dashboards see a zero instead of nothing).
const JOB_STATUSES: &[&str] = &["pending", "running", "dead"];
const ALLOC_STATUSES: &[&str] = &[
    "pending", "running", "complete", "failed", "lost", "unknown",
];
const NODE_STATUSES: &[&str] = &["initializing", "ready", "down", "disconnected"];
const EVAL_STATUSES: &[&str] = &["pending", "blocked", "complete", "failed", "canceled"];

/// Counters and histograms of the leader's duties. Cheap handles: the
/// leader's tasks update clones of them. [`LeaderMetrics::default`] makes
/// unregistered ones (for tests and harnesses).
#[derive(Clone)]
pub struct LeaderMetrics {
    /// Plans submitted by workers and not yet taken by the applier.
    pub plan_queue_depth: IntGauge,
    /// Time to check and commit one batch of plans.
    pub plan_apply_duration: Histogram,
    /// Allocations placed (new or replacing) by committed plans.
    pub placements: IntCounter,
    /// Evaluations processed by workers, by `result` (`ack`, `nack`).
    pub evaluations: IntCounterVec,
    /// Evaluations written back as failed (delivery limit reached).
    pub evaluations_failed: IntCounter,
    /// Nodes whose heartbeat timer expired (marked down).
    pub heartbeats_expired: IntCounter,
}

impl LeaderMetrics {
    fn create() -> Result<Self, prometheus::Error> {
        let evaluations = IntCounterVec::new(
            Opts::new(
                "scheduler_evaluations_total",
                "Evaluations processed by the leader's workers, by result (ack, nack)",
            ),
            &["result"],
        )?;
        for r in ["ack", "nack"] {
            evaluations.with_label_values(&[r]).reset();
        }
        Ok(Self {
            plan_queue_depth: IntGauge::new(
                "plan_queue_depth",
                "Plans waiting for the leader's plan applier",
            )?,
            plan_apply_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "plan_apply_duration_seconds",
                    "Time to check and commit one batch of plans",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            placements: IntCounter::new(
                "scheduler_placements_total",
                "Allocations placed by committed plans",
            )?,
            evaluations,
            evaluations_failed: IntCounter::new(
                "scheduler_evaluations_failed_total",
                "Evaluations that reached their delivery limit and were marked failed",
            )?,
            heartbeats_expired: IntCounter::new(
                "heartbeat_expired_total",
                "Client heartbeat timers that expired (node marked down)",
            )?,
        })
    }

    fn register(&self, m: &ops_kit::telemetry::Metrics) -> Result<(), TelemetryError> {
        m.register(self.plan_queue_depth.clone())?;
        m.register(self.plan_apply_duration.clone())?;
        m.register(self.placements.clone())?;
        m.register(self.evaluations.clone())?;
        m.register(self.evaluations_failed.clone())?;
        m.register(self.heartbeats_expired.clone())?;
        Ok(())
    }
}

impl Default for LeaderMetrics {
    fn default() -> Self {
        // Names and labels are constants known to be valid.
        Self::create().unwrap_or_else(|e| unreachable!("static leader metrics: {e}"))
    }
}

/// Every metric family of a region server.
#[derive(Clone)]
pub struct Metrics {
    /// The process registry, served at `/v1/metrics` and `/metrics`.
    pub telemetry: ops_kit::telemetry::Metrics,
    /// The HTTP request layer.
    pub http: HttpMetricsLayer,
    /// The gRPC request layer.
    pub grpc: GrpcMetricsLayer,
    /// Time to apply one batch of Raft entries to the state.
    pub raft_apply_duration: Histogram,
    /// The leader's counters.
    pub leader: LeaderMetrics,
    raft_leader_changes: IntCounter,
}

impl Metrics {
    /// The registry (labelled `region`) with every family that does not
    /// need the running server; [`Metrics::install`] adds the rest.
    pub fn new(region: &str) -> Result<Self, TelemetryError> {
        let telemetry = ops_kit::telemetry::Metrics::new(&[("region", region)])?;
        let leader = LeaderMetrics::create()?;
        leader.register(&telemetry)?;
        let raft_apply_duration = telemetry.register(Histogram::with_opts(
            HistogramOpts::new(
                "raft_apply_duration_seconds",
                "Time to apply one batch of committed Raft entries to the state",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?)?;
        Ok(Self {
            http: telemetry.http_layer()?,
            grpc: telemetry.grpc_layer()?,
            raft_leader_changes: telemetry.counter(
                "raft_leader_changes_total",
                "Leader changes this server has seen",
            )?,
            raft_apply_duration,
            leader,
            telemetry,
        })
    }

    /// Registers the scrape-time collector over `service` and `leader`.
    /// `committed` is the log store's commit index
    /// ([`crate::raft::log_store::LogStore::committed_index`]), `appended`
    /// its appended entries and bytes
    /// ([`crate::raft::log_store::LogStore::appended`]).
    pub fn install(
        &self,
        service: Service,
        leader: LeaderHandle,
        committed: Arc<AtomicU64>,
        appended: Arc<Appended>,
    ) -> Result<(), TelemetryError> {
        self.telemetry
            .register(ServerCollector::new(service, leader, committed, appended)?)?;
        Ok(())
    }

    /// Counts leader changes; wakes only when Raft's metrics change.
    pub async fn watch_leader(self, service: Service, mut shutdown: watch::Receiver<bool>) {
        let mut rx = service.raft.metrics();
        let mut last = rx.borrow().current_leader;
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            let now = rx.borrow().current_leader;
            if now.is_some() && now != last {
                self.raft_leader_changes.inc();
            }
            if now.is_some() {
                last = now;
            }
        }
    }
}

/// Status counts of one table, recounted only when the table changed.
#[derive(Default)]
struct Counted {
    index: Option<u64>,
    counts: BTreeMap<String, i64>,
}

impl Counted {
    fn refresh<'a>(
        &mut self,
        index: u64,
        statuses: impl FnOnce() -> Box<dyn Iterator<Item = &'a str> + 'a>,
    ) {
        if self.index == Some(index) {
            return;
        }
        self.counts.clear();
        for s in statuses() {
            *self.counts.entry(s.to_string()).or_default() += 1;
        }
        self.index = Some(index);
    }

    fn export(&self, gauge: &IntGaugeVec, always: &[&str]) {
        gauge.reset();
        for s in always {
            gauge.with_label_values(&[*s]).set(0);
        }
        for (s, n) in &self.counts {
            gauge.with_label_values(&[s.as_str()]).set(*n);
        }
    }
}

#[derive(Default)]
struct Cache {
    jobs: Counted,
    allocs: Counted,
    nodes: Counted,
    evals: Counted,
}

/// Computes the server's gauges when scraped (see the module docs).
#[derive(Clone)]
pub struct ServerCollector {
    service: Service,
    leader: LeaderHandle,
    committed: Arc<AtomicU64>,
    appended: Arc<Appended>,
    cache: Arc<Mutex<Cache>>,
    raft_term: IntGauge,
    raft_commit_index: IntGauge,
    raft_applied_index: IntGauge,
    raft_last_log_index: IntGauge,
    raft_is_leader: IntGauge,
    raft_known_leader: IntGauge,
    raft_voters: IntGauge,
    raft_last_contact: prometheus::Gauge,
    raft_replication_lag: IntGaugeVec,
    raft_appended_entries: IntCounter,
    raft_appended_bytes: IntCounter,
    broker: IntGaugeVec,
    heartbeats_active: IntGauge,
    jobs: IntGaugeVec,
    allocs: IntGaugeVec,
    nodes: IntGaugeVec,
    evals: IntGaugeVec,
}

impl ServerCollector {
    fn new(
        service: Service,
        leader: LeaderHandle,
        committed: Arc<AtomicU64>,
        appended: Arc<Appended>,
    ) -> Result<Self, prometheus::Error> {
        let g = IntGauge::new;
        let gv =
            |name: &str, help: &str, label: &str| IntGaugeVec::new(Opts::new(name, help), &[label]);
        Ok(Self {
            committed,
            appended,
            service,
            leader,
            cache: Arc::default(),
            raft_term: g("raft_term", "Current Raft term")?,
            raft_commit_index: g(
                "raft_commit_index",
                "Highest Raft index known to be committed",
            )?,
            raft_applied_index: g(
                "raft_applied_index",
                "Last Raft index applied to the state",
            )?,
            raft_last_log_index: g("raft_last_log_index", "Last Raft index in the local log")?,
            raft_is_leader: g(
                "raft_is_leader",
                "1 when this server is the region's leader",
            )?,
            raft_known_leader: g(
                "raft_known_leader",
                "1 when this server knows a leader with a quorum",
            )?,
            raft_voters: g("raft_voters", "Voters in the Raft configuration")?,
            raft_last_contact: prometheus::Gauge::new(
                "raft_last_contact_seconds",
                "Time since the leader was last heard from (0 on the leader)",
            )?,
            raft_replication_lag: IntGaugeVec::new(
                Opts::new(
                    "raft_replication_lag_entries",
                    "On the leader: log entries each peer is behind",
                ),
                &["peer"],
            )?,
            raft_appended_entries: IntCounter::new(
                "raft_log_appended_entries_total",
                "Raft log entries appended to this server's log",
            )?,
            raft_appended_bytes: IntCounter::new(
                "raft_log_appended_bytes_total",
                "Bytes of the Raft log entries appended to this server's log, as encoded",
            )?,
            broker: gv(
                "broker_evaluations",
                "Evaluations in the leader's broker by state (ready, unacked, pending, delayed, blocked, failed)",
                "state",
            )?,
            heartbeats_active: g(
                "heartbeat_active",
                "Client heartbeat timers the leader runs",
            )?,
            jobs: gv("state_jobs", "Jobs by status", "status")?,
            allocs: gv(
                "state_allocations",
                "Allocations by client status",
                "status",
            )?,
            nodes: gv("state_nodes", "Client nodes by status", "status")?,
            evals: gv("state_evaluations", "Evaluations by status", "status")?,
        })
    }

    fn parts(&self) -> [&dyn Collector; 17] {
        [
            &self.raft_term,
            &self.raft_commit_index,
            &self.raft_applied_index,
            &self.raft_last_log_index,
            &self.raft_is_leader,
            &self.raft_known_leader,
            &self.raft_voters,
            &self.raft_last_contact,
            &self.raft_replication_lag,
            &self.raft_appended_entries,
            &self.raft_appended_bytes,
            &self.broker,
            &self.heartbeats_active,
            &self.jobs,
            &self.allocs,
            &self.nodes,
            &self.evals,
        ]
    }

    fn refresh(&self) {
        let m = self.service.raft.metrics().borrow().clone();
        let is_leader = m.state == openraft::ServerState::Leader;
        self.raft_term.set(m.current_term as i64);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let last_log = m.last_log_index.unwrap_or(0);
        self.raft_applied_index.set(applied as i64);
        self.raft_last_log_index.set(last_log as i64);
        self.raft_commit_index
            .set(self.committed.load(Ordering::Relaxed).max(applied) as i64);
        self.raft_is_leader.set(i64::from(is_leader));
        self.raft_known_leader
            .set(i64::from(self.service.leader().is_some()));
        let membership = m.membership_config.membership();
        self.raft_voters.set(membership.voter_ids().count() as i64);
        self.raft_last_contact
            .set(self.service.last_contact_ms() as f64 / 1000.0);
        self.raft_replication_lag.reset();
        if let Some(repl) = &m.replication {
            for (id, matched) in repl {
                if *id == m.id {
                    continue;
                }
                let name = membership
                    .get_node(id)
                    .map(|n| n.name.clone())
                    .unwrap_or_else(|| id.to_string());
                let at = matched.map(|l| l.index).unwrap_or(0);
                self.raft_replication_lag
                    .with_label_values(&[name.as_str()])
                    .set(last_log.saturating_sub(at) as i64);
            }
        }

        // Counters that follow the log store's totals.
        for (counter, total) in [
            (&self.raft_appended_entries, &self.appended.entries),
            (&self.raft_appended_bytes, &self.appended.bytes),
        ] {
            let total = total.load(Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        }

        let stats = self.leader.broker.with(|b| b.stats());
        for (state, n) in [
            ("ready", stats.ready),
            ("unacked", stats.unacked),
            ("pending", stats.pending),
            ("delayed", stats.delayed),
            ("blocked", stats.blocked),
            ("failed", stats.failed),
        ] {
            self.broker.with_label_values(&[state]).set(n as i64);
        }
        self.heartbeats_active
            .set(self.leader.heartbeats.len() as i64);

        let t = self.service.store.snapshot();
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        count_tables(&t, &mut c);
        c.jobs.export(&self.jobs, JOB_STATUSES);
        c.allocs.export(&self.allocs, ALLOC_STATUSES);
        c.nodes.export(&self.nodes, NODE_STATUSES);
        c.evals.export(&self.evals, EVAL_STATUSES);
    }
}

fn count_tables(t: &Tables, c: &mut Cache) {
    c.jobs.refresh(t.table_index(table::JOBS), || {
        Box::new(t.jobs.values().map(|j| j.status.as_str()))
    });
    c.allocs.refresh(t.table_index(table::ALLOCS), || {
        Box::new(t.allocs.values().map(|a| a.client_status.as_str()))
    });
    c.nodes.refresh(t.table_index(table::NODES), || {
        Box::new(t.nodes.values().map(|n| n.status.as_str()))
    });
    c.evals.refresh(t.table_index(table::EVALS), || {
        Box::new(t.evals.values().map(|e| e.status.as_str()))
    });
}

impl Collector for ServerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.parts().into_iter().flat_map(|c| c.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_recounted_only_when_the_table_changed() {
        let mut c = Counted::default();
        let rows = ["running", "running", "failed"];
        c.refresh(5, || Box::new(rows.iter().copied()));
        assert_eq!(c.counts.get("running"), Some(&2));
        // Same index: the (different) rows are not even looked at.
        c.refresh(5, || panic!("recounted an unchanged table"));
        assert_eq!(c.counts.get("failed"), Some(&1));
        // New index: recounted.
        let rows = ["complete"];
        c.refresh(6, || Box::new(rows.iter().copied()));
        assert_eq!(c.counts.len(), 1);
        assert_eq!(c.counts.get("complete"), Some(&1));

        let g = IntGaugeVec::new(Opts::new("t", "t"), &["status"]).unwrap();
        c.export(&g, &["running", "complete"]);
        assert_eq!(g.with_label_values(&["running"]).get(), 0);
        assert_eq!(g.with_label_values(&["complete"]).get(), 1);
    }
}
