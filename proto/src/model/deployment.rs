//! Deployments: the rollout of one job version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::constants::{
    DEPLOYMENT_STATUS_BLOCKED, DEPLOYMENT_STATUS_INITIALIZING, DEPLOYMENT_STATUS_PAUSED,
    DEPLOYMENT_STATUS_PENDING, DEPLOYMENT_STATUS_RUNNING, DEPLOYMENT_STATUS_UNBLOCKING,
};
use super::de::{null_default, null_default_map, null_default_vec};

/// A deployment, as `GET /v1/deployment/:id` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Deployment {
    /// Identifier (a UUID).
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Namespace of the job.
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    /// ID of the job.
    #[serde(rename = "JobID", deserialize_with = "null_default")]
    pub job_id: String,
    /// Version of the job being deployed.
    #[serde(deserialize_with = "null_default")]
    pub job_version: u64,
    /// The job's `ModifyIndex` at the deployment's creation.
    #[serde(deserialize_with = "null_default")]
    pub job_modify_index: u64,
    /// The job's `JobModifyIndex` at the deployment's creation.
    #[serde(deserialize_with = "null_default")]
    pub job_spec_modify_index: u64,
    /// The job's `CreateIndex`.
    #[serde(deserialize_with = "null_default")]
    pub job_create_index: u64,
    /// Part of a multiregion deployment.
    #[serde(deserialize_with = "null_default")]
    pub is_multiregion: bool,
    /// Progress of each group by name.
    #[serde(deserialize_with = "null_default_map")]
    pub task_groups: BTreeMap<String, DeploymentState>,
    /// See the `DEPLOYMENT_STATUS_*` constants.
    #[serde(deserialize_with = "null_default")]
    pub status: String,
    /// Why it has its status.
    #[serde(deserialize_with = "null_default")]
    pub status_description: String,
    /// Raft index of its creation.
    #[serde(deserialize_with = "null_default")]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(deserialize_with = "null_default")]
    pub modify_index: u64,
}

impl Deployment {
    /// Whether the deployment is still in progress (not successful, failed
    /// or cancelled).
    pub fn active(&self) -> bool {
        matches!(
            self.status.as_str(),
            DEPLOYMENT_STATUS_RUNNING
                | DEPLOYMENT_STATUS_PAUSED
                | DEPLOYMENT_STATUS_PENDING
                | DEPLOYMENT_STATUS_BLOCKED
                | DEPLOYMENT_STATUS_UNBLOCKING
                | DEPLOYMENT_STATUS_INITIALIZING
        )
    }
}

/// Progress of one group within a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentState {
    /// Roll back when the deployment fails.
    #[serde(deserialize_with = "null_default")]
    pub auto_revert: bool,
    /// Promote healthy canaries automatically.
    #[serde(deserialize_with = "null_default")]
    pub auto_promote: bool,
    /// The group's progress deadline, in nanoseconds.
    #[serde(deserialize_with = "null_default")]
    pub progress_deadline: i64,
    /// When the deployment fails without further progress (RFC 3339).
    pub require_progress_by: Option<String>,
    /// The canaries were promoted.
    #[serde(deserialize_with = "null_default")]
    pub promoted: bool,
    /// IDs of the canary allocations placed.
    #[serde(deserialize_with = "null_default_vec")]
    pub placed_canaries: Vec<String>,
    /// Canaries wanted.
    #[serde(deserialize_with = "null_default")]
    pub desired_canaries: i64,
    /// Allocations wanted in total.
    #[serde(deserialize_with = "null_default")]
    pub desired_total: i64,
    /// Allocations placed.
    #[serde(deserialize_with = "null_default")]
    pub placed_allocs: i64,
    /// Allocations healthy.
    #[serde(deserialize_with = "null_default")]
    pub healthy_allocs: i64,
    /// Allocations unhealthy.
    #[serde(deserialize_with = "null_default")]
    pub unhealthy_allocs: i64,
}
