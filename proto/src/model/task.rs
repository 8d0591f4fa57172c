//! Tasks (the unit of work a driver runs) and the resources they ask for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::de::{null_default, null_default_map, null_default_vec};
use super::group::RestartPolicy;
use super::placement::{Affinity, Constraint};

/// A task: one process, container or VM started by a driver.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Task {
    /// Name, unique within its group.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Driver that runs the task, e.g. `raw_exec`, `docker`, `mock_driver`.
    #[serde(deserialize_with = "null_default")]
    pub driver: String,
    /// User the task runs as; empty for the driver's default.
    #[serde(deserialize_with = "null_default")]
    pub user: String,
    /// Driver-specific configuration, passed to the driver as is.
    #[serde(deserialize_with = "null_default")]
    pub config: Map<String, Value>,
    /// Environment variables.
    #[serde(deserialize_with = "null_default_map")]
    pub env: BTreeMap<String, String>,
    /// Hard placement rules of this task.
    #[serde(deserialize_with = "null_default_vec")]
    pub constraints: Vec<Constraint>,
    /// Soft placement preferences of this task.
    #[serde(deserialize_with = "null_default_vec")]
    pub affinities: Vec<Affinity>,
    /// Service registrations (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub services: Vec<Value>,
    /// Resources the task asks for.
    #[serde(deserialize_with = "null_default")]
    pub resources: Resources,
    /// Task-level restart policy overriding the group's, if any.
    pub restart_policy: Option<RestartPolicy>,
    /// Free-form metadata, interpolated into the task's environment.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
    /// Time between the kill signal and a forced kill, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub kill_timeout: i64,
    /// Signal sent to stop the task; empty for the driver's default
    /// (`SIGINT` on Unix).
    #[serde(deserialize_with = "null_default")]
    pub kill_signal: String,
    /// Log rotation of the task's stdout and stderr.
    #[serde(deserialize_with = "null_default")]
    pub log_config: LogConfig,
    /// Artifacts downloaded before the task starts (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub artifacts: Vec<Value>,
    /// Templates rendered before the task starts (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub templates: Vec<Value>,
    /// Volume mounts (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub volume_mounts: Vec<Value>,
    /// Vault integration (kept verbatim).
    pub vault: Option<Value>,
    /// Where a dispatched job's payload is written.
    pub dispatch_payload: Option<super::periodic::DispatchPayloadConfig>,
    /// When the group's leader task dies, the other tasks are killed.
    #[serde(deserialize_with = "null_default")]
    pub leader: bool,
    /// Run the task before, beside or after the main tasks.
    pub lifecycle: Option<TaskLifecycle>,
    /// Delay between deregistering the task's services and killing it, in
    /// nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub shutdown_delay: i64,
    /// Kind of task, set for tasks Nomad injects (e.g. Connect proxies).
    #[serde(deserialize_with = "null_default")]
    pub kind: String,
}

/// When a task runs relative to the group's main tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskLifecycle {
    /// `prestart`, `poststart` or `poststop`.
    #[serde(deserialize_with = "null_default")]
    pub hook: String,
    /// Keep the task running for the life of the allocation.
    #[serde(deserialize_with = "null_default")]
    pub sidecar: bool,
}

/// Log rotation settings of a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    /// Rotated files kept per stream.
    #[serde(deserialize_with = "null_default")]
    pub max_files: i64,
    /// Size of one file before rotation, in MB.
    #[serde(rename = "MaxFileSizeMB", deserialize_with = "null_default")]
    pub max_file_size_mb: i64,
    /// Do not collect logs at all.
    #[serde(deserialize_with = "null_default")]
    pub disabled: bool,
}

/// Resources a task asks for (and, in a node, what it offers).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Resources {
    /// CPU in MHz.
    #[serde(rename = "CPU", deserialize_with = "null_default")]
    pub cpu: i64,
    /// Whole reserved CPU cores; exclusive with `CPU`.
    #[serde(deserialize_with = "null_default")]
    pub cores: i64,
    /// Memory in MB.
    #[serde(rename = "MemoryMB", deserialize_with = "null_default")]
    pub memory_mb: i64,
    /// Memory the task may burst to, in MB; 0 for no oversubscription.
    #[serde(rename = "MemoryMaxMB", deserialize_with = "null_default")]
    pub memory_max_mb: i64,
    /// Disk in MB (deprecated in Nomad in favour of the group's ephemeral
    /// disk).
    #[serde(rename = "DiskMB", deserialize_with = "null_default")]
    pub disk_mb: i64,
    /// Task-level networks (deprecated in Nomad in favour of group networks).
    #[serde(deserialize_with = "null_default_vec")]
    pub networks: Vec<NetworkResource>,
    /// Device requests (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub devices: Vec<Value>,
}

/// A network asked for by a group or task, offered by a node, or assigned to
/// an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkResource {
    /// Networking mode: `host`, `bridge`, `none` or `cni/<name>`.
    #[serde(deserialize_with = "null_default")]
    pub mode: String,
    /// Host network device.
    #[serde(deserialize_with = "null_default")]
    pub device: String,
    /// CIDR of the network.
    #[serde(rename = "CIDR", deserialize_with = "null_default")]
    pub cidr: String,
    /// Assigned IP address.
    #[serde(rename = "IP", deserialize_with = "null_default")]
    pub ip: String,
    /// Hostname of the network namespace.
    #[serde(deserialize_with = "null_default")]
    pub hostname: String,
    /// Bandwidth in Mbit/s.
    #[serde(rename = "MBits", deserialize_with = "null_default")]
    pub mbits: i64,
    /// DNS configuration (kept verbatim).
    #[serde(rename = "DNS")]
    pub dns: Option<Value>,
    /// Ports with a fixed host port.
    #[serde(deserialize_with = "null_default_vec")]
    pub reserved_ports: Vec<Port>,
    /// Ports whose host port the scheduler picks.
    #[serde(deserialize_with = "null_default_vec")]
    pub dynamic_ports: Vec<Port>,
}

/// A labelled port of a [`NetworkResource`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Port {
    /// Name the task refers to the port by (`NOMAD_PORT_<label>`).
    #[serde(deserialize_with = "null_default")]
    pub label: String,
    /// Host port; 0 for a dynamic port not yet assigned.
    #[serde(deserialize_with = "null_default")]
    pub value: i64,
    /// Port inside the task's network namespace; 0 for the same as `Value`.
    #[serde(deserialize_with = "null_default")]
    pub to: i64,
    /// Host network the port is allocated on.
    #[serde(deserialize_with = "null_default")]
    pub host_network: String,
}
