//! Process-level test: three `region-server` processes on loopback; the
//! leader dies by SIGKILL, the survivors elect a new leader and keep every
//! acknowledged write, and the killed server comes back from its files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use atoll_tests::{
    free_addr, get, get_json, must_register, poll, region_server_binary, wait_ok, Proc,
    DEFAULT_TIMEOUT,
};
use ops_kit::tls::{DevCa, Role};
use reqwest::StatusCode;
use serde_json::Value;

/// A new leader within the election timeout (max 1 s) plus 1 s, with slack
/// for a loaded CI machine.
const FAILOVER_BUDGET: Duration = Duration::from_millis(2500);

/// How to start one server process.
struct Spec {
    name: String,
    http: String,
    rpc: String,
    gossip: String,
    data_dir: PathBuf,
    log: PathBuf,
}

struct Cluster {
    bin: PathBuf,
    tls: (PathBuf, PathBuf, PathBuf),
    specs: Vec<Spec>,
    procs: Vec<Option<Proc>>,
    gossip_key: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn new(n: usize, region: &str) -> anyhow::Result<Self> {
        ops_kit::tls::install_crypto_provider();
        let bin = region_server_binary()?;
        let dir = tempfile::Builder::new().prefix("atoll-proc-").tempdir()?;
        let ca = DevCa::generate()?;
        let tls = ca
            .issue(Role::Server, region)?
            .write(&dir.path().join("tls"), "server")?;
        let specs = (1..=n)
            .map(|k| Spec {
                name: format!("s{k}"),
                http: free_addr(),
                rpc: free_addr(),
                gossip: free_addr(),
                data_dir: dir.path().join(format!("s{k}")),
                log: dir.path().join(format!("s{k}.log")),
            })
            .collect();
        Ok(Self {
            bin,
            tls,
            specs,
            procs: (0..n).map(|_| None).collect(),
            gossip_key: ops_kit::gossip::Keyring::generate_key(),
            _dir: dir,
        })
    }

    /// Start (or restart, with the same flags and data dir) process `i`.
    fn start(&mut self, i: usize, region: &str) -> anyhow::Result<()> {
        let s = &self.specs[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", &s.name, "--region", region])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--http-addr", &s.http, "--rpc-addr", &s.rpc])
            .args(["--bootstrap-expect", &self.specs.len().to_string()])
            .args(["--gossip-addr", &s.gossip, "--encrypt", &self.gossip_key])
            .args(["--retry-join", &self.specs[0].gossip]);
        for other in &self.specs {
            cmd.args(["--join", &other.rpc]);
        }
        cmd.arg("--tls-ca")
            .arg(&self.tls.0)
            .arg("--tls-cert")
            .arg(&self.tls.1)
            .arg("--tls-key")
            .arg(&self.tls.2)
            .env("RUST_LOG", "info,openraft=warn,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.procs[i] = Some(Proc { child });
        Ok(())
    }

    fn base(&self, i: usize) -> String {
        format!("http://{}", self.specs[i].http)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.specs.len())
            .filter(|i| self.procs[*i].is_some())
            .collect()
    }

    /// The slot whose RPC address is `addr`.
    fn slot_of_rpc(&self, addr: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.rpc == addr)
    }

    /// Wait until every server in `among` names the same leader through
    /// `/v1/status/leader`, that leader is one of `among`, and it is not
    /// `not`. Its slot.
    async fn wait_leader(
        &self,
        among: &[usize],
        not: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        poll("an agreed leader", timeout, || async {
            let mut seen = None;
            for i in among {
                let (code, v) = get_json(&format!("{}/v1/status/leader", self.base(*i)))
                    .await
                    .ok()?;
                let slot = self.slot_of_rpc(v.as_str()?)?;
                if code != StatusCode::OK || seen.is_some_and(|s| s != slot) {
                    return None;
                }
                seen = Some(slot);
            }
            seen.filter(|s| among.contains(s) && Some(*s) != not)
        })
        .await
    }

    /// The last lines of every server's log, for failure messages.
    fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        self.specs
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.name, tail(&s.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn job_exists(base: &str, id: &str, stale: bool) -> anyhow::Result<()> {
    let url = format!("{base}/v1/job/{id}{}", if stale { "?stale" } else { "" });
    let r = get(&url).await?.expect(StatusCode::OK)?;
    let job: Value = r.json();
    ensure!(job["ID"] == id, "{url}: {}", r.body);
    Ok(())
}

async fn scenario(c: &mut Cluster, region: &str) -> anyhow::Result<()> {
    for i in 0..3 {
        c.start(i, region)?;
    }
    let all = c.running();
    let leader = c.wait_leader(&all, None, DEFAULT_TIMEOUT).await?;

    for k in 0..30 {
        must_register(&c.base(k % 3), &format!("job-{k:02}")).await?;
    }

    // SIGKILL the leader.
    let started = Instant::now();
    c.procs[leader].take().context("leader process")?.kill();
    let survivors = c.running();
    let new_leader = c
        .wait_leader(&survivors, Some(leader), Duration::from_secs(15))
        .await?;
    let took = started.elapsed();
    eprintln!("kill -9 of the leader: new leader after {took:?}");
    ensure!(
        took < FAILOVER_BUDGET,
        "new leader after {took:?}, budget {FAILOVER_BUDGET:?}"
    );
    ensure!(new_leader != leader);

    for k in 0..30 {
        for i in &survivors {
            job_exists(&c.base(*i), &format!("job-{k:02}"), false)
                .await
                .with_context(|| format!("acknowledged job-{k:02} on server {i}"))?;
        }
    }
    for k in 0..10 {
        must_register(&c.base(survivors[k % 2]), &format!("after-{k}")).await?;
    }

    // The killed server comes back from its files and catches up.
    c.start(leader, region)?;
    for k in 0..10 {
        wait_ok(
            &format!("{}/v1/job/after-{k}?stale", c.base(leader)),
            DEFAULT_TIMEOUT,
        )
        .await
        .with_context(|| format!("restarted server serving after-{k}"))?;
    }
    job_exists(&c.base(leader), "job-29", true).await?;
    let all = c.running();
    c.wait_leader(&all, None, DEFAULT_TIMEOUT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_leader_process_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let region = "proc";
    let mut c = Cluster::new(3, region)?;
    let result = scenario(&mut c, region).await;
    if result.is_err() {
        eprintln!("server logs:\n{}", c.logs());
    }
    // Dropping the cluster kills every process still running.
    drop(c);
    result
}
