//! The federation gateway: routes Nomad-compatible `/v1` requests between
//! regions. Stateless; any number may run.
//!
//! A gateway joins the federation's gossip pool with role `gateway` and
//! learns from it which servers of which region are alive. It serves the
//! same `/v1` HTTP API as a region server and a gRPC `GatewayService`
//! (for servers that forward requests for other regions). A request goes to
//! region R (`?region=R`, else the job's `Region` for a register, else the
//! gateway's default region), to a live server of R over mTLS gRPC
//! (`ForwardService`), which answers it with its own router; the answer
//! streams back. No live server of R: `503 No path to region "R"` at once.
//!
//! Modules: [`config`] (TOML and flags), [`routes`] (region map,
//! connection pool, deadline, retry), [`multiregion`] (multi-region job
//! fan-out, global deregister, federated view), [`metrics`].
//!
//! # Library API
//!
//! ```no_run
//! # async fn example(bundle: ops_kit::tls::CertBundle, key: String, seed: String) -> Result<(), federation_gateway::GatewayError> {
//! use federation_gateway::{Gateway, GatewayConfig};
//! let mut cfg = GatewayConfig::dev("gw1", "eu", bundle, vec![key]);
//! cfg.gossip.seeds = vec![seed]; // a server's gossip address
//! let gw = Gateway::start(cfg).await?;
//! println!("HTTP on {}, gRPC on {}", gw.http_addr, gw.rpc_addr);
//! gw.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`Gateway::start`] returns once the gateway listens (HTTP, gRPC,
//! gossip); it learns the regions as gossip reaches it.
//! [`Gateway::shutdown`] leaves the gossip pool and stops serving;
//! [`Gateway::kill`] stops without leaving, as a crash would.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ops_kit::authz::{AuthzLayer, Policy};
use ops_kit::forward::{ChannelPool, MAX_REQUEST_MESSAGE};
use ops_kit::gossip::{GossipPool, Keyring, MemberInfo, MemberRole};
use ops_kit::tls::{CertBundle, DevCa, Role};
use proto::rpc::gateway_service_server::GatewayServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod config;
mod grpc;
pub mod http;
pub mod metrics;
pub mod multiregion;
pub mod routes;

pub use config::{GatewayConfig, HttpTls, TlsSource};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener could not be bound.
    #[error("binding {what} address {addr}")]
    Bind {
        /// `HTTP` or `gRPC`.
        what: &'static str,
        /// The address.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be loaded or issued.
    #[error("TLS identity")]
    Tls(#[from] ops_kit::tls::TlsError),
    /// The certificate is not a gateway's.
    #[error("the gateway's certificate names {0}, not gateway.atoll")]
    NotAGateway(String),
    /// HTTPS settings.
    #[error(transparent)]
    Https(#[from] ops_kit::https::HttpsError),
    /// Gossip settings or keys.
    #[error("gossip: {0}")]
    Gossip(String),
    /// Metrics registry.
    #[error("metrics: {0}")]
    Metrics(#[from] ops_kit::telemetry::TelemetryError),
    /// gRPC server settings.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A running gateway.
pub struct Gateway {
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound gRPC (`GatewayService`) address.
    pub rpc_addr: SocketAddr,
    /// The gossip pool this gateway is a member of.
    pub gossip: GossipPool,
    /// Its metrics.
    pub metrics: metrics::Metrics,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn load_tls(tls: &TlsSource) -> Result<CertBundle, GatewayError> {
    Ok(match tls {
        TlsSource::Files { ca, cert, key } => CertBundle::load(ca, cert, key)?,
        TlsSource::Bundle(b) => b.clone(),
        TlsSource::DevGenerated(dir) => DevCa::load_or_create(dir)?.issue(Role::Gateway, "")?,
    })
}

impl Gateway {
    /// Start a gateway: bind HTTP and gRPC, join the gossip pool (in the
    /// background, through `cfg.gossip.seeds`), and serve.
    pub async fn start(cfg: GatewayConfig) -> Result<Self, GatewayError> {
        ops_kit::tls::install_crypto_provider();
        let tls = Arc::new(load_tls(&cfg.tls)?);
        let me = tls.own_identity()?;
        if me.role != Role::Gateway {
            return Err(GatewayError::NotAGateway(me.name()));
        }
        let bind = |what: &'static str, addr: &str| {
            let addr = addr.to_string();
            move |source| GatewayError::Bind { what, addr, source }
        };
        let http_listener = TcpListener::bind(&cfg.http_addr)
            .await
            .map_err(bind("HTTP", &cfg.http_addr))?;
        let rpc_listener = TcpListener::bind(&cfg.rpc_addr)
            .await
            .map_err(bind("gRPC", &cfg.rpc_addr))?;
        let http_addr = http_listener
            .local_addr()
            .map_err(bind("HTTP", &cfg.http_addr))?;
        let rpc_addr = rpc_listener
            .local_addr()
            .map_err(bind("gRPC", &cfg.rpc_addr))?;

        let metrics = metrics::Metrics::new()?;
        let (primary, others) = cfg
            .gossip_keys
            .split_first()
            .ok_or_else(|| GatewayError::Gossip("at least one gossip key is needed".into()))?;
        let keyring =
            Keyring::with_keys(primary, others).map_err(|e| GatewayError::Gossip(e.to_string()))?;
        let mut info = MemberInfo::new(&cfg.name, &cfg.region, MemberRole::Gateway);
        info.datacenter = cfg.datacenter.clone();
        info.rpc_addr = rpc_addr.to_string();
        info.http_addr = http_addr.to_string();
        let gossip = GossipPool::start(cfg.gossip.clone(), info, keyring, Some(metrics.registry()))
            .await
            .map_err(|e| GatewayError::Gossip(e.to_string()))?;

        let channels =
            ChannelPool::new(tls.clone(), cfg.connections_per_server, cfg.connect_timeout);
        let routes = routes::Routes::new(
            gossip.clone(),
            channels.clone(),
            metrics.clone(),
            cfg.request_timeout,
        );
        let front = http::router(http::FrontState {
            routes: routes.clone(),
            region: cfg.region.clone(),
            rollouts: multiregion::Rollouts::default(),
            metrics: metrics.clone(),
            max_body: cfg.max_request_body_bytes,
            rollout_poll: cfg.rollout_poll,
            rollout_deadline: cfg.rollout_deadline,
        })?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let grpc = tonic::transport::Server::builder()
            .tls_config(tls.server_tls_config())?
            .layer(AuthzLayer::new(Policy::gateway()))
            .add_service(
                GatewayServiceServer::new(grpc::GatewayGrpc::new(
                    front.clone(),
                    &format!("{}.{}", cfg.name, cfg.region),
                ))
                .max_decoding_message_size(MAX_REQUEST_MESSAGE),
            );
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
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
                tracing::error!(error = %e, "gateway gRPC server failed");
            }
        }));

        match &cfg.http_tls {
            Some(t) => {
                let config = ops_kit::https::server_config(&tls, t.verify_clients)?;
                tasks.push(tokio::spawn(ops_kit::https::serve(
                    http_listener,
                    front,
                    config,
                    shutdown_rx.clone(),
                )));
            }
            None => {
                let mut rx = shutdown_rx.clone();
                tasks.push(tokio::spawn(async move {
                    use axum::serve::ListenerExt;
                    let listener = http_listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = axum::serve(listener, front)
                        .with_graceful_shutdown(stop)
                        .await
                    {
                        tracing::error!(error = %e, "gateway HTTP server failed");
                    }
                }));
            }
        }

        // The region map (refreshed on every gossip change), the
        // reachability gauge, and fresh connections for servers that went away.
        let mut rx = shutdown_rx.clone();
        let watcher = routes.clone();
        let mut changes = gossip.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut alive: std::collections::BTreeSet<String> = Default::default();
            loop {
                let map = watcher.update_reachability();
                let now: std::collections::BTreeSet<String> = map
                    .values()
                    .flat_map(|r| r.servers.iter().map(|s| s.rpc_addr.clone()))
                    .collect();
                for gone in alive.difference(&now) {
                    channels.forget(gone);
                }
                alive = now;
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        }));

        tracing::info!(name = %cfg.name, region = %cfg.region, %http_addr, %rpc_addr, "federation gateway started");
        Ok(Self {
            http_addr,
            rpc_addr,
            gossip,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// Leave the gossip pool, then stop serving.
    pub async fn shutdown(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.gossip.clone().leave()).await;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// Stop at once without leaving the pool (others see it fail).
    pub fn kill(self) {
        let _ = self.shutdown.send(true);
        self.gossip.kill();
        for t in self.tasks {
            t.abort();
        }
    }
}
