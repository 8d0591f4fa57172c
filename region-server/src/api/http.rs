//! The Nomad-compatible HTTP `/v1` API: thin handlers over the service layer.
//!
//! Every read is linearizable unless `?stale`, may block with `?index=&wait=`,
//! and answers with `X-Nomad-Index`, `X-Nomad-KnownLeader` and
//! `X-Nomad-LastContact`. Errors are plain text with Nomad's statuses.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use proto::model::{
    Evaluation, Job, JobDeregisterResponse, JobRegisterRequest, JobRegisterResponse,
    JobValidateRequest, JobValidateResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::query::{paginate, QueryOptions};
use super::ApiError;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::state::{table, Command, CommandResponse, Tables};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    service: Service,
    metrics: Metrics,
    max_body: usize,
    gossip: Option<ops_kit::gossip::GossipPool>,
}

impl ApiState {
    /// The service layer.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The gossip pool, if this server joined one.
    pub fn gossip(&self) -> Option<&ops_kit::gossip::GossipPool> {
        self.gossip.as_ref()
    }

    /// State for the router.
    pub fn new(
        service: Service,
        metrics: Metrics,
        max_body: usize,
        gossip: Option<ops_kit::gossip::GossipPool>,
    ) -> Self {
        Self {
            service,
            metrics,
            max_body,
            gossip,
        }
    }
}

pub(super) type Q = Query<Vec<(String, String)>>;
pub(super) type ApiResult = Result<Response, ApiError>;

/// The `/v1` router.
pub fn router(state: ApiState, federation: super::forward::Federation) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route(
            "/v1/jobs",
            get(list_jobs).put(register_job).post(register_job),
        )
        .route(
            "/v1/jobs/parse",
            put(super::parse::parse_job).post(super::parse::parse_job),
        )
        .route(
            "/v1/job/{id}",
            get(get_job)
                .put(register_job_id)
                .post(register_job_id)
                .delete(deregister_job),
        )
        .route("/v1/job/{id}/versions", get(job_versions))
        .route("/v1/job/{id}/summary", get(job_summary))
        .route("/v1/job/{id}/allocations", get(job_allocations))
        .route("/v1/job/{id}/evaluations", get(job_evaluations))
        .route("/v1/job/{id}/plan", put(plan_job).post(plan_job))
        .route(
            "/v1/job/{id}/evaluate",
            put(evaluate_job).post(evaluate_job),
        )
        .route("/v1/job/{id}/deployments", get(job_deployments))
        .route(
            "/v1/job/{id}/periodic/force",
            put(super::jobs_children::periodic_force).post(super::jobs_children::periodic_force),
        )
        .route(
            "/v1/job/{id}/dispatch",
            put(super::jobs_children::dispatch).post(super::jobs_children::dispatch),
        )
        .route("/v1/job/{id}/deployment", get(job_latest_deployment))
        .route("/v1/validate/job", put(validate_job).post(validate_job))
        .route("/v1/node/{id}/drain", put(drain_node).post(drain_node))
        .route(
            "/v1/node/{id}/eligibility",
            put(node_eligibility).post(node_eligibility),
        )
        .route(
            "/v1/node/{id}/evaluate",
            put(evaluate_node).post(evaluate_node),
        )
        .route(
            "/v1/allocation/{id}/stop",
            put(stop_allocation).post(stop_allocation),
        )
        .route("/v1/deployments", get(list_deployments))
        .route("/v1/deployment/{id}", get(get_deployment))
        .route(
            "/v1/deployment/allocations/{id}",
            get(deployment_allocations),
        )
        .route("/v1/system/gc", put(system_gc))
        .merge(super::deployments::routes())
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/node/{id}", get(get_node))
        .route("/v1/node/{id}/allocations", get(node_allocations))
        .route("/v1/allocations", get(list_allocations))
        .route("/v1/allocation/{id}", get(get_allocation))
        .route("/v1/evaluations", get(list_evaluations))
        .route("/v1/evaluation/{id}", get(get_evaluation))
        .route(
            "/v1/evaluation/{id}/allocations",
            get(evaluation_allocations),
        )
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/regions", get(regions))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(agent_members))
        .route("/v1/agent/join", put(agent_join).post(agent_join))
        .route(
            "/v1/agent/force-leave",
            put(agent_force_leave).post(agent_force_leave),
        )
        .route("/v1/agent/servers", get(agent_servers))
        .route("/v1/operator/keyring/list", get(keyring_list))
        .route(
            "/v1/operator/keyring/{op}",
            put(keyring_change).post(keyring_change),
        )
        .route(
            "/v1/operator/autopilot/health",
            get(super::operator::autopilot_health),
        )
        .route(
            "/v1/operator/autopilot/configuration",
            get(super::operator::get_autopilot_config)
                .put(super::operator::set_autopilot_config)
                .post(super::operator::set_autopilot_config),
        )
        .route(
            "/v1/operator/scheduler/configuration",
            get(super::operator::get_scheduler_config)
                .put(super::operator::set_scheduler_config)
                .post(super::operator::set_scheduler_config),
        )
        .route("/v1/operator/raft/configuration", get(raft_configuration))
        .route(
            "/v1/operator/raft/peer",
            axum::routing::delete(raft_remove_peer),
        )
        .route(
            "/v1/operator/snapshot",
            get(snapshot_save)
                .put(snapshot_restore)
                .post(snapshot_restore),
        )
        .route(
            "/v1/client/fs/{op}/{alloc}",
            get(super::client_proxy::by_alloc),
        )
        .route(
            "/v1/client/allocation/{id}/{op}",
            get(super::client_proxy::by_alloc)
                .post(super::client_proxy::by_alloc)
                .put(super::client_proxy::by_alloc),
        )
        .route("/v1/client/stats", get(super::client_proxy::by_node))
        .merge(state.metrics.telemetry.routes())
        .fallback(not_found)
        .layer(state.metrics.http.clone())
        .layer(axum::middleware::from_fn_with_state(
            federation,
            super::forward::route,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found(method: Method, uri: http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "Invalid URL: no endpoint for {method} {}",
        uri.path()
    ))
}

use crate::leader::now_ns;

/// Parse a JSON body, naming the offending field on error.
pub(super) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("Request body is empty"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("Failed to parse request body: {inner}"))
        } else {
            ApiError::bad_request(format!(
                "Failed to parse request body: field {path}: {inner}"
            ))
        }
    })
}

impl ApiState {
    pub(super) fn query(&self, Query(pairs): Q) -> Result<QueryOptions, ApiError> {
        let q = QueryOptions::parse(pairs)?;
        if let Some(r) = &q.region {
            if *r != self.service.region {
                return Err(ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("No path to region \"{r}\""),
                });
            }
        }
        Ok(q)
    }

    /// The state to answer a read from: linearizable unless stale, after
    /// blocking for a change past `?index` when asked.
    pub(super) async fn read(
        &self,
        q: &QueryOptions,
        tables: &[&str],
    ) -> Result<Arc<Tables>, ApiError> {
        let t = self.service.read(q.stale).await?;
        if q.index == 0 || t.max_index(tables) > q.index {
            return Ok(t);
        }
        // Jitter spreads the wake-ups of many watchers (Nomad: wait/16).
        let jitter = rand::random::<u64>() % (q.wait.as_millis() as u64 / 16 + 1);
        let wait = q.wait + Duration::from_millis(jitter);
        Ok(self
            .service
            .store
            .wait_for_change(tables, q.index, wait)
            .await)
    }

    fn headers(&self, index: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-Nomad-Index", HeaderValue::from(index.max(1)));
        let known = self.service.leader().is_some();
        h.insert(
            "X-Nomad-KnownLeader",
            HeaderValue::from_static(if known { "true" } else { "false" }),
        );
        h.insert(
            "X-Nomad-LastContact",
            HeaderValue::from(self.service.last_contact_ms()),
        );
        h
    }

    pub(super) fn json<T: Serialize>(&self, index: u64, body: &T) -> ApiResult {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ApiError::internal(format!("encode response: {e}")))?;
        let mut h = self.headers(index);
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok((h, bytes).into_response())
    }

    fn page<T: Serialize>(
        &self,
        index: u64,
        items: impl IntoIterator<Item = (String, T)>,
        q: &QueryOptions,
    ) -> ApiResult {
        let (page, next) = paginate(items, q);
        let mut resp = self.json(index, &page)?;
        if let Some(tok) = next {
            if let Ok(v) = HeaderValue::from_str(&tok) {
                resp.headers_mut().insert("X-Nomad-NextToken", v);
            }
        }
        Ok(resp)
    }
}

fn ns_matches(q: &QueryOptions, ns: &str) -> bool {
    q.all_namespaces() || q.namespace == ns
}

// ---- jobs ----

async fn list_jobs(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::JOBS]).await?;
    let stub = |(ns, id): &(String, String), job: &Arc<Job>| {
        job.stub(
            t.job_summaries
                .get(&(ns.clone(), id.clone()))
                .map(|s| (**s).clone()),
        )
    };
    let token = q.next_token.clone().unwrap_or_default();
    if q.all_namespaces() {
        // Token "<namespace>.<id>" (namespaces hold no dots).
        let start = match token.split_once('.') {
            Some((ns, id)) => (ns.to_string(), id.to_string()),
            None => (token.clone(), String::new()),
        };
        let items = t
            .jobs
            .range(start..)
            .filter(|((_, id), _)| id.starts_with(&q.prefix))
            .map(|(k, job)| (format!("{}.{}", k.0, k.1), stub(k, job)));
        return s.page(t.table_index(table::JOBS), items, &q);
    }
    let from = token.max(q.prefix.clone());
    let items = t
        .jobs
        .range((q.namespace.clone(), from)..)
        .take_while(|((ns, id), _)| *ns == q.namespace && id.starts_with(&q.prefix))
        .map(|(k, job)| (k.1.clone(), stub(k, job)));
    s.page(t.table_index(table::JOBS), items, &q)
}

/// The entries of an id-keyed table from the page token on, restricted to
/// `?prefix`.
fn id_range<'a, T: Clone>(
    map: &'a imbl::OrdMap<String, Arc<T>>,
    q: &'a QueryOptions,
) -> impl Iterator<Item = (&'a String, &'a Arc<T>)> + 'a {
    let from = q
        .next_token
        .clone()
        .unwrap_or_default()
        .max(q.prefix.clone());
    map.range(from..)
        .take_while(move |(id, _)| id.starts_with(&q.prefix))
}

async fn register_job(State(s): State<ApiState>, query: Q, body: Bytes) -> ApiResult {
    let q = s.query(query)?;
    register(&s, &q, None, &body).await
}

async fn register_job_id(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    let q = s.query(query)?;
    register(&s, &q, Some(id), &body).await
}

/// Canonicalize and validate a submitted job for this region.
fn prepare_job(s: &ApiState, q: &QueryOptions, job: &mut Job) -> Result<(), ApiError> {
    if job.region.is_empty() {
        job.region = s.service.region.clone();
    }
    if job.namespace.is_empty() && q.namespace != "*" {
        job.namespace = q.namespace.clone();
    }
    job.canonicalize();
    job.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if job.region != s.service.region {
        return Err(ApiError::bad_request(format!(
            "Job region \"{}\" is not this server's region \"{}\"; submit it through a federation gateway",
            job.region, s.service.region
        )));
    }
    Ok(())
}

async fn register(
    s: &ApiState,
    q: &QueryOptions,
    path_id: Option<String>,
    body: &Bytes,
) -> ApiResult {
    let req: JobRegisterRequest = parse_body(body)?;
    let Some(mut job) = req.job else {
        return Err(ApiError::bad_request("Job must be specified"));
    };
    if let Some(id) = path_id {
        if job.id != id {
            return Err(ApiError::bad_request(format!(
                "Job ID \"{}\" does not match the URL's \"{id}\"",
                job.id
            )));
        }
    }
    prepare_job(s, q, &mut job)?;
    let now = now_ns();
    // Periodic and parameterized jobs are templates: only their children
    // are evaluated (Nomad creates no evaluation for them).
    let eval = (!job.is_template()).then(|| new_eval(&job, "job-register", now));
    let cmd = Command::JobRegister {
        job: Box::new(job),
        eval: eval.map(Box::new),
        now,
        enforce_index: req.enforce_index.then_some(req.job_modify_index),
    };
    let (resp, index) = s.service.write(cmd).await?;
    let index = s.service.effective_index(index);
    match resp {
        CommandResponse::Job {
            job_modify_index,
            eval_id,
            eval_create_index,
            ..
        } => job_register_reply(s, index, job_modify_index, eval_id, eval_create_index),
        CommandResponse::Conflict(m) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: m,
        }),
        other => Err(ApiError::internal(format!(
            "unexpected register result: {other:?}"
        ))),
    }
}

pub(super) use crate::leader::periodic::new_eval;

/// Nomad's `JobRegisterResponse` for a committed `JobRegister`.
pub(super) fn job_register_reply(
    s: &ApiState,
    index: u64,
    job_modify_index: u64,
    eval_id: Option<String>,
    eval_create_index: u64,
) -> ApiResult {
    s.json(
        index,
        &JobRegisterResponse {
            eval_id: eval_id.unwrap_or_default(),
            eval_create_index,
            job_modify_index,
            warnings: String::new(),
            index,
        },
    )
}

async fn get_job(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::JOBS]).await?;
    let job = t
        .job(&q.namespace, &id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    s.json(t.table_index(table::JOBS), &*job)
}

async fn deregister_job(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.service.read(false).await?;
    let job = t
        .job(&q.namespace, &id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    let now = now_ns();
    let eval = new_eval(&job, "job-deregister", now);
    let cmd = Command::JobDeregister {
        namespace: q.namespace.clone(),
        job_id: id,
        purge: q.purge,
        eval: Some(Box::new(eval)),
        now,
    };
    let (resp, index) = s.service.write(cmd).await?;
    let index = s.service.effective_index(index);
    match resp {
        CommandResponse::Job {
            job_modify_index,
            eval_id,
            eval_create_index,
            ..
        } => s.json(
            index,
            &JobDeregisterResponse {
                eval_id: eval_id.unwrap_or_default(),
                eval_create_index,
                job_modify_index,
                index,
            },
        ),
        CommandResponse::NotFound(m) => Err(ApiError::not_found(m)),
        other => Err(ApiError::internal(format!(
            "unexpected deregister result: {other:?}"
        ))),
    }
}

async fn job_versions(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::JOBS]).await?;
    let versions = t.job_versions(&q.namespace, &id);
    if versions.is_empty() {
        return Err(ApiError::not_found("job versions not found"));
    }
    let versions: Vec<&Job> = versions.iter().map(|j| &**j).collect();
    s.json(
        t.table_index(table::JOBS),
        &json!({ "Versions": versions, "Diffs": null }),
    )
}

async fn job_summary(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::JOBS, table::ALLOCS]).await?;
    let summary = t
        .job_summaries
        .get(&(q.namespace.clone(), id))
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    s.json(t.max_index(&[table::JOBS, table::ALLOCS]), &**summary)
}

async fn job_allocations(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::ALLOCS]).await?;
    let allocs: Vec<_> = t
        .allocs_by_job(&q.namespace, &id)
        .iter()
        .map(|a| a.stub())
        .collect();
    s.json(t.table_index(table::ALLOCS), &allocs)
}

async fn job_evaluations(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::EVALS]).await?;
    let evals: Vec<Evaluation> = t
        .evals_by_job(&q.namespace, &id)
        .iter()
        .map(|e| (**e).clone())
        .collect();
    s.json(t.table_index(table::EVALS), &evals)
}

async fn validate_job(State(s): State<ApiState>, query: Q, body: Bytes) -> ApiResult {
    let q = s.query(query)?;
    let req: JobValidateRequest = parse_body(&body)?;
    let Some(mut job) = req.job else {
        return Err(ApiError::bad_request("Job must be specified"));
    };
    if job.region.is_empty() {
        job.region = s.service.region.clone();
    }
    if job.namespace.is_empty() {
        job.namespace = q.namespace.clone();
    }
    job.canonicalize();
    let (errors, error) = match job.validate() {
        Ok(()) => (Vec::new(), String::new()),
        Err(e) => (
            e.errors.iter().map(|f| f.to_string()).collect(),
            e.to_string(),
        ),
    };
    s.json(
        0,
        &JobValidateResponse {
            driver_config_validated: false,
            validation_errors: errors,
            error,
            warnings: String::new(),
        },
    )
}

// ---- nodes, allocations, evaluations ----

async fn list_nodes(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::NODES]).await?;
    let items = id_range(&t.nodes, &q).map(|(id, n)| (id.clone(), n.stub()));
    s.page(t.table_index(table::NODES), items, &q)
}

/// One object by id, or 404 naming what was not found.
pub(super) fn by_id<'a, T>(
    map: &'a imbl::OrdMap<String, Arc<T>>,
    id: &str,
    what: &str,
) -> Result<&'a Arc<T>, ApiError> {
    map.get(id)
        .ok_or_else(|| ApiError::not_found(format!("{what} not found")))
}

async fn get_node(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::NODES]).await?;
    let node = by_id(&t.nodes, &id, "node")?;
    s.json(t.table_index(table::NODES), &**node)
}

async fn node_allocations(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::ALLOCS]).await?;
    if !t.nodes.contains_key(&id) {
        return Err(ApiError::not_found("node not found"));
    }
    let allocs: Vec<_> = t
        .allocs_by_node(&id)
        .iter()
        .map(|a| (**a).clone())
        .collect();
    s.json(t.table_index(table::ALLOCS), &allocs)
}

async fn list_allocations(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::ALLOCS]).await?;
    let items = id_range(&t.allocs, &q)
        .filter(|(_, a)| ns_matches(&q, &a.namespace))
        .map(|(id, a)| (id.clone(), a.stub()));
    s.page(t.table_index(table::ALLOCS), items, &q)
}

async fn get_allocation(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::ALLOCS]).await?;
    let a = by_id(&t.allocs, &id, "alloc")?;
    s.json(t.table_index(table::ALLOCS), &t.alloc_with_job(a))
}

async fn list_evaluations(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::EVALS]).await?;
    let status = q.get("status").map(str::to_string);
    let items = id_range(&t.evals, &q)
        .filter(|(_, e)| {
            ns_matches(&q, &e.namespace) && status.as_ref().is_none_or(|st| *st == e.status)
        })
        .map(|(id, e)| (id.clone(), (**e).clone()));
    s.page(t.table_index(table::EVALS), items, &q)
}

async fn get_evaluation(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::EVALS]).await?;
    let e = by_id(&t.evals, &id, "eval")?;
    s.json(t.table_index(table::EVALS), &**e)
}

async fn evaluation_allocations(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::ALLOCS, table::EVALS]).await?;
    if !t.evals.contains_key(&id) {
        return Err(ApiError::not_found("eval not found"));
    }
    let allocs: Vec<_> = t.allocs_by_eval(&id).iter().map(|a| a.stub()).collect();
    s.json(t.max_index(&[table::ALLOCS, table::EVALS]), &allocs)
}

// ---- status, agent, operator ----

async fn status_leader(State(s): State<ApiState>, query: Q) -> ApiResult {
    s.query(query)?;
    let leader = s
        .service
        .leader()
        .map(|(_, n)| n.rpc_addr)
        .unwrap_or_default();
    s.json(0, &leader)
}

async fn status_peers(State(s): State<ApiState>, query: Q) -> ApiResult {
    s.query(query)?;
    let info = s.service.cluster_info();
    let peers: Vec<String> = info.voters.values().map(|n| n.rpc_addr.clone()).collect();
    s.json(0, &peers)
}

async fn regions(State(s): State<ApiState>) -> ApiResult {
    let mut regions: Vec<String> = match &s.gossip {
        Some(pool) => pool
            .regions()
            .into_iter()
            .filter(|(_, r)| !r.servers.is_empty())
            .map(|(name, _)| name)
            .collect(),
        None => Vec::new(),
    };
    if !regions.contains(&s.service.region) {
        regions.push(s.service.region.clone());
    }
    regions.sort();
    s.json(0, &regions)
}

fn gossip_member_json(m: &ops_kit::gossip::Member) -> serde_json::Value {
    let addr = m.info.gossip_addr;
    json!({
        "Name": m.info.name,
        "Addr": addr.ip().to_string(),
        "Port": addr.port(),
        "Status": match m.status {
            ops_kit::gossip::MemberStatus::Alive => "alive",
            ops_kit::gossip::MemberStatus::Failed => "failed",
            ops_kit::gossip::MemberStatus::Left => "left",
        },
        "Tags": {
            "role": match m.info.role {
                ops_kit::gossip::MemberRole::Server => "nomad",
                ops_kit::gossip::MemberRole::Gateway => "gateway",
            },
            "region": m.info.region,
            "dc": m.info.datacenter,
            "rpc_addr": m.info.rpc_addr,
            "http_addr": m.info.http_addr,
            "build": m.info.version,
            "vsn": "1",
            "raft_vsn": "3",
            "leader": m.leader.as_deref() == Some(m.info.name.as_str()),
            "voter": m.info.voter,
        },
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 2,
    })
}

async fn agent_join(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = QueryOptions::parse(query.0)?;
    let addrs: Vec<String> = q
        .other
        .iter()
        .filter(|(k, _)| k == "address")
        .map(|(_, v)| v.clone())
        .collect();
    if addrs.is_empty() {
        return Err(ApiError::bad_request(
            "Missing address: give one or more ?address=<ip:port>",
        ));
    }
    let pool = s
        .gossip
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("this server runs without a gossip pool"))?;
    match pool.join_hosts(&addrs).await {
        Ok(n) => s.json(0, &json!({ "NumJoined": n, "Error": "" })),
        Err(e) => s.json(0, &json!({ "NumJoined": 0, "Error": e.to_string() })),
    }
}

async fn agent_force_leave(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = QueryOptions::parse(query.0)?;
    let node = q
        .get("node")
        .ok_or_else(|| ApiError::bad_request("Missing node: give ?node=<name>"))?
        .to_string();
    let pool = s
        .gossip
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("this server runs without a gossip pool"))?;
    if pool.member(&node).is_none() {
        return Err(ApiError::not_found(format!("no member named {node:?}")));
    }
    pool.force_leave(&node)
        .await
        .map_err(|e| ApiError::internal(format!("force-leave {node}: {e}")))?;
    s.json(0, &Value::Null)
}

async fn agent_servers(State(s): State<ApiState>) -> ApiResult {
    let info = s.service.cluster_info();
    let servers: Vec<String> = info.voters.values().map(|n| n.rpc_addr.clone()).collect();
    s.json(0, &servers)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct KeyRequest {
    key: String,
}

async fn keyring_list(State(s): State<ApiState>) -> ApiResult {
    let pool = s
        .gossip
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("this server runs without a gossip pool"))?;
    let list = pool.keyring().list();
    let keys: serde_json::Map<String, Value> =
        list.keys.iter().map(|k| (k.clone(), json!(1))).collect();
    s.json(
        0,
        &json!({
            "Messages": {},
            "Keys": keys,
            "PrimaryKeys": { list.primary.clone(): 1 },
            "NumNodes": 1,
        }),
    )
}

async fn keyring_change(
    State(s): State<ApiState>,
    Path(op): Path<String>,
    body: Bytes,
) -> ApiResult {
    let pool = s
        .gossip
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("this server runs without a gossip pool"))?;
    let req: KeyRequest = parse_body(&body)?;
    let ring = pool.keyring();
    let r = match op.as_str() {
        "install" => ring.install(&req.key),
        "use" => ring.use_key(&req.key),
        "remove" => ring.remove(&req.key),
        other => {
            return Err(ApiError::not_found(format!(
                "no keyring operation {other:?}"
            )))
        }
    };
    r.map_err(|e| ApiError::bad_request(format!("Key: {e}")))?;
    s.json(0, &Value::Null)
}

fn member_json(
    s: &ApiState,
    name: &str,
    node: &crate::raft::ServerNode,
    leader: bool,
    voter: bool,
) -> serde_json::Value {
    let (addr, port) = match node.rpc_addr.rsplit_once(':') {
        Some((a, p)) => (a.to_string(), p.parse::<u16>().unwrap_or(0)),
        None => (node.rpc_addr.clone(), 0),
    };
    json!({
        "Name": format!("{name}.{}", s.service.region),
        "Addr": addr,
        "Port": port,
        "Status": "alive",
        "Tags": {
            "role": "atoll",
            "region": s.service.region,
            "dc": s.service.datacenter,
            "rpc_addr": node.rpc_addr,
            "http_addr": node.http_addr,
            "build": env!("CARGO_PKG_VERSION"),
            "leader": leader.to_string(),
            "voter": voter.to_string(),
        },
    })
}

async fn agent_self(State(s): State<ApiState>) -> ApiResult {
    let info = s.service.cluster_info();
    let leader = info.leader.as_ref().map(|(id, _)| *id) == Some(info.id);
    let m = s.service.raft.metrics().borrow().clone();
    s.json(
        0,
        &json!({
            "config": {
                "Region": s.service.region,
                "Datacenter": s.service.datacenter,
                "NodeName": s.service.node.name,
                "Server": { "Enabled": true },
                "Version": { "Version": env!("CARGO_PKG_VERSION") },
            },
            "member": member_json(&s, &s.service.node.name, &s.service.node, leader, info.voters.contains_key(&info.id)),
            "stats": {
                "raft": {
                    "node_id": info.id.to_string(),
                    "state": format!("{:?}", m.state),
                    "term": m.current_term.to_string(),
                    "last_log_index": m.last_log_index.unwrap_or(0).to_string(),
                    "applied_index": info.applied.to_string(),
                    "last_contact": format!("{}ms", s.service.last_contact_ms()),
                },
            },
        }),
    )
}

async fn agent_members(State(s): State<ApiState>) -> ApiResult {
    let members: Vec<Value> = match &s.gossip {
        // Servers only, as Nomad lists them; gateways share the pool but
        // are no members of any region.
        Some(pool) => pool
            .members()
            .iter()
            .filter(|m| m.info.role == ops_kit::gossip::MemberRole::Server)
            .map(gossip_member_json)
            .collect(),
        None => {
            let info = s.service.cluster_info();
            let leader_id = info.leader.as_ref().map(|(id, _)| *id);
            info.voters
                .iter()
                .map(|(id, n)| member_json(&s, &n.name, n, Some(*id) == leader_id, true))
                .chain(
                    info.learners
                        .iter()
                        .map(|(id, n)| member_json(&s, &n.name, n, Some(*id) == leader_id, false)),
                )
                .collect()
        }
    };
    s.json(
        0,
        &json!({
            "ServerName": s.service.node.name,
            "ServerRegion": s.service.region,
            "ServerDC": s.service.datacenter,
            "Members": members,
        }),
    )
}

async fn raft_configuration(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    if !q.stale {
        s.service.read_barrier().await?;
    }
    let info = s.service.cluster_info();
    let leader_id = info.leader.as_ref().map(|(id, _)| *id);
    let servers: Vec<_> = info
        .voters
        .iter()
        .map(|(id, n)| (id, n, true))
        .chain(info.learners.iter().map(|(id, n)| (id, n, false)))
        .map(|(id, n, voter)| {
            json!({
                "ID": id.to_string(),
                "Node": n.name,
                "Address": n.rpc_addr,
                "Leader": Some(*id) == leader_id,
                "Voter": voter,
                "RaftProtocol": "3",
            })
        })
        .collect();
    s.json(
        info.applied,
        &json!({ "Index": info.applied, "Servers": servers }),
    )
}

async fn raft_remove_peer(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let info = s.service.cluster_info();
    let target = if let Some(id) = q.get("id") {
        let id: u64 = id
            .parse()
            .map_err(|_| ApiError::bad_request(format!("Invalid id: {id:?} is not a server id")))?;
        info.voters
            .iter()
            .chain(info.learners.iter())
            .find(|(i, _)| **i == id)
            .map(|(i, n)| (*i, n.clone()))
    } else if let Some(addr) = q.get("address") {
        info.voters
            .iter()
            .chain(info.learners.iter())
            .find(|(_, n)| n.rpc_addr == addr)
            .map(|(i, n)| (*i, n.clone()))
    } else {
        return Err(ApiError::bad_request("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"));
    };
    let (id, node) =
        target.ok_or_else(|| ApiError::not_found("no such server in the Raft configuration"))?;
    s.service.membership_on_leader(false, id, node).await?;
    s.json(0, &serde_json::Value::Null)
}

async fn snapshot_save(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.service.read(q.stale).await?;
    let bytes = s.service.snapshot_bytes(&t).await?;
    let digest = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        Sha256::digest(&bytes),
    );
    let mut h = s.headers(t.index);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("sha-256={digest}")) {
        h.insert("Digest", v);
    }
    Ok((h, Body::from(bytes)).into_response())
}

async fn snapshot_restore(
    State(s): State<ApiState>,
    query: Q,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    s.query(query)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "Request body is empty: expected a snapshot file",
        ));
    }
    if let Some(d) = headers.get("Digest").and_then(|v| v.to_str().ok()) {
        let want = d.strip_prefix("sha-256=").unwrap_or(d);
        let have = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            Sha256::digest(&body),
        );
        if want != have {
            return Err(ApiError::bad_request(
                "Snapshot digest does not match its Digest header",
            ));
        }
    }
    let index = s.service.restore(body.to_vec()).await?;
    s.json(index, &serde_json::Value::Null)
}

// ---- scheduling: plan, evaluate, drain, eligibility, alloc stop, deployments, gc ----

/// `PUT /v1/job/{id}/plan` body.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct JobPlanRequest {
    job: Option<Job>,
    diff: bool,
}

async fn plan_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    let q = s.query(query)?;
    let req: JobPlanRequest = parse_body(&body)?;
    let Some(mut job) = req.job else {
        return Err(ApiError::bad_request("Job must be specified"));
    };
    if job.id != id {
        return Err(ApiError::bad_request(format!(
            "Job ID \"{}\" does not match the URL's \"{id}\"",
            job.id
        )));
    }
    prepare_job(&s, &q, &mut job)?;
    let t = s.service.read(q.stale).await?;
    let existing = t.job(&job.namespace, &job.id);
    let diff_type = match &existing {
        None => "Added",
        Some(old) if old.spec_changed(&job) => "Edited",
        Some(_) => "None",
    };
    // Dry run: the scheduler sees the state as if the job were registered.
    let mut overlay: Tables = (*t).clone();
    let now = now_ns();
    let mut eval = new_eval(&job, "job-register", now);
    let raft_index = overlay.index + 1;
    overlay.apply(
        raft_index,
        Command::JobRegister {
            job: Box::new(job.clone()),
            eval: None,
            now,
            enforce_index: None,
        },
    );
    eval.modify_index = overlay.effective(raft_index);
    let registered = overlay
        .job(&job.namespace, &job.id)
        .ok_or_else(|| ApiError::internal("plan: job missing from the dry-run state"))?;
    let config = crate::scheduler::SchedulerConfig::default();
    let ctx = crate::scheduler::SchedulerContext {
        state: &overlay,
        now,
        config: &config,
        rng_seed: now as u64,
    };
    let result = crate::scheduler::process(&ctx, &eval)
        .map_err(|e| ApiError::internal(format!("plan: {e}")))?;
    let diff = req.diff.then(|| json!({ "Type": diff_type, "ID": job.id }));
    let next_launch = job
        .periodic
        .as_ref()
        .filter(|_| job.is_periodic_active())
        .and_then(|p| p.schedule().ok())
        .and_then(|sched| sched.next_after(now).map(|t| sched.format(t)));
    s.json(
        t.table_index(table::JOBS),
        &json!({
            "Annotations": result.annotations,
            "FailedTGAllocs": if result.eval_update.failed_tg_allocs.is_empty() { Value::Null } else { serde_json::to_value(&result.eval_update.failed_tg_allocs).unwrap_or(Value::Null) },
            "JobModifyIndex": existing.map(|j| j.job_modify_index).unwrap_or(0),
            "CreatedEvals": Value::Null,
            "Diff": diff,
            "Index": t.table_index(table::JOBS),
            "NextPeriodicLaunch": next_launch,
            "Warnings": "",
            "Version": registered.version,
        }),
    )
}

/// Commit evaluations and answer with Nomad's eval-creating response shape.
async fn create_evals(
    s: &ApiState,
    cmd: Command,
    first_eval: Option<String>,
    job_modify_index: u64,
) -> ApiResult {
    let (resp, index) = s.service.write(cmd).await?;
    match resp {
        CommandResponse::NotFound(m) => return Err(ApiError::not_found(m)),
        CommandResponse::Conflict(m) => return Err(ApiError::bad_request(m)),
        _ => {}
    }
    let index = s.service.effective_index(index);
    s.json(
        index,
        &json!({
            "EvalID": first_eval.unwrap_or_default(),
            "EvalIDs": Value::Null,
            "EvalCreateIndex": index,
            "JobModifyIndex": job_modify_index,
            "NodeModifyIndex": index,
            "Index": index,
        }),
    )
}

async fn evaluate_job(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.service.read(false).await?;
    let job = t
        .job(&q.namespace, &id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    if job.is_periodic() {
        return Err(ApiError::bad_request("can't evaluate periodic job"));
    }
    if job.is_parameterized() {
        return Err(ApiError::bad_request("can't evaluate parameterized job"));
    }
    let eval = new_eval(&job, "job-eval", now_ns());
    let eval_id = eval.id.clone();
    create_evals(
        &s,
        Command::EvalUpsert { evals: vec![eval] },
        Some(eval_id),
        job.job_modify_index,
    )
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DrainRequest {
    drain_spec: Option<DrainSpec>,
    mark_eligible: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DrainSpec {
    deadline: i64,
    ignore_system_jobs: bool,
}

async fn drain_node(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    s.query(query)?;
    let req: DrainRequest = parse_body(&body)?;
    let t = s.service.read(false).await?;
    if !t.nodes.contains_key(&id) {
        return Err(ApiError::not_found("node not found"));
    }
    let now = now_ns();
    let drain = match req.drain_spec {
        Some(spec) => Some(Some(proto::model::DrainStrategy {
            deadline: spec.deadline,
            ignore_system_jobs: spec.ignore_system_jobs,
            force_deadline: (spec.deadline > 0)
                .then(|| proto::model::time::format_rfc3339(now + spec.deadline)),
            started_at: Some(proto::model::time::format_rfc3339(now)),
        })),
        None => Some(None),
    };
    let draining = matches!(drain, Some(Some(_)));
    let eligibility = (!draining && req.mark_eligible).then(|| "eligible".to_string());
    let evals = crate::client_rpc::evals_for_node(&t, &id, "node-drain");
    let first = evals.first().map(|e| e.id.clone());
    create_evals(
        &s,
        Command::NodeSchedulingUpdate {
            node_id: id,
            drain,
            eligibility,
            evals,
        },
        first,
        0,
    )
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct EligibilityRequest {
    eligibility: String,
}

async fn node_eligibility(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    s.query(query)?;
    let req: EligibilityRequest = parse_body(&body)?;
    if req.eligibility != "eligible" && req.eligibility != "ineligible" {
        return Err(ApiError::bad_request(format!(
            "Eligibility: must be \"eligible\" or \"ineligible\", got {:?}",
            req.eligibility
        )));
    }
    let t = s.service.read(false).await?;
    if !t.nodes.contains_key(&id) {
        return Err(ApiError::not_found("node not found"));
    }
    let evals = if req.eligibility == "eligible" {
        crate::client_rpc::evals_for_node(&t, &id, "node-update")
    } else {
        Vec::new()
    };
    let first = evals.first().map(|e| e.id.clone());
    create_evals(
        &s,
        Command::NodeSchedulingUpdate {
            node_id: id,
            drain: None,
            eligibility: Some(req.eligibility),
            evals,
        },
        first,
        0,
    )
    .await
}

async fn evaluate_node(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    s.query(query)?;
    let t = s.service.read(false).await?;
    if !t.nodes.contains_key(&id) {
        return Err(ApiError::not_found("node not found"));
    }
    let evals = crate::client_rpc::evals_for_node(&t, &id, "node-update");
    let first = evals.first().map(|e| e.id.clone());
    create_evals(&s, Command::EvalUpsert { evals }, first, 0).await
}

async fn stop_allocation(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    s.query(query)?;
    let t = s.service.read(false).await?;
    let a = by_id(&t.allocs, &id, "alloc")?.clone();
    let job = t
        .job(&a.namespace, &a.job_id)
        .ok_or_else(|| ApiError::not_found("job of the allocation not found"))?;
    let eval = new_eval(&job, "alloc-stop", now_ns());
    let eval_id = eval.id.clone();
    create_evals(
        &s,
        Command::AllocMigrate {
            alloc_ids: vec![a.id.clone()],
            evals: vec![eval],
        },
        Some(eval_id),
        job.job_modify_index,
    )
    .await
}

async fn list_deployments(State(s): State<ApiState>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::DEPLOYMENTS]).await?;
    let items = id_range(&t.deployments, &q)
        .filter(|(_, d)| ns_matches(&q, &d.namespace))
        .map(|(id, d)| (id.clone(), (**d).clone()));
    s.page(t.table_index(table::DEPLOYMENTS), items, &q)
}

async fn get_deployment(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::DEPLOYMENTS]).await?;
    let d = by_id(&t.deployments, &id, "deployment")?;
    s.json(t.table_index(table::DEPLOYMENTS), &**d)
}

async fn deployment_allocations(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::DEPLOYMENTS, table::ALLOCS]).await?;
    let d = by_id(&t.deployments, &id, "deployment")?;
    let allocs: Vec<_> = t
        .allocs_by_job(&d.namespace, &d.job_id)
        .iter()
        .filter(|a| a.deployment_id == id)
        .map(|a| a.stub())
        .collect();
    s.json(t.max_index(&[table::DEPLOYMENTS, table::ALLOCS]), &allocs)
}

fn job_deployments_sorted(t: &Tables, ns: &str, job_id: &str) -> Vec<proto::model::Deployment> {
    let mut ds: Vec<_> = t
        .deployments
        .values()
        .filter(|d| d.namespace == ns && d.job_id == job_id)
        .map(|d| (**d).clone())
        .collect();
    ds.sort_by_key(|d| std::cmp::Reverse(d.create_index));
    ds
}

async fn job_deployments(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::DEPLOYMENTS]).await?;
    s.json(
        t.table_index(table::DEPLOYMENTS),
        &job_deployments_sorted(&t, &q.namespace, &id),
    )
}

async fn job_latest_deployment(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
) -> ApiResult {
    let q = s.query(query)?;
    let t = s.read(&q, &[table::DEPLOYMENTS]).await?;
    let latest = job_deployments_sorted(&t, &q.namespace, &id)
        .into_iter()
        .next();
    s.json(t.table_index(table::DEPLOYMENTS), &latest)
}

async fn system_gc(State(s): State<ApiState>, query: Q) -> ApiResult {
    s.query(query)?;
    let (_, index) = s.service.write(Command::Gc).await?;
    s.json(s.service.effective_index(index), &Value::Null)
}
