//! Talking to the region's servers over mutually authenticated gRPC
//! (`ClientService`): a pool of channels shared by every node of the process,
//! failover between servers, and following the leader for heartbeats.
//!
//! The JSON bodies mirror the region server's (`NodeUpdateResponse`,
//! `NodeAuth`, `AllocUpdateRequest`, `AllocWatchEvent`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ops_kit::tls::{CertBundle, Role};
use proto::model::Node;
use proto::rpc::client_service_client::ClientServiceClient;
use proto::rpc::Payload;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::util::lock;

pub use proto::client::{AllocUpdateRequest, AllocWatchEvent, NodeAuth, NodeUpdateResponse};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IndexReply {
    index: u64,
}

/// What went wrong talking to the servers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The servers do not know the node: register again.
    #[error("node is not registered: {0}")]
    NodeUnknown(String),
    /// The servers refused our credentials.
    #[error("permission denied: {0}")]
    Denied(String),
    /// The request was refused as invalid.
    #[error("rejected: {0}")]
    Rejected(String),
    /// No server answered.
    #[error("no server reachable: {0}")]
    Unreachable(String),
}

fn classify(s: &Status) -> Option<RpcError> {
    match s.code() {
        Code::NotFound => Some(RpcError::NodeUnknown(s.message().to_string())),
        Code::PermissionDenied | Code::Unauthenticated => {
            Some(RpcError::Denied(s.message().to_string()))
        }
        Code::InvalidArgument => Some(RpcError::Rejected(s.message().to_string())),
        _ => None,
    }
}

/// The leader address in a `"not the leader; leader=<addr>"` answer.
pub fn leader_hint(s: &Status) -> Option<String> {
    if s.code() != Code::FailedPrecondition {
        return None;
    }
    let (_, rest) = s.message().split_once("leader=")?;
    let addr = rest.split_whitespace().next().unwrap_or("").trim();
    Some(addr.to_string())
}

/// Channels to servers, created lazily and shared (tonic reconnects them).
/// Each address has `lanes` channels so that many nodes' long-lived watch
/// streams spread over several HTTP/2 connections.
pub struct ChannelPool {
    tls: ClientTlsConfig,
    lanes: usize,
    channels: Mutex<HashMap<(String, usize), Channel>>,
}

impl ChannelPool {
    /// A pool dialing servers of `region` with `tls` (a client certificate).
    pub fn new(tls: &CertBundle, region: &str, lanes: usize) -> Arc<Self> {
        Arc::new(Self {
            tls: tls.client_tls_config(&ops_kit::tls::identity_name(Role::Server, region)),
            lanes: lanes.max(1),
            channels: Mutex::default(),
        })
    }

    /// The number of lanes.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// The channel to `addr` for `lane`.
    pub fn channel(&self, addr: &str, lane: usize) -> Result<Channel, RpcError> {
        let key = (addr.to_string(), lane % self.lanes);
        let mut map = lock(&self.channels);
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| RpcError::Unreachable(format!("{addr}: {e}")))?
            .tls_config(self.tls.clone())
            .map_err(|e| RpcError::Unreachable(format!("{addr}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let ch = endpoint.connect_lazy();
        map.insert(key, ch.clone());
        Ok(ch)
    }
}

#[derive(Debug, Default)]
struct Known {
    servers: Vec<String>,
    leader: Option<String>,
    preferred: usize,
}

/// One node's view of the servers.
pub struct RpcClient {
    pool: Arc<ChannelPool>,
    lane: usize,
    seeds: Vec<String>,
    known: Mutex<Known>,
    timeout: Duration,
}

fn encode<T: Serialize>(v: &T) -> Payload {
    Payload {
        data: serde_json::to_vec(v).unwrap_or_default(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(p: &Payload) -> Result<T, RpcError> {
    serde_json::from_slice(&p.data).map_err(|e| RpcError::Rejected(format!("bad answer: {e}")))
}

impl RpcClient {
    /// A client for the servers `seeds` (RPC addresses), using `lane` of
    /// `pool`.
    pub fn new(pool: Arc<ChannelPool>, lane: usize, seeds: Vec<String>) -> Self {
        let start = if seeds.is_empty() {
            0
        } else {
            lane % seeds.len()
        };
        Self {
            pool,
            lane,
            known: Mutex::new(Known {
                servers: seeds.clone(),
                leader: None,
                preferred: start,
            }),
            seeds,
            timeout: Duration::from_secs(10),
        }
    }

    /// The servers currently known (from the last answer, plus the seeds).
    pub fn servers(&self) -> Vec<String> {
        lock(&self.known).servers.clone()
    }

    /// The leader's address, when known.
    pub fn leader(&self) -> Option<String> {
        lock(&self.known).leader.clone()
    }

    /// Takes in the server list and leader of an answer.
    pub fn learn(&self, resp: &NodeUpdateResponse) {
        let mut k = lock(&self.known);
        if !resp.servers.is_empty() {
            let mut list = resp.servers.clone();
            for s in &self.seeds {
                if !list.contains(s) {
                    list.push(s.clone());
                }
            }
            k.servers = list;
        }
        k.leader = (!resp.leader_rpc_addr.is_empty()).then(|| resp.leader_rpc_addr.clone());
        if k.preferred >= k.servers.len() {
            k.preferred = 0;
        }
    }

    /// Servers in the order to try them: the preferred one first.
    fn order(&self) -> Vec<String> {
        let k = lock(&self.known);
        let n = k.servers.len();
        (0..n)
            .map(|i| k.servers[(k.preferred + i) % n].clone())
            .collect()
    }

    fn prefer(&self, addr: &str) {
        let mut k = lock(&self.known);
        if let Some(i) = k.servers.iter().position(|s| s == addr) {
            k.preferred = i;
        }
    }

    fn client(&self, addr: &str) -> Result<ClientServiceClient<Channel>, RpcError> {
        Ok(
            ClientServiceClient::new(self.pool.channel(addr, self.lane)?)
                .max_decoding_message_size(256 * 1024 * 1024),
        )
    }

    async fn unary(&self, addr: &str, method: Method, body: &Payload) -> Result<Payload, Status> {
        let mut c = self
            .client(addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let req = tonic::Request::new(body.clone());
        let fut = async move {
            match method {
                Method::Register => c.register(req).await,
                Method::Heartbeat => c.heartbeat(req).await,
                Method::Update => c.update_allocations(req).await,
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map(|r| r.into_inner()),
            Err(_) => Err(Status::deadline_exceeded(format!("{addr}: timed out"))),
        }
    }

    /// Calls `method` on the servers in turn until one answers.
    async fn call_any(&self, method: Method, body: Payload) -> Result<(String, Payload), RpcError> {
        let order = self.order();
        if order.is_empty() {
            return Err(RpcError::Unreachable("no servers configured".into()));
        }
        let mut last = String::new();
        for addr in order {
            match self.unary(&addr, method, &body).await {
                Ok(p) => {
                    self.prefer(&addr);
                    return Ok((addr, p));
                }
                Err(s) => {
                    if let Some(e) = classify(&s) {
                        return Err(e);
                    }
                    last = format!("{addr}: {}", s.message());
                }
            }
        }
        Err(RpcError::Unreachable(last))
    }

    /// Registers the node (any server; followers forward the write).
    pub async fn register(&self, node: &Node) -> Result<NodeUpdateResponse, RpcError> {
        let (_, p) = self.call_any(Method::Register, encode(node)).await?;
        let resp: NodeUpdateResponse = decode(&p)?;
        self.learn(&resp);
        Ok(resp)
    }

    /// Heartbeats to the leader: tries the known leader first, follows
    /// `leader=<addr>` redirections, and falls back to the other servers.
    pub async fn heartbeat(&self, auth: &NodeAuth) -> Result<NodeUpdateResponse, RpcError> {
        let body = encode(auth);
        let mut queue: Vec<String> = Vec::new();
        if let Some(l) = self.leader() {
            queue.push(l);
        }
        for s in self.order() {
            if !queue.contains(&s) {
                queue.push(s);
            }
        }
        if queue.is_empty() {
            return Err(RpcError::Unreachable("no servers configured".into()));
        }
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut budget = queue.len() + 3;
        while let Some(addr) = (!queue.is_empty()).then(|| queue.remove(0)) {
            if budget == 0 {
                break;
            }
            budget -= 1;
            tried.push(addr.clone());
            match self.unary(&addr, Method::Heartbeat, &body).await {
                Ok(p) => {
                    let mut resp: NodeUpdateResponse = decode(&p)?;
                    if resp.leader_rpc_addr.is_empty() {
                        resp.leader_rpc_addr = addr.clone();
                    }
                    self.learn(&resp);
                    return Ok(resp);
                }
                Err(s) => {
                    if let Some(hint) = leader_hint(&s) {
                        last = format!("{addr}: {}", s.message());
                        if !hint.is_empty() && !tried.contains(&hint) {
                            let mut k = lock(&self.known);
                            k.leader = Some(hint.clone());
                            if !k.servers.contains(&hint) {
                                k.servers.push(hint.clone());
                            }
                            drop(k);
                            queue.retain(|a| a != &hint);
                            queue.insert(0, hint);
                        }
                        continue;
                    }
                    if let Some(e) = classify(&s) {
                        return Err(e);
                    }
                    if lock(&self.known).leader.as_deref() == Some(addr.as_str()) {
                        lock(&self.known).leader = None;
                    }
                    last = format!("{addr}: {}", s.message());
                }
            }
        }
        Err(RpcError::Unreachable(last))
    }

    /// Reports client-side allocation changes; returns the Raft index.
    pub async fn update_allocs(&self, req: &AllocUpdateRequest) -> Result<u64, RpcError> {
        let (_, p) = self.call_any(Method::Update, encode(req)).await?;
        Ok(decode::<IndexReply>(&p)?.index)
    }

    /// Opens an allocation watch on some server.
    pub async fn watch(&self, auth: &NodeAuth) -> Result<(String, AllocStream), RpcError> {
        let body = encode(auth);
        let mut last = String::from("no servers configured");
        for addr in self.order() {
            let mut c = match self.client(&addr) {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let fut = c.watch_allocations(tonic::Request::new(body.clone()));
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(Ok(resp)) => {
                    self.prefer(&addr);
                    return Ok((
                        addr,
                        AllocStream {
                            inner: resp.into_inner(),
                        },
                    ));
                }
                Ok(Err(s)) => {
                    if let Some(e) = classify(&s) {
                        return Err(e);
                    }
                    last = format!("{addr}: {}", s.message());
                }
                Err(_) => last = format!("{addr}: timed out"),
            }
        }
        Err(RpcError::Unreachable(last))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Register,
    Heartbeat,
    Update,
}

/// A stream of allocation changes.
pub struct AllocStream {
    inner: Streaming<Payload>,
}

impl AllocStream {
    /// The next event; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<AllocWatchEvent>, RpcError> {
        match self.inner.message().await {
            Ok(Some(p)) => decode(&p).map(Some),
            Ok(None) => Ok(None),
            Err(s) => {
                Err(classify(&s).unwrap_or_else(|| RpcError::Unreachable(s.message().to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let r: NodeUpdateResponse = serde_json::from_str(
            r#"{"HeartbeatTTL":10000000000,"Servers":["a:1","b:2"],"LeaderRPCAddr":"a:1","Index":7}"#,
        )
        .unwrap();
        assert_eq!(r.heartbeat_ttl, 10_000_000_000);
        assert_eq!(r.servers, vec!["a:1", "b:2"]);
        assert_eq!(r.leader_rpc_addr, "a:1");
        let a = serde_json::to_value(NodeAuth {
            node_id: "n".into(),
            secret_id: "s".into(),
            index: 3,
        })
        .unwrap();
        assert_eq!(
            a,
            serde_json::json!({"NodeID": "n", "SecretID": "s", "Index": 3})
        );
        let ev: AllocWatchEvent =
            serde_json::from_str(r#"{"Allocs":[{"ID":"x"}],"Index":9}"#).unwrap();
        assert_eq!(ev.allocs[0].id, "x");
        assert_eq!(ev.index, 9);
    }

    #[test]
    fn leader_hints() {
        let s = Status::failed_precondition("not the leader; leader=10.0.0.1:4647");
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.1:4647"));
        let s = Status::failed_precondition("not the leader; leader=");
        assert_eq!(leader_hint(&s).as_deref(), Some(""));
        assert_eq!(leader_hint(&Status::unavailable("leader=x")), None);
    }
}
