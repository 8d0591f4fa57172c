//! Task groups (the unit of placement) and their lifecycle policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::constants::{
    HEALTH_CHECK_CHECKS, HOUR, JOB_TYPE_BATCH, JOB_TYPE_SERVICE, JOB_TYPE_SYSBATCH,
    JOB_TYPE_SYSTEM, MINUTE, RESCHEDULE_DELAY_CONSTANT, RESCHEDULE_DELAY_EXPONENTIAL,
    RESTART_MODE_FAIL, SECOND,
};
use super::de::{null_default, null_default_map, null_default_vec};
use super::placement::{Affinity, Constraint, Spread};
use super::task::{NetworkResource, Task};

/// A group of tasks placed together on one node; `Count` copies of it run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskGroup {
    /// Name, unique within the job.
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    /// Number of allocations wanted. A missing or `null` count is 1, as in
    /// Nomad; an explicit 0 is kept.
    #[serde(default = "default_count", deserialize_with = "count_or_default")]
    pub count: i64,
    /// Hard placement rules of the group.
    #[serde(deserialize_with = "null_default_vec")]
    pub constraints: Vec<Constraint>,
    /// Soft placement preferences of the group.
    #[serde(deserialize_with = "null_default_vec")]
    pub affinities: Vec<Affinity>,
    /// How allocations are spread over node attributes.
    #[serde(deserialize_with = "null_default_vec")]
    pub spreads: Vec<Spread>,
    /// The group's tasks.
    #[serde(deserialize_with = "null_default_vec")]
    pub tasks: Vec<Task>,
    /// Volume requests by name (kept verbatim).
    #[serde(deserialize_with = "null_default_map")]
    pub volumes: BTreeMap<String, Value>,
    /// How failed tasks are restarted in place.
    pub restart_policy: Option<RestartPolicy>,
    /// How failed allocations are replaced on other nodes; `None` for system
    /// jobs.
    pub reschedule_policy: Option<ReschedulePolicy>,
    /// Scratch disk shared by the group's tasks.
    #[serde(deserialize_with = "null_default")]
    pub ephemeral_disk: EphemeralDisk,
    /// Rolling update strategy.
    pub update: Option<UpdateStrategy>,
    /// How allocations move off draining nodes.
    pub migrate: Option<MigrateStrategy>,
    /// Group networks (Nomad allows one).
    #[serde(deserialize_with = "null_default_vec")]
    pub networks: Vec<NetworkResource>,
    /// Service registrations (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub services: Vec<Value>,
    /// Free-form metadata.
    #[serde(deserialize_with = "null_default_map")]
    pub meta: BTreeMap<String, String>,
    /// Delay between deregistering services and stopping tasks, in
    /// nanoseconds.
    pub shutdown_delay: Option<i64>,
    /// Stop the allocation after its client has been disconnected this long,
    /// in nanoseconds.
    pub stop_after_client_disconnect: Option<i64>,
    /// Keep the allocation (as `unknown`) this long after its client
    /// disconnected before replacing it, in nanoseconds.
    pub max_client_disconnect: Option<i64>,
    /// Autoscaling policy (kept verbatim).
    pub scaling: Option<Value>,
}

impl Default for TaskGroup {
    fn default() -> Self {
        Self {
            name: String::new(),
            count: default_count(),
            constraints: Vec::new(),
            affinities: Vec::new(),
            spreads: Vec::new(),
            tasks: Vec::new(),
            volumes: BTreeMap::new(),
            restart_policy: None,
            reschedule_policy: None,
            ephemeral_disk: EphemeralDisk::default(),
            update: None,
            migrate: None,
            networks: Vec::new(),
            services: Vec::new(),
            meta: BTreeMap::new(),
            shutdown_delay: None,
            stop_after_client_disconnect: None,
            max_client_disconnect: None,
            scaling: None,
        }
    }
}

fn default_count() -> i64 {
    1
}

fn count_or_default<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(deserializer)?.unwrap_or_else(default_count))
}

/// Scratch disk of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EphemeralDisk {
    /// Size in MB.
    #[serde(rename = "SizeMB", deserialize_with = "null_default")]
    pub size_mb: i64,
    /// Prefer placing a replacement allocation on the same node, keeping the
    /// disk.
    #[serde(deserialize_with = "null_default")]
    pub sticky: bool,
    /// Copy the disk to the replacement allocation's node.
    #[serde(deserialize_with = "null_default")]
    pub migrate: bool,
}

/// How a client restarts failed tasks in place.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// Restarts allowed within `Interval`.
    #[serde(deserialize_with = "null_default")]
    pub attempts: i64,
    /// Window the attempts are counted in, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub interval: i64,
    /// Wait before a restart, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub delay: i64,
    /// What happens when the attempts are used up: `fail` or `delay`.
    #[serde(deserialize_with = "null_default")]
    pub mode: String,
    /// Re-render templates on restart.
    #[serde(deserialize_with = "null_default")]
    pub render_templates: bool,
}

impl RestartPolicy {
    /// Nomad's default restart policy for a job type: service and system jobs
    /// restart twice in 30 minutes, batch and sysbatch jobs three times a
    /// day; both wait 15 seconds and then fail. `None` for an unknown type.
    pub fn default_for(job_type: &str) -> Option<Self> {
        match job_type {
            JOB_TYPE_SERVICE | JOB_TYPE_SYSTEM => Some(Self {
                attempts: 2,
                interval: 30 * MINUTE,
                delay: 15 * SECOND,
                mode: RESTART_MODE_FAIL.to_owned(),
                render_templates: false,
            }),
            JOB_TYPE_BATCH | JOB_TYPE_SYSBATCH => Some(Self {
                attempts: 3,
                interval: 24 * HOUR,
                delay: 15 * SECOND,
                mode: RESTART_MODE_FAIL.to_owned(),
                render_templates: false,
            }),
            _ => None,
        }
    }
}

/// How the servers replace failed allocations on other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReschedulePolicy {
    /// Reschedules allowed within `Interval` (ignored when `Unlimited`).
    #[serde(deserialize_with = "null_default")]
    pub attempts: i64,
    /// Window the attempts are counted in, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub interval: i64,
    /// Base wait before a reschedule, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub delay: i64,
    /// How the delay grows: `constant`, `exponential` or `fibonacci`.
    #[serde(deserialize_with = "null_default")]
    pub delay_function: String,
    /// Upper bound of the delay, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub max_delay: i64,
    /// Reschedule without limit.
    #[serde(deserialize_with = "null_default")]
    pub unlimited: bool,
}

impl ReschedulePolicy {
    /// Nomad's default reschedule policy for a job type: service jobs
    /// reschedule without limit with an exponential delay from 30 seconds up
    /// to an hour; batch jobs once a day after 5 seconds. `None` for system
    /// and sysbatch jobs, which are never rescheduled, and unknown types.
    pub fn default_for(job_type: &str) -> Option<Self> {
        match job_type {
            JOB_TYPE_SERVICE => Some(Self {
                attempts: 0,
                interval: 0,
                delay: 30 * SECOND,
                delay_function: RESCHEDULE_DELAY_EXPONENTIAL.to_owned(),
                max_delay: HOUR,
                unlimited: true,
            }),
            JOB_TYPE_BATCH => Some(Self {
                attempts: 1,
                interval: 24 * HOUR,
                delay: 5 * SECOND,
                delay_function: RESCHEDULE_DELAY_CONSTANT.to_owned(),
                max_delay: 0,
                unlimited: false,
            }),
            _ => None,
        }
    }
}

/// How a group's allocations are replaced when its job changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateStrategy {
    /// Delay between updates of successive batches, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub stagger: i64,
    /// Allocations updated at once; 0 disables rolling updates.
    #[serde(deserialize_with = "null_default")]
    pub max_parallel: i64,
    /// How allocation health is decided: `checks`, `task_states` or `manual`.
    #[serde(deserialize_with = "null_default")]
    pub health_check: String,
    /// How long an allocation must be healthy to count as healthy, in
    /// nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub min_healthy_time: i64,
    /// How long an allocation has to become healthy, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub healthy_deadline: i64,
    /// How long the deployment may go without a newly healthy allocation,
    /// in nanoseconds. 0 (as in Nomad): the first unhealthy allocation fails
    /// the deployment. Unset (`None`, absent or null): inherited from the
    /// job's update block, else 10 minutes.
    #[serde(default)]
    pub progress_deadline: Option<i64>,
    /// Roll back to the last stable version when the deployment fails.
    #[serde(deserialize_with = "null_default")]
    pub auto_revert: bool,
    /// Promote the canaries once they are healthy.
    #[serde(deserialize_with = "null_default")]
    pub auto_promote: bool,
    /// Canary allocations placed before the rolling update.
    #[serde(deserialize_with = "null_default")]
    pub canary: i64,
}

impl UpdateStrategy {
    /// The progress deadline in nanoseconds (10 minutes while unset).
    pub fn progress_deadline_ns(&self) -> i64 {
        self.progress_deadline.unwrap_or(10 * MINUTE)
    }

    /// Nomad's default update strategy (for service and system jobs): one
    /// allocation at a time, healthy by checks after 10 seconds, within 5
    /// minutes, with progress every 10 minutes, 30 seconds apart.
    pub fn service_default() -> Self {
        Self {
            stagger: 30 * SECOND,
            max_parallel: 1,
            health_check: HEALTH_CHECK_CHECKS.to_owned(),
            min_healthy_time: 10 * SECOND,
            healthy_deadline: 5 * MINUTE,
            progress_deadline: Some(10 * MINUTE),
            auto_revert: false,
            auto_promote: false,
            canary: 0,
        }
    }
}

/// How a group's allocations move off a draining node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MigrateStrategy {
    /// Allocations migrated at once.
    #[serde(deserialize_with = "null_default")]
    pub max_parallel: i64,
    /// How allocation health is decided: `checks` or `task_states`.
    #[serde(deserialize_with = "null_default")]
    pub health_check: String,
    /// How long a replacement must be healthy, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub min_healthy_time: i64,
    /// How long a replacement has to become healthy, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub healthy_deadline: i64,
}

impl MigrateStrategy {
    /// Nomad's default migrate strategy (for service jobs).
    pub fn service_default() -> Self {
        Self {
            max_parallel: 1,
            health_check: HEALTH_CHECK_CHECKS.to_owned(),
            min_healthy_time: 10 * SECOND,
            healthy_deadline: 5 * MINUTE,
        }
    }
}
