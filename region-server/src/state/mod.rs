//! The region's state: in-memory tables with secondary indexes, changed only
//! by applying Raft commands, read through cheap consistent snapshots.
//!
//! Tables are persistent maps (`imbl`): cloning a [`Tables`] is O(1) and
//! shares structure, so every applied batch publishes a new immutable
//! snapshot through a `watch` channel. Readers take the latest snapshot
//! without locks; blocking queries wait on the same channel.

use std::sync::Arc;
use std::time::Duration;

use imbl::OrdMap;
use proto::model::{
    periodic_launch_of, Allocation, AutopilotConfiguration, Deployment, Evaluation, Job,
    JobChildrenSummary, JobSummary, Node, PeriodicLaunch, SchedulerConfiguration, JOB_STATUS_DEAD,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod deployments;
pub mod requests;
pub mod snapshot_file;

pub use requests::{AppliedRequest, RequestId};

/// How many versions of a job are kept (Nomad keeps 6).
pub const JOB_TRACKED_VERSIONS: usize = 6;

/// `(namespace, id)`.
pub type NsKey = (String, String);

/// The names of the tables, for per-table modify indexes.
pub mod table {
    /// Jobs and their versions and summaries.
    pub const JOBS: &str = "jobs";
    /// Evaluations.
    pub const EVALS: &str = "evals";
    /// Allocations.
    pub const ALLOCS: &str = "allocs";
    /// Nodes.
    pub const NODES: &str = "nodes";
    /// Deployments.
    pub const DEPLOYMENTS: &str = "deployments";
    /// Last launches of periodic jobs.
    pub const PERIODIC_LAUNCH: &str = "periodic_launch";
    /// Operator settings (scheduler and autopilot configuration).
    pub const OPERATOR_CONFIG: &str = "operator_config";
    /// Every table.
    pub const ALL: [&str; 7] = [
        JOBS,
        EVALS,
        ALLOCS,
        NODES,
        DEPLOYMENTS,
        PERIODIC_LAUNCH,
        OPERATOR_CONFIG,
    ];
}

/// One consistent version of every table.
#[derive(Clone, Default, Debug)]
pub struct Tables {
    /// The Raft index of the last applied command.
    pub index: u64,
    /// Added to Raft indexes to make object and table indexes. Zero until a
    /// snapshot from a region further along is restored: then it jumps so
    /// indexes keep growing from the snapshot's, and blocking queries and
    /// `CreateIndex`/`ModifyIndex` never go backwards.
    pub index_offset: u64,
    /// Jobs by (namespace, id).
    pub jobs: OrdMap<NsKey, Arc<Job>>,
    /// Every tracked version: (namespace, id, version).
    pub job_versions: OrdMap<(String, String, u64), Arc<Job>>,
    /// Job summaries by (namespace, id).
    pub job_summaries: OrdMap<NsKey, Arc<JobSummary>>,
    /// Evaluations by id.
    pub evals: OrdMap<String, Arc<Evaluation>>,
    /// Index: (namespace, job id, eval id).
    pub evals_by_job: OrdMap<(String, String, String), ()>,
    /// Index: (modify index, eval id), so the leader finds new and changed
    /// evaluations without scanning them all.
    pub evals_by_modify: OrdMap<(u64, String), ()>,
    /// Allocations by id.
    pub allocs: OrdMap<String, Arc<Allocation>>,
    /// Index: (namespace, job id, alloc id).
    pub allocs_by_job: OrdMap<(String, String, String), ()>,
    /// Index: (node id, alloc id).
    pub allocs_by_node: OrdMap<(String, String), ()>,
    /// Index: (modify index, alloc id).
    pub allocs_by_modify: OrdMap<(u64, String), ()>,
    /// Nodes by id.
    pub nodes: OrdMap<String, Arc<Node>>,
    /// Deployments by id.
    pub deployments: OrdMap<String, Arc<Deployment>>,
    /// Last launch of each periodic job by (namespace, id).
    pub periodic_launches: OrdMap<NsKey, Arc<PeriodicLaunch>>,
    /// The scheduler configuration an operator set (None: the servers'
    /// defaults).
    pub scheduler_config: Option<Arc<SchedulerConfiguration>>,
    /// The autopilot configuration an operator set (None: defaults).
    pub autopilot_config: Option<Arc<AutopilotConfiguration>>,
    /// The Raft index at which each table last changed.
    pub table_index: OrdMap<String, u64>,
    /// Requests applied recently, so that a retried write is applied once
    /// (see [`requests`]).
    pub requests: requests::Requests,
    /// Jobs whose allocations or evaluations changed in the command being
    /// applied; their status is recomputed at its end.
    dirty_jobs: std::collections::BTreeSet<NsKey>,
    /// Periodic and parameterized parents whose children changed in the
    /// command being applied; their `Children` counts are recomputed at its
    /// end.
    dirty_parents: std::collections::BTreeSet<NsKey>,
}

/// A write to the state, decided before it enters the Raft log: everything
/// that varies (ids, times) is already in it, so applying it is deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Register (create or update) a job, with the evaluation it triggers.
    JobRegister {
        /// The canonicalized, validated job.
        job: Box<Job>,
        /// The evaluation to create.
        eval: Option<Box<Evaluation>>,
        /// Submit time, ns since the epoch.
        now: i64,
        /// Only register if the job's current JobModifyIndex equals this.
        enforce_index: Option<u64>,
    },
    /// Stop (or purge) a job.
    JobDeregister {
        /// Namespace of the job.
        namespace: String,
        /// Job id.
        job_id: String,
        /// Remove the job and its versions entirely.
        purge: bool,
        /// The evaluation to create.
        eval: Option<Box<Evaluation>>,
        /// Time, ns since the epoch.
        now: i64,
    },
    /// Create or replace nodes.
    NodeUpsert {
        /// The nodes.
        nodes: Vec<Node>,
    },
    /// A client registered (or re-registered) its node, with the
    /// evaluations that follow (system jobs, jobs with allocations there).
    NodeRegister {
        /// The node as the client fingerprinted it.
        node: Box<Node>,
        /// Evaluations to create.
        evals: Vec<Evaluation>,
        /// Time, ns since the epoch.
        now: i64,
    },
    /// A node's status changed (missed heartbeats: `down`; back: `ready`).
    NodeStatus {
        /// Node id.
        node_id: String,
        /// New status.
        status: String,
        /// Evaluations to create.
        evals: Vec<Evaluation>,
        /// Time, ns since the epoch.
        now: i64,
    },
    /// Clients report what their allocations are doing.
    AllocClientUpdate {
        /// Allocation ids with the client-owned fields (ClientStatus,
        /// ClientDescription, TaskStates, DeploymentStatus).
        allocs: Vec<Allocation>,
        /// Evaluations to create (e.g. to reschedule failed allocations).
        evals: Vec<Evaluation>,
    },
    /// An operator changed a node's drain or eligibility.
    NodeSchedulingUpdate {
        /// Node id.
        node_id: String,
        /// `Some(Some(strategy))` starts a drain, `Some(None)` ends it,
        /// `None` leaves it.
        drain: Option<Option<proto::model::DrainStrategy>>,
        /// New eligibility (`eligible`/`ineligible`), if changed.
        eligibility: Option<String>,
        /// Evaluations to create.
        evals: Vec<Evaluation>,
    },
    /// Ask the scheduler to move allocations (`/v1/allocation/{id}/stop`).
    AllocMigrate {
        /// Allocation ids.
        alloc_ids: Vec<String>,
        /// Evaluations to create.
        evals: Vec<Evaluation>,
    },
    /// Garbage collection, forced (`PUT /v1/system/gc`): remove dead jobs
    /// (stopped, or batch jobs whose work is all done) whatever their age,
    /// with their terminal evaluations and allocations.
    Gc,
    /// Garbage collection on the leader's schedule: as [`Command::Gc`], but
    /// only jobs with no activity (submission, allocation or evaluation
    /// change) at or after `job_before` (Unix ns, chosen by the leader so
    /// that every server removes the same jobs).
    GcBefore {
        /// Jobs last active before this time are collected.
        job_before: i64,
    },
    /// Create or replace evaluations.
    EvalUpsert {
        /// The evaluations.
        evals: Vec<Evaluation>,
    },
    /// Create or replace allocations.
    AllocUpsert {
        /// The allocations.
        allocs: Vec<Allocation>,
    },
    /// The results of scheduler plans the leader's plan applier accepted,
    /// committed together in one entry.
    PlanResults {
        /// New, updated and stopped allocations.
        allocs: Vec<Allocation>,
        /// Evaluation updates, blocked and follow-up evaluations.
        evals: Vec<Evaluation>,
        /// Created or updated deployments.
        deployments: Vec<Deployment>,
    },
    /// Replace the whole state with a restored snapshot.
    Restore {
        /// Every row of the restored state.
        rows: Vec<snapshot_file::Row>,
    },
    /// A deployment's status changes (an operator pauses, resumes or fails
    /// it; the leader's deployment watcher fails it), with what follows.
    DeploymentStatusUpdate {
        /// The deployment.
        deployment_id: String,
        /// Its new status.
        status: String,
        /// Why.
        status_description: String,
        /// A job to register with it (auto-revert: the stable version's
        /// spec, which becomes a new version).
        job: Option<Box<Job>>,
        /// The evaluation to create.
        eval: Option<Box<Evaluation>>,
        /// Time, ns since the epoch.
        now: i64,
    },
    /// Promote a deployment's healthy canaries (every group, or `groups`).
    DeploymentPromote {
        /// The deployment.
        deployment_id: String,
        /// Promote every group.
        all: bool,
        /// The groups to promote when not `all`.
        groups: Vec<String>,
        /// The evaluation to create.
        eval: Option<Box<Evaluation>>,
        /// Time, ns since the epoch (restarts progress deadlines).
        now: i64,
    },
    /// Set the health of allocations of a deployment (an operator's
    /// `allocation-health`), possibly failing the deployment with it.
    DeploymentAllocHealth {
        /// The deployment.
        deployment_id: String,
        /// Allocations to mark healthy.
        healthy: Vec<String>,
        /// Allocations to mark unhealthy.
        unhealthy: Vec<String>,
        /// Fail the deployment with this description.
        fail: Option<String>,
        /// A job to register with it (auto-revert).
        job: Option<Box<Job>>,
        /// The evaluation to create.
        eval: Option<Box<Evaluation>>,
        /// Time, ns since the epoch (the health timestamp).
        now: i64,
    },
    /// Mark a job version stable or not.
    JobStability {
        /// Namespace of the job.
        namespace: String,
        /// Job id.
        job_id: String,
        /// The version.
        version: u64,
        /// Stable or not.
        stable: bool,
    },
    /// An operator set the scheduler configuration.
    SchedulerSetConfig {
        /// The validated configuration.
        config: Box<SchedulerConfiguration>,
        /// Only write if the current ModifyIndex equals this (`?cas=`).
        cas_index: Option<u64>,
    },
    /// An operator set the autopilot configuration.
    AutopilotSetConfig {
        /// The configuration.
        config: Box<AutopilotConfiguration>,
        /// Only write if the current ModifyIndex equals this (`?cas=`).
        cas_index: Option<u64>,
    },
    /// The leader's drainer found nothing left to move off a draining
    /// node: the drain ends (`LastDrain` complete), the node stays
    /// ineligible.
    NodeDrainComplete {
        /// Node id.
        node_id: String,
        /// Time, ns since the epoch.
        now: i64,
    },
    /// Several commands proposed at about the same time, committed in one
    /// Raft entry (see `raft::proposer`) and applied in order at its index
    /// ([`Tables::apply_batch`] answers each).
    Batch(Vec<Command>),
    /// A client request's command, applied at most once however many
    /// times it reaches the log (see [`requests`]).
    Once {
        /// The request.
        request: RequestId,
        /// Its command.
        cmd: Box<Command>,
    },
}

impl Command {
    /// A one-line description for traces: the kind, the job or node it
    /// names, the request id (not the whole command).
    pub fn describe(&self) -> String {
        match self {
            Command::JobRegister { job, .. } => format!(
                "JobRegister {}/{} meta={:?}",
                job.namespace, job.id, job.meta
            ),
            Command::JobDeregister {
                namespace,
                job_id,
                purge,
                ..
            } => format!("JobDeregister {namespace}/{job_id} purge={purge}"),
            Command::Batch(cmds) => {
                let inner: Vec<String> = cmds.iter().map(Command::describe).collect();
                format!("Batch[{}]", inner.join("; "))
            }
            Command::Once { request, cmd } => format!(
                "Once(req={} origin={} at={}) {}",
                request.id,
                request.origin,
                request.at,
                cmd.describe()
            ),
            Command::PlanResults { allocs, evals, .. } => {
                format!("PlanResults allocs={} evals={}", allocs.len(), evals.len())
            }
            Command::Restore { rows } => format!("Restore rows={}", rows.len()),
            other => {
                // The variant's name: the start of its Debug form.
                let d = format!("{other:?}");
                d.split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            }
        }
    }

    /// The size of this command's encoding in a Raft entry, in bytes.
    pub fn encoded_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut n = Count(0);
        // Serializing the model to JSON cannot fail (string keys only);
        // should it, the size seen so far is still a lower bound.
        let _ = serde_json::to_writer(&mut n, self);
        n.0
    }
}

/// The result of applying a command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Applied (membership and blank entries too).
    #[default]
    Ok,
    /// A job was registered or deregistered.
    Job {
        /// The job's JobModifyIndex after the command.
        job_modify_index: u64,
        /// The job's version after the command.
        version: u64,
        /// The evaluation created, if any.
        eval_id: Option<String>,
        /// Its create index.
        eval_create_index: u64,
    },
    /// The command named something that does not exist.
    NotFound(String),
    /// The command conflicts with the current state (e.g. enforce index).
    Conflict(String),
}

impl Tables {
    /// The object index a Raft index stands for (see `index_offset`).
    pub fn effective(&self, raft_index: u64) -> u64 {
        raft_index + self.index_offset
    }

    /// The index at which `table` last changed (0 if never).
    pub fn table_index(&self, table: &str) -> u64 {
        self.table_index.get(table).copied().unwrap_or(0)
    }

    /// The largest index of several tables.
    pub fn max_index(&self, tables: &[&str]) -> u64 {
        tables
            .iter()
            .map(|t| self.table_index(t))
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn touch(&mut self, table: &str, index: u64) {
        self.table_index.insert(table.to_string(), index);
    }

    /// Apply one command at Raft index `index`.
    ///
    /// A [`Command::Batch`] applies each of its commands in order and
    /// answers `Ok`; [`Tables::apply_batch`] gives each command's response.
    pub fn apply(&mut self, raft_index: u64, cmd: Command) -> CommandResponse {
        let cmd = match cmd {
            Command::Batch(cmds) => {
                self.apply_batch(raft_index, cmds);
                return CommandResponse::Ok;
            }
            Command::Once { request, cmd } => {
                if let Some(done) = self.requests.get(&request.id) {
                    tracing::debug!(
                        request = %request.id,
                        first = done.raft_index,
                        again = raft_index,
                        "a request reached the log again: not applied twice"
                    );
                    return done.response.clone();
                }
                let response = self.apply(raft_index, *cmd);
                self.requests.remember(AppliedRequest {
                    request,
                    raft_index,
                    response: response.clone(),
                });
                return response;
            }
            cmd => cmd,
        };
        self.index = raft_index;
        let index = self.effective(raft_index);
        let response = self.apply_command(index, raft_index, cmd);
        for key in std::mem::take(&mut self.dirty_jobs) {
            self.refresh_job_status(index, &key);
            if let Some(job) = self.jobs.get(&key) {
                if !job.parent_id.is_empty() {
                    self.dirty_parents
                        .insert((key.0.clone(), job.parent_id.clone()));
                }
            }
        }
        for parent in std::mem::take(&mut self.dirty_parents) {
            self.refresh_children(index, &parent);
        }
        response
    }

    /// Apply the commands of one batch in order, all at Raft index
    /// `raft_index`, and answer each.
    pub fn apply_batch(&mut self, raft_index: u64, cmds: Vec<Command>) -> Vec<CommandResponse> {
        cmds.into_iter()
            .map(|cmd| self.apply(raft_index, cmd))
            .collect()
    }

    /// Children of a periodic or parameterized job (IDs `<parent>/...` with
    /// `ParentID` set to it).
    pub fn children_of(&self, namespace: &str, parent_id: &str) -> Vec<Arc<Job>> {
        let prefix = format!("{parent_id}/");
        self.jobs
            .range((namespace.to_string(), prefix.clone())..)
            .take_while(|((ns, id), _)| ns == namespace && id.starts_with(&prefix))
            .filter(|(_, j)| j.parent_id == parent_id)
            .map(|(_, j)| j.clone())
            .collect()
    }

    /// Recount a parent's children by status into its summary (Nomad's
    /// `JobSummary.Children`).
    fn refresh_children(&mut self, index: u64, parent: &NsKey) {
        let Some(summary) = self.job_summaries.get(parent) else {
            return;
        };
        let mut children = JobChildrenSummary::default();
        for child in self.children_of(&parent.0, &parent.1) {
            match child.status.as_str() {
                "running" => children.running += 1,
                "dead" => children.dead += 1,
                _ => children.pending += 1,
            }
        }
        if summary.children != children {
            let mut summary = (**summary).clone();
            summary.children = children;
            summary.modify_index = index;
            self.job_summaries.insert(parent.clone(), Arc::new(summary));
            self.touch(table::JOBS, index);
        }
    }

    /// Record a periodic launch at `launch` (never moving it backwards).
    fn record_launch(&mut self, index: u64, namespace: &str, id: &str, launch: i64) {
        let key = (namespace.to_string(), id.to_string());
        let row = match self.periodic_launches.get(&key) {
            Some(old) if old.launch >= launch => return,
            Some(old) => PeriodicLaunch {
                launch,
                modify_index: index,
                ..(**old).clone()
            },
            None => PeriodicLaunch {
                id: id.to_string(),
                namespace: namespace.to_string(),
                launch,
                create_index: index,
                modify_index: index,
            },
        };
        self.periodic_launches.insert(key, Arc::new(row));
        self.touch(table::PERIODIC_LAUNCH, index);
    }

    /// Nomad's job status: `running` while any allocation is live,
    /// `pending` while any evaluation is unfinished, else `dead` (system,
    /// periodic and parameterized jobs run until stopped).
    fn refresh_job_status(&mut self, index: u64, key: &NsKey) {
        let Some(job) = self.jobs.get(key).cloned() else {
            return;
        };
        let status = if job.r#type == "system" || job.is_periodic() || job.is_parameterized() {
            if job.stop {
                "dead"
            } else {
                "running"
            }
        } else {
            let allocs = self.allocs_by_job(&key.0, &key.1);
            let evals = self.evals_by_job(&key.0, &key.1);
            if allocs.iter().any(|a| !a.terminal()) {
                "running"
            } else if evals.iter().any(|e| !e.terminal()) {
                "pending"
            } else if !allocs.is_empty() || !evals.is_empty() {
                "dead"
            } else {
                "pending"
            }
        };
        if job.status != status {
            let mut j = (*job).clone();
            j.status = status.to_string();
            j.modify_index = index;
            self.jobs.insert(key.clone(), Arc::new(j));
            self.touch(table::JOBS, index);
        }
    }

    fn apply_command(&mut self, index: u64, raft_index: u64, cmd: Command) -> CommandResponse {
        match cmd {
            Command::JobRegister {
                job,
                eval,
                now,
                enforce_index,
            } => self.job_register(index, *job, eval.map(|e| *e), now, enforce_index),
            Command::JobDeregister {
                namespace,
                job_id,
                purge,
                eval,
                now,
            } => self.job_deregister(index, namespace, job_id, purge, eval.map(|e| *e), now),
            Command::NodeUpsert { nodes } => {
                for mut node in nodes {
                    node.create_index = self
                        .nodes
                        .get(&node.id)
                        .map(|n| n.create_index)
                        .unwrap_or(index);
                    node.modify_index = index;
                    self.nodes.insert(node.id.clone(), Arc::new(node));
                }
                self.touch(table::NODES, index);
                CommandResponse::Ok
            }
            Command::EvalUpsert { evals } => {
                for eval in evals {
                    self.upsert_eval(index, eval);
                }
                CommandResponse::Ok
            }
            Command::NodeRegister { node, evals, now } => {
                let mut node = *node;
                if let Some(old) = self.nodes.get(&node.id) {
                    if !old.secret_id.is_empty() && old.secret_id != node.secret_id {
                        return CommandResponse::Conflict(format!(
                            "node {} is registered with another secret id",
                            node.id
                        ));
                    }
                    // Scheduling eligibility and drain belong to operators.
                    node.scheduling_eligibility = old.scheduling_eligibility.clone();
                    node.drain = old.drain;
                    node.drain_strategy = old.drain_strategy.clone();
                    node.last_drain = old.last_drain.clone();
                    node.create_index = old.create_index;
                } else {
                    node.create_index = index;
                    if node.scheduling_eligibility.is_empty() {
                        node.scheduling_eligibility = "eligible".into();
                    }
                }
                node.status = "ready".into();
                node.status_updated_at = now / 1_000_000_000;
                node.modify_index = index;
                node.computed_class = crate::scheduler::compute_node_class(&node);
                self.nodes.insert(node.id.clone(), Arc::new(node));
                self.touch(table::NODES, index);
                for eval in evals {
                    self.upsert_eval(index, eval);
                }
                CommandResponse::Ok
            }
            Command::NodeStatus {
                node_id,
                status,
                evals,
                now,
            } => self.update_node(index, &node_id, evals, |node| {
                node.status = status;
                node.status_updated_at = now / 1_000_000_000;
                Ok(())
            }),
            Command::NodeSchedulingUpdate {
                node_id,
                drain,
                eligibility,
                evals,
            } => self.update_node(index, &node_id, evals, |node| {
                if let Some(d) = drain {
                    node.drain = d.is_some();
                    if d.is_some() {
                        node.scheduling_eligibility = "ineligible".into();
                    }
                    node.drain_strategy = d;
                }
                if let Some(e) = eligibility {
                    if node.drain && e == "eligible" {
                        return Err("can not set eligibility while a node is draining".into());
                    }
                    node.scheduling_eligibility = e;
                }
                Ok(())
            }),
            Command::AllocMigrate { alloc_ids, evals } => {
                for id in alloc_ids {
                    let Some(old) = self.allocs.get(&id) else {
                        return CommandResponse::NotFound(format!("alloc not found: {id}"));
                    };
                    let mut a = (**old).clone();
                    a.desired_transition.migrate = Some(true);
                    self.upsert_alloc(index, a);
                }
                for eval in evals {
                    self.upsert_eval(index, eval);
                }
                CommandResponse::Ok
            }
            Command::Gc => {
                self.gc(index, None);
                CommandResponse::Ok
            }
            Command::GcBefore { job_before } => {
                self.gc(index, Some(job_before));
                CommandResponse::Ok
            }
            Command::AllocClientUpdate { allocs, evals } => {
                for update in allocs {
                    let Some(old) = self.allocs.get(&update.id) else {
                        continue;
                    };
                    let mut a = (**old).clone();
                    a.client_status = update.client_status;
                    a.client_description = update.client_description;
                    a.task_states = update.task_states;
                    if let Some(mut status) = update.deployment_status {
                        // Canary is the servers' to say (promotion clears it).
                        status.canary = a.deployment_status.as_ref().is_some_and(|s| s.canary);
                        status.modify_index = a
                            .deployment_status
                            .as_ref()
                            .map(|s| s.modify_index)
                            .unwrap_or(0);
                        a.deployment_status = Some(status);
                    }
                    a.modify_time = update.modify_time;
                    let alloc_modify_index = a.alloc_modify_index;
                    self.upsert_alloc(index, a);
                    // A client update is not a server-side change of the
                    // allocation (Nomad's AllocModifyIndex).
                    if let Some(cur) = self.allocs.get(&update.id) {
                        let mut cur = (**cur).clone();
                        cur.alloc_modify_index = alloc_modify_index;
                        self.allocs.insert(cur.id.clone(), Arc::new(cur));
                    }
                }
                for eval in evals {
                    self.upsert_eval(index, eval);
                }
                CommandResponse::Ok
            }
            Command::AllocUpsert { allocs } => {
                for alloc in allocs {
                    self.upsert_alloc(index, alloc);
                }
                CommandResponse::Ok
            }
            Command::PlanResults {
                allocs,
                evals,
                deployments,
            } => {
                // Deployments first, so the allocations placed with a new
                // deployment are counted in it.
                for d in deployments {
                    self.plan_deployment(index, d);
                }
                for alloc in allocs {
                    self.upsert_alloc(index, alloc);
                }
                for eval in evals {
                    self.upsert_eval(index, eval);
                }
                CommandResponse::Ok
            }
            Command::DeploymentStatusUpdate {
                deployment_id,
                status,
                status_description,
                job,
                eval,
                now,
            } => self.deployment_status_update(
                index,
                &deployment_id,
                status,
                status_description,
                job.map(|j| *j),
                eval.map(|e| *e),
                now,
            ),
            Command::DeploymentPromote {
                deployment_id,
                all,
                groups,
                eval,
                now,
            } => {
                self.deployment_promote(index, &deployment_id, all, &groups, eval.map(|e| *e), now)
            }
            Command::DeploymentAllocHealth {
                deployment_id,
                healthy,
                unhealthy,
                fail,
                job,
                eval,
                now,
            } => self.deployment_alloc_health(
                index,
                &deployment_id,
                &healthy,
                &unhealthy,
                fail,
                job.map(|j| *j),
                eval.map(|e| *e),
                now,
            ),
            Command::JobStability {
                namespace,
                job_id,
                version,
                stable,
            } => {
                if self.set_job_stability(index, &namespace, &job_id, version, stable) {
                    CommandResponse::Ok
                } else {
                    CommandResponse::NotFound(format!(
                        "job {job_id} at version {version} not found"
                    ))
                }
            }
            Command::Restore { rows } => match snapshot_file::tables_from_rows(rows) {
                Ok(mut restored) => {
                    let restored_max = restored.max_index(&table::ALL);
                    restored.index = raft_index;
                    restored.index_offset = self
                        .index_offset
                        .max((restored_max + 1).saturating_sub(raft_index));
                    let index = restored.effective(raft_index);
                    for t in table::ALL {
                        restored.touch(t, index);
                    }
                    // Requests are this region's own (a restored snapshot
                    // may come from elsewhere): retries in flight still
                    // must not apply twice.
                    restored.requests = std::mem::take(&mut self.requests);
                    *self = restored;
                    CommandResponse::Ok
                }
                Err(e) => CommandResponse::Conflict(format!("snapshot rows are invalid: {e}")),
            },
            Command::SchedulerSetConfig { config, cas_index } => {
                let old = self
                    .scheduler_config
                    .as_ref()
                    .map(|c| (c.create_index, c.modify_index));
                if let Some(want) = cas_index {
                    let have = old.map(|o| o.1).unwrap_or(0);
                    if have != want {
                        return CommandResponse::Conflict(format!(
                            "scheduler configuration modify index is {have}, not {want}"
                        ));
                    }
                }
                let mut config = *config;
                config.create_index = old.map(|o| o.0).unwrap_or(index);
                config.modify_index = index;
                self.scheduler_config = Some(Arc::new(config));
                self.touch(table::OPERATOR_CONFIG, index);
                CommandResponse::Ok
            }
            Command::NodeDrainComplete { node_id, now } => {
                self.update_node(index, &node_id, Vec::new(), |node| {
                    let Some(strategy) = node.drain_strategy.take() else {
                        return Err(format!("node {} is not draining", node.id));
                    };
                    node.drain = false;
                    node.last_drain = Some(proto::model::DrainMetadata {
                        started_at: strategy.started_at.unwrap_or_default(),
                        updated_at: proto::model::time::format_rfc3339(now),
                        status: "complete".to_string(),
                        ..Default::default()
                    });
                    Ok(())
                })
            }
            Command::AutopilotSetConfig { config, cas_index } => {
                let old = self
                    .autopilot_config
                    .as_ref()
                    .map(|c| (c.create_index, c.modify_index));
                if let Some(want) = cas_index {
                    let have = old.map(|o| o.1).unwrap_or(0);
                    if have != want {
                        return CommandResponse::Conflict(format!(
                            "autopilot configuration modify index is {have}, not {want}"
                        ));
                    }
                }
                let mut config = *config;
                config.create_index = old.map(|o| o.0).unwrap_or(index);
                config.modify_index = index;
                self.autopilot_config = Some(Arc::new(config));
                self.touch(table::OPERATOR_CONFIG, index);
                CommandResponse::Ok
            }
            // `apply` takes batches and requests apart before they get here.
            cmd @ (Command::Batch(_) | Command::Once { .. }) => self.apply(raft_index, cmd),
        }
    }

    pub(crate) fn job_register(
        &mut self,
        index: u64,
        mut job: Job,
        eval: Option<Evaluation>,
        now: i64,
        enforce_index: Option<u64>,
    ) -> CommandResponse {
        let key = (job.namespace.clone(), job.id.clone());
        let existing = self.jobs.get(&key).cloned();
        if let Some(want) = enforce_index {
            let have = existing.as_ref().map(|j| j.job_modify_index).unwrap_or(0);
            if have != want {
                return CommandResponse::Conflict(format!(
                    "Enforcing job modify index {want}: job {} exists with conflicting job modify index: {have}",
                    job.id
                ));
            }
        }
        let (version, job_modify_index) = match &existing {
            Some(old) if !old.spec_changed(&job) => (old.version, old.job_modify_index),
            _ => {
                job.version = existing.as_ref().map(|o| o.version + 1).unwrap_or(0);
                job.create_index = existing.as_ref().map(|o| o.create_index).unwrap_or(index);
                job.modify_index = index;
                job.job_modify_index = index;
                job.submit_time = now;
                job.stable = false;
                job.status = if job.stop {
                    "dead".to_string()
                } else {
                    "pending".to_string()
                };
                let version = job.version;
                self.put_job_version(index, job);
                (version, index)
            }
        };
        self.dirty_jobs.insert(key.clone());
        if let Some(job) = self.jobs.get(&key).cloned() {
            // A newly active periodic job counts from its registration, so
            // its first launch is the first one after it (Nomad's FSM).
            if job.is_periodic_active() && !self.periodic_launches.contains_key(&key) {
                self.record_launch(index, &key.0, &key.1, now);
            }
            // A periodic child records its parent's launch, so a new leader
            // neither repeats nor skips it.
            if !job.parent_id.is_empty() {
                let parent = self.jobs.get(&(key.0.clone(), job.parent_id.clone()));
                if parent.is_some_and(|p| p.is_periodic()) {
                    if let Some(launch) = periodic_launch_of(&job.parent_id, &job.id) {
                        self.record_launch(index, &key.0, &job.parent_id, launch);
                    }
                }
            }
        }
        let (eval_id, eval_create_index) = self.create_eval(index, eval, job_modify_index);
        CommandResponse::Job {
            job_modify_index,
            version,
            eval_id,
            eval_create_index,
        }
    }

    fn put_job_version(&mut self, index: u64, job: Job) {
        let key = (job.namespace.clone(), job.id.clone());
        let job = Arc::new(job);
        self.jobs.insert(key.clone(), job.clone());
        self.job_versions
            .insert((key.0.clone(), key.1.clone(), job.version), job.clone());
        // Keep only the newest tracked versions.
        let versions: Vec<u64> = self
            .job_versions
            .range((key.0.clone(), key.1.clone(), 0)..=(key.0.clone(), key.1.clone(), u64::MAX))
            .map(|((_, _, v), _)| *v)
            .collect();
        if versions.len() > JOB_TRACKED_VERSIONS {
            for v in &versions[..versions.len() - JOB_TRACKED_VERSIONS] {
                self.job_versions
                    .remove(&(key.0.clone(), key.1.clone(), *v));
            }
        }
        let mut summary = self
            .job_summaries
            .get(&key)
            .map(|s| (**s).clone())
            .unwrap_or_else(|| JobSummary {
                job_id: key.1.clone(),
                namespace: key.0.clone(),
                create_index: index,
                ..Default::default()
            });
        for tg in &job.task_groups {
            summary.summary.entry(tg.name.clone()).or_default();
        }
        summary.modify_index = index;
        self.job_summaries.insert(key, Arc::new(summary));
        self.touch(table::JOBS, index);
    }

    pub(crate) fn create_eval(
        &mut self,
        index: u64,
        eval: Option<Evaluation>,
        job_modify_index: u64,
    ) -> (Option<String>, u64) {
        match eval {
            Some(mut eval) => {
                eval.job_modify_index = job_modify_index;
                let id = eval.id.clone();
                self.upsert_eval(index, eval);
                (Some(id), index)
            }
            None => (None, 0),
        }
    }

    fn job_deregister(
        &mut self,
        index: u64,
        namespace: String,
        job_id: String,
        purge: bool,
        eval: Option<Evaluation>,
        now: i64,
    ) -> CommandResponse {
        let key = (namespace, job_id);
        let Some(existing) = self.jobs.get(&key).cloned() else {
            return CommandResponse::NotFound(format!("job not found: {}", key.1));
        };
        if !existing.parent_id.is_empty() {
            self.dirty_parents
                .insert((key.0.clone(), existing.parent_id.clone()));
        }
        let (version, job_modify_index) = if purge {
            self.jobs.remove(&key);
            self.job_summaries.remove(&key);
            if self.periodic_launches.remove(&key).is_some() {
                self.touch(table::PERIODIC_LAUNCH, index);
            }
            let versions: Vec<_> = self
                .job_versions
                .range((key.0.clone(), key.1.clone(), 0)..=(key.0.clone(), key.1.clone(), u64::MAX))
                .map(|(k, _)| k.clone())
                .collect();
            for k in versions {
                self.job_versions.remove(&k);
            }
            self.touch(table::JOBS, index);
            (existing.version, index)
        } else if existing.stop {
            (existing.version, existing.job_modify_index)
        } else {
            let mut job = (*existing).clone();
            job.stop = true;
            job.version = existing.version + 1;
            job.modify_index = index;
            job.job_modify_index = index;
            job.submit_time = now;
            job.stable = false;
            job.status = "dead".to_string();
            self.put_job_version(index, job);
            (existing.version + 1, index)
        };
        let (eval_id, eval_create_index) = self.create_eval(index, eval, job_modify_index);
        CommandResponse::Job {
            job_modify_index,
            version,
            eval_id,
            eval_create_index,
        }
    }

    fn upsert_eval(&mut self, index: u64, mut eval: Evaluation) {
        match self.evals.get(&eval.id) {
            Some(old) => {
                eval.create_index = old.create_index;
                self.evals_by_modify
                    .remove(&(old.modify_index, old.id.clone()));
            }
            None => eval.create_index = index,
        }
        eval.modify_index = index;
        self.evals_by_modify.insert((index, eval.id.clone()), ());
        self.dirty_jobs
            .insert((eval.namespace.clone(), eval.job_id.clone()));
        self.evals_by_job.insert(
            (eval.namespace.clone(), eval.job_id.clone(), eval.id.clone()),
            (),
        );
        self.evals.insert(eval.id.clone(), Arc::new(eval));
        self.touch(table::EVALS, index);
    }

    pub(crate) fn upsert_alloc(&mut self, index: u64, mut alloc: Allocation) {
        let old = self.allocs.get(&alloc.id).cloned();
        if let Some(old) = &old {
            alloc.create_index = old.create_index;
            self.allocs_by_modify
                .remove(&(old.modify_index, old.id.clone()));
            if old.node_id != alloc.node_id {
                self.allocs_by_node
                    .remove(&(old.node_id.clone(), old.id.clone()));
            }
        } else {
            alloc.create_index = index;
        }
        self.count_alloc(index, old.as_deref(), &alloc);
        self.track_deployment_alloc(index, old.as_deref(), &mut alloc);
        self.dirty_jobs
            .insert((alloc.namespace.clone(), alloc.job_id.clone()));
        // Plans travel through Raft without a job copy per allocation; the
        // allocation gets the job version it runs from the state.
        if alloc.job.is_none() {
            alloc.job = self
                .job_versions
                .get(&(
                    alloc.namespace.clone(),
                    alloc.job_id.clone(),
                    alloc.job_version,
                ))
                .or_else(|| {
                    self.jobs
                        .get(&(alloc.namespace.clone(), alloc.job_id.clone()))
                })
                .cloned();
        }
        alloc.modify_index = index;
        alloc.alloc_modify_index = index;
        self.allocs_by_modify.insert((index, alloc.id.clone()), ());
        self.allocs_by_job.insert(
            (
                alloc.namespace.clone(),
                alloc.job_id.clone(),
                alloc.id.clone(),
            ),
            (),
        );
        self.allocs_by_node
            .insert((alloc.node_id.clone(), alloc.id.clone()), ());
        self.allocs.insert(alloc.id.clone(), Arc::new(alloc));
        self.touch(table::ALLOCS, index);
    }

    /// Jobs that are over: stopped with no live allocation, or batch jobs
    /// (periodic and dispatched children included) whose allocations and
    /// evaluations are all terminal; only those last active (submitted, an
    /// allocation or evaluation changed) before `job_before`, when given.
    pub fn dead_jobs(&self, job_before: Option<i64>) -> Vec<NsKey> {
        self.jobs
            .iter()
            .filter(|(k, j)| {
                let allocs = self.allocs_by_job(&k.0, &k.1);
                if allocs.iter().any(|a| !a.terminal()) {
                    return false;
                }
                let evals = self.evals_by_job(&k.0, &k.1);
                // As Nomad's `jobIsGCable`: service and system jobs only once
                // stopped; batch and sysbatch jobs also once they are done.
                let batch = matches!(j.r#type.as_str(), "batch" | "sysbatch");
                let done = j.stop
                    || (batch && j.status == JOB_STATUS_DEAD && evals.iter().all(|e| e.terminal()));
                let last_active = allocs
                    .iter()
                    .map(|a| a.modify_time)
                    .chain(evals.iter().map(|e| e.modify_time))
                    .fold(j.submit_time, i64::max);
                done && job_before.is_none_or(|before| last_active < before)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Remove [`Tables::dead_jobs`] with their versions and summaries, and
    /// the terminal allocations and evaluations of jobs that are gone.
    fn gc(&mut self, index: u64, job_before: Option<i64>) {
        let dead_jobs = self.dead_jobs(job_before);
        for k in &dead_jobs {
            if let Some(parent) = self.jobs.get(k).map(|j| j.parent_id.clone()) {
                if !parent.is_empty() {
                    self.dirty_parents.insert((k.0.clone(), parent));
                }
            }
            self.jobs.remove(k);
            self.job_summaries.remove(k);
            if self.periodic_launches.remove(k).is_some() {
                self.touch(table::PERIODIC_LAUNCH, index);
            }
            let versions: Vec<_> = self
                .job_versions
                .range((k.0.clone(), k.1.clone(), 0)..=(k.0.clone(), k.1.clone(), u64::MAX))
                .map(|(v, _)| v.clone())
                .collect();
            for v in versions {
                self.job_versions.remove(&v);
            }
        }
        let gone_allocs: Vec<Arc<Allocation>> = self
            .allocs
            .values()
            .filter(|a| {
                a.terminal()
                    && !self
                        .jobs
                        .contains_key(&(a.namespace.clone(), a.job_id.clone()))
            })
            .cloned()
            .collect();
        for a in &gone_allocs {
            self.allocs.remove(&a.id);
            self.allocs_by_job
                .remove(&(a.namespace.clone(), a.job_id.clone(), a.id.clone()));
            self.allocs_by_node
                .remove(&(a.node_id.clone(), a.id.clone()));
            self.allocs_by_modify
                .remove(&(a.modify_index, a.id.clone()));
        }
        let gone_evals: Vec<Arc<Evaluation>> = self
            .evals
            .values()
            .filter(|e| {
                matches!(e.status.as_str(), "complete" | "failed" | "canceled")
                    && !self
                        .jobs
                        .contains_key(&(e.namespace.clone(), e.job_id.clone()))
            })
            .cloned()
            .collect();
        for e in &gone_evals {
            self.evals.remove(&e.id);
            self.evals_by_job
                .remove(&(e.namespace.clone(), e.job_id.clone(), e.id.clone()));
            self.evals_by_modify.remove(&(e.modify_index, e.id.clone()));
        }
        if !dead_jobs.is_empty() {
            self.touch(table::JOBS, index);
        }
        if !gone_allocs.is_empty() {
            self.touch(table::ALLOCS, index);
        }
        if !gone_evals.is_empty() {
            self.touch(table::EVALS, index);
        }
    }

    /// Change an existing node with `change` (an `Err` is a conflict and
    /// changes nothing) and create `evals` with it.
    fn update_node(
        &mut self,
        index: u64,
        node_id: &str,
        evals: Vec<Evaluation>,
        change: impl FnOnce(&mut Node) -> Result<(), String>,
    ) -> CommandResponse {
        let Some(old) = self.nodes.get(node_id) else {
            return CommandResponse::NotFound(format!("node not found: {node_id}"));
        };
        let mut node = (**old).clone();
        if let Err(m) = change(&mut node) {
            return CommandResponse::Conflict(m);
        }
        node.modify_index = index;
        self.nodes.insert(node_id.to_string(), Arc::new(node));
        self.touch(table::NODES, index);
        for eval in evals {
            self.upsert_eval(index, eval);
        }
        CommandResponse::Ok
    }

    /// Keep the job summary's per-group counts in step with an allocation's
    /// client status.
    fn count_alloc(&mut self, index: u64, old: Option<&Allocation>, new: &Allocation) {
        let key = (new.namespace.clone(), new.job_id.clone());
        let Some(summary) = self.job_summaries.get(&key) else {
            return;
        };
        let mut summary = (**summary).clone();
        let bucket = |s: &mut proto::model::TaskGroupSummary, status: &str, delta: i64| {
            let field = match status {
                "pending" => &mut s.starting,
                "running" => &mut s.running,
                "complete" => &mut s.complete,
                "failed" => &mut s.failed,
                "lost" => &mut s.lost,
                "unknown" => &mut s.unknown,
                _ => return,
            };
            *field = (*field + delta).max(0);
        };
        if let Some(old) = old {
            if let Some(g) = summary.summary.get_mut(&old.task_group) {
                bucket(g, &old.client_status, -1);
            }
        }
        bucket(
            summary.summary.entry(new.task_group.clone()).or_default(),
            &new.client_status,
            1,
        );
        summary.modify_index = index;
        self.job_summaries.insert(key, Arc::new(summary));
    }

    /// Evaluations created or changed after `index`, oldest change first.
    pub fn evals_changed_after(&self, index: u64) -> impl Iterator<Item = &Arc<Evaluation>> + '_ {
        self.evals_by_modify
            .range((index + 1, String::new())..)
            .filter_map(|((_, id), _)| self.evals.get(id))
    }

    /// Allocations created or changed after `index`.
    pub fn allocs_changed_after(&self, index: u64) -> impl Iterator<Item = &Arc<Allocation>> + '_ {
        self.allocs_by_modify
            .range((index + 1, String::new())..)
            .filter_map(|((_, id), _)| self.allocs.get(id))
    }

    /// The allocation with its job (the version it runs) attached, as
    /// Nomad's API and clients expect it.
    pub fn alloc_with_job(&self, alloc: &Allocation) -> Allocation {
        let mut a = alloc.clone();
        let job = self
            .job_versions
            .get(&(a.namespace.clone(), a.job_id.clone(), a.job_version))
            .or_else(|| self.jobs.get(&(a.namespace.clone(), a.job_id.clone())));
        a.job = job.cloned();
        a
    }

    /// A job by namespace and id.
    pub fn job(&self, namespace: &str, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .get(&(namespace.to_string(), id.to_string()))
            .cloned()
    }

    /// Tracked versions of a job, newest first.
    pub fn job_versions(&self, namespace: &str, id: &str) -> Vec<Arc<Job>> {
        let (ns, id) = (namespace.to_string(), id.to_string());
        let mut v: Vec<_> = self
            .job_versions
            .range((ns.clone(), id.clone(), 0)..=(ns, id, u64::MAX))
            .map(|(_, j)| j.clone())
            .collect();
        v.reverse();
        v
    }

    /// Evaluations of a job.
    pub fn evals_by_job(&self, namespace: &str, job_id: &str) -> Vec<Arc<Evaluation>> {
        let (ns, job) = (namespace.to_string(), job_id.to_string());
        self.evals_by_job
            .range((ns.clone(), job.clone(), String::new())..)
            .take_while(|((n, j, _), _)| *n == ns && *j == job)
            .filter_map(|((_, _, id), _)| self.evals.get(id).cloned())
            .collect()
    }

    /// Allocations of a job.
    pub fn allocs_by_job(&self, namespace: &str, job_id: &str) -> Vec<Arc<Allocation>> {
        let (ns, job) = (namespace.to_string(), job_id.to_string());
        self.allocs_by_job
            .range((ns.clone(), job.clone(), String::new())..)
            .take_while(|((n, j, _), _)| *n == ns && *j == job)
            .filter_map(|((_, _, id), _)| self.allocs.get(id).cloned())
            .collect()
    }

    /// Allocations placed on a node.
    pub fn allocs_by_node(&self, node_id: &str) -> Vec<Arc<Allocation>> {
        let node = node_id.to_string();
        self.allocs_by_node
            .range((node.clone(), String::new())..)
            .take_while(|((n, _), _)| *n == node)
            .filter_map(|((_, id), _)| self.allocs.get(id).cloned())
            .collect()
    }

    /// Allocations created by an evaluation.
    pub fn allocs_by_eval(&self, eval_id: &str) -> Vec<Arc<Allocation>> {
        match self.evals.get(eval_id) {
            None => Vec::new(),
            Some(eval) => self
                .allocs_by_job(&eval.namespace, &eval.job_id)
                .into_iter()
                .filter(|a| a.eval_id == eval_id)
                .collect(),
        }
    }
}

/// The live state: the latest snapshot plus a way to wait for newer ones.
#[derive(Clone)]
pub struct StateStore {
    tx: Arc<watch::Sender<Arc<Tables>>>,
}

impl Default for StateStore {
    fn default() -> Self {
        Self::new(Tables::default())
    }
}

impl StateStore {
    /// A store that starts from `tables`.
    pub fn new(tables: Tables) -> Self {
        let (tx, _) = watch::channel(Arc::new(tables));
        Self { tx: Arc::new(tx) }
    }

    /// The latest consistent snapshot.
    pub fn snapshot(&self) -> Arc<Tables> {
        self.tx.borrow().clone()
    }

    /// Publish a new version of the tables.
    pub fn publish(&self, tables: Tables) {
        self.tx.send_replace(Arc::new(tables));
    }

    /// Wait until the last applied index reaches `index`, at most `timeout`.
    /// Returns whether it did.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|t| t.index >= index).await.is_ok()
        })
        .await;
        matches!(reached, Ok(true))
    }

    /// A blocking query: wait until any of `tables` changed after `min_index`
    /// (or the state was replaced by a restore), at most `wait`. Returns the
    /// snapshot to answer from.
    pub async fn wait_for_change(
        &self,
        tables: &[&str],
        min_index: u64,
        wait: Duration,
    ) -> Arc<Tables> {
        let mut rx = self.tx.subscribe();
        let changed = tokio::time::timeout(wait, async {
            rx.wait_for(|t| t.max_index(tables) > min_index)
                .await
                .map(|t| t.clone())
        })
        .await;
        match changed {
            Ok(Ok(t)) => t,
            _ => self.snapshot(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
