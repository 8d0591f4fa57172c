//! A harness for end-to-end tests of Atoll regions.
//!
//! - [`TestRegion`] starts `n` region servers in this process, all with
//!   certificates from one throw-away CA, data directories in a temporary
//!   directory the region owns, and fixed loopback ports, so a stopped server
//!   can be restarted from its files at the same addresses.
//! - [`free_port`] hands out loopback ports, never the same one twice in a
//!   process.
//! - The HTTP helpers ([`get`], [`put_json`], [`register_job`], ...) talk to
//!   the Nomad-compatible `/v1` API and return a [`Reply`] with the status,
//!   headers and body; they only fail when no answer arrives at all.
//! - [`poll`] retries a check until a deadline: tests wait for conditions,
//!   not for fixed times.
//! - [`json_diff`] names the fields where two answers differ.
//! - [`region_server_binary`] builds and finds the `region-server` binary for
//!   process-level tests.
//!
//! Tests that measure time (elections, blocking queries) hold [`serial`] so
//! that two regions never compete for the CPU of a small CI machine.

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ops_kit::tls::{DevCa, Role};
use region_server::{RegionServer, ServerConfig};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

pub use region_server;

pub mod faults;

/// The longest the harness waits for a leader or a server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Run timing-sensitive tests one at a time within a test binary: hold the
/// guard for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Log to stderr when `ATOLL_TEST_LOG` is set (its value is the filter,
/// e.g. `info,openraft=debug`); quiet otherwise.
pub fn init_logging() {
    if let Ok(filter) = std::env::var("ATOLL_TEST_LOG") {
        ops_kit::telemetry::init_tracing(&filter);
    }
}

/// A loopback TCP port that was free a moment ago and that this process has
/// not handed out before (so a stopped server's port is not given to
/// another server of another test).
pub fn free_port() -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding a loopback port")
            .port();
        if used.insert(port) {
            return port;
        }
    }
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Poll `check` every 50 ms until it returns `Some`, or fail after `timeout`
/// naming `what`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One server of a [`TestRegion`]: its configuration (kept for restarts) and
/// the running server, if it runs.
pub struct Slot {
    /// What the server was (and will be re-)started with.
    pub config: ServerConfig,
    /// The running server; `None` while stopped.
    pub server: Option<RegionServer>,
}

/// `n` region servers in this process, sharing one CA and one temporary
/// directory.
pub struct TestRegion {
    /// The region's name.
    pub region: String,
    /// The CA every server's certificate comes from.
    pub ca: DevCa,
    /// The servers, in the order they were planned.
    pub slots: Vec<Slot>,
    dir: TempDir,
}

impl TestRegion {
    /// Start `n` servers that bootstrap one region together
    /// (`bootstrap_expect = n`, each joining all of them). Returns once all
    /// listen, not once they have a leader: see [`TestRegion::wait_leader`].
    pub async fn start(n: usize, region: &str) -> anyhow::Result<Self> {
        Self::start_with(n, region, |_| {}).await
    }

    /// Like [`TestRegion::start`], with `tweak` applied to every server's
    /// configuration (Raft tuning, body limits, ...).
    pub async fn start_with(
        n: usize,
        region: &str,
        tweak: impl Fn(&mut ServerConfig),
    ) -> anyhow::Result<Self> {
        let mut r = Self::plan(n, region, tweak)?;
        r.start_all().await?;
        Ok(r)
    }

    /// Plan `n` servers that bootstrap one region together, without starting
    /// any: tests that start servers themselves take [`TestRegion::config`]
    /// and hand the servers back with [`TestRegion::adopt`].
    pub fn plan(n: usize, region: &str, tweak: impl Fn(&mut ServerConfig)) -> anyhow::Result<Self> {
        init_logging();
        ops_kit::tls::install_crypto_provider();
        let mut r = Self {
            region: region.to_string(),
            ca: DevCa::generate().context("generating a CA")?,
            slots: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix(&format!("atoll-{region}-"))
                .tempdir()
                .context("temporary directory")?,
        };
        for _ in 0..n {
            r.plan_server(Some(n), Vec::new(), &tweak)?;
        }
        let rpc: Vec<String> = r.slots.iter().map(|s| s.config.rpc_addr.clone()).collect();
        for s in &mut r.slots {
            s.config.join = rpc.clone();
        }
        Ok(r)
    }

    /// Plan one more server of this region (not started), with its own data
    /// directory and ports. Returns its slot index.
    pub fn plan_server(
        &mut self,
        bootstrap_expect: Option<usize>,
        join: Vec<String>,
        tweak: impl Fn(&mut ServerConfig),
    ) -> anyhow::Result<usize> {
        let i = self.slots.len();
        let name = format!("s{}", i + 1);
        let bundle = self
            .ca
            .issue(Role::Server, &self.region)
            .context("issuing a server certificate")?;
        let mut config =
            ServerConfig::dev(&name, &self.region, self.dir.path().join(&name), bundle);
        config.http_addr = free_addr();
        config.rpc_addr = free_addr();
        config.gossip_addr = free_addr();
        config.bootstrap_expect = bootstrap_expect;
        config.join = join;
        tweak(&mut config);
        self.slots.push(Slot {
            config,
            server: None,
        });
        Ok(i)
    }

    /// The configuration slot `i` starts with.
    pub fn config(&self, i: usize) -> ServerConfig {
        self.slots[i].config.clone()
    }

    /// Hand a server started elsewhere (from [`TestRegion::config`]) to slot `i`.
    pub fn adopt(&mut self, i: usize, server: RegionServer) {
        assert!(self.slots[i].server.is_none(), "slot {i} already runs");
        self.slots[i].server = Some(server);
    }

    /// Start every stopped server, all at once.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        let stopped: Vec<usize> = (0..self.len()).filter(|i| !self.is_running(*i)).collect();
        let started = futures::future::join_all(
            stopped
                .iter()
                .map(|i| start_server(self.slots[*i].config.clone())),
        )
        .await;
        for (i, s) in stopped.into_iter().zip(started) {
            self.slots[i].server = Some(s?);
        }
        Ok(())
    }

    /// Start (or restart, from its data directory and at its addresses) the
    /// server of slot `i`.
    pub async fn start_server(&mut self, i: usize) -> anyhow::Result<()> {
        assert!(!self.is_running(i), "slot {i} already runs");
        let s = start_server(self.slots[i].config.clone()).await?;
        self.slots[i].server = Some(s);
        Ok(())
    }

    /// Restart a stopped server from its files, at the same addresses.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_server(i).await
    }

    /// Stop server `i` without leaving Raft (a crash, as far as its peers
    /// can tell); its data directory stays.
    pub async fn stop(&mut self, i: usize) {
        self.take(i).shutdown().await;
    }

    /// Take the running server out of slot `i` (the slot counts as stopped),
    /// e.g. to shut it down concurrently with something else.
    pub fn take(&mut self, i: usize) -> RegionServer {
        self.slots[i]
            .server
            .take()
            .unwrap_or_else(|| panic!("server {i} is not running"))
    }

    /// Shut every running server down.
    pub async fn shutdown(mut self) {
        let running: Vec<RegionServer> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.server.take())
            .collect();
        futures::future::join_all(running.into_iter().map(|s| s.shutdown())).await;
    }

    /// Number of slots (running or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the region has no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether server `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i].server.is_some()
    }

    /// Indexes of the running servers.
    pub fn running(&self) -> Vec<usize> {
        (0..self.len()).filter(|i| self.is_running(*i)).collect()
    }

    /// The running server of slot `i`.
    pub fn server(&self, i: usize) -> &RegionServer {
        self.slots[i]
            .server
            .as_ref()
            .unwrap_or_else(|| panic!("server {i} is not running"))
    }

    /// Base URL of server `i`'s HTTP API (`http://127.0.0.1:port`), running or not.
    pub fn http(&self, i: usize) -> String {
        format!("http://{}", self.slots[i].config.http_addr)
    }

    /// Server `i`'s RPC address, running or not.
    pub fn rpc_addr(&self, i: usize) -> String {
        self.slots[i].config.rpc_addr.clone()
    }

    /// The slot of the running server with Raft id `id`.
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        self.running()
            .into_iter()
            .find(|i| self.server(*i).service.id == id)
    }

    /// The slot of a running server that considers itself the leader.
    pub fn leader_now(&self) -> Option<usize> {
        self.running()
            .into_iter()
            .find(|i| self.server(*i).service.is_leader())
    }

    /// Running servers other than `leader`.
    pub fn others(&self, leader: usize) -> Vec<usize> {
        self.running()
            .into_iter()
            .filter(|i| *i != leader)
            .collect()
    }

    /// Wait until the running servers agree on one leader among them; its slot.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        self.wait_leader_among(&self.running(), timeout).await
    }

    /// Wait until servers `among` agree on a leader that is one of them and
    /// considers itself the leader; its slot.
    pub async fn wait_leader_among(
        &self,
        among: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        poll("an agreed leader", timeout, || async {
            self.agreed_leader(among)
        })
        .await
    }

    /// The leader servers `among` agree on right now, if they do.
    pub fn agreed_leader(&self, among: &[usize]) -> Option<usize> {
        let first = among.first()?;
        let (id, _) = self.server(*first).service.leader()?;
        let all_agree = among
            .iter()
            .all(|i| self.server(*i).service.leader().map(|(l, _)| l) == Some(id));
        let slot = self.slot_of(id)?;
        (all_agree && among.contains(&slot) && self.server(slot).service.is_leader())
            .then_some(slot)
    }
}

/// Start a server, retrying for a while when its port is still held by a
/// server that just stopped.
async fn start_server(config: ServerConfig) -> anyhow::Result<RegionServer> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match RegionServer::start(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("starting server {}", config.name));
            }
        }
    }
}

// ---- HTTP ----

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Nomad-Index` (0 when absent).
    pub fn index(&self) -> u64 {
        self.header("X-Nomad-Index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Fail with the status and body unless the status is `want`.
    pub fn expect(self, want: StatusCode) -> anyhow::Result<Self> {
        if self.status != want {
            bail!("expected {want}, got {}: {}", self.status, self.body);
        }
        Ok(self)
    }
}

/// A client without connection reuse (servers come and go) and with a
/// generous overall timeout (blocking queries wait up to 10 s in tests).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}

async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// `GET url`.
pub async fn get(url: &str) -> anyhow::Result<Reply> {
    send(client().get(url))
        .await
        .with_context(|| format!("GET {url}"))
}

/// `GET url`: the status and the body as JSON.
pub async fn get_json(url: &str) -> anyhow::Result<(StatusCode, Value)> {
    let r = get(url).await?;
    Ok((r.status, r.json()))
}

/// `GET url` as raw bytes, with the headers.
pub async fn get_bytes(url: &str) -> anyhow::Result<(StatusCode, HeaderMap, Vec<u8>)> {
    let resp = client()
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok((status, headers, body))
}

/// `PUT url` with a JSON body.
pub async fn put_json(url: &str, body: &Value) -> anyhow::Result<Reply> {
    put_raw(url, serde_json::to_vec(body)?, &[]).await
}

/// `PUT url` with raw bytes and extra headers.
pub async fn put_raw(
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> anyhow::Result<Reply> {
    let mut req = client().put(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    send(req).await.with_context(|| format!("PUT {url}"))
}

/// `DELETE url`.
pub async fn delete(url: &str) -> anyhow::Result<Reply> {
    send(client().delete(url))
        .await
        .with_context(|| format!("DELETE {url}"))
}

/// A minimal valid service job `id` running `/bin/true` with `raw_exec`.
pub fn job_spec(id: &str) -> Value {
    json!({
        "ID": id,
        "TaskGroups": [{
            "Name": "web",
            "Tasks": [{
                "Name": "app",
                "Driver": "raw_exec",
                "Config": { "command": "/bin/true" }
            }]
        }]
    })
}

/// Register `job` (a job object, see [`job_spec`]) through `base`.
pub async fn register(base: &str, job: Value) -> anyhow::Result<Reply> {
    put_json(&format!("{base}/v1/jobs"), &json!({ "Job": job })).await
}

/// Register [`job_spec`]`(id)` through `base`: the status and the JSON answer.
pub async fn register_job(base: &str, id: &str) -> anyhow::Result<(StatusCode, Value)> {
    let r = register(base, job_spec(id)).await?;
    Ok((r.status, r.json()))
}

/// Register [`job_spec`]`(id)` through `base` and fail unless it was accepted.
pub async fn must_register(base: &str, id: &str) -> anyhow::Result<Value> {
    let r = register(base, job_spec(id)).await?;
    Ok(r.expect(StatusCode::OK)
        .with_context(|| format!("registering {id} through {base}"))?
        .json())
}

/// Wait until `GET url` answers 200; its JSON.
pub async fn wait_ok(url: &str, timeout: Duration) -> anyhow::Result<Value> {
    poll(&format!("200 from {url}"), timeout, || async {
        match get(url).await {
            Ok(r) if r.status == StatusCode::OK => Some(r.json()),
            _ => None,
        }
    })
    .await
}

// ---- processes ----

/// A child process, killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves nothing running.
pub struct Proc {
    /// The process.
    pub child: std::process::Child,
}

impl Proc {
    /// SIGKILL and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A workspace binary beside this test's target directory, built first
/// (`cargo build -p <package> --bin <bin>`) so that it is never older than
/// the libraries the in-process tests use.
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary outside a target directory")?
        .to_path_buf();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "-p", package, "--bin", bin]);
    // Cargo gives a running test the variables of its own package; build
    // scripts (ring's, for one) depend on some of them, so leaving them set
    // would make this build, and the next ordinary one, rebuild crates.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_for_the_test = key == "OUT_DIR"
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR"
            || key == "CARGO_RUSTC_CURRENT_DIR"
            || [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| key.starts_with(p));
        if set_for_the_test {
            cmd.env_remove(key);
        }
    }
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p {package} failed: {status}");
    }
    let path = profile_dir.join(bin);
    if !path.exists() {
        bail!("{} missing after cargo build", path.display());
    }
    Ok(path)
}

/// The `region-server` binary (see [`workspace_binary`]).
pub fn region_server_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("region-server", "region-server")
}

/// Where two JSON values differ: up to `limit` lines of `path: a != b`.
pub fn json_diff(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    walk(&format!("{path}.{k}"), va, vb, out, limit);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), va, vb, out, limit);
                }
            }
            _ => {
                let short = |v: &Value| {
                    let s = v.to_string();
                    if s.len() > 200 {
                        format!("{}...", &s[..200])
                    } else {
                        s
                    }
                };
                out.push(format!("{path}: {} != {}", short(a), short(b)));
            }
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out, limit);
    out
}

// ---- federations ----

/// Several regions of in-process servers sharing one CA and one gossip
/// pool, with federation gateways and client agents: what
/// `tests/federation.rs` starts.
pub struct TestFederation {
    /// The CA every certificate comes from.
    pub ca: DevCa,
    /// The gossip key of the pool.
    pub key: String,
    /// The regions, in the order given.
    pub regions: Vec<TestRegion>,
    /// Running gateways.
    pub gateways: Vec<federation_gateway::Gateway>,
    /// Running client agents, by region.
    pub clients: Vec<(String, client_agent::ClientAgent)>,
    /// Gossip address every member joins through (the first server's).
    pub seed: String,
    dir: TempDir,
}

impl TestFederation {
    /// Start `servers` servers in each of `regions`, all in one gossip pool
    /// (fast local profile) and all with certificates of one CA. Returns
    /// once every region has a leader.
    pub async fn start(regions: &[&str], servers: usize) -> anyhow::Result<Self> {
        init_logging();
        ops_kit::tls::install_crypto_provider();
        let ca = DevCa::generate().context("generating a CA")?;
        let key = ops_kit::gossip::Keyring::generate_key();
        let mut planned = Vec::new();
        let mut seed: Option<String> = None;
        for region in regions {
            let mut r = TestRegion::plan(servers, region, |_| {})?;
            // One CA for the whole federation.
            r.ca = DevCa::from_pem(&ca.cert_pem(), &ca.key_pem()).context("sharing the CA")?;
            for slot in &mut r.slots {
                let bundle = ca
                    .issue(Role::Server, region)
                    .context("issuing a server certificate")?;
                slot.config.tls = region_server::TlsSource::Bundle(bundle);
                let mut pool = ops_kit::gossip::GossipConfig::local();
                pool.bind_addr = slot.config.gossip_addr.parse().context("gossip address")?;
                let first = seed.get_or_insert_with(|| slot.config.gossip_addr.clone());
                if *first != slot.config.gossip_addr {
                    pool.seeds = vec![first.clone()];
                }
                slot.config.gossip = Some(region_server::config::GossipSettings {
                    pool,
                    keys: vec![key.clone()],
                    reap_failed_after: Duration::from_secs(3600),
                });
            }
            planned.push(r);
        }
        for r in &mut planned {
            r.start_all().await?;
        }
        for r in &planned {
            r.wait_leader(DEFAULT_TIMEOUT)
                .await
                .with_context(|| format!("leader of region {}", r.region))?;
        }
        Ok(Self {
            ca,
            key,
            regions: planned,
            gateways: Vec::new(),
            clients: Vec::new(),
            seed: seed.unwrap_or_default(),
            dir: tempfile::Builder::new()
                .prefix("atoll-federation-")
                .tempdir()
                .context("temporary directory")?,
        })
    }

    /// The gateway configuration [`TestFederation::start_gateway`] uses:
    /// default region `region`, joining the pool through the seed.
    pub fn gateway_config(
        &self,
        name: &str,
        region: &str,
    ) -> anyhow::Result<federation_gateway::GatewayConfig> {
        let bundle = self
            .ca
            .issue(Role::Gateway, "")
            .context("issuing a gateway certificate")?;
        let mut cfg =
            federation_gateway::GatewayConfig::dev(name, region, bundle, vec![self.key.clone()]);
        cfg.gossip.seeds = vec![self.seed.clone()];
        cfg.rollout_poll = Duration::from_millis(200);
        Ok(cfg)
    }

    /// Start a gateway (default region: the first region); its index.
    pub async fn start_gateway(&mut self, name: &str) -> anyhow::Result<usize> {
        let region = self.regions[0].region.clone();
        let gw = federation_gateway::Gateway::start(self.gateway_config(name, &region)?)
            .await
            .context("starting a gateway")?;
        self.gateways.push(gw);
        Ok(self.gateways.len() - 1)
    }

    /// Base URL of gateway `i`'s HTTP API.
    pub fn gateway_http(&self, i: usize) -> String {
        format!("http://{}", self.gateways[i].http_addr)
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> &TestRegion {
        self.regions
            .iter()
            .find(|r| r.region == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    }

    /// The region called `name`, mutably.
    pub fn region_mut(&mut self, name: &str) -> &mut TestRegion {
        self.regions
            .iter_mut()
            .find(|r| r.region == name)
            .unwrap_or_else(|| panic!("no region {name}"))
    }

    /// Start a client agent in `region`, talking to its servers; waits
    /// until it registered.
    pub async fn start_client(&mut self, region: &str, name: &str) -> anyhow::Result<()> {
        let servers: Vec<String> = {
            let r = self.region(region);
            (0..r.len()).map(|i| r.rpc_addr(i)).collect()
        };
        let bundle = self
            .ca
            .issue(Role::Client, region)
            .context("issuing a client certificate")?;
        let cfg = client_agent::ClientConfig::dev(
            name,
            region,
            self.dir.path().join(name),
            servers,
            bundle,
        );
        let agent = client_agent::ClientAgent::start(cfg)
            .await
            .with_context(|| format!("starting client {name}"))?;
        if !agent.wait_registered(DEFAULT_TIMEOUT).await {
            bail!("client {name} did not register in region {region}");
        }
        self.clients.push((region.to_string(), agent));
        Ok(())
    }

    /// Wait until gateway `i` knows `region`'s servers as alive
    /// (`alive = true`) or knows none alive (`alive = false`).
    pub async fn wait_gateway_sees(
        &self,
        i: usize,
        region: &str,
        alive: bool,
    ) -> anyhow::Result<()> {
        let gw = &self.gateways[i];
        poll(
            &format!(
                "gateway to see region {region} {}",
                if alive { "up" } else { "down" }
            ),
            DEFAULT_TIMEOUT,
            || async {
                let up = gw
                    .gossip
                    .regions()
                    .get(region)
                    .is_some_and(|r| !r.servers.is_empty());
                (up == alive).then_some(())
            },
        )
        .await
    }

    /// Stop everything.
    pub async fn shutdown(mut self) {
        for (_, c) in self.clients.drain(..) {
            c.shutdown_and_kill_tasks().await;
        }
        for g in self.gateways.drain(..) {
            g.shutdown().await;
        }
        for r in self.regions.drain(..) {
            r.shutdown().await;
        }
    }
}

// ---- atoll dev as a process ----

/// `atoll dev` running as a child process on system-picked ports, its
/// output in `<dir>/dev.log`.
pub struct DevProcess {
    /// The process (killed when dropped).
    pub proc: Proc,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `dev.json`: every address.
    pub info: Value,
}

impl DevProcess {
    /// Starts `atoll dev --http-port 0 --data-dir <dir>/dev <extra>` and waits
    /// (up to `timeout`) for `dev.json`, written once every region has a
    /// leader and every client registered.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        extra: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let data_dir = dir.join("dev");
        let log = std::fs::File::create(dir.join("dev.log")).context("dev.log")?;
        let child = std::process::Command::new(bin)
            .args(["dev", "--http-port", "0", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .stdout(log.try_clone().context("dev.log")?)
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting atoll dev")?;
        let mut proc = Proc { child };
        let path = data_dir.join("dev.json");
        let deadline = Instant::now() + timeout;
        let info = loop {
            if let Some(v) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                break v;
            }
            if let Some(status) = proc.child.try_wait().context("waiting for atoll dev")? {
                let log = std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default();
                bail!("atoll dev exited with {status}:\n{log}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "atoll dev not up within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Ok(Self {
            proc,
            data_dir,
            info,
        })
    }

    /// The gateway's base URL.
    pub fn gateway(&self) -> anyhow::Result<String> {
        self.info["Gateway"]
            .as_str()
            .map(str::to_string)
            .context("dev.json names no gateway")
    }

    /// SIGINT (Ctrl-C), then wait up to `timeout` for the exit status.
    pub async fn interrupt(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill")
            .args(["-INT", &self.proc.child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(sent.success(), "SIGINT to atoll dev failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self
                .proc
                .child
                .try_wait()
                .context("waiting for atoll dev")?
            {
                return Ok(s);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "atoll dev still runs {timeout:?} after SIGINT"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---- the atoll CLI as a process ----

/// What a run of the `atoll` binary printed and how it exited.
pub struct CliOut {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for CliOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the `atoll` binary `bin` with `args` (up to 180 s), with no address,
/// region, token or TLS settings from the environment; `addr` becomes
/// `ATOLL_ADDR` when given.
pub async fn run_cli(bin: &Path, addr: Option<&str>, args: &[&str]) -> CliOut {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args).kill_on_drop(true);
    for var in [
        "ATOLL_ADDR",
        "NOMAD_ADDR",
        "ATOLL_REGION",
        "NOMAD_REGION",
        "ATOLL_TOKEN",
        "NOMAD_TOKEN",
        "NOMAD_CACERT",
        "NOMAD_CLIENT_CERT",
        "NOMAD_CLIENT_KEY",
    ] {
        cmd.env_remove(var);
    }
    if let Some(a) = addr {
        cmd.env("ATOLL_ADDR", a);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("atoll {args:?} did not finish within 180 s"))
        .expect("run atoll");
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
