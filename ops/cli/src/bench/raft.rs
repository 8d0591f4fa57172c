//! `atoll bench raft`: committed, durable, replicated writes per second and
//! their latency on a 3-server Atoll region and on a 3-member etcd cluster,
//! measured one after the other in the same run on the same machine.
//!
//! Both systems run on loopback with their data on disk (Atoll's sqlite log
//! with `synchronous=FULL`, etcd's WAL with its default fsync), both are
//! written to at their leader directly, and both answer a write only once it
//! is committed by a majority and applied. The systems are measured one at a
//! time (Atoll first), so neither competes with the other for CPU or disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::atoll_region::{self, AtollRegion};
use super::etcd::{self, EtcdCluster};
use super::load::{self, LoadResult};

/// Flags of `atoll bench raft`.
#[derive(Debug, Clone, Args)]
pub struct RaftArgs {
    /// Concurrent clients, one measurement per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Measured time per concurrency and system (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub warmup: Duration,
    /// Size of each write: the job JSON for Atoll (padded in its `Meta`),
    /// the value for etcd.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// The etcd binary (3.4 or later).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// Skip etcd (for machines without it): Atoll figures only.
    #[arg(long)]
    pub no_etcd: bool,
    /// Run the three Atoll servers on the CLI's own runtime, shared with the
    /// load generator, instead of one runtime per server (as if each were
    /// its own process, like etcd's members).
    #[arg(long)]
    pub shared_runtime: bool,
    /// Parent of the temporary data directories; must be on a real disk
    /// (default /var/tmp, else the current directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

const MAX_CLIENTS: usize = 1024;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Between Atoll measurements: how long the applied index must stay put, and
/// how long to wait for that at most.
const SETTLE_QUIET: Duration = Duration::from_secs(2);
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Run the benchmark and print its table on stdout (progress on stderr).
pub async fn run(args: RaftArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.clients.is_empty(),
        "--clients needs at least one value"
    );
    anyhow::ensure!(
        args.clients.iter().all(|&c| (1..=MAX_CLIENTS).contains(&c)),
        "--clients values must be between 1 and {MAX_CLIENTS}"
    );
    let distinct: std::collections::BTreeSet<_> = args.clients.iter().collect();
    anyhow::ensure!(
        distinct.len() == args.clients.len(),
        "--clients values must be distinct"
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(super::default_work_dir);
    anyhow::ensure!(
        work_dir.is_dir(),
        "work dir {} is not a directory",
        work_dir.display()
    );
    let fstype = super::fs_type(&work_dir).unwrap_or_else(|| "unknown".into());
    if super::is_memory_fs(&fstype) {
        eprintln!(
            "WARNING: {} is on {fstype}: fsync costs nothing there, so the figures do not \
             measure durable writes; pass --work-dir on a real disk",
            work_dir.display()
        );
    }
    let etcd_version = if args.no_etcd {
        None
    } else {
        Some(etcd::version(&args.etcd_bin)?)
    };
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);

    let atoll_runtime = if args.shared_runtime {
        "all three on the load generator's runtime".to_string()
    } else {
        format!("each on its own runtime of {} worker threads", cpus.max(1))
    };
    println!("atoll bench raft");
    println!(
        "  3 servers per system on 127.0.0.1, writes to the leader, {} B per write, \
         {:?} measured (+{:?} warm-up) per concurrency",
        args.value_bytes, args.duration, args.warmup
    );
    println!(
        "  machine: {cpus} CPUs; data under {} ({fstype})",
        work_dir.display()
    );
    println!("  atoll: 3 servers in this process, {atoll_runtime}");
    match &etcd_version {
        Some(v) => println!("  etcd: 3 child processes of {} ({v})", args.etcd_bin),
        None => print_no_etcd_banner(),
    }
    println!();

    let mut results: Vec<LoadResult> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // Atoll.
    let http = http_client(max_clients)?;
    let region = AtollRegion::start(&work_dir, !args.shared_runtime, cpus.max(1)).await?;
    eprintln!(
        "atoll: 3 servers started under {} ({})",
        region.dir().display(),
        atoll_runtime
    );
    let atoll = bench_atoll(&region, &http, &args, &mut results, &mut notes).await;
    region.shutdown().await;
    atoll?;
    drop(http);

    // etcd.
    if !args.no_etcd {
        let http = http_client(max_clients)?;
        let mut cluster = EtcdCluster::start(&args.etcd_bin, &work_dir)?;
        eprintln!("etcd: 3 members started under {}", cluster.dir().display());
        cluster.wait_healthy(&http, START_TIMEOUT).await?;
        let mut leader = cluster.wait_for_leader(&http, START_TIMEOUT).await?;
        eprintln!("etcd: leader at {leader}");
        for &clients in &args.clients {
            let write = etcd::writer(http.clone(), leader.clone(), clients, args.value_bytes);
            let r = load::run("etcd", clients, args.warmup, args.duration, write).await?;
            report_progress(&r);
            match cluster.leader(&http).await {
                Ok(now) if now == leader => {}
                now => {
                    let now = now.unwrap_or_else(|e| format!("unknown: {e:#}"));
                    notes.push(format!(
                        "etcd: the leader changed during the {clients}-client run ({leader} -> {now})"
                    ));
                    leader = cluster.wait_for_leader(&http, START_TIMEOUT).await?;
                }
            }
            results.push(r);
        }
        drop(cluster);
    }

    print_table(&args.clients, &results, args.no_etcd);
    if !notes.is_empty() {
        println!();
        for n in &notes {
            println!("note: {n}");
        }
    }
    let errors: Vec<&LoadResult> = results
        .iter()
        .filter(|r| !r.error_kinds.is_empty())
        .collect();
    if !errors.is_empty() {
        println!();
        println!("errors (warm-up included):");
        for r in errors {
            for (msg, n) in &r.error_kinds {
                println!("  {} {} clients: {n} x {msg}", r.system, r.clients);
            }
        }
    }
    if args.no_etcd {
        println!();
        print_no_etcd_banner();
    }
    Ok(())
}

async fn bench_atoll(
    region: &AtollRegion,
    http: &reqwest::Client,
    args: &RaftArgs,
    results: &mut Vec<LoadResult>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut leader = region.wait_for_leader(http, START_TIMEOUT).await?;
    eprintln!("atoll: leader at {leader}");
    let first = region.settle(SETTLE_QUIET, SETTLE_MAX).await;
    let mut acked = 0;
    for &clients in &args.clients {
        let write = atoll_region::writer(http.clone(), leader.clone(), clients, args.value_bytes);
        let r = load::run("atoll", clients, args.warmup, args.duration, write).await?;
        report_progress(&r);
        acked += r.acked_total;
        if region.current_leader().as_deref() != Some(leader.as_str()) {
            notes.push(format!(
                "atoll: the leader changed during the {clients}-client run ({leader} -> {})",
                region.current_leader().unwrap_or_else(|| "none".into())
            ));
            leader = region.wait_for_leader(http, START_TIMEOUT).await?;
        }
        // Each job registration also creates an evaluation that the
        // leader's scheduler processes afterwards, through more Raft writes:
        // let it finish so that one measurement does not slow the next.
        let t0 = Instant::now();
        let end_of_run = region.applied_index();
        let settled = region.settle(SETTLE_QUIET, SETTLE_MAX).await;
        eprintln!(
            "atoll: {clients} clients: after the run the region applied {} more entries \
             in {:.1} s (then {:?} quiet)",
            settled.saturating_sub(end_of_run),
            t0.elapsed().saturating_sub(SETTLE_QUIET).as_secs_f64(),
            SETTLE_QUIET
        );
        results.push(r);
    }
    let last = region.applied_index();
    if acked > 0 {
        notes.push(format!(
            "atoll: {:.2} Raft entries per acknowledged PUT /v1/jobs (index {first} -> {last} \
             for {acked} writes, warm-up included): the registration, then the scheduler's \
             processing of its evaluation",
            last.saturating_sub(first) as f64 / acked as f64
        ));
    }
    Ok(())
}

/// One client per system, its pool large enough for every concurrent client.
fn http_client(max_clients: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(max_clients.max(1) * 2)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

fn report_progress(r: &LoadResult) {
    eprintln!(
        "{}: {} clients: {} writes ({} errors) in {:.2} s: {:.0} writes/s; \
         ms p50 {} p90 {} p99 {} p99.9 {} max {}",
        r.system,
        r.clients,
        r.ok,
        r.errors,
        r.elapsed.as_secs_f64(),
        r.writes_per_sec(),
        fmt_ms(r.percentile_ms(50.0)),
        fmt_ms(r.percentile_ms(90.0)),
        fmt_ms(r.percentile_ms(99.0)),
        fmt_ms(r.percentile_ms(99.9)),
        fmt_ms(r.percentile_ms(100.0)),
    );
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
}

fn print_no_etcd_banner() {
    println!("  ############################################################");
    println!("  ##  --no-etcd: etcd was NOT measured; Atoll figures only,  ##");
    println!("  ##  there is no reference to compare them with.            ##");
    println!("  ############################################################");
}

fn print_table(levels: &[usize], results: &[LoadResult], no_etcd: bool) {
    println!(
        "{:>7}  {:<10} {:>8} {:>7} {:>10} {:>8} {:>8}",
        "clients", "system", "ops", "errors", "writes/s", "p50 ms", "p99 ms"
    );
    for &clients in levels {
        let find = |system: &str| {
            results
                .iter()
                .find(|r| r.system == system && r.clients == clients)
        };
        let atoll = find("atoll");
        let etcd = find("etcd");
        for r in [atoll, etcd].into_iter().flatten() {
            println!(
                "{:>7}  {:<10} {:>8} {:>7} {:>10.1} {:>8} {:>8}",
                r.clients,
                r.system,
                r.ok,
                r.errors,
                r.writes_per_sec(),
                fmt_ms(r.percentile_ms(50.0)),
                fmt_ms(r.percentile_ms(99.0)),
            );
        }
        if let (Some(a), Some(e)) = (atoll, etcd) {
            let ratio = |x: f64, y: f64| {
                if y > 0.0 {
                    format!("{:.2}x", x / y)
                } else {
                    "-".into()
                }
            };
            let p50 = match (a.percentile_ms(50.0), e.percentile_ms(50.0)) {
                (Some(x), Some(y)) => ratio(x, y),
                _ => "-".into(),
            };
            println!(
                "{:>7}  {:<10} {:>8} {:>7} {:>10} {:>8} {:>8}",
                "",
                "atoll/etcd",
                "",
                "",
                ratio(a.writes_per_sec(), e.writes_per_sec()),
                p50,
                ""
            );
        } else if no_etcd {
            println!("{:>7}  {:<10} (etcd skipped: --no-etcd)", "", "atoll/etcd");
        }
    }
}
