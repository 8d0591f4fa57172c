//! Allocations (a task group placed on a node) and the state of their tasks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::constants::{
    ALLOC_CLIENT_COMPLETE, ALLOC_CLIENT_FAILED, ALLOC_CLIENT_LOST, ALLOC_DESIRED_EVICT,
    ALLOC_DESIRED_STOP, TASK_STATE_DEAD,
};
use super::de::{null_default, null_default_map, null_default_named, null_default_vec};
use super::job::Job;
use super::named_map::NamedMap;
use super::raw::RawJson;
use super::task::{NetworkResource, Resources, TaskLifecycle};

/// An allocation: one copy of a task group placed on a node, as
/// `GET /v1/allocation/:id` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Allocation {
    /// Identifier (a UUID).
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Namespace of the job.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// Evaluation that placed the allocation.
    #[serde(rename = "EvalID", deserialize_with = "null_default")]
    pub eval_id: String,
    /// Name, `<job>.<group>[<index>]`.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Node the allocation is placed on.
    #[serde(rename = "NodeID", deserialize_with = "null_default")]
    pub node_id: String,
    /// Name of that node.
    #[serde(deserialize_with = "null_default")]
    pub node_name: String,
    /// ID of the job.
    #[serde(rename = "JobID", deserialize_with = "null_default")]
    pub job_id: String,
    /// The job version the allocation runs.
    pub job: Option<std::sync::Arc<Job>>,
    /// Name of the task group.
    #[serde(deserialize_with = "null_default")]
    pub task_group: String,
    /// Total resources of the allocation (legacy shape).
    pub resources: Option<Resources>,
    /// Resources assigned to the allocation, per task and shared.
    pub allocated_resources: Option<AllocatedResources>,
    /// Scheduler metrics of the placement (kept verbatim, as JSON text).
    pub metrics: Option<RawJson>,
    /// What the servers want: `run`, `stop` or `evict`.
    #[serde(deserialize_with = "null_default")]
    pub desired_status: String,
    /// Why the servers want it.
    #[serde(deserialize_with = "null_default")]
    pub desired_description: String,
    /// Transitions the servers asked for.
    #[serde(deserialize_with = "null_default")]
    pub desired_transition: DesiredTransition,
    /// What the client reports: `pending`, `running`, `complete`, `failed`,
    /// `lost` or `unknown`.
    #[serde(deserialize_with = "null_default")]
    pub client_status: String,
    /// Why the client reports it.
    #[serde(deserialize_with = "null_default")]
    pub client_description: String,
    /// State of each task by name.
    #[serde(deserialize_with = "null_default_map")]
    pub task_states: BTreeMap<String, TaskState>,
    /// Deployment that placed the allocation.
    #[serde(rename = "DeploymentID", deserialize_with = "null_default")]
    pub deployment_id: String,
    /// Health of the allocation within its deployment.
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// Allocation this one replaces.
    #[serde(deserialize_with = "null_default")]
    pub previous_allocation: String,
    /// Allocation that replaces this one.
    #[serde(deserialize_with = "null_default")]
    pub next_allocation: String,
    /// Reschedule history of the allocation's lineage.
    pub reschedule_tracker: Option<RescheduleTracker>,
    /// Evaluation that will reschedule the allocation later.
    #[serde(rename = "FollowupEvalID", deserialize_with = "null_default")]
    pub followup_eval_id: String,
    /// Allocations this one preempted.
    #[serde(deserialize_with = "null_default_vec")]
    pub preempted_allocations: Vec<String>,
    /// Allocation that preempted this one.
    #[serde(deserialize_with = "null_default")]
    pub preempted_by_allocation: String,
    /// Raft index of the allocation's creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the allocation's last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
    /// Raft index of the last server-side change.
    #[serde(deserialize_with = "null_default")]
    pub alloc_modify_index: u64,
    /// Creation time, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub create_time: i64,
    /// Last change time, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub modify_time: i64,
    /// Version of the job the allocation runs.
    #[serde(deserialize_with = "null_default")]
    pub job_version: u64,
}

impl Allocation {
    /// Whether the servers want the allocation stopped.
    pub fn server_terminal(&self) -> bool {
        self.desired_status == ALLOC_DESIRED_STOP || self.desired_status == ALLOC_DESIRED_EVICT
    }

    /// Whether the client reports the allocation finished.
    pub fn client_terminal(&self) -> bool {
        matches!(
            self.client_status.as_str(),
            ALLOC_CLIENT_COMPLETE | ALLOC_CLIENT_FAILED | ALLOC_CLIENT_LOST
        )
    }

    /// Whether the allocation is over from either side (Nomad's
    /// `TerminalStatus`).
    pub fn terminal(&self) -> bool {
        self.server_terminal() || self.client_terminal()
    }

    /// The allocation as `GET /v1/allocations` lists it.
    pub fn stub(&self) -> AllocListStub {
        AllocListStub {
            id: self.id.clone(),
            eval_id: self.eval_id.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            node_id: self.node_id.clone(),
            node_name: self.node_name.clone(),
            job_id: self.job_id.clone(),
            job_type: self
                .job
                .as_ref()
                .map(|job| job.r#type.clone())
                .unwrap_or_default(),
            job_version: self.job_version,
            task_group: self.task_group.clone(),
            allocated_resources: self.allocated_resources.clone(),
            desired_status: self.desired_status.clone(),
            desired_description: self.desired_description.clone(),
            desired_transition: self.desired_transition.clone(),
            client_status: self.client_status.clone(),
            client_description: self.client_description.clone(),
            task_states: self.task_states.clone(),
            deployment_status: self.deployment_status.clone(),
            followup_eval_id: self.followup_eval_id.clone(),
            next_allocation: self.next_allocation.clone(),
            reschedule_tracker: self.reschedule_tracker.clone(),
            preempted_allocations: self.preempted_allocations.clone(),
            preempted_by_allocation: self.preempted_by_allocation.clone(),
            create_index: self.create_index,
            modify_index: self.modify_index,
            create_time: self.create_time,
            modify_time: self.modify_time,
        }
    }
}

/// An allocation as `GET /v1/allocations` and `GET /v1/job/:id/allocations`
/// list it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocListStub {
    /// The allocation's ID.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Evaluation that placed it.
    #[serde(rename = "EvalID", deserialize_with = "null_default")]
    pub eval_id: String,
    /// The allocation's name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// The job's namespace.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// Node it is placed on.
    #[serde(rename = "NodeID", deserialize_with = "null_default")]
    pub node_id: String,
    /// Name of that node.
    #[serde(deserialize_with = "null_default")]
    pub node_name: String,
    /// The job's ID.
    #[serde(rename = "JobID", deserialize_with = "null_default")]
    pub job_id: String,
    /// The job's type.
    #[serde(deserialize_with = "null_default")]
    pub job_type: String,
    /// The job version it runs.
    #[serde(deserialize_with = "null_default")]
    pub job_version: u64,
    /// The task group's name.
    #[serde(deserialize_with = "null_default")]
    pub task_group: String,
    /// Resources assigned to it.
    pub allocated_resources: Option<AllocatedResources>,
    /// What the servers want.
    #[serde(deserialize_with = "null_default")]
    pub desired_status: String,
    /// Why the servers want it.
    #[serde(deserialize_with = "null_default")]
    pub desired_description: String,
    /// Transitions the servers asked for.
    #[serde(deserialize_with = "null_default")]
    pub desired_transition: DesiredTransition,
    /// What the client reports.
    #[serde(deserialize_with = "null_default")]
    pub client_status: String,
    /// Why the client reports it.
    #[serde(deserialize_with = "null_default")]
    pub client_description: String,
    /// State of each task by name.
    #[serde(deserialize_with = "null_default_map")]
    pub task_states: BTreeMap<String, TaskState>,
    /// Health within its deployment.
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// Evaluation that will reschedule it later.
    #[serde(rename = "FollowupEvalID", deserialize_with = "null_default")]
    pub followup_eval_id: String,
    /// Allocation that replaces it.
    #[serde(deserialize_with = "null_default")]
    pub next_allocation: String,
    /// Reschedule history.
    pub reschedule_tracker: Option<RescheduleTracker>,
    /// Allocations it preempted.
    #[serde(deserialize_with = "null_default_vec")]
    pub preempted_allocations: Vec<String>,
    /// Allocation that preempted it.
    #[serde(deserialize_with = "null_default")]
    pub preempted_by_allocation: String,
    /// Raft index of its creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
    /// Creation time, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub create_time: i64,
    /// Last change time, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub modify_time: i64,
}

/// Transitions the servers ask of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DesiredTransition {
    /// Migrate the allocation off its (draining) node.
    pub migrate: Option<bool>,
    /// Reschedule the allocation when it fails.
    pub reschedule: Option<bool>,
    /// Reschedule the allocation now, ignoring its policy.
    pub force_reschedule: Option<bool>,
    /// Stop the allocation without its shutdown delay.
    pub no_shutdown_delay: Option<bool>,
}

/// Health of an allocation within its deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocDeploymentStatus {
    /// `None` while undecided.
    pub healthy: Option<bool>,
    /// When the health was decided (RFC 3339).
    pub timestamp: Option<String>,
    /// The allocation is a canary.
    #[serde(deserialize_with = "null_default")]
    pub canary: bool,
    /// Raft index of the last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

/// Reschedule history of an allocation's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RescheduleTracker {
    /// Past reschedules, oldest first.
    #[serde(deserialize_with = "null_default_vec")]
    pub events: Vec<RescheduleEvent>,
}

/// One reschedule of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RescheduleEvent {
    /// When it happened, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub reschedule_time: i64,
    /// The allocation that was replaced.
    #[serde(rename = "PrevAllocID", deserialize_with = "null_default")]
    pub prev_alloc_id: String,
    /// The node it ran on.
    #[serde(rename = "PrevNodeID", deserialize_with = "null_default")]
    pub prev_node_id: String,
    /// Delay applied before the reschedule, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub delay: i64,
}

/// Resources assigned to an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedResources {
    /// Resources of each task by name.
    #[serde(deserialize_with = "null_default_named")]
    pub tasks: NamedMap<AllocatedTaskResources>,
    /// Lifecycle of each task by name (`null` for main tasks).
    #[serde(deserialize_with = "null_default")]
    pub task_lifecycles: NamedMap<Option<TaskLifecycle>>,
    /// Resources shared by the tasks.
    #[serde(deserialize_with = "null_default")]
    pub shared: AllocatedSharedResources,
}

/// Resources assigned to one task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedTaskResources {
    /// CPU.
    #[serde(deserialize_with = "null_default")]
    pub cpu: AllocatedCpuResources,
    /// Memory.
    #[serde(deserialize_with = "null_default")]
    pub memory: AllocatedMemoryResources,
    /// Task-level networks.
    #[serde(deserialize_with = "null_default_vec")]
    pub networks: Vec<NetworkResource>,
    /// Devices (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub devices: Vec<Value>,
}

/// CPU assigned to a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedCpuResources {
    /// Compute in MHz.
    #[serde(deserialize_with = "null_default")]
    pub cpu_shares: i64,
    /// IDs of the cores reserved for the task.
    #[serde(deserialize_with = "null_default_vec")]
    pub reserved_cores: Vec<u32>,
}

/// Memory assigned to a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedMemoryResources {
    /// Memory in MB.
    #[serde(rename = "MemoryMB", deserialize_with = "null_default")]
    pub memory_mb: i64,
    /// Burst limit in MB; 0 for none.
    #[serde(rename = "MemoryMaxMB", deserialize_with = "null_default")]
    pub memory_max_mb: i64,
}

/// Resources shared by an allocation's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedSharedResources {
    /// Group networks.
    #[serde(deserialize_with = "null_default_vec")]
    pub networks: Vec<NetworkResource>,
    /// Ephemeral disk in MB.
    #[serde(rename = "DiskMB", deserialize_with = "null_default")]
    pub disk_mb: i64,
    /// Ports assigned to the group.
    #[serde(deserialize_with = "null_default_vec")]
    pub ports: Vec<AllocatedPortMapping>,
}

/// A port assigned to an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocatedPortMapping {
    /// The port's label.
    #[serde(deserialize_with = "null_default")]
    pub label: String,
    /// Host port.
    #[serde(deserialize_with = "null_default")]
    pub value: i64,
    /// Port inside the network namespace.
    #[serde(deserialize_with = "null_default")]
    pub to: i64,
    /// Host IP the port is bound on.
    #[serde(rename = "HostIP", deserialize_with = "null_default")]
    pub host_ip: String,
}

/// State of one task of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskState {
    /// `pending`, `running` or `dead`.
    #[serde(deserialize_with = "null_default")]
    pub state: String,
    /// The task failed (meaningful once `dead`).
    #[serde(deserialize_with = "null_default")]
    pub failed: bool,
    /// Times the task restarted.
    #[serde(deserialize_with = "null_default")]
    pub restarts: u64,
    /// When the task last restarted (RFC 3339).
    pub last_restart: Option<String>,
    /// When the task last started (RFC 3339).
    pub started_at: Option<String>,
    /// When the task finished (RFC 3339).
    pub finished_at: Option<String>,
    /// The task's history, oldest first.
    #[serde(deserialize_with = "null_default_vec")]
    pub events: Vec<TaskEvent>,
}

impl TaskState {
    /// Whether the task ended successfully.
    pub fn successful(&self) -> bool {
        self.state == TASK_STATE_DEAD && !self.failed
    }
}

/// An event in a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskEvent {
    /// Kind of event, e.g. `Started`, `Terminated` (see the `TASK_EVENT_*`
    /// constants).
    #[serde(deserialize_with = "null_default")]
    pub r#type: String,
    /// When it happened, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub time: i64,
    /// Free-form message.
    #[serde(deserialize_with = "null_default")]
    pub message: String,
    /// Human-readable summary.
    #[serde(deserialize_with = "null_default")]
    pub display_message: String,
    /// Structured details.
    #[serde(deserialize_with = "null_default_map")]
    pub details: BTreeMap<String, String>,
    /// The event fails the task.
    #[serde(deserialize_with = "null_default")]
    pub fails_task: bool,
    /// Why the task restarts.
    #[serde(deserialize_with = "null_default")]
    pub restart_reason: String,
    /// Error while setting the task up.
    #[serde(deserialize_with = "null_default")]
    pub setup_error: String,
    /// Error from the driver.
    #[serde(deserialize_with = "null_default")]
    pub driver_error: String,
    /// Message from the driver.
    #[serde(deserialize_with = "null_default")]
    pub driver_message: String,
    /// Exit code of the task.
    #[serde(deserialize_with = "null_default")]
    pub exit_code: i64,
    /// Signal that ended the task.
    #[serde(deserialize_with = "null_default")]
    pub signal: i64,
    /// Why the task was killed.
    #[serde(deserialize_with = "null_default")]
    pub kill_reason: String,
    /// Kill timeout applied, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub kill_timeout: i64,
    /// Error while killing the task.
    #[serde(deserialize_with = "null_default")]
    pub kill_error: String,
    /// Delay before the restart, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub start_delay: i64,
    /// Error while downloading artifacts.
    #[serde(deserialize_with = "null_default")]
    pub download_error: String,
    /// Error while validating the task.
    #[serde(deserialize_with = "null_default")]
    pub validation_error: String,
    /// Name of the sibling task whose failure killed this one.
    #[serde(deserialize_with = "null_default")]
    pub failed_sibling: String,
    /// Signal sent to the task.
    #[serde(deserialize_with = "null_default")]
    pub task_signal: String,
    /// Why the signal was sent.
    #[serde(deserialize_with = "null_default")]
    pub task_signal_reason: String,
}
