//! Jobs, their multiregion settings, summaries and list stubs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::de::{null_default, null_default_map, null_default_vec};
use super::group::{TaskGroup, UpdateStrategy};
use super::periodic::{ParameterizedJobConfig, PeriodicConfig};
use super::placement::{Affinity, Constraint, Spread};

/// A job: the user's declaration of work, as `GET /v1/job/:id` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Job {
    /// Region the job runs in.
    #[serde(deserialize_with = "null_default")]
    pub region: String,
    /// Namespace of the job.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// Identifier, unique within the namespace.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Display name; defaults to the ID.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// `service`, `batch`, `system` or `sysbatch`.
    #[serde(deserialize_with = "null_default")]
    pub r#type: String,
    /// Scheduling priority in `[1, 100]`.
    #[serde(deserialize_with = "null_default")]
    pub priority: i64,
    /// Place all allocations in one plan or none.
    #[serde(deserialize_with = "null_default")]
    pub all_at_once: bool,
    /// Datacenters the job may run in; `*` globs are allowed.
    #[serde(deserialize_with = "null_default_vec")]
    pub datacenters: Vec<String>,
    /// Node pool the job runs in.
    #[serde(deserialize_with = "null_default")]
    pub node_pool: String,
    /// Hard placement rules for every group.
    #[serde(deserialize_with = "null_default_vec")]
    pub constraints: Vec<Constraint>,
    /// Soft placement preferences for every group.
    #[serde(deserialize_with = "null_default_vec")]
    pub affinities: Vec<Affinity>,
    /// Spreads for every group.
    #[serde(deserialize_with = "null_default_vec")]
    pub spreads: Vec<Spread>,
    /// The job's task groups.
    #[serde(deserialize_with = "null_default_vec")]
    pub task_groups: Vec<TaskGroup>,
    /// Job-wide update strategy, merged into each group's.
    pub update: Option<UpdateStrategy>,
    /// Deployment across several regions.
    pub multiregion: Option<Multiregion>,
    /// Periodic launch configuration.
    pub periodic: Option<PeriodicConfig>,
    /// Dispatch configuration of a parameterized job.
    pub parameterized_job: Option<ParameterizedJobConfig>,
    /// Dispatch payload of a dispatched child job, base64 as Nomad encodes
    /// its bytes.
    #[serde(deserialize_with = "null_default")]
    pub payload: String,
    /// Free-form metadata.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
    /// The job is stopped: its allocations should not run.
    #[serde(deserialize_with = "null_default")]
    pub stop: bool,
    /// ID of the periodic or parameterized parent of a child job.
    #[serde(rename = "ParentID", deserialize_with = "null_default")]
    pub parent_id: String,
    /// The job was dispatched from a parameterized job.
    #[serde(deserialize_with = "null_default")]
    pub dispatched: bool,
    /// Idempotency token of the dispatch that created this child.
    #[serde(deserialize_with = "null_default")]
    pub dispatch_idempotency_token: String,
    /// `pending`, `running` or `dead` (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Why the job has its status (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub status_description: String,
    /// This version deployed successfully (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub stable: bool,
    /// Version, incremented on each spec change (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub version: u64,
    /// When this version was submitted, in Unix nanoseconds (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub submit_time: i64,
    /// Raft index of the job's creation (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the job's last change (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
    /// Raft index of the job's last spec change (server-managed).
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
}

impl Job {
    /// The group named `name`, if any.
    pub fn task_group(&self, name: &str) -> Option<&TaskGroup> {
        self.task_groups.iter().find(|group| group.name == name)
    }

    /// The group named `name`, mutably, if any.
    pub fn task_group_mut(&mut self, name: &str) -> Option<&mut TaskGroup> {
        self.task_groups.iter_mut().find(|group| group.name == name)
    }

    /// Whether the job has a periodic configuration (Nomad's
    /// `IsPeriodic`: enabled or not).
    pub fn is_periodic(&self) -> bool {
        self.periodic.is_some()
    }

    /// Whether the leader launches children of this job on its schedule:
    /// periodic and enabled, not stopped, not a parameterized template.
    pub fn is_periodic_active(&self) -> bool {
        self.periodic.as_ref().is_some_and(|p| p.enabled) && !self.stop && !self.is_parameterized()
    }

    /// Whether the job is a template for dispatched children.
    pub fn is_parameterized(&self) -> bool {
        self.parameterized_job.is_some() && !self.dispatched
    }

    /// Whether the job is a template that never runs itself: a periodic or
    /// parameterized parent. The scheduler places nothing for it.
    pub fn is_template(&self) -> bool {
        self.is_periodic() || self.is_parameterized()
    }

    /// Whether the job is multiregion.
    pub fn is_multiregion(&self) -> bool {
        self.multiregion
            .as_ref()
            .is_some_and(|multiregion| !multiregion.regions.is_empty())
    }

    /// Whether the user-visible spec of `self` differs from `other`.
    ///
    /// Server-managed fields are ignored: `Version`, `Status`,
    /// `StatusDescription`, `Stable`, `SubmitTime`, `CreateIndex`,
    /// `ModifyIndex` and `JobModifyIndex`. Everything else, `Stop` included,
    /// counts. Compare canonicalized jobs, or a spec that only spells out a
    /// default will look different.
    pub fn spec_changed(&self, other: &Job) -> bool {
        self.spec_only() != other.spec_only()
    }

    /// A copy with every server-managed field reset.
    fn spec_only(&self) -> Job {
        Job {
            status: String::new(),
            status_description: String::new(),
            stable: false,
            version: 0,
            submit_time: 0,
            create_index: 0,
            modify_index: 0,
            job_modify_index: 0,
            ..self.clone()
        }
    }

    /// The job as `GET /v1/jobs` lists it, with its summary if known.
    pub fn stub(&self, summary: Option<JobSummary>) -> JobListStub {
        JobListStub {
            id: self.id.clone(),
            parent_id: self.parent_id.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            datacenters: self.datacenters.clone(),
            node_pool: self.node_pool.clone(),
            multiregion: self.multiregion.clone(),
            r#type: self.r#type.clone(),
            priority: self.priority,
            periodic: self.is_periodic(),
            parameterized_job: self.is_parameterized(),
            stop: self.stop,
            status: self.status.clone(),
            status_description: self.status_description.clone(),
            job_summary: summary,
            meta: self.meta.clone(),
            create_index: self.create_index,
            modify_index: self.modify_index,
            job_modify_index: self.job_modify_index,
            submit_time: self.submit_time,
            version: self.version,
        }
    }
}

/// A job's deployment across several regions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Multiregion {
    /// How the regions are deployed.
    #[serde(deserialize_with = "null_default")]
    pub strategy: MultiregionStrategy,
    /// The regions, in deployment order.
    #[serde(deserialize_with = "null_default_vec")]
    pub regions: Vec<MultiregionRegion>,
}

/// How a multiregion job's regions are deployed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MultiregionStrategy {
    /// Regions deployed at once; 0 for all.
    #[serde(deserialize_with = "null_default")]
    pub max_parallel: i64,
    /// `""`, `fail_all` or `fail_local`.
    #[serde(deserialize_with = "null_default")]
    pub on_failure: String,
}

/// One region of a multiregion job, overriding the job's settings there.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MultiregionRegion {
    /// Region name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Count of each group in this region (0 keeps the group's count).
    #[serde(deserialize_with = "null_default")]
    pub count: i64,
    /// Datacenters in this region.
    #[serde(deserialize_with = "null_default_vec")]
    pub datacenters: Vec<String>,
    /// Node pool in this region.
    #[serde(deserialize_with = "null_default")]
    pub node_pool: String,
    /// Metadata merged into the job's in this region.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
}

/// Allocation counts of a job by group and client status
/// (`GET /v1/job/:id/summary`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobSummary {
    /// The job's ID.
    #[serde(rename = "JobID", deserialize_with = "null_default")]
    pub job_id: String,
    /// The job's namespace.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// Counts per group name.
    #[serde(deserialize_with = "null_default_map")]
    pub summary: BTreeMap<String, TaskGroupSummary>,
    /// Counts of child jobs of a periodic or parameterized job.
    #[serde(deserialize_with = "null_default")]
    pub children: JobChildrenSummary,
    /// Raft index of the summary's creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the summary's last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

/// Allocation counts of one group by status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskGroupSummary {
    /// Allocations the scheduler could not place yet.
    #[serde(deserialize_with = "null_default")]
    pub queued: i64,
    /// Allocations that completed.
    #[serde(deserialize_with = "null_default")]
    pub complete: i64,
    /// Allocations that failed.
    #[serde(deserialize_with = "null_default")]
    pub failed: i64,
    /// Allocations that run.
    #[serde(deserialize_with = "null_default")]
    pub running: i64,
    /// Allocations placed but not started yet.
    #[serde(deserialize_with = "null_default")]
    pub starting: i64,
    /// Allocations lost with their node.
    #[serde(deserialize_with = "null_default")]
    pub lost: i64,
    /// Allocations on disconnected nodes.
    #[serde(deserialize_with = "null_default")]
    pub unknown: i64,
}

/// Counts of the children of a periodic or parameterized job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobChildrenSummary {
    /// Children pending.
    #[serde(deserialize_with = "null_default")]
    pub pending: i64,
    /// Children running.
    #[serde(deserialize_with = "null_default")]
    pub running: i64,
    /// Children dead.
    #[serde(deserialize_with = "null_default")]
    pub dead: i64,
}

/// A job as `GET /v1/jobs` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobListStub {
    /// The job's ID.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// The parent's ID for a child job.
    #[serde(rename = "ParentID", deserialize_with = "null_default")]
    pub parent_id: String,
    /// The job's name.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// The job's namespace.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// The job's datacenters.
    #[serde(deserialize_with = "null_default_vec")]
    pub datacenters: Vec<String>,
    /// The job's node pool.
    #[serde(deserialize_with = "null_default")]
    pub node_pool: String,
    /// The job's multiregion settings.
    pub multiregion: Option<Multiregion>,
    /// The job's type.
    #[serde(deserialize_with = "null_default")]
    pub r#type: String,
    /// The job's priority.
    #[serde(deserialize_with = "null_default")]
    pub priority: i64,
    /// Whether the job is periodic.
    #[serde(deserialize_with = "null_default")]
    pub periodic: bool,
    /// Whether the job is parameterized.
    #[serde(deserialize_with = "null_default")]
    pub parameterized_job: bool,
    /// Whether the job is stopped.
    #[serde(deserialize_with = "null_default")]
    pub stop: bool,
    /// The job's status.
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Why the job has its status.
    #[serde(deserialize_with = "null_default")]
    pub status_description: String,
    /// The job's allocation counts.
    pub job_summary: Option<JobSummary>,
    /// The job's metadata.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
    /// Raft index of the job's creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of the job's last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
    /// Raft index of the job's last spec change.
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
    /// When the current version was submitted, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub submit_time: i64,
    /// The job's version.
    #[serde(deserialize_with = "null_default")]
    pub version: u64,
}
