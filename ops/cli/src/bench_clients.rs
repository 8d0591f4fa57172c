//! `atoll bench clients`: what clients cost, in two measurements (either or
//! both in one run):
//!
//! 1. **Agent** (`--mode agent`): one region server in this process and ONE
//!    real `client-agent` as a child process. A service job of `--allocs`
//!    mock-driver allocations (CPU 1 MHz, 10 MB, 10 MB ephemeral disk each,
//!    running until stopped) is placed on it; once every allocation is
//!    `running` and a warm-up has passed, the agent's resident memory
//!    (`VmRSS`) and its CPU time (utime + stime of `/proc/<pid>/stat`) over
//!    the idle window are printed against the targets: 200 MiB and 5 % of
//!    one core.
//! 2. **Fleet** (`--mode fleet`): three `region-server` child processes (one
//!    region, `bootstrap_expect = 3`, gossip encrypted, mTLS) and
//!    `--clients` simulated nodes ([`client_agent::SimulatedFleet`]: the real
//!    registration, heartbeat and allocation-watch logic, mock driver only)
//!    in this process. Once every node is registered and a warm-up has
//!    passed, the leader (`/v1/status/leader`, mapped to its process) is
//!    measured over the idle window from `/proc`; the target is 50 % of one
//!    core. The heartbeats it took come from the fleet's own counters
//!    (every heartbeat goes to the leader; followers refuse them).
//!
//! The servers are separate processes in fleet mode so that the leader's CPU
//! time is its own, not shared with the fleet's; in agent mode the server
//! is in-process and only the agent (its own process) is measured.
//!
//! The agent fingerprints the real host: its capacity is the host's CPU
//! (cores x MHz) and memory, so `--allocs` must fit in `MemTotal / 10 MB`
//! and `cores x MHz / 1 MHz`; the run checks that before submitting.
//!
//! Everything is on 127.0.0.1; every phase is bounded by `--timeout`; child
//! processes are killed (SIGKILL) when the benchmark ends, fails or is
//! interrupted, and the temporary directories are removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use client_agent::SimulatedFleet;
use ops_kit::tls::{DevCa, Role};
use region_server::{RegionServer, ServerConfig};
use serde_json::Value;

const REGION: &str = "bench";
const JOB_ID: &str = "bench-clients";
/// Agent mode targets.
const AGENT_RSS_TARGET_MIB: f64 = 200.0;
const AGENT_CPU_TARGET_PCT: f64 = 5.0;
/// Fleet mode target.
const LEADER_CPU_TARGET_PCT: f64 = 50.0;
/// Per-allocation resources: the smallest job validation accepts.
const TASK_CPU_MHZ: i64 = 1;
const TASK_MEMORY_MB: i64 = 10;
const GROUP_DISK_MB: i64 = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One client agent process holding `--allocs` allocations.
    Agent,
    /// `--clients` simulated nodes heartbeating a 3-server region.
    Fleet,
    /// Agent, then fleet.
    Both,
}

/// Flags of `atoll bench clients`.
#[derive(Debug, Clone, Args)]
pub struct ClientsBenchArgs {
    /// Allocations placed on the one client agent (agent mode).
    #[arg(long, default_value_t = 2000)]
    pub allocs: usize,
    /// Simulated nodes in the fleet (fleet mode).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Idle window over which CPU use is measured (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = crate::bench::parse_duration)]
    pub idle: Duration,
    /// Which measurement(s) to run.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Unmeasured quiet time between the end of set-up (all allocations
    /// running, all nodes registered) and the idle window.
    #[arg(long, default_value = "10s", value_parser = crate::bench::parse_duration)]
    pub warmup: Duration,
    /// Longest wait for any one set-up phase (leader, registration,
    /// placement) before giving up.
    #[arg(long, default_value = "300s", value_parser = crate::bench::parse_duration)]
    pub timeout: Duration,
    /// Directory holding the `client-agent` and `region-server` binaries
    /// (default: next to this executable, or its parent directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Parent of the temporary data directories (default /var/tmp, else the
    /// current directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Run the benchmark: results on stdout, progress on stderr.
pub async fn run(args: ClientsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.idle.is_zero(), "--idle must be more than 0");
    let agent = matches!(args.mode, Mode::Agent | Mode::Both);
    let fleet = matches!(args.mode, Mode::Fleet | Mode::Both);
    anyhow::ensure!(!agent || args.allocs >= 1, "--allocs must be at least 1");
    anyhow::ensure!(!fleet || args.clients >= 1, "--clients must be at least 1");
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(crate::bench::default_work_dir);
    anyhow::ensure!(
        work_dir.is_dir(),
        "work dir {} is not a directory",
        work_dir.display()
    );
    // Find the binaries before starting anything.
    let agent_bin = if agent {
        Some(find_binary("client-agent", args.bin_dir.as_deref())?)
    } else {
        None
    };
    let server_bin = if fleet {
        Some(find_binary("region-server", args.bin_dir.as_deref())?)
    } else {
        None
    };
    ops_kit::tls::install_crypto_provider();
    let tck = clock_ticks();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;

    println!("atoll bench clients");
    println!(
        "  machine: {cpus} CPUs, load average {} at start; CPU % is of one core \
         (clock ticks of {} ms)",
        load_average(),
        1000 / tck.max(1)
    );
    println!(
        "  idle window {:?} after a {:?} warm-up; data under {}",
        args.idle,
        args.warmup,
        work_dir.display()
    );
    for bin in agent_bin.iter().chain(server_bin.iter()) {
        let profile = if bin.components().any(|c| c.as_os_str() == "debug") {
            "  <- a DEBUG build: figures are not representative"
        } else {
            ""
        };
        println!("  binary: {}{profile}", bin.display());
    }

    let mut failures = Vec::new();
    if let Some(bin) = &agent_bin {
        println!();
        println!(
            "agent: 1 region server in this process, 1 client-agent process, \
             {} mock_driver allocations",
            args.allocs
        );
        match agent_mode(&args, bin, &work_dir, &http, tck).await {
            Ok(r) => r.print(),
            Err(e) => {
                println!("  FAILED: {e:#}");
                failures.push(format!("agent: {e:#}"));
            }
        }
    }
    if let Some(bin) = &server_bin {
        println!();
        println!(
            "fleet: 3 region-server processes, {} simulated nodes in this process",
            args.clients
        );
        match fleet_mode(&args, bin, &work_dir, &http, tck).await {
            Ok(r) => r.print(),
            Err(e) => {
                println!("  FAILED: {e:#}");
                failures.push(format!("fleet: {e:#}"));
            }
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => anyhow::bail!("{}", failures.join("; ")),
    }
}

// ---------------------------------------------------------------------------
// Agent mode

struct AgentReport {
    allocs: usize,
    node_capacity: String,
    placed_after: Duration,
    running_after: Duration,
    window: Duration,
    agent: Usage,
    agent_rss: Memory,
    server_process: Usage,
    still_running: i64,
}

impl AgentReport {
    fn print(&self) {
        println!("  node capacity: {}", self.node_capacity);
        println!(
            "  {} allocations placed after {:.2} s, all running after {:.1} s",
            self.allocs,
            self.placed_after.as_secs_f64(),
            self.running_after.as_secs_f64()
        );
        let rss_mib = self.agent_rss.rss_kib as f64 / 1024.0;
        println!(
            "  agent RSS        {:>8.1} MiB  (target < {AGENT_RSS_TARGET_MIB:.0} MiB: {}); \
             peak {:.1} MiB, {} threads",
            rss_mib,
            verdict(rss_mib < AGENT_RSS_TARGET_MIB),
            self.agent_rss.hwm_kib as f64 / 1024.0,
            self.agent_rss.threads
        );
        println!(
            "  agent CPU idle   {:>8.2} %    (target < {AGENT_CPU_TARGET_PCT:.0} % of one core: {}) \
             over {:.1} s",
            self.agent.pct,
            verdict(self.agent.pct < AGENT_CPU_TARGET_PCT),
            self.window.as_secs_f64()
        );
        println!(
            "  (server + bench process, for reference: {:.2} % of one core)",
            self.server_process.pct
        );
        println!(
            "  allocations still running at the end of the window: {}",
            self.still_running
        );
    }
}

async fn agent_mode(
    args: &ClientsBenchArgs,
    bin: &Path,
    work_dir: &Path,
    http: &reqwest::Client,
    tck: u64,
) -> anyhow::Result<AgentReport> {
    let dir = tempfile::Builder::new()
        .prefix("atoll-bench-clients-agent-")
        .tempdir_in(work_dir)
        .with_context(|| format!("creating a directory under {}", work_dir.display()))?;
    let ca = DevCa::generate().context("generating the region's CA")?;
    let server_tls = ca
        .issue(Role::Server, REGION)
        .context("issuing the server's certificate")?;
    let cfg = ServerConfig::dev("s1", REGION, dir.path().join("s1"), server_tls);
    let server = RegionServer::start(cfg)
        .await
        .context("starting the region server")?;
    let result = agent_scenario(args, bin, dir.path(), &ca, &server, http, tck).await;
    // The agent process is gone (its guard dropped inside the scenario).
    if tokio::time::timeout(Duration::from_secs(15), server.shutdown())
        .await
        .is_err()
    {
        eprintln!("agent: the region server did not shut down within 15 s");
    }
    drop(dir);
    result
}

async fn agent_scenario(
    args: &ClientsBenchArgs,
    bin: &Path,
    dir: &Path,
    ca: &DevCa,
    server: &RegionServer,
    http: &reqwest::Client,
    tck: u64,
) -> anyhow::Result<AgentReport> {
    let base = format!("http://{}", server.http_addr);
    wait_for(args.timeout, "the region server to lead", || async {
        server.service.is_leader().then_some(())
    })
    .await?;

    let (ca_pem, cert, key) = ca
        .issue(Role::Client, REGION)
        .context("issuing the client's certificate")?
        .write(&dir.join("client-tls"), "client")
        .context("writing the client's certificate")?;
    let agent_http = format!("127.0.0.1:{}", crate::bench::free_ports(1)?[0]);
    let log_path = dir.join("client-agent.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["--name", "bench-agent", "--region", REGION])
        .arg("--data-dir")
        .arg(dir.join("client"))
        .args(["--servers", &server.rpc_addr.to_string()])
        .args(["--http-addr", &agent_http])
        .arg("--tls-ca")
        .arg(&ca_pem)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut agent = ChildGuard::spawn("client-agent", cmd, log_path)?;
    let pid = agent.pid();
    eprintln!("agent: client-agent started, pid {pid}");

    let run = async {
        // The node registers and becomes ready.
        let node_id = wait_for(
            args.timeout,
            "the client agent's node to be ready",
            || async {
                let nodes = get_json(http, &format!("{base}/v1/nodes")).await.ok()?;
                nodes.as_array()?.iter().find_map(|n| {
                    (n["Status"] == "ready")
                        .then(|| n["ID"].as_str().map(String::from))
                        .flatten()
                })
            },
        )
        .await?;
        let node = get_json(http, &format!("{base}/v1/node/{node_id}")).await?;
        let cap = NodeCapacity::of(&node);
        let fits = cap.allocs();
        let node_capacity = format!(
            "{} MHz CPU, {} MB memory, {} MB disk free -> room for {fits} allocations of \
             {TASK_CPU_MHZ} MHz / {TASK_MEMORY_MB} MB / {GROUP_DISK_MB} MB disk",
            cap.cpu_mhz, cap.memory_mb, cap.disk_mb
        );
        eprintln!("agent: node {node_id} ready; {node_capacity}");
        anyhow::ensure!(
            fits >= args.allocs as i64,
            "the node has room for {fits} allocations only ({node_capacity}); \
             the agent fingerprints the host, so lower --allocs on this machine"
        );

        // Submit the job and wait for every allocation to run.
        let submitted = Instant::now();
        let resp = http
            .put(format!("{base}/v1/jobs"))
            .json(&agent_job(args.allocs))
            .send()
            .await
            .context("PUT /v1/jobs")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "PUT /v1/jobs: {status} {}",
            text.trim()
        );
        let summary_url = format!("{base}/v1/job/{JOB_ID}/summary");
        let deadline = Instant::now() + args.timeout;
        let mut placed_after = None;
        let mut last_print = Instant::now();
        let running_after = loop {
            if let Some(exit) = agent.exited() {
                anyhow::bail!("the client agent exited: {exit}");
            }
            if let Ok(s) = group_summary(http, &summary_url).await {
                let placed = s.running + s.starting + s.complete + s.failed + s.lost;
                if placed >= args.allocs as i64 && placed_after.is_none() {
                    placed_after = Some(submitted.elapsed());
                }
                anyhow::ensure!(
                    s.failed + s.lost == 0,
                    "allocations failed ({}) or were lost ({})",
                    s.failed,
                    s.lost
                );
                if s.running >= args.allocs as i64 {
                    break submitted.elapsed();
                }
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    eprintln!(
                        "agent: {:.0} s: {} running, {} starting, {} queued",
                        submitted.elapsed().as_secs_f64(),
                        s.running,
                        s.starting,
                        s.queued
                    );
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out after {:?} waiting for every allocation to run",
                args.timeout
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let placed_after = placed_after.unwrap_or(running_after);
        eprintln!(
            "agent: {} allocations running after {:.1} s; warm-up {:?}",
            args.allocs,
            running_after.as_secs_f64(),
            args.warmup
        );

        tokio::time::sleep(args.warmup).await;
        eprintln!("agent: measuring for {:?}", args.idle);
        let me = std::process::id();
        let a0 = cpu_ticks(pid)?;
        let s0 = cpu_ticks(me)?;
        let t0 = Instant::now();
        tokio::time::sleep(args.idle).await;
        let a1 = cpu_ticks(pid)?;
        let s1 = cpu_ticks(me)?;
        let window = t0.elapsed();
        let agent_rss = memory(pid)?;
        if let Some(exit) = agent.exited() {
            anyhow::bail!("the client agent exited during the window: {exit}");
        }
        let still_running = group_summary(http, &summary_url)
            .await
            .map(|s| s.running)
            .unwrap_or(-1);
        Ok(AgentReport {
            allocs: args.allocs,
            node_capacity,
            placed_after,
            running_after,
            window,
            agent: Usage::new(a1.saturating_sub(a0), window, tck),
            agent_rss,
            server_process: Usage::new(s1.saturating_sub(s0), window, tck),
            still_running,
        })
    };
    let result = run.await;
    if result.is_err() {
        eprintln!(
            "agent: last lines of the client agent's log:\n{}",
            agent.log_tail(20)
        );
    }
    drop(agent);
    result
}

/// The job of agent mode: `count` mock allocations that run until stopped,
/// each as small as validation allows.
fn agent_job(count: usize) -> Value {
    serde_json::json!({
        "Job": {
            "ID": JOB_ID,
            "Name": JOB_ID,
            "Type": "service",
            "Datacenters": ["dc1"],
            "TaskGroups": [{
                "Name": "g",
                "Count": count,
                "EphemeralDisk": { "SizeMB": GROUP_DISK_MB },
                "Tasks": [{
                    "Name": "t",
                    "Driver": "mock_driver",
                    "Config": { "run_for": "24h" },
                    "Resources": { "CPU": TASK_CPU_MHZ, "MemoryMB": TASK_MEMORY_MB },
                    // Log storage must stay below the group's ephemeral disk.
                    "LogConfig": { "MaxFiles": 1, "MaxFileSizeMB": 1 }
                }]
            }]
        }
    })
}

/// What a node offers, less what it reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeCapacity {
    cpu_mhz: i64,
    memory_mb: i64,
    disk_mb: i64,
}

impl NodeCapacity {
    fn of(node: &Value) -> Self {
        let res = &node["NodeResources"];
        let rsv = &node["ReservedResources"];
        let n = |v: &Value| v.as_i64().unwrap_or(0);
        Self {
            cpu_mhz: n(&res["Cpu"]["CpuShares"]) - n(&rsv["Cpu"]["CpuShares"]),
            memory_mb: n(&res["Memory"]["MemoryMB"]) - n(&rsv["Memory"]["MemoryMB"]),
            disk_mb: n(&res["Disk"]["DiskMB"]) - n(&rsv["Disk"]["DiskMB"]),
        }
    }

    /// How many agent-mode allocations fit.
    fn allocs(&self) -> i64 {
        (self.cpu_mhz / TASK_CPU_MHZ)
            .min(self.memory_mb / TASK_MEMORY_MB)
            .min(self.disk_mb / GROUP_DISK_MB)
            .max(0)
    }
}

/// Counts of the job's one group.
#[derive(Debug, Default, Clone, Copy)]
struct GroupSummary {
    queued: i64,
    starting: i64,
    running: i64,
    complete: i64,
    failed: i64,
    lost: i64,
}

async fn group_summary(http: &reqwest::Client, url: &str) -> anyhow::Result<GroupSummary> {
    let v = get_json(http, url).await?;
    let g = &v["Summary"]["g"];
    let n = |k: &str| g[k].as_i64().unwrap_or(0);
    Ok(GroupSummary {
        queued: n("Queued"),
        starting: n("Starting"),
        running: n("Running"),
        complete: n("Complete"),
        failed: n("Failed"),
        lost: n("Lost"),
    })
}

// ---------------------------------------------------------------------------
// Fleet mode

struct FleetReport {
    clients: usize,
    registered_after: Duration,
    nodes_ready: usize,
    leader: String,
    window: Duration,
    leader_cpu: Usage,
    leader_mem: Memory,
    followers: Vec<(String, Usage)>,
    fleet_process: Usage,
    heartbeats: u64,
    heartbeat_failures: u64,
    leader_changed: bool,
}

impl FleetReport {
    fn print(&self) {
        println!(
            "  {} nodes registered after {:.1} s; {} listed ready by the leader",
            self.clients,
            self.registered_after.as_secs_f64(),
            self.nodes_ready
        );
        println!(
            "  leader {} CPU idle {:>7.2} %  (target < {LEADER_CPU_TARGET_PCT:.0} % of one core: {}) \
             over {:.1} s",
            self.leader,
            self.leader_cpu.pct,
            verdict(self.leader_cpu.pct < LEADER_CPU_TARGET_PCT),
            self.window.as_secs_f64()
        );
        println!(
            "  leader RSS {:.1} MiB, {} threads",
            self.leader_mem.rss_kib as f64 / 1024.0,
            self.leader_mem.threads
        );
        let secs = self.window.as_secs_f64().max(1e-9);
        let ttl = expected_ttl(self.clients);
        println!(
            "  heartbeats taken by the leader: {} in the window = {:.1}/s ({} failed rounds); \
             expected ~{:.1}/s (TTL {:.0}-{:.0} s, clients beat every 0.4-0.5 TTL)",
            self.heartbeats,
            self.heartbeats as f64 / secs,
            self.heartbeat_failures,
            expected_heartbeat_rate(self.clients),
            ttl.as_secs_f64(),
            2.0 * ttl.as_secs_f64()
        );
        for (name, u) in &self.followers {
            println!("  follower {name} CPU {:.2} %", u.pct);
        }
        println!(
            "  this process (the {} simulated nodes + bench): CPU {:.2} %",
            self.clients, self.fleet_process.pct
        );
        if self.leader_changed {
            println!("  WARNING: the leader changed during the window; the figure is unreliable");
        }
    }
}

/// The heartbeat TTL the servers hand out for `nodes` nodes before stagger
/// (region-server's defaults: at least 10 s, at most 50 heartbeats/s).
fn expected_ttl(nodes: usize) -> Duration {
    Duration::from_secs(10).max(Duration::from_secs_f64(nodes as f64 / 50.0))
}

/// Steady-state heartbeats per second: TTL uniform in [ttl, 2 ttl], each
/// client beating after 0.4-0.5 of it.
fn expected_heartbeat_rate(nodes: usize) -> f64 {
    let mean_interval = expected_ttl(nodes).as_secs_f64() * 1.5 * 0.45;
    nodes as f64 / mean_interval
}

pub(crate) struct ServerSpec {
    pub(crate) name: String,
    pub(crate) http: String,
    pub(crate) rpc: String,
    pub(crate) gossip: String,
}

/// Three `region-server` processes (`bin`) bootstrapping the bench region
/// under `dir` with a fresh CA, mTLS and one gossip pool, each logging to
/// `<dir>/<name>.log`; `extra_args` go to every server.
pub(crate) struct ProcessRegion {
    /// Addresses of the three servers.
    pub(crate) specs: Vec<ServerSpec>,
    /// The running processes (killed when dropped).
    pub(crate) servers: Vec<ChildGuard>,
    /// A client certificate of the region, for simulated nodes.
    pub(crate) client_tls: ops_kit::tls::CertBundle,
}

pub(crate) fn spawn_process_region(
    region: &str,
    bin: &Path,
    dir: &Path,
    extra_args: &[String],
) -> anyhow::Result<ProcessRegion> {
    let ca = DevCa::generate().context("generating the region's CA")?;
    let (ca_pem, cert, key) = ca
        .issue(Role::Server, region)
        .context("issuing server certificates")?
        .write(&dir.join("tls"), "server")
        .context("writing server certificates")?;
    let ports = crate::bench::free_ports(9)?;
    let specs: Vec<ServerSpec> = (0..3)
        .map(|i| ServerSpec {
            name: format!("s{}", i + 1),
            http: format!("127.0.0.1:{}", ports[3 * i]),
            rpc: format!("127.0.0.1:{}", ports[3 * i + 1]),
            gossip: format!("127.0.0.1:{}", ports[3 * i + 2]),
        })
        .collect();
    let gossip_key = ops_kit::gossip::Keyring::generate_key();
    let mut servers = Vec::new();
    for s in &specs {
        let log_path = dir.join(format!("{}.log", s.name));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--name", &s.name, "--region", region])
            .arg("--data-dir")
            .arg(dir.join(&s.name))
            .args(["--http-addr", &s.http, "--rpc-addr", &s.rpc])
            .args(["--bootstrap-expect", "3"])
            .args(["--gossip-addr", &s.gossip, "--encrypt", &gossip_key])
            .args(["--retry-join", &specs[0].gossip]);
        for other in &specs {
            cmd.args(["--join", &other.rpc]);
        }
        cmd.arg("--tls-ca")
            .arg(&ca_pem)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        servers.push(ChildGuard::spawn(&s.name, cmd, log_path)?);
    }
    let client_tls = ca
        .issue(Role::Client, region)
        .context("issuing the nodes' certificate")?;
    Ok(ProcessRegion {
        specs,
        servers,
        client_tls,
    })
}

async fn fleet_mode(
    args: &ClientsBenchArgs,
    bin: &Path,
    work_dir: &Path,
    http: &reqwest::Client,
    tck: u64,
) -> anyhow::Result<FleetReport> {
    let dir = tempfile::Builder::new()
        .prefix("atoll-bench-clients-fleet-")
        .tempdir_in(work_dir)
        .with_context(|| format!("creating a directory under {}", work_dir.display()))?;
    let ProcessRegion {
        specs,
        mut servers,
        client_tls,
    } = spawn_process_region(REGION, bin, dir.path(), &[])?;
    eprintln!(
        "fleet: region-server pids {}",
        servers
            .iter()
            .map(|s| s.pid().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let result = fleet_scenario(args, &specs, &mut servers, client_tls, http, tck).await;
    if result.is_err() {
        for s in &servers {
            eprintln!("fleet: last lines of {}'s log:\n{}", s.name, s.log_tail(15));
        }
    }
    // Kill the servers before their directories go.
    drop(servers);
    drop(dir);
    result
}

async fn fleet_scenario(
    args: &ClientsBenchArgs,
    specs: &[ServerSpec],
    servers: &mut [ChildGuard],
    client_tls: ops_kit::tls::CertBundle,
    http: &reqwest::Client,
    tck: u64,
) -> anyhow::Result<FleetReport> {
    let leader = wait_for(args.timeout, "an agreed leader of 3 servers", || async {
        agreed_leader(http, specs).await
    })
    .await?;
    eprintln!("fleet: leader {}", specs[leader].name);

    let rpc: Vec<String> = specs.iter().map(|s| s.rpc.clone()).collect();
    let started = Instant::now();
    let fleet = SimulatedFleet::start(args.clients, rpc, client_tls, REGION)
        .await
        .context("starting the simulated fleet")?;
    let run = async {
        let deadline = Instant::now() + args.timeout;
        let mut last_print = Instant::now();
        loop {
            if let Some(exit) = servers.iter_mut().find_map(|s| s.exited()) {
                anyhow::bail!("a region server exited: {exit}");
            }
            let n = fleet.registered();
            if n == fleet.len() {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                last_print = Instant::now();
                eprintln!("fleet: {n} of {} registered", fleet.len());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out after {:?} waiting for every simulated node to register ({n} of {})",
                args.timeout,
                fleet.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let registered_after = started.elapsed();
        eprintln!(
            "fleet: {} nodes registered after {:.1} s; warm-up {:?}",
            fleet.len(),
            registered_after.as_secs_f64(),
            args.warmup
        );
        tokio::time::sleep(args.warmup).await;

        let leader = wait_for(args.timeout, "an agreed leader", || async {
            agreed_leader(http, specs).await
        })
        .await?;
        let leader_http = format!("http://{}", specs[leader].http);
        let nodes = get_json(http, &format!("{leader_http}/v1/nodes")).await?;
        let nodes_ready = nodes
            .as_array()
            .map(|a| a.iter().filter(|n| n["Status"] == "ready").count())
            .unwrap_or(0);

        eprintln!(
            "fleet: measuring {} for {:?}",
            specs[leader].name, args.idle
        );
        let me = std::process::id();
        let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
        let before: Vec<u64> = pids
            .iter()
            .map(|p| cpu_ticks(*p))
            .collect::<Result<_, _>>()?;
        let me0 = cpu_ticks(me)?;
        let hb0 = fleet.totals();
        let t0 = Instant::now();
        tokio::time::sleep(args.idle).await;
        let after: Vec<u64> = pids
            .iter()
            .map(|p| cpu_ticks(*p))
            .collect::<Result<_, _>>()?;
        let me1 = cpu_ticks(me)?;
        let hb1 = fleet.totals();
        let window = t0.elapsed();
        let leader_mem = memory(pids[leader])?;
        if let Some(exit) = servers.iter_mut().find_map(|s| s.exited()) {
            anyhow::bail!("a region server exited during the window: {exit}");
        }
        let leader_after = agreed_leader(http, specs).await;
        let usage = |i: usize| Usage::new(after[i].saturating_sub(before[i]), window, tck);
        Ok(FleetReport {
            clients: args.clients,
            registered_after,
            nodes_ready,
            leader: specs[leader].name.clone(),
            window,
            leader_cpu: usage(leader),
            leader_mem,
            followers: (0..specs.len())
                .filter(|i| *i != leader)
                .map(|i| (specs[i].name.clone(), usage(i)))
                .collect(),
            fleet_process: Usage::new(me1.saturating_sub(me0), window, tck),
            heartbeats: hb1.heartbeats.saturating_sub(hb0.heartbeats),
            heartbeat_failures: hb1
                .heartbeat_failures
                .saturating_sub(hb0.heartbeat_failures),
            leader_changed: leader_after != Some(leader),
        })
    };
    let result = run.await;
    fleet.shutdown().await;
    result
}

/// The slot of the leader every server names through `/v1/status/leader`,
/// if they all agree and it is one of them.
pub(crate) async fn agreed_leader(http: &reqwest::Client, specs: &[ServerSpec]) -> Option<usize> {
    let mut seen = None;
    for s in specs {
        let v = get_json(http, &format!("http://{}/v1/status/leader", s.http))
            .await
            .ok()?;
        let slot = specs
            .iter()
            .position(|x| Some(x.rpc.as_str()) == v.as_str())?;
        if seen.is_some_and(|l| l != slot) {
            return None;
        }
        seen = Some(slot);
    }
    seen
}

// ---------------------------------------------------------------------------
// Processes and /proc

/// A child process, killed (SIGKILL) and reaped when dropped.
pub(crate) struct ChildGuard {
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.into(),
            child,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, if it did.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} {status}", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` in `--bin-dir`, else next to this executable, else in its parent
/// directory (tests and examples run from `target/<profile>/deps` or
/// `.../examples`).
pub(crate) fn find_binary(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = bin_dir {
        candidates.push(d.join(name));
    } else {
        let exe = std::env::current_exe().context("locating this executable")?;
        if let Some(d) = exe.parent() {
            candidates.push(d.join(name));
            if let Some(p) = d.parent() {
                candidates.push(p.join(name));
            }
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no {name} binary at {} (build it with `cargo build --release -p client-agent \
                 -p region-server`, or pass --bin-dir)",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
}

/// CPU use over a window.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Percent of one core.
    pct: f64,
}

impl Usage {
    fn new(ticks: u64, window: Duration, tck: u64) -> Self {
        let cpu_secs = ticks as f64 / tck.max(1) as f64;
        Self {
            pct: 100.0 * cpu_secs / window.as_secs_f64().max(1e-9),
        }
    }
}

/// Memory of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    pub(crate) threads: u64,
}

/// utime + stime of every thread of `pid` (clock ticks).
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&text).with_context(|| format!("parsing {path}"))
}

/// utime (field 14) + stime (field 15) of a `/proc/<pid>/stat` line; the
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_status(&text))
}

/// `VmRSS`, `VmHWM` (kB) and `Threads` of `/proc/<pid>/status`.
fn parse_status(text: &str) -> Memory {
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let n = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        match key {
            "VmRSS" => m.rss_kib = n,
            "VmHWM" => m.hwm_kib = n,
            "Threads" => m.threads = n,
            _ => {}
        }
    }
    m
}

/// `sysconf(_SC_CLK_TCK)` as `getconf CLK_TCK` tells it; 100 (Linux's USER_HZ
/// everywhere in practice) when that fails.
pub(crate) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------
// HTTP and waiting

pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    resp.json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

/// Poll `check` every 500 ms until it returns `Some`, at most `timeout`.
pub(crate) async fn wait_for<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(v)) = tokio::time::timeout(REQUEST_TIMEOUT, check()).await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_after_the_command_name() {
        let line = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    731 269 0 0 20 0 9 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(1000));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_ticks(&own).is_some());
    }

    #[test]
    fn status_fields() {
        let m = parse_status("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t7\n");
        assert_eq!(
            m,
            Memory {
                rss_kib: 1024,
                hwm_kib: 2048,
                threads: 7
            }
        );
    }

    #[test]
    fn capacity_counts_the_tightest_resource() {
        let node = serde_json::json!({
            "NodeResources": {
                "Cpu": {"CpuShares": 5000},
                "Memory": {"MemoryMB": 24000},
                "Disk": {"DiskMB": 50000}
            },
            "ReservedResources": {"Memory": {"MemoryMB": 4000}}
        });
        let c = NodeCapacity::of(&node);
        assert_eq!(c.memory_mb, 20000);
        assert_eq!(c.allocs(), 2000);
    }

    #[test]
    fn the_job_validates() {
        let v = agent_job(2000);
        let job: proto::model::Job = serde_json::from_value(v["Job"].clone()).unwrap();
        let mut job = job;
        job.canonicalize();
        assert!(job.validate().is_ok(), "{:?}", job.validate());
    }

    #[test]
    fn heartbeat_expectations() {
        assert_eq!(expected_ttl(100), Duration::from_secs(10));
        assert_eq!(expected_ttl(1000), Duration::from_secs(20));
        let r = expected_heartbeat_rate(1000);
        assert!((70.0..80.0).contains(&r), "{r}");
    }
}
