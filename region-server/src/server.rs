//! Starting and stopping a region server: storage, Raft, the gRPC and HTTP
//! listeners, and the bootstrap/join loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ops_kit::gossip::{GossipPool, Keyring, MemberInfo, MemberRole, MemberStatus};
use ops_kit::tls::{CertBundle, DevCa, Role};
use proto::rpc::client_service_server::ClientServiceServer;
use proto::rpc::forward_service_server::ForwardServiceServer;
use proto::rpc::raft_service_server::RaftServiceServer;
use proto::rpc::region_service_server::RegionServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::http;
use crate::client_rpc::ClientGrpc;
use crate::config::{ServerConfig, TlsSource};
use crate::leader::LeaderHandle;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, PeerPool, RaftGrpc};
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeId, Raft, ServerNode};
use crate::service::{RegionGrpc, Service};
use crate::state::StateStore;

/// A running region server.
pub struct RegionServer {
    /// The service layer (for in-process callers and tests).
    pub service: Service,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound gRPC address.
    pub rpc_addr: SocketAddr,
    /// The gossip pool, when configured.
    pub gossip: Option<GossipPool>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn load_tls(cfg: &ServerConfig) -> anyhow::Result<CertBundle> {
    Ok(match &cfg.tls {
        TlsSource::Files { ca, cert, key } => {
            CertBundle::load(ca, cert, key).context("loading TLS files")?
        }
        TlsSource::Bundle(b) => b.clone(),
        TlsSource::DevGenerated => {
            let ca = DevCa::load_or_create(&cfg.data_dir.join("tls")).context("development CA")?;
            ca.issue(Role::Server, &cfg.region)
                .context("issuing a development server certificate")?
        }
    })
}

/// The server's Raft id: random on first start, then kept in the data dir.
async fn node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let path = data_dir.join("node-id");
    match tokio::fs::read_to_string(&path).await {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{} does not hold a node id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id: NodeId = rand::random::<u64>() >> 1 | 1;
            let tmp = data_dir.join("node-id.tmp");
            tokio::fs::write(&tmp, id.to_string())
                .await
                .with_context(|| format!("writing {}", tmp.display()))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl RegionServer {
    /// Start a server; returns once it listens (not once it has a leader).
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<Self> {
        ops_kit::tls::install_crypto_provider();
        tokio::fs::create_dir_all(&cfg.data_dir)
            .await
            .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
        let tls = Arc::new(load_tls(&cfg)?);
        let id = node_id(&cfg.data_dir).await?;

        let rpc_listener = TcpListener::bind(&cfg.rpc_addr)
            .await
            .with_context(|| format!("binding rpc address {}", cfg.rpc_addr))?;
        let http_listener = TcpListener::bind(&cfg.http_addr)
            .await
            .with_context(|| format!("binding http address {}", cfg.http_addr))?;
        let rpc_addr = rpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let node = ServerNode {
            name: cfg.name.clone(),
            rpc_addr: rpc_addr.to_string(),
            http_addr: http_addr.to_string(),
        };

        let metrics = Metrics::new(&cfg.region).context("metrics registry")?;
        let log_store =
            LogStore::open_with_cache(&cfg.data_dir.join("raft.db"), cfg.raft.log_cache_bytes())
                .await?;
        let committed = log_store.committed_index();
        let appended = log_store.appended();
        let store = StateStore::default();
        let sm = StateMachine::open(&cfg.data_dir.join("snapshots"), store.clone())
            .await?
            .with_apply_histogram(metrics.raft_apply_duration.clone());
        let peers = PeerPool::new(tls.clone(), &cfg.region);
        let raft_config = Arc::new(cfg.raft.to_config(&cfg.region).context("raft settings")?);
        let raft = Raft::new(
            id,
            raft_config,
            NetworkFactory::new(peers.clone()),
            log_store,
            sm,
        )
        .await
        .context("starting raft")?;

        let service = Service::new(
            id,
            node.clone(),
            cfg.region.clone(),
            cfg.datacenter.clone(),
            raft.clone(),
            store,
            peers,
        )
        .with_quorum_timeout(cfg.raft.failover_window());
        let gossip = match &cfg.gossip {
            None => None,
            Some(g) => {
                let (primary, others) = g
                    .keys
                    .split_first()
                    .ok_or_else(|| anyhow::anyhow!("gossip needs at least one key"))?;
                let keyring = Keyring::with_keys(primary, others).context("gossip keys")?;
                let mut me = MemberInfo::new(&cfg.name, &cfg.region, MemberRole::Server);
                me.datacenter = cfg.datacenter.clone();
                me.rpc_addr = rpc_addr.to_string();
                me.http_addr = http_addr.to_string();
                me.version = env!("CARGO_PKG_VERSION").to_string();
                Some(
                    GossipPool::start(
                        g.pool.clone(),
                        me,
                        keyring,
                        Some(metrics.telemetry.registry()),
                    )
                    .await
                    .context("starting the gossip pool")?,
                )
            }
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let leader = LeaderHandle::new(&cfg.leader).with_metrics(metrics.leader.clone());
        metrics
            .install(service.clone(), leader.clone(), committed, appended)
            .context("metrics registry")?;
        let mut tasks = Vec::new();

        // HTTP API (also answering requests forwarded over ForwardService).
        let federation = crate::api::forward::Federation::new(
            &cfg.region,
            gossip.clone(),
            ops_kit::forward::ChannelPool::new(tls.clone(), 1, Duration::from_millis(500)),
            cfg.max_request_body_bytes,
        );
        let router = http::router(
            http::ApiState::new(
                service.clone(),
                metrics.clone(),
                cfg.max_request_body_bytes,
                gossip.clone(),
            ),
            federation,
        );

        // gRPC: Raft and region services, mTLS.
        let contact = service.clone();
        let raft_svc = RaftGrpc::new(
            raft.clone(),
            Box::new(move || contact.touch_leader_contact()),
        );
        let grpc = tonic::transport::Server::builder()
            .tls_config(tls.server_tls_config())
            .context("gRPC TLS settings")?
            .layer(metrics.grpc.clone())
            // Who may call what: one policy in front of every service.
            .layer(ops_kit::authz::AuthzLayer::new(
                ops_kit::authz::Policy::region_server(&cfg.region),
            ))
            .add_service(
                ForwardServiceServer::new(crate::api::forward::ForwardGrpc::new(
                    router.clone(),
                    &format!("{}.{}", cfg.name, cfg.region),
                ))
                .max_decoding_message_size(ops_kit::forward::MAX_REQUEST_MESSAGE),
            )
            .add_service(
                RaftServiceServer::new(raft_svc).max_decoding_message_size(256 * 1024 * 1024),
            )
            .add_service(
                RegionServiceServer::new(RegionGrpc::new(service.clone()))
                    .max_decoding_message_size(1024 * 1024 * 1024),
            )
            .add_service(
                ClientServiceServer::new(ClientGrpc::new(
                    service.clone(),
                    leader.heartbeats.clone(),
                    cfg.leader.heartbeat.clone(),
                ))
                .max_decoding_message_size(64 * 1024 * 1024),
            );
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            // Small RPCs (heartbeats, votes, forwarded writes) must not wait
            // for Nagle's algorithm and delayed ACKs.
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(rpc_listener),
                |conn| {
                    if let Ok(c) = &conn {
                        let _ = c.set_nodelay(true);
                    }
                    conn
                },
            );
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = grpc.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));

        match cfg.https {
            Some(h) => {
                let config = ops_kit::https::server_config(&tls, h.verify_clients)
                    .context("HTTPS settings")?;
                tasks.push(tokio::spawn(ops_kit::https::serve(
                    http_listener,
                    router,
                    config,
                    shutdown_rx.clone(),
                )));
            }
            None => {
                let mut rx = shutdown_rx.clone();
                tasks.push(tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    use axum::serve::ListenerExt;
                    let listener = http_listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    if let Err(e) = axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                    {
                        tracing::error!(error = %e, "HTTP server failed");
                    }
                }));
            }
        }

        tasks.push(tokio::spawn(
            metrics
                .clone()
                .watch_leader(service.clone(), shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(crate::leader::run(
            service.clone(),
            cfg.leader.clone(),
            leader.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(bootstrap_loop(
            service.clone(),
            cfg.bootstrap_expect,
            cfg.join.clone(),
            gossip.clone(),
            shutdown_rx.clone(),
        )));
        if let (Some(pool), Some(g)) = (&gossip, &cfg.gossip) {
            tasks.push(tokio::spawn(gossip_sync(
                service.clone(),
                pool.clone(),
                g.reap_failed_after,
                shutdown_rx,
            )));
        }
        tracing::info!(id, name = %cfg.name, region = %cfg.region, %http_addr, %rpc_addr, "region server started");
        Ok(Self {
            service,
            http_addr,
            rpc_addr,
            gossip,
            shutdown,
            tasks,
        })
    }

    /// Stop abruptly, as a crash would: no gossip leave, no Raft leave.
    pub async fn kill(self) {
        let _ = self.shutdown.send(true);
        if let Some(pool) = &self.gossip {
            pool.kill();
        }
        if let Err(e) = self.service.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for t in self.tasks {
            t.abort();
        }
    }

    /// Leave the Raft configuration (handing leadership over first when this
    /// server leads) and the gossip pool, then shut down (`nomad server
    /// leave`, or SIGTERM with `--leave-on-terminate`).
    pub async fn leave_and_shutdown(mut self) -> anyhow::Result<()> {
        let left = self.service.leave().await;
        if let Some(pool) = self.gossip.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), pool.leave()).await;
        }
        self.shutdown().await;
        left.context("leaving the region")
    }

    /// Stop serving and shut Raft down, staying a member of the region: the
    /// gossip pool is not told (the others see this server failed, not
    /// left), so the leader keeps it in the Raft configuration and a restart
    /// from the same files rejoins as the same voter, as a Nomad server
    /// without `leave_on_terminate` does. A server that stays down is
    /// removed after `reap_failed_after`.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(pool) = &self.gossip {
            pool.kill();
        }
        if let Err(e) = self.service.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Until this server is part of an initialized region: find peers through
/// the join list; join a region that has a leader; or, with
/// `bootstrap_expect = N`, once N uninitialized servers know of each other,
/// let the one with the lowest id initialize Raft with all of them, so the
/// region bootstraps exactly once even when every server starts together.
async fn bootstrap_loop(
    service: Service,
    expect: Option<usize>,
    join: Vec<String>,
    gossip: Option<GossipPool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Peers: the static list plus the servers of our region the gossip
        // pool knows (never another region's).
        let mut peers = join.clone();
        if let Some(pool) = &gossip {
            if let Some(r) = pool.regions().get(&service.region) {
                for m in &r.servers {
                    if !peers.contains(&m.rpc_addr) {
                        peers.push(m.rpc_addr.clone());
                    }
                }
            }
        }
        match bootstrap_step(&service, expect, &peers).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "bootstrap: not yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Keep the pool's view of this server current (the region's leader, voter
/// flag), and on the leader remove from Raft the servers of this region that
/// left the pool or stayed failed longer than `reap_after`, never below a
/// quorum of live voters.
async fn gossip_sync(
    service: Service,
    pool: GossipPool,
    reap_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failed_since: std::collections::HashMap<String, tokio::time::Instant> =
        Default::default();
    let mut last_meta = None;
    loop {
        let info = service.cluster_info();
        let leader_name = info
            .leader
            .as_ref()
            .map(|(_, n)| format!("{}.{}", n.name, service.region));
        let voter = info.voters.contains_key(&service.id);
        if last_meta.as_ref() != Some(&(leader_name.clone(), voter)) {
            pool.set_meta(leader_name.clone(), voter);
            last_meta = Some((leader_name, voter));
        }
        if service.is_leader() {
            let members = pool.members();
            let status_of = |rpc: &str| {
                members
                    .iter()
                    .filter(|m| m.info.region == service.region && m.info.rpc_addr == rpc)
                    .map(|m| m.status)
                    .max_by_key(|s| matches!(s, MemberStatus::Alive))
            };
            let now = tokio::time::Instant::now();
            let alive_voters = info
                .voters
                .values()
                .filter(|n| {
                    n.rpc_addr == service.node.rpc_addr
                        || status_of(&n.rpc_addr) == Some(MemberStatus::Alive)
                })
                .count();
            for (id, node) in info.voters.iter().chain(info.learners.iter()) {
                if *id == service.id {
                    continue;
                }
                let reap = match status_of(&node.rpc_addr) {
                    Some(MemberStatus::Left) => true,
                    Some(MemberStatus::Failed) => {
                        let since = *failed_since.entry(node.rpc_addr.clone()).or_insert(now);
                        now.duration_since(since) >= reap_after
                    }
                    _ => {
                        failed_since.remove(&node.rpc_addr);
                        false
                    }
                };
                let is_voter = info.voters.contains_key(id);
                let quorum_after = (info.voters.len() - usize::from(is_voter)) / 2 + 1;
                if reap && (!is_voter || alive_voters >= quorum_after) {
                    tracing::warn!(server = %node.name, "removing a server that left or failed from Raft");
                    if let Err(e) = service.remove_server(*id).await {
                        tracing::warn!(server = %node.name, error = %e, "removing server");
                    }
                    failed_since.remove(&node.rpc_addr);
                    break;
                }
            }
        } else {
            failed_since.clear();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn bootstrap_step(
    service: &Service,
    expect: Option<usize>,
    join: &[String],
) -> anyhow::Result<bool> {
    if service.raft.is_initialized().await? {
        return Ok(true);
    }
    let mut uninitialized = BTreeMap::from([(service.id, service.node.clone())]);
    for addr in join {
        if *addr == service.node.rpc_addr {
            continue;
        }
        let info = match service.probe(addr).await {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "bootstrap: peer not reachable");
                continue;
            }
        };
        if info.region != service.region {
            tracing::warn!(%addr, region = %info.region, "bootstrap: peer is of another region; ignored");
            continue;
        }
        if info.initialized {
            if info.voters.contains_key(&service.id) || info.learners.contains_key(&service.id) {
                // Already a member: replication will reach us.
                return Ok(false);
            }
            if let Some((_, leader)) = info.leader {
                let mut client = proto::rpc::region_service_client::RegionServiceClient::new(
                    service.peers.channel(&leader.rpc_addr)?,
                );
                let r = client
                    .join(proto::rpc::MembershipChange {
                        node_id: service.id,
                        rpc_addr: service.node.rpc_addr.clone(),
                        http_addr: service.node.http_addr.clone(),
                        name: service.node.name.clone(),
                    })
                    .await?
                    .into_inner();
                if r.ok {
                    tracing::info!(leader = %leader.rpc_addr, "joined the region");
                    return Ok(true);
                }
                anyhow::bail!("join refused: {}", r.message);
            }
        } else {
            uninitialized.insert(info.id, info.node);
        }
    }
    let Some(expect) = expect else {
        return Ok(false);
    };
    if uninitialized.len() < expect {
        return Ok(false);
    }
    let lowest = uninitialized.keys().next().copied();
    if lowest == Some(service.id) {
        tracing::info!(servers = uninitialized.len(), "bootstrapping the region");
        service.raft.initialize(uninitialized).await?;
        return Ok(true);
    }
    Ok(false)
}
