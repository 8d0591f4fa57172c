//! `region-server`: one server of an Atoll region.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use region_server::config::FileConfig;
use region_server::{RegionServer, ServerConfig, TlsSource};

/// Flags override the TOML file given with `--config`.
#[derive(Debug, Parser)]
#[command(name = "region-server", version, about = "An Atoll region server")]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log filter in `EnvFilter` syntax: a default level and per-module
    /// directives, e.g. `info,region_server::raft=debug`.
    #[arg(
        long,
        env = "ATOLL_LOG_LEVEL",
        default_value = "info,openraft=warn,sqlx=warn"
    )]
    log_level: String,
    /// Log one JSON object per line instead of text.
    #[arg(long, env = "ATOLL_LOG_JSON")]
    log_json: bool,
    /// Server name (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Region (default `global`).
    #[arg(long)]
    region: Option<String>,
    /// Datacenter (default `dc1`).
    #[arg(long)]
    datacenter: Option<String>,
    /// Data directory (Raft log, snapshots, node id).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP API address (default 127.0.0.1:4646).
    #[arg(long)]
    http_addr: Option<String>,
    /// gRPC address (default 127.0.0.1:4647).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Gossip address (default 127.0.0.1:4648).
    #[arg(long)]
    gossip_addr: Option<String>,
    /// Gossip timings: `wan` (memberlist's WAN profile, the default) or
    /// `local` (fast timings for members on one machine: tests, dev).
    #[arg(long, default_value = "wan")]
    gossip_profile: ops_kit::gossip::GossipProfile,
    /// Number of servers to wait for before bootstrapping the region.
    #[arg(long)]
    bootstrap_expect: Option<usize>,
    /// RPC address of another server of the region (repeatable).
    #[arg(long)]
    join: Vec<String>,
    /// CA certificate (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This server's certificate (PEM), naming `server.<region>.atoll`.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This server's key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Serve the HTTP API over TLS with the server's certificate.
    #[arg(long)]
    https: bool,
    /// With --https, require client certificates of the cluster CA.
    #[arg(long, requires = "https")]
    verify_https_client: bool,
    /// Smallest heartbeat TTL handed to clients (Go duration, default 10s).
    #[arg(long)]
    heartbeat_min_ttl: Option<String>,
    /// Added to a client's TTL before its node is marked down (default 10s).
    #[arg(long)]
    heartbeat_grace: Option<String>,
    /// How often the leader collects dead jobs (Nomad's `job_gc_interval`,
    /// default 5m).
    #[arg(long)]
    job_gc_interval: Option<String>,
    /// How long a dead job is kept after its last activity (Nomad's
    /// `job_gc_threshold`, default 4h).
    #[arg(long)]
    job_gc_threshold: Option<String>,
    /// MiB of the newest Raft log entries kept decoded in memory
    /// (`[raft] log_cache_mb`, default 32; older entries are read back from
    /// sqlite when a lagging follower needs them).
    #[arg(long)]
    raft_log_cache_mb: Option<u64>,
    /// Gossip encryption key (base64 of 32 bytes), like Nomad's `encrypt`.
    #[arg(long)]
    encrypt: Option<String>,
    /// Gossip address of a server to join the federation's pool through
    /// (repeatable), like Nomad's `server_join.retry_join`.
    #[arg(long)]
    retry_join: Vec<String>,
    /// Leave the region's Raft configuration on SIGTERM/SIGINT instead of
    /// just stopping.
    #[arg(long)]
    leave_on_terminate: bool,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "server".into())
}

fn build_config(args: Args) -> anyhow::Result<ServerConfig> {
    let file: FileConfig = match &args.config {
        Some(p) => ops_kit::config::load_toml(p)?,
        None => FileConfig::default(),
    };
    let region = args.region.unwrap_or(file.region);
    let name = args.name.or(file.name).unwrap_or_else(host_name);
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("atoll-{region}-{name}")));
    let https = (args.https || file.tls.as_ref().is_some_and(|t| t.http)).then(|| {
        region_server::config::HttpsSettings {
            verify_clients: args.verify_https_client
                || file.tls.as_ref().is_some_and(|t| t.verify_https_client),
        }
    });
    let tls = match (args.tls_ca, args.tls_cert, args.tls_key, file.tls) {
        (Some(ca), Some(cert), Some(key), _) => TlsSource::Files { ca, cert, key },
        (_, _, _, Some(t)) => TlsSource::Files {
            ca: t.ca_file,
            cert: t.cert_file,
            key: t.key_file,
        },
        _ => TlsSource::DevGenerated,
    };
    let join = if args.join.is_empty() {
        file.join
    } else {
        args.join
    };
    let gossip_addr = args.gossip_addr.clone().unwrap_or(file.gossip_addr.clone());
    let mut keys: Vec<String> = args.encrypt.clone().into_iter().collect();
    if keys.is_empty() {
        keys = file.gossip.keys.clone();
    }
    if keys.is_empty() {
        tracing::warn!(
            "no gossip key given (--encrypt): generated one, so no other server can join this pool"
        );
        keys.push(ops_kit::gossip::Keyring::generate_key());
    }
    let mut retry_join = args.retry_join.clone();
    if retry_join.is_empty() {
        retry_join = file.gossip.retry_join.clone();
    }
    let gossip = Some(region_server::config::GossipSettings {
        pool: ops_kit::gossip::GossipConfig {
            bind_addr: gossip_addr
                .parse()
                .with_context(|| format!("gossip address {gossip_addr:?} is not an ip:port"))?,
            seeds: retry_join,
            ..args.gossip_profile.config()
        },
        keys,
        reap_failed_after: std::time::Duration::from_secs(file.gossip.reap_failed_after_secs),
    });
    let mut leader = region_server::leader::LeaderConfig::default();
    let duration = |flag: &str, v: &str| {
        region_server::api::query::parse_duration(flag, v)
            .map_err(|e| anyhow::anyhow!("--{flag}: {}", e.message))
    };
    if let Some(v) = args.heartbeat_min_ttl.as_deref() {
        leader.heartbeat.min_ttl = duration("heartbeat-min-ttl", v)?;
    }
    if let Some(v) = args.heartbeat_grace.as_deref() {
        leader.heartbeat.grace = duration("heartbeat-grace", v)?;
    }
    if let Some(v) = args.job_gc_interval.as_deref() {
        leader.gc.interval = duration("job-gc-interval", v)?;
    }
    if let Some(v) = args.job_gc_threshold.as_deref() {
        leader.gc.job_threshold = duration("job-gc-threshold", v)?;
    }
    Ok(ServerConfig {
        name,
        region,
        datacenter: args.datacenter.unwrap_or(file.datacenter),
        data_dir,
        http_addr: args.http_addr.unwrap_or(file.http_addr),
        rpc_addr: args.rpc_addr.unwrap_or(file.rpc_addr),
        gossip_addr: args.gossip_addr.unwrap_or(file.gossip_addr),
        bootstrap_expect: args.bootstrap_expect.or(file.bootstrap_expect),
        join,
        tls,
        max_request_body_bytes: file.max_request_body_bytes,
        raft: region_server::raft::RaftTuning {
            log_cache_mb: args.raft_log_cache_mb.unwrap_or(file.raft.log_cache_mb),
            ..file.raft
        },
        leader,
        gossip,
        https,
    })
}

async fn terminate_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ops_kit::tls::install_crypto_provider();
    let args = Args::parse();
    ops_kit::telemetry::init_logging(&args.log_level, args.log_json)?;
    let leave = args.leave_on_terminate;
    let cfg = build_config(args)?;
    if matches!(cfg.tls, TlsSource::DevGenerated) {
        tracing::warn!(
            dir = %cfg.data_dir.join("tls").display(),
            "no TLS files given: using a development CA; every server of the region must share it"
        );
    }
    let server = RegionServer::start(cfg).await?;
    println!(
        "region server {} listening: http {} rpc {}",
        server.service.node.name, server.http_addr, server.rpc_addr
    );
    tokio::select! {
        r = terminate_signal() => r?,
        error = server.service.raft_fatal() => {
            // Raft cannot recover in this process (e.g. the disk filled
            // while it wrote its log): exit with the error rather than
            // stay up as a server that can neither serve nor vote.
            // Exit as a crash would: no graceful leave of the gossip pool,
            // which would make the leader remove this server from Raft.
            tracing::error!(%error, "Raft stopped; exiting");
            anyhow::bail!("Raft stopped: {error}");
        }
    }
    tracing::info!("shutting down");
    if leave {
        server.leave_and_shutdown().await?;
    } else {
        server.shutdown().await;
    }
    Ok(())
}
