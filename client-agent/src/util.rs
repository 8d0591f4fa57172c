//! Small helpers: clocks, Go duration strings, backoff, and a registry of
//! spawned tasks so an agent can stop everything it started.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::task::{AbortHandle, JoinHandle};

/// Now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Parses a Go duration string (`"1h2m3.5s"`, `"300ms"`, `"10us"`, `"5"` is
/// not accepted unless it is `"0"`). Negative durations are refused.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: f64 = 0.0;
    let mut any = false;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        any = true;
    }
    if !any || !total.is_finite() {
        return None;
    }
    Some(Duration::from_nanos(total.round() as u64))
}

/// A duration from a task config value: a Go duration string or an integer
/// number of nanoseconds.
pub fn duration_value(v: &Value) -> Option<Duration> {
    match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => n.as_u64().map(Duration::from_nanos).or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0)
                .map(|f| Duration::from_nanos(f as u64))
        }),
        _ => None,
    }
}

/// A duration in nanoseconds (the model's unit) as a `Duration`; negative
/// values are zero.
pub fn ns(nanos: i64) -> Duration {
    Duration::from_nanos(nanos.max(0) as u64)
}

/// Exponential backoff with a cap and full jitter on the upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `base`, doubles up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            current: base,
        }
    }

    /// The next wait (between half and all of the current step), then doubles
    /// the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the base step after a success.
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

/// Every task an agent spawned, so that stopping the agent can abort them all
/// (processes started by drivers are not touched by this).
#[derive(Default)]
pub struct Tasks {
    handles: Mutex<(Vec<AbortHandle>, usize)>,
}

impl Tasks {
    /// Spawns `fut` and remembers it.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(fut);
        let mut g = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        g.0.push(handle.abort_handle());
        if g.0.len() > 64 && g.0.len() >= g.1 * 2 {
            g.0.retain(|h| !h.is_finished());
            g.1 = g.0.len().max(32);
        }
        handle
    }

    /// Aborts every remembered task.
    pub fn abort_all(&self) {
        let handles = {
            let mut g = self.handles.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut g.0)
        };
        for h in handles {
            h.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// Locks a std mutex, ignoring poisoning (state is kept consistent by the
/// callers; a panic elsewhere must not cascade).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(
            parse_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("-5s"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(
            duration_value(&serde_json::json!(1_500_000_000u64)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            duration_value(&serde_json::json!("2s")),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn backoff_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
