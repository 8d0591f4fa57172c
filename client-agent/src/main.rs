//! `client-agent`: an Atoll client node.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use client_agent::config::{default_drivers, FileConfig, DEFAULT_HTTP_ADDR};
use client_agent::{ClientAgent, ClientConfig, TlsSource};

/// Flags override the TOML file given with `--config`.
#[derive(Debug, Parser)]
#[command(name = "client-agent", version, about = "An Atoll client agent")]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log filter in `EnvFilter` syntax: a default level and per-module
    /// directives, e.g. `info,region_server::raft=debug`.
    #[arg(long, env = "ATOLL_LOG_LEVEL", default_value = "info,sqlx=warn")]
    log_level: String,
    /// Log one JSON object per line instead of text.
    #[arg(long, env = "ATOLL_LOG_JSON")]
    log_json: bool,
    /// Node name (default: host name).
    #[arg(long)]
    name: Option<String>,
    /// Region (default `global`).
    #[arg(long)]
    region: Option<String>,
    /// Datacenter (default `dc1`).
    #[arg(long)]
    datacenter: Option<String>,
    /// Node class.
    #[arg(long)]
    node_class: Option<String>,
    /// Node pool (default `default`).
    #[arg(long)]
    node_pool: Option<String>,
    /// Data directory (node identity, client.db).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Allocation directories' root (default `<data-dir>/alloc`).
    #[arg(long)]
    alloc_dir: Option<PathBuf>,
    /// RPC address of a server of the region (repeatable).
    #[arg(long = "servers")]
    servers: Vec<String>,
    /// HTTP address for log and file serving (default 127.0.0.1:4649).
    #[arg(long)]
    http_addr: Option<String>,
    /// CA certificate (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), naming `client.<region>.atoll`.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This client's key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// A development CA directory (ca.pem, ca-key.pem) to issue our
    /// certificate from, e.g. a dev server's `<data-dir>/tls`.
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    dev_ca_dir: Option<PathBuf>,
    /// Node metadata `key=value` (repeatable).
    #[arg(long = "meta", value_parser = parse_kv)]
    meta: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err("empty key".into());
    }
    Ok((k.to_string(), v.to_string()))
}

fn build_config(args: Args) -> anyhow::Result<ClientConfig> {
    let file: FileConfig = match &args.config {
        Some(p) => ops_kit::config::load_toml(p)?,
        None => FileConfig::default(),
    };
    let region = args.region.unwrap_or(file.region);
    let name = args
        .name
        .or(file.name)
        .unwrap_or_else(client_agent::fingerprint::hostname);
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("atoll-client-{region}-{name}")));
    let tls = match (
        args.tls_ca,
        args.tls_cert,
        args.tls_key,
        args.dev_ca_dir,
        file.tls,
    ) {
        (Some(ca), Some(cert), Some(key), _, _) => TlsSource::Files { ca, cert, key },
        (_, _, _, Some(dir), _) => TlsSource::DevCaDir(dir),
        (_, _, _, _, Some(t)) => match (t.ca_file, t.cert_file, t.key_file, t.dev_ca_dir) {
            (Some(ca), Some(cert), Some(key), _) => TlsSource::Files { ca, cert, key },
            (_, _, _, Some(dir)) => TlsSource::DevCaDir(dir),
            _ => anyhow::bail!("[tls] needs ca_file, cert_file and key_file (or dev_ca_dir)"),
        },
        _ => anyhow::bail!("no TLS identity: give --tls-ca/--tls-cert/--tls-key (or --dev-ca-dir)"),
    };
    let servers = if args.servers.is_empty() {
        file.servers
    } else {
        args.servers
    };
    anyhow::ensure!(!servers.is_empty(), "no servers: give --servers ADDR");
    let mut meta: BTreeMap<String, String> = file.meta;
    meta.extend(args.meta);
    let mut cfg = ClientConfig::new(&name, &region, data_dir, servers, tls);
    cfg.datacenter = args.datacenter.unwrap_or(file.datacenter);
    cfg.node_class = args.node_class.unwrap_or(file.node_class);
    cfg.node_pool = args.node_pool.unwrap_or(file.node_pool);
    cfg.alloc_dir = args.alloc_dir.or(file.alloc_dir);
    cfg.http_addr = Some(
        args.http_addr
            .or(file.http_addr)
            .unwrap_or_else(|| DEFAULT_HTTP_ADDR.into()),
    );
    cfg.meta = meta;
    cfg.reserved = file.reserved;
    cfg.drivers = file.drivers.unwrap_or_else(default_drivers);
    cfg.cgroup_parent = file.cgroup_parent;
    cfg.gc_max_allocs = file.gc_max_allocs;
    if let Some(t) = file.max_kill_timeout {
        cfg.max_kill_timeout = client_agent::util::parse_duration(&t)
            .with_context(|| format!("max_kill_timeout {t:?}"))?;
    }
    Ok(cfg)
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
    let agent = ClientAgent::start(cfg).await?;
    println!(
        "client agent {} started (http {})",
        agent.node_id(),
        agent
            .http_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into())
    );
    terminate_signal().await?;
    tracing::info!("shutting down; tasks keep running");
    agent.shutdown().await;
    Ok(())
}
