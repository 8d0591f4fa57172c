//! The task runner: starts one task through its driver, waits for it,
//! applies the restart policy, and records every step as a task event.

use std::sync::Arc;
use std::time::Duration;

use proto::model::{
    Job, Task, TaskEvent, TaskState, DEFAULT_KILL_TIMEOUT, TASK_EVENT_DRIVER_FAILURE,
    TASK_EVENT_KILLED, TASK_EVENT_KILLING, TASK_EVENT_NOT_RESTARTING, TASK_EVENT_RECEIVED,
    TASK_EVENT_RESTARTING, TASK_EVENT_RESTART_SIGNAL, TASK_EVENT_SETUP, TASK_EVENT_SETUP_FAILURE,
    TASK_EVENT_SIGNALING, TASK_EVENT_STARTED, TASK_EVENT_TERMINATED, TASK_STATE_DEAD,
    TASK_STATE_PENDING, TASK_STATE_RUNNING,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::AllocShared;
use crate::allocdir::{AllocDir, TaskDirs};
use crate::driver::procfs::{signal_name, signal_number};
use crate::driver::{Driver, ExitResult, TaskConfig, TaskHandle, TaskResources};
use crate::env::{build_env, interpolate_value, task_resources, EnvInput};
use crate::logs::LogPumps;
use crate::restart::{RestartDecision, RestartTracker};
use crate::state::LocalTaskState;
use crate::status::{event, push_event};
use crate::util::{now_ns, ns};

/// Commands to a task runner.
pub(crate) enum TaskCmd {
    /// Stop the task (for good), recording `why` first if given.
    Kill { why: Option<Box<TaskEvent>> },
    /// Send a signal.
    Signal {
        signal: i32,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Restart in place without counting against the policy.
    Restart {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The job changed in place.
    Update { task: Box<Task>, job: Arc<Job> },
}

/// What a task runner tells its allocation runner.
pub(crate) struct TaskUpdate {
    pub name: String,
    pub state: TaskState,
    pub handle: Option<TaskHandle>,
    pub finished: bool,
}

pub(crate) struct TaskRunner {
    pub shared: Arc<AllocShared>,
    pub name: String,
    pub task: Task,
    pub job: Arc<Job>,
    pub driver: Arc<dyn Driver>,
    pub state: TaskState,
    pub handle: Option<TaskHandle>,
    pub tracker: RestartTracker,
    pub cmds: mpsc::UnboundedReceiver<TaskCmd>,
    pub out: mpsc::UnboundedSender<TaskUpdate>,
    pub gate: watch::Receiver<bool>,
    pub logs: Option<LogPumps>,
    pub dirs: Option<TaskDirs>,
    pub set_up: bool,
}

enum Next {
    /// Start (again).
    Start,
    /// The task is over.
    Finish,
}

impl TaskRunner {
    fn kill_signal(&self) -> i32 {
        if self.task.kill_signal.is_empty() {
            libc::SIGINT
        } else {
            signal_number(&self.task.kill_signal).unwrap_or(libc::SIGINT)
        }
    }

    fn kill_timeout(&self) -> Duration {
        let t = if self.task.kill_timeout > 0 {
            self.task.kill_timeout
        } else {
            DEFAULT_KILL_TIMEOUT
        };
        let max = self.shared.core.cfg.max_kill_timeout;
        ns(t).min(max)
    }

    async fn emit(&mut self, ev: Option<TaskEvent>, persist: bool) {
        if let Some(ev) = ev {
            push_event(&mut self.state, ev);
        }
        if persist {
            if let Some(store) = &self.shared.core.state {
                let local = LocalTaskState {
                    state: self.state.clone(),
                    handle: self.handle.clone(),
                };
                if let Err(e) = store
                    .put_task(&self.shared.alloc_id, &self.name, &local)
                    .await
                {
                    tracing::warn!(alloc = %self.shared.alloc_id, task = %self.name, error = %e, "persisting task state");
                }
            }
        }
        let _ = self.out.send(TaskUpdate {
            name: self.name.clone(),
            state: self.state.clone(),
            handle: self.handle.clone(),
            finished: false,
        });
    }

    /// Runs the task to its end. `restored` is what an earlier agent left.
    pub async fn run(mut self, restored: bool) {
        let mut next = Next::Start;
        if restored {
            if self.state.state == TASK_STATE_DEAD {
                next = Next::Finish;
            } else if let Some(h) = self.handle.clone() {
                match self.driver.recover(&h).await {
                    Ok(()) => {
                        tracing::info!(alloc = %self.shared.alloc_id, task = %self.name, pid = h.pid, "re-attached to task");
                        self.set_up = true;
                        self.start_logs();
                        self.state.state = TASK_STATE_RUNNING.into();
                        self.emit(None, true).await;
                        next = self.wait_running().await;
                    }
                    Err(e) => {
                        tracing::info!(alloc = %self.shared.alloc_id, task = %self.name, error = %e, "task could not be recovered");
                        self.handle = None;
                        let exit = ExitResult::unknown(format!("task could not be recovered: {e}"));
                        next = self.after_exit(exit).await;
                    }
                }
            }
        } else {
            self.emit(
                Some(event(TASK_EVENT_RECEIVED, "Task received by client")),
                true,
            )
            .await;
        }
        loop {
            match next {
                Next::Finish => break,
                Next::Start => {
                    next = self.start_and_wait().await;
                }
            }
        }
        self.finish().await;
    }

    fn start_logs(&mut self) {
        if self.logs.is_some() || self.task.log_config.disabled {
            return;
        }
        if let Some(d) = &self.dirs {
            match LogPumps::start(&d.logs, &self.name, &self.task.log_config) {
                Ok(p) => self.logs = Some(p),
                Err(e) => {
                    tracing::warn!(task = %self.name, error = %e, "starting log collection")
                }
            }
        }
    }

    async fn setup(&mut self) -> Result<(), String> {
        if self.set_up {
            return Ok(());
        }
        self.emit(
            Some(event(TASK_EVENT_SETUP, "Building Task Directory")),
            false,
        )
        .await;
        if self.driver.needs_dirs() {
            let base = self
                .shared
                .core
                .alloc_base
                .clone()
                .ok_or_else(|| "the agent has no allocation directory".to_string())?;
            let owner = if self.task.user.is_empty() {
                None
            } else {
                crate::driver::shim_user(&self.task.user)
            };
            let ad = AllocDir::new(&base, &self.shared.alloc_id);
            let dirs = ad
                .build_task(&self.name, owner)
                .map_err(|e| format!("failed to build task directory: {e}"))?;
            if let Some(file) = self
                .task
                .dispatch_payload
                .as_ref()
                .map(|d| d.file.as_str())
                .filter(|f| !f.is_empty())
            {
                crate::allocdir::write_dispatch_payload(&dirs, file, &self.job.payload)
                    .map_err(|e| format!("failed to write dispatch payload: {e}"))?;
            }
            self.dirs = Some(dirs);
            self.start_logs();
        }
        self.set_up = true;
        Ok(())
    }

    fn task_config(&self) -> TaskConfig {
        let alloc = self.shared.alloc_snapshot();
        let node = self.shared.core.node_snapshot();
        let group = self
            .job
            .task_group(&alloc.task_group)
            .cloned()
            .unwrap_or_default();
        let env = build_env(&EnvInput {
            alloc: &alloc,
            job: &self.job,
            group: &group,
            task: &self.task,
            node: &node,
            region: &self.shared.core.region,
            dirs: self.dirs.as_ref(),
        });
        let config = match interpolate_value(
            &serde_json::Value::Object(self.task.config.clone()),
            &env,
            &node,
        ) {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        };
        let (cpu, mem, mem_max, _) = task_resources(&alloc, &self.task);
        TaskConfig {
            id: format!("{}/{}", self.shared.alloc_id, self.name),
            alloc_id: self.shared.alloc_id.clone(),
            task_name: self.name.clone(),
            config,
            env,
            user: self.task.user.clone(),
            dirs: self.dirs.clone(),
            resources: TaskResources {
                cpu_mhz: cpu,
                memory_mb: mem,
                memory_max_mb: mem_max,
            },
            stdout: self.logs.as_ref().map(|l| l.stdout_fifo.clone()),
            stderr: self.logs.as_ref().map(|l| l.stderr_fifo.clone()),
        }
    }

    /// Waits for the gate (lifecycle ordering); `false` when killed first.
    async fn wait_gate(&mut self) -> bool {
        loop {
            if *self.gate.borrow() {
                return true;
            }
            tokio::select! {
                r = self.gate.changed() => {
                    if r.is_err() {
                        return false;
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    None | Some(TaskCmd::Kill { .. }) => return false,
                    Some(TaskCmd::Signal { reply, .. }) => {
                        let _ = reply.send(Err("task is not running".into()));
                    }
                    Some(TaskCmd::Restart { reply }) => {
                        let _ = reply.send(Err("task is not running".into()));
                    }
                    Some(TaskCmd::Update { task, job }) => self.update(*task, job),
                }
            }
        }
    }

    fn update(&mut self, task: Task, job: Arc<Job>) {
        let group = self.shared.alloc_snapshot().task_group.clone();
        let policy = task.restart_policy.clone().or_else(|| {
            job.task_group(&group)
                .and_then(|g| g.restart_policy.clone())
        });
        self.tracker.set_policy(policy, &job.r#type);
        self.task = task;
        self.job = job;
    }

    async fn start_and_wait(&mut self) -> Next {
        if !self.wait_gate().await {
            return Next::Finish;
        }
        if let Err(msg) = self.setup().await {
            let mut ev = event(TASK_EVENT_SETUP_FAILURE, msg.clone());
            ev.setup_error = msg;
            ev.fails_task = true;
            self.state.failed = true;
            self.emit(Some(ev), false).await;
            return Next::Finish;
        }
        let cfg = self.task_config();
        match self.driver.start(&cfg).await {
            Ok(h) => {
                self.handle = Some(h);
                self.state.state = TASK_STATE_RUNNING.into();
                self.state.started_at = Some(proto::model::time::format_rfc3339(now_ns()));
                self.emit(
                    Some(event(TASK_EVENT_STARTED, "Task started by client")),
                    true,
                )
                .await;
                self.wait_running().await
            }
            Err(e) => {
                let mut ev = event(TASK_EVENT_DRIVER_FAILURE, e.to_string());
                ev.driver_error = e.to_string();
                ev.fails_task = !e.recoverable();
                self.emit(Some(ev), false).await;
                let d = self
                    .tracker
                    .on_start_error(&e, now_ns(), rand::random::<f64>());
                self.apply(d).await
            }
        }
    }

    /// The task runs: waits for its exit or a command.
    async fn wait_running(&mut self) -> Next {
        let Some(h) = self.handle.clone() else {
            return Next::Start;
        };
        let driver = self.driver.clone();
        let wait = driver.wait(&h);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                exit = &mut wait => {
                    self.driver.destroy(&h);
                    self.handle = None;
                    return self.after_exit(exit).await;
                }
                cmd = self.cmds.recv() => match cmd {
                    None => {
                        // The allocation runner is gone (agent stopping): leave the task.
                        futures::future::pending::<()>().await;
                    }
                    Some(TaskCmd::Kill { why }) => {
                        self.kill(&h, why).await;
                        return Next::Finish;
                    }
                    Some(TaskCmd::Signal { signal, reply }) => {
                        let mut ev = event(TASK_EVENT_SIGNALING, format!("Task being sent signal {}", signal_name(signal)));
                        ev.task_signal = signal_name(signal);
                        self.emit(Some(ev), false).await;
                        let _ = reply.send(self.driver.signal(&h, signal).map_err(|e| e.to_string()));
                    }
                    Some(TaskCmd::Restart { reply }) => {
                        let mut ev = event(TASK_EVENT_RESTART_SIGNAL, "User requested restart");
                        ev.restart_reason = "User requested restart".into();
                        self.emit(Some(ev), false).await;
                        self.stop_process(&h).await;
                        self.driver.destroy(&h);
                        self.handle = None;
                        self.state.restarts += 1;
                        self.state.last_restart = Some(proto::model::time::format_rfc3339(now_ns()));
                        self.state.state = TASK_STATE_PENDING.into();
                        let mut ev = event(TASK_EVENT_RESTARTING, "Task restarting in 0s");
                        ev.restart_reason = "User requested restart".into();
                        self.emit(Some(ev), true).await;
                        let _ = reply.send(Ok(()));
                        return Next::Start;
                    }
                    Some(TaskCmd::Update { task, job }) => self.update(*task, job),
                }
            }
        }
    }

    async fn stop_process(&mut self, h: &TaskHandle) {
        let timeout = self.kill_timeout();
        let mut ev = event(
            TASK_EVENT_KILLING,
            format!(
                "Sent interrupt. Waiting {} before force killing",
                proto::model::format_duration(timeout.as_nanos() as i64)
            ),
        );
        ev.kill_timeout = timeout.as_nanos() as i64;
        self.emit(Some(ev), false).await;
        if let Err(e) = self.driver.stop(h, self.kill_signal(), timeout).await {
            tracing::warn!(task = %self.name, error = %e, "stopping task");
        }
    }

    async fn kill(&mut self, h: &TaskHandle, why: Option<Box<TaskEvent>>) {
        if let Some(ev) = why {
            self.emit(Some(*ev), false).await;
        }
        self.stop_process(h).await;
        self.driver.destroy(h);
        self.handle = None;
        self.emit(
            Some(event(TASK_EVENT_KILLED, "Task successfully killed")),
            false,
        )
        .await;
    }

    async fn after_exit(&mut self, exit: ExitResult) -> Next {
        let mut msg = format!("Exit Code: {}", exit.exit_code);
        if exit.signal != 0 {
            msg.push_str(&format!(", Signal: {}", exit.signal));
        }
        if exit.oom_killed {
            msg.push_str(", Exit Message: \"OOM Killed\"");
        } else if let Some(e) = &exit.err {
            msg.push_str(&format!(", Exit Message: {e:?}"));
        }
        let mut ev = event(TASK_EVENT_TERMINATED, msg);
        ev.exit_code = exit.exit_code;
        ev.signal = exit.signal;
        if exit.oom_killed {
            ev.details.insert("oom_killed".into(), "true".into());
        }
        if let Some(e) = &exit.err {
            ev.details.insert("exit_message".into(), e.clone());
        }
        self.emit(Some(ev), true).await;
        let d = self.tracker.on_exit(&exit, now_ns(), rand::random::<f64>());
        if let RestartDecision::Done = d {
            self.state.failed = false;
        }
        self.apply(d).await
    }

    async fn apply(&mut self, d: RestartDecision) -> Next {
        match d {
            RestartDecision::Done => Next::Finish,
            RestartDecision::NotRestart { reason, failed } => {
                let mut ev = event(TASK_EVENT_NOT_RESTARTING, reason.clone());
                ev.restart_reason = reason;
                ev.fails_task = failed;
                self.state.failed = failed;
                self.emit(Some(ev), false).await;
                Next::Finish
            }
            RestartDecision::Restart { delay, reason } => {
                self.state.restarts += 1;
                self.state.last_restart = Some(proto::model::time::format_rfc3339(now_ns()));
                self.state.state = TASK_STATE_PENDING.into();
                let mut ev = event(
                    TASK_EVENT_RESTARTING,
                    format!(
                        "Task restarting in {}",
                        proto::model::format_duration(delay.as_nanos() as i64)
                    ),
                );
                ev.restart_reason = reason;
                ev.start_delay = delay.as_nanos() as i64;
                self.emit(Some(ev), true).await;
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => return Next::Start,
                        cmd = self.cmds.recv() => match cmd {
                            None => futures::future::pending::<()>().await,
                            Some(TaskCmd::Kill { why }) => {
                                if let Some(ev) = why {
                                    self.emit(Some(*ev), false).await;
                                }
                                return Next::Finish;
                            }
                            Some(TaskCmd::Restart { reply }) => {
                                let _ = reply.send(Ok(()));
                                return Next::Start;
                            }
                            Some(TaskCmd::Signal { reply, .. }) => {
                                let _ = reply.send(Err("task is not running".into()));
                            }
                            Some(TaskCmd::Update { task, job }) => self.update(*task, job),
                        }
                    }
                }
            }
        }
    }

    async fn finish(&mut self) {
        if let Some(l) = self.logs.take() {
            l.finish().await;
        }
        self.handle = None;
        self.state.state = TASK_STATE_DEAD.into();
        if self.state.finished_at.is_none() {
            self.state.finished_at = Some(proto::model::time::format_rfc3339(now_ns()));
        }
        self.emit(None, true).await;
        let _ = self.out.send(TaskUpdate {
            name: self.name.clone(),
            state: self.state.clone(),
            handle: None,
            finished: true,
        });
    }
}

/// Builds the "why" event for a kill caused by another task.
pub(crate) fn sibling_event(kind: &str, sibling: &str, msg: &str) -> TaskEvent {
    let mut ev = event(kind, msg);
    ev.failed_sibling = sibling.to_string();
    ev
}
