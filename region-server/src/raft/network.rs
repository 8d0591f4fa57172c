//! Raft over mTLS gRPC: one cached channel per peer, openraft's messages as
//! JSON payloads, and the `RaftService` that feeds them to the local Raft.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use ops_kit::tls::{CertBundle, Role};
use proto::rpc::raft_service_client::RaftServiceClient;
use proto::rpc::raft_service_server::RaftService;
use proto::rpc::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::{NodeId, Raft, ServerNode, TypeConfig};

/// gRPC channels to the other servers of the region, one per address,
/// created lazily and reused (tonic reconnects them as needed).
#[derive(Clone)]
pub struct PeerPool {
    tls: Arc<CertBundle>,
    server_name: String,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// Errors reaching a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The address or TLS settings are unusable.
    #[error("peer {addr}: {source}")]
    Endpoint {
        /// The peer address.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

impl PeerPool {
    /// A pool that dials servers of `region` with our certificate.
    pub fn new(tls: Arc<CertBundle>, region: &str) -> Self {
        Self {
            tls,
            server_name: ops_kit::tls::identity_name(Role::Server, region),
            channels: Arc::default(),
        }
    }

    /// The channel to `addr` (`host:port`).
    pub fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let err = |source| PeerError::Endpoint {
            addr: addr.to_string(),
            source,
        };
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(err)?
            .tls_config(self.tls.client_tls_config(&self.server_name))
            .map_err(err)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            // A connection whose PING goes unanswered for 2 s is dropped and
            // dialled again: after a partition heals, a fresh connection
            // reaches the peer at once, where the old one would wait out
            // TCP's retransmission backoff (seconds) before anything of it
            // arrives.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Creates a [`Network`] per target server.
#[derive(Clone)]
pub struct NetworkFactory {
    pool: PeerPool,
}

impl NetworkFactory {
    /// A factory using `pool`.
    pub fn new(pool: PeerPool) -> Self {
        Self { pool }
    }
}

/// The connection to one target server.
pub struct Network {
    target: NodeId,
    node: ServerNode,
    client: Result<RaftServiceClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> Self::Network {
        let client = self
            .pool
            .channel(&node.rpc_addr)
            .map(|c| RaftServiceClient::new(c).max_decoding_message_size(256 * 1024 * 1024))
            .map_err(|e| e.to_string());
        Network {
            target,
            node: node.clone(),
            client,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

/// The largest AppendEntries request sent with more than one entry. openraft
/// 0.9 allows one heartbeat interval (100 ms by default) per AppendEntries,
/// so a follower catching up on large entries (plan results) gets them a
/// few at a time instead of timing out over and over.
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;

/// How many leading entries of the given encoded sizes fit in `limit` bytes
/// (at least one, so a single large entry is still sent).
pub fn entries_that_fit(sizes: impl IntoIterator<Item = usize>, limit: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0usize;
    for size in sizes {
        total = total.saturating_add(size);
        if total > limit {
            break;
        }
        n += 1;
    }
    n.max(1)
}

fn encode<T: Serialize>(v: &T) -> Result<Payload, serde_json::Error> {
    Ok(Payload {
        data: serde_json::to_vec(v)?,
    })
}

impl Network {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, ServerNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call_encoded(method, payload, ttl).await
    }

    /// [`Network::call`] with the request already encoded.
    async fn call_encoded<Resp, E>(
        &mut self,
        method: &'static str,
        payload: Payload,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, ServerNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Msg(e.clone())))),
        };
        let mut request = Request::new(payload);
        request.set_timeout(ttl);
        let reply = match method {
            "vote" => client.vote(request).await,
            "append" => client.append_entries(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = Msg(format!(
                    "{} to {}: {}",
                    method,
                    self.node.rpc_addr,
                    status.message()
                ));
                return Err(match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>>
    {
        let payload = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if payload.data.len() > MAX_APPEND_BYTES && rpc.entries.len() > 1 {
            // openraft times an AppendEntries out after one heartbeat
            // interval: ask it to send fewer entries at a time.
            let sizes = rpc
                .entries
                .iter()
                .map(|e| serde_json::to_vec(e).map(|v| v.len()).unwrap_or(usize::MAX));
            let hint = entries_that_fit(sizes, MAX_APPEND_BYTES);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint as u64),
            ));
        }
        self.call_encoded("append", payload, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ServerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ServerNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}

/// Serves Raft RPCs from the other servers of the region.
pub struct RaftGrpc {
    raft: Raft,
    on_append: Box<dyn Fn() + Send + Sync>,
}

impl RaftGrpc {
    /// A service feeding `raft`. Who may call it (servers of the region) is
    /// decided before it, by the server's [`ops_kit::authz::AuthzLayer`].
    /// `on_append` runs whenever a leader's AppendEntries arrives.
    pub fn new(raft: Raft, on_append: Box<dyn Fn() + Send + Sync>) -> Self {
        Self { raft, on_append }
    }

    fn decode<T: DeserializeOwned>(&self, req: Request<Payload>) -> Result<T, Status> {
        // Only servers of this region get here: see ops_kit::authz::Policy::region_server.
        serde_json::from_slice(&req.into_inner().data)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
    }
}

fn reply<T: Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("encode raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<NodeId> = self.decode(req)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode(req)?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if r.is_success()) {
            (self.on_append)();
        }
        reply(&result)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.decode(req)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod append_limit_tests {
    use super::*;

    #[test]
    fn entries_fit_until_the_limit() {
        assert_eq!(entries_that_fit([10, 10, 10], 25), 2);
        assert_eq!(entries_that_fit([10, 10, 10], 30), 3);
        assert_eq!(entries_that_fit([10, 10, 10], 100), 3);
        // A single entry over the limit is still sent alone.
        assert_eq!(entries_that_fit([50, 10], 25), 1);
        assert_eq!(entries_that_fit(std::iter::empty(), 25), 1);
    }
}
