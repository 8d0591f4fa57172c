//! The node core (registration, heartbeats, the allocation watch, batched
//! status updates, allocation runners) and [`ClientAgent`], a real node
//! around it: fingerprint, real drivers, sqlite state, HTTP server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use proto::model::{Allocation, Job, Node};
use tokio::sync::{watch, Notify};

use crate::config::ClientConfig;
use crate::driver::exec::ExecDriver;
use crate::driver::mock::MockDriver;
use crate::driver::raw_exec::RawExecDriver;
use crate::driver::{Driver, Drivers};
use crate::fingerprint::{build_node, HostFacts, NodeIdentity};
use crate::metrics::CoreMetrics;
use crate::rpc::{AllocUpdateRequest, ChannelPool, NodeAuth, RpcClient, RpcError};
use crate::runner::{spawn_alloc, AllocCmd, AllocHandle, AllocView};
use crate::state::{load_or_create_identity, StateStore};
use crate::util::{lock, Backoff, Tasks};

/// Settings of the node core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Batching period of allocation updates.
    pub update_interval: Duration,
    /// Upper bound of task kill timeouts.
    pub max_kill_timeout: Duration,
    /// Terminal allocations kept.
    pub gc_max_allocs: usize,
    /// Largest retry wait.
    pub max_backoff: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            update_interval: Duration::from_millis(200),
            max_kill_timeout: Duration::from_secs(30),
            gc_max_allocs: 50,
            max_backoff: Duration::from_secs(10),
        }
    }
}

type JobKey = (String, String, u64, u64);

/// Allocations garbage collected recently: late echoes of them from the
/// servers (carrying an older client status) must not start them again.
#[derive(Default)]
struct Tombstones {
    ids: HashSet<String>,
    order: VecDeque<(std::time::Instant, String)>,
}

const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);
const TOMBSTONE_MAX: usize = 100_000;

impl Tombstones {
    fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_string()) {
            self.order
                .push_back((std::time::Instant::now(), id.to_string()));
        }
        while let Some((t, id)) = self.order.front() {
            if self.order.len() > TOMBSTONE_MAX || t.elapsed() > TOMBSTONE_TTL {
                self.ids.remove(id);
                self.order.pop_front();
            } else {
                break;
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// Jobs shared by allocations (and, in a simulated fleet, by nodes): every
/// allocation of one job version refers to one copy.
#[derive(Default)]
pub struct JobCache {
    jobs: Mutex<(HashMap<JobKey, Weak<Job>>, usize)>,
}

impl JobCache {
    /// The shared copy of `job`.
    pub fn intern(&self, job: Job) -> Arc<Job> {
        let key = (
            job.namespace.clone(),
            job.id.clone(),
            job.version,
            job.job_modify_index,
        );
        let mut g = lock(&self.jobs);
        if let Some(j) = g.0.get(&key).and_then(Weak::upgrade) {
            return j;
        }
        let j = Arc::new(job);
        g.0.insert(key, Arc::downgrade(&j));
        if g.0.len() > 64 && g.0.len() >= g.1 * 2 {
            g.0.retain(|_, w| w.strong_count() > 0);
            g.1 = g.0.len().max(32);
        }
        j
    }
}

/// One node's agent logic, independent of where its drivers, state and
/// fingerprint come from.
pub struct NodeCore {
    pub(crate) region: String,
    node: RwLock<Arc<Node>>,
    pub(crate) rpc: RpcClient,
    pub(crate) drivers: Drivers,
    pub(crate) state: Option<StateStore>,
    pub(crate) alloc_base: Option<PathBuf>,
    pub(crate) cfg: CoreConfig,
    pub(crate) tasks: Tasks,
    allocs: Mutex<HashMap<String, AllocHandle>>,
    terminal: Mutex<VecDeque<String>>,
    forgotten: Mutex<Tombstones>,
    updates: Mutex<HashMap<String, Allocation>>,
    update_notify: Notify,
    registered: watch::Sender<bool>,
    reregister: Notify,
    jobs: Arc<JobCache>,
    /// Counters.
    pub metrics: CoreMetrics,
}

impl NodeCore {
    /// A core for `node`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        region: &str,
        node: Node,
        rpc: RpcClient,
        drivers: Drivers,
        state: Option<StateStore>,
        alloc_base: Option<PathBuf>,
        cfg: CoreConfig,
        jobs: Arc<JobCache>,
    ) -> Arc<Self> {
        let (registered, _) = watch::channel(false);
        Arc::new(Self {
            region: region.to_string(),
            node: RwLock::new(Arc::new(node)),
            rpc,
            drivers,
            state,
            alloc_base,
            cfg,
            tasks: Tasks::default(),
            allocs: Mutex::default(),
            terminal: Mutex::default(),
            forgotten: Mutex::default(),
            updates: Mutex::default(),
            update_notify: Notify::new(),
            registered,
            reregister: Notify::new(),
            jobs,
            metrics: CoreMetrics::default(),
        })
    }

    /// The node as registered.
    pub fn node_snapshot(&self) -> Arc<Node> {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node id.
    pub fn node_id(&self) -> String {
        self.node_snapshot().id.clone()
    }

    /// Whether the node is registered.
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Waits until registered; `false` on timeout.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let mut rx = self.registered.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn auth(&self, index: u64) -> NodeAuth {
        let n = self.node_snapshot();
        NodeAuth {
            node_id: n.id.clone(),
            secret_id: n.secret_id.clone(),
            index,
        }
    }

    /// Queues a client update of an allocation for the next batch.
    pub(crate) fn queue_update(&self, a: Allocation) {
        lock(&self.updates).insert(a.id.clone(), a);
        self.update_notify.notify_one();
    }

    /// Views of every allocation the node knows.
    pub fn allocations(&self) -> Vec<AllocView> {
        let handles: Vec<AllocHandle> = lock(&self.allocs).values().cloned().collect();
        handles.iter().map(|h| h.view()).collect()
    }

    /// The view of one allocation.
    pub fn allocation(&self, id: &str) -> Option<AllocView> {
        self.handle(id).map(|h| h.view())
    }

    pub(crate) fn handle(&self, id: &str) -> Option<AllocHandle> {
        lock(&self.allocs).get(id).cloned()
    }

    /// Number of allocations whose tasks still run.
    pub fn active_allocs(&self) -> usize {
        lock(&self.allocs)
            .values()
            .filter(|h| !h.finished())
            .count()
    }

    /// Signals the tasks of an allocation (one task, or all).
    pub async fn signal_alloc(
        &self,
        id: &str,
        task: Option<String>,
        signal: i32,
    ) -> Result<(), String> {
        let h = self
            .handle(id)
            .ok_or_else(|| format!("unknown allocation {id}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        h.tx.send(AllocCmd::Signal {
            task,
            signal,
            reply: tx,
        })
        .map_err(|_| "allocation runner stopped".to_string())?;
        rx.await
            .map_err(|_| "allocation runner stopped".to_string())?
    }

    /// Restarts the tasks of an allocation in place (one task, or all).
    pub async fn restart_alloc(&self, id: &str, task: Option<String>) -> Result<(), String> {
        let h = self
            .handle(id)
            .ok_or_else(|| format!("unknown allocation {id}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        h.tx.send(AllocCmd::Restart { task, reply: tx })
            .map_err(|_| "allocation runner stopped".to_string())?;
        rx.await
            .map_err(|_| "allocation runner stopped".to_string())?
    }

    pub(crate) fn alloc_finished(self: &Arc<Self>, id: &str) {
        let over = {
            let mut t = lock(&self.terminal);
            if !t.iter().any(|x| x == id) {
                t.push_back(id.to_string());
            }
            let mut over = Vec::new();
            while t.len() > self.cfg.gc_max_allocs {
                if let Some(x) = t.pop_front() {
                    over.push(x);
                }
            }
            over
        };
        if over.is_empty() {
            return;
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            for id in over {
                me.gc_alloc(&id).await;
            }
        });
    }

    async fn gc_alloc(&self, id: &str) {
        let removed = {
            let mut m = lock(&self.allocs);
            match m.get(id) {
                Some(h) if h.finished() => {
                    lock(&self.forgotten).add(id);
                    m.remove(id)
                }
                _ => None,
            }
        };
        if removed.is_none() {
            return;
        }
        if let Some(s) = &self.state {
            if let Err(e) = s.delete_alloc(id).await {
                tracing::warn!(alloc = %id, error = %e, "forgetting allocation");
            }
        }
        if let Some(base) = &self.alloc_base {
            let dir = crate::allocdir::AllocDir::new(base, id);
            let _ = tokio::task::spawn_blocking(move || dir.destroy()).await;
        }
        tracing::debug!(alloc = %id, "garbage collected allocation");
    }

    /// Applies allocations received from the servers. With `full`, the list
    /// is every allocation of the node: running ones missing from it are
    /// stopped.
    pub(crate) fn apply_allocs(self: &Arc<Self>, allocs: Vec<Allocation>, full: bool) {
        let mut seen = HashSet::new();
        for mut a in allocs {
            seen.insert(a.id.clone());
            let job = a
                .job
                .take()
                .map(|j| self.jobs.intern(Arc::unwrap_or_clone(j)));
            if let Some(h) = self.handle(&a.id) {
                let view = h.view();
                let changed = a.alloc_modify_index != view.alloc.alloc_modify_index
                    || a.desired_status != view.alloc.desired_status
                    || job.as_ref().is_some_and(|j| {
                        j.version != view.job.version
                            || j.job_modify_index != view.job.job_modify_index
                    });
                if changed {
                    let job = job.unwrap_or(view.job.clone());
                    let _ = h.tx.send(AllocCmd::Update(Box::new(a), job));
                } else if h.finished() && a.client_status != view.client_status {
                    // The servers missed our last word on it.
                    self.queue_update(h.shared.client_update());
                }
                continue;
            }
            if a.server_terminal() || a.client_terminal() || lock(&self.forgotten).contains(&a.id) {
                continue;
            }
            let Some(job) = job else {
                tracing::warn!(alloc = %a.id, "allocation without a job");
                continue;
            };
            tracing::info!(alloc = %a.id, name = %a.name, "starting allocation");
            self.metrics.allocs_started.inc();
            let id = a.id.clone();
            let h = spawn_alloc(self.clone(), a, job, None);
            lock(&self.allocs).insert(id, h);
        }
        if full {
            let stale: Vec<AllocHandle> = lock(&self.allocs)
                .iter()
                .filter(|(id, h)| !seen.contains(*id) && !h.finished())
                .map(|(_, h)| h.clone())
                .collect();
            for h in stale {
                tracing::info!(alloc = %h.shared.alloc_id, "allocation unknown to the servers: stopping it");
                let _ = h.tx.send(AllocCmd::Kill);
            }
        }
    }

    /// Resumes allocations found in the local state.
    pub(crate) fn restore(self: &Arc<Self>, stored: Vec<crate::state::StoredAlloc>) {
        for s in stored {
            let mut a = s.alloc;
            let Some(job) = a
                .job
                .take()
                .map(|j| self.jobs.intern(Arc::unwrap_or_clone(j)))
            else {
                continue;
            };
            let id = a.id.clone();
            let h = spawn_alloc(self.clone(), a, job, Some(s.tasks));
            lock(&self.allocs).insert(id, h);
        }
    }

    /// Starts registration/heartbeats, the allocation watch and the update
    /// batcher.
    pub(crate) fn start_loops(self: &Arc<Self>, initial_delay: Duration) {
        let me = self.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(initial_delay).await;
            me.heartbeat_loop().await
        });
        let me = self.clone();
        self.tasks.spawn(async move { me.watch_loop().await });
        let me = self.clone();
        self.tasks.spawn(async move { me.update_loop().await });
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(250), self.cfg.max_backoff);
        let mut ttl = Duration::from_secs(10);
        loop {
            if !self.is_registered() {
                let node = self.node_snapshot();
                match self.rpc.register(&node).await {
                    Ok(resp) => {
                        self.metrics.registrations.inc();
                        if resp.heartbeat_ttl > 0 {
                            ttl = Duration::from_nanos(resp.heartbeat_ttl as u64);
                        }
                        tracing::info!(node = %node.id, ttl = ?ttl, "registered with the servers");
                        backoff.reset();
                        let _ = self.registered.send_replace(true);
                    }
                    Err(e) => {
                        if matches!(e, RpcError::Denied(_)) {
                            tracing::error!(node = %node.id, error = %e, "registration refused");
                        } else {
                            tracing::warn!(node = %node.id, error = %e, "registration failed");
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            // Heartbeat at about half the TTL, with jitter.
            let wait = (ttl / 2).mul_f64(0.8 + 0.2 * rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.reregister.notified() => {
                    let _ = self.registered.send_replace(false);
                    continue;
                }
            }
            loop {
                match self.rpc.heartbeat(&self.auth(0)).await {
                    Ok(resp) => {
                        self.metrics.heartbeats.inc();
                        if resp.heartbeat_ttl > 0 {
                            ttl = Duration::from_nanos(resp.heartbeat_ttl as u64);
                        }
                        backoff.reset();
                        break;
                    }
                    Err(RpcError::NodeUnknown(m)) => {
                        tracing::warn!(reason = %m, "servers do not know this node: registering again");
                        let _ = self.registered.send_replace(false);
                        break;
                    }
                    Err(e) => {
                        self.metrics.heartbeat_failures.inc();
                        tracing::warn!(error = %e, "heartbeat failed");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    async fn watch_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(250), self.cfg.max_backoff);
        let mut index = 0u64;
        let mut registered = self.registered.subscribe();
        loop {
            if registered.wait_for(|r| *r).await.is_err() {
                return;
            }
            let full_sync = index == 0;
            match self.rpc.watch(&self.auth(index)).await {
                Ok((addr, mut stream)) => {
                    tracing::debug!(server = %addr, index, "watching allocations");
                    let mut first = true;
                    loop {
                        let ev = tokio::select! {
                            ev = stream.next() => ev,
                            r = registered.wait_for(|r| !*r) => {
                                if r.is_err() { return; }
                                index = 0;
                                break;
                            }
                        };
                        match ev {
                            Ok(Some(ev)) => {
                                backoff.reset();
                                self.metrics.watch_events.inc();
                                self.apply_allocs(ev.allocs, full_sync && first);
                                first = false;
                                index = index.max(ev.index);
                            }
                            Ok(None) => break,
                            Err(RpcError::NodeUnknown(_)) => {
                                index = 0;
                                self.reregister.notify_one();
                                break;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "allocation watch ended");
                                tokio::time::sleep(backoff.next_delay()).await;
                                break;
                            }
                        }
                    }
                }
                Err(RpcError::NodeUnknown(_)) => {
                    index = 0;
                    self.reregister.notify_one();
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch allocations");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn update_loop(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(250), self.cfg.max_backoff);
        let mut registered = self.registered.subscribe();
        loop {
            self.update_notify.notified().await;
            tokio::time::sleep(self.cfg.update_interval).await;
            if registered.wait_for(|r| *r).await.is_err() {
                return;
            }
            loop {
                let batch: Vec<Allocation> = lock(&self.updates).drain().map(|(_, a)| a).collect();
                if batch.is_empty() {
                    break;
                }
                let auth = self.auth(0);
                let n = batch.len() as u64;
                let req = AllocUpdateRequest {
                    node_id: auth.node_id,
                    secret_id: auth.secret_id,
                    allocs: batch,
                };
                match self.rpc.update_allocs(&req).await {
                    Ok(_) => {
                        self.metrics.update_batches.inc();
                        self.metrics.updates_sent.inc_by(n);
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        // Put them back unless something newer came in.
                        {
                            let mut u = lock(&self.updates);
                            for a in req.allocs {
                                u.entry(a.id.clone()).or_insert(a);
                            }
                        }
                        if matches!(e, RpcError::NodeUnknown(_)) {
                            self.reregister.notify_one();
                        }
                        tracing::warn!(error = %e, "reporting allocation status failed");
                        tokio::time::sleep(backoff.next_delay()).await;
                        let _ = registered.wait_for(|r| *r).await;
                    }
                }
            }
        }
    }

    /// Sends the pending updates now (best effort).
    pub(crate) async fn flush_updates(&self) {
        let batch: Vec<Allocation> = lock(&self.updates).drain().map(|(_, a)| a).collect();
        if batch.is_empty() || !self.is_registered() {
            return;
        }
        let auth = self.auth(0);
        let req = AllocUpdateRequest {
            node_id: auth.node_id,
            secret_id: auth.secret_id,
            allocs: batch,
        };
        if let Err(e) = self.rpc.update_allocs(&req).await {
            tracing::warn!(error = %e, "final allocation status report failed");
        }
    }

    /// Stops every allocation's tasks and waits for them (up to `timeout`).
    pub async fn kill_all_allocs(&self, timeout: Duration) {
        let handles: Vec<AllocHandle> = lock(&self.allocs).values().cloned().collect();
        for h in &handles {
            let _ = h.tx.send(AllocCmd::Kill);
        }
        let all = futures::future::join_all(handles.iter().map(|h| h.wait_done()));
        let _ = tokio::time::timeout(timeout, all).await;
    }

    /// Stops everything the core runs, leaving tasks alone.
    pub(crate) fn stop(&self) {
        self.tasks.abort_all();
        lock(&self.allocs).clear();
        for d in self.drivers.all() {
            d.detach_all();
        }
    }
}

fn make_drivers(cfg: &ClientConfig) -> Drivers {
    let mut d = Drivers::new();
    for name in &cfg.drivers {
        let driver: Arc<dyn Driver> = match name.as_str() {
            crate::driver::raw_exec::NAME => Arc::new(RawExecDriver::new()),
            crate::driver::exec::NAME => Arc::new(ExecDriver::new(cfg.cgroup_parent.clone())),
            crate::driver::mock::NAME | crate::driver::mock::ALIAS => Arc::new(MockDriver::new()),
            other => {
                tracing::warn!(driver = %other, "unknown driver ignored");
                continue;
            }
        };
        d = d.with(driver);
    }
    d
}

/// A running client agent.
pub struct ClientAgent {
    core: Arc<NodeCore>,
    metrics: ops_kit::telemetry::Metrics,
    http_addr: Option<SocketAddr>,
    http: Option<crate::http::HttpServer>,
}

impl ClientAgent {
    /// Starts an agent: fingerprints the node, re-attaches to the tasks an
    /// earlier agent left running, registers with the servers, and starts
    /// serving its allocations.
    pub async fn start(cfg: ClientConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        let alloc_root = cfg.alloc_root();
        std::fs::create_dir_all(&alloc_root)
            .with_context(|| format!("creating {}", alloc_root.display()))?;
        let (node_id, secret_id) =
            load_or_create_identity(&cfg.data_dir).context("node identity")?;
        let tls = cfg.tls.load(&cfg.region).context("TLS identity")?;
        let drivers = make_drivers(&cfg);
        let state = StateStore::open(&cfg.data_dir.join("client.db"))
            .await
            .context("opening client state")?;
        let stored = state.load().await.context("loading client state")?;

        let listener = match &cfg.http_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding HTTP {a}"))?,
            ),
            None => None,
        };
        let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());

        let host = HostFacts::gather(&cfg.data_dir, &cfg.servers);
        let who = NodeIdentity {
            id: node_id,
            secret_id,
            name: if cfg.name.is_empty() {
                crate::fingerprint::hostname()
            } else {
                cfg.name.clone()
            },
            datacenter: cfg.datacenter.clone(),
            node_class: cfg.node_class.clone(),
            node_pool: cfg.node_pool.clone(),
            meta: cfg.meta.clone(),
            http_addr: http_addr.map(|a| a.to_string()).unwrap_or_default(),
            reserved_cpu: cfg.reserved.cpu,
            reserved_memory_mb: cfg.reserved.memory,
            reserved_disk_mb: cfg.reserved.disk,
            reserved_ports: cfg.reserved.reserved_ports.clone(),
        };
        let node = build_node(&who, &host, &drivers.infos());
        for (name, info) in &node.drivers {
            if info.healthy {
                tracing::info!(driver = %name, "driver healthy");
            } else {
                tracing::warn!(driver = %name, reason = %info.health_description, "driver unhealthy");
            }
        }
        let pool = ChannelPool::new(&tls, &cfg.region, 1);
        let rpc = RpcClient::new(pool, 0, cfg.servers.clone());
        let core = NodeCore::new(
            &cfg.region,
            node,
            rpc,
            drivers,
            Some(state),
            Some(alloc_root),
            CoreConfig {
                update_interval: cfg.update_interval,
                max_kill_timeout: cfg.max_kill_timeout,
                gc_max_allocs: cfg.gc_max_allocs,
                max_backoff: cfg.max_backoff,
            },
            Arc::new(JobCache::default()),
        );
        if !stored.is_empty() {
            tracing::info!(allocations = stored.len(), "restoring allocations");
        }
        core.restore(stored);
        core.start_loops(Duration::ZERO);
        let (metrics, http_metrics) =
            crate::metrics::agent_metrics(&cfg.region, core.clone()).context("metrics registry")?;
        let http = listener.map(|l| {
            let app = crate::http::router(core.clone())
                .merge(metrics.routes())
                .layer(http_metrics);
            crate::http::HttpServer::serve(l, app)
        });
        Ok(Self {
            core,
            metrics,
            http_addr,
            http,
        })
    }

    /// The node id.
    pub fn node_id(&self) -> String {
        self.core.node_id()
    }

    /// The node as registered (secret id included).
    pub fn node(&self) -> Node {
        (*self.core.node_snapshot()).clone()
    }

    /// The HTTP server's address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The node core (allocations, metrics).
    pub fn core(&self) -> &Arc<NodeCore> {
        &self.core
    }

    /// Waits until the node is registered; `false` on timeout.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        self.core.wait_registered(timeout).await
    }

    /// The agent's metrics registry (served at `/metrics` and `/v1/metrics`).
    pub fn metrics(&self) -> &ops_kit::telemetry::Metrics {
        &self.metrics
    }

    /// Views of the node's allocations.
    pub fn allocations(&self) -> Vec<AllocView> {
        self.core.allocations()
    }

    /// Stops the agent and leaves its tasks running: a new agent on the same
    /// data directory re-attaches to them. Pending status updates are sent
    /// first (best effort, up to 2 s).
    pub async fn shutdown(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.core.flush_updates()).await;
        self.stop_all().await;
    }

    /// Stops every task (kill signal, kill timeout, SIGKILL), reports the
    /// final states, then stops the agent.
    pub async fn shutdown_and_kill_tasks(mut self) {
        self.core
            .kill_all_allocs(self.core.cfg.max_kill_timeout + Duration::from_secs(15))
            .await;
        // Let the runners' last reports land in the queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.core.flush_updates()).await;
        self.stop_all().await;
    }

    async fn stop_all(&mut self) {
        if let Some(h) = self.http.take() {
            h.stop().await;
        }
        self.core.stop();
        if let Some(s) = &self.core.state {
            s.close().await;
        }
    }
}

impl Drop for ClientAgent {
    fn drop(&mut self) {
        if let Some(h) = self.http.take() {
            h.abort();
        }
        self.core.stop();
    }
}
