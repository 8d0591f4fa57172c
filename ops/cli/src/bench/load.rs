//! The closed-loop workload: N clients, each a sequential loop of writes, for
//! a fixed time; per-request latency of every successful write.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One write: client index and sequence number in, `Err(description)` when
/// the write was not acknowledged as committed.
pub type WriteFn = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What one system did at one concurrency.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// System name.
    pub system: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Acknowledged writes in the measured window.
    pub ok: u64,
    /// Failed writes in the measured window.
    pub errors: u64,
    /// Acknowledged writes, warm-up included.
    pub acked_total: u64,
    /// From the start of the window to the last acknowledgement.
    pub elapsed: Duration,
    /// Latency of every acknowledged write, sorted.
    pub latencies: Vec<Duration>,
    /// Distinct error messages (truncated) with their counts.
    pub error_kinds: BTreeMap<String, u64>,
}

impl LoadResult {
    /// Acknowledged writes per second.
    pub fn writes_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency percentile (0..=100) in milliseconds (nearest rank).
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|d| d.as_secs_f64() * 1e3)
    }
}

/// An error with its sources, `outer: inner: root` (reqwest's own message
/// alone rarely says what went wrong).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Default)]
struct ClientStats {
    ok: u64,
    acked_total: u64,
    errors: u64,
    last_ack: Option<Instant>,
    latencies: Vec<Duration>,
    error_kinds: BTreeMap<String, u64>,
}

/// Run `clients` loops of `write`: unmeasured for `warmup`, then measured for
/// `duration` (a write counts when it starts inside the window; those in
/// flight at its end are awaited). Bounded: gives up 30 s past the window.
pub async fn run(
    system: &'static str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    write: WriteFn,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let measure_until = measure_from + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let write = write.clone();
            tokio::spawn(async move {
                let mut stats = ClientStats::default();
                let mut seq = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= measure_until {
                        break;
                    }
                    let r = write(client, seq).await;
                    let t1 = Instant::now();
                    seq += 1;
                    let measured = t0 >= measure_from;
                    if r.is_ok() {
                        stats.acked_total += 1;
                    }
                    match r {
                        Ok(()) if measured => {
                            stats.ok += 1;
                            stats.last_ack = Some(t1);
                            stats.latencies.push(t1 - t0);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            if measured {
                                stats.errors += 1;
                            }
                            let mut msg = e;
                            if msg.len() > 200 {
                                let mut cut = 200;
                                while !msg.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                msg.truncate(cut);
                            }
                            *stats.error_kinds.entry(msg).or_default() += 1;
                            // Do not spin against a system that is failing.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                stats
            })
        })
        .collect();

    let deadline = tokio::time::Instant::from_std(measure_until + Duration::from_secs(30));
    let mut result = LoadResult {
        system,
        clients,
        ok: 0,
        errors: 0,
        acked_total: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        error_kinds: BTreeMap::new(),
    };
    let mut last_ack = None;
    for task in tasks {
        let stats = match tokio::time::timeout_at(deadline, task).await {
            Ok(joined) => joined?,
            Err(_) => {
                anyhow::bail!("{system}: clients still running 30 s after the measured window")
            }
        };
        result.ok += stats.ok;
        result.errors += stats.errors;
        result.acked_total += stats.acked_total;
        result.latencies.extend(stats.latencies);
        for (k, v) in stats.error_kinds {
            *result.error_kinds.entry(k).or_default() += v;
        }
        last_ack = last_ack.max(stats.last_ack);
    }
    // The window lasts at least `duration`, longer when writes it started
    // finished after it.
    result.elapsed = last_ack
        .map(|t| t.saturating_duration_since(measure_from))
        .unwrap_or_default()
        .max(duration);
    result.latencies.sort_unstable();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[tokio::test]
    async fn counts_only_the_window() {
        let write: WriteFn = Arc::new(|_, seq| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if seq % 10 == 9 {
                    Err("every tenth fails".to_string())
                } else {
                    Ok(())
                }
            })
        });
        let r = run(
            "test",
            4,
            Duration::from_millis(100),
            Duration::from_millis(300),
            write,
        )
        .await
        .unwrap();
        assert!(r.ok > 0);
        assert!(r.errors > 0);
        assert_eq!(r.latencies.len() as u64, r.ok);
        assert!(r.acked_total > r.ok);
        assert!(r.elapsed >= Duration::from_millis(300));
        assert!(r.elapsed < Duration::from_millis(400));
        assert_eq!(r.error_kinds.len(), 1);
    }
}
