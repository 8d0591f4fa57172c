//! What only the leader runs.

pub mod broker;
pub mod heartbeat;

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in Unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
