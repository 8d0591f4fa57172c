//! The pool's Prometheus metrics.
//!
//! Names carry no `atoll_` prefix: the process registry adds it (see
//! `Registry::new_custom(Some("atoll"), ..)` in the region server), so they
//! are exported as `atoll_gossip_*`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

/// Why a received packet was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drop {
    /// No installed key opens it (wrong key, tampered, not ours).
    Decrypt,
    /// Opened, but the content does not decode.
    Decode,
    /// Larger than `max_packet_size`.
    TooLarge,
}

impl Drop {
    fn label(self) -> &'static str {
        match self {
            Drop::Decrypt => "decrypt",
            Drop::Decode => "decode",
            Drop::TooLarge => "too_large",
        }
    }
}

/// Counters of one pool, as [`super::GossipPool::stats`] reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStats {
    /// Datagrams received (all, dropped ones included).
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// UDP payload bytes received.
    pub bytes_in: u64,
    /// UDP payload bytes sent.
    pub bytes_out: u64,
    /// Packets no installed key opened.
    pub dropped_decrypt: u64,
    /// Packets that opened but did not decode.
    pub dropped_decode: u64,
    /// Packets over `max_packet_size`.
    pub dropped_too_large: u64,
    /// Probes (pings) this member sent.
    pub probes_sent: u64,
    /// Members this member suspected after a failed probe.
    pub suspicions: u64,
    /// Members seen declared failed (not counting graceful leaves).
    pub failures_seen: u64,
}

#[derive(Clone)]
pub(crate) struct GossipMetrics {
    members: IntGaugeVec,
    pub(crate) probes: IntCounter,
    pub(crate) suspicions: IntCounter,
    pub(crate) failures: IntCounter,
    pub(crate) packets_in: IntCounter,
    pub(crate) packets_out: IntCounter,
    pub(crate) bytes_in: IntCounter,
    pub(crate) bytes_out: IntCounter,
    dropped: IntCounterVec,
    pub(crate) updates_backlog: IntGauge,
    pub(crate) broadcast_backlog: IntGauge,
}

impl GossipMetrics {
    /// Create the metrics, registered into `registry` when given.
    pub(crate) fn new(registry: Option<&Registry>) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let m = Self {
            members: IntGaugeVec::new(
                Opts::new("gossip_members", "Gossip pool members by status"),
                &["status"],
            )?,
            probes: counter("gossip_probes_sent_total", "SWIM probes sent")?,
            suspicions: counter(
                "gossip_suspicions_total",
                "Members suspected after a failed probe",
            )?,
            failures: counter(
                "gossip_member_failures_total",
                "Members seen declared failed (not graceful leaves)",
            )?,
            packets_in: counter("gossip_packets_received_total", "Gossip datagrams received")?,
            packets_out: counter("gossip_packets_sent_total", "Gossip datagrams sent")?,
            bytes_in: counter("gossip_bytes_received_total", "Gossip bytes received")?,
            bytes_out: counter("gossip_bytes_sent_total", "Gossip bytes sent")?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "gossip_packets_dropped_total",
                    "Gossip datagrams dropped, by reason",
                ),
                &["reason"],
            )?,
            updates_backlog: IntGauge::new(
                "gossip_updates_backlog",
                "Membership updates waiting to be disseminated",
            )?,
            broadcast_backlog: IntGauge::new(
                "gossip_metadata_backlog",
                "Metadata broadcasts waiting to be disseminated",
            )?,
        };
        for status in ["alive", "failed", "left"] {
            m.members.with_label_values(&[status]).set(0);
        }
        for reason in [Drop::Decrypt, Drop::Decode, Drop::TooLarge] {
            m.dropped.with_label_values(&[reason.label()]).reset();
        }
        if let Some(r) = registry {
            r.register(Box::new(m.members.clone()))?;
            r.register(Box::new(m.probes.clone()))?;
            r.register(Box::new(m.suspicions.clone()))?;
            r.register(Box::new(m.failures.clone()))?;
            r.register(Box::new(m.packets_in.clone()))?;
            r.register(Box::new(m.packets_out.clone()))?;
            r.register(Box::new(m.bytes_in.clone()))?;
            r.register(Box::new(m.bytes_out.clone()))?;
            r.register(Box::new(m.dropped.clone()))?;
            r.register(Box::new(m.updates_backlog.clone()))?;
            r.register(Box::new(m.broadcast_backlog.clone()))?;
        }
        Ok(m)
    }

    pub(crate) fn dropped(&self, reason: Drop) {
        self.dropped.with_label_values(&[reason.label()]).inc();
    }

    pub(crate) fn set_members(&self, alive: usize, failed: usize, left: usize) {
        self.members.with_label_values(&["alive"]).set(alive as i64);
        self.members
            .with_label_values(&["failed"])
            .set(failed as i64);
        self.members.with_label_values(&["left"]).set(left as i64);
    }

    pub(crate) fn stats(&self) -> GossipStats {
        let dropped = |r: Drop| self.dropped.with_label_values(&[r.label()]).get();
        GossipStats {
            packets_in: self.packets_in.get(),
            packets_out: self.packets_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            dropped_decrypt: dropped(Drop::Decrypt),
            dropped_decode: dropped(Drop::Decode),
            dropped_too_large: dropped(Drop::TooLarge),
            probes_sent: self.probes.get(),
            suspicions: self.suspicions.get(),
            failures_seen: self.failures.get(),
        }
    }
}
