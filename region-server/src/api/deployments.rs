//! Deployment writes of the `/v1` API (Nomad's shapes): fail, pause and
//! resume, promote canaries, set allocation health; and the job's revert
//! and stability. The reads (`/v1/deployments`, `/v1/deployment/{id}`,
//! `/v1/deployment/allocations/{id}`, `/v1/job/{id}/deployment(s)`) live
//! in `http.rs`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::put;
use axum::Router;
use proto::model::{Deployment, DEPLOYMENT_STATUS_PAUSED, DEPLOYMENT_STATUS_RUNNING};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::{by_id, new_eval, parse_body, ApiResult, ApiState, Q};
use super::ApiError;
use crate::leader::deployments::{deployment_eval, failure, FAILED_ALLOCATIONS, FAILED_BY_USER};
use crate::leader::now_ns;
use crate::scheduler::{DEPLOYMENT_DESC_AUTO_PROMOTION, DEPLOYMENT_DESC_NEEDS_PROMOTION};
use crate::state::{Command, CommandResponse};

/// The deployment and job write routes.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/deployment/fail/{id}",
            put(fail_deployment).post(fail_deployment),
        )
        .route(
            "/v1/deployment/pause/{id}",
            put(pause_deployment).post(pause_deployment),
        )
        .route(
            "/v1/deployment/promote/{id}",
            put(promote_deployment).post(promote_deployment),
        )
        .route(
            "/v1/deployment/allocation-health/{id}",
            put(alloc_health).post(alloc_health),
        )
        .route("/v1/job/{id}/revert", put(revert_job).post(revert_job))
        .route("/v1/job/{id}/stable", put(job_stable).post(job_stable))
}

/// `PUT /v1/deployment/pause/{id}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DeploymentPauseRequest {
    #[serde(rename = "DeploymentID")]
    deployment_id: String,
    pause: bool,
}

/// `PUT /v1/deployment/promote/{id}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DeploymentPromoteRequest {
    #[serde(rename = "DeploymentID")]
    deployment_id: String,
    all: bool,
    groups: Option<Vec<String>>,
}

/// `PUT /v1/deployment/allocation-health/{id}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DeploymentAllocHealthRequest {
    #[serde(rename = "DeploymentID")]
    deployment_id: String,
    #[serde(rename = "HealthyAllocationIDs")]
    healthy_allocation_ids: Option<Vec<String>>,
    #[serde(rename = "UnhealthyAllocationIDs")]
    unhealthy_allocation_ids: Option<Vec<String>>,
}

/// `PUT /v1/job/{id}/revert` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct JobRevertRequest {
    #[serde(rename = "JobID")]
    job_id: String,
    job_version: u64,
    enforce_prior_version: Option<u64>,
}

/// `PUT /v1/job/{id}/stable` body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct JobStabilityRequest {
    #[serde(rename = "JobID")]
    job_id: String,
    job_version: u64,
    stable: bool,
}

/// Nomad's `DeploymentUpdateResponse`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeploymentUpdateResponse {
    #[serde(rename = "EvalID")]
    eval_id: String,
    eval_create_index: u64,
    deployment_modify_index: u64,
    reverted_job_version: Option<u64>,
    index: u64,
}

/// The request's deployment id must be empty or the URL's.
fn same_id(body_id: &str, id: &str, what: &str) -> Result<(), ApiError> {
    if body_id.is_empty() || body_id == id {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} \"{body_id}\" does not match the URL's \"{id}\""
        )))
    }
}

/// The deployment, if it still runs (400 when terminal, 404 when unknown).
async fn active_deployment(s: &ApiState, id: &str, what: &str) -> Result<Deployment, ApiError> {
    let t = s.service().read(false).await?;
    let d = by_id(&t.deployments, id, "deployment")?;
    if !d.active() {
        return Err(ApiError::bad_request(format!(
            "can't {what} terminal deployment (status {:?})",
            d.status
        )));
    }
    Ok((**d).clone())
}

/// Commits a deployment command and answers with `DeploymentUpdateResponse`.
async fn commit(s: &ApiState, cmd: Command, reverted: Option<u64>) -> ApiResult {
    let (response, raft_index) = s.service().write(cmd).await?;
    let index = s.service().effective_index(raft_index);
    match response {
        CommandResponse::Job {
            eval_id,
            eval_create_index,
            ..
        } => s.json(
            index,
            &DeploymentUpdateResponse {
                eval_id: eval_id.unwrap_or_default(),
                eval_create_index,
                deployment_modify_index: index,
                reverted_job_version: reverted,
                index,
            },
        ),
        CommandResponse::NotFound(m) => Err(ApiError::not_found(m)),
        CommandResponse::Conflict(m) => Err(ApiError::bad_request(m)),
        CommandResponse::Ok => s.json(
            index,
            &DeploymentUpdateResponse {
                deployment_modify_index: index,
                reverted_job_version: reverted,
                index,
                ..DeploymentUpdateResponse::default()
            },
        ),
    }
}

async fn fail_deployment(State(s): State<ApiState>, Path(id): Path<String>, query: Q) -> ApiResult {
    s.query(query)?;
    let d = active_deployment(&s, &id, "fail").await?;
    let t = s.service().read(false).await?;
    let now = now_ns();
    let fail = failure(&t, &d, FAILED_BY_USER, now);
    let reverted = fail.reverted_version;
    commit(&s, fail.command(&id, now), reverted).await
}

async fn pause_deployment(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    s.query(query)?;
    let req: DeploymentPauseRequest = parse_body(&body)?;
    same_id(&req.deployment_id, &id, "DeploymentID")?;
    let d = active_deployment(&s, &id, if req.pause { "pause" } else { "resume" }).await?;
    let now = now_ns();
    let (status, description, eval) = if req.pause {
        (DEPLOYMENT_STATUS_PAUSED, "Deployment is paused", None)
    } else {
        let t = s.service().read(false).await?;
        let waiting: Vec<_> = d
            .task_groups
            .values()
            .filter(|g| g.desired_canaries > 0 && !g.promoted)
            .collect();
        let description = if waiting.is_empty() {
            "Deployment is running"
        } else if waiting.iter().all(|g| g.auto_promote) {
            DEPLOYMENT_DESC_AUTO_PROMOTION
        } else {
            DEPLOYMENT_DESC_NEEDS_PROMOTION
        };
        let eval = t
            .job(&d.namespace, &d.job_id)
            .map(|job| Box::new(deployment_eval(&job, &id, now)));
        (DEPLOYMENT_STATUS_RUNNING, description, eval)
    };
    commit(
        &s,
        Command::DeploymentStatusUpdate {
            deployment_id: id,
            status: status.to_string(),
            status_description: description.to_string(),
            job: None,
            eval,
            now,
        },
        None,
    )
    .await
}

async fn promote_deployment(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    s.query(query)?;
    let req: DeploymentPromoteRequest = parse_body(&body)?;
    same_id(&req.deployment_id, &id, "DeploymentID")?;
    let groups = req.groups.unwrap_or_default();
    if !req.all && groups.is_empty() {
        return Err(ApiError::bad_request(
            "must promote all groups (All) or name some (Groups)",
        ));
    }
    let d = active_deployment(&s, &id, "promote").await?;
    let t = s.service().read(false).await?;
    let now = now_ns();
    let eval = t
        .job(&d.namespace, &d.job_id)
        .map(|job| Box::new(deployment_eval(&job, &id, now)));
    commit(
        &s,
        Command::DeploymentPromote {
            deployment_id: id,
            all: req.all,
            groups,
            eval,
            now,
        },
        None,
    )
    .await
}

async fn alloc_health(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    s.query(query)?;
    let req: DeploymentAllocHealthRequest = parse_body(&body)?;
    same_id(&req.deployment_id, &id, "DeploymentID")?;
    let healthy = req.healthy_allocation_ids.unwrap_or_default();
    let unhealthy = req.unhealthy_allocation_ids.unwrap_or_default();
    if healthy.is_empty() && unhealthy.is_empty() {
        return Err(ApiError::bad_request(
            "must specify at least one healthy or unhealthy allocation ID",
        ));
    }
    let d = active_deployment(&s, &id, "set allocation health of").await?;
    let t = s.service().read(false).await?;
    let now = now_ns();
    // An allocation marked unhealthy fails the deployment (rolling back
    // with auto_revert).
    let (fail, job, eval, reverted) = if unhealthy.is_empty() {
        let eval = t
            .job(&d.namespace, &d.job_id)
            .map(|job| deployment_eval(&job, &id, now));
        (None, None, eval, None)
    } else {
        let f = failure(&t, &d, FAILED_ALLOCATIONS, now);
        (Some(f.description), f.job, f.eval, f.reverted_version)
    };
    commit(
        &s,
        Command::DeploymentAllocHealth {
            deployment_id: id,
            healthy,
            unhealthy,
            fail,
            job: job.map(Box::new),
            eval: eval.map(Box::new),
            now,
        },
        reverted,
    )
    .await
}

async fn revert_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    let q = s.query(query)?;
    let req: JobRevertRequest = parse_body(&body)?;
    same_id(&req.job_id, &id, "JobID")?;
    let t = s.service().read(false).await?;
    let current = t
        .job(&q.namespace, &id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    if let Some(prior) = req.enforce_prior_version {
        if prior != current.version {
            return Err(ApiError::bad_request(format!(
                "Current job has version {}; enforcing version {prior}",
                current.version
            )));
        }
    }
    if req.job_version == current.version {
        return Err(ApiError::bad_request(format!(
            "can't revert to current version {}",
            req.job_version
        )));
    }
    let target = t
        .job_versions(&q.namespace, &id)
        .into_iter()
        .find(|j| j.version == req.job_version)
        .ok_or_else(|| {
            ApiError::not_found(format!("job {id} at version {} not found", req.job_version))
        })?;
    let mut job = (*target).clone();
    job.stable = false;
    let now = now_ns();
    let eval = new_eval(&job, "job-register", now);
    let (response, raft_index) = s
        .service()
        .write(Command::JobRegister {
            job: Box::new(job),
            eval: Some(Box::new(eval)),
            now,
            enforce_index: None,
        })
        .await?;
    let index = s.service().effective_index(raft_index);
    match response {
        CommandResponse::Job {
            job_modify_index,
            eval_id,
            eval_create_index,
            ..
        } => {
            super::http::job_register_reply(&s, index, job_modify_index, eval_id, eval_create_index)
        }
        CommandResponse::NotFound(m) => Err(ApiError::not_found(m)),
        CommandResponse::Conflict(m) => Err(ApiError::bad_request(m)),
        CommandResponse::Ok => Err(ApiError::internal("unexpected revert result")),
    }
}

async fn job_stable(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    let q = s.query(query)?;
    let req: JobStabilityRequest = parse_body(&body)?;
    same_id(&req.job_id, &id, "JobID")?;
    let (response, raft_index) = s
        .service()
        .write(Command::JobStability {
            namespace: q.namespace.clone(),
            job_id: id,
            version: req.job_version,
            stable: req.stable,
        })
        .await?;
    let index = s.service().effective_index(raft_index);
    match response {
        CommandResponse::NotFound(m) => Err(ApiError::not_found(m)),
        CommandResponse::Conflict(m) => Err(ApiError::bad_request(m)),
        _ => s.json(index, &json!({ "Index": index })),
    }
}
