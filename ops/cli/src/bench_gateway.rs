//! `atoll bench gateway`: what forwarding through a federation gateway adds
//! to a read.
//!
//! One region of `--servers` region servers and one federation gateway, all
//! in this process, on loopback, mTLS between them, one gossip pool. A job
//! is registered; the read is `GET /v1/job/<id>?stale=true` (answered from
//! the server's state, no Raft round trip, so the figures show the path,
//! not Raft), made
//!
//! - **direct**: at a region server's HTTP API;
//! - **gateway**: at the gateway's HTTP API with `?region=<region>`: HTTP in,
//!   gRPC `ForwardService.Http` over mTLS to a server of the region, which
//!   runs it through its own router, the answer streamed back.
//!
//! Two measurements, each with the closed-loop generator of `atoll bench
//! raft` (`bench::load`): **latency** with one client (sequential reads;
//! p50 and p99 direct and through the gateway, and what the gateway adds),
//! then **throughput** with `--clients` concurrent clients (reads per
//! second, direct and through the gateway). Each measurement warms up for
//! `--warmup` and is measured for `--duration`. The load generator shares
//! the machine (and this process) with the servers and the gateway, so on a
//! small machine the throughput figures are the whole system's, load
//! generator included.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use federation_gateway::{Gateway, GatewayConfig};
use ops_kit::tls::{DevCa, Role};
use region_server::config::GossipSettings;
use region_server::{RegionServer, ServerConfig};

use crate::bench::load::{self, LoadResult, WriteFn};

const REGION: &str = "bench";
const JOB_ID: &str = "bench-read";
/// Targets from the gateway issue.
const ADDED_P99_TARGET_MS: f64 = 1.0;
const FORWARDED_RPS_TARGET: f64 = 10_000.0;

/// Flags of `atoll bench gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayBenchArgs {
    /// Region servers in the region.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Concurrent clients of the throughput measurement.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Measured window of each measurement (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = crate::bench::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "1s", value_parser = crate::bench::parse_duration)]
    pub warmup: Duration,
    /// gRPC connections the gateway keeps to each server.
    #[arg(long, default_value_t = 1)]
    pub connections_per_server: usize,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn read_fn(url: String, clients: usize) -> anyhow::Result<WriteFn> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let url = Arc::new(url);
    Ok(Arc::new(move |_client, _seq| {
        let http = http.clone();
        let url = url.clone();
        Box::pin(async move {
            let resp = http
                .get(url.as_str())
                .send()
                .await
                .map_err(|e| load::error_chain(&e))?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| load::error_chain(&e))?;
            if status.is_success() && !body.is_empty() {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
        })
    }))
}

fn ms(r: &LoadResult, p: f64) -> f64 {
    r.percentile_ms(p).unwrap_or(f64::NAN)
}

fn describe(r: &LoadResult) {
    eprintln!(
        "  {:<8} clients {:>3}: {:>9.0} reads/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, {} errors{}",
        r.system,
        r.clients,
        r.writes_per_sec(),
        ms(r, 50.0),
        ms(r, 99.0),
        ms(r, 99.9),
        r.errors,
        if r.error_kinds.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.error_kinds)
        }
    );
}

/// Run the benchmark and print its figures.
pub async fn run(args: GatewayBenchArgs) -> anyhow::Result<()> {
    ops_kit::tls::install_crypto_provider();
    anyhow::ensure!(args.servers >= 1, "--servers must be at least 1");
    let dir = tempfile::Builder::new()
        .prefix("atoll-bench-gateway-")
        .tempdir()
        .context("temporary directory")?;
    let ca = DevCa::generate().context("CA")?;
    let key = ops_kit::gossip::Keyring::generate_key();
    let mut servers: Vec<RegionServer> = Vec::new();
    let mut seed: Option<String> = None;
    let mut rpc_addrs = Vec::new();
    let mut configs = Vec::new();
    for i in 0..args.servers {
        let name = format!("s{}", i + 1);
        let bundle = ca
            .issue(Role::Server, REGION)
            .context("server certificate")?;
        let mut cfg = ServerConfig::dev(&name, REGION, dir.path().join(&name), bundle);
        let rpc = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("picking a port")?;
        cfg.rpc_addr = rpc.to_string();
        rpc_addrs.push(cfg.rpc_addr.clone());
        cfg.bootstrap_expect = Some(args.servers);
        let mut pool = ops_kit::gossip::GossipConfig::local();
        let gossip = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .context("picking a gossip port")?;
        pool.bind_addr = gossip;
        pool.seeds = seed.iter().cloned().collect();
        seed.get_or_insert_with(|| gossip.to_string());
        cfg.gossip = Some(GossipSettings {
            pool,
            keys: vec![key.clone()],
            reap_failed_after: Duration::from_secs(3600),
        });
        configs.push(cfg);
    }
    for mut cfg in configs {
        cfg.join = rpc_addrs.clone();
        servers.push(
            RegionServer::start(cfg)
                .await
                .context("starting a server")?,
        );
    }
    let mut gw_cfg = GatewayConfig::dev(
        "gw1",
        REGION,
        ca.issue(Role::Gateway, "").context("gateway certificate")?,
        vec![key],
    );
    gw_cfg.gossip.seeds = seed.into_iter().collect();
    gw_cfg.connections_per_server = args.connections_per_server;
    let gateway = Gateway::start(gw_cfg)
        .await
        .context("starting the gateway")?;

    let result = measure(&args, &servers, &gateway).await;
    gateway.shutdown().await;
    for s in servers {
        s.shutdown().await;
    }
    result
}

async fn measure(
    args: &GatewayBenchArgs,
    servers: &[RegionServer],
    gateway: &Gateway,
) -> anyhow::Result<()> {
    // A leader, and the gateway seeing the region.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let leader = loop {
        if let Some(s) = servers.iter().find(|s| s.service.is_leader()) {
            let members_seen = gateway
                .gossip
                .regions()
                .get(REGION)
                .map_or(0, |r| r.servers.len());
            if members_seen == servers.len() {
                break s;
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no leader, or the gateway does not see every server, after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let direct_base = format!("http://{}", leader.http_addr);
    let job = serde_json::json!({ "Job": {
        "ID": JOB_ID,
        "Type": "batch",
        "TaskGroups": [{ "Name": "g", "Tasks": [{
            "Name": "t", "Driver": "mock_driver", "Config": { "run_for": "1s" }
        }]}]
    }});
    let resp = reqwest::Client::new()
        .put(format!("{direct_base}/v1/jobs"))
        .json(&job)
        .send()
        .await
        .context("registering the job")?;
    anyhow::ensure!(
        resp.status().is_success(),
        "registering the job: {}",
        resp.text().await.unwrap_or_default()
    );

    let direct_url = format!("{direct_base}/v1/job/{JOB_ID}?stale=true");
    let gateway_url = format!(
        "http://{}/v1/job/{JOB_ID}?stale=true&region={REGION}",
        gateway.http_addr
    );
    let load_before = load_average();
    eprintln!(
        "atoll bench gateway: {} server(s), gateway with {} connection(s) per server; load average {load_before}",
        servers.len(),
        args.connections_per_server
    );
    eprintln!("latency, 1 client:");
    let d1 = load::run(
        "direct",
        1,
        args.warmup,
        args.duration,
        read_fn(direct_url.clone(), 1)?,
    )
    .await?;
    describe(&d1);
    let g1 = load::run(
        "gateway",
        1,
        args.warmup,
        args.duration,
        read_fn(gateway_url.clone(), 1)?,
    )
    .await?;
    describe(&g1);
    eprintln!("throughput, {} clients:", args.clients);
    let dn = load::run(
        "direct",
        args.clients,
        args.warmup,
        args.duration,
        read_fn(direct_url, args.clients)?,
    )
    .await?;
    describe(&dn);
    let gn = load::run(
        "gateway",
        args.clients,
        args.warmup,
        args.duration,
        read_fn(gateway_url, args.clients)?,
    )
    .await?;
    describe(&gn);
    let load_after = load_average();

    let added_p50 = ms(&g1, 50.0) - ms(&d1, 50.0);
    let added_p99 = ms(&g1, 99.0) - ms(&d1, 99.0);
    println!(
        "| read | p50 ms (1 client) | p99 ms (1 client) | reads/s ({} clients) | errors |",
        args.clients
    );
    println!("|---|---|---|---|---|");
    println!(
        "| direct at a server | {:.3} | {:.3} | {:.0} | {} |",
        ms(&d1, 50.0),
        ms(&d1, 99.0),
        dn.writes_per_sec(),
        d1.errors + dn.errors
    );
    println!(
        "| through the gateway | {:.3} | {:.3} | {:.0} | {} |",
        ms(&g1, 50.0),
        ms(&g1, 99.0),
        gn.writes_per_sec(),
        g1.errors + gn.errors
    );
    println!("| added by the gateway | {added_p50:.3} | {added_p99:.3} | | |");
    println!(
        "target: added p99 < {ADDED_P99_TARGET_MS} ms: {}; forwarded reads/s >= {FORWARDED_RPS_TARGET}: {}",
        if added_p99 < ADDED_P99_TARGET_MS { "met" } else { "NOT met" },
        if gn.writes_per_sec() >= FORWARDED_RPS_TARGET { "met" } else { "NOT met" },
    );
    println!("load average before {load_before}, after {load_after}");
    let forwarded = gateway
        .metrics
        .forwarded
        .with_label_values(&[REGION, "GET", "200"])
        .get();
    println!("gateway metric atoll_gateway_forwarded_requests_total{{region=\"{REGION}\",method=\"GET\",status=\"200\"}} = {forwarded}");
    Ok(())
}
