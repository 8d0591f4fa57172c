//! Nomad's defaults, filled in by [`Job::canonicalize`].
//!
//! The model stores plain values where Nomad's API uses pointers, so "unset"
//! and "zero" look the same. The rule used here: a string that is empty or a
//! duration or size that is zero is unset and receives Nomad's default.
//! Counts that are meaningful at zero are kept: a group's `Count` (a missing
//! count already decodes as 1), restart and reschedule `Attempts`, and every
//! boolean. Update and migrate strategies are the exception Nomad itself
//! makes through merging: their zero `MaxParallel` is filled in too.

use super::constants::{
    ALL_DATACENTERS, CONSTRAINT_EQUAL, DEFAULT_EPHEMERAL_DISK_MB, DEFAULT_KILL_TIMEOUT,
    DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_FILE_SIZE_MB, DEFAULT_NAMESPACE, DEFAULT_NODE_POOL,
    DEFAULT_REGION, DEFAULT_SPREAD_WEIGHT, DEFAULT_TASK_CPU, DEFAULT_TASK_MEMORY_MB,
    JOB_DEFAULT_PRIORITY, JOB_TYPE_SERVICE, JOB_TYPE_SYSTEM,
};
use super::group::{MigrateStrategy, ReschedulePolicy, RestartPolicy, TaskGroup, UpdateStrategy};
use super::job::Job;
use super::placement::{Affinity, Constraint, Spread};
use super::task::{NetworkResource, Resources, Task};

/// Default weight of an affinity without one.
const DEFAULT_AFFINITY_WEIGHT: i32 = 50;
/// Default networking mode of a group network.
const DEFAULT_NETWORK_MODE: &str = "host";
/// Default host network of a port.
const DEFAULT_HOST_NETWORK: &str = "default";

impl Job {
    /// Fills in Nomad's defaults, like Nomad's `api.Job.Canonicalize`:
    ///
    /// * job: `Namespace` "default", `Region` "global", `Name` = `ID`,
    ///   `Type` "service", `Priority` 50, `Datacenters` `["*"]`, `NodePool`
    ///   "default", and for service and system jobs an `Update` strategy;
    /// * groups: the job's `Update` merged into each group's, a restart policy
    ///   and (service and batch jobs) a reschedule policy for the job type, a
    ///   migrate strategy for service jobs, a 300 MB ephemeral disk, network
    ///   mode "host";
    /// * tasks: the group's restart policy merged into the task's, `CPU` 100
    ///   (unless `Cores` is set), `MemoryMB` 300, `KillTimeout` 5s,
    ///   `LogConfig` 10 files of 10 MB;
    /// * constraints and affinities: operand "="; affinity and spread weight
    ///   50.
    ///
    /// The model stores plain values where Nomad's API has pointers, so an
    /// empty string or a zero duration or size counts as unset and receives
    /// the default. Zeros that are meaningful choices are kept: a group's
    /// `Count` (a missing count already decodes as 1), restart and reschedule
    /// `Attempts`, and booleans. Update and migrate strategies are merged the
    /// way Nomad merges them, so their zero `MaxParallel` is filled in too.
    ///
    /// The operation is idempotent.
    pub fn canonicalize(&mut self) {
        fill_str(&mut self.namespace, DEFAULT_NAMESPACE);
        fill_str(&mut self.region, DEFAULT_REGION);
        if self.name.is_empty() {
            self.name.clone_from(&self.id);
        }
        fill_str(&mut self.r#type, JOB_TYPE_SERVICE);
        fill(&mut self.priority, JOB_DEFAULT_PRIORITY);
        if self.datacenters.is_empty() {
            self.datacenters = vec![ALL_DATACENTERS.to_owned()];
        }
        fill_str(&mut self.node_pool, DEFAULT_NODE_POOL);
        if let Some(periodic) = &mut self.periodic {
            fill_str(&mut periodic.spec_type, super::periodic::PERIODIC_SPEC_CRON);
            fill_str(
                &mut periodic.time_zone,
                super::periodic::PERIODIC_DEFAULT_TIME_ZONE,
            );
        }
        if let Some(parameterized) = &mut self.parameterized_job {
            fill_str(
                &mut parameterized.payload,
                super::periodic::DISPATCH_PAYLOAD_OPTIONAL,
            );
        }

        match &mut self.update {
            Some(update) => canonicalize_update(update),
            None if self.r#type == JOB_TYPE_SERVICE || self.r#type == JOB_TYPE_SYSTEM => {
                self.update = Some(UpdateStrategy::service_default());
            }
            None => {}
        }

        canonicalize_placement(
            &mut self.constraints,
            &mut self.affinities,
            &mut self.spreads,
        );
        for group in &mut self.task_groups {
            canonicalize_group(group, &self.r#type, self.update.as_ref());
        }
    }
}

fn canonicalize_group(group: &mut TaskGroup, job_type: &str, job_update: Option<&UpdateStrategy>) {
    match &mut group.restart_policy {
        Some(policy) => {
            if let Some(default) = RestartPolicy::default_for(job_type) {
                merge_restart(policy, &default);
            }
        }
        None => group.restart_policy = RestartPolicy::default_for(job_type),
    }

    match &mut group.reschedule_policy {
        Some(policy) => {
            if let Some(default) = ReschedulePolicy::default_for(job_type) {
                merge_reschedule(policy, &default);
            }
        }
        None => group.reschedule_policy = ReschedulePolicy::default_for(job_type),
    }

    match (&mut group.update, job_update) {
        (Some(update), Some(job_update)) => merge_update(update, job_update),
        (None, Some(job_update)) => group.update = Some(job_update.clone()),
        _ => {}
    }
    if let Some(update) = &mut group.update {
        canonicalize_update(update);
    }

    match &mut group.migrate {
        Some(migrate) => merge_migrate(migrate, &MigrateStrategy::service_default()),
        None if job_type == JOB_TYPE_SERVICE => {
            group.migrate = Some(MigrateStrategy::service_default());
        }
        None => {}
    }

    fill(&mut group.ephemeral_disk.size_mb, DEFAULT_EPHEMERAL_DISK_MB);
    for network in &mut group.networks {
        fill_str(&mut network.mode, DEFAULT_NETWORK_MODE);
        canonicalize_network(network);
    }
    canonicalize_placement(
        &mut group.constraints,
        &mut group.affinities,
        &mut group.spreads,
    );

    for task in &mut group.tasks {
        canonicalize_task(task, group.restart_policy.as_ref());
    }
}

fn canonicalize_task(task: &mut Task, group_restart: Option<&RestartPolicy>) {
    match (&mut task.restart_policy, group_restart) {
        (Some(policy), Some(group_policy)) => merge_restart(policy, group_policy),
        (None, Some(group_policy)) => task.restart_policy = Some(group_policy.clone()),
        _ => {}
    }
    canonicalize_resources(&mut task.resources);
    fill(&mut task.kill_timeout, DEFAULT_KILL_TIMEOUT);
    fill(&mut task.log_config.max_files, DEFAULT_LOG_MAX_FILES);
    fill(
        &mut task.log_config.max_file_size_mb,
        DEFAULT_LOG_MAX_FILE_SIZE_MB,
    );
    if task
        .lifecycle
        .as_ref()
        .is_some_and(|lifecycle| lifecycle.hook.is_empty() && !lifecycle.sidecar)
    {
        task.lifecycle = None;
    }
    canonicalize_placement(&mut task.constraints, &mut task.affinities, &mut []);
}

fn canonicalize_resources(resources: &mut Resources) {
    if resources.cores == 0 {
        fill(&mut resources.cpu, DEFAULT_TASK_CPU);
    }
    fill(&mut resources.memory_mb, DEFAULT_TASK_MEMORY_MB);
    for network in &mut resources.networks {
        canonicalize_network(network);
    }
}

fn canonicalize_network(network: &mut NetworkResource) {
    for port in network
        .reserved_ports
        .iter_mut()
        .chain(network.dynamic_ports.iter_mut())
    {
        fill_str(&mut port.host_network, DEFAULT_HOST_NETWORK);
    }
}

fn canonicalize_placement(
    constraints: &mut [Constraint],
    affinities: &mut [Affinity],
    spreads: &mut [Spread],
) {
    for constraint in constraints {
        fill_str(&mut constraint.operand, CONSTRAINT_EQUAL);
    }
    for affinity in affinities {
        fill_str(&mut affinity.operand, CONSTRAINT_EQUAL);
        fill(&mut affinity.weight, DEFAULT_AFFINITY_WEIGHT);
    }
    for spread in spreads {
        fill(&mut spread.weight, DEFAULT_SPREAD_WEIGHT);
    }
}

/// Fills the unset fields of an update strategy with Nomad's defaults.
fn canonicalize_update(update: &mut UpdateStrategy) {
    merge_update(update, &UpdateStrategy::service_default());
}

/// Fills the unset fields of `update` from `from`.
fn merge_update(update: &mut UpdateStrategy, from: &UpdateStrategy) {
    fill(&mut update.stagger, from.stagger);
    fill(&mut update.max_parallel, from.max_parallel);
    fill_str(&mut update.health_check, &from.health_check);
    fill(&mut update.min_healthy_time, from.min_healthy_time);
    fill(&mut update.healthy_deadline, from.healthy_deadline);
    if update.progress_deadline.is_none() {
        update.progress_deadline = from.progress_deadline;
    }
    fill(&mut update.canary, from.canary);
    update.auto_revert |= from.auto_revert;
    update.auto_promote |= from.auto_promote;
}

/// Fills the unset fields of `migrate` from `from`.
fn merge_migrate(migrate: &mut MigrateStrategy, from: &MigrateStrategy) {
    fill(&mut migrate.max_parallel, from.max_parallel);
    fill_str(&mut migrate.health_check, &from.health_check);
    fill(&mut migrate.min_healthy_time, from.min_healthy_time);
    fill(&mut migrate.healthy_deadline, from.healthy_deadline);
}

/// Fills the unset durations and mode of `policy` from `from`; `Attempts`
/// is kept, since zero attempts is a meaningful choice.
fn merge_restart(policy: &mut RestartPolicy, from: &RestartPolicy) {
    fill(&mut policy.interval, from.interval);
    fill(&mut policy.delay, from.delay);
    fill_str(&mut policy.mode, &from.mode);
}

/// Fills the unset durations and delay function of `policy` from `from`;
/// `Attempts` and `Unlimited` are kept.
fn merge_reschedule(policy: &mut ReschedulePolicy, from: &ReschedulePolicy) {
    fill(&mut policy.interval, from.interval);
    fill(&mut policy.delay, from.delay);
    fill_str(&mut policy.delay_function, &from.delay_function);
    fill(&mut policy.max_delay, from.max_delay);
}

/// Sets `value` to `default` when it is zero.
fn fill<T: Copy + Default + PartialEq>(value: &mut T, default: T) {
    if *value == T::default() {
        *value = default;
    }
}

/// Sets `value` to `default` when it is empty.
fn fill_str(value: &mut String, default: &str) {
    if value.is_empty() {
        default.clone_into(value);
    }
}
