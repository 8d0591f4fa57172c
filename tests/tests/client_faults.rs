//! Client faults.
//!
//! * Process level: three `region-server` processes and two `client-agent`
//!   processes on loopback run a service job of real `raw_exec` processes,
//!   one per client (`distinct_hosts`). A client agent killed with SIGKILL
//!   leaves its task running; restarted with the same flags and data
//!   directory it re-attaches to that very process (same pid, no second
//!   copy) and serves its logs again. Stopping the job kills every process.
//! * In-process (the servers' heartbeat TTLs cannot be shortened from the
//!   command line): a client agent killed together with its tasks is marked
//!   down after its heartbeat TTL plus grace, and its allocation is replaced
//!   on the other client.
//!
//! Tasks are found through `/proc`: the task is `/bin/sh -c SCRIPT` with the
//! allocation's `NOMAD_ALLOC_ID` in its environment, and it writes its pid
//! (`$$`) to `$NOMAD_ALLOC_DIR/pid`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use atoll_tests::{
    delete, free_addr, get, get_json, poll, register, serial, workspace_binary, Proc, TestRegion,
    DEFAULT_TIMEOUT,
};
use client_agent::{ClientAgent, ClientConfig};
use ops_kit::tls::{DevCa, Role};
use region_server::leader::heartbeat::HeartbeatConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The task: announces itself on stdout, records its pid, then appends the
/// date to a file in the allocation directory and ticks on stdout forever.
const SCRIPT: &str = "echo started-$NOMAD_ALLOC_ID; echo $$ > \"$NOMAD_ALLOC_DIR/pid\"; \
                      while true; do date >> \"$NOMAD_ALLOC_DIR/out\"; echo tick; sleep 0.2; done";

// ---- processes seen through /proc ----

/// The parts of `/proc/<pid>/stat` the tests need.
struct Stat {
    state: char,
    pgrp: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parens).
    let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
    })
}

/// Whether `pid` runs (a zombie does not count).
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn nul_separated(path: String) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn cmdline(pid: i32) -> Vec<String> {
    nul_separated(format!("/proc/{pid}/cmdline"))
}

fn environ(pid: i32) -> Vec<String> {
    nul_separated(format!("/proc/{pid}/environ"))
}

/// Live processes whose environment has an entry for which `pred` holds.
fn processes_with_env(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| alive(*pid) && environ(*pid).iter().any(|kv| pred(kv)))
        .collect()
}

/// Every live process of allocation `alloc` (shim, task, its children).
fn alloc_processes(alloc: &str) -> Vec<i32> {
    let want = format!("NOMAD_ALLOC_ID={alloc}");
    processes_with_env(|kv| kv == want)
}

/// The live task processes (`/bin/sh -c SCRIPT`) of allocation `alloc`.
fn task_processes(alloc: &str) -> Vec<i32> {
    let shells: Vec<i32> = alloc_processes(alloc)
        .into_iter()
        .filter(|pid| cmdline(*pid) == ["/bin/sh", "-c", SCRIPT])
        .collect();
    // The shell forks for `sleep` and `echo`; for an instant the child is a
    // copy of it (same command line) until it execs. Only the shells whose
    // parent is not one of them are tasks.
    shells
        .iter()
        .copied()
        .filter(|pid| parent_pid(*pid).is_none_or(|pp| !shells.contains(&pp)))
        .collect()
}

/// The parent of `pid`, from /proc/<pid>/stat (after the command name,
/// which may hold spaces and parentheses).
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Live processes started for an allocation directory under `root`.
fn processes_under(root: &Path) -> Vec<i32> {
    let prefix = format!("NOMAD_ALLOC_DIR={}", root.display());
    processes_with_env(|kv| kv.starts_with(&prefix))
}

fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| format!("{p}: {}", cmdline(*p).join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// SIGKILL to `pid` (a negative `pid` names a process group).
fn kill9(pid: i32) {
    let _ = Command::new("kill")
        .args(["-9", "--", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills every process started for an allocation directory under `root`
/// (whole groups first, then stragglers).
fn sweep(root: &Path) {
    for _ in 0..3 {
        let left = processes_under(root);
        if left.is_empty() {
            return;
        }
        for pid in left {
            if let Some(s) = stat(pid) {
                if s.pgrp > 1 {
                    kill9(-s.pgrp);
                }
            }
            kill9(pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sweeps the task processes under a directory when dropped.
struct Sweeper(PathBuf);

impl Drop for Sweeper {
    fn drop(&mut self) {
        sweep(&self.0);
    }
}

// ---- the task's files ----

/// `<client data dir>/alloc/<alloc>/alloc`.
fn shared_dir(data_dir: &Path, alloc: &str) -> PathBuf {
    data_dir.join("alloc").join(alloc).join("alloc")
}

fn read_pid(data_dir: &Path, alloc: &str) -> Option<i32> {
    std::fs::read_to_string(shared_dir(data_dir, alloc).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn out_len(data_dir: &Path, alloc: &str) -> u64 {
    std::fs::metadata(shared_dir(data_dir, alloc).join("out"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Wait until the task of `alloc` recorded its pid and is the one task
/// process of the allocation; the pid.
async fn wait_task_pid(data_dir: &Path, alloc: &str) -> anyhow::Result<i32> {
    let pid = poll(
        &format!("the task of {alloc} to record its pid"),
        Duration::from_secs(10),
        || async { read_pid(data_dir, alloc) },
    )
    .await?;
    poll(
        &format!("task process {pid} of {alloc} in /proc"),
        Duration::from_secs(5),
        || async { (task_processes(alloc) == [pid]).then_some(()) },
    )
    .await
    .with_context(|| format!("task processes: {:?}", task_processes(alloc)))?;
    Ok(pid)
}

/// Wait until the file the task appends to grows.
async fn wait_out_grows(data_dir: &Path, alloc: &str) -> anyhow::Result<()> {
    let before = out_len(data_dir, alloc);
    poll(
        &format!("{alloc}'s out file to grow"),
        Duration::from_secs(5),
        || async { (out_len(data_dir, alloc) > before).then_some(()) },
    )
    .await
}

// ---- HTTP ----

fn service_job(id: &str, count: u32, distinct_hosts: bool) -> Value {
    let constraints = if distinct_hosts {
        json!([{"Operand": "distinct_hosts", "RTarget": "true"}])
    } else {
        json!([])
    };
    json!({
        "ID": id,
        "Type": "service",
        "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "g",
            "Count": count,
            "Constraints": constraints,
            "Tasks": [{
                "Name": "t",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", SCRIPT]},
                "Resources": {"CPU": 100, "MemoryMB": 64}
            }]
        }]
    })
}

async fn allocations(base: &str, job: &str) -> Vec<Value> {
    match get_json(&format!("{base}/v1/job/{job}/allocations")).await {
        Ok((StatusCode::OK, v)) => v.as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn allocation(base: &str, id: &str) -> anyhow::Result<Value> {
    let (code, v) = get_json(&format!("{base}/v1/allocation/{id}")).await?;
    ensure!(code == StatusCode::OK, "allocation {id}: {code} {v}");
    Ok(v)
}

/// Wait until `count` allocations of `job` run; them.
async fn wait_running(base: &str, job: &str, count: usize) -> anyhow::Result<Vec<Value>> {
    poll(
        &format!("{count} running allocations of {job}"),
        Duration::from_secs(30),
        || async {
            let running: Vec<Value> = allocations(base, job)
                .await
                .into_iter()
                .filter(|a| a["ClientStatus"] == "running" && a["DesiredStatus"] == "run")
                .collect();
            (running.len() == count).then_some(running)
        },
    )
    .await
}

/// The task's stdout read through a server (which asks the agent).
async fn stdout_through(base: &str, alloc: &str) -> Option<String> {
    let r = get(&format!(
        "{base}/v1/client/fs/logs/{alloc}?task=t&type=stdout&plain=true"
    ))
    .await
    .ok()?;
    (r.status == StatusCode::OK).then_some(r.body)
}

fn ticks(log: &str) -> usize {
    log.lines().filter(|l| *l == "tick").count()
}

fn event_types(alloc: &Value) -> Vec<String> {
    alloc["TaskStates"]["t"]["Events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn node_status(base: &str, node: &str) -> Option<String> {
    let (code, v) = get_json(&format!("{base}/v1/node/{node}")).await.ok()?;
    (code == StatusCode::OK).then(|| v["Status"].as_str().unwrap_or("").to_string())
}

/// Stop `job` and wait until every one of `allocs` is complete on its
/// client and no process of theirs (nor any under `root`) is left.
async fn stop_job_and_check_no_process_left(
    base: &str,
    job: &str,
    allocs: &[String],
    pids: &[i32],
    root: &Path,
) -> anyhow::Result<()> {
    delete(&format!("{base}/v1/job/{job}"))
        .await?
        .expect(StatusCode::OK)
        .with_context(|| format!("stopping {job}"))?;
    for id in allocs {
        let a = poll(
            &format!("allocation {id} stopped on its client"),
            Duration::from_secs(30),
            || async {
                let a = allocation(base, id).await.ok()?;
                (a["DesiredStatus"] == "stop"
                    && a["ClientStatus"] != "running"
                    && a["ClientStatus"] != "pending")
                    .then_some(a)
            },
        )
        .await?;
        ensure!(
            a["ClientStatus"] == "complete",
            "allocation {id} ended {} after the job was stopped: {}",
            a["ClientStatus"],
            a["TaskStates"]
        );
    }
    let left = poll(
        "every task process gone",
        Duration::from_secs(5),
        || async {
            let left: Vec<i32> = allocs
                .iter()
                .flat_map(|a| alloc_processes(a))
                .chain(pids.iter().copied().filter(|p| alive(*p)))
                .chain(processes_under(root))
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
    if left.is_err() {
        let mut all: Vec<i32> = allocs.iter().flat_map(|a| alloc_processes(a)).collect();
        all.extend(pids.iter().copied().filter(|p| alive(*p)));
        all.extend(processes_under(root));
        all.sort_unstable();
        all.dedup();
        bail!("processes left after {job} stopped: {}", describe(&all));
    }
    Ok(())
}

// ---- process level ----

struct ServerSpec {
    name: String,
    http: String,
    rpc: String,
    gossip: String,
    data_dir: PathBuf,
    log: PathBuf,
}

struct ClientSpec {
    name: String,
    http: String,
    data_dir: PathBuf,
    log: PathBuf,
}

type TlsFiles = (PathBuf, PathBuf, PathBuf);

/// Three server processes and two client agent processes. Dropping it
/// kills every process it started and every task under its directory,
/// then removes the directory.
struct World {
    region: String,
    server_bin: PathBuf,
    agent_bin: PathBuf,
    server_tls: TlsFiles,
    client_tls: TlsFiles,
    gossip_key: String,
    servers: Vec<ServerSpec>,
    server_procs: Vec<Option<Proc>>,
    clients: Vec<ClientSpec>,
    client_procs: Vec<Option<Proc>>,
    dir: tempfile::TempDir,
}

impl World {
    fn new(region: &str, servers: usize, clients: usize) -> anyhow::Result<Self> {
        ops_kit::tls::install_crypto_provider();
        let server_bin = workspace_binary("region-server", "region-server")?;
        let agent_bin = workspace_binary("client-agent", "client-agent")?;
        let dir = tempfile::Builder::new()
            .prefix("atoll-client-faults-")
            .tempdir()?;
        let ca = DevCa::generate()?;
        let server_tls = ca
            .issue(Role::Server, region)?
            .write(&dir.path().join("tls"), "server")?;
        let client_tls = ca
            .issue(Role::Client, region)?
            .write(&dir.path().join("tls"), "client")?;
        let servers = (1..=servers)
            .map(|k| ServerSpec {
                name: format!("s{k}"),
                http: free_addr(),
                rpc: free_addr(),
                gossip: free_addr(),
                data_dir: dir.path().join(format!("s{k}")),
                log: dir.path().join(format!("s{k}.log")),
            })
            .collect::<Vec<_>>();
        let clients = (1..=clients)
            .map(|k| ClientSpec {
                name: format!("c{k}"),
                http: free_addr(),
                data_dir: dir.path().join(format!("c{k}")),
                log: dir.path().join(format!("c{k}.log")),
            })
            .collect::<Vec<_>>();
        Ok(Self {
            region: region.to_string(),
            server_bin,
            agent_bin,
            server_tls,
            client_tls,
            gossip_key: ops_kit::gossip::Keyring::generate_key(),
            server_procs: servers.iter().map(|_| None).collect(),
            servers,
            client_procs: clients.iter().map(|_| None).collect(),
            clients,
            dir,
        })
    }

    fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
    }

    fn start_server(&mut self, i: usize) -> anyhow::Result<()> {
        let s = &self.servers[i];
        let (out, err) = Self::log_file(&s.log)?;
        let mut cmd = Command::new(&self.server_bin);
        cmd.args(["--name", &s.name, "--region", &self.region])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--http-addr", &s.http, "--rpc-addr", &s.rpc])
            .args(["--bootstrap-expect", &self.servers.len().to_string()])
            .args(["--gossip-addr", &s.gossip, "--encrypt", &self.gossip_key])
            .args(["--retry-join", &self.servers[0].gossip])
            // Short heartbeat TTLs so a dead client is noticed within seconds.
            .args(["--heartbeat-min-ttl", "1s", "--heartbeat-grace", "1s"]);
        for other in &self.servers {
            cmd.args(["--join", &other.rpc]);
        }
        cmd.arg("--tls-ca")
            .arg(&self.server_tls.0)
            .arg("--tls-cert")
            .arg(&self.server_tls.1)
            .arg("--tls-key")
            .arg(&self.server_tls.2)
            .env("RUST_LOG", "info,openraft=warn,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.server_bin.display()))?;
        self.server_procs[i] = Some(Proc { child });
        Ok(())
    }

    /// Start (or restart, with the same flags and data directory) client `i`.
    fn start_client(&mut self, i: usize) -> anyhow::Result<()> {
        let c = &self.clients[i];
        let (out, err) = Self::log_file(&c.log)?;
        let mut cmd = Command::new(&self.agent_bin);
        cmd.args(["--name", &c.name, "--region", &self.region])
            .arg("--data-dir")
            .arg(&c.data_dir)
            .args(["--http-addr", &c.http]);
        for s in &self.servers {
            cmd.args(["--servers", &s.rpc]);
        }
        cmd.arg("--tls-ca")
            .arg(&self.client_tls.0)
            .arg("--tls-cert")
            .arg(&self.client_tls.1)
            .arg("--tls-key")
            .arg(&self.client_tls.2)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.agent_bin.display()))?;
        self.client_procs[i] = Some(Proc { child });
        Ok(())
    }

    /// SIGKILL client agent `i` (only the agent: its tasks are left alone).
    fn kill_client(&mut self, i: usize) -> anyhow::Result<()> {
        self.client_procs[i]
            .take()
            .with_context(|| format!("client {i} is not running"))?
            .kill();
        Ok(())
    }

    fn base(&self, i: usize) -> String {
        format!("http://{}", self.servers[i].http)
    }

    /// Wait until every server names the same leader; its slot.
    async fn wait_leader(&self) -> anyhow::Result<usize> {
        poll("an agreed leader", DEFAULT_TIMEOUT, || async {
            let mut seen = None;
            for i in 0..self.servers.len() {
                let (code, v) = get_json(&format!("{}/v1/status/leader", self.base(i)))
                    .await
                    .ok()?;
                let slot = self
                    .servers
                    .iter()
                    .position(|s| Some(s.rpc.as_str()) == v.as_str())?;
                if code != StatusCode::OK || seen.is_some_and(|s| s != slot) {
                    return None;
                }
                seen = Some(slot);
            }
            seen
        })
        .await
    }

    /// Wait until every client's node is ready; node ids by client slot.
    async fn wait_nodes(&self) -> anyhow::Result<Vec<String>> {
        poll("every client node ready", DEFAULT_TIMEOUT, || async {
            let (_, nodes) = get_json(&format!("{}/v1/nodes", self.base(0))).await.ok()?;
            let nodes = nodes.as_array()?;
            self.clients
                .iter()
                .map(|c| {
                    nodes
                        .iter()
                        .find(|n| n["Name"] == c.name.as_str() && n["Status"] == "ready")
                        .and_then(|n| n["ID"].as_str().map(str::to_string))
                })
                .collect::<Option<Vec<String>>>()
        })
        .await
    }

    /// The last lines of every log, for failure messages.
    fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        self.servers
            .iter()
            .map(|s| (&s.name, &s.log))
            .chain(self.clients.iter().map(|c| (&c.name, &c.log)))
            .map(|(name, log)| format!("--- {name} ---\n{}", tail(log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Agents first (so none starts anything new), then their tasks,
        // then the servers; the directory goes last, with the fields.
        for p in &mut self.client_procs {
            if let Some(mut p) = p.take() {
                p.kill();
            }
        }
        sweep(self.dir.path());
        for p in &mut self.server_procs {
            if let Some(mut p) = p.take() {
                p.kill();
            }
        }
    }
}

async fn restart_scenario(w: &mut World) -> anyhow::Result<()> {
    for i in 0..w.servers.len() {
        w.start_server(i)?;
    }
    w.wait_leader().await?;
    for i in 0..w.clients.len() {
        w.start_client(i)?;
    }
    let nodes = w.wait_nodes().await?;
    let base = w.base(0);

    let job = "svc";
    register(&base, service_job(job, 2, true))
        .await?
        .expect(StatusCode::OK)
        .context("registering the service job")?;
    let running = wait_running(&base, job, 2).await?;
    // One allocation per client (distinct_hosts); the slot of each's client.
    let mut allocs: Vec<(String, usize)> = Vec::new();
    for a in &running {
        let node = a["NodeID"].as_str().unwrap_or("");
        let slot = nodes
            .iter()
            .position(|n| n == node)
            .with_context(|| format!("allocation on unknown node {node}"))?;
        allocs.push((a["ID"].as_str().context("alloc id")?.to_string(), slot));
    }
    allocs.sort_by_key(|(_, slot)| *slot);
    ensure!(
        allocs.iter().map(|(_, s)| *s).collect::<Vec<_>>() == [0, 1],
        "distinct_hosts: expected one allocation per client, got {allocs:?}"
    );

    // Each task runs as one real process, its logs readable through any
    // server (the servers pass the request to the client's agent).
    let mut pids = Vec::new();
    for (k, (alloc, slot)) in allocs.iter().enumerate() {
        let data_dir = &w.clients[*slot].data_dir;
        let pid = wait_task_pid(data_dir, alloc).await?;
        wait_out_grows(data_dir, alloc).await?;
        let through = w.base(1 + k % 2);
        poll(
            &format!("{alloc}'s stdout through {through}"),
            Duration::from_secs(10),
            || async {
                let log = stdout_through(&through, alloc).await?;
                (log.contains(&format!("started-{alloc}")) && ticks(&log) > 0).then_some(())
            },
        )
        .await?;
        pids.push(pid);
    }
    eprintln!("tasks: {allocs:?} pids {pids:?}");

    // kill -9 of client agent 1 (slot 0): its task keeps running.
    let (victim, victim_pid) = (allocs[0].0.clone(), pids[0]);
    let victim_dir = w.clients[0].data_dir.clone();
    let ticks_before = ticks(&stdout_through(&base, &victim).await.unwrap_or_default());
    w.kill_client(0)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(alive(victim_pid), "task {victim_pid} died with its agent");
    wait_out_grows(&victim_dir, &victim)
        .await
        .context("the task should keep working while its agent is down")?;
    ensure!(
        task_processes(&victim) == [victim_pid],
        "task processes of {victim} while the agent is down: {:?}",
        task_processes(&victim)
    );

    // Restart it with the same flags and data directory: it re-attaches.
    w.start_client(0)?;
    // The new agent serves the task's logs again, including what the task
    // wrote while no agent read them.
    poll(
        "the restarted agent serving the task's stdout",
        Duration::from_secs(20),
        || async {
            let log = stdout_through(&base, &victim).await?;
            (ticks(&log) > ticks_before + 5).then_some(())
        },
    )
    .await?;
    poll(
        "the restarted client's node ready",
        Duration::from_secs(20),
        || async { (node_status(&base, &nodes[0]).await? == "ready").then_some(()) },
    )
    .await?;
    // For a while: the same process, one copy, the allocation running.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let tasks = task_processes(&victim);
        ensure!(
            tasks == [victim_pid],
            "after the agent restarted, task processes of {victim}: {tasks:?} (was {victim_pid}): {}",
            describe(&tasks)
        );
        ensure!(
            read_pid(&victim_dir, &victim) == Some(victim_pid),
            "the task was started again: pid file {:?}, was {victim_pid}",
            read_pid(&victim_dir, &victim)
        );
        let a = allocation(&base, &victim).await?;
        ensure!(
            a["ClientStatus"] == "running" && a["DesiredStatus"] == "run",
            "allocation {victim} after the agent restarted: client {} desired {}",
            a["ClientStatus"],
            a["DesiredStatus"]
        );
        let types = event_types(&a);
        ensure!(
            types.iter().filter(|t| *t == "Started").count() == 1,
            "allocation {victim} should have started once: events {types:?}"
        );
        ensure!(
            task_processes(&allocs[1].0) == [pids[1]],
            "the other client's task changed: {:?}",
            task_processes(&allocs[1].0)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_out_grows(&victim_dir, &victim).await?;
    ensure!(
        wait_running(&base, job, 2).await?.len() == 2,
        "two running allocations"
    );

    // Stopping the job kills every process, the re-attached one included.
    let ids: Vec<String> = allocs.iter().map(|(a, _)| a.clone()).collect();
    stop_job_and_check_no_process_left(&base, job, &ids, &pids, w.dir.path()).await?;
    Ok(())
}

/// With the world of `restart_scenario` still up: kill -9 one client agent
/// process together with its task; the servers mark its node down after
/// the TTL plus grace and replace the allocation on the other client.
async fn lost_process_scenario(w: &mut World) -> anyhow::Result<()> {
    let nodes = w.wait_nodes().await?;
    let base = w.base(0);
    let job = "lost";
    register(&base, service_job(job, 1, false))
        .await?
        .expect(StatusCode::OK)
        .context("registering the job")?;
    let first = wait_running(&base, job, 1).await?.remove(0);
    let first_id = first["ID"].as_str().context("alloc id")?.to_string();
    let node = first["NodeID"].as_str().unwrap_or("").to_string();
    let victim = nodes
        .iter()
        .position(|n| *n == node)
        .with_context(|| format!("allocation on unknown node {node}"))?;
    let survivor = 1 - victim;
    let pid = wait_task_pid(&w.clients[victim].data_dir, &first_id).await?;
    let pgid = stat(pid).map(|s| s.pgrp).unwrap_or(pid);

    // kill -9 of the agent and of its task's process group.
    let killed_at = std::time::Instant::now();
    w.kill_client(victim)?;
    kill9(-pgid);
    kill9(pid);
    poll(
        "the dead client's node marked down",
        Duration::from_secs(15),
        || async { (node_status(&base, &nodes[victim]).await? == "down").then_some(()) },
    )
    .await?;
    let replacement = poll(
        "a replacement running on the other client",
        Duration::from_secs(15),
        || async {
            let allocs = allocations(&base, job).await;
            allocs.into_iter().find(|a| {
                a["ClientStatus"] == "running"
                    && a["NodeID"] == nodes[survivor].as_str()
                    && a["ID"] != first_id.as_str()
            })
        },
    )
    .await;
    let replacement = match replacement {
        Ok(r) => r,
        Err(e) => {
            let allocs = allocations(&base, job).await;
            let evals = get_json(&format!("{base}/v1/job/{job}/evaluations"))
                .await
                .map(|(_, v)| v)
                .ok();
            anyhow::bail!(
                "{e}: allocations {} evaluations {:?}",
                serde_json::to_string(&allocs).unwrap_or_default(),
                evals
            );
        }
    };
    eprintln!(
        "node down and allocation replaced {:.1} s after kill -9 (TTL 1-2 s + grace 1 s)",
        killed_at.elapsed().as_secs_f64()
    );
    let old = allocation(&base, &first_id).await?;
    ensure!(
        old["ClientStatus"] == "lost",
        "the old allocation is lost: {}",
        old["ClientStatus"]
    );
    let new_id = replacement["ID"].as_str().context("alloc id")?.to_string();
    let new_pid = wait_task_pid(&w.clients[survivor].data_dir, &new_id).await?;
    stop_job_and_check_no_process_left(&base, job, &[new_id], &[new_pid], w.dir.path()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_client_agent_process_leaves_its_task_running_and_a_restarted_agent_re_attaches(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut w = World::new("cfaults", 3, 2)?;
    let mut result = restart_scenario(&mut w).await;
    if result.is_ok() {
        result = lost_process_scenario(&mut w).await;
    }
    if result.is_err() {
        eprintln!("logs:\n{}", w.logs());
    }
    drop(w);
    result
}

// ---- in-process: node down, allocation replaced ----

/// Heartbeat TTL 1 s (up to 2 s with the stagger), grace 1 s.
fn fast_heartbeats() -> HeartbeatConfig {
    HeartbeatConfig {
        min_ttl: Duration::from_secs(1),
        max_per_second: 50.0,
        grace: Duration::from_secs(1),
    }
}

/// The longest a silent node stays up: the largest TTL (stagger included)
/// plus grace, plus the leader's 250 ms timer tick.
const DOWN_WITHIN: Duration = Duration::from_millis(3_250);
/// Slack for a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

async fn lost_scenario(r: &TestRegion, dir: &Path) -> anyhow::Result<()> {
    let region = r.region.clone();
    let base = r.http(0);
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    let mut agents = Vec::new();
    for name in ["c1", "c2"] {
        let agent = ClientAgent::start(ClientConfig::dev(
            name,
            &region,
            dir.join(name),
            vec![r.rpc_addr(0)],
            r.ca.issue(Role::Client, &region)?,
        ))
        .await
        .with_context(|| format!("starting agent {name}"))?;
        ensure!(
            agent.wait_registered(Duration::from_secs(20)).await,
            "agent {name} registered"
        );
        agents.push(Some(agent));
    }
    let node_ids: Vec<String> = agents.iter().flatten().map(|a| a.node_id()).collect();
    for n in &node_ids {
        poll("node ready", Duration::from_secs(10), || async {
            (node_status(&base, n).await? == "ready").then_some(())
        })
        .await?;
    }

    let job = "lost";
    register(&base, service_job(job, 1, false))
        .await?
        .expect(StatusCode::OK)
        .context("registering the job")?;
    let first = wait_running(&base, job, 1).await?.remove(0);
    let first_id = first["ID"].as_str().context("alloc id")?.to_string();
    let victim = node_ids
        .iter()
        .position(|n| first["NodeID"] == n.as_str())
        .context("allocation on an unknown node")?;
    let survivor = 1 - victim;
    let victim_dir = dir.join(["c1", "c2"][victim]);
    let survivor_dir = dir.join(["c1", "c2"][survivor]);
    let pid = wait_task_pid(&victim_dir, &first_id).await?;
    let pgid = stat(pid).context("task stat")?.pgrp;
    ensure!(pgid > 1 && pgid != pid, "the task runs in its shim's group");

    // kill -9 of the agent together with its tasks: the agent stops without
    // a word to the servers, then its task group dies by SIGKILL.
    let killed = Instant::now();
    drop(agents[victim].take());
    kill9(-pgid);
    poll("the killed task gone", Duration::from_secs(5), || async {
        (!alive(pid) && alloc_processes(&first_id).is_empty()).then_some(())
    })
    .await
    .with_context(|| describe(&alloc_processes(&first_id)))?;

    poll(
        "the killed client's node down",
        DOWN_WITHIN + SLACK + Duration::from_secs(5),
        || async { (node_status(&base, &node_ids[victim]).await? == "down").then_some(()) },
    )
    .await?;
    let down_after = killed.elapsed();
    let survivor_node = node_ids[survivor].clone();
    let replacement = poll(
        "a replacement running on the other client",
        Duration::from_secs(30),
        || async {
            allocations(&base, job).await.into_iter().find(|a| {
                a["ID"] != first_id.as_str()
                    && a["ClientStatus"] == "running"
                    && a["NodeID"] == survivor_node.as_str()
            })
        },
    )
    .await?;
    let replaced_after = killed.elapsed();
    eprintln!("node down after {down_after:?}, replacement running after {replaced_after:?}");
    ensure!(
        down_after <= DOWN_WITHIN + SLACK,
        "node marked down {down_after:?} after its last chance to heartbeat; TTL + grace is at most {DOWN_WITHIN:?}"
    );
    ensure!(
        replaced_after <= DOWN_WITHIN + SLACK + Duration::from_secs(2),
        "replacement running {replaced_after:?} after the kill"
    );
    let replacement_id = replacement["ID"].as_str().context("alloc id")?.to_string();
    let old = allocation(&base, &first_id).await?;
    ensure!(
        old["ClientStatus"] == "lost",
        "the killed client's allocation should be lost: client {} desired {}",
        old["ClientStatus"],
        old["DesiredStatus"]
    );
    let new = allocation(&base, &replacement_id).await?;
    ensure!(
        new["PreviousAllocation"] == first_id.as_str(),
        "the replacement's PreviousAllocation: {}",
        new["PreviousAllocation"]
    );
    let new_pid = wait_task_pid(&survivor_dir, &replacement_id).await?;
    wait_out_grows(&survivor_dir, &replacement_id).await?;
    ensure!(
        alloc_processes(&first_id).is_empty(),
        "processes of the lost allocation: {}",
        describe(&alloc_processes(&first_id))
    );
    let all = allocations(&base, job).await;
    ensure!(
        all.len() == 2,
        "expected two allocations, got {}",
        all.len()
    );

    stop_job_and_check_no_process_left(&base, job, &[replacement_id], &[new_pid], dir).await?;
    for a in agents.into_iter().flatten() {
        a.shutdown_and_kill_tasks().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_killed_with_its_tasks_is_marked_down_and_its_allocation_replaced_on_the_other_client(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let dir = tempfile::Builder::new()
        .prefix("atoll-client-lost-")
        .tempdir()?;
    let _sweeper = Sweeper(dir.path().to_path_buf());
    let r = TestRegion::start_with(1, "lost", |c| c.leader.heartbeat = fast_heartbeats()).await?;
    let result = lost_scenario(&r, dir.path()).await;
    r.shutdown().await;
    result
}
