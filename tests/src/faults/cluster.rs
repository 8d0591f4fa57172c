//! A federation of real processes for fault injection: `region-server`,
//! `federation-gateway` and `client-agent` binaries, each on its own
//! loopback address (127.x.y.z, one per process), with certificates from one
//! throw-away CA and data directories in one temporary directory. Processes
//! can be killed with SIGKILL, stopped with SIGSTOP, and restarted from
//! their files at the same addresses. Everything still running is killed
//! when the federation is dropped.
//!
//! [`ProcFederation::in_namespaces`] puts each process in a network
//! namespace of its own instead (see [`super::netns`]), so that links can
//! be cut and partitions made between processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use ops_kit::tls::{DevCa, Role};
use reqwest::StatusCode;

use super::netns::Net;
use crate::{get_json, poll, workspace_binary, Proc};

static NEXT_HOST: AtomicU32 = AtomicU32::new(1);

/// A loopback address of its own for one process: 127.<a>.<b>.<c>, with
/// `a` derived from the test process id so that concurrent test processes
/// rarely share addresses (ports are still chosen free by the kernel).
pub fn next_loopback_ip() -> String {
    let n = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    let a = 100 + std::process::id() % 100;
    format!("127.{a}.{}.{}", (n / 250) % 250, n % 250 + 1)
}

/// `ip:<port free on ip>`.
pub fn free_addr_on(ip: &str) -> anyhow::Result<String> {
    let port = TcpListener::bind(format!("{ip}:0"))
        .and_then(|l| l.local_addr())
        .with_context(|| format!("binding a port on {ip}"))?
        .port();
    Ok(format!("{ip}:{port}"))
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What kind of process a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `region-server`.
    Server,
    /// `federation-gateway`.
    Gateway,
    /// `client-agent`.
    Client,
}

/// One process of the federation, running or not.
pub struct Member {
    /// Kind.
    pub kind: Kind,
    /// Name (`a-s1`, `gw1`, `a-c1`).
    pub name: String,
    /// Region (the default region for gateways).
    pub region: String,
    /// HTTP address.
    pub http: String,
    /// RPC address.
    pub rpc: String,
    /// Gossip address (unused by clients).
    pub gossip: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file (stdout and stderr, appended across restarts).
    pub log: PathBuf,
    /// Extra arguments.
    pub extra: Vec<String>,
    /// CA, certificate and key files.
    pub tls: (PathBuf, PathBuf, PathBuf),
    /// The running process.
    pub proc: Option<Proc>,
    /// Its host in the federation's [`Net`], when it has one.
    pub host: Option<usize>,
}

impl Member {
    /// `http://<http addr>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Whether its process runs (as far as the harness knows).
    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }
}

/// Binaries and TLS material shared by every member.
struct Bins {
    server: PathBuf,
    gateway: PathBuf,
    client: PathBuf,
}

/// A federation of processes.
pub struct ProcFederation {
    bins: Bins,
    ca: DevCa,
    key: String,
    /// Every member, in the order added.
    pub members: Vec<Member>,
    /// The network namespaces the members run in, if any (removed after
    /// the processes are killed).
    pub net: Option<Net>,
    /// Things undone when the federation is dropped (mounts, ...), after
    /// its processes are killed and before its directory is removed.
    pub guards: Vec<Box<dyn std::any::Any + Send + Sync>>,
    /// The temporary directory holding data, logs and certificates
    /// (declared last: removed after everything above is dropped).
    pub dir: tempfile::TempDir,
    /// Extra server flags (e.g. heartbeat TTLs).
    pub server_flags: Vec<String>,
}

impl ProcFederation {
    /// An empty federation (builds the binaries first).
    pub fn new() -> anyhow::Result<Self> {
        ops_kit::tls::install_crypto_provider();
        let bins = Bins {
            server: workspace_binary("region-server", "region-server")?,
            gateway: workspace_binary("federation-gateway", "federation-gateway")?,
            client: workspace_binary("client-agent", "client-agent")?,
        };
        let dir = tempfile::Builder::new().prefix("atoll-faults-").tempdir()?;
        Ok(Self {
            bins,
            ca: DevCa::generate().context("generating a CA")?,
            key: ops_kit::gossip::Keyring::generate_key(),
            members: Vec::new(),
            net: None,
            guards: Vec::new(),
            dir,
            server_flags: Vec::new(),
        })
    }

    /// An empty federation whose members each run in a network namespace
    /// of their own, on fixed ports (needs root; see [`Net::check`]).
    pub fn in_namespaces() -> anyhow::Result<Self> {
        let mut fed = Self::new()?;
        fed.net = Some(Net::create()?);
        Ok(fed)
    }

    fn plan(&mut self, kind: Kind, name: &str, region: &str) -> anyhow::Result<usize> {
        let (host, http, rpc, gossip) = match self.net.as_mut() {
            Some(net) => {
                let h = net.add_host()?;
                let ip = net.host(h).ip.clone();
                (
                    Some(h),
                    format!("{ip}:4646"),
                    format!("{ip}:4647"),
                    format!("{ip}:4648"),
                )
            }
            None => {
                let ip = next_loopback_ip();
                (
                    None,
                    free_addr_on(&ip)?,
                    free_addr_on(&ip)?,
                    free_addr_on(&ip)?,
                )
            }
        };
        let role = match kind {
            Kind::Server => Role::Server,
            Kind::Gateway => Role::Gateway,
            Kind::Client => Role::Client,
        };
        let cert_region = if kind == Kind::Gateway { "" } else { region };
        let tls = self
            .ca
            .issue(role, cert_region)
            .context("issuing a certificate")?
            .write(&self.dir.path().join("tls").join(name), name)?;
        let m = Member {
            tls,
            kind,
            name: name.to_string(),
            region: region.to_string(),
            http,
            rpc,
            gossip,
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
            extra: Vec::new(),
            proc: None,
            host,
        };
        self.members.push(m);
        Ok(self.members.len() - 1)
    }

    /// Plan `n` servers of `region` (named `<region>-s<k>`); their indexes.
    pub fn plan_region(&mut self, region: &str, n: usize) -> anyhow::Result<Vec<usize>> {
        (1..=n)
            .map(|k| self.plan(Kind::Server, &format!("{region}-s{k}"), region))
            .collect()
    }

    /// Plan a gateway whose default region is `region`.
    pub fn plan_gateway(&mut self, name: &str, region: &str) -> anyhow::Result<usize> {
        self.plan(Kind::Gateway, name, region)
    }

    /// Plan a client agent of `region`.
    pub fn plan_client(&mut self, name: &str, region: &str) -> anyhow::Result<usize> {
        self.plan(Kind::Client, name, region)
    }

    /// Indexes of the servers of `region`.
    pub fn servers(&self, region: &str) -> Vec<usize> {
        self.of(Kind::Server, Some(region))
    }

    /// Indexes of the members of `kind` (in `region`, if given).
    pub fn of(&self, kind: Kind, region: Option<&str>) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].kind == kind)
            .filter(|i| region.is_none_or(|r| self.members[*i].region == r))
            .collect()
    }

    /// The gossip address everyone joins through: the first server's.
    fn seed(&self) -> anyhow::Result<String> {
        self.members
            .iter()
            .find(|m| m.kind == Kind::Server)
            .map(|m| m.gossip.clone())
            .context("no server planned")
    }

    /// Start (or restart, with the same flags and files) member `i`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        if self.members[i].running() {
            bail!("{} already runs", self.members[i].name);
        }
        let seed = self.seed()?;
        let m = &self.members[i];
        let (ca, cert, key) = m.tls.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)?;
        let command = |program: &Path| match (&self.net, m.host) {
            (Some(net), Some(h)) => net.command(h, program),
            _ => Command::new(program),
        };
        let mut cmd = match m.kind {
            Kind::Server => {
                let peers: Vec<&Member> = self
                    .members
                    .iter()
                    .filter(|p| p.kind == Kind::Server && p.region == m.region)
                    .collect();
                let mut cmd = command(&self.bins.server);
                cmd.args(["--name", &m.name, "--region", &m.region])
                    .arg("--data-dir")
                    .arg(&m.data_dir)
                    .args(["--http-addr", &m.http, "--rpc-addr", &m.rpc])
                    .args(["--gossip-addr", &m.gossip, "--encrypt", &self.key])
                    .args(["--bootstrap-expect", &peers.len().to_string()]);
                if seed != m.gossip {
                    cmd.args(["--retry-join", &seed]);
                }
                for p in peers {
                    cmd.args(["--join", &p.rpc]);
                }
                cmd.args(&self.server_flags);
                cmd
            }
            Kind::Gateway => {
                let mut cmd = command(&self.bins.gateway);
                cmd.args(["--name", &m.name, "--region", &m.region])
                    .args(["--http-addr", &m.http, "--rpc-addr", &m.rpc])
                    .args(["--gossip-addr", &m.gossip, "--encrypt", &self.key])
                    .args(["--join", &seed]);
                cmd
            }
            Kind::Client => {
                let mut cmd = command(&self.bins.client);
                cmd.args(["--name", &m.name, "--region", &m.region])
                    .arg("--data-dir")
                    .arg(&m.data_dir)
                    .args(["--http-addr", &m.http]);
                for p in self
                    .members
                    .iter()
                    .filter(|p| p.kind == Kind::Server && p.region == m.region)
                {
                    cmd.args(["--servers", &p.rpc]);
                }
                cmd
            }
        };
        cmd.args(&m.extra)
            .arg("--tls-ca")
            .arg(ca)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env(
                "ATOLL_LOG_LEVEL",
                // ATOLL_FAULT_LOG adds directives, e.g.
                // `atoll::apply=debug` traces every applied Raft entry.
                match std::env::var("ATOLL_FAULT_LOG") {
                    Ok(extra) if !extra.is_empty() => {
                        format!("info,openraft=warn,sqlx=warn,{extra}")
                    }
                    _ => "info,openraft=warn,sqlx=warn".to_string(),
                },
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", m.name))?;
        self.members[i].proc = Some(Proc { child });
        Ok(())
    }

    /// Start every member that is not running.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if !self.members[i].running() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// SIGKILL member `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Send `signal` (e.g. `libc::SIGSTOP`) to member `i`'s process.
    pub fn signal(&self, i: usize, signal: i32) -> anyhow::Result<()> {
        let pid = self.members[i]
            .pid()
            .with_context(|| format!("{} is not running", self.members[i].name))?;
        let pid = i32::try_from(pid).context("pid")?;
        // SAFETY: kill(2) on a child this harness spawned and has not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether member `i`'s process has exited on its own; its status.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let p = self.members[i].proc.as_mut()?;
        match p.child.try_wait() {
            Ok(Some(status)) => {
                self.members[i].proc = None;
                Some(status)
            }
            _ => None,
        }
    }

    fn net_host(&self, i: usize) -> anyhow::Result<(&Net, usize)> {
        let net = self
            .net
            .as_ref()
            .context("this federation runs without network namespaces")?;
        let h = self.members[i]
            .host
            .with_context(|| format!("{} has no network namespace", self.members[i].name))?;
        Ok((net, h))
    }

    /// Member `i`'s IP address.
    pub fn ip(&self, i: usize) -> &str {
        let http = &self.members[i].http;
        http.rsplit_once(':').map_or(http.as_str(), |(ip, _)| ip)
    }

    /// Partition member `i` from the members `from`: every packet between
    /// them is dropped, both ways (the test process still reaches `i`).
    pub fn partition(&self, i: usize, from: &[usize]) -> anyhow::Result<()> {
        let (net, h) = self.net_host(i)?;
        let peers: Vec<String> = from.iter().map(|p| self.ip(*p).to_string()).collect();
        net.block(h, &peers)
    }

    /// Undo every [`ProcFederation::partition`] of member `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let (net, h) = self.net_host(i)?;
        net.heal(h)
    }

    /// Member `i`'s network link down (cut off from everyone, the test
    /// process included) or up again.
    pub fn link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let (net, h) = self.net_host(i)?;
        net.link(h, up)
    }

    /// The member whose RPC address is `addr`.
    pub fn by_rpc(&self, addr: &str) -> Option<usize> {
        self.members.iter().position(|m| m.rpc == addr)
    }

    /// Wait until the running servers of `region` agree on a leader among
    /// them (not `not`); its index.
    pub async fn wait_leader(
        &self,
        region: &str,
        not: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let among: Vec<usize> = self
            .servers(region)
            .into_iter()
            .filter(|i| self.members[*i].running())
            .collect();
        self.wait_leader_among(&among, not, timeout)
            .await
            .with_context(|| format!("region {region}"))
    }

    /// Wait until the servers `among` agree on a leader among them (not
    /// `not`); its index. For the majority side of a partition.
    pub async fn wait_leader_among(
        &self,
        among: &[usize],
        not: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let names: Vec<&str> = among
            .iter()
            .map(|i| self.members[*i].name.as_str())
            .collect();
        poll(&format!("a leader among {names:?}"), timeout, || async {
            let mut seen = None;
            for i in among {
                let url = format!("{}/v1/status/leader", self.members[*i].base());
                let (code, v) = get_json(&url).await.ok()?;
                if code != StatusCode::OK {
                    return None;
                }
                let slot = self.by_rpc(v.as_str()?)?;
                if seen.is_some_and(|s| s != slot) {
                    return None;
                }
                seen = Some(slot);
            }
            seen.filter(|s| among.contains(s) && Some(*s) != not)
        })
        .await
    }

    /// Wait until gateway `gw` routes to `region` (a linearizable read of
    /// the region's leader through it answers).
    pub async fn wait_gateway_routes(
        &self,
        gw: usize,
        region: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let url = format!("{}/v1/jobs?region={region}", self.members[gw].base());
        poll(
            &format!("{} to route to {region}", self.members[gw].name),
            timeout,
            || async {
                let (code, _) = get_json(&url).await.ok()?;
                (code == StatusCode::OK).then_some(())
            },
        )
        .await
    }

    /// Copy every member's log into `dest` (kept after the federation's
    /// temporary directory is gone).
    pub fn save_logs(&self, dest: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dest)?;
        for m in &self.members {
            if m.log.exists() {
                std::fs::copy(&m.log, dest.join(format!("{}.log", m.name)))?;
            }
        }
        Ok(())
    }

    /// The last lines of every member's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
