//! `atoll bench gossip`: the WAN gossip pool against HashiCorp Serf, N members
//! each, on loopback, one system after the other in the same run:
//!
//! 1. **Join convergence**: every member is started alone, then at t0 every
//!    member but the first is told to join the first; the time until every
//!    member lists all N as alive.
//! 2. **Quiet bandwidth**: bytes (and datagrams) each member sends per second
//!    once the pool is settled, over `--quiet-window`.
//! 3. **Failure detection**: one member is killed (Atoll: its task aborted,
//!    no leave; Serf: SIGKILL); the time until the first, the median and the
//!    last of the others list it as failed.
//!
//! Atoll members run in this process and are observed directly (10 ms
//! polling); Serf agents are child processes observed with `serf members
//! -format json` (the round time is printed as the resolution). Both pools
//! encrypt (AES-256-GCM). Atoll's bytes come from its own metrics; Serf's from
//! memberlist's `memberlist.udp.sent` and `memberlist.tcp.sent` counters,
//! received on a statsd socket per agent.
//!
//! `serf agent` (0.8/0.9 as packaged by Debian) has no flags or config keys
//! for probe interval, probe timeout or suspicion multiplier, only the
//! profiles `lan`, `wan` and `local`: the profile closest to the requested
//! timings is used and printed, and Atoll runs with the requested timings
//! plus that profile's gossip interval, fanout and push/pull interval.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ops_kit::gossip::{GossipConfig, GossipPool, Keyring, MemberInfo, MemberStatus};
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};

/// Flags of `atoll bench gossip`.
#[derive(Debug, Clone, Args)]
pub struct GossipBenchArgs {
    /// Members in each pool.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// How often each member probes a random other (memberlist ProbeInterval).
    #[arg(long, default_value = "1s", value_parser = crate::bench::parse_duration)]
    pub probe_interval: Duration,
    /// How long a probe waits before going indirect (memberlist ProbeTimeout).
    #[arg(long, default_value = "500ms", value_parser = crate::bench::parse_duration)]
    pub probe_timeout: Duration,
    /// Suspicion multiplier: suspicion lasts mult x log10(N) x probe interval.
    #[arg(long, default_value_t = 4.0)]
    pub suspicion_mult: f64,
    /// The serf binary (Debian: `apt-get install serf`).
    #[arg(long, default_value = "serf")]
    pub serf_bin: String,
    /// Skip Serf: Atoll figures only.
    #[arg(long)]
    pub no_serf: bool,
    /// Window over which steady-state bandwidth is measured.
    #[arg(long, default_value = "20s", value_parser = crate::bench::parse_duration)]
    pub quiet_window: Duration,
    /// Longest wait for any one phase (join, detection) before giving up on it.
    #[arg(long, default_value = "120s", value_parser = crate::bench::parse_duration)]
    pub phase_timeout: Duration,
}

/// A memberlist timing profile as `serf agent -profile` selects it.
#[derive(Debug)]
struct SerfProfile {
    name: &'static str,
    probe_interval: Duration,
    probe_timeout: Duration,
    suspicion_mult: f64,
    gossip_interval: Duration,
    gossip_nodes: usize,
    push_pull: Duration,
}

/// memberlist's DefaultLANConfig, DefaultWANConfig and DefaultLocalConfig.
const PROFILES: [SerfProfile; 3] = [
    SerfProfile {
        name: "lan",
        probe_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_millis(500),
        suspicion_mult: 4.0,
        gossip_interval: Duration::from_millis(200),
        gossip_nodes: 3,
        push_pull: Duration::from_secs(30),
    },
    SerfProfile {
        name: "wan",
        probe_interval: Duration::from_secs(5),
        probe_timeout: Duration::from_secs(3),
        suspicion_mult: 6.0,
        gossip_interval: Duration::from_millis(500),
        gossip_nodes: 4,
        push_pull: Duration::from_secs(60),
    },
    SerfProfile {
        name: "local",
        probe_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_millis(200),
        suspicion_mult: 3.0,
        gossip_interval: Duration::from_millis(100),
        gossip_nodes: 3,
        push_pull: Duration::from_secs(15),
    },
];

fn closest_profile(args: &GossipBenchArgs) -> &'static SerfProfile {
    let dist = |p: &SerfProfile| {
        let r = |a: f64, b: f64| (a / b).ln().abs();
        r(
            args.probe_interval.as_secs_f64(),
            p.probe_interval.as_secs_f64(),
        ) + r(
            args.probe_timeout.as_secs_f64(),
            p.probe_timeout.as_secs_f64(),
        ) + r(args.suspicion_mult, p.suspicion_mult)
    };
    PROFILES
        .iter()
        .min_by(|a, b| dist(a).total_cmp(&dist(b)))
        .expect("three profiles")
}

fn is_exact(args: &GossipBenchArgs, p: &SerfProfile) -> bool {
    args.probe_interval == p.probe_interval
        && args.probe_timeout == p.probe_timeout
        && (args.suspicion_mult - p.suspicion_mult).abs() < 1e-9
}

/// What one system measured.
#[derive(Debug, Default)]
struct Measured {
    join_all: Option<Duration>,
    detect: Vec<Option<Duration>>,
    bytes_per_member_s: Option<f64>,
    packets_per_member_s: Option<f64>,
    /// How often the members' views were read.
    resolution: Duration,
}

impl Measured {
    fn detected(&self) -> Vec<Duration> {
        let mut d: Vec<Duration> = self.detect.iter().flatten().copied().collect();
        d.sort();
        d
    }

    fn detect_first(&self) -> Option<Duration> {
        self.detected().first().copied()
    }

    fn detect_median(&self) -> Option<Duration> {
        let d = self.detected();
        // Median over every observer; undefined until half of them saw it.
        (d.len() * 2 > self.detect.len()).then(|| d[self.detect.len() / 2])
    }

    fn detect_all(&self) -> Option<Duration> {
        if !self.detect.is_empty() && self.detect.iter().all(Option::is_some) {
            self.detected().last().copied()
        } else {
            None
        }
    }
}

/// Run the benchmark and print its table on stdout (progress on stderr).
pub async fn run(args: GossipBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (3..=500).contains(&args.members),
        "--members must be between 3 and 500"
    );
    anyhow::ensure!(
        !args.probe_timeout.is_zero() && args.probe_timeout < args.probe_interval,
        "--probe-timeout must be above 0 and below --probe-interval"
    );
    anyhow::ensure!(
        args.suspicion_mult.is_finite() && args.suspicion_mult > 0.0,
        "--suspicion-mult must be positive"
    );
    anyhow::ensure!(
        !args.quiet_window.is_zero(),
        "--quiet-window must be above 0"
    );
    let profile = closest_profile(&args);
    let serf_version = if args.no_serf {
        None
    } else {
        Some(serf_version(&args.serf_bin)?)
    };

    println!(
        "atoll bench gossip: {} members per pool, loopback",
        args.members
    );
    println!(
        "  atoll: probe {:?}, probe timeout {:?}, suspicion x{} (suspect -> failed after {:.2?}), \
         gossip {:?} x{}, push/pull {:?}, AES-256-GCM",
        args.probe_interval,
        args.probe_timeout,
        args.suspicion_mult,
        ops_kit::gossip::suspicion_time(
            args.members as u32,
            args.probe_interval,
            args.suspicion_mult
        ),
        profile.gossip_interval,
        profile.gossip_nodes,
        profile.push_pull,
    );
    match &serf_version {
        Some(v) => {
            println!(
                "  serf:  {} ({v}), profile {} (probe {:?}, probe timeout {:?}, suspicion x{}, \
                 gossip {:?} x{}, push/pull {:?}), AES-256-GCM",
                args.serf_bin,
                profile.name,
                profile.probe_interval,
                profile.probe_timeout,
                profile.suspicion_mult,
                profile.gossip_interval,
                profile.gossip_nodes,
                profile.push_pull,
            );
            if !is_exact(&args, profile) {
                println!(
                    "  NOTE: serf agent cannot set probe interval/timeout/suspicion directly; \
                     profile {} is the closest to the requested timings, so the two pools \
                     do NOT run identical timings",
                    profile.name
                );
            }
        }
        None => println!("  serf:  skipped (--no-serf)"),
    }
    println!();

    let atoll = bench_atoll(&args, profile).await?;
    let serf = match serf_version {
        Some(_) => Some(bench_serf(&args, profile).await?),
        None => None,
    };
    print_table(&args, &atoll, serf.as_ref());
    Ok(())
}

fn serf_version(bin: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running `{bin} version` (install serf, e.g. `apt-get install -y serf`, or pass --no-serf)")
        })?;
    anyhow::ensure!(
        out.status.success(),
        "`{bin} version` failed: {}",
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

// ---------------------------------------------------------------- Atoll --

/// Aborts every member when dropped (errors, Ctrl-C).
struct AtollPool(Vec<GossipPool>);

impl Drop for AtollPool {
    fn drop(&mut self) {
        for p in &self.0 {
            p.kill();
        }
    }
}

fn alive(pool: &GossipPool) -> usize {
    pool.members()
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .count()
}

async fn bench_atoll(args: &GossipBenchArgs, profile: &SerfProfile) -> anyhow::Result<Measured> {
    let n = args.members;
    let ms = |d: Duration| d.as_millis().max(1) as u64;
    let cfg = GossipConfig {
        bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        probe_period_ms: Some(ms(args.probe_interval)),
        probe_rtt_ms: Some(ms(args.probe_timeout)),
        suspicion_mult: Some(args.suspicion_mult),
        gossip_interval_ms: Some(ms(profile.gossip_interval)),
        gossip_fanout: Some(profile.gossip_nodes),
        push_pull_interval_ms: Some(ms(profile.push_pull)),
        join_retry_initial_ms: 200,
        join_retry_max_ms: 2_000,
        join_timeout_ms: ms(args.phase_timeout),
        ..GossipConfig::default()
    };
    let key = Keyring::generate_key();
    let mut pools = AtollPool(Vec::with_capacity(n));
    for i in 0..n {
        let mut me = MemberInfo::server(&format!("n{i}"), ["r0", "r1", "r2"][i % 3]);
        me.rpc_addr = "127.0.0.1:4647".into();
        me.http_addr = "127.0.0.1:4646".into();
        let pool = GossipPool::start(cfg.clone(), me, Keyring::new(&key)?, None)
            .await
            .context("starting an atoll gossip member")?;
        pools.0.push(pool);
    }
    eprintln!("atoll: {n} members started");
    let poll = Duration::from_millis(10);
    let mut m = Measured {
        resolution: poll,
        ..Measured::default()
    };

    // 1. Join convergence.
    let seed = pools.0[0].local_addr();
    let t0 = Instant::now();
    for p in &pools.0[1..] {
        let p = p.clone();
        tokio::spawn(async move {
            if let Err(e) = p.join(&[seed]).await {
                eprintln!("atoll: {} could not join: {e}", p.local_member().name);
            }
        });
    }
    let deadline = t0 + args.phase_timeout;
    while Instant::now() < deadline {
        if pools.0.iter().all(|p| alive(p) == n) {
            m.join_all = Some(t0.elapsed());
            break;
        }
        sleep(poll).await;
    }
    eprintln!("atoll: join convergence {}", fmt_opt(m.join_all));
    if m.join_all.is_none() {
        return Ok(m);
    }

    // 2. Quiet bandwidth, after the join traffic has drained.
    sleep(settle_time(args)).await;
    let before: Vec<_> = pools.0.iter().map(GossipPool::stats).collect();
    let tq = Instant::now();
    sleep(args.quiet_window).await;
    let secs = tq.elapsed().as_secs_f64();
    let after: Vec<_> = pools.0.iter().map(GossipPool::stats).collect();
    let bytes: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.bytes_out - b.bytes_out)
        .sum();
    let packets: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.packets_out - b.packets_out)
        .sum();
    m.bytes_per_member_s = Some(bytes as f64 / n as f64 / secs);
    m.packets_per_member_s = Some(packets as f64 / n as f64 / secs);
    eprintln!(
        "atoll: {:.0} B/s per member over {secs:.1} s",
        m.bytes_per_member_s.unwrap_or_default()
    );

    // 3. Failure detection.
    let victim = n / 2;
    let name = pools.0[victim].local_member().name.clone();
    let observers: Vec<GossipPool> = pools
        .0
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, p)| p.clone())
        .collect();
    m.detect = vec![None; observers.len()];
    pools.0[victim].kill();
    let tk = Instant::now();
    let deadline = tk + args.phase_timeout;
    while Instant::now() < deadline && m.detect.iter().any(Option::is_none) {
        for (slot, p) in m.detect.iter_mut().zip(&observers) {
            if slot.is_none() && p.member(&name).map(|x| x.status) == Some(MemberStatus::Failed) {
                *slot = Some(tk.elapsed());
            }
        }
        sleep(poll).await;
    }
    eprintln!(
        "atoll: {name} seen failed by all in {}",
        fmt_opt(m.detect_all())
    );
    Ok(m)
}

/// Time for join traffic (retransmissions of the join updates) to drain
/// before the quiet window: a few gossip and probe periods.
fn settle_time(args: &GossipBenchArgs) -> Duration {
    (args.probe_interval * 3).max(Duration::from_secs(3))
}

// ----------------------------------------------------------------- Serf --

struct Agent {
    name: String,
    rpc: String,
    bind: String,
    log: PathBuf,
    child: Child,
    /// memberlist bytes sent (UDP + TCP), from statsd.
    sent_bytes: Arc<AtomicU64>,
    /// memberlist datagrams sent, from statsd.
    sent_packets: Arc<AtomicU64>,
}

/// Serf agents as child processes. Dropping kills them (SIGKILL), waits for
/// them and removes their directory.
struct SerfPool {
    agents: Vec<Agent>,
    dir: tempfile::TempDir,
    statsd_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SerfPool {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.child.kill();
            let _ = a.child.wait();
        }
        for t in &self.statsd_tasks {
            t.abort();
        }
    }
}

/// Receive go-metrics statsd lines (`serf-agent.memberlist.udp.sent:149.000000|c`)
/// and add up memberlist's sent bytes and datagrams.
async fn statsd_listener(
    socket: tokio::net::UdpSocket,
    bytes: Arc<AtomicU64>,
    packets: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = socket.recv(&mut buf).await {
        let text = String::from_utf8_lossy(&buf[..n]);
        for line in text.lines() {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            let udp = name.ends_with("memberlist.udp.sent");
            if !udp && !name.ends_with("memberlist.tcp.sent") {
                continue;
            }
            let value = rest.split('|').next().unwrap_or("0");
            if let Ok(v) = value.parse::<f64>() {
                bytes.fetch_add(v as u64, Ordering::Relaxed);
                if udp {
                    packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    format!("--- {} ---\n{tail}", path.display())
}

impl SerfPool {
    async fn start(args: &GossipBenchArgs, profile: &SerfProfile) -> anyhow::Result<Self> {
        let n = args.members;
        let dir = tempfile::Builder::new()
            .prefix("atoll-bench-gossip-")
            .tempdir()
            .context("creating a directory for the serf agents")?;
        let ports = crate::bench::free_ports(2 * n)?;
        let key = Keyring::generate_key();
        let mut pool = Self {
            agents: Vec::with_capacity(n),
            dir,
            statsd_tasks: Vec::with_capacity(n),
        };
        for i in 0..n {
            let name = format!("n{i}");
            let statsd = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let statsd_addr = statsd.local_addr()?;
            let sent_bytes = Arc::new(AtomicU64::new(0));
            let sent_packets = Arc::new(AtomicU64::new(0));
            pool.statsd_tasks.push(tokio::spawn(statsd_listener(
                statsd,
                sent_bytes.clone(),
                sent_packets.clone(),
            )));
            let config = pool.dir.path().join(format!("{name}.json"));
            std::fs::write(
                &config,
                serde_json::json!({
                    "profile": profile.name,
                    "encrypt_key": key,
                    "statsd_addr": statsd_addr.to_string(),
                    "log_level": "warn",
                })
                .to_string(),
            )?;
            let log = pool.dir.path().join(format!("{name}.log"));
            let log_file =
                File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let bind = format!("127.0.0.1:{}", ports[2 * i]);
            let rpc = format!("127.0.0.1:{}", ports[2 * i + 1]);
            let child = Command::new(&args.serf_bin)
                .arg("agent")
                .arg(format!("-node={name}"))
                .arg(format!("-bind={bind}"))
                .arg(format!("-rpc-addr={rpc}"))
                .arg(format!("-config-file={}", config.display()))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("starting `{} agent` {name}", args.serf_bin))?;
            pool.agents.push(Agent {
                name,
                rpc,
                bind,
                log,
                child,
                sent_bytes,
                sent_packets,
            });
        }
        Ok(pool)
    }

    /// Wait until every agent's RPC answers.
    async fn wait_ready(&mut self, bin: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut ready = vec![false; self.agents.len()];
        loop {
            for (i, a) in self.agents.iter_mut().enumerate() {
                if let Some(status) = a.child.try_wait()? {
                    anyhow::bail!(
                        "serf agent {} exited ({status})\n{}",
                        a.name,
                        log_tail(&a.log)
                    );
                }
                if !ready[i] {
                    ready[i] = serf_members(bin, &a.rpc, None).await.is_ok();
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waiting: Vec<&str> = self
                    .agents
                    .iter()
                    .zip(&ready)
                    .filter(|(_, r)| !**r)
                    .map(|(a, _)| a.name.as_str())
                    .collect();
                anyhow::bail!("serf agents not answering after {within:?}: {waiting:?}");
            }
            sleep(Duration::from_millis(100)).await;
        }
    }
}

/// (name, status) of each member an agent lists.
type Listing = [(String, String)];

/// Whether an agent's listing shows what a phase waits for.
type Check = fn(&Listing, usize, Option<&str>) -> bool;

/// `serf members -format json` on one agent: (name, status) pairs.
async fn serf_members(
    bin: &str,
    rpc: &str,
    name: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("members")
        .arg(format!("-rpc-addr={rpc}"))
        .arg("-format=json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(name) = name {
        cmd.arg(format!("-name={name}"));
    }
    let out = tokio::time::timeout(Duration::from_secs(5), cmd.output())
        .await
        .context("serf members timed out")??;
    anyhow::ensure!(out.status.success(), "serf members: {}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or_default().to_string(),
                        m["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Ask each pending agent (at most 8 at a time) whether `done` holds for its
/// member list; returns the indices for which it does.
async fn poll_agents(
    bin: &str,
    agents: &[(usize, String)],
    name: Option<&str>,
    done: Check,
    n: usize,
) -> Vec<usize> {
    let limit = Arc::new(Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, rpc) in agents {
        let (i, rpc, bin, name) = (*i, rpc.clone(), bin.to_string(), name.map(String::from));
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            let members = serf_members(&bin, &rpc, name.as_deref()).await.ok()?;
            done(&members, n, name.as_deref()).then_some(i)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(i)) = r {
            out.push(i);
        }
    }
    out
}

fn all_alive(members: &Listing, n: usize, _: Option<&str>) -> bool {
    members.iter().filter(|(_, s)| s == "alive").count() == n
}

fn victim_failed(members: &Listing, _: usize, name: Option<&str>) -> bool {
    members
        .iter()
        .any(|(m, s)| Some(m.as_str()) == name && s == "failed")
}

async fn bench_serf(args: &GossipBenchArgs, profile: &SerfProfile) -> anyhow::Result<Measured> {
    let n = args.members;
    let bin = args.serf_bin.as_str();
    let mut pool = SerfPool::start(args, profile).await?;
    pool.wait_ready(bin, Duration::from_secs(60)).await?;
    eprintln!(
        "serf: {n} agents started under {}",
        pool.dir.path().display()
    );
    let mut m = Measured::default();
    let mut rounds = 0u32;
    let mut polling = Duration::ZERO;

    // 1. Join convergence: `serf join` on every agent but the first, at once.
    let seed = pool.agents[0].bind.clone();
    let t0 = Instant::now();
    let limit = Arc::new(Semaphore::new(16));
    let mut joins = tokio::task::JoinSet::new();
    for a in &pool.agents[1..] {
        let (rpc, seed, bin, limit) = (a.rpc.clone(), seed.clone(), bin.to_string(), limit.clone());
        joins.spawn(async move {
            let _permit = limit.acquire_owned().await;
            tokio::process::Command::new(bin)
                .arg("join")
                .arg(format!("-rpc-addr={rpc}"))
                .arg(seed)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
        });
    }
    let deadline = t0 + args.phase_timeout;
    let mut pending: Vec<(usize, String)> = pool
        .agents
        .iter()
        .enumerate()
        .map(|(i, a)| (i, a.rpc.clone()))
        .collect();
    while Instant::now() < deadline && !pending.is_empty() {
        let tr = Instant::now();
        let done = poll_agents(bin, &pending, None, all_alive, n).await;
        rounds += 1;
        polling += tr.elapsed();
        pending.retain(|(i, _)| !done.contains(i));
    }
    while joins.join_next().await.is_some() {}
    if pending.is_empty() {
        m.join_all = Some(t0.elapsed());
    }
    eprintln!("serf: join convergence {}", fmt_opt(m.join_all));
    if m.join_all.is_none() {
        m.resolution = polling / rounds.max(1);
        return Ok(m);
    }

    // 2. Quiet bandwidth.
    sleep(settle_time(args)).await;
    let read = |pool: &SerfPool| -> (u64, u64) {
        pool.agents.iter().fold((0, 0), |(b, p), a| {
            (
                b + a.sent_bytes.load(Ordering::Relaxed),
                p + a.sent_packets.load(Ordering::Relaxed),
            )
        })
    };
    let (b0, p0) = read(&pool);
    let tq = Instant::now();
    sleep(args.quiet_window).await;
    let secs = tq.elapsed().as_secs_f64();
    let (b1, p1) = read(&pool);
    if b1 > b0 {
        m.bytes_per_member_s = Some((b1 - b0) as f64 / n as f64 / secs);
        m.packets_per_member_s = Some((p1 - p0) as f64 / n as f64 / secs);
    }
    eprintln!(
        "serf: {} B/s per member over {secs:.1} s",
        m.bytes_per_member_s
            .map(|b| format!("{b:.0}"))
            .unwrap_or_else(|| "n/a (no statsd data)".into())
    );

    // 3. Failure detection: SIGKILL one agent.
    let victim = n / 2;
    let name = pool.agents[victim].name.clone();
    pool.agents[victim]
        .child
        .kill()
        .context("killing a serf agent")?;
    let tk = Instant::now();
    let _ = pool.agents[victim].child.wait();
    let observers: Vec<(usize, String)> = pool
        .agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(i, a)| (i, a.rpc.clone()))
        .collect();
    let mut detect: std::collections::BTreeMap<usize, Option<Duration>> =
        observers.iter().map(|(i, _)| (*i, None)).collect();
    let mut pending = observers;
    let deadline = tk + args.phase_timeout;
    while Instant::now() < deadline && !pending.is_empty() {
        let tr = Instant::now();
        let done = poll_agents(bin, &pending, Some(&name), victim_failed, n).await;
        rounds += 1;
        polling += tr.elapsed();
        let at = tk.elapsed();
        for i in &done {
            detect.insert(*i, Some(at));
        }
        pending.retain(|(i, _)| !done.contains(i));
    }
    m.detect = detect.into_values().collect();
    m.resolution = polling / rounds.max(1);
    eprintln!(
        "serf: {name} seen failed by all in {}",
        fmt_opt(m.detect_all())
    );
    Ok(m)
}

// ---------------------------------------------------------------- output --

fn fmt_opt(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "timeout".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

#[derive(Clone, Copy)]
enum Unit {
    Secs,
    Bytes,
    Rate,
}

impl Unit {
    fn fmt(self, v: Option<f64>) -> String {
        match (self, v) {
            (Unit::Secs, Some(v)) => format!("{v:.2} s"),
            (Unit::Secs, None) => "timeout".into(),
            (Unit::Bytes, Some(v)) => format!("{v:.0}"),
            (Unit::Rate, Some(v)) => format!("{v:.1}"),
            (_, None) => "n/a".into(),
        }
    }
}

fn print_table(args: &GossipBenchArgs, atoll: &Measured, serf: Option<&Measured>) {
    let rows = [
        (
            "join convergence (all see all)",
            secs(atoll.join_all),
            serf.and_then(|s| secs(s.join_all)),
            Unit::Secs,
        ),
        (
            "failure seen by first member",
            secs(atoll.detect_first()),
            serf.and_then(|s| secs(s.detect_first())),
            Unit::Secs,
        ),
        (
            "failure seen by median member",
            secs(atoll.detect_median()),
            serf.and_then(|s| secs(s.detect_median())),
            Unit::Secs,
        ),
        (
            "failure seen by all members",
            secs(atoll.detect_all()),
            serf.and_then(|s| secs(s.detect_all())),
            Unit::Secs,
        ),
        (
            "quiet: bytes sent /member/s",
            atoll.bytes_per_member_s,
            serf.and_then(|s| s.bytes_per_member_s),
            Unit::Bytes,
        ),
        (
            "quiet: datagrams sent /member/s",
            atoll.packets_per_member_s,
            serf.and_then(|s| s.packets_per_member_s),
            Unit::Rate,
        ),
    ];
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>11}",
        "", "atoll", "serf", "atoll/serf"
    );
    for (label, a, s, unit) in rows {
        let serf_cell = if serf.is_some() {
            unit.fmt(s)
        } else {
            "-".into()
        };
        println!(
            "{label:<34} {:>12} {:>12} {:>11}",
            unit.fmt(a),
            serf_cell,
            ratio(a, s)
        );
    }
    println!();
    println!(
        "members: {} per pool; killed member: n{}; quiet window {:?}",
        args.members,
        args.members / 2,
        args.quiet_window
    );
    match serf {
        Some(s) => println!(
            "resolution: atoll views read every {:?}; serf views read with `serf members` \
             in rounds of {:.0} ms on average",
            atoll.resolution,
            s.resolution.as_secs_f64() * 1e3
        ),
        None => println!("resolution: atoll views read every {:?}", atoll.resolution),
    }
    println!(
        "notes: lower is better everywhere. Serf's suspicion timeout starts at 6x the \
         minimum and shrinks as other members confirm the suspicion (Lifeguard); Atoll's \
         (foca's) is fixed at the minimum. Serf also piggybacks network coordinates on \
         its probes, which Atoll does not have. Bytes are UDP (and, for serf, TCP \
         push/pull) payloads including each system's encryption envelope."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pi: u64, pt: u64, mult: f64) -> GossipBenchArgs {
        GossipBenchArgs {
            members: 5,
            probe_interval: Duration::from_millis(pi),
            probe_timeout: Duration::from_millis(pt),
            suspicion_mult: mult,
            serf_bin: "serf".into(),
            no_serf: true,
            quiet_window: Duration::from_secs(1),
            phase_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn profiles_match_memberlist() {
        assert_eq!(closest_profile(&args(1000, 500, 4.0)).name, "lan");
        assert!(is_exact(&args(1000, 500, 4.0), &PROFILES[0]));
        assert_eq!(closest_profile(&args(5000, 3000, 6.0)).name, "wan");
        assert_eq!(closest_profile(&args(1000, 200, 3.0)).name, "local");
        assert_eq!(closest_profile(&args(4000, 2000, 5.0)).name, "wan");
        assert!(!is_exact(&args(4000, 2000, 5.0), &PROFILES[1]));
    }

    #[test]
    fn detection_summaries() {
        let s = |ms: u64| Some(Duration::from_millis(ms));
        let m = Measured {
            detect: vec![s(300), s(100), s(200), None],
            ..Measured::default()
        };
        assert_eq!(m.detect_first(), s(100));
        assert_eq!(m.detect_median(), s(300));
        assert_eq!(m.detect_all(), None);
        let m = Measured {
            detect: vec![s(300), s(100), s(200)],
            ..Measured::default()
        };
        assert_eq!(m.detect_median(), s(200));
        assert_eq!(m.detect_all(), s(300));
    }

    #[test]
    fn statsd_lines_are_summed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let (bytes, packets) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let task = tokio::spawn(statsd_listener(socket, bytes.clone(), packets.clone()));
            let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let lines = "serf-agent.memberlist.udp.sent:149.000000|c\n\
                         serf-agent.memberlist.tcp.sent:215.000000|c\n\
                         serf-agent.memberlist.udp.received:150.000000|c\n\
                         serf-agent.memberlist.udp.sent:61.000000|c\n";
            tx.send_to(lines.as_bytes(), addr).await.unwrap();
            for _ in 0..100 {
                if bytes.load(Ordering::Relaxed) == 425 {
                    break;
                }
                sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(bytes.load(Ordering::Relaxed), 149 + 215 + 61);
            assert_eq!(packets.load(Ordering::Relaxed), 2);
            task.abort();
        });
    }
}
