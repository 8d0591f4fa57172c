//! A 3-server Atoll region started in-process on loopback, and its write
//! workload (`PUT /v1/jobs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ops_kit::tls::{DevCa, Role};
use region_server::{RegionServer, ServerConfig};

use super::load::WriteFn;

const REGION: &str = "bench";

/// A running region; [`AtollRegion::shutdown`] stops it, dropping the value
/// removes its data directories.
pub struct AtollRegion {
    servers: Vec<RegionServer>,
    /// One runtime per server (empty when the servers share the caller's).
    runtimes: Vec<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl Drop for AtollRegion {
    fn drop(&mut self) {
        // Servers not shut down (errors): drop them, then stop their
        // runtimes without blocking (we may be inside the caller's runtime).
        self.servers.clear();
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

impl AtollRegion {
    /// Start three servers with `bootstrap_expect = 3` under `work_dir`.
    ///
    /// With `own_runtimes`, each server runs on a multi-thread tokio runtime
    /// of its own with `worker_threads` workers, as if it were its own
    /// process (as etcd's members are); otherwise all three share the
    /// caller's runtime, and its workers, with the load generator.
    pub async fn start(
        work_dir: &Path,
        own_runtimes: bool,
        worker_threads: usize,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("atoll-bench-raft-")
            .tempdir_in(work_dir)
            .with_context(|| format!("creating a data directory under {}", work_dir.display()))?;
        ops_kit::tls::install_crypto_provider();
        let ca = DevCa::generate().context("generating the region's CA")?;
        let bundle = ca
            .issue(Role::Server, REGION)
            .context("issuing server certificates")?;
        let ports = super::free_ports(6)?;
        let rpc_addrs: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let mut region = Self {
            servers: Vec::new(),
            runtimes: Vec::new(),
            dir,
        };
        for i in 0..3 {
            let name = format!("s{}", i + 1);
            let mut cfg =
                ServerConfig::dev(&name, REGION, region.dir.path().join(&name), bundle.clone());
            cfg.http_addr = format!("127.0.0.1:{}", ports[2 * i]);
            cfg.rpc_addr = rpc_addrs[i].clone();
            cfg.bootstrap_expect = Some(3);
            cfg.join = rpc_addrs.clone();
            let started = if own_runtimes {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads.max(1))
                    .thread_name(format!("atoll-{name}"))
                    .enable_all()
                    .build()
                    .with_context(|| format!("building the runtime of server {name}"))?;
                let handle = rt.spawn(RegionServer::start(cfg));
                region.runtimes.push(rt);
                handle.await.map_err(anyhow::Error::from).and_then(|r| r)
            } else {
                RegionServer::start(cfg).await
            };
            match started {
                Ok(s) => region.servers.push(s),
                Err(e) => {
                    region.shutdown().await;
                    return Err(e.context(format!("starting Atoll server {name}")));
                }
            }
        }
        Ok(region)
    }

    /// Data directories' parent.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until `/v1/status/leader` answers a leader on every server, all
    /// three agree on it and see three voters; return the leader's HTTP URL.
    pub async fn wait_for_leader(
        &self,
        http: &reqwest::Client,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let err = match self.leader_once(http).await {
                Ok(url) => return Ok(url),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                anyhow::bail!("the Atoll region has no stable leader after {within:?}: {err:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn leader_once(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        let mut leader_rpc = None;
        for s in &self.servers {
            let url = format!("http://{}/v1/status/leader", s.http_addr);
            let resp = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
            let addr: String = resp
                .json()
                .await
                .with_context(|| format!("{url}: not a JSON string"))?;
            anyhow::ensure!(!addr.is_empty(), "{url}: no leader yet");
            match &leader_rpc {
                None => leader_rpc = Some(addr),
                Some(l) => {
                    anyhow::ensure!(*l == addr, "servers disagree on the leader ({l} vs {addr})")
                }
            }
            let voters = s.service.cluster_info().voters.len();
            anyhow::ensure!(voters == 3, "{} sees {voters} voters", s.http_addr);
        }
        let leader_rpc = leader_rpc.context("no servers")?;
        let leader = self
            .servers
            .iter()
            .find(|s| s.rpc_addr.to_string() == leader_rpc)
            .with_context(|| format!("leader {leader_rpc} is none of our servers"))?;
        anyhow::ensure!(
            leader.service.is_leader(),
            "{leader_rpc} does not consider itself leader yet"
        );
        Ok(format!("http://{}", leader.http_addr))
    }

    /// The highest Raft index applied on any server.
    pub fn applied_index(&self) -> u64 {
        self.servers
            .iter()
            .map(|s| s.service.cluster_info().applied)
            .max()
            .unwrap_or(0)
    }

    /// Wait until no server applies anything new for `quiet` (the leader's
    /// scheduler has worked off the evaluations the writes created), at most
    /// `within`; returns the applied index.
    pub async fn settle(&self, quiet: Duration, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let mut last = self.applied_index();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.applied_index();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }

    /// The HTTP URL of the server that leads now, if any.
    pub fn current_leader(&self) -> Option<String> {
        self.servers
            .iter()
            .find(|s| s.service.is_leader())
            .map(|s| format!("http://{}", s.http_addr))
    }

    /// Stop every server (each bounded to 15 s), then their runtimes.
    pub async fn shutdown(mut self) {
        let mut runtimes = std::mem::take(&mut self.runtimes).into_iter();
        for s in std::mem::take(&mut self.servers) {
            let name = s.http_addr;
            let rt = runtimes.next();
            let stop = async {
                match &rt {
                    // Shut down on the server's own runtime, where its tasks live.
                    Some(rt) => {
                        let _ = rt.spawn(s.shutdown()).await;
                    }
                    None => s.shutdown().await,
                }
            };
            if tokio::time::timeout(Duration::from_secs(15), stop)
                .await
                .is_err()
            {
                tracing::warn!(%name, "Atoll server did not shut down within 15 s");
            }
            if let Some(rt) = rt {
                rt.shutdown_background();
            }
        }
        for rt in runtimes {
            rt.shutdown_background();
        }
    }
}

/// A job registration body of about `value_bytes` bytes, padded in `Meta`.
pub fn job_body(id: &str, value_bytes: usize) -> Vec<u8> {
    let body = |pad: &str| {
        serde_json::json!({
            "Job": {
                "ID": id,
                "Type": "batch",
                "Meta": { "pad": pad },
                "TaskGroups": [{
                    "Name": "g",
                    "Tasks": [{
                        "Name": "t",
                        "Driver": "raw_exec",
                        "Config": { "command": "/bin/true" }
                    }]
                }]
            }
        })
        .to_string()
    };
    let overhead = body("").len();
    body(&"x".repeat(value_bytes.saturating_sub(overhead))).into_bytes()
}

/// `PUT <leader>/v1/jobs` of job `bench-c<clients>-<client>-<seq>`; a 200 is
/// a write committed through Raft and applied.
pub fn writer(
    http: reqwest::Client,
    leader: String,
    clients: usize,
    value_bytes: usize,
) -> WriteFn {
    let url: Arc<str> = format!("{leader}/v1/jobs").into();
    Arc::new(move |client, seq| {
        let http = http.clone();
        let url = url.clone();
        Box::pin(async move {
            let body = job_body(&format!("bench-c{clients}-{client}-{seq}"), value_bytes);
            let resp = http
                .put(&*url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("request failed: {}", super::load::error_chain(&e)))?;
            let status = resp.status();
            if status == reqwest::StatusCode::OK {
                // Drain the body so the connection goes back to the pool.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_padded_to_size() {
        for size in [1024, 4096] {
            let b = job_body("bench-c64-63-12345", size);
            assert_eq!(b.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["Job"]["ID"], "bench-c64-63-12345");
        }
        // Smaller than the skeleton: no padding, still valid.
        let b = job_body("x", 10);
        assert!(b.len() > 10);
        serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    }
}
