//! Task drivers: what starts, watches, signals and stops a task.
//!
//! * [`raw_exec::RawExecDriver`]: a process on the host, in its own process
//!   group (session), stopped with its kill signal and then `SIGKILL` to the
//!   whole group.
//! * [`exec::ExecDriver`]: the same plus isolation: a per-task cgroup (memory
//!   limit, CPU shares/weight) and its own PID and mount namespaces.
//! * [`mock::MockDriver`] (`mock_driver`, also `mock`): simulated tasks for
//!   tests and scale benchmarks.
//!
//! A started task is described by a [`TaskHandle`], which the agent stores so
//! that a restarted agent can [`Driver::recover`] it instead of starting a
//! duplicate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use proto::model::DriverInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::allocdir::TaskDirs;

pub mod cgroup;
pub mod exec;
pub mod mock;
pub mod procfs;
pub mod raw_exec;
pub mod shim;

/// What a driver reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverFingerprint {
    /// The driver is present.
    pub detected: bool,
    /// The driver can run tasks.
    pub healthy: bool,
    /// Why it has that health.
    pub description: String,
    /// Driver attributes (`driver.<name>.<key>`).
    pub attributes: BTreeMap<String, String>,
}

impl DriverFingerprint {
    /// A healthy driver.
    pub fn healthy() -> Self {
        Self {
            detected: true,
            healthy: true,
            description: "Healthy".into(),
            attributes: BTreeMap::new(),
        }
    }

    /// A detected driver that cannot run tasks, and why.
    pub fn unhealthy(why: impl Into<String>) -> Self {
        Self {
            detected: true,
            healthy: false,
            description: why.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// As the node reports it.
    pub fn to_info(&self) -> DriverInfo {
        DriverInfo {
            attributes: self.attributes.clone(),
            detected: self.detected,
            healthy: self.healthy,
            health_description: self.description.clone(),
            update_time: Some(proto::model::time::format_rfc3339(crate::util::now_ns())),
        }
    }
}

/// Resources a task was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskResources {
    /// CPU, MHz.
    pub cpu_mhz: i64,
    /// Memory, MB.
    pub memory_mb: i64,
    /// Memory it may burst to, MB (0: none).
    pub memory_max_mb: i64,
}

/// Everything a driver needs to start a task.
#[derive(Debug, Clone, Default)]
pub struct TaskConfig {
    /// `<alloc id>/<task name>`: unique on the node.
    pub id: String,
    /// Allocation id.
    pub alloc_id: String,
    /// Task name.
    pub task_name: String,
    /// The task's driver configuration (interpolated).
    pub config: Map<String, Value>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// User to run as; empty for the agent's user.
    pub user: String,
    /// The task's directories, when the driver uses them.
    pub dirs: Option<TaskDirs>,
    /// Resources.
    pub resources: TaskResources,
    /// Where stdout goes (a FIFO); `None` discards it.
    pub stdout: Option<PathBuf>,
    /// Where stderr goes (a FIFO); `None` discards it.
    pub stderr: Option<PathBuf>,
}

/// A started task, as stored in the local state to re-attach to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHandle {
    /// Driver name.
    pub driver: String,
    /// [`TaskConfig::id`].
    pub task_id: String,
    /// Pid of the task's top process (its shim), 0 for none.
    pub pid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its start time in clock ticks after boot (`/proc/<pid>/stat` field 22):
    /// with the pid, the identity of the process.
    pub start_ticks: u64,
    /// When it started, Unix nanoseconds.
    pub started_at: i64,
    /// File the shim writes the exit status into.
    pub exit_file: Option<PathBuf>,
    /// Cgroup directories of the task.
    pub cgroups: Vec<PathBuf>,
    /// Driver-specific state.
    pub state: Value,
}

/// How a task ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitResult {
    /// Exit code; `128 + n` when killed by signal `n` (as Nomad reports);
    /// -1 when unknown.
    pub exit_code: i64,
    /// Signal that ended it, 0 for none.
    pub signal: i64,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// What went wrong, when the driver knows more than the code.
    pub err: Option<String>,
}

impl ExitResult {
    /// Exit code 0, no signal, no error.
    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal == 0 && !self.oom_killed && self.err.is_none()
    }

    /// From a shim's exit code: codes above 128 mean the task died of signal
    /// `code - 128`.
    pub fn from_code(code: i64) -> Self {
        let signal = if (129..=128 + 64).contains(&code) {
            code - 128
        } else {
            0
        };
        Self {
            exit_code: code,
            signal,
            ..Default::default()
        }
    }

    /// From a signal that killed the shim itself.
    pub fn from_signal(sig: i64) -> Self {
        Self {
            exit_code: 128 + sig,
            signal: sig,
            ..Default::default()
        }
    }

    /// The exit of a task whose status could not be learned (it ended while
    /// the agent was not running and left no status behind).
    pub fn unknown(why: impl Into<String>) -> Self {
        Self {
            exit_code: -1,
            signal: 0,
            oom_killed: false,
            err: Some(why.into()),
        }
    }
}

/// Resource usage of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUsage {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU time used so far, seconds.
    pub cpu_seconds: f64,
    /// Pids of the task's processes.
    pub pids: Vec<i32>,
}

/// Why a driver failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The driver cannot run tasks on this node.
    #[error("driver {driver} is unhealthy: {reason}")]
    Unhealthy {
        /// Driver name.
        driver: String,
        /// Why.
        reason: String,
    },
    /// The task's configuration is unusable.
    #[error("invalid task config: {0}")]
    BadConfig(String),
    /// Starting failed; `recoverable` failures are retried by the restart
    /// policy.
    #[error("{message}")]
    Start {
        /// What happened.
        message: String,
        /// Whether trying again may help.
        recoverable: bool,
    },
    /// The driver has no such task (not started, or gone).
    #[error("task not found")]
    NotFound,
    /// Something else.
    #[error("{0}")]
    Other(String),
}

impl DriverError {
    /// Whether the restart policy may retry after this error.
    pub fn recoverable(&self) -> bool {
        match self {
            DriverError::Start { recoverable, .. } => *recoverable,
            DriverError::Other(_) => true,
            _ => false,
        }
    }
}

/// A task driver. Methods taking a [`TaskHandle`] work on tasks started by
/// this driver instance or re-attached with [`Driver::recover`].
pub trait Driver: Send + Sync + 'static {
    /// The driver's name (`raw_exec`, `exec`, `mock_driver`).
    fn name(&self) -> &str;

    /// Whether the driver is usable here.
    fn fingerprint(&self) -> DriverFingerprint;

    /// Whether tasks need an allocation directory (and logs).
    fn needs_dirs(&self) -> bool {
        true
    }

    /// Starts a task.
    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>>;

    /// Re-attaches to a task started by an earlier agent. After `Ok`, [`wait`]
    /// reports its exit (immediately, if it already ended).
    ///
    /// [`wait`]: Driver::wait
    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Waits for the task to exit. May be called any number of times.
    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult>;

    /// Sends a signal to the task.
    fn signal(&self, handle: &TaskHandle, signal: i32) -> Result<(), DriverError>;

    /// Stops the task: `signal`, then after `timeout` a forced kill. Returns
    /// once it exited.
    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: i32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Forgets a task that exited and frees what the driver kept for it.
    fn destroy(&self, handle: &TaskHandle);

    /// Resource usage, if the driver measures it.
    fn stats(&self, _handle: &TaskHandle) -> Option<TaskUsage> {
        None
    }

    /// Stops watching tasks (the agent is stopping); tasks keep running.
    fn detach_all(&self) {}
}

/// The drivers of an agent, by name.
#[derive(Clone, Default)]
pub struct Drivers {
    by_name: BTreeMap<String, Arc<dyn Driver>>,
}

impl Drivers {
    /// No drivers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a driver under its name (and `mock` for `mock_driver`).
    pub fn with(mut self, d: Arc<dyn Driver>) -> Self {
        if d.name() == mock::NAME {
            self.by_name.insert(mock::ALIAS.to_string(), d.clone());
        }
        self.by_name.insert(d.name().to_string(), d);
        self
    }

    /// The driver called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.by_name.get(name).cloned()
    }

    /// The node's `Drivers` map (aliases left out).
    pub fn infos(&self) -> BTreeMap<String, DriverInfo> {
        self.by_name
            .iter()
            .filter(|(n, _)| n.as_str() != mock::ALIAS)
            .map(|(n, d)| (n.clone(), d.fingerprint().to_info()))
            .collect()
    }

    /// Every distinct driver.
    pub fn all(&self) -> Vec<Arc<dyn Driver>> {
        self.by_name
            .iter()
            .filter(|(n, _)| n.as_str() != mock::ALIAS)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

/// uid and gid of a user, for handing task directories to it.
pub fn shim_user(name: &str) -> Option<(u32, u32)> {
    shim::lookup_user(name)
}
