//! `ClientService`: what client agents of the region ask its servers —
//! register, heartbeat, watch their allocations, report allocation status.
//! Only certificates naming `client.<region>.atoll` may call it, and every
//! call after registration must carry the node's secret id.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use proto::model::{Allocation, Evaluation, Node};
use proto::rpc::client_service_server::ClientService;
use proto::rpc::Payload;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::leader::heartbeat::{HeartbeatConfig, Heartbeats};
use crate::leader::now_ns;
use crate::service::Service;
use crate::state::{table, Command, CommandResponse, Tables};

pub use proto::client::{AllocUpdateRequest, AllocWatchEvent, NodeAuth, NodeUpdateResponse};

/// The gRPC service.
pub struct ClientGrpc {
    service: Service,
    heartbeats: Heartbeats,
    cfg: HeartbeatConfig,
}

impl ClientGrpc {
    /// Serve clients of `service`'s region.
    pub fn new(service: Service, heartbeats: Heartbeats, cfg: HeartbeatConfig) -> Self {
        Self {
            service,
            heartbeats,
            cfg,
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, req: Request<Payload>) -> Result<T, Status> {
        // Only clients of this region get here: see ops_kit::authz::Policy::region_server.
        serde_json::from_slice(&req.into_inner().data)
            .map_err(|e| Status::invalid_argument(format!("bad request: {e}")))
    }

    fn authenticate(&self, t: &Tables, auth: &NodeAuth) -> Result<Node, Status> {
        let node = t
            .nodes
            .get(&auth.node_id)
            .ok_or_else(|| Status::not_found(format!("node {} is not registered", auth.node_id)))?;
        if node.secret_id != auth.secret_id {
            return Err(Status::permission_denied("node secret id does not match"));
        }
        Ok((**node).clone())
    }

    fn response(&self, ttl: Duration, index: u64) -> NodeUpdateResponse {
        let info = self.service.cluster_info();
        NodeUpdateResponse {
            heartbeat_ttl: ttl.as_nanos() as i64,
            servers: info.voters.values().map(|n| n.rpc_addr.clone()).collect(),
            leader_rpc_addr: info.leader.map(|(_, n)| n.rpc_addr).unwrap_or_default(),
            index,
        }
    }

    fn not_leader(&self) -> Status {
        let leader = self
            .service
            .leader()
            .map(|(_, n)| n.rpc_addr)
            .unwrap_or_default();
        Status::failed_precondition(format!("not the leader; leader={leader}"))
    }
}

fn reply<T: Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    serde_json::to_vec(v)
        .map(|data| Response::new(Payload { data }))
        .map_err(|e| Status::internal(format!("encode: {e}")))
}

/// A `node-update` evaluation for a job.
pub fn node_eval(
    namespace: &str,
    job_id: &str,
    job_type: &str,
    priority: i64,
    node_id: &str,
    trigger: &str,
) -> Evaluation {
    let now = now_ns();
    Evaluation {
        id: proto::model::new_id(),
        namespace: namespace.to_string(),
        priority,
        r#type: job_type.to_string(),
        triggered_by: trigger.to_string(),
        job_id: job_id.to_string(),
        node_id: node_id.to_string(),
        status: "pending".into(),
        create_time: now,
        modify_time: now,
        ..Default::default()
    }
}

/// Evaluations for a node whose status changed: every system job, and every
/// job with a non-terminal allocation on the node.
pub fn evals_for_node(t: &Tables, node_id: &str, trigger: &str) -> Vec<Evaluation> {
    let mut jobs = std::collections::BTreeSet::new();
    for a in t.allocs_by_node(node_id) {
        if !a.terminal() {
            jobs.insert((a.namespace.clone(), a.job_id.clone()));
        }
    }
    for ((ns, id), j) in t.jobs.iter() {
        if !j.stop && (j.r#type == "system" || j.r#type == "sysbatch") {
            jobs.insert((ns.clone(), id.clone()));
        }
    }
    jobs.into_iter()
        .filter_map(|(ns, id)| t.job(&ns, &id))
        .map(|j| node_eval(&j.namespace, &j.id, &j.r#type, j.priority, node_id, trigger))
        .collect()
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl ClientService for ClientGrpc {
    async fn register(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let mut node: Node = self.decode(req)?;
        if node.id.is_empty() || node.secret_id.is_empty() {
            return Err(Status::invalid_argument(
                "node ID and SecretID are required",
            ));
        }
        if node.datacenter.is_empty() {
            node.datacenter = "dc1".into();
        }
        if node.node_pool.is_empty() {
            node.node_pool = "default".into();
        }
        let t = self.service.read(false).await.map_err(Status::from)?;
        let evals = evals_for_node(&t, &node.id, "node-update");
        let node_id = node.id.clone();
        let (resp, index) = self
            .service
            .write(Command::NodeRegister {
                node: Box::new(node),
                evals,
                now: now_ns(),
            })
            .await
            .map_err(Status::from)?;
        if let CommandResponse::Conflict(m) = resp {
            return Err(Status::permission_denied(m));
        }
        let ttl = if self.service.is_leader() {
            self.heartbeats
                .reset(&self.cfg, &node_id, rand::random::<f64>())
        } else {
            crate::leader::heartbeat::ttl_for(&self.cfg, t.nodes.len() + 1, 0.0)
        };
        reply(&self.response(ttl, index))
    }

    async fn heartbeat(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let auth: NodeAuth = self.decode(req)?;
        if !self.service.is_leader() {
            return Err(self.not_leader());
        }
        let t = self.service.store.snapshot();
        let node = self.authenticate(&t, &auth)?;
        let mut index = 0;
        if node.status != "ready" {
            let evals = evals_for_node(&t, &node.id, "node-update");
            let (_, i) = self
                .service
                .write(Command::NodeStatus {
                    node_id: node.id.clone(),
                    status: "ready".into(),
                    evals,
                    now: now_ns(),
                })
                .await
                .map_err(Status::from)?;
            index = i;
        }
        let ttl = self
            .heartbeats
            .reset(&self.cfg, &node.id, rand::random::<f64>());
        reply(&self.response(ttl, index))
    }

    type WatchAllocationsStream = WatchStream;

    async fn watch_allocations(
        &self,
        req: Request<Payload>,
    ) -> Result<Response<Self::WatchAllocationsStream>, Status> {
        let auth: NodeAuth = self.decode(req)?;
        let t = self.service.read(false).await.map_err(Status::from)?;
        self.authenticate(&t, &auth)?;
        let store = self.service.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Payload, Status>>(4);
        tokio::spawn(async move {
            let mut seen = auth.index;
            let mut first = true;
            loop {
                let t = if first {
                    store.snapshot()
                } else {
                    store
                        .wait_for_change(&[table::ALLOCS], seen, Duration::from_secs(30))
                        .await
                };
                let index = t.table_index(table::ALLOCS);
                if first || index > seen {
                    let allocs: Vec<Allocation> = t
                        .allocs_by_node(&auth.node_id)
                        .into_iter()
                        .filter(|a| a.modify_index > seen || (first && seen == 0))
                        .map(|a| t.alloc_with_job(&a))
                        .collect();
                    if !allocs.is_empty() || first {
                        let ev = AllocWatchEvent { allocs, index };
                        let data = match serde_json::to_vec(&ev) {
                            Ok(d) => d,
                            Err(e) => {
                                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                                return;
                            }
                        };
                        if tx.send(Ok(Payload { data })).await.is_err() {
                            return;
                        }
                    }
                    seen = index.max(seen);
                }
                first = false;
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_allocations(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let update: AllocUpdateRequest = self.decode(req)?;
        let t = self.service.store.snapshot();
        self.authenticate(
            &t,
            &NodeAuth {
                node_id: update.node_id.clone(),
                secret_id: update.secret_id.clone(),
                index: 0,
            },
        )?;
        let mut evals = Vec::new();
        let mut allocs = Vec::with_capacity(update.allocs.len());
        for mut a in update.allocs {
            let Some(cur) = t.allocs.get(&a.id) else {
                continue;
            };
            if cur.node_id != update.node_id {
                return Err(Status::permission_denied(format!(
                    "allocation {} is not placed on node {}",
                    a.id, update.node_id
                )));
            }
            // A newly failed allocation is rescheduled by a fresh evaluation.
            if a.client_status == "failed"
                && cur.client_status != "failed"
                && !cur.server_terminal()
            {
                if let Some(job) = t.job(&cur.namespace, &cur.job_id) {
                    evals.push(node_eval(
                        &job.namespace,
                        &job.id,
                        &job.r#type,
                        job.priority,
                        "",
                        "alloc-failure",
                    ));
                }
            }
            a.modify_time = now_ns();
            allocs.push(a);
        }
        let (_, index) = self
            .service
            .write(Command::AllocClientUpdate { allocs, evals })
            .await
            .map_err(Status::from)?;
        reply(&serde_json::json!({ "Index": index }))
    }
}
