//! Writes applied at most once.
//!
//! A server that accepts a write gives it a [`RequestId`] before its first
//! attempt and keeps it across retries. A retry is needed when the answer
//! of an attempt is lost (the leader it went to was cut off or died): the
//! attempt may still have been committed, by a later leader that had
//! received its entry. Both copies then reach the log, and without this
//! table the second would be applied again, after writes that followed the
//! first (a lost delete, a value that comes back).
//!
//! The table remembers the answer of every request applied within
//! [`REMEMBER_NS`] of the newest request of the same origin server (times
//! are that server's clock, so clock skew between servers does not matter,
//! and the table is the same on every server: it is derived from the log
//! alone). A copy of a remembered request is not applied again: it gets
//! the first copy's answer. Retries happen within the write deadline
//! (seconds), far inside the window.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use super::CommandResponse;

/// How long (ns, on the origin server's clock) an applied request is
/// remembered.
pub const REMEMBER_NS: i64 = 60_000_000_000;

/// Identifies one client request across the attempts to commit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// Unique id (a UUID).
    pub id: String,
    /// The server that accepted the request (its Raft node id).
    pub origin: u64,
    /// When it accepted it: ns since the epoch, on its clock.
    pub at: i64,
}

impl RequestId {
    /// A new request accepted now by server `origin`.
    pub fn new(origin: u64) -> Self {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            origin,
            at,
        }
    }
}

/// An applied request, remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedRequest {
    /// The request.
    pub request: RequestId,
    /// The Raft index it was applied at.
    pub raft_index: u64,
    /// Its answer.
    pub response: CommandResponse,
}

/// The requests applied recently.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    by_id: OrdMap<String, Arc<AppliedRequest>>,
    /// (origin, at, id), oldest first per origin, to forget old ones.
    by_time: OrdMap<(u64, i64, String), ()>,
    /// The newest `at` seen per origin.
    newest: OrdMap<u64, i64>,
}

impl Requests {
    /// The remembered answer to `id`, if it was applied.
    pub fn get(&self, id: &str) -> Option<&AppliedRequest> {
        self.by_id.get(id).map(|a| &**a)
    }

    /// How many requests are remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every remembered request (for snapshots).
    pub fn iter(&self) -> impl Iterator<Item = &AppliedRequest> {
        self.by_id.values().map(|a| &**a)
    }

    /// Remember an applied request, and forget those of its origin that
    /// are older than the window.
    pub fn remember(&mut self, applied: AppliedRequest) {
        let origin = applied.request.origin;
        let at = applied.request.at;
        let newest = self
            .newest
            .get(&origin)
            .copied()
            .unwrap_or(i64::MIN)
            .max(at);
        self.newest.insert(origin, newest);
        self.by_time
            .insert((origin, at, applied.request.id.clone()), ());
        self.by_id
            .insert(applied.request.id.clone(), Arc::new(applied));
        let horizon = newest.saturating_sub(REMEMBER_NS);
        while let Some((o, t, id)) = self
            .by_time
            .range((origin, i64::MIN, String::new())..)
            .next()
            .map(|(k, ())| k.clone())
        {
            if o != origin || t >= horizon {
                break;
            }
            self.by_time.remove(&(o, t, id.clone()));
            self.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, origin: u64, at_s: i64) -> AppliedRequest {
        AppliedRequest {
            request: RequestId {
                id: id.into(),
                origin,
                at: at_s * 1_000_000_000,
            },
            raft_index: 1,
            response: CommandResponse::Ok,
        }
    }

    #[test]
    fn forgets_only_old_requests_of_the_same_origin() {
        let mut r = Requests::default();
        r.remember(req("a", 1, 0));
        r.remember(req("b", 2, 0));
        r.remember(req("c", 1, 30));
        assert!(r.get("a").is_some() && r.get("b").is_some() && r.get("c").is_some());
        r.remember(req("d", 1, 61));
        // a (origin 1, 61 s older than its newest) is forgotten; b belongs
        // to another origin whose clock has not moved.
        assert!(r.get("a").is_none());
        assert!(r.get("b").is_some());
        assert!(r.get("c").is_some());
        assert_eq!(r.len(), 3);
        // A request stamped earlier than the newest (a slow one) is kept
        // while inside the window.
        r.remember(req("e", 1, 10));
        assert!(r.get("e").is_some());
        r.remember(req("f", 1, 95));
        assert!(r.get("c").is_none() && r.get("e").is_none());
        assert!(r.get("d").is_some() && r.get("f").is_some());
    }
}
