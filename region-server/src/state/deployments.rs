//! Deployments in the state: their per-group progress counters kept in step
//! with their allocations (Nomad's `updateDeploymentWithAlloc`), status
//! changes, promotion, operator-set allocation health, and job stability.

use std::sync::Arc;

use proto::model::time::{format_rfc3339, parse_rfc3339};
use proto::model::{
    AllocDeploymentStatus, Allocation, Deployment, Evaluation, Job, DEPLOYMENT_STATUS_RUNNING,
    DEPLOYMENT_STATUS_SUCCESSFUL,
};

use super::{table, CommandResponse, Tables};

/// Description of a running deployment.
pub const DEPLOYMENT_RUNNING_DESC: &str = "Deployment is running";

impl Tables {
    /// Counts an allocation's placement and health change in its
    /// deployment's group, stamps the health change's index on the
    /// allocation's `DeploymentStatus`, and moves the group's progress
    /// deadline: set by the first placement, pushed out by each newly
    /// healthy allocation.
    pub(crate) fn track_deployment_alloc(
        &mut self,
        index: u64,
        old: Option<&Allocation>,
        alloc: &mut Allocation,
    ) {
        if alloc.deployment_id.is_empty() {
            return;
        }
        let Some(d) = self.deployments.get(&alloc.deployment_id) else {
            return;
        };
        let Some(state) = d.task_groups.get(&alloc.task_group) else {
            return;
        };
        let same = old.filter(|o| o.deployment_id == alloc.deployment_id);
        let placed = same.is_none();
        let old_health = same
            .and_then(|o| o.deployment_status.as_ref())
            .and_then(|s| s.healthy);
        let new_health = alloc.deployment_status.as_ref().and_then(|s| s.healthy);
        let (healthy, unhealthy) = match (old_health, new_health) {
            (None, Some(true)) => (1, 0),
            (None, Some(false)) => (0, 1),
            (Some(true), Some(false)) => (-1, 1),
            _ => (0, 0),
        };
        if old_health != new_health && new_health.is_some() {
            if let Some(status) = alloc.deployment_status.as_mut() {
                status.modify_index = index;
            }
        }
        let canary = alloc.deployment_status.as_ref().is_some_and(|s| s.canary);
        let new_canary = canary && !state.placed_canaries.contains(&alloc.id);
        if !placed && healthy == 0 && unhealthy == 0 && !new_canary {
            return;
        }
        let mut d = (**d).clone();
        let Some(state) = d.task_groups.get_mut(&alloc.task_group) else {
            return;
        };
        state.placed_allocs += i64::from(placed);
        state.healthy_allocs += healthy;
        state.unhealthy_allocs += unhealthy;
        if new_canary {
            state.placed_canaries.push(alloc.id.clone());
        }
        if state.progress_deadline > 0 {
            let current = state.require_progress_by.as_deref().and_then(parse_rfc3339);
            if placed && current.is_none() {
                state.require_progress_by =
                    Some(format_rfc3339(alloc.modify_time + state.progress_deadline));
            } else if healthy > 0 {
                let at = alloc
                    .deployment_status
                    .as_ref()
                    .and_then(|s| s.timestamp.as_deref())
                    .and_then(parse_rfc3339)
                    .unwrap_or(alloc.modify_time);
                let by = at + state.progress_deadline;
                if current.is_none_or(|c| by > c) {
                    state.require_progress_by = Some(format_rfc3339(by));
                }
            }
        }
        d.modify_index = index;
        self.put_deployment(index, d);
    }

    /// Stores a deployment; one that just became successful marks its job
    /// version stable (Nomad does the same when the status is committed).
    fn put_deployment(&mut self, index: u64, d: Deployment) {
        let became_successful = d.status == DEPLOYMENT_STATUS_SUCCESSFUL
            && self
                .deployments
                .get(&d.id)
                .is_none_or(|old| old.status != DEPLOYMENT_STATUS_SUCCESSFUL);
        let (ns, job, version) = (d.namespace.clone(), d.job_id.clone(), d.job_version);
        self.deployments.insert(d.id.clone(), Arc::new(d));
        self.touch(table::DEPLOYMENTS, index);
        if became_successful {
            self.set_job_stability(index, &ns, &job, version, true);
        }
    }

    /// A deployment from a plan: a new one is stored whole; for an existing
    /// one only the status changes (its counters belong to the state), and
    /// a terminal deployment keeps its status (a plan made before an
    /// operator or the watcher failed it does not revive it).
    pub(crate) fn plan_deployment(&mut self, index: u64, mut d: Deployment) {
        match self.deployments.get(&d.id) {
            Some(old) => {
                if !old.active()
                    || (old.status == d.status && old.status_description == d.status_description)
                {
                    return;
                }
                let mut updated = (**old).clone();
                updated.status = d.status;
                updated.status_description = d.status_description;
                updated.modify_index = index;
                self.put_deployment(index, updated);
            }
            None => {
                d.create_index = index;
                d.modify_index = index;
                self.put_deployment(index, d);
            }
        }
    }

    /// Sets `Stable` on a tracked job version (and on the job when it is
    /// the current version). Returns whether the version exists.
    pub(crate) fn set_job_stability(
        &mut self,
        index: u64,
        namespace: &str,
        job_id: &str,
        version: u64,
        stable: bool,
    ) -> bool {
        let key = (namespace.to_string(), job_id.to_string(), version);
        let Some(found) = self.job_versions.get(&key) else {
            return false;
        };
        if found.stable != stable {
            let mut j = (**found).clone();
            j.stable = stable;
            j.modify_index = index;
            self.job_versions.insert(key, Arc::new(j));
        }
        let job_key = (namespace.to_string(), job_id.to_string());
        if let Some(current) = self.jobs.get(&job_key) {
            if current.version == version && current.stable != stable {
                let mut j = (**current).clone();
                j.stable = stable;
                j.modify_index = index;
                self.jobs.insert(job_key, Arc::new(j));
            }
        }
        self.touch(table::JOBS, index);
        true
    }

    /// An active deployment by id, or the command's error.
    fn active_deployment(&self, id: &str, what: &str) -> Result<Deployment, CommandResponse> {
        let Some(d) = self.deployments.get(id) else {
            return Err(CommandResponse::NotFound(format!(
                "deployment not found: {id}"
            )));
        };
        if !d.active() {
            return Err(CommandResponse::Conflict(format!(
                "can't {what} terminal deployment with status {:?}",
                d.status
            )));
        }
        Ok((**d).clone())
    }

    /// Registers `job` (with `eval`) or creates `eval` alone, answering
    /// with the job's resulting version and the evaluation.
    fn deployment_followup(
        &mut self,
        index: u64,
        d: &Deployment,
        job: Option<Job>,
        eval: Option<Evaluation>,
        now: i64,
    ) -> CommandResponse {
        if let Some(job) = job {
            return self.job_register(index, job, eval, now, None);
        }
        let current = self.job(&d.namespace, &d.job_id);
        let (job_modify_index, version) = current
            .map(|j| (j.job_modify_index, j.version))
            .unwrap_or((0, d.job_version));
        let (eval_id, eval_create_index) = self.create_eval(index, eval, job_modify_index);
        CommandResponse::Job {
            job_modify_index,
            version,
            eval_id,
            eval_create_index,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deployment_status_update(
        &mut self,
        index: u64,
        id: &str,
        status: String,
        description: String,
        job: Option<Job>,
        eval: Option<Evaluation>,
        now: i64,
    ) -> CommandResponse {
        let mut d = match self.active_deployment(id, "update") {
            Ok(d) => d,
            Err(e) => return e,
        };
        d.status = status;
        d.status_description = description;
        d.modify_index = index;
        self.put_deployment(index, d.clone());
        self.deployment_followup(index, &d, job, eval, now)
    }

    /// Nomad's promotion: every selected group with canaries needs as many
    /// healthy, live canaries as it wants; then the groups are promoted,
    /// their progress deadlines restart, and the canaries stop being
    /// canaries.
    pub(crate) fn deployment_promote(
        &mut self,
        index: u64,
        id: &str,
        all: bool,
        groups: &[String],
        eval: Option<Evaluation>,
        now: i64,
    ) -> CommandResponse {
        let mut d = match self.active_deployment(id, "promote") {
            Ok(d) => d,
            Err(e) => return e,
        };
        if let Some(unknown) = groups.iter().find(|g| !d.task_groups.contains_key(*g)) {
            return CommandResponse::Conflict(format!("deployment has no task group {unknown:?}"));
        }
        let selected = |name: &str| all || groups.iter().any(|g| g == name);
        if !d
            .task_groups
            .iter()
            .any(|(name, s)| selected(name) && s.desired_canaries > 0)
        {
            return CommandResponse::Conflict("no canaries to promote".to_string());
        }
        let mut promotable: Vec<Arc<Allocation>> = Vec::new();
        let mut problems = Vec::new();
        for (name, state) in &d.task_groups {
            if !selected(name) || state.desired_canaries == 0 {
                continue;
            }
            let healthy: Vec<Arc<Allocation>> = state
                .placed_canaries
                .iter()
                .filter_map(|c| self.allocs.get(c))
                .filter(|a| {
                    !a.terminal()
                        && a.deployment_status
                            .as_ref()
                            .is_some_and(|s| s.healthy == Some(true))
                })
                .cloned()
                .collect();
            if (healthy.len() as i64) < state.desired_canaries {
                problems.push(format!(
                    "Task group {name:?} has {}/{} healthy allocations",
                    healthy.len(),
                    state.desired_canaries
                ));
            }
            promotable.extend(healthy);
        }
        if !problems.is_empty() {
            return CommandResponse::Conflict(problems.join("; "));
        }
        for (name, state) in d.task_groups.iter_mut() {
            if !selected(name) {
                continue;
            }
            if state.progress_deadline > 0 && state.require_progress_by.is_some() {
                state.require_progress_by = Some(format_rfc3339(now + state.progress_deadline));
            }
            state.promoted = true;
        }
        let needs_promotion = d
            .task_groups
            .values()
            .any(|s| s.desired_canaries > 0 && !s.promoted);
        if !needs_promotion && d.status == DEPLOYMENT_STATUS_RUNNING {
            d.status_description = DEPLOYMENT_RUNNING_DESC.to_string();
        }
        d.modify_index = index;
        self.put_deployment(index, d.clone());
        for alloc in promotable {
            let mut a = (*alloc).clone();
            // Its health is unchanged: `ModifyIndex` stays, so the watcher
            // sees no new health report.
            if let Some(status) = a.deployment_status.as_mut() {
                status.canary = false;
            }
            self.upsert_alloc(index, a);
        }
        self.deployment_followup(index, &d, None, eval, now)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deployment_alloc_health(
        &mut self,
        index: u64,
        id: &str,
        healthy: &[String],
        unhealthy: &[String],
        fail: Option<String>,
        job: Option<Job>,
        eval: Option<Evaluation>,
        now: i64,
    ) -> CommandResponse {
        let d = match self.active_deployment(id, "set health of allocations of") {
            Ok(d) => d,
            Err(e) => return e,
        };
        let mut changed = Vec::new();
        for (ids, health) in [(healthy, true), (unhealthy, false)] {
            for alloc_id in ids {
                let Some(alloc) = self.allocs.get(alloc_id) else {
                    return CommandResponse::NotFound(format!("alloc not found: {alloc_id}"));
                };
                if alloc.deployment_id != d.id {
                    return CommandResponse::Conflict(format!(
                        "allocation {alloc_id} is not part of deployment {id}"
                    ));
                }
                let mut a = (**alloc).clone();
                let canary = a.deployment_status.as_ref().is_some_and(|s| s.canary);
                a.deployment_status = Some(AllocDeploymentStatus {
                    healthy: Some(health),
                    timestamp: Some(format_rfc3339(now)),
                    canary,
                    modify_index: index,
                });
                changed.push(a);
            }
        }
        for a in changed {
            self.upsert_alloc(index, a);
        }
        let mut d = self.deployments.get(id).map(|d| (**d).clone()).unwrap_or(d);
        if let Some(description) = fail {
            d.status = proto::model::DEPLOYMENT_STATUS_FAILED.to_string();
            d.status_description = description;
            d.modify_index = index;
            self.put_deployment(index, d.clone());
        }
        self.deployment_followup(index, &d, job, eval, now)
    }
}
