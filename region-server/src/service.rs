//! The service layer both APIs call: writes through Raft (forwarded to the
//! leader from any server), linearizable or stale reads, Raft membership,
//! and the `RegionService` gRPC that servers of a region use among
//! themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use proto::rpc::region_service_client::RegionServiceClient;
use proto::rpc::region_service_server::RegionService;
use proto::rpc::{
    ClusterInfoReply, ClusterInfoRequest, ForwardWrite, ForwardWriteReply, MembershipChange,
    MembershipReply, ReadIndexReply, ReadIndexRequest, SnapshotChunk,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::raft::network::PeerPool;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::{NodeId, Raft, ServerNode};
use crate::state::{snapshot_file, Command, CommandResponse, RequestId, StateStore, Tables};

/// How long a request waits for a leader before it fails.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Errors of the service layer, mapped to HTTP statuses by the API.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No leader could be found in time.
    #[error("No cluster leader")]
    NoLeader,
    /// The request named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// Bad input.
    #[error("{0}")]
    BadRequest(String),
    /// Something failed inside the region.
    #[error("{0}")]
    Internal(String),
}

/// What a server tells its peers about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Raft node id.
    pub id: NodeId,
    /// Where to reach it.
    pub node: ServerNode,
    /// Region.
    pub region: String,
    /// Whether its Raft has a membership (bootstrapped or joined).
    pub initialized: bool,
    /// The leader it knows, if any.
    pub leader: Option<(NodeId, ServerNode)>,
    /// Voters of its current membership.
    pub voters: BTreeMap<NodeId, ServerNode>,
    /// Learners of its current membership.
    pub learners: BTreeMap<NodeId, ServerNode>,
    /// Last applied index.
    pub applied: u64,
    /// Index of its last log entry.
    #[serde(default)]
    pub last_log_index: u64,
    /// Its current Raft term.
    #[serde(default)]
    pub term: u64,
    /// Milliseconds since it last heard from the leader (0 on the leader).
    #[serde(default)]
    pub last_contact_ms: u64,
}

/// One server's handle on the region.
#[derive(Clone)]
pub struct Service {
    /// This server's Raft id.
    pub id: NodeId,
    /// This server's addresses.
    pub node: ServerNode,
    /// The region.
    pub region: String,
    /// The datacenter.
    pub datacenter: String,
    /// The Raft handle.
    pub raft: Raft,
    /// The state.
    pub store: StateStore,
    /// Channels to peers.
    pub peers: PeerPool,
    /// Batches this server's writes into Raft entries while it leads.
    proposer: Proposer,
    last_contact_ms: Arc<AtomicU64>,
    started: Instant,
    /// A leader that has not heard from a quorum this long is not trusted
    /// as one (openraft 0.9 leaves it leader until a higher term appears).
    quorum_timeout: Duration,
    /// Raft allows one membership change at a time: changes made through
    /// this server wait their turn.
    membership_lock: Arc<tokio::sync::Mutex<()>>,
    /// Set on the copy the leader's duties use (see [`Service::in_term`]):
    /// their writes commit on this server in this term, or not at all.
    leader_term: Option<u64>,
}

impl Service {
    /// A service over a started Raft.
    pub fn new(
        id: NodeId,
        node: ServerNode,
        region: String,
        datacenter: String,
        raft: Raft,
        store: StateStore,
        peers: PeerPool,
    ) -> Self {
        Self {
            id,
            node,
            region,
            datacenter,
            proposer: Proposer::new(raft.clone()),
            raft,
            store,
            peers,
            last_contact_ms: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            quorum_timeout: Duration::from_secs(1),
            membership_lock: Arc::default(),
            leader_term: None,
        }
    }

    /// A copy for the leader's duties in Raft term `term`: its writes are
    /// proposed on this server only while it leads in that term, never
    /// forwarded and never retried. A leader's decisions (a scheduler's
    /// plan, a node marked down) were made against its own state; once
    /// its term is over, committing them through another leader would
    /// bypass that leader's own checks (two plans placing one slot).
    pub fn in_term(&self, term: u64) -> Self {
        Self {
            leader_term: Some(term),
            ..self.clone()
        }
    }

    /// The term this server leads in, if it does.
    pub fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader).then_some(m.current_term)
    }

    /// How long a leader may go without a quorum's acknowledgement before
    /// it stops counting as a known leader.
    pub fn with_quorum_timeout(mut self, timeout: Duration) -> Self {
        self.quorum_timeout = timeout;
        self
    }

    /// Note that the leader was heard from (called by the Raft gRPC service).
    pub fn touch_leader_contact(&self) {
        self.last_contact_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<(NodeId, ServerNode)> {
        let m = self.raft.metrics().borrow().clone();
        if m.running_state.is_err() || m.state == ServerState::Shutdown {
            // Raft stopped (e.g. a storage error): the last leader it knew
            // is no longer known, least of all this server itself.
            return None;
        }
        let id = m.current_leader?;
        if id == self.id && m.state == ServerState::Leader {
            // A leader cut off from its quorum is no leader to clients.
            let voters = m.membership_config.membership().voter_ids().count();
            let acked = m.millis_since_quorum_ack.map(Duration::from_millis);
            if voters > 1 && acked.is_none_or(|a| a > self.quorum_timeout) {
                return None;
            }
        }
        let node = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, node))
    }

    /// Resolves with the error once this server's Raft stopped for good
    /// (a storage error such as a full disk stops openraft's core): the
    /// server can no longer take part in its region and should exit, so
    /// that it is restarted from its files. Never resolves otherwise.
    pub async fn raft_fatal(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow_and_update().running_state {
                return e.to_string();
            }
            if rx.changed().await.is_err() {
                return "Raft stopped".into();
            }
        }
    }

    /// Whether this server is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Milliseconds since this server last heard from the leader (0 on the leader).
    pub fn last_contact_ms(&self) -> u64 {
        if self.is_leader() {
            return 0;
        }
        let at = self.last_contact_ms.load(Ordering::Relaxed);
        (self.started.elapsed().as_millis() as u64).saturating_sub(at)
    }

    /// Wait up to `LEADER_WAIT` for a leader to be known.
    async fn await_leader(&self, deadline: Instant) -> Result<(NodeId, ServerNode), ServiceError> {
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(ServiceError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Commit a command through Raft (on the leader, forwarding if needed)
    /// and wait until this server has applied it. Returns the command's
    /// response and its Raft index.
    ///
    /// The command carries a request id through every attempt (see
    /// `state::requests`): an attempt whose answer was lost may still
    /// commit, and the retry must not apply it a second time.
    pub async fn write(&self, cmd: Command) -> Result<(CommandResponse, u64), ServiceError> {
        let cmd = match cmd {
            once @ Command::Once { .. } => once,
            cmd => Command::Once {
                request: RequestId::new(self.id),
                cmd: Box::new(cmd),
            },
        };
        if let Some(term) = self.leader_term {
            return self.write_in_term(cmd, term).await;
        }
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let (leader_id, leader) = self.await_leader(deadline).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = if leader_id == self.id {
                // A leader that lost its quorum never commits: give up at
                // the deadline instead of waiting for it.
                match tokio::time::timeout(left, self.write_local(cmd.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(Retry::Again),
                }
            } else {
                self.write_forward(&leader, &cmd).await
            };
            match attempt {
                Ok((resp, index)) => {
                    // Read-your-writes on this server.
                    if !self.store.wait_applied(index, LEADER_WAIT).await {
                        return Err(ServiceError::Internal(format!(
                            "write committed at index {index} but not yet applied here"
                        )));
                    }
                    return Ok((resp, index));
                }
                Err(Retry::Again) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(Retry::Again) => return Err(ServiceError::NoLeader),
                Err(Retry::Fail(e)) => return Err(e),
            }
        }
    }

    /// A leader duty's write (see [`Service::in_term`]): committed here in
    /// `term`, or refused. There is no deadline: the entry is in the log
    /// once proposed, and a duty that gave up on it would decide again
    /// without knowing whether it commits; it resolves when it commits or
    /// when a new leader truncates it (the proposer answers `NotLeader`).
    async fn write_in_term(
        &self,
        cmd: Command,
        term: u64,
    ) -> Result<(CommandResponse, u64), ServiceError> {
        match self.proposer.write_in_term(cmd, term).await {
            Ok((resp, index)) => {
                if !self.store.wait_applied(index, LEADER_WAIT).await {
                    return Err(ServiceError::Internal(format!(
                        "write committed at index {index} but not yet applied here"
                    )));
                }
                Ok((resp, index))
            }
            Err(ProposeError::NotLeader) => Err(ServiceError::Internal(format!(
                "leadership of term {term} is over"
            ))),
            Err(e) => Err(ServiceError::Internal(e.to_string())),
        }
    }

    async fn write_local(&self, cmd: Command) -> Result<(CommandResponse, u64), Retry> {
        match self.proposer.write(cmd).await {
            Ok(r) => Ok(r),
            Err(ProposeError::NotLeader) => Err(Retry::Again),
            Err(e) => Err(Retry::Fail(ServiceError::Internal(e.to_string()))),
        }
    }

    async fn write_forward(
        &self,
        leader: &ServerNode,
        cmd: &Command,
    ) -> Result<(CommandResponse, u64), Retry> {
        let mut client = self.region_client(&leader.rpc_addr).map_err(Retry::Fail)?;
        let command = serde_json::to_vec(cmd)
            .map_err(|e| Retry::Fail(ServiceError::Internal(format!("encode command: {e}"))))?;
        let mut req = Request::new(ForwardWrite { command });
        req.set_timeout(LEADER_WAIT);
        match client.write(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let resp = serde_json::from_slice(&r.response).map_err(|e| {
                    Retry::Fail(ServiceError::Internal(format!("decode leader reply: {e}")))
                })?;
                Ok((resp, r.index))
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::FailedPrecondition
                ) =>
            {
                Err(Retry::Again)
            }
            Err(s) => Err(Retry::Fail(ServiceError::Internal(format!(
                "forwarding to leader {}: {}",
                leader.rpc_addr,
                s.message()
            )))),
        }
    }

    fn region_client(
        &self,
        addr: &str,
    ) -> Result<RegionServiceClient<tonic::transport::Channel>, ServiceError> {
        let ch = self
            .peers
            .channel(addr)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(RegionServiceClient::new(ch).max_decoding_message_size(1024 * 1024 * 1024))
    }

    /// Make the next read linearizable: confirm leadership (on the leader)
    /// or learn the leader's read index and wait to apply up to it.
    pub async fn read_barrier(&self) -> Result<(), ServiceError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let (leader_id, leader) = self.await_leader(deadline).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let res: Result<(), String> = if leader_id == self.id {
                match tokio::time::timeout(left, self.raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no quorum answered in time".into()),
                }
            } else {
                match self
                    .region_client(&leader.rpc_addr)?
                    .read_index(ReadIndexRequest {})
                    .await
                {
                    Ok(r) => {
                        let idx = r.into_inner().read_index;
                        if self.store.wait_applied(idx, LEADER_WAIT).await {
                            return Ok(());
                        }
                        Err(format!("not caught up to read index {idx}"))
                    }
                    Err(s) => Err(s.message().to_string()),
                }
            };
            if Instant::now() >= deadline {
                return Err(match res {
                    Err(e) if self.leader().is_some() => {
                        ServiceError::Internal(format!("read barrier: {e}"))
                    }
                    _ => ServiceError::NoLeader,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The object index (`X-Nomad-Index`, `ModifyIndex`) of a Raft index.
    pub fn effective_index(&self, raft_index: u64) -> u64 {
        self.store.snapshot().effective(raft_index)
    }

    /// A consistent snapshot of the state; linearizable unless `stale`.
    pub async fn read(&self, stale: bool) -> Result<Arc<Tables>, ServiceError> {
        if !stale {
            self.read_barrier().await?;
        }
        Ok(self.store.snapshot())
    }

    /// This server's view of the cluster.
    pub fn cluster_info(&self) -> ClusterInfo {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.clone());
            } else {
                learners.insert(*id, node.clone());
            }
        }
        ClusterInfo {
            id: self.id,
            node: self.node.clone(),
            region: self.region.clone(),
            initialized: !voters.is_empty(),
            leader: self.leader(),
            voters,
            learners,
            applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            term: m.current_term,
            last_contact_ms: self.last_contact_ms(),
        }
    }

    /// Add a server: as a learner until it has caught up, then as a voter.
    /// Must run on the leader.
    pub async fn add_server(&self, id: NodeId, node: ServerNode) -> Result<(), ServiceError> {
        let _turn = self.membership_lock.lock().await;
        let info = self.cluster_info();
        if info.voters.contains_key(&id) {
            return Ok(());
        }
        let learner = || self.raft.add_learner(id, node.clone(), true);
        retry_in_progress(learner)
            .await
            .map_err(|e| ServiceError::Internal(format!("add learner {id}: {e}")))?;
        let promote = || {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        };
        retry_in_progress(promote)
            .await
            .map_err(|e| ServiceError::Internal(format!("promote {id} to voter: {e}")))?;
        Ok(())
    }

    /// Remove a server from the Raft configuration. Must run on the leader.
    /// Refuses to remove the last voter.
    pub async fn remove_server(&self, id: NodeId) -> Result<(), ServiceError> {
        let _turn = self.membership_lock.lock().await;
        let info = self.cluster_info();
        let change = if info.voters.contains_key(&id) {
            if info.voters.len() <= 1 {
                return Err(ServiceError::BadRequest(
                    "refusing to remove the last voter".into(),
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if info.learners.contains_key(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Ok(());
        };
        let remove = || self.raft.change_membership(change.clone(), false);
        retry_in_progress(remove)
            .await
            .map_err(|e| ServiceError::Internal(format!("remove server {id}: {e}")))?;
        Ok(())
    }

    /// Run a membership change on the leader, wherever it is.
    pub async fn membership_on_leader(
        &self,
        join: bool,
        id: NodeId,
        node: ServerNode,
    ) -> Result<(), ServiceError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let (leader_id, leader) = self.await_leader(deadline).await?;
        if leader_id == self.id {
            return if join {
                self.add_server(id, node).await
            } else {
                self.remove_server(id).await
            };
        }
        let change = MembershipChange {
            node_id: id,
            rpc_addr: node.rpc_addr,
            http_addr: node.http_addr,
            name: node.name,
        };
        let mut client = self.region_client(&leader.rpc_addr)?;
        let r = if join {
            client.join(change).await
        } else {
            client.leave(change).await
        };
        r.map(|_| ())
            .map_err(|s| ServiceError::from_peer(&leader.rpc_addr, &s))
    }

    /// Leave the region gracefully: the leader hands off leadership by
    /// removing itself (the remaining voters elect a successor), a follower
    /// asks the leader to remove it.
    pub async fn leave(&self) -> Result<(), ServiceError> {
        self.membership_on_leader(false, self.id, self.node.clone())
            .await
    }

    /// Ask the servers at `addrs` who they are.
    pub async fn probe(&self, addr: &str) -> Result<ClusterInfo, ServiceError> {
        let mut client = self.region_client(addr)?;
        let mut req = Request::new(ClusterInfoRequest {});
        req.set_timeout(Duration::from_secs(1));
        let r = client
            .cluster_info(req)
            .await
            .map_err(|s| ServiceError::Internal(format!("{addr}: {}", s.message())))?;
        serde_json::from_slice(&r.into_inner().info)
            .map_err(|e| ServiceError::Internal(format!("{addr}: {e}")))
    }

    /// Stream a consistent snapshot of the state as an sqlite file.
    pub async fn snapshot_bytes(&self, tables: &Tables) -> Result<Vec<u8>, ServiceError> {
        let dir = tempfile::tempdir()
            .map_err(|e| ServiceError::Internal(format!("snapshot temp dir: {e}")))?;
        let path = dir.path().join("snapshot.db");
        snapshot_file::write(
            &path,
            tables,
            &snapshot_file::SnapshotMeta {
                index: tables.index,
                raft: None,
            },
        )
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| ServiceError::Internal(format!("read snapshot: {e}")))
    }

    /// Restore the region's state from snapshot file bytes, through Raft.
    pub async fn restore(&self, bytes: Vec<u8>) -> Result<u64, ServiceError> {
        let dir = tempfile::tempdir()
            .map_err(|e| ServiceError::Internal(format!("snapshot temp dir: {e}")))?;
        let path = dir.path().join("restore.db");
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| ServiceError::Internal(format!("write snapshot: {e}")))?;
        let (_, rows) = snapshot_file::read(&path)
            .await
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        // Validate before committing: a bad snapshot must never reach the log.
        snapshot_file::tables_from_rows(rows.clone())
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let (resp, index) = self.write(Command::Restore { rows }).await?;
        match resp {
            CommandResponse::Conflict(m) => Err(ServiceError::BadRequest(m)),
            _ => Ok(self.effective_index(index)),
        }
    }
}

enum Retry {
    Again,
    Fail(ServiceError),
}

type MembershipResult = Result<
    openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, ServerNode>>,
>;

/// Run a membership change, waiting (up to 10 s) while another change —
/// e.g. one a previous leader started — is still in progress.
async fn retry_in_progress<F, Fut>(change: F) -> MembershipResult
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = MembershipResult>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match change().await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            ))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// `RegionService`: what servers of the region ask each other.
pub struct RegionGrpc {
    service: Service,
}

impl RegionGrpc {
    /// Serve `service`.
    pub fn new(service: Service) -> Self {
        Self { service }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NoLeader => Status::unavailable("No cluster leader"),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::Conflict(m) => Status::failed_precondition(m),
            ServiceError::BadRequest(m) => Status::invalid_argument(m),
            ServiceError::Internal(m) => Status::internal(m),
        }
    }
}

impl ServiceError {
    /// The error a peer's gRPC status stands for (the inverse of
    /// `Status::from`), naming the peer.
    fn from_peer(addr: &str, s: &Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            tonic::Code::Unavailable => ServiceError::NoLeader,
            tonic::Code::NotFound => ServiceError::NotFound(m),
            tonic::Code::FailedPrecondition => ServiceError::Conflict(m),
            tonic::Code::InvalidArgument => ServiceError::BadRequest(m),
            _ => ServiceError::Internal(format!("{addr}: {m}")),
        }
    }
}

#[tonic::async_trait]
impl RegionService for RegionGrpc {
    async fn write(
        &self,
        req: Request<ForwardWrite>,
    ) -> Result<Response<ForwardWriteReply>, Status> {
        let cmd: Command = serde_json::from_slice(&req.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("undecodable command: {e}")))?;
        if !self.service.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        match self.service.proposer.write(cmd).await {
            Ok((resp, index)) => Ok(Response::new(ForwardWriteReply {
                response: serde_json::to_vec(&resp).map_err(|e| Status::internal(e.to_string()))?,
                index,
            })),
            Err(ProposeError::NotLeader) => Err(Status::unavailable("not the leader")),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        match self.service.raft.ensure_linearizable().await {
            Ok(l) => Ok(Response::new(ReadIndexReply {
                read_index: l.map(|l| l.index).unwrap_or(0),
            })),
            Err(e) => Err(Status::unavailable(format!("read index: {e}"))),
        }
    }

    async fn join(
        &self,
        req: Request<MembershipChange>,
    ) -> Result<Response<MembershipReply>, Status> {
        let m = req.into_inner();
        let node = ServerNode {
            name: m.name,
            rpc_addr: m.rpc_addr,
            http_addr: m.http_addr,
        };
        if !self.service.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        self.service.add_server(m.node_id, node).await?;
        Ok(Response::new(MembershipReply {
            ok: true,
            message: String::new(),
        }))
    }

    async fn leave(
        &self,
        req: Request<MembershipChange>,
    ) -> Result<Response<MembershipReply>, Status> {
        let m = req.into_inner();
        if !self.service.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        self.service.remove_server(m.node_id).await?;
        Ok(Response::new(MembershipReply {
            ok: true,
            message: String::new(),
        }))
    }

    async fn cluster_info(
        &self,
        _req: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoReply>, Status> {
        let info = serde_json::to_vec(&self.service.cluster_info())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ClusterInfoReply { info }))
    }

    type SnapshotStream = tokio_stream::wrappers::ReceiverStream<Result<SnapshotChunk, Status>>;

    async fn snapshot(
        &self,
        _req: Request<ClusterInfoRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let tables = self.service.read(false).await.map_err(Status::from)?;
        let bytes = self
            .service
            .snapshot_bytes(&tables)
            .await
            .map_err(Status::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in bytes.chunks(1024 * 1024) {
                if tx
                    .send(Ok(SnapshotChunk {
                        data: chunk.to_vec(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}
