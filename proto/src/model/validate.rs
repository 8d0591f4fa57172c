//! Validation of jobs: [`Job::validate`] reports every problem at once, each
//! with the path of the offending field.

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::constants::{
    AFFINITY_OPERANDS, CONSTRAINT_ATTRIBUTE_IS_NOT_SET, CONSTRAINT_ATTRIBUTE_IS_SET,
    CONSTRAINT_DISTINCT_HOSTS, CONSTRAINT_DISTINCT_PROPERTY, CONSTRAINT_EQUAL, CONSTRAINT_OPERANDS,
    CONSTRAINT_REGEX, HEALTH_CHECK_CHECKS, HEALTH_CHECK_MANUAL, HEALTH_CHECK_TASK_STATES,
    JOB_MAX_PRIORITY, JOB_MIN_PRIORITY, JOB_TYPES, JOB_TYPE_BATCH, JOB_TYPE_SERVICE,
    JOB_TYPE_SYSBATCH, JOB_TYPE_SYSTEM, LIFECYCLE_HOOK_POSTSTART, LIFECYCLE_HOOK_POSTSTOP,
    LIFECYCLE_HOOK_PRESTART, MIN_TASK_CPU, MIN_TASK_MEMORY_MB, MULTIREGION_ON_FAILURE_DEFAULT,
    MULTIREGION_ON_FAILURE_FAIL_ALL, MULTIREGION_ON_FAILURE_FAIL_LOCAL, RESCHEDULE_DELAY_CONSTANT,
    RESCHEDULE_DELAY_EXPONENTIAL, RESCHEDULE_DELAY_FIBONACCI, RESTART_MODE_DELAY,
    RESTART_MODE_FAIL, SECOND,
};
use super::duration::format_duration;
use super::group::{MigrateStrategy, ReschedulePolicy, RestartPolicy, TaskGroup, UpdateStrategy};
use super::job::{Job, Multiregion};
use super::periodic::{
    ParameterizedJobConfig, DISPATCH_PAYLOAD_FORBIDDEN, DISPATCH_PAYLOAD_OPTIONAL,
    DISPATCH_PAYLOAD_REQUIRED,
};
use super::placement::{Affinity, Constraint, Spread};
use super::task::{NetworkResource, Port, Resources, Task};

/// Shortest restart interval Nomad accepts.
const MIN_RESTART_INTERVAL: i64 = 5 * SECOND;
/// Shortest reschedule delay Nomad accepts.
const MIN_RESCHEDULE_DELAY: i64 = 5 * SECOND;
/// Shortest reschedule interval Nomad accepts for limited rescheduling.
const MIN_RESCHEDULE_INTERVAL: i64 = 15 * SECOND;
/// Smallest ephemeral disk Nomad accepts, in MB.
const MIN_EPHEMERAL_DISK_MB: i64 = 10;
/// Highest valid port number.
const MAX_PORT: i64 = 65_535;

/// One problem found by validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Path of the field, e.g. `TaskGroups[0].Tasks[1].Driver`.
    pub path: String,
    /// What is wrong with it, e.g. `required`.
    pub message: String,
}

impl FieldError {
    /// A problem `message` with the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Every problem found by validation, displayed like Nomad's multierror: a
/// count line, then one tab-indented `* path: message` line per problem, and
/// a blank line.
///
/// ```
/// use proto::model::ValidationErrors;
///
/// let mut errors = ValidationErrors::new();
/// errors.push("ID", "required");
/// errors.push("TaskGroups", "required");
/// assert_eq!(
///     errors.to_string(),
///     "2 errors occurred:\n\t* ID: required\n\t* TaskGroups: required\n\n"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, thiserror::Error)]
#[error("{}", multierror(.errors))]
pub struct ValidationErrors {
    /// The problems, in the order found.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem `message` with the field at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// The problems.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.errors.iter()
    }

    /// Each problem as `path: message`.
    pub fn messages(&self) -> Vec<String> {
        self.errors.iter().map(ToString::to_string).collect()
    }

    /// `Ok(())` when no problem was found, otherwise `Err(self)`.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// Formats errors like hashicorp/go-multierror's default format.
fn multierror(errors: &[FieldError]) -> String {
    struct List<'a>(&'a [FieldError]);
    impl fmt::Display for List<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0.len() {
                1 => write!(f, "1 error occurred:")?,
                n => write!(f, "{n} errors occurred:")?,
            }
            for error in self.0 {
                write!(f, "\n\t* {error}")?;
            }
            write!(f, "\n\n")
        }
    }
    List(errors).to_string()
}

impl Job {
    /// Checks the job, returning every problem found with its field path.
    ///
    /// Validate a [canonicalized](Job::canonicalize) job: defaults such as
    /// the datacenters, task resources or restart policies are required
    /// here.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        validate_job(self, &mut errors);
        errors.into_result()
    }
}

impl Multiregion {
    /// Checks the multiregion settings on their own; paths are relative to
    /// the `Multiregion` object. [`Job::validate`] includes these checks.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        validate_multiregion(self, "", &mut errors);
        errors.into_result()
    }
}

/// `prefix.field`, or `field` at the top level.
fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// `prefix.field[index]`.
fn index(prefix: &str, field: &str, index: usize) -> String {
    format!("{}[{index}]", join(prefix, field))
}

fn is_batch_like(job_type: &str) -> bool {
    job_type == JOB_TYPE_BATCH || job_type == JOB_TYPE_SYSBATCH
}

fn validate_job(job: &Job, errors: &mut ValidationErrors) {
    if job.region.is_empty() {
        errors.push("Region", "required");
    }
    if job.namespace.is_empty() {
        errors.push("Namespace", "required");
    }
    if job.id.is_empty() {
        errors.push("ID", "required");
    } else if job.id.contains(' ') {
        errors.push("ID", "contains a space");
    } else if job.id.contains('\0') {
        errors.push("ID", "contains a null character");
    }
    if job.name.is_empty() {
        errors.push("Name", "required");
    } else if job.name.contains('\0') {
        errors.push("Name", "contains a null character");
    }
    if job.r#type.is_empty() {
        errors.push("Type", "required");
    } else if !JOB_TYPES.contains(&job.r#type.as_str()) {
        errors.push("Type", format!("unknown job type {:?}", job.r#type));
    }
    if !(JOB_MIN_PRIORITY..=JOB_MAX_PRIORITY).contains(&job.priority) {
        errors.push(
            "Priority",
            format!("must be between {JOB_MIN_PRIORITY} and {JOB_MAX_PRIORITY}"),
        );
    }
    if job.datacenters.is_empty() && !job.is_multiregion() {
        errors.push("Datacenters", "required");
    }
    for (i, datacenter) in job.datacenters.iter().enumerate() {
        if datacenter.is_empty() {
            errors.push(index("", "Datacenters", i), "must not be empty");
        }
    }
    if let Some(periodic) = job.periodic.as_ref().filter(|p| p.enabled) {
        if !is_batch_like(&job.r#type) {
            errors.push("Periodic", "only allowed for batch and sysbatch jobs");
        }
        if let Err(e) = periodic.schedule() {
            errors.push(join("Periodic", e.field), e.message);
        }
    }
    if let Some(parameterized) = job.parameterized_job.as_ref().filter(|_| !job.dispatched) {
        if !is_batch_like(&job.r#type) {
            errors.push(
                "ParameterizedJob",
                "only allowed for batch and sysbatch jobs",
            );
        }
        validate_parameterized(job, parameterized, errors);
    }

    validate_constraints(&job.constraints, "", Level::Job, errors);
    validate_affinities(&job.r#type, &job.affinities, "", errors);
    validate_spreads(&job.r#type, &job.spreads, "", errors);

    if let Some(multiregion) = &job.multiregion {
        validate_multiregion(multiregion, "Multiregion", errors);
    }

    if job.task_groups.is_empty() {
        errors.push("TaskGroups", "required");
    }
    let mut seen = BTreeSet::new();
    for (i, group) in job.task_groups.iter().enumerate() {
        let path = index("", "TaskGroups", i);
        if !group.name.is_empty() && !seen.insert(group.name.as_str()) {
            errors.push(
                join(&path, "Name"),
                format!("duplicate group name {:?}", group.name),
            );
        }
        validate_group(&job.r#type, group, &path, errors);
    }
}

fn validate_parameterized(job: &Job, p: &ParameterizedJobConfig, errors: &mut ValidationErrors) {
    if ![
        DISPATCH_PAYLOAD_OPTIONAL,
        DISPATCH_PAYLOAD_REQUIRED,
        DISPATCH_PAYLOAD_FORBIDDEN,
    ]
    .contains(&p.payload.as_str())
    {
        errors.push(
            "ParameterizedJob.Payload",
            format!(
                "unknown payload requirement {:?} (optional, required or forbidden)",
                p.payload
            ),
        );
    }
    let required: BTreeSet<&str> = p.meta_required.iter().map(String::as_str).collect();
    for (i, key) in p.meta_optional.iter().enumerate() {
        if required.contains(key.as_str()) {
            errors.push(
                index("ParameterizedJob", "MetaOptional", i),
                format!("{key:?} is also required"),
            );
        }
    }
    if p.payload == DISPATCH_PAYLOAD_FORBIDDEN {
        for (g, group) in job.task_groups.iter().enumerate() {
            for (t, task) in group.tasks.iter().enumerate() {
                if task.dispatch_payload.is_some() {
                    let path = index(&index("", "TaskGroups", g), "Tasks", t);
                    errors.push(
                        join(&path, "DispatchPayload"),
                        "not allowed when the job forbids a payload",
                    );
                }
            }
        }
    }
}

fn validate_group(job_type: &str, group: &TaskGroup, path: &str, errors: &mut ValidationErrors) {
    if group.name.is_empty() {
        errors.push(join(path, "Name"), "required");
    } else if group.name.contains('\0') {
        errors.push(join(path, "Name"), "contains a null character");
    }
    if group.count < 0 {
        errors.push(join(path, "Count"), "must be non-negative");
    } else if group.count > 1 && job_type == JOB_TYPE_SYSTEM {
        errors.push(
            join(path, "Count"),
            "must not be greater than 1 for system jobs",
        );
    }

    validate_constraints(&group.constraints, path, Level::Group, errors);
    validate_affinities(job_type, &group.affinities, path, errors);
    validate_spreads(job_type, &group.spreads, path, errors);

    match &group.restart_policy {
        Some(policy) => validate_restart(policy, &join(path, "RestartPolicy"), errors),
        None => errors.push(join(path, "RestartPolicy"), "required"),
    }
    let reschedule_path = join(path, "ReschedulePolicy");
    match (&group.reschedule_policy, job_type) {
        (Some(_), JOB_TYPE_SYSTEM | JOB_TYPE_SYSBATCH) => {
            errors.push(reschedule_path, format!("not allowed for {job_type} jobs"));
        }
        (Some(policy), _) => validate_reschedule(policy, &reschedule_path, errors),
        (None, JOB_TYPE_SERVICE | JOB_TYPE_BATCH) => errors.push(reschedule_path, "required"),
        (None, _) => {}
    }
    if group.ephemeral_disk.size_mb < MIN_EPHEMERAL_DISK_MB {
        errors.push(
            join(path, "EphemeralDisk.SizeMB"),
            format!("must be at least {MIN_EPHEMERAL_DISK_MB}"),
        );
    }
    if let Some(update) = &group.update {
        let update_path = join(path, "Update");
        if is_batch_like(job_type) {
            errors.push(update_path, format!("not allowed for {job_type} jobs"));
        } else {
            validate_update(update, &update_path, errors);
        }
    }
    if let Some(migrate) = &group.migrate {
        let migrate_path = join(path, "Migrate");
        match job_type {
            JOB_TYPE_BATCH | JOB_TYPE_SYSTEM | JOB_TYPE_SYSBATCH => {
                errors.push(migrate_path, format!("not allowed for {job_type} jobs"));
            }
            _ => validate_migrate(migrate, &migrate_path, errors),
        }
    }

    for (field, value) in [
        ("ShutdownDelay", group.shutdown_delay),
        (
            "StopAfterClientDisconnect",
            group.stop_after_client_disconnect,
        ),
        ("MaxClientDisconnect", group.max_client_disconnect),
    ] {
        if value.is_some_and(|nanos| nanos < 0) {
            errors.push(join(path, field), "must be non-negative");
        }
    }
    if group.stop_after_client_disconnect.is_some() && group.max_client_disconnect.is_some() {
        errors.push(
            join(path, "MaxClientDisconnect"),
            "cannot be set together with StopAfterClientDisconnect",
        );
    }

    // Port labels and static ports are unique across the group's networks
    // and its tasks' networks.
    let mut ports = PortRegistry::default();
    if group.networks.len() > 1 {
        errors.push(join(path, "Networks"), "only one network block is allowed");
    }
    for (i, network) in group.networks.iter().enumerate() {
        validate_network(network, &index(path, "Networks", i), &mut ports, errors);
    }

    if group.tasks.is_empty() {
        errors.push(join(path, "Tasks"), "required");
    } else if !group.tasks.iter().any(is_main_task) {
        errors.push(
            join(path, "Tasks"),
            "at least one task must have no lifecycle hook",
        );
    }
    if group.tasks.iter().filter(|task| task.leader).count() > 1 {
        errors.push(join(path, "Tasks"), "only one task may be marked as leader");
    }
    let mut seen = BTreeSet::new();
    for (i, task) in group.tasks.iter().enumerate() {
        let task_path = index(path, "Tasks", i);
        if !task.name.is_empty() && !seen.insert(task.name.as_str()) {
            errors.push(
                join(&task_path, "Name"),
                format!("duplicate task name {:?}", task.name),
            );
        }
        validate_task(job_type, group, task, &task_path, &mut ports, errors);
    }
}

/// A main task runs for the life of the allocation, without lifecycle hook.
fn is_main_task(task: &Task) -> bool {
    task.lifecycle
        .as_ref()
        .is_none_or(|lifecycle| lifecycle.hook.is_empty())
}

fn validate_task(
    job_type: &str,
    group: &TaskGroup,
    task: &Task,
    path: &str,
    ports: &mut PortRegistry,
    errors: &mut ValidationErrors,
) {
    let name_path = join(path, "Name");
    if task.name.is_empty() {
        errors.push(name_path, "required");
    } else if task.name == "alloc" {
        errors.push(name_path, "must not be \"alloc\"");
    } else if task.name.contains(['/', '\\']) {
        errors.push(name_path, "contains a slash");
    } else if task.name.contains('\0') {
        errors.push(name_path, "contains a null character");
    }
    if task.driver.is_empty() {
        errors.push(join(path, "Driver"), "required");
    }
    if task.kill_timeout < 0 {
        errors.push(join(path, "KillTimeout"), "must be non-negative");
    } else if let Some(update) = group.update.as_ref().filter(|update| {
        job_type == JOB_TYPE_SERVICE
            && update.progress_deadline_ns() > 0
            && task.kill_timeout > update.progress_deadline_ns()
    }) {
        errors.push(
            join(path, "KillTimeout"),
            format!(
                "must not be longer than the group's ProgressDeadline ({})",
                format_duration(update.progress_deadline_ns())
            ),
        );
    }
    if task.shutdown_delay < 0 {
        errors.push(join(path, "ShutdownDelay"), "must be non-negative");
    }

    validate_resources(&task.resources, &join(path, "Resources"), ports, errors);

    let log = &task.log_config;
    if log.max_files < 1 {
        errors.push(join(path, "LogConfig.MaxFiles"), "must be at least 1");
    }
    if log.max_file_size_mb < 1 {
        errors.push(join(path, "LogConfig.MaxFileSizeMB"), "must be at least 1");
    }
    let log_mb = i128::from(log.max_files) * i128::from(log.max_file_size_mb);
    let disk_mb = group.ephemeral_disk.size_mb;
    if log_mb > 0 && disk_mb >= MIN_EPHEMERAL_DISK_MB && log_mb >= i128::from(disk_mb) {
        errors.push(
            join(path, "LogConfig"),
            format!(
                "log storage ({log_mb} MB) must be less than the group's ephemeral disk ({disk_mb} MB)"
            ),
        );
    }

    validate_constraints(&task.constraints, path, Level::Task, errors);
    validate_affinities(job_type, &task.affinities, path, errors);

    if let Some(policy) = &task.restart_policy {
        validate_restart(policy, &join(path, "RestartPolicy"), errors);
    }
    if let Some(lifecycle) = &task.lifecycle {
        let hook_path = join(path, "Lifecycle.Hook");
        match lifecycle.hook.as_str() {
            "" => errors.push(hook_path, "required"),
            LIFECYCLE_HOOK_PRESTART | LIFECYCLE_HOOK_POSTSTART | LIFECYCLE_HOOK_POSTSTOP => {}
            other => errors.push(hook_path, format!("unknown lifecycle hook {other:?}")),
        }
    }
}

fn validate_resources(
    resources: &Resources,
    path: &str,
    ports: &mut PortRegistry,
    errors: &mut ValidationErrors,
) {
    if resources.cores < 0 {
        errors.push(join(path, "Cores"), "must be non-negative");
    } else if resources.cores > 0 && resources.cpu > 0 {
        errors.push(join(path, "Cores"), "cannot be set together with CPU");
    }
    if resources.cores <= 0 && resources.cpu < MIN_TASK_CPU {
        errors.push(
            join(path, "CPU"),
            format!("must be at least {MIN_TASK_CPU}"),
        );
    }
    if resources.memory_mb < MIN_TASK_MEMORY_MB {
        errors.push(
            join(path, "MemoryMB"),
            format!("must be at least {MIN_TASK_MEMORY_MB}"),
        );
    }
    // 0 and -1 mean "no oversubscription" and "no limit".
    if resources.memory_max_mb > 0 && resources.memory_max_mb < resources.memory_mb {
        errors.push(
            join(path, "MemoryMaxMB"),
            format!("must not be less than MemoryMB ({})", resources.memory_mb),
        );
    } else if resources.memory_max_mb < -1 {
        errors.push(join(path, "MemoryMaxMB"), "must not be less than -1");
    }
    if resources.disk_mb != 0 {
        errors.push(
            join(path, "DiskMB"),
            "not allowed on a task, set the group's EphemeralDisk",
        );
    }
    for (i, network) in resources.networks.iter().enumerate() {
        validate_network(network, &index(path, "Networks", i), ports, errors);
    }
}

/// Port labels and static ports seen so far in a group.
#[derive(Default)]
struct PortRegistry {
    labels: BTreeSet<String>,
    /// `(host network, port)` of static ports.
    static_ports: BTreeSet<(String, i64)>,
}

fn validate_network(
    network: &NetworkResource,
    path: &str,
    ports: &mut PortRegistry,
    errors: &mut ValidationErrors,
) {
    let mode = network.mode.as_str();
    if !(matches!(mode, "" | "host" | "bridge" | "none") || mode.starts_with("cni/")) {
        errors.push(
            join(path, "Mode"),
            format!(
                "unknown network mode {mode:?} (must be \"host\", \"bridge\", \"none\" or \"cni/<name>\")"
            ),
        );
    }
    if network.mbits < 0 {
        errors.push(join(path, "MBits"), "must be non-negative");
    }
    let reserved = network
        .reserved_ports
        .iter()
        .enumerate()
        .map(|(i, port)| (index(path, "ReservedPorts", i), port));
    let dynamic = network
        .dynamic_ports
        .iter()
        .enumerate()
        .map(|(i, port)| (index(path, "DynamicPorts", i), port));
    for (port_path, port) in reserved.chain(dynamic) {
        validate_port(port, &port_path, ports, errors);
    }
}

fn validate_port(port: &Port, path: &str, ports: &mut PortRegistry, errors: &mut ValidationErrors) {
    if port.label.is_empty() {
        errors.push(join(path, "Label"), "required");
    } else if !ports.labels.insert(port.label.clone()) {
        errors.push(
            join(path, "Label"),
            format!("duplicate port label {:?}", port.label),
        );
    }
    if !(0..=MAX_PORT).contains(&port.value) {
        errors.push(
            join(path, "Value"),
            format!("must be between 0 and {MAX_PORT}"),
        );
    } else if port.value != 0 {
        let host_network = if port.host_network.is_empty() {
            "default"
        } else {
            port.host_network.as_str()
        };
        if !ports
            .static_ports
            .insert((host_network.to_owned(), port.value))
        {
            errors.push(
                join(path, "Value"),
                format!("static port {} is already reserved", port.value),
            );
        }
    }
    if !(-1..=MAX_PORT).contains(&port.to) {
        errors.push(
            join(path, "To"),
            format!("must be between -1 and {MAX_PORT}"),
        );
    }
}

/// Where a constraint is declared; some operands only make sense above tasks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Job,
    Group,
    Task,
}

fn validate_constraints(
    constraints: &[Constraint],
    path: &str,
    level: Level,
    errors: &mut ValidationErrors,
) {
    for (i, constraint) in constraints.iter().enumerate() {
        validate_constraint(constraint, &index(path, "Constraints", i), level, errors);
    }
}

fn validate_affinities(
    job_type: &str,
    affinities: &[Affinity],
    path: &str,
    errors: &mut ValidationErrors,
) {
    if job_type == JOB_TYPE_SYSTEM && !affinities.is_empty() {
        errors.push(join(path, "Affinities"), "not allowed for system jobs");
        return;
    }
    for (i, affinity) in affinities.iter().enumerate() {
        validate_affinity(affinity, &index(path, "Affinities", i), errors);
    }
}

fn validate_spreads(job_type: &str, spreads: &[Spread], path: &str, errors: &mut ValidationErrors) {
    if job_type == JOB_TYPE_SYSTEM && !spreads.is_empty() {
        errors.push(join(path, "Spreads"), "not allowed for system jobs");
        return;
    }
    for (i, spread) in spreads.iter().enumerate() {
        validate_spread(spread, &index(path, "Spreads", i), errors);
    }
}

/// Checks that `pattern` compiles when `operand` is `regexp`.
fn validate_regexp(operand: &str, pattern: &str, path: &str, errors: &mut ValidationErrors) {
    if operand != CONSTRAINT_REGEX {
        return;
    }
    if let Err(error) = Regex::new(pattern) {
        errors.push(
            join(path, "RTarget"),
            format!("invalid regular expression {pattern:?}: {error}"),
        );
    }
}

fn validate_constraint(
    constraint: &Constraint,
    path: &str,
    level: Level,
    errors: &mut ValidationErrors,
) {
    // An empty operand means "=" (see `Job::canonicalize`).
    let operand = match constraint.operand.as_str() {
        "" => CONSTRAINT_EQUAL,
        operand => operand,
    };
    if !CONSTRAINT_OPERANDS.contains(&operand) {
        errors.push(
            join(path, "Operand"),
            format!("unknown constraint operand {operand:?}"),
        );
        return;
    }
    let r_target = constraint.r_target.as_str();
    match operand {
        CONSTRAINT_DISTINCT_HOSTS | CONSTRAINT_DISTINCT_PROPERTY if level == Level::Task => {
            errors.push(
                join(path, "Operand"),
                format!("{operand:?} is not allowed on a task"),
            );
        }
        CONSTRAINT_DISTINCT_PROPERTY
            if !r_target.is_empty() && !r_target.parse::<u64>().is_ok_and(|limit| limit >= 1) =>
        {
            errors.push(join(path, "RTarget"), "must be a positive integer");
        }
        CONSTRAINT_ATTRIBUTE_IS_SET | CONSTRAINT_ATTRIBUTE_IS_NOT_SET if !r_target.is_empty() => {
            errors.push(
                join(path, "RTarget"),
                format!("must be empty for operand {operand:?}"),
            );
        }
        CONSTRAINT_DISTINCT_HOSTS
        | CONSTRAINT_DISTINCT_PROPERTY
        | CONSTRAINT_ATTRIBUTE_IS_SET
        | CONSTRAINT_ATTRIBUTE_IS_NOT_SET => {}
        _ if r_target.is_empty() => errors.push(join(path, "RTarget"), "required"),
        _ => validate_regexp(operand, r_target, path, errors),
    }
    if operand != CONSTRAINT_DISTINCT_HOSTS && constraint.l_target.is_empty() {
        errors.push(join(path, "LTarget"), "required");
    }
}

fn validate_affinity(affinity: &Affinity, path: &str, errors: &mut ValidationErrors) {
    let operand = match affinity.operand.as_str() {
        "" => CONSTRAINT_EQUAL,
        operand => operand,
    };
    if !AFFINITY_OPERANDS.contains(&operand) {
        errors.push(
            join(path, "Operand"),
            format!("unknown affinity operand {operand:?}"),
        );
    } else if affinity.r_target.is_empty() {
        errors.push(join(path, "RTarget"), "required");
    } else {
        validate_regexp(operand, &affinity.r_target, path, errors);
    }
    if affinity.l_target.is_empty() {
        errors.push(join(path, "LTarget"), "required");
    }
    if affinity.weight == 0 || !(-100..=100).contains(&affinity.weight) {
        errors.push(
            join(path, "Weight"),
            "must be a non-zero value between -100 and 100",
        );
    }
}

fn validate_spread(spread: &Spread, path: &str, errors: &mut ValidationErrors) {
    if spread.attribute.is_empty() {
        errors.push(join(path, "Attribute"), "required");
    }
    if !(1..=100).contains(&spread.weight) {
        errors.push(join(path, "Weight"), "must be between 1 and 100");
    }
    let mut values = BTreeSet::new();
    let mut total: u64 = 0;
    for (i, target) in spread.spread_target.iter().enumerate() {
        let target_path = index(path, "SpreadTarget", i);
        if !values.insert(target.value.as_str()) {
            errors.push(
                join(&target_path, "Value"),
                format!("duplicate value {:?}", target.value),
            );
        }
        if target.percent > 100 {
            errors.push(join(&target_path, "Percent"), "must be between 0 and 100");
        }
        total += u64::from(target.percent);
    }
    if total > 100 {
        errors.push(
            join(path, "SpreadTarget"),
            format!("sum of percentages ({total}) must not exceed 100"),
        );
    }
}

fn validate_restart(policy: &RestartPolicy, path: &str, errors: &mut ValidationErrors) {
    match policy.mode.as_str() {
        RESTART_MODE_FAIL | RESTART_MODE_DELAY => {}
        other => errors.push(
            join(path, "Mode"),
            format!("must be \"fail\" or \"delay\", got {other:?}"),
        ),
    }
    if policy.attempts < 0 {
        errors.push(join(path, "Attempts"), "must be non-negative");
    } else if policy.attempts == 0 && policy.mode == RESTART_MODE_DELAY {
        errors.push(
            join(path, "Attempts"),
            "must be at least 1 when Mode is \"delay\"",
        );
    }
    if policy.delay < 0 {
        errors.push(join(path, "Delay"), "must be non-negative");
    }
    if policy.interval < MIN_RESTART_INTERVAL {
        errors.push(
            join(path, "Interval"),
            format!("must be at least {}", format_duration(MIN_RESTART_INTERVAL)),
        );
    } else if i128::from(policy.attempts) * i128::from(policy.delay) > i128::from(policy.interval) {
        errors.push(
            join(path, "Interval"),
            format!(
                "{} is too short for {} attempts with a delay of {}",
                format_duration(policy.interval),
                policy.attempts,
                format_duration(policy.delay)
            ),
        );
    }
}

fn validate_reschedule(policy: &ReschedulePolicy, path: &str, errors: &mut ValidationErrors) {
    if policy.attempts < 0 {
        errors.push(join(path, "Attempts"), "must be non-negative");
    }
    // Without attempts or `Unlimited`, rescheduling is off and the other
    // settings do not matter.
    if policy.attempts <= 0 && !policy.unlimited {
        return;
    }
    if policy.unlimited && policy.attempts > 0 {
        errors.push(join(path, "Attempts"), "must be 0 when Unlimited is set");
    }
    let growing = match policy.delay_function.as_str() {
        RESCHEDULE_DELAY_CONSTANT => false,
        RESCHEDULE_DELAY_EXPONENTIAL | RESCHEDULE_DELAY_FIBONACCI => true,
        other => {
            errors.push(
                join(path, "DelayFunction"),
                format!(
                    "unknown delay function {other:?} (must be \"constant\", \"exponential\" or \"fibonacci\")"
                ),
            );
            false
        }
    };
    if policy.delay < MIN_RESCHEDULE_DELAY {
        errors.push(
            join(path, "Delay"),
            format!("must be at least {}", format_duration(MIN_RESCHEDULE_DELAY)),
        );
    }
    if growing && policy.max_delay < policy.delay.max(MIN_RESCHEDULE_DELAY) {
        errors.push(
            join(path, "MaxDelay"),
            format!(
                "must be at least Delay and at least {}",
                format_duration(MIN_RESCHEDULE_DELAY)
            ),
        );
    }
    if !policy.unlimited && policy.interval < MIN_RESCHEDULE_INTERVAL {
        errors.push(
            join(path, "Interval"),
            format!(
                "must be at least {}",
                format_duration(MIN_RESCHEDULE_INTERVAL)
            ),
        );
    }
}

fn validate_update(update: &UpdateStrategy, path: &str, errors: &mut ValidationErrors) {
    match update.health_check.as_str() {
        HEALTH_CHECK_CHECKS | HEALTH_CHECK_TASK_STATES | HEALTH_CHECK_MANUAL => {}
        other => errors.push(
            join(path, "HealthCheck"),
            format!(
                "unknown health check {other:?} (must be \"checks\", \"task_states\" or \"manual\")"
            ),
        ),
    }
    if update.max_parallel < 0 {
        errors.push(join(path, "MaxParallel"), "must be non-negative");
    }
    if update.canary < 0 {
        errors.push(join(path, "Canary"), "must be non-negative");
    } else if update.canary == 0 && update.auto_promote {
        errors.push(
            join(path, "AutoPromote"),
            "requires Canary to be at least 1",
        );
    }
    if update.min_healthy_time < 0 {
        errors.push(join(path, "MinHealthyTime"), "must be non-negative");
    }
    if update.healthy_deadline <= 0 {
        errors.push(join(path, "HealthyDeadline"), "must be positive");
    }
    if update.progress_deadline_ns() < 0 {
        errors.push(join(path, "ProgressDeadline"), "must be non-negative");
    }
    if update.min_healthy_time >= update.healthy_deadline {
        errors.push(
            join(path, "MinHealthyTime"),
            "must be less than HealthyDeadline",
        );
    }
    if update.progress_deadline_ns() != 0
        && update.healthy_deadline >= update.progress_deadline_ns()
    {
        errors.push(
            join(path, "HealthyDeadline"),
            "must be less than ProgressDeadline",
        );
    }
    if update.stagger <= 0 {
        errors.push(join(path, "Stagger"), "must be positive");
    }
}

fn validate_migrate(migrate: &MigrateStrategy, path: &str, errors: &mut ValidationErrors) {
    if migrate.max_parallel < 0 {
        errors.push(join(path, "MaxParallel"), "must be non-negative");
    }
    match migrate.health_check.as_str() {
        HEALTH_CHECK_CHECKS | HEALTH_CHECK_TASK_STATES => {}
        "" if migrate.max_parallel <= 0 => {}
        "" => errors.push(join(path, "HealthCheck"), "required"),
        other => errors.push(
            join(path, "HealthCheck"),
            format!("unknown health check {other:?} (must be \"checks\" or \"task_states\")"),
        ),
    }
    if migrate.min_healthy_time < 0 {
        errors.push(join(path, "MinHealthyTime"), "must be non-negative");
    }
    if migrate.healthy_deadline < 0 {
        errors.push(join(path, "HealthyDeadline"), "must be non-negative");
    }
    if migrate.min_healthy_time > migrate.healthy_deadline {
        errors.push(
            join(path, "MinHealthyTime"),
            "must not be greater than HealthyDeadline",
        );
    }
}

fn validate_multiregion(multiregion: &Multiregion, path: &str, errors: &mut ValidationErrors) {
    let strategy_path = join(path, "Strategy");
    if multiregion.strategy.max_parallel < 0 {
        errors.push(join(&strategy_path, "MaxParallel"), "must be non-negative");
    }
    match multiregion.strategy.on_failure.as_str() {
        MULTIREGION_ON_FAILURE_DEFAULT
        | MULTIREGION_ON_FAILURE_FAIL_ALL
        | MULTIREGION_ON_FAILURE_FAIL_LOCAL => {}
        other => errors.push(
            join(&strategy_path, "OnFailure"),
            format!("unknown value {other:?} (must be \"\", \"fail_all\" or \"fail_local\")"),
        ),
    }
    if multiregion.regions.is_empty() {
        errors.push(join(path, "Regions"), "required");
    }
    let mut seen = BTreeSet::new();
    for (i, region) in multiregion.regions.iter().enumerate() {
        let region_path = index(path, "Regions", i);
        if region.name.is_empty() {
            errors.push(join(&region_path, "Name"), "required");
        } else if !seen.insert(region.name.as_str()) {
            errors.push(
                join(&region_path, "Name"),
                format!("duplicate region name {:?}", region.name),
            );
        }
        if region.count < 0 {
            errors.push(join(&region_path, "Count"), "must be non-negative");
        }
        for (j, datacenter) in region.datacenters.iter().enumerate() {
            if datacenter.is_empty() {
                errors.push(index(&region_path, "Datacenters", j), "must not be empty");
            }
        }
    }
}
