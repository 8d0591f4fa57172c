//! Request and response bodies of Nomad's job write endpoints.

use serde::{Deserialize, Serialize};

use super::de::{null_default, null_default_vec};
use super::job::Job;
use super::validate::ValidationErrors;

/// Body of `PUT /v1/jobs` and `PUT /v1/job/:id`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobRegisterRequest {
    /// The job to register.
    pub job: Option<Job>,
    /// Register only if the job's current `JobModifyIndex` is
    /// `JobModifyIndex` (0: only if the job does not exist).
    #[serde(deserialize_with = "null_default")]
    pub enforce_index: bool,
    /// The index checked when `EnforceIndex` is set.
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
    /// Override soft-mandatory policies.
    #[serde(deserialize_with = "null_default")]
    pub policy_override: bool,
    /// Keep the current group counts of an existing job.
    #[serde(deserialize_with = "null_default")]
    pub preserve_counts: bool,
    /// Priority of the evaluation created; 0 for the job's.
    #[serde(deserialize_with = "null_default")]
    pub eval_priority: i64,
    /// Region the request is for; empty for the receiving server's.
    #[serde(deserialize_with = "null_default")]
    pub region: String,
    /// Namespace the request is for.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
}

/// Response to a job registration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobRegisterResponse {
    /// Evaluation created for the job; empty for periodic and parameterized
    /// jobs.
    #[serde(rename = "EvalID", deserialize_with = "null_default")]
    pub eval_id: String,
    /// Raft index of that evaluation's creation.
    #[serde(deserialize_with = "null_default")]
    pub eval_create_index: u64,
    /// The job's new `JobModifyIndex`.
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
    /// Non-fatal problems with the job, formatted like Nomad's multierror.
    #[serde(deserialize_with = "null_default")]
    pub warnings: String,
    /// Raft index of the write.
    #[serde(deserialize_with = "null_default")]
    pub index: u64,
}

/// Response to a job deregistration (`DELETE /v1/job/:id`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobDeregisterResponse {
    /// Evaluation created to stop the job's allocations.
    #[serde(rename = "EvalID", deserialize_with = "null_default")]
    pub eval_id: String,
    /// Raft index of that evaluation's creation.
    #[serde(deserialize_with = "null_default")]
    pub eval_create_index: u64,
    /// The job's new `JobModifyIndex`.
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
    /// Raft index of the write.
    #[serde(deserialize_with = "null_default")]
    pub index: u64,
}

/// Body of `PUT /v1/validate/job`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobValidateRequest {
    /// The job to validate.
    pub job: Option<Job>,
    /// Region the request is for.
    #[serde(deserialize_with = "null_default")]
    pub region: String,
    /// Namespace the request is for.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
}

/// Response of `PUT /v1/validate/job`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobValidateResponse {
    /// The task drivers' configurations were validated too.
    #[serde(deserialize_with = "null_default")]
    pub driver_config_validated: bool,
    /// Each problem found, one per entry.
    #[serde(deserialize_with = "null_default_vec")]
    pub validation_errors: Vec<String>,
    /// All problems in one multierror-formatted string; empty if none.
    #[serde(deserialize_with = "null_default")]
    pub error: String,
    /// Non-fatal problems, formatted like Nomad's multierror.
    #[serde(deserialize_with = "null_default")]
    pub warnings: String,
}

impl JobValidateResponse {
    /// The response for a validation outcome, e.g. of
    /// [`Job::validate`](super::Job::validate).
    pub fn from_result(result: &Result<(), ValidationErrors>) -> Self {
        match result {
            Ok(()) => Self::default(),
            Err(errors) => Self {
                driver_config_validated: false,
                validation_errors: errors.messages(),
                error: errors.to_string(),
                warnings: String::new(),
            },
        }
    }
}
