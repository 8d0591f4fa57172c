//! `atoll dev`: a whole federation on loopback, in one process.
//!
//! The composition root of Atoll: region servers, the federation gateway and
//! client agents are libraries, started here side by side with one generated
//! CA, one gossip pool and one gossip key. By default two regions (`eu`,
//! `us`) of three servers each, a gateway and one client per region.
//! `--regions global --servers 1 --clients 1` serves like `nomad agent -dev`:
//! HTTP on 127.0.0.1:4646, RPC on 4647, gossip on 4648.
//!
//! Ports are handed out one after the other from `--http-port` (servers
//! first, three each: HTTP, RPC, gossip; then the gateway's three; then one
//! HTTP port per client); `--http-port 0` lets the system pick every port.
//! Every address is printed and written to `<data-dir>/dev.json`, and the
//! Prometheus file-based discovery targets to
//! `<data-dir>/prometheus/targets.json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client_agent::{ClientAgent, ClientConfig};
use ops_kit::gossip::{GossipConfig, Keyring};
use ops_kit::telemetry::{file_sd_path, write_file_sd, ScrapeTarget, TargetRole};
use ops_kit::tls::{DevCa, Role};
use region_server::config::GossipSettings;
use region_server::{RegionServer, ServerConfig};
use serde_json::{json, Value};

/// `atoll dev` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Regions to start, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "eu,us")]
    pub regions: Vec<String>,
    /// Servers per region (1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// Client agents per region.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// The first port; the others follow it (0: let the system pick).
    #[arg(long, default_value_t = 4646)]
    pub http_port: u16,
    /// Where the servers and clients keep their data (default: a fresh
    /// `atoll-dev` directory under the system's temp dir, removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Name of the (first) client node of each region.
    #[arg(long)]
    pub node_name: Option<String>,
    /// Datacenter of every server and client.
    #[arg(long, default_value = "dc1")]
    pub datacenter: String,
    /// Log filter: a level or per-module directives
    /// (`info,region_server::raft=debug`).
    #[arg(long, default_value = "warn,openraft=error")]
    pub log_level: String,
    /// Log JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// One started server, as printed and written to `dev.json`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Region.
    pub region: String,
    /// Name.
    pub name: String,
    /// HTTP address.
    pub http: SocketAddr,
    /// RPC address.
    pub rpc: SocketAddr,
    /// Gossip address.
    pub gossip: String,
}

/// One started client agent.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Region.
    pub region: String,
    /// Node name.
    pub name: String,
    /// Node id.
    pub node_id: String,
    /// The agent's HTTP address.
    pub http: Option<SocketAddr>,
}

/// A running dev federation.
pub struct DevFederation {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Servers, region by region.
    pub servers: Vec<ServerInfo>,
    /// Client agents.
    pub clients: Vec<ClientInfo>,
    /// The gateway's HTTP address.
    pub gateway_http: Option<SocketAddr>,
    remove_data_dir: bool,
    running_servers: Vec<RegionServer>,
    running_clients: Vec<ClientAgent>,
    gateway: Option<federation_gateway::Gateway>,
}

struct Ports {
    next: u16,
}

impl Ports {
    fn take(&mut self) -> anyhow::Result<String> {
        if self.next == 0 {
            return Ok("127.0.0.1:0".into());
        }
        let p = self.next;
        self.next = self
            .next
            .checked_add(1)
            .context("ran out of ports above --http-port")?;
        Ok(format!("127.0.0.1:{p}"))
    }
}

fn default_data_dir() -> PathBuf {
    std::env::temp_dir().join("atoll-dev")
}

/// Prepares the data directory: a default one is emptied first (it only
/// ever holds an earlier `atoll dev`'s data); one the user named must be
/// empty or hold an earlier `atoll dev` (its `dev.json`), which is reused.
fn prepare_data_dir(args: &DevArgs) -> anyhow::Result<(PathBuf, bool)> {
    match &args.data_dir {
        None => {
            let dir = default_data_dir();
            if dir.exists() {
                if !dir.join("dev.json").exists() && dir.read_dir()?.next().is_some() {
                    bail!(
                        "{} exists and was not made by `atoll dev`; pass --data-dir",
                        dir.display()
                    );
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing the old {}", dir.display()))?;
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            Ok((dir, true))
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok((dir.clone(), false))
        }
    }
}

fn validate(args: &DevArgs) -> anyhow::Result<()> {
    if args.regions.is_empty() || args.regions.iter().any(|r| r.trim().is_empty()) {
        bail!("--regions needs at least one region name, e.g. --regions eu,us");
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in &args.regions {
        if !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--regions: {r:?} is not a valid region name (letters, digits, - and _)");
        }
        if !seen.insert(r) {
            bail!("--regions: {r:?} is named twice");
        }
    }
    if !matches!(args.servers, 1 | 3 | 5) {
        bail!("--servers must be 1, 3 or 5 (got {})", args.servers);
    }
    Ok(())
}

impl DevFederation {
    /// Starts the federation and waits until every region has a leader and
    /// every client registered.
    pub async fn start(args: &DevArgs) -> anyhow::Result<Self> {
        validate(args)?;
        let (data_dir, remove_data_dir) = prepare_data_dir(args)?;
        let ca = DevCa::load_or_create(&data_dir.join("tls"))
            .context("creating the development CA")?;
        let key = Keyring::generate_key();
        let mut ports = Ports {
            next: args.http_port,
        };

        // Servers: every region bootstraps on its own; all of them share one
        // gossip pool seeded by the first server.
        let mut configs = Vec::new();
        for region in &args.regions {
            let mut region_cfgs = Vec::new();
            for i in 0..args.servers {
                let name = format!("{region}-s{}", i + 1);
                let bundle = ca
                    .issue(Role::Server, region)
                    .context("issuing a server certificate")?;
                let mut cfg = ServerConfig::dev(&name, region, data_dir.join(&name), bundle);
                cfg.datacenter = args.datacenter.clone();
                cfg.http_addr = ports.take()?;
                cfg.rpc_addr = ports.take()?;
                cfg.gossip_addr = ports.take()?;
                cfg.bootstrap_expect = Some(args.servers);
                let mut pool = GossipConfig::local();
                pool.bind_addr = cfg
                    .gossip_addr
                    .parse()
                    .context("gossip address of a dev server")?;
                cfg.gossip = Some(GossipSettings {
                    pool,
                    keys: vec![key.clone()],
                    reap_failed_after: Duration::from_secs(300),
                });
                region_cfgs.push(cfg);
            }
            // With fixed ports the peers are known before anyone starts.
            if args.http_port != 0 {
                let rpc: Vec<String> = region_cfgs.iter().map(|c| c.rpc_addr.clone()).collect();
                for c in &mut region_cfgs {
                    c.join = rpc.clone();
                }
            }
            configs.push(region_cfgs);
        }
        // With fixed ports every server but the first joins the pool through
        // the first one.
        if args.http_port != 0 {
            let seed = configs
                .first()
                .and_then(|r| r.first())
                .map(|c| c.gossip_addr.clone());
            for (i, cfg) in configs.iter_mut().flatten().enumerate() {
                if let (true, Some(gs)) = (i > 0, cfg.gossip.as_mut()) {
                    gs.pool.seeds = seed.iter().cloned().collect();
                }
            }
        }

        let mut running_servers = Vec::new();
        let mut servers = Vec::new();
        let mut first_gossip: Option<String> = None;
        for region_cfgs in configs {
            let mut started = Vec::new();
            if args.http_port == 0 {
                // Picked ports are only known once bound: start the first
                // server of the region, then the others joining it.
                let mut rest = region_cfgs.into_iter();
                let Some(mut first) = rest.next() else {
                    continue;
                };
                if let (Some(g), Some(gs)) = (&first_gossip, first.gossip.as_mut()) {
                    gs.pool.seeds = vec![g.clone()];
                }
                let s = RegionServer::start(first.clone())
                    .await
                    .with_context(|| format!("starting server {}", first.name))?;
                let first_rpc = s.rpc_addr.to_string();
                let first_gossip_addr = s
                    .gossip
                    .as_ref()
                    .map(|g| g.local_addr().to_string())
                    .context("dev servers run a gossip pool")?;
                if first_gossip.is_none() {
                    first_gossip = Some(first_gossip_addr.clone());
                }
                started.push((first, s));
                for mut cfg in rest {
                    cfg.join = vec![first_rpc.clone()];
                    if let Some(gs) = cfg.gossip.as_mut() {
                        gs.pool.seeds = first_gossip.iter().cloned().collect();
                    }
                    let s = RegionServer::start(cfg.clone())
                        .await
                        .with_context(|| format!("starting server {}", cfg.name))?;
                    started.push((cfg, s));
                }
            } else {
                let all = start_servers(region_cfgs).await?;
                started.extend(all);
            }
            for (cfg, s) in started {
                servers.push(ServerInfo {
                    region: cfg.region.clone(),
                    name: cfg.name.clone(),
                    http: s.http_addr,
                    rpc: s.rpc_addr,
                    gossip: s
                        .gossip
                        .as_ref()
                        .map(|g| g.local_addr().to_string())
                        .unwrap_or_default(),
                });
                running_servers.push(s);
            }
        }
        let gossip_seed = servers
            .first()
            .map(|s| s.gossip.clone())
            .context("no server started")?;

        // The gateway joins the same pool.
        let mut gw_cfg = federation_gateway::GatewayConfig::dev(
            "gateway-1",
            &args.regions[0],
            ca.issue(Role::Gateway, "")
                .context("issuing the gateway certificate")?,
            vec![key.clone()],
        );
        gw_cfg.datacenter = args.datacenter.clone();
        gw_cfg.http_addr = ports.take()?;
        gw_cfg.rpc_addr = ports.take()?;
        gw_cfg.gossip.bind_addr = ports
            .take()?
            .parse()
            .context("gossip address of the dev gateway")?;
        gw_cfg.gossip.seeds = vec![gossip_seed];
        let gateway = federation_gateway::Gateway::start(gw_cfg)
            .await
            .context("starting the gateway")?;
        let gateway_http = Some(gateway.http_addr);

        // Wait for every region to elect a leader before clients register.
        let deadline = Instant::now() + Duration::from_secs(30);
        for region in &args.regions {
            loop {
                let has_leader = running_servers
                    .iter()
                    .any(|s| s.service.region == *region && s.service.is_leader());
                if has_leader {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("region {region} elected no leader within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        let mut running_clients = Vec::new();
        let mut clients = Vec::new();
        for region in &args.regions {
            let region_rpc: Vec<String> = servers
                .iter()
                .filter(|s| &s.region == region)
                .map(|s| s.rpc.to_string())
                .collect();
            for i in 0..args.clients {
                let name = match (&args.node_name, i) {
                    (Some(n), 0) if args.regions.len() == 1 => n.clone(),
                    (Some(n), 0) => format!("{n}-{region}"),
                    (Some(n), i) => format!("{n}-{region}-{}", i + 1),
                    (None, i) => format!("{region}-client-{}", i + 1),
                };
                let bundle = ca
                    .issue(Role::Client, region)
                    .context("issuing a client certificate")?;
                let mut cfg = ClientConfig::dev(
                    &name,
                    region,
                    data_dir.join(&name),
                    region_rpc.clone(),
                    bundle,
                );
                cfg.datacenter = args.datacenter.clone();
                cfg.http_addr = Some(ports.take()?);
                let agent = ClientAgent::start(cfg)
                    .await
                    .with_context(|| format!("starting client {name}"))?;
                clients.push(ClientInfo {
                    region: region.clone(),
                    name: name.clone(),
                    node_id: agent.node_id(),
                    http: agent.http_addr(),
                });
                running_clients.push(agent);
            }
        }
        for (agent, info) in running_clients.iter().zip(&clients) {
            if !agent.wait_registered(Duration::from_secs(30)).await {
                bail!("client {} did not register within 30 s", info.name);
            }
        }

        let fed = Self {
            data_dir,
            servers,
            clients,
            gateway_http,
            remove_data_dir,
            running_servers,
            running_clients,
            gateway: Some(gateway),
        };
        fed.write_files().context("writing dev.json and Prometheus targets")?;
        Ok(fed)
    }

    /// The address users should talk to: the gateway when there is one,
    /// else the first server.
    pub fn entry_http(&self) -> Option<SocketAddr> {
        self.gateway_http
            .or_else(|| self.servers.first().map(|s| s.http))
    }

    /// Everything about the federation as JSON (`dev.json`).
    pub fn describe(&self) -> Value {
        let mut regions: BTreeMap<String, Value> = BTreeMap::new();
        for s in &self.servers {
            let r = regions
                .entry(s.region.clone())
                .or_insert_with(|| json!({"Servers": [], "Clients": []}));
            if let Some(list) = r["Servers"].as_array_mut() {
                list.push(json!({
                    "Name": s.name,
                    "HTTPAddr": format!("http://{}", s.http),
                    "RPCAddr": s.rpc.to_string(),
                    "GossipAddr": s.gossip,
                }));
            }
        }
        for c in &self.clients {
            let r = regions
                .entry(c.region.clone())
                .or_insert_with(|| json!({"Servers": [], "Clients": []}));
            if let Some(list) = r["Clients"].as_array_mut() {
                list.push(json!({
                    "Name": c.name,
                    "NodeID": c.node_id,
                    "HTTPAddr": c.http.map(|a| format!("http://{a}")),
                }));
            }
        }
        json!({
            "DataDir": self.data_dir,
            "Gateway": self.gateway_http.map(|a| format!("http://{a}")),
            "Address": self.entry_http().map(|a| format!("http://{a}")),
            "CACert": self.data_dir.join("tls").join("ca.pem"),
            "Regions": regions,
        })
    }

    /// Prometheus `file_sd` targets: every component's HTTP address with
    /// `region`, `role` and `instance_name` labels.
    pub fn prometheus_targets(&self) -> Vec<ScrapeTarget> {
        let mut targets = Vec::new();
        for s in &self.servers {
            targets.push(ScrapeTarget {
                addr: s.http.to_string(),
                role: TargetRole::Server,
                region: Some(s.region.clone()),
                instance_name: format!("{}.{}", s.name, s.region),
            });
        }
        if let Some(gw) = self.gateway_http {
            targets.push(ScrapeTarget {
                addr: gw.to_string(),
                role: TargetRole::Gateway,
                region: None,
                instance_name: "gateway-1".into(),
            });
        }
        for c in &self.clients {
            if let Some(http) = c.http {
                targets.push(ScrapeTarget {
                    addr: http.to_string(),
                    role: TargetRole::Client,
                    region: Some(c.region.clone()),
                    instance_name: format!("{}.{}", c.name, c.region),
                });
            }
        }
        targets
    }

    fn write_files(&self) -> anyhow::Result<()> {
        write_json(&self.data_dir.join("dev.json"), &self.describe())?;
        let path = file_sd_path(&self.data_dir);
        write_file_sd(&path, &self.prometheus_targets())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// What `atoll dev` prints once everything runs.
    pub fn banner(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "==> Atoll dev federation is running (data in {})\n\n",
            self.data_dir.display()
        ));
        let mut by_region: BTreeMap<&str, Vec<&ServerInfo>> = BTreeMap::new();
        for s in &self.servers {
            by_region.entry(&s.region).or_default().push(s);
        }
        for (region, servers) in by_region {
            out.push_str(&format!("    region {region}\n"));
            for s in servers {
                out.push_str(&format!(
                    "      server {:<10} http://{}  rpc {}  gossip {}\n",
                    s.name, s.http, s.rpc, s.gossip
                ));
            }
            for c in self.clients.iter().filter(|c| c.region == region) {
                out.push_str(&format!(
                    "      client {:<10} node {}  http {}\n",
                    c.name,
                    c.node_id.get(..8).unwrap_or(&c.node_id),
                    c.http
                        .map(|a| format!("http://{a}"))
                        .unwrap_or_else(|| "-".into())
                ));
            }
        }
        if let Some(gw) = self.gateway_http {
            out.push_str(&format!("    gateway              http://{gw}\n"));
        }
        out.push_str(&format!(
            "\n    CA certificate: {}\n    Prometheus targets: {}\n",
            self.data_dir.join("tls").join("ca.pem").display(),
            file_sd_path(&self.data_dir).display()
        ));
        if let Some(addr) = self.entry_http() {
            out.push_str(&format!(
                "\n==> Next, in another shell:\n    export ATOLL_ADDR=http://{addr}\n    atoll status\n    atoll job run ops/deploy/jobs/example.hcl\n\n    Ctrl-C stops everything.\n"
            ));
        }
        out
    }

    /// Stops clients (and their tasks), the gateway and the servers; removes
    /// the default data directory.
    pub async fn shutdown(mut self) {
        for c in self.running_clients.drain(..) {
            c.shutdown_and_kill_tasks().await;
        }
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await;
        }
        let servers: Vec<RegionServer> = self.running_servers.drain(..).collect();
        join_all(servers.into_iter().map(|s| s.shutdown())).await;
        if self.remove_data_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.data_dir) {
                tracing::warn!(dir = %self.data_dir.display(), error = %e, "could not remove the data directory");
            }
        }
    }
}

async fn start_servers(
    cfgs: Vec<ServerConfig>,
) -> anyhow::Result<Vec<(ServerConfig, RegionServer)>> {
    let mut handles = Vec::new();
    for cfg in cfgs {
        handles.push(tokio::spawn(async move {
            let s = RegionServer::start(cfg.clone())
                .await
                .with_context(|| format!("starting server {}", cfg.name));
            s.map(|s| (cfg, s))
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.context("server start task")??);
    }
    Ok(out)
}

async fn join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(v).context("encoding JSON")?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `atoll dev`: start, print, run until Ctrl-C or SIGTERM, stop.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let fed = DevFederation::start(&args).await?;
    println!("{}", fed.banner());
    wait_for_signal().await?;
    println!("==> Stopping the dev federation");
    fed.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}
