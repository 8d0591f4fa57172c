//! Children of template jobs: `PUT /v1/job/:id/periodic/force` launches a
//! periodic job now, `PUT /v1/job/:id/dispatch` dispatches a parameterized
//! job with a payload and meta.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use base64::Engine as _;
use http::StatusCode;
use proto::model::{
    JobDispatchRequest, JobDispatchResponse, PeriodicForceResponse, DISPATCH_LAUNCH_SUFFIX,
    DISPATCH_PAYLOAD_FORBIDDEN, DISPATCH_PAYLOAD_REQUIRED, DISPATCH_PAYLOAD_SIZE_LIMIT,
};

use super::http::{parse_body, ApiResult, ApiState, Q};
use super::ApiError;
use crate::leader::now_ns;
use crate::leader::periodic::{launch, new_eval, Launched};
use crate::state::{Command, CommandResponse};

/// `PUT /v1/job/:id/periodic/force`: launch a child now, whatever the
/// schedule and `ProhibitOverlap` say (as Nomad does).
pub async fn periodic_force(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
) -> ApiResult {
    let q = s.query(query)?;
    let t = s.service().read(false).await?;
    let job = t
        .job(&q.namespace, &id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    if !job.is_periodic_active() {
        return Err(ApiError::bad_request("can't force launch non-periodic job"));
    }
    match launch(s.service(), &job, now_ns()).await? {
        Launched::Child {
            eval_id,
            eval_create_index,
            index,
            ..
        } => s.json(
            index,
            &PeriodicForceResponse {
                eval_id,
                eval_create_index,
                index,
            },
        ),
        Launched::Exists(child) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("periodic job {child} was launched this second already"),
        }),
    }
}

/// `PUT /v1/job/:id/dispatch`: register a child of a parameterized job with
/// the request's payload and meta, checked against the job's rules.
pub async fn dispatch(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    query: Q,
    body: Bytes,
) -> ApiResult {
    let q = s.query(query)?;
    let req: JobDispatchRequest = parse_body(&body)?;
    let t = s.service().read(false).await?;
    let parent = t
        .job(&q.namespace, &id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    let Some(rules) = parent
        .parameterized_job
        .as_ref()
        .filter(|_| parent.is_parameterized())
    else {
        return Err(ApiError::bad_request(format!(
            "Specified job {id:?} is not a parameterized job"
        )));
    };
    if parent.stop {
        return Err(ApiError::bad_request(format!(
            "Specified job {id:?} is stopped"
        )));
    }

    let payload = base64::engine::general_purpose::STANDARD
        .decode(req.payload.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("Payload is not valid base64: {e}")))?;
    if payload.len() > DISPATCH_PAYLOAD_SIZE_LIMIT {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Payload exceeds maximum size; {} > {DISPATCH_PAYLOAD_SIZE_LIMIT}",
                payload.len()
            ),
        });
    }
    if rules.payload == DISPATCH_PAYLOAD_FORBIDDEN && !payload.is_empty() {
        return Err(ApiError::bad_request("Payload is not permitted"));
    }
    if rules.payload == DISPATCH_PAYLOAD_REQUIRED && payload.is_empty() {
        return Err(ApiError::bad_request("Payload is not provided"));
    }
    let required: BTreeSet<&str> = rules.meta_required.iter().map(String::as_str).collect();
    let allowed: BTreeSet<&str> = required
        .iter()
        .copied()
        .chain(rules.meta_optional.iter().map(String::as_str))
        .collect();
    let unpermitted: Vec<&str> = req
        .meta
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unpermitted.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Dispatch request included unpermitted metadata keys: {unpermitted:?}"
        )));
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !req.meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Dispatch did not provide required meta keys: {missing:?}"
        )));
    }

    // A retried dispatch gets the child its token already made.
    if !req.idempotency_token.is_empty() {
        if let Some(existing) = t
            .children_of(&parent.namespace, &parent.id)
            .into_iter()
            .find(|c| c.dispatch_idempotency_token == req.idempotency_token)
        {
            return s.json(
                existing.modify_index,
                &JobDispatchResponse {
                    dispatched_job_id: existing.id.clone(),
                    eval_id: String::new(),
                    eval_create_index: 0,
                    job_create_index: existing.create_index,
                    index: existing.modify_index,
                },
            );
        }
    }

    let now = now_ns();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let child_id = format!(
        "{}{DISPATCH_LAUNCH_SUFFIX}{}-{}",
        parent.id,
        now.div_euclid(1_000_000_000),
        &suffix[..8]
    );
    let mut child = (*parent).clone();
    child.id = child_id.clone();
    child.name = child_id.clone();
    child.parent_id = parent.id.clone();
    child.dispatched = true;
    child.dispatch_idempotency_token = req.idempotency_token.clone();
    child.payload = req.payload.clone();
    child.meta.extend(req.meta);
    child.status = String::new();
    child.status_description = String::new();
    child.stable = false;
    child.version = 0;
    child.create_index = 0;
    child.modify_index = 0;
    child.job_modify_index = 0;
    // A dispatched child of a periodic template launches on its schedule.
    let eval = (!child.is_template()).then(|| new_eval(&child, "job-register", now));
    let cmd = Command::JobRegister {
        job: Box::new(child),
        eval: eval.map(Box::new),
        now,
        enforce_index: Some(0),
    };
    let (resp, index) = s.service().write(cmd).await?;
    let index = s.service().effective_index(index);
    match resp {
        CommandResponse::Job {
            eval_id,
            eval_create_index,
            job_modify_index,
            ..
        } => s.json(
            index,
            &JobDispatchResponse {
                dispatched_job_id: child_id,
                eval_id: eval_id.unwrap_or_default(),
                eval_create_index,
                job_create_index: job_modify_index,
                index,
            },
        ),
        CommandResponse::Conflict(m) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: m,
        }),
        other => Err(ApiError::internal(format!(
            "unexpected dispatch result: {other:?}"
        ))),
    }
}
