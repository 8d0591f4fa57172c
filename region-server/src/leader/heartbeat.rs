//! Node heartbeat timers, kept only by the leader (Nomad's heartbeat.go is
//! the model). The TTL a client is given grows with the number of nodes so
//! heartbeats never swamp the leader: `max(min_ttl, nodes / max_per_second)`
//! plus a random stagger of up to the same again; a node is marked down only
//! after its TTL plus a grace period. A new leader first gives every node a
//! fresh TTL, so nothing is marked down for a heartbeat sent to the old one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Heartbeat settings.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// Smallest TTL handed to a client.
    pub min_ttl: Duration,
    /// Heartbeats per second the leader is willing to take.
    pub max_per_second: f64,
    /// Added to the TTL before a node is marked down.
    pub grace: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(10),
            max_per_second: 50.0,
            grace: Duration::from_secs(10),
        }
    }
}

/// The leader's timers: node id -> when it is considered down.
#[derive(Clone, Default)]
pub struct Heartbeats {
    deadlines: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Heartbeats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TTL for a heartbeat now, and reset the node's timer to it plus grace.
    pub fn reset(&self, cfg: &HeartbeatConfig, node_id: &str, stagger: f64) -> Duration {
        let mut map = self.lock();
        let ttl = ttl_for(cfg, map.len().max(1), stagger);
        map.insert(node_id.to_string(), Instant::now() + ttl + cfg.grace);
        ttl
    }

    /// Give each of `nodes` a fresh timer (a new leader does this first).
    pub fn reset_all(&self, cfg: &HeartbeatConfig, nodes: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        map.clear();
        let nodes: Vec<String> = nodes.into_iter().collect();
        let ttl = ttl_for(cfg, nodes.len().max(1), 1.0);
        for n in nodes {
            map.insert(n, Instant::now() + ttl + cfg.grace);
        }
    }

    /// Remove and return the nodes whose timers expired.
    pub fn take_expired(&self) -> Vec<String> {
        let now = Instant::now();
        let mut map = self.lock();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &expired {
            map.remove(n);
        }
        expired
    }

    /// Whether `node_id` has a timer.
    pub fn tracks(&self, node_id: &str) -> bool {
        self.lock().contains_key(node_id)
    }

    /// Stop tracking a node.
    pub fn remove(&self, node_id: &str) {
        self.lock().remove(node_id);
    }

    /// Forget every timer (leadership lost).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Nodes being tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The TTL for `nodes` nodes; `stagger` in [0, 1] adds up to the TTL again.
pub fn ttl_for(cfg: &HeartbeatConfig, nodes: usize, stagger: f64) -> Duration {
    let base = cfg.min_ttl.max(Duration::from_secs_f64(
        nodes as f64 / cfg.max_per_second.max(0.001),
    ));
    base + base.mul_f64(stagger.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_grows_with_nodes() {
        let cfg = HeartbeatConfig::default();
        assert_eq!(ttl_for(&cfg, 10, 0.0), Duration::from_secs(10));
        assert_eq!(ttl_for(&cfg, 5_000, 0.0), Duration::from_secs(100));
        assert_eq!(ttl_for(&cfg, 10, 1.0), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_after_ttl_and_grace() {
        let cfg = HeartbeatConfig {
            min_ttl: Duration::from_secs(1),
            max_per_second: 50.0,
            grace: Duration::from_secs(1),
        };
        let hb = Heartbeats::default();
        hb.reset(&cfg, "n1", 0.0);
        tokio::time::advance(Duration::from_millis(1_900)).await;
        assert!(hb.take_expired().is_empty());
        hb.reset(&cfg, "n1", 0.0);
        tokio::time::advance(Duration::from_millis(1_900)).await;
        assert!(
            hb.take_expired().is_empty(),
            "the heartbeat renewed the timer"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(hb.take_expired(), vec!["n1".to_string()]);
        assert!(hb.is_empty());
    }
}
