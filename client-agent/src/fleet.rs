//! Many simulated nodes in one process, for scale benchmarks: each has its own
//! node id and runs the real agent logic (registration, heartbeats,
//! allocation watch, batched updates, allocation runners, restart policy)
//! with only the mock driver. Nodes share one mock driver, one job cache
//! and a small pool of gRPC channels (one per `lane` per server, so the
//! nodes' watch streams spread over several HTTP/2 connections); nothing is
//! written to disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ops_kit::tls::CertBundle;
use proto::model::Node;

use crate::agent::{CoreConfig, JobCache, NodeCore};
use crate::driver::mock::MockDriver;
use crate::driver::Drivers;
use crate::fingerprint::{build_node, HostFacts, NodeIdentity};
use crate::rpc::{ChannelPool, RpcClient};

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of nodes.
    pub count: usize,
    /// Servers' RPC addresses.
    pub servers: Vec<String>,
    /// Region.
    pub region: String,
    /// Datacenter of every node.
    pub datacenter: String,
    /// Node pool.
    pub node_pool: String,
    /// Node class.
    pub node_class: String,
    /// Node names are `<prefix><n>`.
    pub name_prefix: String,
    /// CPU of each node, MHz.
    pub cpu_mhz: i64,
    /// Cores of each node.
    pub cores: i64,
    /// Memory of each node, MB.
    pub memory_mb: i64,
    /// Disk of each node, MB.
    pub disk_mb: i64,
    /// Metadata of every node.
    pub meta: BTreeMap<String, String>,
    /// Channels per server (nodes are spread over them).
    pub lanes: usize,
    /// Registrations are spread over this long.
    pub ramp: Duration,
    /// Batching period of allocation updates.
    pub update_interval: Duration,
    /// Terminal allocations each node keeps.
    pub gc_max_allocs: usize,
}

impl FleetConfig {
    /// Defaults: 4 cores of 2 GHz and 8 GB per node, one lane per 100 nodes,
    /// registrations spread over up to 5 s.
    pub fn new(count: usize, servers: Vec<String>, region: &str) -> Self {
        Self {
            count,
            servers,
            region: region.into(),
            datacenter: "dc1".into(),
            node_pool: "default".into(),
            node_class: String::new(),
            name_prefix: "sim-".into(),
            cpu_mhz: 8000,
            cores: 4,
            memory_mb: 8192,
            disk_mb: 100 * 1024,
            meta: BTreeMap::new(),
            lanes: count.div_ceil(100).max(1),
            ramp: Duration::from_millis((count as u64 * 2).min(5000)),
            update_interval: Duration::from_millis(200),
            gc_max_allocs: 0,
        }
    }
}

/// A running fleet of simulated nodes.
pub struct SimulatedFleet {
    nodes: Vec<Arc<NodeCore>>,
    mock: Arc<MockDriver>,
}

impl SimulatedFleet {
    /// Starts `n` simulated nodes with default settings.
    pub async fn start(
        n: usize,
        servers: Vec<String>,
        tls: CertBundle,
        region: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(FleetConfig::new(n, servers, region), tls).await
    }

    /// Starts a fleet as configured. `tls` must name `client.<region>.atoll`.
    pub async fn start_with(cfg: FleetConfig, tls: CertBundle) -> anyhow::Result<Self> {
        anyhow::ensure!(!cfg.servers.is_empty(), "a fleet needs at least one server");
        let pool = ChannelPool::new(&tls, &cfg.region, cfg.lanes);
        let mock = Arc::new(MockDriver::new());
        let drivers = Drivers::new().with(mock.clone());
        let infos = drivers.infos();
        let jobs = Arc::new(JobCache::default());
        let host = HostFacts::simulated(cfg.cpu_mhz, cfg.cores, cfg.memory_mb, cfg.disk_mb);
        let mut nodes = Vec::with_capacity(cfg.count);
        for i in 0..cfg.count {
            let name = format!("{}{i}", cfg.name_prefix);
            let mut h = host.clone();
            h.attributes.insert("unique.hostname".into(), name.clone());
            let who = NodeIdentity {
                id: uuid::Uuid::new_v4().to_string(),
                secret_id: uuid::Uuid::new_v4().to_string(),
                name,
                datacenter: cfg.datacenter.clone(),
                node_class: cfg.node_class.clone(),
                node_pool: cfg.node_pool.clone(),
                meta: cfg.meta.clone(),
                ..Default::default()
            };
            let node: Node = build_node(&who, &h, &infos);
            let rpc = RpcClient::new(pool.clone(), i, cfg.servers.clone());
            let core = NodeCore::new(
                &cfg.region,
                node,
                rpc,
                drivers.clone(),
                None,
                None,
                CoreConfig {
                    update_interval: cfg.update_interval,
                    gc_max_allocs: cfg.gc_max_allocs,
                    ..CoreConfig::default()
                },
                jobs.clone(),
            );
            let delay = if cfg.count > 1 {
                cfg.ramp.mul_f64(i as f64 / cfg.count as f64)
            } else {
                Duration::ZERO
            };
            core.start_loops(delay);
            nodes.push(core);
        }
        Ok(Self { nodes, mock })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes' ids.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.node_id()).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Arc<NodeCore>] {
        &self.nodes
    }

    /// Nodes currently registered.
    pub fn registered(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_registered()).count()
    }

    /// Waits until every node registered; `false` on timeout.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for n in &self.nodes {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !n.wait_registered(left).await {
                return false;
            }
        }
        true
    }

    /// Allocations whose tasks are still running, over all nodes.
    pub fn active_allocs(&self) -> usize {
        self.nodes.iter().map(|n| n.active_allocs()).sum()
    }

    /// Mock tasks currently known to the shared driver.
    pub fn running_tasks(&self) -> usize {
        self.mock.task_count()
    }

    /// Totals of the nodes' counters: (registrations, heartbeats, heartbeat
    /// failures, update batches, updates sent, allocations started).
    pub fn totals(&self) -> FleetTotals {
        let mut t = FleetTotals::default();
        for n in &self.nodes {
            let m = &n.metrics;
            t.registrations += m.registrations.get();
            t.heartbeats += m.heartbeats.get();
            t.heartbeat_failures += m.heartbeat_failures.get();
            t.update_batches += m.update_batches.get();
            t.updates_sent += m.updates_sent.get();
            t.allocs_started += m.allocs_started.get();
        }
        t
    }

    /// Stops every node (their simulated tasks vanish with them).
    pub async fn shutdown(self) {
        for n in &self.nodes {
            n.stop();
        }
    }
}

/// Summed counters of a fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetTotals {
    /// Successful registrations.
    pub registrations: u64,
    /// Successful heartbeats.
    pub heartbeats: u64,
    /// Failed heartbeat rounds.
    pub heartbeat_failures: u64,
    /// UpdateAllocations calls.
    pub update_batches: u64,
    /// Allocation updates sent.
    pub updates_sent: u64,
    /// Allocations started.
    pub allocs_started: u64,
}

impl Drop for SimulatedFleet {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop();
        }
    }
}
