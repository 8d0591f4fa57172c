//! A fake region server speaking `ClientService` over mTLS, holding nodes
//! and allocations in memory, for testing the agent without a real region.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use ops_kit::tls::{CertBundle, DevCa, Role};
use proto::model::{Allocation, Job, Node, Resources, Task, TaskGroup};
use proto::rpc::client_service_server::{ClientService, ClientServiceServer};
use proto::rpc::Payload;
use serde_json::json;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub fn init() {
    ops_kit::tls::install_crypto_provider();
}

pub struct Pki {
    pub ca: DevCa,
}

impl Pki {
    pub fn new() -> Self {
        init();
        Self {
            ca: DevCa::generate().unwrap(),
        }
    }
    pub fn server(&self, region: &str) -> CertBundle {
        self.ca.issue(Role::Server, region).unwrap()
    }
    pub fn client(&self, region: &str) -> CertBundle {
        self.ca.issue(Role::Client, region).unwrap()
    }
}

/// State shared by the fake servers of one region.
pub struct FakeState {
    pub nodes: Mutex<HashMap<String, Node>>,
    pub allocs: Mutex<BTreeMap<String, Allocation>>,
    by_node: Mutex<HashMap<String, Vec<String>>>,
    pub updates: Mutex<Vec<Allocation>>,
    pub registrations: AtomicU64,
    pub update_calls: AtomicU64,
    pub ttl_ms: AtomicU64,
    index: Mutex<u64>,
    tick: watch::Sender<u64>,
}

impl FakeState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            nodes: Mutex::default(),
            allocs: Mutex::default(),
            by_node: Mutex::default(),
            updates: Mutex::default(),
            registrations: AtomicU64::new(0),
            update_calls: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(2000),
            index: Mutex::new(0),
            tick: watch::channel(0).0,
        })
    }
}

#[derive(Clone)]
pub struct Svc {
    st: Arc<FakeState>,
    own_addr: Arc<Mutex<String>>,
    /// When set, heartbeats are refused with "leader=<this>".
    pub redirect_to: Arc<Mutex<Option<String>>>,
    pub heartbeats: Arc<AtomicU64>,
    /// While true, every call fails with UNAVAILABLE and watches are cut.
    pub down: Arc<watch::Sender<bool>>,
}

impl Svc {
    fn check_up(&self) -> Result<(), Status> {
        if *self.down.borrow() {
            return Err(Status::unavailable("server is down"));
        }
        Ok(())
    }

    fn bump(&self) -> u64 {
        let mut i = self.st.index.lock().unwrap();
        *i += 1;
        let v = *i;
        drop(i);
        let _ = self.st.tick.send(v);
        v
    }
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload {
        data: serde_json::to_vec(v).unwrap(),
    }))
}

fn auth(st: &FakeState, v: &serde_json::Value) -> Result<(), Status> {
    let id = v["NodeID"].as_str().unwrap_or_default();
    let secret = v["SecretID"].as_str().unwrap_or_default();
    let nodes = st.nodes.lock().unwrap();
    let n = nodes
        .get(id)
        .ok_or_else(|| Status::not_found(format!("node {id} is not registered")))?;
    if n.secret_id != secret {
        return Err(Status::permission_denied("node secret id does not match"));
    }
    Ok(())
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl ClientService for Svc {
    async fn register(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_up()?;
        let node: Node = serde_json::from_slice(&req.into_inner().data)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if node.id.is_empty() || node.secret_id.is_empty() {
            return Err(Status::invalid_argument(
                "node ID and SecretID are required",
            ));
        }
        self.st.nodes.lock().unwrap().insert(node.id.clone(), node);
        self.st.registrations.fetch_add(1, Ordering::Relaxed);
        let own = self.own_addr.lock().unwrap().clone();
        let leader = self
            .redirect_to
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(own.clone());
        reply(&json!({
            "HeartbeatTTL": self.st.ttl_ms.load(Ordering::Relaxed) * 1_000_000,
            "Servers": [own],
            "LeaderRPCAddr": leader,
            "Index": self.bump(),
        }))
    }

    async fn heartbeat(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_up()?;
        let v: serde_json::Value = serde_json::from_slice(&req.into_inner().data).unwrap();
        if let Some(l) = self.redirect_to.lock().unwrap().clone() {
            return Err(Status::failed_precondition(format!(
                "not the leader; leader={l}"
            )));
        }
        auth(&self.st, &v)?;
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        let own = self.own_addr.lock().unwrap().clone();
        reply(&json!({
            "HeartbeatTTL": self.st.ttl_ms.load(Ordering::Relaxed) * 1_000_000,
            "Servers": [own.clone()],
            "LeaderRPCAddr": own,
            "Index": 0,
        }))
    }

    type WatchAllocationsStream = WatchStream;

    async fn watch_allocations(
        &self,
        req: Request<Payload>,
    ) -> Result<Response<Self::WatchAllocationsStream>, Status> {
        self.check_up()?;
        let mut down = self.down.subscribe();
        let v: serde_json::Value = serde_json::from_slice(&req.into_inner().data).unwrap();
        auth(&self.st, &v)?;
        let node_id = v["NodeID"].as_str().unwrap_or_default().to_string();
        let mut seen = v["Index"].as_u64().unwrap_or(0);
        let st = self.st.clone();
        let mut tick = self.st.tick.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Payload, Status>>(4);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let index = *st.index.lock().unwrap();
                if first || index > seen {
                    let ids = st
                        .by_node
                        .lock()
                        .unwrap()
                        .get(&node_id)
                        .cloned()
                        .unwrap_or_default();
                    let allocs: Vec<Allocation> = {
                        let all = st.allocs.lock().unwrap();
                        ids.iter()
                            .filter_map(|id| all.get(id))
                            .filter(|a| a.modify_index > seen || (first && seen == 0))
                            .cloned()
                            .collect()
                    };
                    if !allocs.is_empty() || first {
                        let data =
                            serde_json::to_vec(&json!({"Allocs": allocs, "Index": index})).unwrap();
                        if tx.send(Ok(Payload { data })).await.is_err() {
                            return;
                        }
                    }
                    seen = seen.max(index);
                }
                first = false;
                let went_down = tokio::select! {
                    r = tick.changed() => if r.is_err() { return } else { false },
                    _ = tx.closed() => return,
                    _ = down.wait_for(|d| *d) => true,
                };
                if went_down {
                    let _ = tx.send(Err(Status::unavailable("server is down"))).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_allocations(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_up()?;
        let v: serde_json::Value = serde_json::from_slice(&req.into_inner().data).unwrap();
        auth(&self.st, &v)?;
        self.st.update_calls.fetch_add(1, Ordering::Relaxed);
        let updates: Vec<Allocation> = serde_json::from_value(v["Allocs"].clone()).unwrap();
        let index = {
            let mut i = self.st.index.lock().unwrap();
            *i += 1;
            *i
        };
        {
            let mut allocs = self.st.allocs.lock().unwrap();
            for u in &updates {
                if let Some(a) = allocs.get_mut(&u.id) {
                    a.client_status = u.client_status.clone();
                    a.client_description = u.client_description.clone();
                    a.task_states = u.task_states.clone();
                    if u.deployment_status.is_some() {
                        a.deployment_status = u.deployment_status.clone();
                    }
                    a.modify_index = index;
                }
            }
        }
        self.st.updates.lock().unwrap().extend(updates);
        let _ = self.st.tick.send(index);
        reply(&json!({"Index": index}))
    }
}

pub struct FakeServer {
    pub addr: String,
    pub st: Arc<FakeState>,
    pub svc: Svc,
    join: Option<tokio::task::JoinHandle<()>>,
}

impl FakeServer {
    pub async fn start(pki: &Pki, region: &str) -> Self {
        Self::start_on(pki, region, FakeState::new(), "127.0.0.1:0").await
    }

    /// A server sharing `st`, listening on `addr`.
    pub async fn start_on(pki: &Pki, region: &str, st: Arc<FakeState>, addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let svc = Svc {
            st: st.clone(),
            own_addr: Arc::new(Mutex::new(addr.clone())),
            redirect_to: Arc::default(),
            heartbeats: Arc::default(),
            down: Arc::new(watch::channel(false).0),
        };
        let bundle = pki.server(region);
        let s = svc.clone();
        let join = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(bundle.server_tls_config())
                .unwrap()
                .add_service(ClientServiceServer::new(s))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            st,
            svc,
            join: Some(join),
        }
    }

    /// Adds or replaces an allocation (bumping its indexes).
    pub fn put_alloc(&self, a: Allocation) {
        self.put_allocs(vec![a])
    }

    /// Adds or replaces allocations in one change.
    pub fn put_allocs(&self, list: Vec<Allocation>) {
        let index = {
            let mut i = self.st.index.lock().unwrap();
            *i += 1;
            *i
        };
        {
            let mut allocs = self.st.allocs.lock().unwrap();
            let mut by_node = self.st.by_node.lock().unwrap();
            for mut a in list {
                if let Some(old) = allocs.get(&a.id) {
                    a.client_status = old.client_status.clone();
                    a.task_states = old.task_states.clone();
                    a.create_index = old.create_index;
                } else {
                    a.create_index = index;
                    by_node
                        .entry(a.node_id.clone())
                        .or_default()
                        .push(a.id.clone());
                }
                a.modify_index = index;
                a.alloc_modify_index = index;
                allocs.insert(a.id.clone(), a);
            }
        }
        let _ = self.st.tick.send(index);
    }

    /// Sets the desired status of an allocation.
    pub fn set_desired(&self, id: &str, desired: &str) {
        let mut a = self.alloc(id).unwrap();
        a.desired_status = desired.into();
        self.put_alloc(a);
    }

    pub fn alloc(&self, id: &str) -> Option<Allocation> {
        self.st.allocs.lock().unwrap().get(id).cloned()
    }

    pub fn node(&self, id: &str) -> Option<Node> {
        self.st.nodes.lock().unwrap().get(id).cloned()
    }

    /// Forgets every node (as after a state loss).
    pub fn forget_nodes(&self) {
        self.st.nodes.lock().unwrap().clear();
    }

    /// Makes every call fail (and cuts watches) until set up again.
    pub fn set_down(&self, down: bool) {
        let _ = self.svc.down.send(down);
    }

    /// Stops accepting connections.
    pub fn stop(&mut self) {
        if let Some(j) = self.join.take() {
            j.abort();
        }
    }

    /// Waits until `f` holds for the allocation `id`.
    pub async fn wait_alloc(
        &self,
        id: &str,
        timeout: Duration,
        f: impl Fn(&Allocation) -> bool,
    ) -> Allocation {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(a) = self.alloc(id) {
                if f(&a) {
                    return a;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "allocation {id} never reached the expected state: {} {}",
                        a.client_status,
                        serde_json::to_string_pretty(&a.task_states).unwrap()
                    );
                }
            } else if tokio::time::Instant::now() > deadline {
                panic!("allocation {id} missing");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A job with one group `g` of one task.
pub fn job(id: &str, job_type: &str, task: Task) -> Job {
    let mut job = Job {
        id: id.into(),
        name: id.into(),
        r#type: job_type.into(),
        datacenters: vec!["dc1".into()],
        task_groups: vec![TaskGroup {
            name: "g".into(),
            count: 1,
            tasks: vec![task],
            ..Default::default()
        }],
        ..Default::default()
    };
    job.canonicalize();
    job
}

pub fn raw_task(name: &str, script: &str) -> Task {
    Task {
        name: name.into(),
        driver: "raw_exec".into(),
        config: json!({"command": "/bin/sh", "args": ["-c", script]})
            .as_object()
            .cloned()
            .unwrap(),
        resources: Resources {
            cpu: 100,
            memory_mb: 64,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn mock_task(name: &str, config: serde_json::Value) -> Task {
    Task {
        name: name.into(),
        driver: "mock_driver".into(),
        config: config.as_object().cloned().unwrap(),
        resources: Resources {
            cpu: 100,
            memory_mb: 64,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An allocation of `job` (group `g`) on `node_id`.
pub fn alloc(job: &Job, node_id: &str) -> Allocation {
    Allocation {
        id: uuid::Uuid::new_v4().to_string(),
        namespace: "default".into(),
        name: format!("{}.g[0]", job.id),
        node_id: node_id.into(),
        job_id: job.id.clone(),
        job: Some(std::sync::Arc::new(job.clone())),
        task_group: "g".into(),
        desired_status: "run".into(),
        client_status: "pending".into(),
        ..Default::default()
    }
}

pub fn events(a: &Allocation, task: &str) -> Vec<String> {
    a.task_states
        .get(task)
        .map(|s| s.events.iter().map(|e| e.r#type.clone()).collect())
        .unwrap_or_default()
}
