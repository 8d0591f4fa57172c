//! Raft for one region: openraft's type configuration, the sqlite log store,
//! the state machine with sqlite snapshot files, and the mTLS gRPC network.

use std::io::Cursor;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{Command, CommandResponse};

pub mod log_store;
pub mod network;
pub mod proposer;
pub mod state_machine;

/// Where a server of the region can be reached; stored in Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNode {
    /// `<node>.<region>`-style server name.
    pub name: String,
    /// gRPC (Raft and forwarding) address, `host:port`.
    pub rpc_addr: String,
    /// HTTP API address, `host:port`.
    pub http_addr: String,
}

/// What applying one Raft entry answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryResponse {
    /// The response of the entry's command (`Ok` for blank and membership
    /// entries).
    One(CommandResponse),
    /// One response per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandResponse>),
}

openraft::declare_raft_types!(
    /// Atoll's Raft types: commands are state-store writes.
    pub TypeConfig:
        D = Command,
        R = EntryResponse,
        NodeId = u64,
        Node = ServerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The region's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// Node id within the region.
pub type NodeId = u64;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Errors of storage calls.
pub type StorageError = openraft::StorageError<NodeId>;

/// Raft timing and log retention, tuned for servers of one region.
///
/// openraft 0.9 gives the leader a lease equal to `election_timeout_max`: a
/// follower that heard from a leader within the lease refuses to vote for
/// anyone else, so a rejoining or briefly partitioned server cannot depose a
/// healthy leader. A follower that knew a leader therefore starts an election
/// only after `lease + random(min, max)` without heartbeats. The defaults
/// (200-400 ms) make that window 600-800 ms (plus up to one 150 ms tick), so
/// writes resume within about a second of losing the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTuning {
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, milliseconds; also
    /// the leader lease.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries since the last one.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot (for slow followers).
    pub trailing_logs: u64,
    /// MiB (of their encoding) of the newest log entries kept decoded in
    /// memory; older ones are read from sqlite when needed. 0 keeps only
    /// the last entry and those not yet on disk.
    pub log_cache_mb: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_threshold: 8192,
            trailing_logs: 2048,
            log_cache_mb: 32,
        }
    }
}

impl RaftTuning {
    /// openraft's configuration from these settings.
    pub fn to_config(&self, region: &str) -> Result<openraft::Config, Box<openraft::ConfigError>> {
        let cfg = openraft::Config {
            cluster_name: format!("atoll-{region}"),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: 2_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_threshold),
            max_in_snapshot_log_to_keep: self.trailing_logs,
            snapshot_max_chunk_size: 1024 * 1024,
            // openraft 0.9 gives every AppendEntries the heartbeat
            // interval (100 ms) to complete, catch-up batches included: a
            // follower that restarted behind must receive, persist (fsync)
            // and answer a batch within it, or the batch is dropped and
            // resent forever. 512 entries of plans and jobs did not fit on
            // a loaded machine (the fault suite's kill -9 scenario stalled
            // its region); small batches make progress each round.
            max_payload_entries: 32,
            ..Default::default()
        };
        cfg.validate().map_err(Box::new)
    }

    /// Bytes of encoded entries the log keeps in memory.
    pub fn log_cache_bytes(&self) -> usize {
        usize::try_from(self.log_cache_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }

    /// The longest a follower that knew a leader waits before it starts an
    /// election: the lease plus the largest election timeout.
    pub fn failover_window(&self) -> Duration {
        Duration::from_millis(2 * self.election_timeout_max_ms)
    }
}

#[cfg(test)]
mod tests;
