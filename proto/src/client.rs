//! JSON bodies of `ClientService` (see `proto/atoll.proto`): what client
//! agents and servers exchange. Both sides use these types, so the wire
//! format has one definition.

use serde::{Deserialize, Serialize};

use crate::model::Allocation;

/// The answer to Register and Heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeUpdateResponse {
    /// Heartbeat within this many nanoseconds.
    #[serde(rename = "HeartbeatTTL")]
    pub heartbeat_ttl: i64,
    /// RPC addresses of the region's voting servers.
    pub servers: Vec<String>,
    /// The leader's RPC address, when known.
    #[serde(rename = "LeaderRPCAddr")]
    pub leader_rpc_addr: String,
    /// Raft index of the write, if one was made.
    pub index: u64,
}

/// A node's credentials (and, for WatchAllocations, where to resume).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeAuth {
    /// Node id.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Secret id given at registration.
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    /// For WatchAllocations: send changes after this index.
    pub index: u64,
}

/// A batch of client allocation updates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocUpdateRequest {
    /// Node id.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Secret id.
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    /// Allocations with their client-owned fields.
    pub allocs: Vec<Allocation>,
}

/// Changed allocations of a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocWatchEvent {
    /// Allocations of the node changed after the previous event.
    pub allocs: Vec<Allocation>,
    /// The allocations table index this event reflects.
    pub index: u64,
}
