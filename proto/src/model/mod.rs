//! The domain model: Nomad-compatible jobs, nodes, allocations, evaluations
//! and deployments, with Nomad's defaults and validation.
//!
//! Every type serializes to and from the JSON of Nomad's HTTP API
//! (`/v1/...`): PascalCase field names with Nomad's spellings (`ID`,
//! `JobID`, `MemoryMB`, ...), durations as integer nanoseconds, timestamps
//! as Unix nanoseconds or RFC 3339 strings where Nomad uses them. Decoding is
//! as lenient as Nomad's: missing fields and `null` take the default value
//! and unknown fields are ignored, so a body written for Nomad is accepted.
//!
//! Statuses and types are plain strings; compare them with the
//! [`constants`].
//!
//! * [`Job::canonicalize`] fills in Nomad's defaults;
//! * [`Job::validate`] reports every problem of a job with its field path;
//! * [`Job::spec_changed`] tells whether a re-registered job is a new
//!   version;
//! * `stub()` methods build the list items of `GET /v1/jobs`, `/v1/nodes`
//!   and `/v1/allocations`.

mod alloc;
mod api;
mod canonicalize;
pub mod constants;
mod de;
mod deployment;
mod duration;
mod eval;
mod group;
mod job;
mod named_map;
mod node;
mod operator;
mod periodic;
mod placement;
mod raw;
mod task;
pub mod time;
mod validate;

pub use alloc::{
    AllocDeploymentStatus, AllocListStub, AllocatedCpuResources, AllocatedMemoryResources,
    AllocatedPortMapping, AllocatedResources, AllocatedSharedResources, AllocatedTaskResources,
    Allocation, DesiredTransition, RescheduleEvent, RescheduleTracker, TaskEvent, TaskState,
};
pub use api::{
    JobDeregisterResponse, JobRegisterRequest, JobRegisterResponse, JobValidateRequest,
    JobValidateResponse,
};
pub use constants::*;
pub use deployment::{Deployment, DeploymentState};
pub use duration::format_duration;
pub use eval::Evaluation;
pub use group::{
    EphemeralDisk, MigrateStrategy, ReschedulePolicy, RestartPolicy, TaskGroup, UpdateStrategy,
};
pub use job::{
    Job, JobChildrenSummary, JobListStub, JobSummary, Multiregion, MultiregionRegion,
    MultiregionStrategy, TaskGroupSummary,
};
pub use named_map::NamedMap;
pub use node::{
    DrainMetadata, DrainStrategy, DriverInfo, Node, NodeCpuResources, NodeDiskResources, NodeEvent,
    NodeListStub, NodeMemoryResources, NodeReservedCpuResources, NodeReservedNetworkResources,
    NodeReservedResources, NodeResources,
};
pub use operator::{
    AutopilotConfiguration, OperatorHealthReply, PreemptionConfig, SchedulerConfiguration,
    ServerHealth, SCHEDULER_ALGORITHM_BINPACK, SCHEDULER_ALGORITHM_SPREAD,
};
pub use periodic::{
    periodic_child_id, periodic_launch_of, CronSchedule, DispatchPayloadConfig, JobDispatchRequest,
    JobDispatchResponse, ParameterizedJobConfig, PeriodicConfig, PeriodicForceResponse,
    PeriodicLaunch, ScheduleError, DISPATCH_LAUNCH_SUFFIX, DISPATCH_PAYLOAD_FORBIDDEN,
    DISPATCH_PAYLOAD_OPTIONAL, DISPATCH_PAYLOAD_REQUIRED, DISPATCH_PAYLOAD_SIZE_LIMIT,
    PERIODIC_DEFAULT_TIME_ZONE, PERIODIC_LAUNCH_SUFFIX, PERIODIC_SPEC_CRON,
};
pub use placement::{Affinity, Constraint, Spread, SpreadTarget};
pub use raw::RawJson;
pub use task::{LogConfig, NetworkResource, Port, Resources, Task, TaskLifecycle};
pub use validate::{FieldError, ValidationErrors};

/// A new random identifier (a UUID v4), as Nomad uses for allocations,
/// evaluations, deployments and nodes.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
