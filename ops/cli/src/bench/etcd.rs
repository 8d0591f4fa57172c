//! A 3-member etcd cluster as child processes on loopback, and its write
//! workload (`POST /v3/kv/put` on the v3 JSON gateway).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::load::WriteFn;

struct Member {
    name: String,
    client_url: String,
    log: PathBuf,
    child: Child,
}

/// A running cluster. Dropping it kills the processes, waits for them and
/// removes their data directories (also on errors and panics).
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

/// `etcd --version`'s first line, or why it could not run.
pub fn version(bin: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{bin} --version` (install etcd, e.g. Debian's etcd-server, or pass --no-etcd)"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{bin} --version` failed: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

impl EtcdCluster {
    /// Start three members under `work_dir` with default durability (the WAL
    /// is fsynced on every commit).
    pub fn start(bin: &str, work_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("etcd-bench-raft-")
            .tempdir_in(work_dir)
            .with_context(|| format!("creating a data directory under {}", work_dir.display()))?;
        let ports = super::free_ports(6)?;
        let names: Vec<String> = (1..=3).map(|i| format!("e{i}")).collect();
        let client_urls: Vec<String> = (0..3)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i]))
            .collect();
        let peer_urls: Vec<String> = (0..3)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let initial_cluster = names
            .iter()
            .zip(&peer_urls)
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("atoll-bench-{:016x}", rand::random::<u64>());
        let mut cluster = Self {
            members: Vec::new(),
            dir,
        };
        for i in 0..3 {
            let log = cluster.dir.path().join(format!("{}.log", names[i]));
            let log_file =
                File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let child = Command::new(bin)
                .arg("--name")
                .arg(&names[i])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(&names[i]))
                .arg("--listen-client-urls")
                .arg(&client_urls[i])
                .arg("--advertise-client-urls")
                .arg(&client_urls[i])
                .arg("--listen-peer-urls")
                .arg(&peer_urls[i])
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_urls[i])
                .arg("--initial-cluster")
                .arg(&initial_cluster)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(&token)
                .arg("--logger")
                .arg("zap")
                .arg("--log-outputs")
                .arg("stderr")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("starting `{bin}` for member {}", names[i]))?;
            cluster.members.push(Member {
                name: names[i].clone(),
                client_url: client_urls[i].clone(),
                log,
                child,
            });
        }
        Ok(cluster)
    }

    /// Data directories' parent.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until every member answers `/health` with `"health":"true"`.
    pub async fn wait_healthy(
        &mut self,
        http: &reqwest::Client,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            for m in &mut self.members {
                if let Some(status) = m.child.try_wait()? {
                    anyhow::bail!(
                        "etcd member {} exited ({status}); {}",
                        m.name,
                        log_tail(&m.log)
                    );
                }
            }
            let err = match self.healthy_once(http).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let logs: Vec<String> = self.members.iter().map(|m| log_tail(&m.log)).collect();
                anyhow::bail!(
                    "etcd is not healthy after {within:?}: {err:#}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn healthy_once(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        for m in &self.members {
            let url = format!("{}/health", m.client_url);
            let resp = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp
                .json()
                .await
                .with_context(|| format!("{url}: not JSON"))?;
            anyhow::ensure!(
                status.is_success() && body["health"] == "true",
                "{url}: {status} {body}"
            );
        }
        Ok(())
    }

    /// The client URL of the member every member names as leader.
    pub async fn leader(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        let mut leader_id = None;
        let mut leader_url = None;
        for m in &self.members {
            let url = format!("{}/v3/maintenance/status", m.client_url);
            let resp = http
                .post(&url)
                .timeout(Duration::from_secs(5))
                .json(&serde_json::json!({}))
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp
                .json()
                .await
                .with_context(|| format!("{url}: not JSON"))?;
            anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
            let leader = id_string(&body["leader"])
                .with_context(|| format!("{url}: no leader in {body}"))?;
            let me = id_string(&body["header"]["member_id"])
                .with_context(|| format!("{url}: no member_id in {body}"))?;
            anyhow::ensure!(leader != "0", "{url}: no leader yet");
            match &leader_id {
                None => leader_id = Some(leader.clone()),
                Some(l) => anyhow::ensure!(
                    *l == leader,
                    "members disagree on the leader ({l} vs {leader})"
                ),
            }
            if me == leader {
                leader_url = Some(m.client_url.clone());
            }
        }
        leader_url.context("the leader named by the members is none of them")
    }

    /// [`EtcdCluster::leader`], retried until `within` has passed.
    pub async fn wait_for_leader(
        &self,
        http: &reqwest::Client,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            match self.leader(http).await {
                Ok(url) => return Ok(url),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("etcd has no stable leader after {within:?}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// A uint64 as the JSON gateway writes it (a string), or as a number.
fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

/// `POST <leader>/v3/kv/put` of key `bench/c<clients>/<client>/<seq>` with a
/// `value_bytes` value; a 200 is a write committed through Raft (etcd
/// answers after the entry is committed and applied).
pub fn writer(
    http: reqwest::Client,
    leader: String,
    clients: usize,
    value_bytes: usize,
) -> WriteFn {
    let url: Arc<str> = format!("{leader}/v3/kv/put").into();
    let value: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..value_bytes)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect()
    };
    let value: Arc<str> = B64.encode(value.as_bytes()).into();
    Arc::new(move |client, seq| {
        let http = http.clone();
        let url = url.clone();
        let value = value.clone();
        Box::pin(async move {
            let key = B64.encode(format!("bench/c{clients}/{client}/{seq}"));
            let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
            let resp = http
                .post(&*url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("request failed: {}", super::load::error_chain(&e)))?;
            let status = resp.status();
            if status == reqwest::StatusCode::OK {
                resp.bytes().await.map_err(|e| {
                    format!("reading the response: {}", super::load::error_chain(&e))
                })?;
                Ok(())
            } else {
                let text = resp.text().await.unwrap_or_default();
                Err(format!("HTTP {status}: {}", text.trim()))
            }
        })
    })
}
