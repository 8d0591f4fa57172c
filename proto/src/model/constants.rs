//! String constants of Nomad's API (job types, statuses, trigger reasons, ...)
//! and the default values [`Job::canonicalize`](super::Job::canonicalize)
//! applies.
//!
//! Statuses are kept as plain strings in the model, exactly as they travel on
//! the wire; compare them against these constants.

// ---------------------------------------------------------------------------
// Durations (the model stores every duration as integer nanoseconds).

/// One microsecond in nanoseconds.
pub const MICROSECOND: i64 = 1_000;
/// One millisecond in nanoseconds.
pub const MILLISECOND: i64 = 1_000_000;
/// One second in nanoseconds.
pub const SECOND: i64 = 1_000_000_000;
/// One minute in nanoseconds.
pub const MINUTE: i64 = 60 * SECOND;
/// One hour in nanoseconds.
pub const HOUR: i64 = 60 * MINUTE;

// ---------------------------------------------------------------------------
// Jobs.

/// A long-running job whose allocations are restarted and rescheduled.
pub const JOB_TYPE_SERVICE: &str = "service";
/// A job that runs to completion.
pub const JOB_TYPE_BATCH: &str = "batch";
/// A long-running job placed on every eligible node.
pub const JOB_TYPE_SYSTEM: &str = "system";
/// A run-to-completion job placed on every eligible node.
pub const JOB_TYPE_SYSBATCH: &str = "sysbatch";
/// Every job type Nomad knows.
pub const JOB_TYPES: [&str; 4] = [
    JOB_TYPE_SERVICE,
    JOB_TYPE_BATCH,
    JOB_TYPE_SYSTEM,
    JOB_TYPE_SYSBATCH,
];

/// The job is registered but has no running allocation yet.
pub const JOB_STATUS_PENDING: &str = "pending";
/// The job has running allocations.
pub const JOB_STATUS_RUNNING: &str = "running";
/// The job is stopped or all its allocations are terminal.
pub const JOB_STATUS_DEAD: &str = "dead";

/// Namespace used when a job names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Region used when a job names none.
pub const DEFAULT_REGION: &str = "global";
/// Node pool used when a job names none.
pub const DEFAULT_NODE_POOL: &str = "default";
/// The node pool every node belongs to.
pub const NODE_POOL_ALL: &str = "all";
/// Datacenter wildcard used when a job names no datacenter (Nomad 1.5+).
pub const ALL_DATACENTERS: &str = "*";

/// Priority used when a job names none.
pub const JOB_DEFAULT_PRIORITY: i64 = 50;
/// Lowest valid job priority.
pub const JOB_MIN_PRIORITY: i64 = 1;
/// Highest valid job priority.
pub const JOB_MAX_PRIORITY: i64 = 100;

// ---------------------------------------------------------------------------
// Task groups and tasks.

/// Restart a failed task up to `Attempts` times, then fail it.
pub const RESTART_MODE_FAIL: &str = "fail";
/// Restart a failed task up to `Attempts` times, then wait for `Interval` and
/// start over.
pub const RESTART_MODE_DELAY: &str = "delay";

/// Reschedule delay stays `Delay`.
pub const RESCHEDULE_DELAY_CONSTANT: &str = "constant";
/// Reschedule delay doubles each attempt, up to `MaxDelay`.
pub const RESCHEDULE_DELAY_EXPONENTIAL: &str = "exponential";
/// Reschedule delay follows the Fibonacci sequence, up to `MaxDelay`.
pub const RESCHEDULE_DELAY_FIBONACCI: &str = "fibonacci";

/// Allocation health is decided by task states and service checks.
pub const HEALTH_CHECK_CHECKS: &str = "checks";
/// Allocation health is decided by task states only.
pub const HEALTH_CHECK_TASK_STATES: &str = "task_states";
/// Allocation health is set by an operator.
pub const HEALTH_CHECK_MANUAL: &str = "manual";

/// Task runs before the main tasks.
pub const LIFECYCLE_HOOK_PRESTART: &str = "prestart";
/// Task runs after the main tasks have started.
pub const LIFECYCLE_HOOK_POSTSTART: &str = "poststart";
/// Task runs after the main tasks have stopped.
pub const LIFECYCLE_HOOK_POSTSTOP: &str = "poststop";

/// Default size of a group's ephemeral disk, in MB.
pub const DEFAULT_EPHEMERAL_DISK_MB: i64 = 300;
/// Default CPU of a task, in MHz.
pub const DEFAULT_TASK_CPU: i64 = 100;
/// Default memory of a task, in MB.
pub const DEFAULT_TASK_MEMORY_MB: i64 = 300;
/// Smallest valid task CPU, in MHz.
pub const MIN_TASK_CPU: i64 = 1;
/// Smallest valid task memory, in MB.
pub const MIN_TASK_MEMORY_MB: i64 = 10;
/// Default time between a task's kill signal and its forced kill.
pub const DEFAULT_KILL_TIMEOUT: i64 = 5 * SECOND;
/// Default number of rotated log files kept per task stream.
pub const DEFAULT_LOG_MAX_FILES: i64 = 10;
/// Default size of one log file, in MB.
pub const DEFAULT_LOG_MAX_FILE_SIZE_MB: i64 = 10;

// ---------------------------------------------------------------------------
// Constraint and affinity operands.

/// Equality (`=`).
pub const CONSTRAINT_EQUAL: &str = "=";
/// Equality (`==`).
pub const CONSTRAINT_DOUBLE_EQUAL: &str = "==";
/// Equality (`is`).
pub const CONSTRAINT_IS: &str = "is";
/// Inequality (`!=`).
pub const CONSTRAINT_NOT_EQUAL: &str = "!=";
/// Inequality (`not`).
pub const CONSTRAINT_NOT: &str = "not";
/// Lexical or numeric `<`.
pub const CONSTRAINT_LESS: &str = "<";
/// Lexical or numeric `<=`.
pub const CONSTRAINT_LESS_EQUAL: &str = "<=";
/// Lexical or numeric `>`.
pub const CONSTRAINT_GREATER: &str = ">";
/// Lexical or numeric `>=`.
pub const CONSTRAINT_GREATER_EQUAL: &str = ">=";
/// `LTarget` matches the regular expression `RTarget`.
pub const CONSTRAINT_REGEX: &str = "regexp";
/// `LTarget` satisfies the version constraint `RTarget`.
pub const CONSTRAINT_VERSION: &str = "version";
/// `LTarget` satisfies the semver constraint `RTarget`.
pub const CONSTRAINT_SEMVER: &str = "semver";
/// The comma-separated set `LTarget` contains every item of `RTarget`.
pub const CONSTRAINT_SET_CONTAINS: &str = "set_contains";
/// The comma-separated set `LTarget` contains every item of `RTarget`.
pub const CONSTRAINT_SET_CONTAINS_ALL: &str = "set_contains_all";
/// The comma-separated set `LTarget` contains one item of `RTarget`.
pub const CONSTRAINT_SET_CONTAINS_ANY: &str = "set_contains_any";
/// `LTarget` is set on the node.
pub const CONSTRAINT_ATTRIBUTE_IS_SET: &str = "is_set";
/// `LTarget` is not set on the node.
pub const CONSTRAINT_ATTRIBUTE_IS_NOT_SET: &str = "is_not_set";
/// At most one allocation of the job or group per node.
pub const CONSTRAINT_DISTINCT_HOSTS: &str = "distinct_hosts";
/// At most `RTarget` (default 1) allocations per value of `LTarget`.
pub const CONSTRAINT_DISTINCT_PROPERTY: &str = "distinct_property";

/// Every operand a constraint may use.
pub const CONSTRAINT_OPERANDS: [&str; 19] = [
    CONSTRAINT_EQUAL,
    CONSTRAINT_DOUBLE_EQUAL,
    CONSTRAINT_IS,
    CONSTRAINT_NOT_EQUAL,
    CONSTRAINT_NOT,
    CONSTRAINT_LESS,
    CONSTRAINT_LESS_EQUAL,
    CONSTRAINT_GREATER,
    CONSTRAINT_GREATER_EQUAL,
    CONSTRAINT_REGEX,
    CONSTRAINT_VERSION,
    CONSTRAINT_SEMVER,
    CONSTRAINT_SET_CONTAINS,
    CONSTRAINT_SET_CONTAINS_ALL,
    CONSTRAINT_SET_CONTAINS_ANY,
    CONSTRAINT_ATTRIBUTE_IS_SET,
    CONSTRAINT_ATTRIBUTE_IS_NOT_SET,
    CONSTRAINT_DISTINCT_HOSTS,
    CONSTRAINT_DISTINCT_PROPERTY,
];

/// Every operand an affinity may use (the constraint operands that compare a
/// node attribute with a value).
pub const AFFINITY_OPERANDS: [&str; 15] = [
    CONSTRAINT_EQUAL,
    CONSTRAINT_DOUBLE_EQUAL,
    CONSTRAINT_IS,
    CONSTRAINT_NOT_EQUAL,
    CONSTRAINT_NOT,
    CONSTRAINT_LESS,
    CONSTRAINT_LESS_EQUAL,
    CONSTRAINT_GREATER,
    CONSTRAINT_GREATER_EQUAL,
    CONSTRAINT_REGEX,
    CONSTRAINT_VERSION,
    CONSTRAINT_SEMVER,
    CONSTRAINT_SET_CONTAINS,
    CONSTRAINT_SET_CONTAINS_ALL,
    CONSTRAINT_SET_CONTAINS_ANY,
];

/// Default weight of a spread block.
pub const DEFAULT_SPREAD_WEIGHT: i32 = 50;

// ---------------------------------------------------------------------------
// Multiregion.

/// On a region's failure, keep the other regions going.
pub const MULTIREGION_ON_FAILURE_DEFAULT: &str = "";
/// On a region's failure, fail the deployment in every region.
pub const MULTIREGION_ON_FAILURE_FAIL_ALL: &str = "fail_all";
/// On a region's failure, fail only that region's deployment.
pub const MULTIREGION_ON_FAILURE_FAIL_LOCAL: &str = "fail_local";

// ---------------------------------------------------------------------------
// Evaluations.

/// The evaluation could not place everything and waits for capacity.
pub const EVAL_STATUS_BLOCKED: &str = "blocked";
/// The evaluation waits for a scheduler.
pub const EVAL_STATUS_PENDING: &str = "pending";
/// The evaluation was processed.
pub const EVAL_STATUS_COMPLETE: &str = "complete";
/// The evaluation could not be processed.
pub const EVAL_STATUS_FAILED: &str = "failed";
/// The evaluation was superseded before it was processed.
pub const EVAL_STATUS_CANCELED: &str = "canceled";

/// A job was registered.
pub const EVAL_TRIGGER_JOB_REGISTER: &str = "job-register";
/// A job was stopped or purged.
pub const EVAL_TRIGGER_JOB_DEREGISTER: &str = "job-deregister";
/// A periodic job launched a child.
pub const EVAL_TRIGGER_PERIODIC_JOB: &str = "periodic-job";
/// A node is draining.
pub const EVAL_TRIGGER_NODE_DRAIN: &str = "node-drain";
/// A node changed status or eligibility.
pub const EVAL_TRIGGER_NODE_UPDATE: &str = "node-update";
/// An allocation was stopped by an operator.
pub const EVAL_TRIGGER_ALLOC_STOP: &str = "alloc-stop";
/// A core (garbage collection) evaluation.
pub const EVAL_TRIGGER_SCHEDULED: &str = "scheduled";
/// A rolling update continues.
pub const EVAL_TRIGGER_ROLLING_UPDATE: &str = "rolling-update";
/// The deployment watcher changed a deployment.
pub const EVAL_TRIGGER_DEPLOYMENT_WATCHER: &str = "deployment-watcher";
/// A failed evaluation is retried.
pub const EVAL_TRIGGER_FAILED_FOLLOW_UP: &str = "failed-follow-up";
/// The plan was rejected too many times.
pub const EVAL_TRIGGER_MAX_PLANS: &str = "max-plan-attempts";
/// An allocation failed and may be rescheduled.
pub const EVAL_TRIGGER_RETRY_FAILED_ALLOC: &str = "alloc-failure";
/// A blocked evaluation is unblocked to place queued allocations.
pub const EVAL_TRIGGER_QUEUED_ALLOCS: &str = "queued-allocs";
/// Allocations were preempted.
pub const EVAL_TRIGGER_PREEMPTION: &str = "preemption";
/// A job's group count was scaled.
pub const EVAL_TRIGGER_SCALING: &str = "job-scaling";
/// A disconnected client exceeded its `MaxClientDisconnect`.
pub const EVAL_TRIGGER_MAX_DISCONNECT_TIMEOUT: &str = "max-disconnect-timeout";
/// A disconnected client reconnected.
pub const EVAL_TRIGGER_RECONNECT: &str = "reconnect";

// ---------------------------------------------------------------------------
// Allocations.

/// The allocation should run.
pub const ALLOC_DESIRED_RUN: &str = "run";
/// The allocation should stop.
pub const ALLOC_DESIRED_STOP: &str = "stop";
/// The allocation should stop because it was evicted (preempted, drained).
pub const ALLOC_DESIRED_EVICT: &str = "evict";

/// The client has not started the allocation yet.
pub const ALLOC_CLIENT_PENDING: &str = "pending";
/// The allocation's tasks are running.
pub const ALLOC_CLIENT_RUNNING: &str = "running";
/// Every task finished successfully.
pub const ALLOC_CLIENT_COMPLETE: &str = "complete";
/// A task failed.
pub const ALLOC_CLIENT_FAILED: &str = "failed";
/// The allocation's node is down.
pub const ALLOC_CLIENT_LOST: &str = "lost";
/// The allocation's node is disconnected; its state is unknown.
pub const ALLOC_CLIENT_UNKNOWN: &str = "unknown";

/// A task waits to start.
pub const TASK_STATE_PENDING: &str = "pending";
/// A task runs.
pub const TASK_STATE_RUNNING: &str = "running";
/// A task ended and will not restart.
pub const TASK_STATE_DEAD: &str = "dead";

/// The client received the task.
pub const TASK_EVENT_RECEIVED: &str = "Received";
/// The client is setting up the task's environment.
pub const TASK_EVENT_SETUP: &str = "Task Setup";
/// The task's environment could not be set up.
pub const TASK_EVENT_SETUP_FAILURE: &str = "Setup Failure";
/// The driver could not start the task.
pub const TASK_EVENT_DRIVER_FAILURE: &str = "Driver Failure";
/// The driver emitted a message.
pub const TASK_EVENT_DRIVER_MESSAGE: &str = "Driver";
/// The task started.
pub const TASK_EVENT_STARTED: &str = "Started";
/// The task exited.
pub const TASK_EVENT_TERMINATED: &str = "Terminated";
/// The client is killing the task.
pub const TASK_EVENT_KILLING: &str = "Killing";
/// The task was killed.
pub const TASK_EVENT_KILLED: &str = "Killed";
/// The task will restart.
pub const TASK_EVENT_RESTARTING: &str = "Restarting";
/// The task will not restart (its restart policy is exhausted).
pub const TASK_EVENT_NOT_RESTARTING: &str = "Not Restarting";
/// A sibling task failed, so this one is killed.
pub const TASK_EVENT_SIBLING_FAILED: &str = "Sibling Task Failed";
/// The group's leader task died, so this one is killed.
pub const TASK_EVENT_LEADER_DEAD: &str = "Leader Task Dead";
/// The task is being signalled.
pub const TASK_EVENT_SIGNALING: &str = "Signaling";
/// The task was asked to restart.
pub const TASK_EVENT_RESTART_SIGNAL: &str = "Restart Signal";
/// The task's configuration failed validation on the client.
pub const TASK_EVENT_FAILED_VALIDATION: &str = "Failed Validation";
/// The client is downloading the task's artifacts.
pub const TASK_EVENT_DOWNLOADING_ARTIFACTS: &str = "Downloading Artifacts";
/// An artifact could not be downloaded.
pub const TASK_EVENT_ARTIFACT_DOWNLOAD_FAILED: &str = "Failed Artifact Download";
/// A task hook failed.
pub const TASK_EVENT_HOOK_FAILED: &str = "Task hook failed";

// ---------------------------------------------------------------------------
// Nodes.

/// The node is registering.
pub const NODE_STATUS_INIT: &str = "initializing";
/// The node heartbeats and may run work.
pub const NODE_STATUS_READY: &str = "ready";
/// The node missed its heartbeats.
pub const NODE_STATUS_DOWN: &str = "down";
/// The node missed its heartbeats but its allocations may still run.
pub const NODE_STATUS_DISCONNECTED: &str = "disconnected";

/// The scheduler may place work on the node.
pub const NODE_SCHEDULING_ELIGIBLE: &str = "eligible";
/// The scheduler must not place new work on the node.
pub const NODE_SCHEDULING_INELIGIBLE: &str = "ineligible";

/// Node attribute holding its IP address (the list stub's `Address`).
pub const NODE_ATTR_ADDRESS: &str = "unique.network.ip-address";
/// Node attribute holding its agent version (the list stub's `Version`).
pub const NODE_ATTR_VERSION: &str = "nomad.version";

// ---------------------------------------------------------------------------
// Deployments.

/// The deployment is placing allocations.
pub const DEPLOYMENT_STATUS_RUNNING: &str = "running";
/// An operator paused the deployment.
pub const DEPLOYMENT_STATUS_PAUSED: &str = "paused";
/// The deployment failed.
pub const DEPLOYMENT_STATUS_FAILED: &str = "failed";
/// Every group of the deployment is healthy.
pub const DEPLOYMENT_STATUS_SUCCESSFUL: &str = "successful";
/// The deployment was superseded or its job stopped.
pub const DEPLOYMENT_STATUS_CANCELLED: &str = "cancelled";
/// A multiregion deployment waits for its turn.
pub const DEPLOYMENT_STATUS_PENDING: &str = "pending";
/// A multiregion deployment waits for the other regions.
pub const DEPLOYMENT_STATUS_BLOCKED: &str = "blocked";
/// A multiregion deployment is being unblocked.
pub const DEPLOYMENT_STATUS_UNBLOCKING: &str = "unblocking";
/// The deployment is being created.
pub const DEPLOYMENT_STATUS_INITIALIZING: &str = "initializing";
