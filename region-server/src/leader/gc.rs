//! Garbage collection on the leader's schedule (the job GC of Nomad's core
//! scheduler): every `interval`, jobs that are over (stopped, or batch jobs
//! such as periodic and dispatched children whose work is done) and have
//! seen no activity for `job_threshold` are removed through Raft with their
//! versions, summaries, terminal evaluations and allocations.
//! `PUT /v1/system/gc` does the same at once, whatever the age.

use std::time::Duration;

use tokio::sync::watch;

use super::now_ns;
use crate::service::Service;
use crate::state::Command;

/// When the leader collects garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcConfig {
    /// How often the leader looks (Nomad's `job_gc_interval`, 5 minutes).
    pub interval: Duration,
    /// How long a dead job is kept after its last activity (Nomad's
    /// `job_gc_threshold`, 4 hours).
    pub job_threshold: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5 * 60),
            job_threshold: Duration::from_secs(4 * 3600),
        }
    }
}

/// The leader's GC loop, until `stop`.
pub async fn run(service: Service, cfg: GcConfig, mut stop: watch::Receiver<bool>) {
    let interval = cfg.interval.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let threshold = i64::try_from(cfg.job_threshold.as_nanos()).unwrap_or(i64::MAX);
        let job_before = now_ns().saturating_sub(threshold);
        let dead = service.store.snapshot().dead_jobs(Some(job_before)).len();
        if dead == 0 {
            continue;
        }
        match service.write(Command::GcBefore { job_before }).await {
            Ok(_) => tracing::info!(jobs = dead, "garbage collection: removed dead jobs"),
            Err(e) => tracing::warn!(error = %e, "garbage collection"),
        }
    }
}
