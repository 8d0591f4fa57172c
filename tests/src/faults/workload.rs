//! The workload: concurrent clients register, update, deregister and read
//! jobs through servers and gateways, recording every operation in a
//! [`History`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::history::{History, Op, OpKind, Outcome};

/// Where a request can be sent.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name for the history (`a-s1`, `gw2`).
    pub name: String,
    /// Base URL.
    pub base: String,
}

/// Shape of the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients per region.
    pub workers_per_region: usize,
    /// Jobs each region's clients share at any time.
    pub keys_per_region: usize,
    /// A key is retired after this long and a fresh one takes its place,
    /// which keeps each key's history small for the checker.
    pub key_lifetime: Duration,
    /// Pause between one client's operations.
    pub pause: Duration,
    /// How long a client waits for an answer before recording the outcome
    /// as unknown.
    pub request_timeout: Duration,
    /// Prefix of job ids.
    pub prefix: String,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            workers_per_region: 3,
            keys_per_region: 6,
            key_lifetime: Duration::from_secs(15),
            pause: Duration::from_millis(50),
            request_timeout: Duration::from_secs(10),
            prefix: "fj".into(),
        }
    }
}

/// Targets by region, changeable while the workload runs (a scenario takes
/// a killed process out and puts it back).
pub type Targets = Arc<RwLock<BTreeMap<String, Vec<Target>>>>;

/// The job a write registers: one group of one `mock_driver` task that runs
/// for an hour, with the written value in its meta.
pub fn job_body(id: &str, region: &str, value: u64) -> Value {
    json!({ "Job": {
        "ID": id,
        "Region": region,
        "Datacenters": ["dc1"],
        "Type": "service",
        "Meta": { "fault_v": value.to_string() },
        "TaskGroups": [{
            "Name": "g",
            "Count": 1,
            "Tasks": [{
                "Name": "t",
                "Driver": "mock_driver",
                "Config": { "run_for": "1h" },
                "Resources": { "CPU": 100, "MemoryMB": 32 }
            }]
        }]
    }})
}

/// A deterministic generator (xorshift64*), so a failing run can be replayed
/// with the seed it printed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (never all zero).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// An HTTP client for the workload: no pooling (processes come and go),
/// `timeout` per request.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .build()?)
}

/// The job id of slot `slot` of `region` during generation `gen`.
pub fn key_name(prefix: &str, region: &str, slot: usize, gen: u64) -> String {
    format!("{prefix}-{region}-{slot}-g{gen}")
}

static NEXT_VALUE: AtomicU64 = AtomicU64::new(1);

/// One operation against `target`, recorded in `history`.
#[allow(clippy::too_many_arguments)]
pub async fn one_op(
    http: &reqwest::Client,
    history: &History,
    client: usize,
    target: &Target,
    region: &str,
    key: &str,
    kind: OpKind,
) -> Op {
    let invoke = history.now();
    let (outcome, index, error, kind) = match kind {
        OpKind::Write(v) => {
            let url = format!("{}/v1/jobs?region={region}", target.base);
            let r = http.put(&url).json(&job_body(key, region, v)).send().await;
            match r {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    if status == StatusCode::OK {
                        let idx = serde_json::from_str::<Value>(&body)
                            .ok()
                            .and_then(|j| j["JobModifyIndex"].as_u64())
                            .unwrap_or(0);
                        (Outcome::Ok(None), idx, None, kind)
                    } else if status.is_client_error() {
                        (Outcome::Failed, 0, Some(format!("{status}: {body}")), kind)
                    } else {
                        (Outcome::Unknown, 0, Some(format!("{status}: {body}")), kind)
                    }
                }
                Err(e) if e.is_connect() => (Outcome::Failed, 0, Some(e.to_string()), kind),
                Err(e) => (Outcome::Unknown, 0, Some(e.to_string()), kind),
            }
        }
        OpKind::Delete => {
            let url = format!("{}/v1/job/{key}?purge=true&region={region}", target.base);
            match http.delete(&url).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let idx = header_index(resp.headers());
                    let body = resp.text().await.unwrap_or_default();
                    if status == StatusCode::OK {
                        (Outcome::Ok(None), idx, None, kind)
                    } else if status == StatusCode::NOT_FOUND && body.contains("job not found") {
                        // The server read (linearizably) that there is no
                        // such job: an observation, recorded as a read.
                        (Outcome::Ok(None), idx, None, OpKind::Read)
                    } else if status.is_client_error() {
                        (Outcome::Failed, 0, Some(format!("{status}: {body}")), kind)
                    } else {
                        (Outcome::Unknown, 0, Some(format!("{status}: {body}")), kind)
                    }
                }
                Err(e) if e.is_connect() => (Outcome::Failed, 0, Some(e.to_string()), kind),
                Err(e) => (Outcome::Unknown, 0, Some(e.to_string()), kind),
            }
        }
        OpKind::Read => {
            let url = format!("{}/v1/job/{key}?region={region}", target.base);
            match http.get(&url).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let idx = header_index(resp.headers());
                    let body = resp.text().await.unwrap_or_default();
                    if status == StatusCode::OK {
                        let v = serde_json::from_str::<Value>(&body).ok().and_then(|j| {
                            j["Meta"]["fault_v"].as_str().and_then(|s| s.parse().ok())
                        });
                        match v {
                            Some(v) => (Outcome::Ok(Some(v)), idx, None, kind),
                            None => (
                                Outcome::Failed,
                                idx,
                                Some(format!("no fault_v in {body}")),
                                kind,
                            ),
                        }
                    } else if status == StatusCode::NOT_FOUND && body.contains("job not found") {
                        (Outcome::Ok(None), idx, None, kind)
                    } else {
                        (Outcome::Failed, 0, Some(format!("{status}: {body}")), kind)
                    }
                }
                Err(e) => (Outcome::Failed, 0, Some(e.to_string()), kind),
            }
        }
    };
    let op = Op {
        client,
        key: key.to_string(),
        kind,
        invoke,
        complete: history.now(),
        outcome,
        index,
        via: target.name.clone(),
        error,
    };
    history.record(op.clone());
    op
}

fn header_index(h: &reqwest::header::HeaderMap) -> u64 {
    h.get("X-Nomad-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Run one region's client `client` until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub async fn worker(
    cfg: WorkloadConfig,
    history: History,
    targets: Targets,
    region: String,
    client: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let http = http_client(cfg.request_timeout)?;
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let gen = history.start().elapsed().as_secs() / cfg.key_lifetime.as_secs().max(1);
        let key = key_name(&cfg.prefix, &region, rng.below(cfg.keys_per_region), gen);
        let target = {
            let t = targets.read().unwrap_or_else(|e| e.into_inner());
            let list = t.get(&region).cloned().unwrap_or_default();
            if list.is_empty() {
                None
            } else {
                Some(list[rng.below(list.len())].clone())
            }
        };
        let Some(target) = target else {
            tokio::time::sleep(cfg.pause).await;
            continue;
        };
        let kind = match rng.below(10) {
            0..=4 => OpKind::Write(NEXT_VALUE.fetch_add(1, Ordering::Relaxed)),
            5 => OpKind::Delete,
            _ => OpKind::Read,
        };
        one_op(&http, &history, client, &target, &region, &key, kind).await;
        tokio::time::sleep(cfg.pause).await;
    }
    Ok(())
}

/// A running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Workload {
    /// Start `cfg.workers_per_region` clients per region of `targets`.
    pub fn start(cfg: &WorkloadConfig, history: &History, targets: &Targets, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let regions: Vec<String> = targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut tasks = Vec::new();
        let mut client = 0;
        for region in regions {
            for _ in 0..cfg.workers_per_region {
                client += 1;
                tasks.push(tokio::spawn(worker(
                    cfg.clone(),
                    history.clone(),
                    targets.clone(),
                    region.clone(),
                    client,
                    seed.wrapping_mul(client as u64 + 7919),
                    stop.clone(),
                )));
            }
        }
        Self { stop, tasks }
    }

    /// Stop every client and wait for their last operations.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}
