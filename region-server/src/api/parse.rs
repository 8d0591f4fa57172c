//! `PUT /v1/jobs/parse`: an HCL2 job file to the job's JSON, as Nomad's
//! endpoint does (`{"JobHCL": ..., "Canonicalize": ..., "Variables": ...}`).
//! The conversion itself is `proto::hcl`; this handler only decodes the
//! request and answers. `Variables` is a variables file (`name = value`
//! lines) as Nomad sends it, or an object of raw strings.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use serde::Deserialize;
use serde_json::Value;

use super::http::ApiState;
use super::ApiError;

/// Body of `PUT /v1/jobs/parse`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ParseRequest {
    #[serde(rename = "JobHCL")]
    job_hcl: String,
    canonicalize: bool,
    variables: Option<Value>,
}

/// The variables of a request: a variables file or a map of raw strings.
fn variables(value: Option<Value>) -> Result<BTreeMap<String, String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::String(file)) => proto::hcl::parse_var_file(&file)
            .map_err(|e| ApiError::bad_request(format!("Failed to parse Variables: {e}"))),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Ok((k, other.to_string())),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "Variables must be a variables file (a string) or an object",
        )),
    }
}

/// `PUT /v1/jobs/parse`.
pub async fn parse_job(
    State(s): State<ApiState>,
    Query(_q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ParseRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse request body: {e}")))?;
    if req.job_hcl.trim().is_empty() {
        return Err(ApiError::bad_request("JobHCL must be specified"));
    }
    let vars = variables(req.variables)?;
    let mut job = proto::hcl::parse_job(&req.job_hcl, &vars)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse job: {e}")))?;
    if req.canonicalize {
        if job.region.is_empty() {
            job.region = s.service().region.clone();
        }
        job.canonicalize();
    }
    let bytes = serde_json::to_vec(&job)
        .map_err(|e| ApiError::internal(format!("encode response: {e}")))?;
    Ok((
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response())
}
