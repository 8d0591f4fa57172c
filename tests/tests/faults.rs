//! Fault injection with a history checker (issue 8): real `region-server`,
//! `federation-gateway` and `client-agent` processes, each on its own
//! loopback address, a concurrent workload that records every operation,
//! and faults injected while it runs. After the faults heal every key is
//! read back and the history is checked: no acknowledged write lost, every
//! read without `?stale` linearizable, no job slot with two running
//! allocations, no node over-committed.
//!
//! Each scenario drives its workload for ~20 s; set
//! `ATOLL_SOAK_DURATION=10m` for a soak run (see docs/RELIABILITY.md).
//! Histories are written to `$CARGO_TARGET_TMPDIR/faults/<scenario>.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use atoll_tests::faults::cluster::{tail, ProcFederation};
use atoll_tests::faults::history::History;
use atoll_tests::faults::workload::{Rng, Target, Targets, Workload, WorkloadConfig};
use atoll_tests::faults::{alloc_invariants, analyze, final_reads, workload_duration, Summary};
use atoll_tests::{poll, DEFAULT_TIMEOUT};
use reqwest::StatusCode;

/// Workload length of a scenario in short (CI) mode.
const SHORT: Duration = Duration::from_secs(20);

fn seed() -> u64 {
    std::env::var("ATOLL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// A scenario in progress: the federation, the history, the workload and
/// the faults injected so far.
struct Run {
    name: String,
    fed: ProcFederation,
    history: History,
    workload: Option<Workload>,
    faults: Vec<String>,
    rng: Rng,
    started: Instant,
    duration: Duration,
    sampler: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<Vec<String>>)>,
}

impl Run {
    /// Start every member, wait for leaders (and for each gateway to route
    /// to every region), then start the workload against `targets`.
    async fn start(
        name: &str,
        mut fed: ProcFederation,
        regions: &[&str],
        targets: BTreeMap<String, Vec<Target>>,
    ) -> anyhow::Result<Self> {
        let seed = seed();
        eprintln!("scenario {name}: seed {seed} (ATOLL_FAULT_SEED)");
        fed.start_all()?;
        for r in regions {
            if let Err(e) = fed.wait_leader(r, None, DEFAULT_TIMEOUT).await {
                eprintln!("logs:\n{}", fed.logs(40));
                return Err(e.context(format!("scenario {name}: bootstrapping region {r}")));
            }
        }
        for gw in fed.of(atoll_tests::faults::cluster::Kind::Gateway, None) {
            for r in regions {
                fed.wait_gateway_routes(gw, r, DEFAULT_TIMEOUT).await?;
            }
        }
        let history = History::new();
        let targets: Targets = Arc::new(RwLock::new(targets));
        let cfg = WorkloadConfig {
            prefix: format!("fj{}", name.replace('_', "")),
            ..WorkloadConfig::default()
        };
        let workload = Workload::start(&cfg, &history, &targets, seed);
        // Sample the allocation invariants through the first server of the
        // first region while the workload runs.
        let stop = Arc::new(AtomicBool::new(false));
        let servers: Vec<String> = regions
            .iter()
            .flat_map(|r| fed.servers(r))
            .map(|i| fed.members[i].base())
            .collect();
        let sampler = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut found = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for base in &servers {
                        if let Ok((c, o)) = alloc_invariants(base).await {
                            found.extend(c.into_iter().chain(o));
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                found
            })
        };
        Ok(Self {
            name: name.into(),
            fed,
            history,
            workload: Some(workload),
            faults: Vec::new(),
            rng: Rng::new(seed ^ 0x5eed),
            started: Instant::now(),
            duration: workload_duration(SHORT),
            sampler: Some((stop, sampler)),
        })
    }

    fn fault(&mut self, what: impl Into<String>) {
        let what = what.into();
        let at = self.started.elapsed();
        eprintln!("[{:>7.2}s] {what}", at.as_secs_f64());
        self.faults
            .push(format!("{:>7.2}s {what}", at.as_secs_f64()));
    }

    /// The agreed leader of `region`; a wait longer than 5 s is noted as
    /// an observation (it is an availability problem, not a safety one).
    async fn leader(&mut self, region: &str) -> anyhow::Result<usize> {
        let t = Instant::now();
        let l = self
            .fed
            .wait_leader(region, None, Duration::from_secs(90))
            .await?;
        if t.elapsed() > Duration::from_secs(5) {
            self.fault(format!(
                "observed: region {region} had no agreed leader for {:.1}s",
                t.elapsed().as_secs_f64()
            ));
        }
        Ok(l)
    }

    fn left(&self) -> Duration {
        self.duration.saturating_sub(self.started.elapsed())
    }

    fn over(&self) -> bool {
        self.started.elapsed() >= self.duration
    }

    /// Let the workload run on, faults healed, until the scenario's time
    /// is up.
    async fn idle_until_over(&self) {
        tokio::time::sleep(self.left()).await;
    }

    /// Stop the workload, read every key back through `read_from[region]`
    /// (a server base URL), check everything, write the history and print
    /// the summary.
    async fn finish(&mut self, read_from: BTreeMap<String, String>) -> anyhow::Result<Summary> {
        if let Some(w) = self.workload.take() {
            w.stop().await?;
        }
        let finals = final_reads(&self.history, &read_from, DEFAULT_TIMEOUT).await?;
        let mut s = analyze(&self.name, self.duration, &self.history, &finals);
        s.faults = std::mem::take(&mut self.faults);
        if let Some((stop, sampler)) = self.sampler.take() {
            stop.store(true, Ordering::Relaxed);
            let found = sampler.await?;
            for f in found {
                if f.starts_with("slot") {
                    s.slot_conflicts.push(f);
                } else {
                    s.overcommits.push(f);
                }
            }
        }
        for base in read_from.values() {
            let (c, o) = poll("the allocation invariants", DEFAULT_TIMEOUT, || async {
                alloc_invariants(base).await.ok()
            })
            .await?;
            s.slot_conflicts.extend(c);
            s.overcommits.extend(o);
        }
        s.slot_conflicts.sort();
        s.slot_conflicts.dedup();
        s.overcommits.sort();
        s.overcommits.dedup();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.jsonl", self.name));
        self.history.write_jsonl(&path)?;
        let logs = dir.join(format!("{}-logs", self.name));
        self.fed.save_logs(&logs)?;
        eprintln!("{s}history: {}\nlogs: {}", path.display(), logs.display());
        if !s.clean() {
            eprintln!("logs:\n{}", self.fed.logs(30));
        }
        Ok(s)
    }
}

fn target(fed: &ProcFederation, i: usize) -> Target {
    Target {
        name: fed.members[i].name.clone(),
        base: fed.members[i].base(),
    }
}

/// Something undone when dropped (a mount, ...).
type Guard = Box<dyn std::any::Any + Send + Sync>;

/// A small tmpfs mounted at a directory; unmounted (lazily) when dropped,
/// also when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mount tmpfs on {}: {status}",
            dir.display()
        );
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the file system holding `dir` with a filler file until writes fail
/// with ENOSPC; the filler's path.
fn fill_disk(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Whatever is left below one chunk, too.
    loop {
        match f.write_all(&[0u8; 512]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(path)
}

/// Overwrite every page of a sqlite file after the first (the header) with
/// a pattern that is no valid b-tree page.
fn corrupt_sqlite(path: &Path) -> anyhow::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path)?.len();
    ensure!(
        len > 4096,
        "{} is too small to corrupt ({len} bytes)",
        path.display()
    );
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(4096))?;
    let junk: Vec<u8> = (0..len - 4096).map(|i| (i * 31 % 251) as u8).collect();
    f.write_all(&junk)?;
    f.sync_all()?;
    Ok(len - 4096)
}

fn assert_clean(s: &Summary) -> anyhow::Result<()> {
    ensure!(s.clean(), "scenario {} broke a guarantee:\n{s}", s.name);
    ensure!(s.acked > 0, "scenario {}: no operation succeeded", s.name);
    Ok(())
}

/// Where the members of a scenario run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hosts {
    /// Each on a loopback address of its own.
    Loopback,
    /// Each in a network namespace of its own (links can be cut).
    Namespaces,
}

/// A region of three servers and two clients, the workload through all
/// three servers. Runs `body`, then heals (restarts everything stopped)
/// and checks.
async fn one_region<F>(
    name: &str,
    hosts: Hosts,
    prepare: impl FnOnce(&mut ProcFederation) -> anyhow::Result<Vec<Guard>>,
    body: F,
) -> anyhow::Result<Summary>
where
    F: for<'a> FnOnce(
        &'a mut Run,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>,
    >,
{
    let _serial = atoll_tests::serial().await;
    let mut fed = match hosts {
        Hosts::Loopback => ProcFederation::new()?,
        Hosts::Namespaces => ProcFederation::in_namespaces()?,
    };
    let servers = fed.plan_region("a", 3)?;
    fed.plan_client("a-c1", "a")?;
    fed.plan_client("a-c2", "a")?;
    // Mounts live in the federation, so they go away after its processes
    // and before its directory (also when the test fails).
    fed.guards = prepare(&mut fed)?;
    let targets = BTreeMap::from([(
        "a".to_string(),
        servers.iter().map(|i| target(&fed, *i)).collect(),
    )]);
    let mut run = Run::start(name, fed, &["a"], targets).await?;
    let outcome = body(&mut run).await;
    if let Err(e) = outcome {
        eprintln!("logs:\n{}", run.fed.logs(40));
        return Err(e);
    }
    let leader = match run.fed.wait_leader("a", None, DEFAULT_TIMEOUT).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("logs:\n{}", run.fed.logs(60));
            for i in run.fed.servers("a") {
                let url = format!("{}/v1/status/leader", run.fed.members[i].base());
                eprintln!(
                    "{url}: {:?}",
                    atoll_tests::get(&url).await.map(|r| (r.status, r.body))
                );
            }
            return Err(e);
        }
    };
    let base = run.fed.members[leader].base();
    let s = run.finish(BTreeMap::from([("a".to_string(), base)])).await;
    if s.is_err() {
        eprintln!("logs:\n{}", run.fed.logs(60));
        for i in run.fed.servers("a") {
            let status = run.fed.exited(i);
            eprintln!("{} exited: {status:?}", run.fed.members[i].name);
        }
    }
    s
}

/// Servers that keep only the last Raft entry decoded in memory
/// (`--raft-log-cache-mb 0`): catch-up after a restart, truncation of an
/// isolated leader's tail and apply all read entries back from sqlite, as
/// they do with large entries under the default budget.
fn small_log_cache(fed: &mut ProcFederation) -> anyhow::Result<Vec<Guard>> {
    fed.server_flags = ["--raft-log-cache-mb", "0"].map(String::from).to_vec();
    Ok(Vec::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_leader_and_followers_with_restart() -> anyhow::Result<()> {
    let s = one_region("kill9", Hosts::Loopback, small_log_cache, |run| {
        Box::pin(async move {
            let mut round = 0;
            while !run.over() {
                round += 1;
                let leader = run.leader("a").await?;
                let victim = if round % 2 == 1 {
                    leader
                } else {
                    let followers: Vec<usize> = run
                        .fed
                        .servers("a")
                        .into_iter()
                        .filter(|i| *i != leader)
                        .collect();
                    followers[run.rng.below(followers.len())]
                };
                let what = if victim == leader {
                    "leader"
                } else {
                    "follower"
                };
                run.fault(format!("kill -9 {what} {}", run.fed.members[victim].name));
                run.fed.kill(victim);
                if victim == leader {
                    let new = run
                        .fed
                        .wait_leader("a", Some(victim), DEFAULT_TIMEOUT)
                        .await?;
                    run.fault(format!("new leader {}", run.fed.members[new].name));
                }
                tokio::time::sleep(Duration::from_secs(2).min(run.left())).await;
                run.fault(format!("restart {}", run.fed.members[victim].name));
                run.fed.start(victim)?;
                tokio::time::sleep(Duration::from_secs(3).min(run.left())).await;
            }
            Ok(())
        })
    })
    .await?;
    assert_clean(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_sqlite_refuses_to_start() -> anyhow::Result<()> {
    let s = one_region(
        "corrupt",
        Hosts::Loopback,
        |_| Ok(Vec::new()),
        |run| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let leader = run.leader("a").await?;
                let victim = run
                    .fed
                    .servers("a")
                    .into_iter()
                    .find(|i| *i != leader)
                    .context("a follower")?;
                let name = run.fed.members[victim].name.clone();
                run.fault(format!("kill -9 follower {name}"));
                run.fed.kill(victim);
                let db = run.fed.members[victim].data_dir.join("raft.db");
                let n = corrupt_sqlite(&db)?;
                run.fault(format!("corrupt {n} bytes of {name}'s raft.db"));
                run.fed.start(victim)?;
                run.fault(format!("restart {name}"));
                // It must exit with an error, never serve: every answer
                // it gives before exiting must not be a successful read.
                let base = run.fed.members[victim].base();
                let t = Instant::now();
                let status = loop {
                    if let Some(status) = run.fed.exited(victim) {
                        break status;
                    }
                    ensure!(
                        t.elapsed() < Duration::from_secs(60),
                        "{name} kept running on a corrupted raft.db"
                    );
                    if let Ok(r) = atoll_tests::get(&format!("{base}/v1/jobs")).await {
                        ensure!(
                            r.status != StatusCode::OK,
                            "{name} served /v1/jobs from a corrupted raft.db: {}",
                            r.body
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                ensure!(!status.success(), "{name} exited successfully: {status}");
                // The error names the damaged file and what is wrong.
                let log = std::fs::read_to_string(&run.fed.members[victim].log)?;
                let error = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("raft.db"))
                    .with_context(|| {
                        format!(
                            "{name}'s error does not name raft.db: {}",
                            tail(&run.fed.members[victim].log, 20)
                        )
                    })?;
                ensure!(
                    ["corrupt", "malformed", "integrity"]
                        .iter()
                        .any(|w| error.contains(w)),
                    "{name}'s error does not say the file is damaged: {error}"
                );
                let last: String = error.chars().take(200).collect();
                run.fault(format!("{name} refused to start ({status}): {last}"));
                run.idle_until_over().await;
                Ok(())
            })
        },
    )
    .await?;
    assert_clean(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_disk_full_then_freed() -> anyhow::Result<()> {
    let mount: Arc<std::sync::Mutex<Option<PathBuf>>> = Arc::default();
    let mount2 = mount.clone();
    let s = one_region(
        "diskfull",
        Hosts::Loopback,
        move |fed| {
            // Every server on its own small tmpfs: whichever leads gets
            // its disk filled. Room for a soak's worth of Raft log: the log
            // grows until the first snapshot (every 8,192 entries) and the
            // sqlite file keeps its size after the purge; 64 MiB filled up
            // on every server in a 10-minute soak.
            let mut guards: Vec<Guard> = Vec::new();
            for i in fed.servers("a") {
                guards.push(Box::new(Tmpfs::mount(&fed.members[i].data_dir, "256m")?));
            }
            Ok(guards)
        },
        move |run| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let leader = run.leader("a").await?;
                let name = run.fed.members[leader].name.clone();
                let dir = run.fed.members[leader].data_dir.clone();
                let filler = fill_disk(&dir)?;
                *mount2.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
                run.fault(format!("filled the disk of leader {name}"));
                // A server whose Raft log cannot be written must not stay up
                // as a leader that can neither serve nor step aside: it
                // exits with the error (and is restarted once space is back).
                let t = Instant::now();
                let status = loop {
                    if let Some(status) = run.fed.exited(leader) {
                        break Some(status);
                    }
                    if t.elapsed() > Duration::from_secs(30) {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let status = status.with_context(|| {
                    format!("{name} neither exited nor recovered with a full disk")
                })?;
                ensure!(
                    !status.success(),
                    "{name} exited successfully with a full disk"
                );
                run.fault(format!(
                    "{name} exited ({status}) after {:.1}s",
                    t.elapsed().as_secs_f64()
                ));
                let new = run
                    .fed
                    .wait_leader("a", Some(leader), Duration::from_secs(60))
                    .await?;
                run.fault(format!("new leader {}", run.fed.members[new].name));
                tokio::time::sleep(Duration::from_secs(5).min(run.left())).await;
                std::fs::remove_file(&filler)?;
                run.fault(format!("freed the disk of {name}"));
                run.fed.start(leader)?;
                run.fault(format!("restart {name}"));
                run.idle_until_over().await;
                Ok(())
            })
        },
    )
    .await?;
    drop(mount);
    assert_clean(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_killed_while_requests_flow() -> anyhow::Result<()> {
    let _serial = atoll_tests::serial().await;
    let mut fed = ProcFederation::new()?;
    let a = fed.plan_region("a", 3)?;
    let b = fed.plan_region("b", 1)?;
    let gw1 = fed.plan_gateway("gw1", "a")?;
    let gw2 = fed.plan_gateway("gw2", "a")?;
    let targets = BTreeMap::from([
        ("a".to_string(), vec![target(&fed, gw1), target(&fed, gw2)]),
        ("b".to_string(), vec![target(&fed, gw1), target(&fed, gw2)]),
    ]);
    let mut run = Run::start("gateway", fed, &["a", "b"], targets).await?;
    let third = run.duration / 3;
    tokio::time::sleep(third).await;
    run.fault("kill -9 gw1");
    run.fed.kill(gw1);
    tokio::time::sleep(third).await;
    run.fault("restart gw1");
    run.fed.start(gw1)?;
    run.idle_until_over().await;
    let read_from = BTreeMap::from([
        ("a".to_string(), run.fed.members[a[0]].base()),
        ("b".to_string(), run.fed.members[b[0]].base()),
    ]);
    let s = run.finish(read_from).await?;
    let (errors, total) = s.errors_via("gw2");
    ensure!(total > 0, "no request went through gw2");
    ensure!(
        errors == 0,
        "gw2 failed {errors} of {total} requests while gw1 was down:\n{s}"
    );
    assert_clean(&s)
}

/// The status (`ready`, `down`, ...) of the node called `name`, as a
/// server of region `a` sees it.
async fn node_status(run: &Run, name: &str) -> Option<String> {
    for i in run.fed.servers("a") {
        let url = format!("{}/v1/nodes", run.fed.members[i].base());
        if let Ok((StatusCode::OK, v)) = atoll_tests::get_json(&url).await {
            return v
                .as_array()?
                .iter()
                .find(|n| n["Name"] == name)
                .and_then(|n| n["Status"].as_str().map(String::from));
        }
    }
    None
}

/// How a client is taken away from its servers and given back.
#[derive(Clone, Copy)]
enum ClientOutage {
    /// SIGSTOP, then SIGCONT: no heartbeats, no status updates.
    Freeze,
    /// Its network link down, then up: every connection breaks.
    NetworkCut,
}

impl ClientOutage {
    fn apply(self, run: &mut Run, c: usize, on: bool) -> anyhow::Result<()> {
        let name = run.fed.members[c].name.clone();
        match (self, on) {
            (Self::Freeze, true) => {
                run.fed.signal(c, libc::SIGSTOP)?;
                run.fault(format!(
                    "SIGSTOP client {name} (no heartbeats, no status updates)"
                ));
            }
            (Self::Freeze, false) => {
                run.fed.signal(c, libc::SIGCONT)?;
                run.fault(format!("SIGCONT client {name}"));
            }
            (Self::NetworkCut, cut) => {
                run.fed.link(c, !cut)?;
                let what = if cut { "down" } else { "up" };
                run.fault(format!("link of client {name} {what}"));
            }
        }
        Ok(())
    }
}

/// A region of three servers and two clients; one client is taken away
/// until the servers mark its node down (its allocations lost and placed
/// again), then given back: it must come back `ready`, and no job slot
/// ever has two running allocations.
async fn client_outage(name: &str, outage: ClientOutage) -> anyhow::Result<Summary> {
    let hosts = match outage {
        ClientOutage::Freeze => Hosts::Loopback,
        ClientOutage::NetworkCut => Hosts::Namespaces,
    };
    one_region(
        name,
        hosts,
        |fed| {
            // Short heartbeat TTLs, so the node goes down quickly.
            fed.server_flags = ["--heartbeat-min-ttl", "2s", "--heartbeat-grace", "2s"]
                .map(String::from)
                .to_vec();
            Ok(Vec::new())
        },
        move |run| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let c1 = run
                    .fed
                    .of(atoll_tests::faults::cluster::Kind::Client, Some("a"))
                    .first()
                    .copied()
                    .context("a client")?;
                let name = run.fed.members[c1].name.clone();
                outage.apply(run, c1, true)?;
                let r: &Run = run;
                poll(
                    &format!("{name} to be marked down"),
                    Duration::from_secs(60),
                    || async {
                        (node_status(r, &name).await.as_deref() == Some("down")).then_some(())
                    },
                )
                .await?;
                run.fault(format!("{name} marked down"));
                tokio::time::sleep(Duration::from_secs(4).min(run.left())).await;
                outage.apply(run, c1, false)?;
                let r: &Run = run;
                poll(
                    &format!("{name} to be ready again"),
                    Duration::from_secs(60),
                    || async {
                        (node_status(r, &name).await.as_deref() == Some("ready")).then_some(())
                    },
                )
                .await?;
                run.fault(format!("{name} ready again"));
                run.idle_until_over().await;
                Ok(())
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_frozen_then_resumed() -> anyhow::Result<()> {
    assert_clean(&client_outage("clientfreeze", ClientOutage::Freeze).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_network_cut_then_healed() -> anyhow::Result<()> {
    assert_clean(&client_outage("clientcut", ClientOutage::NetworkCut).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_isolates_the_leader_in_a_minority() -> anyhow::Result<()> {
    let s = one_region("minority", Hosts::Namespaces, small_log_cache, |run| {
        Box::pin(async move {
            while !run.over() {
                tokio::time::sleep(Duration::from_secs(3).min(run.left())).await;
                let leader = run.leader("a").await?;
                let name = run.fed.members[leader].name.clone();
                // Everyone else (the other servers, the clients) is on
                // the majority side; the workload still reaches both.
                let others: Vec<usize> = (0..run.fed.members.len())
                    .filter(|i| *i != leader)
                    .collect();
                run.fed.partition(leader, &others)?;
                run.fault(format!(
                    "partition: leader {name} alone on the minority side"
                ));
                let majority: Vec<usize> = run
                    .fed
                    .servers("a")
                    .into_iter()
                    .filter(|i| *i != leader)
                    .collect();
                let t = Instant::now();
                let new = run
                    .fed
                    .wait_leader_among(&majority, Some(leader), Duration::from_secs(30))
                    .await?;
                run.fault(format!(
                    "new leader {} on the majority side after {:.1}s",
                    run.fed.members[new].name,
                    t.elapsed().as_secs_f64()
                ));
                tokio::time::sleep(Duration::from_secs(6)).await;
                run.fed.heal(leader)?;
                run.fault(format!("healed the partition of {name}"));
                // The old leader rejoins as a follower: it does not
                // depose the leader the majority elected.
                let after = run.fed.wait_leader("a", None, DEFAULT_TIMEOUT).await?;
                ensure!(
                    after == new,
                    "after the heal {} leads instead of {}",
                    run.fed.members[after].name,
                    run.fed.members[new].name
                );
                run.fault(format!("{name} follows {}", run.fed.members[new].name));
            }
            Ok(())
        })
    })
    .await?;
    assert_clean(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_partitioned_from_the_federation() -> anyhow::Result<()> {
    let _serial = atoll_tests::serial().await;
    let mut fed = ProcFederation::in_namespaces()?;
    let a = fed.plan_region("a", 3)?;
    let b = fed.plan_region("b", 3)?;
    let gw = fed.plan_gateway("gw", "a")?;
    // Fast gossip timings (as `atoll dev`): the gateway notices the cut
    // region within a second or two, and the pool heals within seconds.
    for i in a.iter().chain(&b).chain([&gw]) {
        fed.members[*i]
            .extra
            .extend(["--gossip-profile", "local"].map(String::from));
    }
    // Region a is used through its servers and the gateway, region b
    // through the gateway and (users inside region b) its own servers.
    let targets = BTreeMap::from([
        (
            "a".to_string(),
            a.iter().chain([&gw]).map(|i| target(&fed, *i)).collect(),
        ),
        (
            "b".to_string(),
            b.iter().chain([&gw]).map(|i| target(&fed, *i)).collect(),
        ),
    ]);
    let mut run = Run::start("regioncut", fed, &["a", "b"], targets).await?;
    let quarter = run.duration / 4;
    tokio::time::sleep(quarter).await;
    let outside: Vec<usize> = a.iter().chain([&gw]).copied().collect();
    for i in &b {
        run.fed.partition(*i, &outside)?;
    }
    run.fault("partition: region b cut off from region a and the gateway");
    // Once gossip has marked b's servers failed, the gateway answers for b
    // at once with 503 instead of dialling.
    // Requests already in flight when the link went wait for their
    // deadline; the probe gives up on each after a second.
    let url = format!("{}/v1/jobs?region=b", run.fed.members[gw].base());
    let probe = atoll_tests::faults::workload::http_client(Duration::from_secs(1))?;
    let t = Instant::now();
    let took = poll(
        "the gateway to refuse region b fast",
        Duration::from_secs(60),
        || async {
            let t0 = Instant::now();
            let r = probe.get(&url).send().await.ok()?;
            let status = r.status();
            let body = r.text().await.ok()?;
            (status == StatusCode::SERVICE_UNAVAILABLE).then(|| (t0.elapsed(), body))
        },
    )
    .await;
    let (took, body) = match took {
        Ok(v) => v,
        Err(e) => {
            eprintln!("logs:\n{}", run.fed.logs(40));
            return Err(e);
        }
    };
    ensure!(
        body.contains("No path to region"),
        "the gateway's 503 for region b does not say why: {body}"
    );
    run.fault(format!(
        "gateway answers 503 for region b in {:.0} ms ({:.1}s after the cut)",
        took.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(quarter).await;
    for i in &b {
        run.fed.heal(*i)?;
    }
    run.fault("healed region b");
    let t = Instant::now();
    run.fed
        .wait_gateway_routes(gw, "b", Duration::from_secs(60))
        .await?;
    run.fault(format!(
        "gateway routes to region b again after {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    run.idle_until_over().await;
    let read_from = BTreeMap::from([
        ("a".to_string(), run.fed.members[a[0]].base()),
        ("b".to_string(), run.fed.members[b[0]].base()),
    ]);
    let s = run.finish(read_from).await?;
    let (errors, total) = s.errors_by_region.get("a").copied().unwrap_or_default();
    ensure!(total > 0, "no request for region a");
    ensure!(
        errors == 0,
        "region a failed {errors} of {total} requests while region b was cut off:\n{s}"
    );
    assert_clean(&s)
}
