//! `federation-gateway`: routes `/v1` requests between Atoll regions.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use federation_gateway::config::FileConfig;
use federation_gateway::{Gateway, GatewayConfig, HttpTls, TlsSource};

/// Flags override the TOML file given with `--config`.
#[derive(Debug, Parser)]
#[command(
    name = "federation-gateway",
    version,
    about = "An Atoll federation gateway"
)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log filter: a level or per-module directives
    /// (`info,federation_gateway=debug`).
    #[arg(long, env = "ATOLL_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log one JSON object per line instead of text.
    #[arg(long, env = "ATOLL_LOG_JSON")]
    log_json: bool,
    /// Gateway name (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Region requests go to when they name none (default `global`).
    #[arg(long)]
    region: Option<String>,
    /// Datacenter (default `dc1`).
    #[arg(long)]
    datacenter: Option<String>,
    /// HTTP API address (default 127.0.0.1:4656).
    #[arg(long)]
    http_addr: Option<String>,
    /// gRPC address of GatewayService (default 127.0.0.1:4657).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Gossip address (default 127.0.0.1:4658).
    #[arg(long)]
    gossip_addr: Option<String>,
    /// Gossip timings: `wan` (memberlist's WAN profile, the default) or
    /// `local` (fast timings for members on one machine: tests, dev).
    #[arg(long, default_value = "wan")]
    gossip_profile: ops_kit::gossip::GossipProfile,
    /// Gossip address of a member to join the pool through (repeatable).
    #[arg(long, alias = "retry-join")]
    join: Vec<String>,
    /// Gossip encryption key (base64 of 32 bytes).
    #[arg(long)]
    encrypt: Option<String>,
    /// Where a development CA is kept when no TLS files are given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CA certificate (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// The gateway's certificate (PEM), naming `gateway.atoll`.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The gateway's key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Serve the HTTP API over TLS with the gateway's certificate.
    #[arg(long)]
    https: bool,
    /// With --https, require client certificates of the cluster CA.
    #[arg(long)]
    verify_https_client: bool,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gateway".into())
}

fn build_config(args: Args) -> anyhow::Result<GatewayConfig> {
    let file: FileConfig = match &args.config {
        Some(p) => ops_kit::config::load_toml(p)?,
        None => FileConfig::default(),
    };
    let region = args.region.unwrap_or(file.region);
    let name = args.name.or(file.name).unwrap_or_else(host_name);
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("atoll-gateway-{name}")));
    let mut https = args.https;
    let mut verify = args.verify_https_client;
    let tls = match (args.tls_ca, args.tls_cert, args.tls_key, file.tls) {
        (Some(ca), Some(cert), Some(key), _) => TlsSource::Files { ca, cert, key },
        (_, _, _, Some(t)) => {
            https |= t.http;
            verify |= t.verify_https_client;
            TlsSource::Files {
                ca: t.ca_file,
                cert: t.cert_file,
                key: t.key_file,
            }
        }
        _ => TlsSource::DevGenerated(data_dir.join("tls")),
    };
    let mut keys: Vec<String> = args.encrypt.into_iter().collect();
    if keys.is_empty() {
        keys = file.gossip.keys;
    }
    if keys.is_empty() {
        anyhow::bail!("a gossip key is needed to join the pool: --encrypt or [gossip] keys");
    }
    let gossip_addr = args.gossip_addr.unwrap_or(file.gossip_addr);
    let seeds = if args.join.is_empty() {
        file.gossip.retry_join
    } else {
        args.join
    };
    let gossip = ops_kit::gossip::GossipConfig {
        bind_addr: gossip_addr
            .parse()
            .with_context(|| format!("gossip address {gossip_addr:?} is not an ip:port"))?,
        seeds,
        ..args.gossip_profile.config()
    };
    Ok(GatewayConfig {
        name,
        region,
        datacenter: args.datacenter.unwrap_or(file.datacenter),
        http_addr: args.http_addr.unwrap_or(file.http_addr),
        rpc_addr: args.rpc_addr.unwrap_or(file.rpc_addr),
        gossip,
        gossip_keys: keys,
        tls,
        http_tls: https.then_some(HttpTls {
            verify_clients: verify,
        }),
        request_timeout: Duration::from_secs(file.request_timeout_secs),
        connections_per_server: file.connections_per_server,
        connect_timeout: Duration::from_millis(500),
        max_request_body_bytes: file.max_request_body_bytes,
        rollout_poll: Duration::from_secs(1),
        rollout_deadline: Duration::from_secs(file.rollout_deadline_secs),
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
    let cfg = build_config(args)?;
    if let TlsSource::DevGenerated(dir) = &cfg.tls {
        tracing::warn!(dir = %dir.display(), "no TLS files given: using a development CA; servers must share it");
    }
    let gw = Gateway::start(cfg).await?;
    println!(
        "federation gateway listening: http {} rpc {}",
        gw.http_addr, gw.rpc_addr
    );
    terminate_signal().await?;
    tracing::info!("shutting down");
    gw.shutdown().await;
    Ok(())
}
