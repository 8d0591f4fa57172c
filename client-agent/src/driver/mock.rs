//! `mock_driver` (also `mock`): simulated tasks, for tests and scale
//! benchmarks. No process is started; a task "runs" for a while and exits.
//!
//! Config (Nomad's mock driver names):
//! * `run_for`: how long the task runs (Go duration string or nanoseconds);
//!   absent: until stopped; `"0s"`: exits at once.
//! * `exit_code`, `exit_signal`: how it exits after `run_for`.
//! * `exit_err_msg`: an error reported with the exit.
//! * `start_error`: starting fails with this message;
//!   `start_error_recoverable` (default `true`) lets the restart policy retry.
//! * `start_block_for`: starting takes this long.
//! * `kill_after`: the task dies as if `SIGKILL`ed after this long.
//! * `stdout_string`: written to the task's stdout log at start.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Driver, DriverError, DriverFingerprint, ExitResult, TaskConfig, TaskHandle};
use crate::util::{duration_value, lock, now_ns};

/// The driver's name (Nomad's).
pub const NAME: &str = "mock_driver";
/// Accepted alias.
pub const ALIAS: &str = "mock";

/// How a mock task behaves, as kept in its handle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockSpec {
    /// Runs this long (ns); `None`: until stopped.
    pub run_for: Option<u64>,
    /// Dies of SIGKILL after this long (ns).
    pub kill_after: Option<u64>,
    /// Exit code after `run_for`.
    pub exit_code: i64,
    /// Exit signal after `run_for`.
    pub exit_signal: i64,
    /// Error reported with the exit.
    pub exit_err: Option<String>,
}

impl MockSpec {
    /// Reads the task config.
    pub fn parse(cfg: &serde_json::Map<String, serde_json::Value>) -> Result<Self, DriverError> {
        let dur = |k: &str| -> Result<Option<u64>, DriverError> {
            match cfg.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => duration_value(v)
                    .map(|d| Some(d.as_nanos() as u64))
                    .ok_or_else(|| DriverError::BadConfig(format!("`{k}` is not a duration"))),
            }
        };
        let int = |k: &str| -> i64 {
            cfg.get(k)
                .and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(0)
        };
        Ok(Self {
            run_for: dur("run_for")?,
            kill_after: dur("kill_after")?,
            exit_code: int("exit_code"),
            exit_signal: int("exit_signal"),
            exit_err: cfg
                .get("exit_err_msg")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(String::from),
        })
    }

    /// When and how the task ends by itself, after `elapsed`.
    fn ending(&self) -> Option<(Duration, ExitResult)> {
        let natural = self.run_for.map(|ns| {
            let mut r = ExitResult {
                exit_code: self.exit_code,
                signal: self.exit_signal,
                oom_killed: false,
                err: self.exit_err.clone(),
            };
            if self.exit_signal > 0 && self.exit_code == 0 {
                r.exit_code = 128 + self.exit_signal;
            }
            (Duration::from_nanos(ns), r)
        });
        let killed = self.kill_after.map(|ns| {
            (
                Duration::from_nanos(ns),
                ExitResult::from_signal(libc::SIGKILL as i64),
            )
        });
        match (natural, killed) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

struct MockTask {
    started: Instant,
    started_at: i64,
    ending: Option<(Duration, ExitResult)>,
    stopped: watch::Sender<Option<ExitResult>>,
}

/// The mock driver.
#[derive(Default)]
pub struct MockDriver {
    tasks: Mutex<HashMap<String, Arc<MockTask>>>,
}

impl MockDriver {
    /// A driver with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tasks it knows.
    pub fn task_count(&self) -> usize {
        lock(&self.tasks).len()
    }

    fn get(&self, handle: &TaskHandle) -> Option<Arc<MockTask>> {
        lock(&self.tasks)
            .get(&handle.task_id)
            .filter(|t| t.started_at == handle.started_at)
            .cloned()
    }

    fn insert(&self, task_id: &str, spec: &MockSpec, started_at: i64, elapsed: Duration) {
        let (tx, _) = watch::channel(None);
        let t = MockTask {
            started: Instant::now() - elapsed,
            started_at,
            ending: spec.ending(),
            stopped: tx,
        };
        lock(&self.tasks).insert(task_id.to_string(), Arc::new(t));
    }

    async fn start_task(&self, cfg: &TaskConfig) -> Result<TaskHandle, DriverError> {
        let spec = MockSpec::parse(&cfg.config)?;
        if let Some(d) = cfg.config.get("start_block_for").and_then(duration_value) {
            tokio::time::sleep(d).await;
        }
        if let Some(msg) = cfg
            .config
            .get("start_error")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
        {
            let recoverable = cfg
                .config
                .get("start_error_recoverable")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            return Err(DriverError::Start {
                message: msg.to_string(),
                recoverable,
            });
        }
        if let (Some(s), Some(out)) = (
            cfg.config.get("stdout_string").and_then(|v| v.as_str()),
            cfg.stdout.as_ref(),
        ) {
            if let Ok(mut f) = crate::logs::open_fifo_writer(out) {
                let _ = f.write_all(s.as_bytes());
            }
        }
        let started_at = now_ns();
        self.insert(&cfg.id, &spec, started_at, Duration::ZERO);
        Ok(TaskHandle {
            driver: NAME.into(),
            task_id: cfg.id.clone(),
            started_at,
            state: serde_json::to_value(&spec).unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn wait_task(&self, handle: &TaskHandle) -> ExitResult {
        let Some(t) = self.get(handle) else {
            return ExitResult::unknown("task not found");
        };
        let mut rx = t.stopped.subscribe();
        let stopped = async move {
            let r = match rx.wait_for(|v| v.is_some()).await {
                Ok(v) => v.clone(),
                Err(_) => None,
            };
            match r {
                Some(r) => r,
                None => futures::future::pending().await,
            }
        };
        match &t.ending {
            Some((after, result)) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.started + *after) => result.clone(),
                    r = stopped => r,
                }
            }
            None => stopped.await,
        }
    }
}

impl Driver for MockDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn fingerprint(&self) -> DriverFingerprint {
        DriverFingerprint::healthy()
    }

    fn needs_dirs(&self) -> bool {
        false
    }

    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>> {
        self.start_task(cfg).boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            if self.get(handle).is_some() {
                return Ok(());
            }
            let spec: MockSpec = serde_json::from_value(handle.state.clone())
                .map_err(|e| DriverError::Other(format!("bad mock handle: {e}")))?;
            let elapsed = crate::util::ns(now_ns() - handle.started_at);
            self.insert(&handle.task_id, &spec, handle.started_at, elapsed);
            Ok(())
        }
        .boxed()
    }

    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult> {
        self.wait_task(handle).boxed()
    }

    fn signal(&self, handle: &TaskHandle, _signal: i32) -> Result<(), DriverError> {
        self.get(handle).map(|_| ()).ok_or(DriverError::NotFound)
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: i32,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            if let Some(t) = self.get(handle) {
                t.stopped.send_if_modified(|v| {
                    if v.is_none() {
                        *v = Some(ExitResult::from_signal(signal as i64));
                        true
                    } else {
                        false
                    }
                });
            }
            Ok(())
        }
        .boxed()
    }

    fn destroy(&self, handle: &TaskHandle) {
        let mut tasks = lock(&self.tasks);
        if tasks
            .get(&handle.task_id)
            .is_some_and(|t| t.started_at == handle.started_at)
        {
            tasks.remove(&handle.task_id);
        }
    }

    fn detach_all(&self) {
        lock(&self.tasks).clear();
    }
}
