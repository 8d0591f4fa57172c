//! Client nodes: what they offer, their drivers and status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::constants::{
    NODE_ATTR_ADDRESS, NODE_ATTR_VERSION, NODE_SCHEDULING_ELIGIBLE, NODE_STATUS_READY,
};
use super::de::{null_default, null_default_map, null_default_vec};
use super::task::NetworkResource;

/// A client node, as `GET /v1/node/:id` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    /// Identifier (a UUID).
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Secret the node authenticates with; never shown by the HTTP API.
    #[serde(rename = "SecretID", deserialize_with = "null_default")]
    pub secret_id: String,
    /// Datacenter of the node.
    #[serde(deserialize_with = "null_default")]
    pub datacenter: String,
    /// Name (usually the hostname).
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// `host:port` of the node's HTTP API.
    #[serde(rename = "HTTPAddr", deserialize_with = "null_default")]
    pub http_addr: String,
    /// Whether the node's HTTP API uses TLS.
    #[serde(rename = "TLSEnabled", deserialize_with = "null_default")]
    pub tls_enabled: bool,
    /// Fingerprinted attributes, e.g. `kernel.name`, `cpu.arch`.
    #[serde(deserialize_with = "null_default_map")]
    pub attributes: BTreeMap<String, String>,
    /// What the node offers.
    #[serde(deserialize_with = "null_default")]
    pub node_resources: NodeResources,
    /// What the node keeps for itself.
    #[serde(deserialize_with = "null_default")]
    pub reserved_resources: NodeReservedResources,
    /// Links to external systems, e.g. `consul`.
    #[serde(deserialize_with = "null_default_map")]
    pub links: BTreeMap<String, String>,
    /// Operator metadata.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
    /// Operator-chosen class of the node.
    #[serde(deserialize_with = "null_default")]
    pub node_class: String,
    /// Node pool of the node.
    #[serde(deserialize_with = "null_default")]
    pub node_pool: String,
    /// Hash of the node's scheduling-relevant attributes.
    #[serde(deserialize_with = "null_default")]
    pub computed_class: String,
    /// Whether the node is draining.
    #[serde(deserialize_with = "null_default")]
    pub drain: bool,
    /// The drain in progress, if any.
    pub drain_strategy: Option<DrainStrategy>,
    /// How the node's last drain ended.
    pub last_drain: Option<DrainMetadata>,
    /// `eligible` or `ineligible`.
    #[serde(deserialize_with = "null_default")]
    pub scheduling_eligibility: String,
    /// `initializing`, `ready`, `down` or `disconnected`.
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Why the node has its status.
    #[serde(deserialize_with = "null_default")]
    pub status_description: String,
    /// When the status last changed, in Unix seconds.
    #[serde(deserialize_with = "null_default")]
    pub status_updated_at: i64,
    /// Recent node events.
    #[serde(deserialize_with = "null_default_vec")]
    pub events: Vec<NodeEvent>,
    /// Task drivers by name.
    #[serde(deserialize_with = "null_default_map")]
    pub drivers: BTreeMap<String, DriverInfo>,
    /// Host volumes by name (kept verbatim).
    #[serde(deserialize_with = "null_default_map")]
    pub host_volumes: BTreeMap<String, Value>,
    /// Host networks by name (kept verbatim).
    #[serde(deserialize_with = "null_default_map")]
    pub host_networks: BTreeMap<String, Value>,
    /// Raft index of the node's registration.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the node's last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

impl Node {
    /// Whether the scheduler may place new allocations on the node: it is
    /// ready, eligible and not draining.
    pub fn ready_for_scheduling(&self) -> bool {
        self.status == NODE_STATUS_READY
            && self.scheduling_eligibility == NODE_SCHEDULING_ELIGIBLE
            && !self.drain
    }

    /// The node as `GET /v1/nodes` lists it. `Address` and `Version` come
    /// from the attributes
    /// [`NODE_ATTR_ADDRESS`](super::constants::NODE_ATTR_ADDRESS) and
    /// [`NODE_ATTR_VERSION`](super::constants::NODE_ATTR_VERSION); the
    /// optional `Attributes`, `NodeResources` and `ReservedResources` are
    /// left out, as Nomad does unless asked for them.
    pub fn stub(&self) -> NodeListStub {
        let attribute = |key: &str| self.attributes.get(key).cloned().unwrap_or_default();
        NodeListStub {
            address: attribute(NODE_ATTR_ADDRESS),
            id: self.id.clone(),
            attributes: None,
            datacenter: self.datacenter.clone(),
            name: self.name.clone(),
            node_class: self.node_class.clone(),
            node_pool: self.node_pool.clone(),
            version: attribute(NODE_ATTR_VERSION),
            drain: self.drain,
            scheduling_eligibility: self.scheduling_eligibility.clone(),
            status: self.status.clone(),
            status_description: self.status_description.clone(),
            drivers: self.drivers.clone(),
            node_resources: None,
            reserved_resources: None,
            create_index: self.create_index,
            modify_index: self.modify_index,
        }
    }
}

/// A node as `GET /v1/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeListStub {
    /// IP address of the node.
    #[serde(deserialize_with = "null_default")]
    pub address: String,
    /// The node's ID.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// The node's attributes, when asked for.
    pub attributes: Option<BTreeMap<String, String>>,
    /// The node's datacenter.
    #[serde(deserialize_with = "null_default")]
    pub datacenter: String,
    /// The node's name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// The node's class.
    #[serde(deserialize_with = "null_default")]
    pub node_class: String,
    /// The node's pool.
    #[serde(deserialize_with = "null_default")]
    pub node_pool: String,
    /// The node's agent version.
    #[serde(deserialize_with = "null_default")]
    pub version: String,
    /// Whether the node is draining.
    #[serde(deserialize_with = "null_default")]
    pub drain: bool,
    /// `eligible` or `ineligible`.
    #[serde(deserialize_with = "null_default")]
    pub scheduling_eligibility: String,
    /// The node's status.
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Why the node has its status.
    #[serde(deserialize_with = "null_default")]
    pub status_description: String,
    /// The node's drivers.
    #[serde(deserialize_with = "null_default_map")]
    pub drivers: BTreeMap<String, DriverInfo>,
    /// What the node offers, when asked for.
    pub node_resources: Option<NodeResources>,
    /// What the node keeps, when asked for.
    pub reserved_resources: Option<NodeReservedResources>,
    /// Raft index of the node's registration.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the node's last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

/// The record of a node's last drain (Nomad's `DrainMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DrainMetadata {
    /// When the drain started (RFC 3339).
    #[serde(deserialize_with = "null_default")]
    pub started_at: String,
    /// When it last changed (RFC 3339).
    #[serde(deserialize_with = "null_default")]
    pub updated_at: String,
    /// `draining`, `complete` or `canceled`.
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Who started it.
    #[serde(rename = "AccessorID", deserialize_with = "null_default")]
    pub accessor_id: String,
    /// Operator metadata.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
}

/// A drain in progress. Nomad flattens its `DrainSpec` into this object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DrainStrategy {
    /// How long allocations may take to migrate, in nanoseconds; 0 for no
    /// deadline, negative to force an immediate drain.
    #[serde(deserialize_with = "null_default")]
    pub deadline: i64,
    /// Leave system jobs' allocations on the node.
    #[serde(deserialize_with = "null_default")]
    pub ignore_system_jobs: bool,
    /// When remaining allocations are stopped (RFC 3339).
    pub force_deadline: Option<String>,
    /// When the drain started (RFC 3339).
    pub started_at: Option<String>,
}

/// State of a task driver on a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverInfo {
    /// Attributes the driver fingerprinted.
    #[serde(deserialize_with = "null_default_map")]
    pub attributes: BTreeMap<String, String>,
    /// The driver is present.
    #[serde(deserialize_with = "null_default")]
    pub detected: bool,
    /// The driver can run tasks.
    #[serde(deserialize_with = "null_default")]
    pub healthy: bool,
    /// Why the driver has its health.
    #[serde(deserialize_with = "null_default")]
    pub health_description: String,
    /// When the driver's state last changed (RFC 3339).
    pub update_time: Option<String>,
}

/// An event in a node's history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeEvent {
    /// What happened.
    #[serde(deserialize_with = "null_default")]
    pub message: String,
    /// Part of the node it concerns, e.g. `Cluster`, `Driver`.
    #[serde(deserialize_with = "null_default")]
    pub subsystem: String,
    /// Additional details.
    #[serde(deserialize_with = "null_default_map")]
    pub details: BTreeMap<String, String>,
    /// When it happened (RFC 3339).
    pub timestamp: Option<String>,
    /// Raft index of the event.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
}

/// Resources a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeResources {
    /// CPU.
    #[serde(deserialize_with = "null_default")]
    pub cpu: NodeCpuResources,
    /// Memory.
    #[serde(deserialize_with = "null_default")]
    pub memory: NodeMemoryResources,
    /// Disk.
    #[serde(deserialize_with = "null_default")]
    pub disk: NodeDiskResources,
    /// Network interfaces.
    #[serde(deserialize_with = "null_default_vec")]
    pub networks: Vec<NetworkResource>,
    /// Devices (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub devices: Vec<Value>,
    /// Lowest port of the dynamic port range; 0 for Nomad's default.
    #[serde(deserialize_with = "null_default")]
    pub min_dynamic_port: i64,
    /// Highest port of the dynamic port range; 0 for Nomad's default.
    #[serde(deserialize_with = "null_default")]
    pub max_dynamic_port: i64,
}

/// CPU a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeCpuResources {
    /// Total compute in MHz.
    #[serde(deserialize_with = "null_default")]
    pub cpu_shares: i64,
    /// Number of cores.
    #[serde(deserialize_with = "null_default")]
    pub total_cpu_cores: i64,
    /// IDs of the cores tasks may reserve.
    #[serde(deserialize_with = "null_default_vec")]
    pub reservable_cpu_cores: Vec<u32>,
}

/// Memory a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeMemoryResources {
    /// Memory in MB.
    #[serde(rename = "MemoryMB", deserialize_with = "null_default")]
    pub memory_mb: i64,
}

/// Disk a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeDiskResources {
    /// Disk in MB.
    #[serde(rename = "DiskMB", deserialize_with = "null_default")]
    pub disk_mb: i64,
}

/// Resources a node keeps for itself and its agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeReservedResources {
    /// Reserved CPU.
    #[serde(deserialize_with = "null_default")]
    pub cpu: NodeReservedCpuResources,
    /// Reserved memory.
    #[serde(deserialize_with = "null_default")]
    pub memory: NodeMemoryResources,
    /// Reserved disk.
    #[serde(deserialize_with = "null_default")]
    pub disk: NodeDiskResources,
    /// Reserved host ports.
    #[serde(deserialize_with = "null_default")]
    pub networks: NodeReservedNetworkResources,
}

/// CPU a node keeps for itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeReservedCpuResources {
    /// Reserved compute in MHz.
    #[serde(deserialize_with = "null_default")]
    pub cpu_shares: i64,
    /// IDs of reserved cores.
    #[serde(deserialize_with = "null_default_vec")]
    pub reserved_cpu_cores: Vec<u32>,
}

/// Host ports a node keeps for itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeReservedNetworkResources {
    /// Ports and ranges, e.g. `22,80,8000-8100`.
    #[serde(deserialize_with = "null_default")]
    pub reserved_host_ports: String,
}
