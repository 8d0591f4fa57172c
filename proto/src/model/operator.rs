//! Operator settings kept in a region's state: the scheduler configuration
//! (`/v1/operator/scheduler/configuration`) and autopilot's
//! (`/v1/operator/autopilot/configuration`), and autopilot's health report.

use serde::{Deserialize, Serialize};

use super::de::{null_default, null_default_vec};

/// Bin-packing: fill nodes up (the default).
pub const SCHEDULER_ALGORITHM_BINPACK: &str = "binpack";
/// Spread: prefer the emptiest nodes.
pub const SCHEDULER_ALGORITHM_SPREAD: &str = "spread";

/// Nomad's `SchedulerConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SchedulerConfiguration {
    /// `binpack` or `spread`.
    #[serde(deserialize_with = "null_default")]
    pub scheduler_algorithm: String,
    /// Which schedulers may preempt lower-priority allocations.
    #[serde(deserialize_with = "null_default")]
    pub preemption_config: PreemptionConfig,
    /// Tasks may use more memory than reserved, up to `MemoryMaxMB`.
    #[serde(deserialize_with = "null_default")]
    pub memory_oversubscription_enabled: bool,
    /// Refuse job registrations (not dispatches or periodic launches).
    #[serde(deserialize_with = "null_default")]
    pub reject_job_registration: bool,
    /// Stop handing evaluations to the schedulers.
    #[serde(deserialize_with = "null_default")]
    pub pause_eval_broker: bool,
    /// Raft index of the first write.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the last write.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

impl Default for SchedulerConfiguration {
    /// Nomad's defaults: binpack, preemption for system jobs only.
    fn default() -> Self {
        Self {
            scheduler_algorithm: SCHEDULER_ALGORITHM_BINPACK.to_string(),
            preemption_config: PreemptionConfig {
                system_scheduler_enabled: true,
                ..PreemptionConfig::default()
            },
            memory_oversubscription_enabled: false,
            reject_job_registration: false,
            pause_eval_broker: false,
            create_index: 0,
            modify_index: 0,
        }
    }
}

impl SchedulerConfiguration {
    /// Fill an empty algorithm with the default.
    pub fn canonicalize(&mut self) {
        if self.scheduler_algorithm.is_empty() {
            self.scheduler_algorithm = SCHEDULER_ALGORITHM_BINPACK.to_string();
        }
    }

    /// The problems of the configuration, with their field names.
    pub fn validate(&self) -> Result<(), String> {
        if ![SCHEDULER_ALGORITHM_BINPACK, SCHEDULER_ALGORITHM_SPREAD]
            .contains(&self.scheduler_algorithm.as_str())
        {
            return Err(format!(
                "SchedulerAlgorithm: invalid scheduler algorithm {:?} (binpack or spread)",
                self.scheduler_algorithm
            ));
        }
        Ok(())
    }
}

/// Which schedulers may preempt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PreemptionConfig {
    /// System jobs may preempt.
    #[serde(deserialize_with = "null_default")]
    pub system_scheduler_enabled: bool,
    /// Sysbatch jobs may preempt.
    #[serde(deserialize_with = "null_default")]
    pub sys_batch_scheduler_enabled: bool,
    /// Batch jobs may preempt.
    #[serde(deserialize_with = "null_default")]
    pub batch_scheduler_enabled: bool,
    /// Service jobs may preempt.
    #[serde(deserialize_with = "null_default")]
    pub service_scheduler_enabled: bool,
}

/// Nomad's autopilot configuration. Durations are Go duration strings in
/// Nomad's JSON (`"200ms"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AutopilotConfiguration {
    /// Remove failed servers when a replacement joins.
    #[serde(deserialize_with = "null_default")]
    pub cleanup_dead_servers: bool,
    /// A follower is unhealthy after this long without contact.
    #[serde(deserialize_with = "null_default")]
    pub last_contact_threshold: String,
    /// A follower is unhealthy when this many entries behind.
    #[serde(deserialize_with = "null_default")]
    pub max_trailing_logs: u64,
    /// Fewest voters kept when removing dead servers.
    #[serde(deserialize_with = "null_default")]
    pub min_quorum: u64,
    /// How long a server must be healthy to be stable.
    #[serde(deserialize_with = "null_default")]
    pub server_stabilization_time: String,
    /// Enterprise settings, kept for shape.
    #[serde(deserialize_with = "null_default")]
    pub enable_redundancy_zones: bool,
    /// Enterprise settings, kept for shape.
    #[serde(deserialize_with = "null_default")]
    pub disable_upgrade_migration: bool,
    /// Enterprise settings, kept for shape.
    #[serde(deserialize_with = "null_default")]
    pub enable_custom_upgrades: bool,
    /// Raft index of the first write.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the last write.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

impl Default for AutopilotConfiguration {
    /// Nomad's defaults.
    fn default() -> Self {
        Self {
            cleanup_dead_servers: true,
            last_contact_threshold: "200ms".to_string(),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: "10s".to_string(),
            enable_redundancy_zones: false,
            disable_upgrade_migration: false,
            enable_custom_upgrades: false,
            create_index: 0,
            modify_index: 0,
        }
    }
}

/// Nomad's `OperatorHealthReply`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct OperatorHealthReply {
    /// Every server is healthy.
    #[serde(deserialize_with = "null_default")]
    pub healthy: bool,
    /// Healthy voters that may fail without losing quorum.
    #[serde(deserialize_with = "null_default")]
    pub failure_tolerance: i64,
    /// One entry per Raft server.
    #[serde(deserialize_with = "null_default_vec")]
    pub servers: Vec<ServerHealth>,
}

/// One server's health as autopilot sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServerHealth {
    /// Raft id.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Server name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// RPC address.
    #[serde(deserialize_with = "null_default")]
    pub address: String,
    /// `alive`, `failed`, `left` or `none` (gossip).
    #[serde(deserialize_with = "null_default")]
    pub serf_status: String,
    /// Build version.
    #[serde(deserialize_with = "null_default")]
    pub version: String,
    /// It is the leader.
    #[serde(deserialize_with = "null_default")]
    pub leader: bool,
    /// Time since its last contact with the leader (Go duration string).
    #[serde(deserialize_with = "null_default")]
    pub last_contact: String,
    /// Term of its last log entry.
    #[serde(deserialize_with = "null_default")]
    pub last_term: u64,
    /// Index of its last log entry.
    #[serde(deserialize_with = "null_default")]
    pub last_index: u64,
    /// It is healthy.
    #[serde(deserialize_with = "null_default")]
    pub healthy: bool,
    /// It is a voter.
    #[serde(deserialize_with = "null_default")]
    pub voter: bool,
    /// Since when its health has not changed (RFC 3339).
    #[serde(deserialize_with = "null_default")]
    pub stable_since: String,
}
