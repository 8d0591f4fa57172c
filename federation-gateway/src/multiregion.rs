//! Multi-region jobs: one submission, registered in every region it lists.
//!
//! A job with a `Multiregion` block is split into one job per listed
//! region: `Region` set, each group's `Count` replaced by the region's
//! `Count` (when not 0), `Datacenters` and `NodePool` by the region's when
//! given, the region's `Meta` merged over the job's. Regions are deployed in
//! the listed order, `Strategy.MaxParallel` at a time (0: all at once): the
//! first batch is registered before the submitting request is answered
//! (with the first region's register response); a background task watches
//! each batch until every region of it is healthy, then registers the next.
//!
//! A region is healthy when the latest deployment of the registered job
//! version there is `successful` (the region's deployment watcher judged
//! its allocations healthy), or, for a job version without a deployment
//! (no `update` block, batch jobs), when its allocations of that version
//! are running at the desired count.
//! A region fails when its deployment fails or is cancelled, when its
//! register is refused, or when it is not healthy within the configured
//! rollout deadline. Then `Strategy.OnFailure` decides: `fail_all` stops
//! the job in every region this rollout registered it in and registers no
//! more; `fail_local` leaves the failed region as it is and goes on with
//! the next batch; the default (`""`) registers no more regions and leaves
//! those already done as they are.
//!
//! A rollout in progress lives in the gateway task that received the job:
//! gateways hold no shared state, so if that gateway stops, the regions
//! already registered keep the job and the remaining ones are not
//! registered until the job is submitted again (to any gateway or server).
//!
//! `DELETE /v1/job/{id}?global=true` stops the job in every region (those
//! its `Multiregion` block lists, or every known region when no region
//! still has the job) and cancels a rollout in progress;
//! `GET /v1/job/{id}/regions` shows every region's view side by side.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use http::StatusCode;
use proto::model::{Job, JobRegisterRequest, MultiregionRegion};
use proto::rpc::{HttpHeader, HttpRequest};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::http::{error, query_value, FrontState};

/// How long the federated view and global calls wait for one region.
const REGION_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where one region of a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegionRollout {
    /// `pending`, `deploying`, `healthy`, `failed`, `stopped` or `cancelled`.
    pub state: String,
    /// The job version registered there.
    pub job_version: Option<u64>,
    /// Why it failed, when it did.
    pub message: String,
}

/// One multi-region rollout on this gateway.
pub struct Rollout {
    regions: Mutex<BTreeMap<String, RegionRollout>>,
    order: Vec<String>,
    cancel: watch::Sender<bool>,
}

impl Rollout {
    fn set(&self, region: &str, state: &str, version: Option<u64>, message: &str) {
        let mut map = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(region.to_string()).or_insert(RegionRollout {
            state: String::new(),
            job_version: None,
            message: String::new(),
        });
        entry.state = state.to_string();
        if version.is_some() {
            entry.job_version = version;
        }
        entry.message = message.to_string();
    }

    /// Every region's state, by region.
    pub fn snapshot(&self) -> BTreeMap<String, RegionRollout> {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn state_of(&self, region: &str) -> Option<String> {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(region)
            .map(|r| r.state.clone())
    }
}

/// (namespace, job id).
type JobKey = (String, String);

/// The rollouts this gateway runs, by namespace and job id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Rollouts {
    inner: Arc<Mutex<HashMap<JobKey, Arc<Rollout>>>>,
}

impl Rollouts {
    fn begin(&self, ns: &str, id: &str, order: Vec<String>) -> Arc<Rollout> {
        let (cancel, _) = watch::channel(false);
        let regions = order
            .iter()
            .map(|r| {
                (
                    r.clone(),
                    RegionRollout {
                        state: "pending".into(),
                        job_version: None,
                        message: String::new(),
                    },
                )
            })
            .collect();
        let rollout = Arc::new(Rollout {
            regions: Mutex::new(regions),
            order,
            cancel,
        });
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = map.insert((ns.to_string(), id.to_string()), rollout.clone()) {
            // A newer submission replaces a rollout still running.
            let _ = old.cancel.send(true);
        }
        rollout
    }

    /// The rollout of a job, if this gateway ran one.
    pub fn get(&self, ns: &str, id: &str) -> Option<Arc<Rollout>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
    }

    fn cancel(&self, ns: &str, id: &str) {
        if let Some(r) = self.get(ns, id) {
            let _ = r.cancel.send(true);
        }
    }

    /// Counts by region state, for the rollouts gauge.
    fn counts(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for r in self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            for s in r.snapshot().values() {
                *out.entry(s.state.clone()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// The job as registered in `region`.
pub fn job_for_region(job: &Job, region: &MultiregionRegion) -> Job {
    let mut out = job.clone();
    out.region = region.name.clone();
    if !region.datacenters.is_empty() {
        out.datacenters = region.datacenters.clone();
    }
    if !region.node_pool.is_empty() {
        out.node_pool = region.node_pool.clone();
    }
    if region.count > 0 {
        for g in &mut out.task_groups {
            g.count = region.count;
        }
    }
    for (k, v) in &region.meta {
        out.meta.insert(k.clone(), v.clone());
    }
    out
}

/// One call to a region, its whole answer read.
async fn call(
    s: &FrontState,
    region: &str,
    method: &str,
    path_and_query: String,
    body: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<(StatusCode, Bytes), String> {
    let req = HttpRequest {
        method: method.to_string(),
        path_and_query,
        headers: vec![HttpHeader {
            name: "content-type".into(),
            value: b"application/json".to_vec(),
        }],
        body,
    };
    let work = async {
        let resp = s
            .routes
            .forward(region, req, Duration::ZERO)
            .await
            .map_err(|e| e.to_string())?;
        let (status, _, body) = resp.collect().await.map_err(|e| e.message().to_string())?;
        Ok((status, body))
    };
    match timeout {
        None => work.await,
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(format!("region \"{region}\" did not answer within {t:?}"))),
    }
}

fn ns_query(ns: &str) -> String {
    format!("namespace={}", urlencode(ns))
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Register a multi-region job: split, register the first batch, answer,
/// and leave the rest to a background task.
pub async fn register(
    s: &FrontState,
    parts: &http::request::Parts,
    pairs: &[(String, String)],
    body: Bytes,
) -> Response {
    let req: JobRegisterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse request body: {e}"),
            )
        }
    };
    let Some(mut job) = req.job else {
        return error(StatusCode::BAD_REQUEST, "Job must be specified");
    };
    let segments: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
    if let ["v1", "job", id] = segments.as_slice() {
        if job.id != *id {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Job ID \"{}\" does not match the URL's \"{id}\"", job.id),
            );
        }
    }
    if job.namespace.is_empty() {
        job.namespace = query_value(pairs, "namespace").unwrap_or_else(|| "default".into());
    }
    job.canonicalize();
    if let Err(e) = job.validate() {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let Some(mr) = job.multiregion.clone() else {
        return error(StatusCode::BAD_REQUEST, "Job has no Multiregion block");
    };
    let regional: Vec<(String, Job)> = mr
        .regions
        .iter()
        .map(|r| (r.name.clone(), job_for_region(&job, r)))
        .collect();
    let per_batch = if mr.strategy.max_parallel <= 0 {
        regional.len()
    } else {
        mr.strategy.max_parallel as usize
    };
    let batches: Vec<Vec<(String, Job)>> = regional
        .chunks(per_batch.max(1))
        .map(|c| c.to_vec())
        .collect();
    let ns = job.namespace.clone();
    let rollout = s.rollouts.begin(
        &ns,
        &job.id,
        regional.iter().map(|(r, _)| r.clone()).collect(),
    );
    let flags =
        json!({ "PreserveCounts": req.preserve_counts, "PolicyOverride": req.policy_override });
    let Some(first) = batches.first().cloned() else {
        return error(StatusCode::BAD_REQUEST, "Multiregion.Regions: required");
    };
    let results = register_batch(s, &rollout, &first, &flags).await;
    let mut answer: Option<(StatusCode, Bytes)> = None;
    let mut failed: Option<(StatusCode, String)> = None;
    for (region, r) in &results {
        match r {
            Ok((status, body)) if status.is_success() => {
                if answer.is_none() {
                    answer = Some((*status, body.clone()));
                }
            }
            Ok((status, body)) => {
                failed.get_or_insert((
                    *status,
                    format!(
                        "region \"{region}\": {}",
                        String::from_utf8_lossy(body).trim()
                    ),
                ));
            }
            Err(e) => {
                failed.get_or_insert((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("region \"{region}\": {e}"),
                ));
            }
        }
    }
    if let Some((status, message)) = &failed {
        let stop =
            mr.strategy.on_failure != proto::model::constants::MULTIREGION_ON_FAILURE_FAIL_LOCAL;
        if mr.strategy.on_failure == proto::model::constants::MULTIREGION_ON_FAILURE_FAIL_ALL {
            stop_registered(s, &rollout, &ns, &job.id).await;
        }
        if stop || answer.is_none() {
            cancel_pending(&rollout);
            s.metrics_rollouts();
            return error(*status, message.clone());
        }
    }
    let task_state = s.clone();
    let id = job.id.clone();
    let strategy = mr.strategy.clone();
    let rollout_task = rollout.clone();
    tokio::spawn(async move {
        run_rollout(task_state, rollout_task, ns, id, batches, flags, strategy).await;
    });
    s.metrics_rollouts();
    let (status, body) = answer.unwrap_or((StatusCode::OK, Bytes::from_static(b"{}")));
    let mut resp = (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Ok(v) = http::HeaderValue::from_str(&rollout.order.join(",")) {
        resp.headers_mut().insert("x-atoll-multiregion", v);
    }
    resp
}

impl FrontState {
    fn metrics_rollouts(&self) {
        self.metrics.rollouts.reset();
        for (state, n) in self.rollouts.counts() {
            self.metrics
                .rollouts
                .with_label_values(&[state.as_str()])
                .set(n);
        }
    }
}

type RegionResult = (String, Result<(StatusCode, Bytes), String>);

async fn register_batch(
    s: &FrontState,
    rollout: &Rollout,
    batch: &[(String, Job)],
    flags: &Value,
) -> Vec<RegionResult> {
    let calls = batch.iter().map(|(region, job)| async move {
        let mut body = flags.clone();
        body["Job"] = serde_json::to_value(job).unwrap_or(Value::Null);
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let path = format!("/v1/jobs?{}", ns_query(&job.namespace));
        let r = call(s, region, "PUT", path, body, None).await;
        match &r {
            Ok((status, _)) if status.is_success() => {
                let version = job_version(s, region, &job.namespace, &job.id).await;
                rollout.set(region, "deploying", version, "");
            }
            Ok((status, body)) => rollout.set(
                region,
                "failed",
                None,
                &format!(
                    "register refused ({status}): {}",
                    String::from_utf8_lossy(body)
                ),
            ),
            Err(e) => rollout.set(region, "failed", None, e),
        }
        (region.clone(), r)
    });
    join_all(calls).await
}

async fn job_version(s: &FrontState, region: &str, ns: &str, id: &str) -> Option<u64> {
    let path = format!("/v1/job/{}?{}", urlencode(id), ns_query(ns));
    let (status, body) = call(
        s,
        region,
        "GET",
        path,
        Vec::new(),
        Some(REGION_CALL_TIMEOUT),
    )
    .await
    .ok()?;
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    v.get("Version").and_then(Value::as_u64)
}

fn cancel_pending(rollout: &Rollout) {
    for region in &rollout.order {
        if rollout.state_of(region).as_deref() == Some("pending") {
            rollout.set(region, "cancelled", None, "the rollout stopped");
        }
    }
}

async fn stop_registered(s: &FrontState, rollout: &Rollout, ns: &str, id: &str) {
    let registered: Vec<String> = rollout
        .snapshot()
        .into_iter()
        .filter(|(_, r)| r.job_version.is_some())
        .map(|(region, _)| region)
        .collect();
    for region in registered {
        let path = format!("/v1/job/{}?{}", urlencode(id), ns_query(ns));
        match call(s, &region, "DELETE", path, Vec::new(), None).await {
            Ok((status, _)) if status.is_success() => rollout.set(
                &region,
                "stopped",
                None,
                "stopped: another region failed (fail_all)",
            ),
            Ok((status, body)) => {
                tracing::warn!(%region, %status, body = %String::from_utf8_lossy(&body), "stopping a multi-region job")
            }
            Err(e) => tracing::warn!(%region, error = %e, "stopping a multi-region job"),
        }
    }
}

/// Health of one region's rollout.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Healthy,
    Pending,
    Failed(String),
}

async fn region_health(s: &FrontState, region: &str, job: &Job, version: u64) -> Health {
    let ns = &job.namespace;
    let path = format!("/v1/job/{}/deployment?{}", urlencode(&job.id), ns_query(ns));
    if let Ok((status, body)) = call(
        s,
        region,
        "GET",
        path,
        Vec::new(),
        Some(REGION_CALL_TIMEOUT),
    )
    .await
    {
        if status.is_success() {
            if let Ok(d) = serde_json::from_slice::<Value>(&body) {
                if d.get("JobVersion").and_then(Value::as_u64) == Some(version) {
                    let st = d.get("Status").and_then(Value::as_str).unwrap_or_default();
                    match st {
                        "successful" => return Health::Healthy,
                        "failed" | "cancelled" => {
                            return Health::Failed(format!(
                                "deployment {st}: {}",
                                d.get("StatusDescription")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                            ))
                        }
                        // Running, paused or waiting for promotion: the
                        // region's deployment watcher decides.
                        _ => return Health::Pending,
                    }
                }
            }
        }
    }
    let path = format!(
        "/v1/job/{}/allocations?{}",
        urlencode(&job.id),
        ns_query(ns)
    );
    let Ok((status, body)) = call(
        s,
        region,
        "GET",
        path,
        Vec::new(),
        Some(REGION_CALL_TIMEOUT),
    )
    .await
    else {
        return Health::Pending;
    };
    if !status.is_success() {
        return Health::Pending;
    }
    let Ok(Value::Array(allocs)) = serde_json::from_slice::<Value>(&body) else {
        return Health::Pending;
    };
    let wanted: i64 = job.task_groups.iter().map(|g| g.count).sum();
    let running = allocs
        .iter()
        .filter(|a| {
            a.get("JobVersion").and_then(Value::as_u64) == Some(version)
                && a.get("DesiredStatus").and_then(Value::as_str) == Some("run")
                && a.get("ClientStatus").and_then(Value::as_str) == Some("running")
        })
        .count() as i64;
    if running >= wanted.max(1) {
        Health::Healthy
    } else {
        Health::Pending
    }
}

async fn run_rollout(
    s: FrontState,
    rollout: Arc<Rollout>,
    ns: String,
    id: String,
    batches: Vec<Vec<(String, Job)>>,
    flags: Value,
    strategy: proto::model::MultiregionStrategy,
) {
    let mut cancel = rollout.cancel.subscribe();
    let poll = s.rollout_poll;
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            register_batch(&s, &rollout, batch, &flags).await;
            s.metrics_rollouts();
        }
        let started = Instant::now();
        loop {
            if *cancel.borrow() {
                cancel_pending(&rollout);
                s.metrics_rollouts();
                return;
            }
            let mut waiting = false;
            for (region, job) in batch {
                if rollout.state_of(region).as_deref() != Some("deploying") {
                    continue;
                }
                let version = rollout
                    .snapshot()
                    .get(region)
                    .and_then(|r| r.job_version)
                    .unwrap_or_default();
                match region_health(&s, region, job, version).await {
                    Health::Healthy => rollout.set(region, "healthy", None, ""),
                    Health::Failed(m) => rollout.set(region, "failed", None, &m),
                    Health::Pending if started.elapsed() > s.rollout_deadline => rollout.set(
                        region,
                        "failed",
                        None,
                        &format!("not healthy within {:?}", s.rollout_deadline),
                    ),
                    Health::Pending => waiting = true,
                }
            }
            s.metrics_rollouts();
            if !waiting {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = cancel.changed() => {}
            }
        }
        let failed = batch
            .iter()
            .any(|(region, _)| rollout.state_of(region).as_deref() == Some("failed"));
        if failed {
            match strategy.on_failure.as_str() {
                proto::model::constants::MULTIREGION_ON_FAILURE_FAIL_LOCAL => continue,
                proto::model::constants::MULTIREGION_ON_FAILURE_FAIL_ALL => {
                    stop_registered(&s, &rollout, &ns, &id).await;
                    cancel_pending(&rollout);
                }
                _ => cancel_pending(&rollout),
            }
            s.metrics_rollouts();
            tracing::warn!(job = %id, "multi-region rollout stopped by a failed region");
            return;
        }
    }
    tracing::info!(job = %id, "multi-region rollout done");
}

/// The regions a job lives in: those of this gateway's rollout, else the
/// `Multiregion` block of the job as some region has it, else every
/// region gossip knows.
async fn regions_of_job(s: &FrontState, ns: &str, id: &str) -> Vec<String> {
    if let Some(r) = s.rollouts.get(ns, id) {
        return r.order.clone();
    }
    let known = s.routes.known_regions();
    let mut ordered = vec![s.region.clone()];
    ordered.extend(known.iter().filter(|r| **r != s.region).cloned());
    for region in &ordered {
        let path = format!("/v1/job/{}?{}&stale", urlencode(id), ns_query(ns));
        if let Ok((status, body)) = call(
            s,
            region,
            "GET",
            path,
            Vec::new(),
            Some(REGION_CALL_TIMEOUT),
        )
        .await
        {
            if status.is_success() {
                if let Ok(job) = serde_json::from_slice::<Job>(&body) {
                    if let Some(mr) = job.multiregion.filter(|m| !m.regions.is_empty()) {
                        return mr.regions.into_iter().map(|r| r.name).collect();
                    }
                }
            }
        }
    }
    if known.is_empty() {
        vec![s.region.clone()]
    } else {
        known
    }
}

/// `DELETE /v1/job/{id}?global=true`: stop the job in every region.
pub async fn deregister_global(s: &FrontState, id: &str, pairs: &[(String, String)]) -> Response {
    let ns = query_value(pairs, "namespace").unwrap_or_else(|| "default".into());
    s.rollouts.cancel(&ns, id);
    let regions = regions_of_job(s, &ns, id).await;
    let mut query = ns_query(&ns);
    if let Some(p) = query_value(pairs, "purge") {
        query.push_str(&format!("&purge={}", urlencode(&p)));
    }
    let calls = regions.iter().map(|region| {
        let path = format!("/v1/job/{}?{query}", urlencode(id));
        async move {
            (
                region.clone(),
                call(s, region, "DELETE", path, Vec::new(), None).await,
            )
        }
    });
    let results = join_all(calls).await;
    let mut first: Option<Value> = None;
    let mut per_region = serde_json::Map::new();
    let mut all_missing = true;
    for (region, r) in results {
        let entry = match r {
            Ok((status, body)) => {
                if status != StatusCode::NOT_FOUND {
                    all_missing = false;
                }
                let parsed: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&body).trim().to_string())
                });
                if status.is_success() && first.is_none() {
                    first = Some(parsed.clone());
                }
                json!({ "Status": status.as_u16(), "Response": parsed })
            }
            Err(e) => {
                all_missing = false;
                json!({ "Status": 503, "Error": e })
            }
        };
        per_region.insert(region, entry);
    }
    if all_missing {
        return error(StatusCode::NOT_FOUND, "job not found");
    }
    let mut out = first.unwrap_or_else(|| json!({}));
    if let Value::Object(o) = &mut out {
        o.insert("Regions".into(), Value::Object(per_region));
    }
    let status = if out.get("EvalID").is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(out)).into_response()
}

/// `GET /v1/job/{id}/regions`: every region's view of the job side by
/// side; a region that cannot be reached is reported as such.
pub async fn federated_view(s: &FrontState, id: &str, pairs: &[(String, String)]) -> Response {
    let ns = query_value(pairs, "namespace").unwrap_or_else(|| "default".into());
    let regions = regions_of_job(s, &ns, id).await;
    let rollout = s.rollouts.get(&ns, id).map(|r| r.snapshot());
    let views = regions.iter().map(|region| {
        let ns = ns.clone();
        let rollout = rollout.as_ref().and_then(|r| r.get(region)).cloned();
        async move {
            let job_path = format!("/v1/job/{}?{}", urlencode(id), ns_query(&ns));
            let sum_path = format!("/v1/job/{}/summary?{}", urlencode(id), ns_query(&ns));
            let (job, summary) = futures::join!(
                call(
                    s,
                    region,
                    "GET",
                    job_path,
                    Vec::new(),
                    Some(REGION_CALL_TIMEOUT)
                ),
                call(
                    s,
                    region,
                    "GET",
                    sum_path,
                    Vec::new(),
                    Some(REGION_CALL_TIMEOUT)
                ),
            );
            let mut v = match job {
                Err(e) => json!({ "Region": region, "Reachable": false, "Error": e }),
                Ok((status, _)) if status == StatusCode::NOT_FOUND => {
                    json!({ "Region": region, "Reachable": true, "Status": "missing" })
                }
                Ok((status, body)) if !status.is_success() => json!({
                    "Region": region,
                    "Reachable": true,
                    "Error": format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
                }),
                Ok((_, body)) => {
                    let j: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let count: i64 = j
                        .get("TaskGroups")
                        .and_then(Value::as_array)
                        .map(|gs| {
                            gs.iter()
                                .filter_map(|g| g.get("Count").and_then(Value::as_i64))
                                .sum()
                        })
                        .unwrap_or(0);
                    json!({
                        "Region": region,
                        "Reachable": true,
                        "Status": j.get("Status").cloned().unwrap_or(Value::Null),
                        "Version": j.get("Version").cloned().unwrap_or(Value::Null),
                        "Stop": j.get("Stop").cloned().unwrap_or(Value::Null),
                        "Datacenters": j.get("Datacenters").cloned().unwrap_or(Value::Null),
                        "Count": count,
                    })
                }
            };
            if let (Ok((status, body)), Value::Object(o)) = (&summary, &mut v) {
                if status.is_success() {
                    let sv: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                    o.insert(
                        "Summary".into(),
                        sv.get("Summary").cloned().unwrap_or(Value::Null),
                    );
                }
            }
            if let (Some(r), Value::Object(o)) = (rollout, &mut v) {
                o.insert(
                    "Rollout".into(),
                    serde_json::to_value(r).unwrap_or(Value::Null),
                );
            }
            v
        }
    });
    let views: Vec<Value> = join_all(views).await;
    axum::Json(json!({ "ID": id, "Namespace": ns, "Regions": views })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regional_job_takes_the_regions_settings() {
        let job: Job = serde_json::from_value(json!({
            "ID": "web",
            "Datacenters": ["dc1"],
            "Meta": {"a": "1"},
            "TaskGroups": [{"Name": "g", "Count": 1}, {"Name": "h", "Count": 2}],
            "Multiregion": {
                "Strategy": {"MaxParallel": 1, "OnFailure": "fail_all"},
                "Regions": [{"Name": "eu", "Count": 3, "Datacenters": ["eu-1"], "Meta": {"b": "2"}}]
            }
        }))
        .expect("job");
        let region = job.multiregion.as_ref().expect("multiregion").regions[0].clone();
        let r = job_for_region(&job, &region);
        assert_eq!(r.region, "eu");
        assert_eq!(r.datacenters, vec!["eu-1".to_string()]);
        assert!(r.task_groups.iter().all(|g| g.count == 3));
        assert_eq!(r.meta.get("a").map(String::as_str), Some("1"));
        assert_eq!(r.meta.get("b").map(String::as_str), Some("2"));
        let keep = MultiregionRegion {
            name: "us".into(),
            ..Default::default()
        };
        let r = job_for_region(&job, &keep);
        assert_eq!(r.datacenters, vec!["dc1".to_string()]);
        assert_eq!(
            r.task_groups.iter().map(|g| g.count).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn urlencoding() {
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
        assert_eq!(urlencode("web-1_x.y~"), "web-1_x.y~");
    }
}
