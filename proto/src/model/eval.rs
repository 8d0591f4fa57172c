//! Evaluations: requests to the scheduler to reconcile a job with the cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::constants::{EVAL_STATUS_CANCELED, EVAL_STATUS_COMPLETE, EVAL_STATUS_FAILED};
use super::de::{null_default, null_default_map, null_default_vec};

/// An evaluation, as `GET /v1/evaluation/:id` (and `GET /v1/evaluations`)
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Evaluation {
    /// Identifier (a UUID).
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Namespace of the job.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// Priority, the job's priority.
    #[serde(deserialize_with = "null_default")]
    pub priority: i64,
    /// Scheduler that processes it: the job's type, or `_core`.
    #[serde(deserialize_with = "null_default")]
    pub r#type: String,
    /// What caused it (see the `EVAL_TRIGGER_*` constants).
    #[serde(deserialize_with = "null_default")]
    pub triggered_by: String,
    /// ID of the job.
    #[serde(rename = "JobID", deserialize_with = "null_default")]
    pub job_id: String,
    /// The job's `JobModifyIndex` when the evaluation was created.
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
    /// Node whose change caused it, if any.
    #[serde(rename = "NodeID", deserialize_with = "null_default")]
    pub node_id: String,
    /// That node's `ModifyIndex` when the evaluation was created.
    #[serde(deserialize_with = "null_default")]
    pub node_modify_index: u64,
    /// Deployment whose change caused it, if any.
    #[serde(rename = "DeploymentID", deserialize_with = "null_default")]
    pub deployment_id: String,
    /// `blocked`, `pending`, `complete`, `failed` or `canceled`.
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Why it has its status.
    #[serde(deserialize_with = "null_default")]
    pub status_description: String,
    /// Wait before processing, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub wait: i64,
    /// Do not process before this time (RFC 3339).
    pub wait_until: Option<String>,
    /// Evaluation created to follow this one.
    #[serde(deserialize_with = "null_default")]
    pub next_eval: String,
    /// Evaluation this one follows.
    #[serde(deserialize_with = "null_default")]
    pub previous_eval: String,
    /// Blocked evaluation created for the placements this one could not
    /// make.
    #[serde(deserialize_with = "null_default")]
    pub blocked_eval: String,
    /// Related evaluations (kept verbatim).
    #[serde(deserialize_with = "null_default_vec")]
    pub related_evals: Vec<Value>,
    /// Placement failure metrics per group (kept verbatim).
    #[serde(rename = "FailedTGAllocs", deserialize_with = "null_default_map")]
    pub failed_tg_allocs: BTreeMap<String, Value>,
    /// Eligibility of each computed node class.
    #[serde(deserialize_with = "null_default_map")]
    pub class_eligibility: BTreeMap<String, bool>,
    /// Eligibility could not be computed per class.
    #[serde(deserialize_with = "null_default")]
    pub escaped_computed_class: bool,
    /// Quota that blocked the evaluation.
    #[serde(deserialize_with = "null_default")]
    pub quota_limit_reached: String,
    /// Annotate the plan (used by `job plan`).
    #[serde(deserialize_with = "null_default")]
    pub annotate_plan: bool,
    /// Allocations per group left unplaced.
    #[serde(deserialize_with = "null_default_map")]
    pub queued_allocations: BTreeMap<String, i64>,
    /// Raft index of the state snapshot the scheduler used.
    #[serde(deserialize_with = "null_default")]
    pub snapshot_index: u64,
    /// Raft index of the evaluation's creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
    /// Creation time, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub create_time: i64,
    /// Last change time, in Unix nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub modify_time: i64,
}

impl Evaluation {
    /// Whether the evaluation is finished (`complete`, `failed` or
    /// `canceled`).
    pub fn terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            EVAL_STATUS_COMPLETE | EVAL_STATUS_FAILED | EVAL_STATUS_CANCELED
        )
    }
}
