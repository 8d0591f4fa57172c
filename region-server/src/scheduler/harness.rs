//! A test harness for the scheduler (Nomad's `scheduler.Harness`): build a
//! state with nodes, jobs and allocations, run evaluations, apply their plans
//! through [`evaluate_plan`](super::evaluate_plan) as the leader would, and
//! inspect the results. Public so benchmarks can use it too.

use std::sync::Arc;

use proto::model::{
    Allocation, Deployment, DriverInfo, Evaluation, Job, Node, NodeCpuResources, NodeDiskResources,
    NodeMemoryResources, NodeResources, Resources, Task, TaskGroup, ALLOC_CLIENT_RUNNING,
    EVAL_STATUS_PENDING, EVAL_TRIGGER_JOB_REGISTER, JOB_TYPE_BATCH, JOB_TYPE_SYSBATCH,
    JOB_TYPE_SYSTEM, NODE_SCHEDULING_ELIGIBLE, NODE_STATUS_READY, SECOND,
};

use super::{
    evaluate_plan, process, Plan, PlanResult, SchedulerConfig, SchedulerContext, SchedulerError,
    SchedulerResult,
};
use crate::state::{Command, Tables};

/// Builders of typical nodes, jobs and allocations.
pub mod mock {
    use super::*;

    /// A deterministic node ID for index `i`.
    pub fn node_id(i: usize) -> String {
        format!("00000000-0000-4000-8000-{i:012}")
    }

    /// A ready, eligible Linux node in `dc1` with 4000 MHz (4 cores), 8 GiB
    /// of memory, 100 GiB of disk and the `mock_driver` and `raw_exec`
    /// drivers.
    pub fn node(i: usize) -> Node {
        let healthy = DriverInfo {
            detected: true,
            healthy: true,
            ..DriverInfo::default()
        };
        Node {
            id: node_id(i),
            name: format!("node-{i}"),
            datacenter: "dc1".to_string(),
            node_pool: "default".to_string(),
            status: NODE_STATUS_READY.to_string(),
            scheduling_eligibility: NODE_SCHEDULING_ELIGIBLE.to_string(),
            attributes: [
                ("kernel.name", "linux"),
                ("cpu.arch", "amd64"),
                ("nomad.version", "1.7.2"),
                ("os.version", "22.04"),
                ("unique.hostname", "host"),
                ("unique.network.ip-address", "10.0.0.1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            drivers: [
                ("mock_driver".to_string(), healthy.clone()),
                ("raw_exec".to_string(), healthy),
            ]
            .into_iter()
            .collect(),
            node_resources: NodeResources {
                cpu: NodeCpuResources {
                    cpu_shares: 4000,
                    total_cpu_cores: 4,
                    reservable_cpu_cores: Vec::new(),
                },
                memory: NodeMemoryResources { memory_mb: 8192 },
                disk: NodeDiskResources {
                    disk_mb: 100 * 1024,
                },
                ..NodeResources::default()
            },
            ..Node::default()
        }
    }

    /// A canonicalized service job `id` with one group `web` of `count`
    /// allocations, each one `mock_driver` task asking 500 MHz and 256 MB.
    pub fn job(id: &str, count: i64) -> Job {
        let mut job = Job {
            id: id.to_string(),
            datacenters: vec!["dc1".to_string()],
            task_groups: vec![TaskGroup {
                name: "web".to_string(),
                count,
                tasks: vec![Task {
                    name: "web".to_string(),
                    driver: "mock_driver".to_string(),
                    config: [("run_for".to_string(), serde_json::json!("10s"))]
                        .into_iter()
                        .collect(),
                    resources: Resources {
                        cpu: 500,
                        memory_mb: 256,
                        ..Resources::default()
                    },
                    ..Task::default()
                }],
                ..TaskGroup::default()
            }],
            ..Job::default()
        };
        job.canonicalize();
        job
    }

    /// Like [`job`] but of type `batch`.
    pub fn batch_job(id: &str, count: i64) -> Job {
        let mut job = job(id, count);
        retype(&mut job, JOB_TYPE_BATCH);
        job
    }

    /// A system job with one group `agent` (100 MHz, 128 MB).
    pub fn system_job(id: &str) -> Job {
        let mut job = job(id, 1);
        job.task_groups[0].name = "agent".to_string();
        job.task_groups[0].tasks[0].resources.cpu = 100;
        job.task_groups[0].tasks[0].resources.memory_mb = 128;
        retype(&mut job, JOB_TYPE_SYSTEM);
        job
    }

    /// A sysbatch job with one group `agent`.
    pub fn sysbatch_job(id: &str) -> Job {
        let mut job = system_job(id);
        retype(&mut job, JOB_TYPE_SYSBATCH);
        job
    }

    /// Re-canonicalizes `job` as type `job_type` (dropping type-specific
    /// defaults of the old type).
    pub fn retype(job: &mut Job, job_type: &str) {
        job.r#type = job_type.to_string();
        job.update = None;
        for group in &mut job.task_groups {
            group.update = None;
            group.migrate = None;
            group.reschedule_policy = None;
            group.restart_policy = None;
            for task in &mut group.tasks {
                task.restart_policy = None;
            }
        }
        job.canonicalize();
    }
}

/// A scheduler test bench around an in-memory state.
pub struct Harness {
    /// The state.
    pub state: Tables,
    /// Scheduler settings used by [`Harness::process`].
    pub config: SchedulerConfig,
    /// The time given to the scheduler (Unix nanoseconds).
    pub now: i64,
    /// The seed of the next evaluation (incremented after each).
    pub seed: u64,
    /// Every result, in order.
    pub results: Vec<SchedulerResult>,
    /// Every plan's evaluation by the applier, in order.
    pub plan_results: Vec<PlanResult>,
    evals_created: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// An empty state at 2023-11-14T22:13:20Z.
    pub fn new() -> Self {
        Self {
            state: Tables::default(),
            config: SchedulerConfig::default(),
            now: 1_700_000_000 * SECOND,
            seed: 42,
            results: Vec::new(),
            plan_results: Vec::new(),
            evals_created: 0,
        }
    }

    fn apply(&mut self, command: Command) {
        self.apply_command(command);
    }

    /// Applies any command at the next index (e.g. a deployment's promotion
    /// or pause), returning its response.
    pub fn apply_command(&mut self, command: Command) -> crate::state::CommandResponse {
        let index = self.state.index + 1;
        self.state.apply(index, command)
    }

    /// Plays the client: sets the deployment health of allocations.
    pub fn set_health(&mut self, ids: &[String], healthy: bool) {
        let now = self.now;
        self.update_allocs(ids, |alloc| {
            alloc.client_status = ALLOC_CLIENT_RUNNING.to_string();
            let status = alloc.deployment_status.get_or_insert_with(Default::default);
            status.healthy = Some(healthy);
            status.timestamp = Some(super::format_rfc3339_nanos(now));
        });
    }

    /// Creates or replaces nodes.
    pub fn upsert_nodes(&mut self, nodes: Vec<Node>) {
        self.apply(Command::NodeUpsert { nodes });
    }

    /// Creates or replaces one node.
    pub fn upsert_node(&mut self, node: Node) {
        self.upsert_nodes(vec![node]);
    }

    /// Changes a stored node.
    pub fn update_node(&mut self, id: &str, change: impl FnOnce(&mut Node)) {
        let mut node = (**self.state.nodes.get(id).expect("node exists")).clone();
        change(&mut node);
        self.upsert_node(node);
    }

    /// Registers a job (canonicalized by the caller) and returns it as
    /// stored, with version and indexes.
    pub fn upsert_job(&mut self, job: Job) -> Arc<Job> {
        let (ns, id) = (job.namespace.clone(), job.id.clone());
        self.apply(Command::JobRegister {
            job: Box::new(job),
            eval: None,
            now: self.now,
            enforce_index: None,
        });
        self.state.job(&ns, &id).expect("job registered")
    }

    /// Stops a job (`Stop = true`, a new version).
    pub fn stop_job(&mut self, namespace: &str, id: &str) {
        self.apply(Command::JobDeregister {
            namespace: namespace.to_string(),
            job_id: id.to_string(),
            purge: false,
            eval: None,
            now: self.now,
        });
    }

    /// Creates or replaces allocations.
    pub fn upsert_allocs(&mut self, allocs: Vec<Allocation>) {
        self.apply(Command::AllocUpsert { allocs });
    }

    /// Changes stored allocations (e.g. to play the client).
    pub fn update_allocs(&mut self, ids: &[String], change: impl Fn(&mut Allocation)) {
        let allocs = ids
            .iter()
            .map(|id| {
                let mut alloc = (**self.state.allocs.get(id).expect("alloc exists")).clone();
                change(&mut alloc);
                alloc
            })
            .collect();
        self.upsert_allocs(allocs);
    }

    /// Changes one stored allocation.
    pub fn update_alloc(&mut self, id: &str, change: impl Fn(&mut Allocation)) {
        self.update_allocs(&[id.to_string()], change);
    }

    /// Creates a deployment (an existing one only takes the status, as
    /// from a plan).
    pub fn upsert_deployment(&mut self, deployment: Deployment) {
        self.apply(Command::PlanResults {
            allocs: Vec::new(),
            evals: Vec::new(),
            deployments: vec![deployment],
        });
    }

    /// A pending evaluation of `job` with a fresh id.
    pub fn eval_for(&mut self, job: &Job, triggered_by: &str) -> Evaluation {
        self.evals_created += 1;
        Evaluation {
            id: format!("eval-{:06}", self.evals_created),
            namespace: job.namespace.clone(),
            priority: job.priority,
            r#type: job.r#type.clone(),
            triggered_by: triggered_by.to_string(),
            job_id: job.id.clone(),
            job_modify_index: job.job_modify_index,
            status: EVAL_STATUS_PENDING.to_string(),
            create_time: self.now,
            modify_time: self.now,
            ..Evaluation::default()
        }
    }

    /// The stored version of job `id` in the default namespace.
    pub fn job(&self, id: &str) -> Arc<Job> {
        self.state.job("default", id).expect("job exists")
    }

    /// Runs a register evaluation of the stored job `id` and applies it.
    pub fn register_eval(&mut self, id: &str) -> SchedulerResult {
        let job = self.job(id);
        let eval = self.eval_for(&job, EVAL_TRIGGER_JOB_REGISTER);
        self.process(&eval)
    }

    /// Runs the scheduler without applying anything.
    pub fn schedule(&mut self, eval: &Evaluation) -> Result<SchedulerResult, SchedulerError> {
        let ctx = SchedulerContext {
            state: &self.state,
            now: self.now,
            config: &self.config,
            rng_seed: self.seed,
        };
        let result = process(&ctx, eval);
        self.seed = self.seed.wrapping_add(1);
        result
    }

    /// Runs the scheduler, applies its plan (through `evaluate_plan`) and
    /// stores the evaluations it produced, in one `PlanResults` command as
    /// the leader's plan applier does. Panics if the scheduler errors.
    pub fn process(&mut self, eval: &Evaluation) -> SchedulerResult {
        let result = self.schedule(eval).expect("scheduler succeeds");
        let mut evals = vec![result.eval_update.clone()];
        evals.extend(result.blocked_eval.clone());
        evals.extend(result.followup_evals.iter().cloned());
        self.commit_plan(&result.plan, evals);
        self.results.push(result.clone());
        result
    }

    /// Checks a plan against the current state and commits what fits.
    pub fn apply_plan(&mut self, plan: &Plan) -> PlanResult {
        self.commit_plan(plan, Vec::new())
    }

    fn commit_plan(&mut self, plan: &Plan, evals: Vec<Evaluation>) -> PlanResult {
        let result = evaluate_plan(&self.state, plan);
        let allocs: Vec<Allocation> = result
            .node_update
            .values()
            .chain(result.node_allocation.values())
            .flatten()
            .cloned()
            .collect();
        let mut deployments: Vec<Deployment> = result.deployment.iter().cloned().collect();
        for update in &result.deployment_updates {
            let current = deployments
                .iter()
                .rev()
                .find(|d| d.id == update.deployment_id)
                .cloned()
                .or_else(|| {
                    self.state
                        .deployments
                        .get(&update.deployment_id)
                        .map(|d| (**d).clone())
                });
            if let Some(mut deployment) = current {
                deployment.status.clone_from(&update.status);
                deployment
                    .status_description
                    .clone_from(&update.status_description);
                deployments.push(deployment);
            }
        }
        self.apply(Command::PlanResults {
            allocs,
            evals,
            deployments,
        });
        self.plan_results.push(result.clone());
        result
    }

    /// Every allocation of job `id` (default namespace).
    pub fn allocs(&self, id: &str) -> Vec<Arc<Allocation>> {
        self.state.allocs_by_job("default", id)
    }

    /// The allocations of job `id` that should run (not terminal).
    pub fn live_allocs(&self, id: &str) -> Vec<Arc<Allocation>> {
        self.allocs(id)
            .into_iter()
            .filter(|a| !a.terminal())
            .collect()
    }

    /// Plays the client: marks every pending allocation of job `id` running
    /// (and healthy for its deployment when `healthy`).
    pub fn run_allocs(&mut self, id: &str, healthy: bool) {
        let ids: Vec<String> = self
            .live_allocs(id)
            .iter()
            .filter(|a| a.client_status != ALLOC_CLIENT_RUNNING || healthy)
            .map(|a| a.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        self.update_allocs(&ids, |alloc| {
            alloc.client_status = ALLOC_CLIENT_RUNNING.to_string();
            if healthy && !alloc.deployment_id.is_empty() {
                let status = alloc.deployment_status.get_or_insert_with(Default::default);
                status.healthy = Some(true);
            }
        });
    }

    /// Advances the harness clock.
    pub fn advance(&mut self, nanos: i64) {
        self.now += nanos;
    }
}
