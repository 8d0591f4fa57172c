//! The allocation runner: runs the tasks of one allocation (in lifecycle
//! order: prestart, main, poststart, poststop), kills siblings when a task
//! fails or the leader dies, stops everything when the servers want the
//! allocation stopped, tracks deployment health, and reports the
//! allocation's client status.

pub(crate) mod task;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::model::{
    AllocDeploymentStatus, Allocation, Job, TaskState, HEALTH_CHECK_MANUAL,
    LIFECYCLE_HOOK_POSTSTART, LIFECYCLE_HOOK_POSTSTOP, LIFECYCLE_HOOK_PRESTART,
    TASK_EVENT_DRIVER_FAILURE, TASK_EVENT_LEADER_DEAD, TASK_EVENT_SIBLING_FAILED, TASK_STATE_DEAD,
    TASK_STATE_RUNNING,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use self::task::{sibling_event, TaskCmd, TaskRunner, TaskUpdate};
use crate::agent::NodeCore;
use crate::driver::TaskHandle;
use crate::restart::RestartTracker;
use crate::state::LocalTaskState;
use crate::status::{client_status, event, pending_state, push_event};
use crate::util::{lock, now_ns, ns};

/// What the agent knows of one allocation (for the HTTP API and reports).
#[derive(Debug, Clone)]
pub struct AllocView {
    /// The allocation as last received (without its job).
    pub alloc: Allocation,
    /// Its job.
    pub job: Arc<Job>,
    /// Task states.
    pub tasks: BTreeMap<String, TaskState>,
    /// Running tasks' handles.
    pub handles: BTreeMap<String, TaskHandle>,
    /// Client status.
    pub client_status: String,
    /// Client description.
    pub client_description: String,
    /// Deployment health reported by the client.
    pub deployment_status: Option<AllocDeploymentStatus>,
    /// Every task runner ended.
    pub finished: bool,
}

pub(crate) struct AllocShared {
    pub core: Arc<NodeCore>,
    pub alloc_id: String,
    pub view: Mutex<AllocView>,
    pub done: watch::Sender<bool>,
}

impl AllocShared {
    pub fn alloc_snapshot(&self) -> Allocation {
        lock(&self.view).alloc.clone()
    }

    /// The allocation's client-owned fields, as sent to the servers.
    pub fn client_update(&self) -> Allocation {
        let v = lock(&self.view);
        Allocation {
            id: v.alloc.id.clone(),
            client_status: v.client_status.clone(),
            client_description: v.client_description.clone(),
            task_states: v.tasks.clone(),
            deployment_status: v.deployment_status.clone(),
            modify_time: now_ns(),
            ..Default::default()
        }
    }
}

/// Commands to an allocation runner.
pub(crate) enum AllocCmd {
    /// New server-side version of the allocation.
    Update(Box<Allocation>, Arc<Job>),
    /// Stop every task.
    Kill,
    /// Signal one task or all.
    Signal {
        task: Option<String>,
        signal: i32,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Restart one task or all.
    Restart {
        task: Option<String>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The agent's handle on a running allocation.
#[derive(Clone)]
pub(crate) struct AllocHandle {
    pub tx: mpsc::UnboundedSender<AllocCmd>,
    pub shared: Arc<AllocShared>,
}

impl AllocHandle {
    pub fn view(&self) -> AllocView {
        lock(&self.shared.view).clone()
    }

    pub fn finished(&self) -> bool {
        *self.shared.done.borrow()
    }

    /// Waits until every task ended.
    pub async fn wait_done(&self) {
        let mut rx = self.shared.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prestart { sidecar: bool },
    Main,
    Poststart,
    Poststop,
}

struct Slot {
    tx: Option<mpsc::UnboundedSender<TaskCmd>>,
    gate: watch::Sender<bool>,
    kind: Kind,
    leader: bool,
    finished: bool,
    initial_restarts: u64,
}

struct Health {
    enabled: bool,
    min_healthy: Duration,
    deadline: Instant,
    since: Option<Instant>,
}

impl Health {
    /// Health watching for the allocation's deployment: on when it belongs
    /// to one, its health is undecided and checks are not manual.
    fn watch(group: Option<&proto::model::TaskGroup>, v: &AllocView) -> Self {
        let update = group.and_then(|g| g.update.clone());
        let enabled = !v.alloc.deployment_id.is_empty()
            && v.deployment_status
                .as_ref()
                .and_then(|d| d.healthy)
                .is_none()
            && update
                .as_ref()
                .map(|u| u.health_check != HEALTH_CHECK_MANUAL)
                .unwrap_or(true);
        let min = update
            .as_ref()
            .map(|u| u.min_healthy_time)
            .filter(|t| *t > 0)
            .unwrap_or(10 * proto::model::SECOND);
        let deadline = update
            .as_ref()
            .map(|u| u.healthy_deadline)
            .filter(|t| *t > 0)
            .unwrap_or(5 * proto::model::MINUTE);
        Health {
            enabled,
            min_healthy: ns(min),
            deadline: Instant::now() + ns(deadline),
            since: None,
        }
    }
}

const FAR: Duration = Duration::from_secs(86_400 * 365);

/// Starts an allocation (or resumes a restored one).
pub(crate) fn spawn_alloc(
    core: Arc<NodeCore>,
    alloc: Allocation,
    job: Arc<Job>,
    restored: Option<BTreeMap<String, LocalTaskState>>,
) -> AllocHandle {
    let group = job.task_group(&alloc.task_group).cloned();
    let (done, _) = watch::channel(false);
    let mut view = AllocView {
        alloc,
        job: job.clone(),
        tasks: BTreeMap::new(),
        handles: BTreeMap::new(),
        client_status: proto::model::ALLOC_CLIENT_PENDING.into(),
        client_description: String::new(),
        deployment_status: None,
        finished: false,
    };
    view.deployment_status = view.alloc.deployment_status.clone();
    let alloc_id = view.alloc.id.clone();
    let shared = Arc::new(AllocShared {
        core: core.clone(),
        alloc_id: alloc_id.clone(),
        view: Mutex::new(view),
        done,
    });
    let (tx, cmds) = mpsc::unbounded_channel();
    let (out, updates) = mpsc::unbounded_channel();
    let mut slots = BTreeMap::new();
    let mut runners = Vec::new();
    let restored_some = restored.is_some();
    let mut restored = restored.unwrap_or_default();
    let tasks = group.as_ref().map(|g| g.tasks.clone()).unwrap_or_default();
    for t in tasks {
        let kind = match t.lifecycle.as_ref().map(|l| (l.hook.as_str(), l.sidecar)) {
            Some((LIFECYCLE_HOOK_PRESTART, sidecar)) => Kind::Prestart { sidecar },
            Some((LIFECYCLE_HOOK_POSTSTART, _)) => Kind::Poststart,
            Some((LIFECYCLE_HOOK_POSTSTOP, _)) => Kind::Poststop,
            _ => Kind::Main,
        };
        let saved = restored.remove(&t.name);
        let mut state = saved
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_else(pending_state);
        let (gate, gate_rx) = watch::channel(false);
        let driver = core.drivers.get(&t.driver);
        let mut slot = Slot {
            tx: None,
            gate,
            kind,
            leader: t.leader,
            finished: false,
            initial_restarts: state.restarts,
        };
        match driver {
            None => {
                let msg = format!("missing driver {:?}", t.driver);
                let mut ev = event(TASK_EVENT_DRIVER_FAILURE, msg.clone());
                ev.driver_error = msg;
                ev.fails_task = true;
                push_event(&mut state, ev);
                state.state = TASK_STATE_DEAD.into();
                state.failed = true;
                slot.finished = true;
            }
            Some(driver) => {
                let (ttx, trx) = mpsc::unbounded_channel();
                slot.tx = Some(ttx);
                let policy = t
                    .restart_policy
                    .clone()
                    .or_else(|| group.as_ref().and_then(|g| g.restart_policy.clone()));
                let dirs = if driver.needs_dirs() {
                    core.alloc_base
                        .as_ref()
                        .map(|b| crate::allocdir::AllocDir::new(b, &alloc_id).task_dirs(&t.name))
                } else {
                    None
                };
                let handle = saved.as_ref().and_then(|s| s.handle.clone());
                runners.push((
                    TaskRunner {
                        shared: shared.clone(),
                        name: t.name.clone(),
                        tracker: RestartTracker::new(policy, &job.r#type),
                        task: t.clone(),
                        job: job.clone(),
                        driver,
                        state: state.clone(),
                        handle,
                        cmds: trx,
                        out: out.clone(),
                        gate: gate_rx,
                        logs: None,
                        dirs: if restored_some && saved.is_some() {
                            dirs
                        } else {
                            None
                        },
                        set_up: false,
                    },
                    restored_some && saved.is_some(),
                ));
            }
        }
        lock(&shared.view).tasks.insert(t.name.clone(), state);
        slots.insert(t.name.clone(), slot);
    }
    drop(out);
    let health = {
        let v = lock(&shared.view);
        Health::watch(group.as_ref(), &v)
    };
    let handle = AllocHandle {
        tx,
        shared: shared.clone(),
    };
    for (r, restored) in runners {
        core.tasks.spawn(r.run(restored));
    }
    let runner = AllocRunner {
        shared,
        cmds,
        updates,
        slots,
        killing: false,
        health,
        last_reported: None,
    };
    core.tasks.spawn(runner.run(group.is_none()));
    handle
}

struct AllocRunner {
    shared: Arc<AllocShared>,
    cmds: mpsc::UnboundedReceiver<AllocCmd>,
    updates: mpsc::UnboundedReceiver<TaskUpdate>,
    slots: BTreeMap<String, Slot>,
    killing: bool,
    health: Health,
    last_reported: Option<(
        String,
        BTreeMap<String, TaskState>,
        Option<AllocDeploymentStatus>,
    )>,
}

impl AllocRunner {
    async fn run(mut self, no_group: bool) {
        if let Some(store) = &self.shared.core.state {
            let a = {
                let v = lock(&self.shared.view);
                let mut a = v.alloc.clone();
                a.job = Some(v.job.clone());
                a
            };
            if let Err(e) = store.put_alloc(&a).await {
                tracing::warn!(alloc = %a.id, error = %e, "persisting allocation");
            }
        }
        if no_group {
            let mut v = lock(&self.shared.view);
            v.client_status = proto::model::ALLOC_CLIENT_FAILED.into();
            v.client_description = "task group not found in job".into();
        }
        self.advance();
        self.report(true);
        loop {
            if self.slots.values().all(|s| s.finished) {
                break;
            }
            let wake = self.health_wake();
            tokio::select! {
                u = self.updates.recv() => {
                    let Some(u) = u else { break };
                    self.on_task(u);
                    // Take in everything queued before reporting once.
                    while let Ok(u) = self.updates.try_recv() {
                        self.on_task(u);
                    }
                    self.advance();
                    self.report(false);
                }
                c = self.cmds.recv() => {
                    match c {
                        None => {
                            // The agent dropped us: stop supervising.
                            return;
                        }
                        Some(c) => self.on_cmd(c).await,
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.check_health();
                    self.report(false);
                }
            }
        }
        {
            let mut v = lock(&self.shared.view);
            v.finished = true;
            v.handles.clear();
        }
        self.report(true);
        let _ = self.shared.done.send_replace(true);
        self.shared.core.alloc_finished(&self.shared.alloc_id);
        // Keep answering commands until the agent forgets the allocation.
        while let Some(c) = self.cmds.recv().await {
            match c {
                AllocCmd::Signal { reply, .. } | AllocCmd::Restart { reply, .. } => {
                    let _ = reply.send(Err("allocation is not running".into()));
                }
                AllocCmd::Update(a, job) => {
                    let mut v = lock(&self.shared.view);
                    v.alloc = *a;
                    v.job = job;
                }
                AllocCmd::Kill => {}
            }
        }
    }

    fn on_task(&mut self, u: TaskUpdate) {
        let mut v = lock(&self.shared.view);
        match &u.handle {
            Some(h) => {
                v.handles.insert(u.name.clone(), h.clone());
            }
            None => {
                v.handles.remove(&u.name);
            }
        }
        v.tasks.insert(u.name.clone(), u.state);
        drop(v);
        if u.finished {
            if let Some(s) = self.slots.get_mut(&u.name) {
                s.finished = true;
            }
        }
    }

    fn kill_all(&mut self, why: Option<(&str, &str, &str)>) {
        self.killing = true;
        for (name, s) in &self.slots {
            if s.finished {
                continue;
            }
            if let Some(tx) = &s.tx {
                let ev = why
                    .filter(|(_, sibling, _)| *sibling != name)
                    .map(|(kind, sibling, msg)| Box::new(sibling_event(kind, sibling, msg)));
                let _ = tx.send(TaskCmd::Kill { why: ev });
            }
        }
    }

    fn kill_tasks(&mut self, pred: impl Fn(Kind) -> bool) {
        for s in self.slots.values() {
            if !s.finished && pred(s.kind) {
                if let Some(tx) = &s.tx {
                    let _ = tx.send(TaskCmd::Kill { why: None });
                }
            }
        }
    }

    /// Opens lifecycle gates and reacts to failures.
    fn advance(&mut self) {
        if self.killing {
            return;
        }
        let states: BTreeMap<String, TaskState> = lock(&self.shared.view).tasks.clone();
        // A failed task or a dead leader takes the others down.
        if let Some((name, _)) = states
            .iter()
            .find(|(_, s)| s.state == TASK_STATE_DEAD && s.failed)
        {
            let name = name.clone();
            self.kill_all(Some((
                TASK_EVENT_SIBLING_FAILED,
                &name,
                &format!("Task's sibling {name:?} failed"),
            )));
            return;
        }
        if let Some((name, _)) = self
            .slots
            .iter()
            .find(|(n, s)| s.leader && states.get(*n).is_some_and(|t| t.state == TASK_STATE_DEAD))
        {
            let name = name.clone();
            self.kill_all(Some((
                TASK_EVENT_LEADER_DEAD,
                &name,
                "Leader Task in Group dead",
            )));
            return;
        }
        let of = |k: fn(Kind) -> bool| -> Vec<&TaskState> {
            self.slots
                .iter()
                .filter(|(_, s)| k(s.kind))
                .filter_map(|(n, _)| states.get(n))
                .collect()
        };
        let prestart_done = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.kind, Kind::Prestart { .. }))
            .all(|(n, s)| {
                let st = states.get(n);
                match s.kind {
                    Kind::Prestart { sidecar: true } => {
                        st.is_some_and(|t| t.state == TASK_STATE_RUNNING || t.started_at.is_some())
                    }
                    _ => st.is_some_and(|t| t.state == TASK_STATE_DEAD && !t.failed),
                }
            });
        let mains = of(|k| k == Kind::Main);
        let mains_started = mains
            .iter()
            .all(|t| t.started_at.is_some() || t.state == TASK_STATE_DEAD);
        let mains_dead = mains.iter().all(|t| t.state == TASK_STATE_DEAD);
        for s in self.slots.values() {
            let open = match s.kind {
                Kind::Prestart { .. } => true,
                Kind::Main => prestart_done,
                Kind::Poststart => prestart_done && mains_started,
                Kind::Poststop => prestart_done && mains_dead,
            };
            if open && !*s.gate.borrow() {
                let _ = s.gate.send_replace(true);
            }
        }
        if prestart_done && mains_dead && !mains.is_empty() {
            // Main tasks are over: sidecars go too.
            self.kill_tasks(|k| matches!(k, Kind::Prestart { sidecar: true } | Kind::Poststart));
        }
    }

    async fn on_cmd(&mut self, c: AllocCmd) {
        match c {
            AllocCmd::Update(a, job) => {
                let stop = a.server_terminal();
                let job_changed = {
                    let v = lock(&self.shared.view);
                    v.job.version != job.version || v.job.job_modify_index != job.job_modify_index
                };
                let joined_deployment = {
                    let v = lock(&self.shared.view);
                    a.deployment_id != v.alloc.deployment_id
                };
                {
                    let mut v = lock(&self.shared.view);
                    if a.deployment_id != v.alloc.deployment_id {
                        v.deployment_status = a.deployment_status.clone();
                    } else if let (Some(mine), Some(theirs)) =
                        (v.deployment_status.as_mut(), a.deployment_status.as_ref())
                    {
                        mine.canary = theirs.canary;
                    }
                    v.alloc = *a;
                    v.job = job.clone();
                }
                if joined_deployment {
                    // An in-place update into a new deployment: its health
                    // there is watched afresh (Nomad's health hook does so).
                    let v = lock(&self.shared.view);
                    self.health = Health::watch(job.task_group(&v.alloc.task_group), &v);
                    drop(v);
                    let states = lock(&self.shared.view).tasks.clone();
                    for (name, slot) in self.slots.iter_mut() {
                        if let Some(t) = states.get(name) {
                            slot.initial_restarts = t.restarts;
                        }
                    }
                }
                if job_changed {
                    // An in-place update: same allocation, non-destructive
                    // change; the running tasks keep running.
                    let group = lock(&self.shared.view).alloc.task_group.clone();
                    if let Some(g) = job.task_group(&group) {
                        for t in &g.tasks {
                            if let Some(Some(tx)) = self.slots.get(&t.name).map(|s| s.tx.as_ref()) {
                                let _ = tx.send(TaskCmd::Update {
                                    task: Box::new(t.clone()),
                                    job: job.clone(),
                                });
                            }
                        }
                    }
                    self.persist_alloc().await;
                }
                if stop && !self.killing {
                    self.kill_all(None);
                }
            }
            AllocCmd::Kill => {
                if !self.killing {
                    self.kill_all(None);
                }
            }
            AllocCmd::Signal {
                task,
                signal,
                reply,
            } => {
                let targets = self.targets(task.as_deref());
                if targets.is_empty() {
                    let _ = reply.send(Err("no such running task".into()));
                    return;
                }
                let mut result = Ok(());
                for tx in targets {
                    let (rtx, rrx) = oneshot::channel();
                    let _ = tx.send(TaskCmd::Signal { signal, reply: rtx });
                    if let Ok(Err(e)) = rrx.await {
                        result = Err(e);
                    }
                }
                let _ = reply.send(result);
            }
            AllocCmd::Restart { task, reply } => {
                let targets = self.targets(task.as_deref());
                if targets.is_empty() {
                    let _ = reply.send(Err("no such running task".into()));
                    return;
                }
                let mut waits = Vec::new();
                for tx in targets {
                    let (rtx, rrx) = oneshot::channel();
                    let _ = tx.send(TaskCmd::Restart { reply: rtx });
                    waits.push(rrx);
                }
                // Answer without blocking this loop on the restarts.
                tokio::spawn(async move {
                    let mut result = Ok(());
                    for w in waits {
                        if let Ok(Err(e)) = w.await {
                            result = Err(e);
                        }
                    }
                    let _ = reply.send(result);
                });
            }
        }
    }

    fn targets(&self, task: Option<&str>) -> Vec<mpsc::UnboundedSender<TaskCmd>> {
        self.slots
            .iter()
            .filter(|(n, s)| !s.finished && task.is_none_or(|t| t == n.as_str()))
            .filter_map(|(_, s)| s.tx.clone())
            .collect()
    }

    async fn persist_alloc(&self) {
        if let Some(store) = &self.shared.core.state {
            let a = {
                let v = lock(&self.shared.view);
                let mut a = v.alloc.clone();
                a.job = Some(v.job.clone());
                a
            };
            if let Err(e) = store.put_alloc(&a).await {
                tracing::warn!(alloc = %a.id, error = %e, "persisting allocation");
            }
        }
    }

    fn health_wake(&self) -> Instant {
        if !self.health.enabled {
            return Instant::now() + FAR;
        }
        let mut t = self.health.deadline;
        if let Some(s) = self.health.since {
            t = t.min(s + self.health.min_healthy);
        }
        t
    }

    fn set_health(&mut self, healthy: bool) {
        self.health.enabled = false;
        let mut v = lock(&self.shared.view);
        let canary = v
            .deployment_status
            .as_ref()
            .map(|d| d.canary)
            .unwrap_or(false);
        v.deployment_status = Some(AllocDeploymentStatus {
            healthy: Some(healthy),
            timestamp: Some(proto::model::time::format_rfc3339(now_ns())),
            canary,
            modify_index: 0,
        });
    }

    fn check_health(&mut self) {
        if !self.health.enabled {
            return;
        }
        let states = lock(&self.shared.view).tasks.clone();
        let bad = self.slots.iter().any(|(n, s)| {
            states.get(n).is_some_and(|t| {
                (t.state == TASK_STATE_DEAD && t.failed) || t.restarts > s.initial_restarts
            })
        });
        if bad {
            self.set_health(false);
            return;
        }
        let all_running = self
            .slots
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s.kind,
                    Kind::Main | Kind::Poststart | Kind::Prestart { sidecar: true }
                )
            })
            .all(|(n, _)| states.get(n).is_some_and(|t| t.state == TASK_STATE_RUNNING));
        let now = Instant::now();
        if all_running {
            let since = *self.health.since.get_or_insert(now);
            if now >= since + self.health.min_healthy {
                self.set_health(true);
                return;
            }
        } else {
            self.health.since = None;
        }
        if now >= self.health.deadline {
            self.set_health(false);
        }
    }

    /// Recomputes the client status and queues a report if anything changed.
    fn report(&mut self, force: bool) {
        self.check_health();
        let mut v = lock(&self.shared.view);
        let has_group = !v.tasks.is_empty() || v.client_status != proto::model::ALLOC_CLIENT_FAILED;
        if has_group {
            let (status, desc) = client_status(&v.tasks);
            v.client_status = status.into();
            v.client_description = desc.into();
        }
        let now = (
            v.client_status.clone(),
            v.tasks.clone(),
            v.deployment_status.clone(),
        );
        drop(v);
        if !force && self.last_reported.as_ref() == Some(&now) {
            return;
        }
        self.last_reported = Some(now);
        self.shared.core.queue_update(self.shared.client_update());
    }
}
