//! `atoll bench c1m`: Nomad's C1M challenge at a chosen scale.
//!
//! Three `region-server` child processes form one region (`bootstrap_expect
//! = 3`, mTLS, encrypted gossip, Raft log in sqlite with fsync), so every
//! server's peak memory (`VmHWM` of `/proc/<pid>/status`) is its own.
//! `--nodes` simulated nodes register through the real `ClientService`
//! (`Register`, then `Heartbeat` within every TTL the leader hands out)
//! from this process; they do NOT watch or run their allocations: a
//! million mock tasks in one process is not what is measured here, and
//! Nomad's C1M measured placement too. Each node offers `--node-cpu` MHz,
//! `--node-memory` MB and 100 GB of disk.
//!
//! Once every node is `ready`, `--jobs` jobs of `--count` mock_driver
//! allocations each (`--cpu` MHz, `--memory` MB, 10 MB of ephemeral disk)
//! are submitted at once (`PUT /v1/jobs`, `--submit-concurrency` requests
//! in flight, spread over the three servers; followers forward to the
//! leader). The clock starts before the first request and stops when the
//! leader's `atoll_scheduler_placements_total` (counted by the plan
//! applier after the plan's Raft entry committed) has grown by `jobs x
//! count`. The leader's `/metrics` is read every `--poll`; each read that
//! follows new allocations recounts the allocation table (a scan), a small
//! cost the figures include.
//!
//! Printed: time to all placed and committed, placements/s and its ratio
//! to Nomad's published C1M (1,000,000 containers on 5,000 hosts in under
//! 5 minutes, about 3,750/s, 5 servers), peak RSS per server, Raft entries
//! and bytes appended on each server during the run, and the leader's
//! final counts (allocations in the state, evaluations in the broker).
//! Everything is on 127.0.0.1; child processes are killed and the data
//! directory removed when the benchmark ends, fails or is interrupted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use client_agent::driver::mock::MockDriver;
use client_agent::driver::Drivers;
use client_agent::fingerprint::{build_node, HostFacts, NodeIdentity};
use client_agent::rpc::{ChannelPool, NodeAuth, RpcClient};
use ops_kit::tls::CertBundle;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::bench_clients::{
    agreed_leader, clock_ticks, find_binary, get_json, load_average, memory, spawn_process_region,
    wait_for, ChildGuard, ProcessRegion, ServerSpec,
};

const REGION: &str = "c1m";
/// Nomad's C1M anchor: 1,000,000 containers on 5,000 hosts in under 5
/// minutes, about 3,750 placements/s (5 servers).
pub const NOMAD_C1M_RATE: f64 = 3750.0;
const GROUP_DISK_MB: i64 = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `atoll bench c1m`.
#[derive(Debug, Clone, Args)]
pub struct C1mArgs {
    /// Simulated nodes registered before the jobs are submitted.
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// Jobs submitted at once.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Allocations per job (one task group of this count).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Job type: batch or service.
    #[arg(long, default_value = "batch")]
    pub job_type: String,
    /// CPU of each allocation, MHz.
    #[arg(long, default_value_t = 20)]
    pub cpu: i64,
    /// Memory of each allocation, MB.
    #[arg(long, default_value_t = 10)]
    pub memory: i64,
    /// CPU of each node, MHz.
    #[arg(long, default_value_t = 8000)]
    pub node_cpu: i64,
    /// Memory of each node, MB.
    #[arg(long, default_value_t = 8192)]
    pub node_memory: i64,
    /// Job registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub submit_concurrency: usize,
    /// How often the leader's counters are read.
    #[arg(long, default_value = "1s", value_parser = crate::bench::parse_duration)]
    pub poll: Duration,
    /// Longest wait for any phase (leader, registration, placement).
    #[arg(long, default_value = "900s", value_parser = crate::bench::parse_duration)]
    pub timeout: Duration,
    /// Extra argument passed to every region-server (repeatable), e.g.
    /// `--server-arg=--num-schedulers --server-arg=2`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Directory holding the `region-server` binary (default: next to this
    /// executable, or its parent directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Parent of the temporary data directory (default /var/tmp).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the data directory (server logs) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// Run the benchmark: results on stdout, progress on stderr.
pub async fn run(args: C1mArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= 1 && args.jobs >= 1 && args.count >= 1,
        "--nodes, --jobs and --count must be at least 1"
    );
    anyhow::ensure!(
        matches!(args.job_type.as_str(), "batch" | "service"),
        "--job-type must be batch or service"
    );
    anyhow::ensure!(!args.poll.is_zero(), "--poll must be more than 0");
    let per_node = (args.node_cpu / args.cpu.max(1))
        .min(args.node_memory / args.memory.max(1))
        .min(100 * 1024 / GROUP_DISK_MB);
    let total = (args.jobs * args.count) as i64;
    anyhow::ensure!(
        per_node * args.nodes as i64 >= total,
        "{total} allocations do not fit: {} nodes hold {per_node} each",
        args.nodes
    );
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(crate::bench::default_work_dir);
    let bin = find_binary("region-server", args.bin_dir.as_deref())?;
    ops_kit::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(args.submit_concurrency.max(4))
        .build()
        .context("building the HTTP client")?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);

    println!("atoll bench c1m");
    println!(
        "  machine: {cpus} CPUs, load average {} at start",
        load_average()
    );
    println!(
        "  {} nodes ({} MHz, {} MB), {} {} jobs x {} allocations ({} MHz, {} MB) = {total}",
        args.nodes,
        args.node_cpu,
        args.node_memory,
        args.jobs,
        args.job_type,
        args.count,
        args.cpu,
        args.memory
    );
    let debug = bin.components().any(|c| c.as_os_str() == "debug");
    println!(
        "  servers: 3 region-server processes ({}){}{}",
        bin.display(),
        if debug {
            "  <- a DEBUG build: figures are not representative"
        } else {
            ""
        },
        if args.server_args.is_empty() {
            String::new()
        } else {
            format!(", extra args {:?}", args.server_args)
        }
    );

    let dir = tempfile::Builder::new()
        .prefix("atoll-bench-c1m-")
        .tempdir_in(&work_dir)
        .with_context(|| format!("creating a directory under {}", work_dir.display()))?;
    let ProcessRegion {
        specs,
        mut servers,
        client_tls,
    } = spawn_process_region(REGION, &bin, dir.path(), &args.server_args)?;
    let result = scenario(&args, &specs, &mut servers, client_tls, &http).await;
    match &result {
        Ok(r) => r.print(&args),
        Err(_) => {
            for s in &servers {
                eprintln!("c1m: last lines of {}'s log:\n{}", s.name, s.log_tail(15));
            }
        }
    }
    drop(servers);
    if args.keep {
        let kept = dir.keep();
        eprintln!("c1m: data and logs kept in {}", kept.display());
    }
    result.map(|_| ())
}

struct Report {
    registered_after: Duration,
    submitted_after: Duration,
    placed_after: Duration,
    placed: u64,
    leader: usize,
    names: Vec<String>,
    hwm_kib: Vec<u64>,
    rss_kib: Vec<u64>,
    appended_entries: Vec<u64>,
    appended_bytes: Vec<u64>,
    commit_delta: u64,
    state_allocs: u64,
    broker: BTreeMap<String, u64>,
    heartbeats: u64,
    heartbeat_failures: u64,
    cpu_secs: Vec<f64>,
}

impl Report {
    fn print(&self, args: &C1mArgs) {
        let secs = self.placed_after.as_secs_f64().max(1e-9);
        let rate = self.placed as f64 / secs;
        println!(
            "  {} nodes registered and ready after {:.1} s",
            args.nodes,
            self.registered_after.as_secs_f64()
        );
        println!(
            "  {} jobs accepted after {:.1} s",
            args.jobs,
            self.submitted_after.as_secs_f64()
        );
        println!(
            "  all {} allocations placed and committed after {:.1} s  (target < 120 s: {})",
            self.placed,
            secs,
            if secs < 120.0 { "met" } else { "MISSED" }
        );
        println!(
            "  placements/s {rate:.0}  = {:.2}x Nomad's C1M anchor ({NOMAD_C1M_RATE:.0}/s)",
            rate / NOMAD_C1M_RATE
        );
        for i in 0..self.names.len() {
            let role = if i == self.leader {
                "leader"
            } else {
                "follower"
            };
            let gib = self.hwm_kib[i] as f64 / (1024.0 * 1024.0);
            println!(
                "  {} ({role}): peak RSS {:.2} GiB (target < 4 GiB: {}), RSS at end {:.2} GiB, \
                 CPU {:.0} s; Raft log appended {} entries, {:.1} MiB ({:.0} bytes/placement)",
                self.names[i],
                gib,
                if gib < 4.0 { "met" } else { "MISSED" },
                self.rss_kib[i] as f64 / (1024.0 * 1024.0),
                self.cpu_secs[i],
                self.appended_entries[i],
                self.appended_bytes[i] as f64 / (1024.0 * 1024.0),
                self.appended_bytes[i] as f64 / self.placed.max(1) as f64
            );
        }
        println!(
            "  leader commit index advanced {} during the run; {} allocations in its state; \
             broker at the end: {}",
            self.commit_delta,
            self.state_allocs,
            self.broker
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "  heartbeats sent by the nodes: {} ({} failed)",
            self.heartbeats, self.heartbeat_failures
        );
    }
}

async fn scenario(
    args: &C1mArgs,
    specs: &[ServerSpec],
    servers: &mut [ChildGuard],
    client_tls: CertBundle,
    http: &reqwest::Client,
) -> anyhow::Result<Report> {
    let leader = wait_for(args.timeout, "an agreed leader of 3 servers", || async {
        agreed_leader(http, specs).await
    })
    .await?;
    eprintln!("c1m: leader {}", specs[leader].name);
    let leader_http = format!("http://{}", specs[leader].http);

    // Nodes: register, first heartbeat (ready), then heartbeat within TTL.
    let started = Instant::now();
    let rpc: Vec<String> = specs.iter().map(|s| s.rpc.clone()).collect();
    let pool = ChannelPool::new(&client_tls, REGION, args.nodes.div_ceil(250).max(1));
    let infos = Drivers::new().with(Arc::new(MockDriver::new())).infos();
    let host = HostFacts::simulated(args.node_cpu, 4, args.node_memory, 100 * 1024);
    let beats = Arc::new(AtomicU64::new(0));
    let beat_failures = Arc::new(AtomicU64::new(0));
    let mut nodes = JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    for i in 0..args.nodes {
        let name = format!("c1m-{i}");
        let mut h = host.clone();
        h.attributes.insert("unique.hostname".into(), name.clone());
        let who = NodeIdentity {
            id: proto::model::new_id(),
            secret_id: proto::model::new_id(),
            name,
            datacenter: "dc1".into(),
            node_pool: "default".into(),
            ..Default::default()
        };
        let node = build_node(&who, &h, &infos);
        let client = RpcClient::new(pool.clone(), i, rpc.clone());
        let (gate, ready, beats, fails) = (
            gate.clone(),
            ready_tx.clone(),
            beats.clone(),
            beat_failures.clone(),
        );
        nodes.spawn(async move {
            let auth = NodeAuth {
                node_id: who.id.clone(),
                secret_id: who.secret_id.clone(),
                index: 0,
            };
            let first = async {
                let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
                client.register(&node).await.map_err(|e| e.to_string())?;
                client.heartbeat(&auth).await.map_err(|e| e.to_string())
            }
            .await;
            let mut ttl = match first {
                Ok(r) => {
                    let _ = ready.send(Ok(()));
                    Duration::from_nanos(r.heartbeat_ttl.max(0) as u64)
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            beats.fetch_add(1, Ordering::Relaxed);
            loop {
                // Beat at 40-50 % of the TTL, as the agent does.
                let wait = ttl.mul_f64(0.4 + 0.1 * rand::random::<f64>());
                tokio::time::sleep(wait.max(Duration::from_millis(500))).await;
                match client.heartbeat(&auth).await {
                    Ok(r) => {
                        beats.fetch_add(1, Ordering::Relaxed);
                        ttl = Duration::from_nanos(r.heartbeat_ttl.max(0) as u64);
                    }
                    Err(_) => {
                        fails.fetch_add(1, Ordering::Relaxed);
                        ttl = Duration::from_secs(2);
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let mut ok = 0usize;
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => anyhow::bail!("a node failed to register: {e}"),
        }
        if ok.is_multiple_of(1000) {
            eprintln!("c1m: {ok} of {} nodes registered", args.nodes);
        }
        if ok == args.nodes {
            break;
        }
    }
    anyhow::ensure!(ok == args.nodes, "only {ok} nodes registered");
    let n = args.nodes;
    wait_for(args.timeout, "every node ready on the leader", || async {
        let v = get_json(http, &format!("{leader_http}/v1/nodes"))
            .await
            .ok()?;
        let ready = v
            .as_array()?
            .iter()
            .filter(|n| n["Status"] == "ready")
            .count();
        (ready >= n).then_some(())
    })
    .await?;
    let registered_after = started.elapsed();
    eprintln!(
        "c1m: {n} nodes ready after {:.1} s",
        registered_after.as_secs_f64()
    );

    // Baselines.
    let tck = clock_ticks() as f64;
    let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let cpu0: Vec<u64> = pids
        .iter()
        .map(|p| crate::bench_clients::cpu_ticks(*p))
        .collect::<Result<_, _>>()?;
    let mut base = Vec::new();
    for s in specs {
        base.push(scrape(http, &s.http).await?);
    }
    let placed0 = base[leader].sum("atoll_scheduler_placements_total");
    let commit0 = base[leader].sum("atoll_raft_commit_index");

    // Submit every job at once.
    let total = (args.jobs * args.count) as u64;
    let t0 = Instant::now();
    let mut submits = JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.submit_concurrency.max(1)));
    for j in 0..args.jobs {
        let url = format!("http://{}/v1/jobs", specs[j % specs.len()].http);
        let body = job(args, j);
        let (gate, http) = (gate.clone(), http.clone());
        submits.spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let resp = http
                .put(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("PUT {url}: {e}"))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let text = resp.text().await.unwrap_or_default();
                Err(format!("PUT {url}: {status} {}", text.trim()))
            }
        });
    }
    let poll_placed = || async {
        scrape(http, &specs[leader].http)
            .await
            .map(|m| m.sum("atoll_scheduler_placements_total") - placed0)
    };
    let mut submitted_after = None;
    let mut last_print = Instant::now();
    let deadline = t0 + args.timeout;
    let placed_after = loop {
        while let Some(r) = submits.try_join_next() {
            r.context("a submission task failed")?
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        if submits.is_empty() && submitted_after.is_none() {
            submitted_after = Some(t0.elapsed());
            eprintln!(
                "c1m: {} jobs accepted after {:.1} s",
                args.jobs,
                t0.elapsed().as_secs_f64()
            );
        }
        if let Some(exit) = servers.iter_mut().find_map(|s| s.exited()) {
            anyhow::bail!("a region server exited: {exit}");
        }
        let placed = poll_placed().await.unwrap_or(0);
        if placed >= total {
            break t0.elapsed();
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let mem: Vec<String> = pids
                .iter()
                .map(|p| {
                    memory(*p)
                        .map(|m| format!("{:.0}", m.rss_kib as f64 / 1024.0))
                        .unwrap_or_else(|_| "?".into())
                })
                .collect();
            eprintln!(
                "c1m: {:.0} s: {placed} of {total} placed ({:.0}/s); RSS MiB {}",
                t0.elapsed().as_secs_f64(),
                placed as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                mem.join(" / ")
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {:?}: {placed} of {total} placed",
            args.timeout
        );
        tokio::time::sleep(args.poll).await;
    };
    let submitted_after = submitted_after.unwrap_or(placed_after);
    eprintln!("c1m: all placed after {:.1} s", placed_after.as_secs_f64());
    let cpu1: Vec<u64> = pids
        .iter()
        .map(|p| crate::bench_clients::cpu_ticks(*p))
        .collect::<Result<_, _>>()?;
    let mems = pids
        .iter()
        .map(|p| memory(*p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut end = Vec::new();
    for s in specs {
        end.push(scrape(http, &s.http).await?);
    }
    let now_leader = agreed_leader(http, specs).await;
    anyhow::ensure!(
        now_leader == Some(leader),
        "the leader changed during the run; the figures are unreliable"
    );
    let broker = [
        "ready", "unacked", "pending", "delayed", "blocked", "failed",
    ]
    .iter()
    .map(|s| {
        (
            s.to_string(),
            end[leader].get("atoll_broker_evaluations", "state", s),
        )
    })
    .collect();
    nodes.abort_all();
    Ok(Report {
        registered_after,
        submitted_after,
        placed_after,
        placed: end[leader].sum("atoll_scheduler_placements_total") - placed0,
        leader,
        names: specs.iter().map(|s| s.name.clone()).collect(),
        hwm_kib: mems.iter().map(|m| m.hwm_kib).collect(),
        rss_kib: mems.iter().map(|m| m.rss_kib).collect(),
        appended_entries: (0..specs.len())
            .map(|i| {
                end[i].sum("atoll_raft_log_appended_entries_total")
                    - base[i].sum("atoll_raft_log_appended_entries_total")
            })
            .collect(),
        appended_bytes: (0..specs.len())
            .map(|i| {
                end[i].sum("atoll_raft_log_appended_bytes_total")
                    - base[i].sum("atoll_raft_log_appended_bytes_total")
            })
            .collect(),
        commit_delta: end[leader].sum("atoll_raft_commit_index") - commit0,
        state_allocs: end[leader].sum("atoll_state_allocations"),
        broker,
        heartbeats: beats.load(Ordering::Relaxed),
        heartbeat_failures: beat_failures.load(Ordering::Relaxed),
        cpu_secs: cpu0
            .iter()
            .zip(&cpu1)
            .map(|(a, b)| b.saturating_sub(*a) as f64 / tck.max(1.0))
            .collect(),
    })
}

/// Job `j` of the run.
fn job(args: &C1mArgs, j: usize) -> Value {
    let id = format!("c1m-{j:05}");
    serde_json::json!({
        "Job": {
            "ID": id,
            "Name": id,
            "Type": args.job_type,
            "Datacenters": ["dc1"],
            "TaskGroups": [{
                "Name": "g",
                "Count": args.count,
                "EphemeralDisk": { "SizeMB": GROUP_DISK_MB },
                "Tasks": [{
                    "Name": "t",
                    "Driver": "mock_driver",
                    "Config": { "run_for": "24h" },
                    "Resources": { "CPU": args.cpu, "MemoryMB": args.memory },
                    "LogConfig": { "MaxFiles": 1, "MaxFileSizeMB": 1 }
                }]
            }]
        }
    })
}

/// A Prometheus text exposition, parsed into samples.
struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

async fn scrape(http: &reqwest::Client, addr: &str) -> anyhow::Result<Samples> {
    let url = format!("http://{addr}/metrics");
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let text = resp.text().await.with_context(|| format!("GET {url}"))?;
    Ok(Samples::parse(&text))
}

impl Samples {
    fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            out.push((name.to_string(), labels, value));
        }
        Self(out)
    }

    /// The sum of every sample of `name` (0 when absent).
    fn sum(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
            .sum::<f64>()
            .max(0.0) as u64
    }

    /// The sample of `name` whose `label` is `value` (0 when absent).
    fn get(&self, name: &str, label: &str, value: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, l, _)| n == name && l.get(label).map(String::as_str) == Some(value))
            .map(|(_, _, v)| v.max(0.0) as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse() {
        let s = Samples::parse(
            "# HELP x y\n# TYPE x counter\natoll_x_total{region=\"r\"} 12\n\
             atoll_b{region=\"r\",state=\"ready\"} 3\natoll_b{region=\"r\",state=\"blocked\"} 4\n\
             bare 1e3\n",
        );
        assert_eq!(s.sum("atoll_x_total"), 12);
        assert_eq!(s.sum("atoll_b"), 7);
        assert_eq!(s.get("atoll_b", "state", "blocked"), 4);
        assert_eq!(s.get("atoll_b", "state", "failed"), 0);
        assert_eq!(s.sum("bare"), 1000);
        assert_eq!(s.sum("missing"), 0);
    }

    #[test]
    fn the_job_validates() {
        let args = C1mArgs {
            nodes: 1,
            jobs: 1,
            count: 1000,
            job_type: "batch".into(),
            cpu: 20,
            memory: 10,
            node_cpu: 8000,
            node_memory: 8192,
            submit_concurrency: 1,
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            server_args: vec![],
            bin_dir: None,
            work_dir: None,
            keep: false,
        };
        let v = job(&args, 7);
        let mut job: proto::model::Job = serde_json::from_value(v["Job"].clone()).unwrap();
        job.canonicalize();
        assert!(job.validate().is_ok(), "{:?}", job.validate());
        assert_eq!(job.id, "c1m-00007");
        assert_eq!(job.task_groups[0].count, 1000);
    }
}
