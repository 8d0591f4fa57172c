//! What only the leader runs: the evaluation broker fed from the state,
//! scheduler workers, the plan applier, and the deployment watcher. Started
//! when this server gains leadership (after its first linearizable read, so
//! it sees every committed evaluation), stopped when it loses it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::model::{Allocation, Deployment, Evaluation};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::LeaderMetrics;
use crate::scheduler::{self, Plan, SchedulerConfig, SchedulerContext};
use crate::service::Service;
use crate::state::{table, Command, Tables};

pub mod broker;
pub mod deployments;
pub mod drainer;
pub mod gc;
pub mod heartbeat;
pub mod periodic;

use broker::{BrokerConfig, SharedBroker};
use heartbeat::{HeartbeatConfig, Heartbeats};

/// Scheduler types the workers take.
pub const SCHEDULER_TYPES: [&str; 4] = ["service", "batch", "system", "sysbatch"];

/// Leader settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Scheduler workers (the leader keeps the rest of its CPU for Raft
    /// and the plan applier).
    pub workers: usize,
    /// Broker settings.
    pub broker: BrokerConfig,
    /// Re-plans after a partially rejected plan before the evaluation is
    /// nacked.
    pub max_plan_attempts: usize,
    /// Scheduler settings.
    pub scheduler: SchedulerConfig,
    /// Client heartbeat TTLs.
    pub heartbeat: HeartbeatConfig,
    /// Garbage collection of dead jobs.
    pub gc: gc::GcConfig,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            broker: BrokerConfig::default(),
            max_plan_attempts: 5,
            scheduler: SchedulerConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            gc: gc::GcConfig::default(),
        }
    }
}

/// The current time in Unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Watches leadership and runs the leader's duties while this server leads.
pub async fn run(
    service: Service,
    cfg: LeaderConfig,
    handle: LeaderHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let broker = handle.broker.clone();
    let mut metrics = service.raft.metrics();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Some(term) = service.leading_term() {
            let (stop_tx, stop_rx) = watch::channel(false);
            let mut duties = tokio::spawn(lead(
                service.in_term(term),
                cfg.clone(),
                handle.clone(),
                stop_rx,
            ));
            // Until this term's leadership is over (also when this server
            // leads again in a later term: those are new duties) or shutdown.
            loop {
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { break },
                    _ = shutdown.changed() => break,
                }
                if service.leading_term() != Some(term) || *shutdown.borrow() {
                    break;
                }
            }
            let _ = stop_tx.send(true);
            // Duties stop at once, except a write in flight, which waits
            // for the entry to commit or be truncated; don't wait forever
            // for that (aborting the duties aborts every task of theirs).
            if tokio::time::timeout(DUTIES_STOP_WAIT, &mut duties)
                .await
                .is_err()
            {
                tracing::warn!("leader duties did not stop in time: aborted");
                duties.abort();
                let _ = duties.await;
            }
            broker.with(|b| *b = broker::Broker::new(cfg.broker.clone()));
            handle.heartbeats.clear();
            tracing::info!("leader duties stopped");
        } else {
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// How long stopping duties may wait for a write in flight.
const DUTIES_STOP_WAIT: Duration = Duration::from_secs(2);

/// One term of leadership.
async fn lead(
    service: Service,
    mut cfg: LeaderConfig,
    handle: LeaderHandle,
    stop: watch::Receiver<bool>,
) {
    let broker = handle.broker.clone();
    // See every entry committed by earlier leaders before trusting the state;
    // keep trying while this server leads.
    while let Err(e) = service.read_barrier().await {
        if stopped(&stop) {
            return;
        }
        tracing::warn!(error = %e, "leader: read barrier failed; retrying before starting duties");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!(workers = cfg.workers, "leader duties starting");
    // The drainer marks allocations of draining nodes for migration at
    // their groups' pace; the scheduler must not move them all by itself.
    cfg.scheduler.migrate_on_drain = false;
    let (plan_tx, plan_rx) = mpsc::channel::<PlanSubmission>(256);
    // A JoinSet: when these duties are aborted, every task is.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(feed_broker(service.clone(), broker.clone(), stop.clone()));
    tasks.spawn(plan_applier(
        service.clone(),
        plan_rx,
        handle.metrics.clone(),
        stop.clone(),
    ));
    tasks.spawn(broker_housekeeping(
        service.clone(),
        broker.clone(),
        handle.metrics.clone(),
        stop.clone(),
    ));
    tasks.spawn(deployments::watch_deployments(
        service.clone(),
        stop.clone(),
    ));
    tasks.spawn(periodic::run(service.clone(), stop.clone()));
    tasks.spawn(drainer::run(service.clone(), stop.clone()));
    tasks.spawn(gc::run(service.clone(), cfg.gc.clone(), stop.clone()));
    tasks.spawn(heartbeat_timers(
        service.clone(),
        handle.heartbeats.clone(),
        cfg.heartbeat.clone(),
        handle.metrics.clone(),
        stop.clone(),
    ));
    for _ in 0..cfg.workers.max(1) {
        tasks.spawn(worker(
            service.clone(),
            cfg.clone(),
            broker.clone(),
            plan_tx.clone(),
            handle.metrics.clone(),
            stop.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    // Plans still queued died with the applier.
    handle.metrics.plan_queue_depth.set(0);
}

/// Wait until one of `tables` changes or `sleep` (at least 5 ms, so a
/// deadline due in under a millisecond still gets a real sleep) passes;
/// `false` once the leader's duties stop. The tail of the passes of the
/// drainer and the periodic dispatcher.
pub(crate) async fn wait_for_change_or_stop(
    service: &Service,
    tables: &[&str],
    sleep: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let seen = service.store.snapshot().max_index(tables);
    let sleep = sleep.max(Duration::from_millis(5));
    tokio::select! {
        _ = service.store.wait_for_change(tables, seen, sleep) => {}
        _ = stop.changed() => return false,
    }
    !*stop.borrow()
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Enqueue every pending or blocked evaluation as it is committed, and
/// release blocked ones when capacity changes (nodes or allocations
/// changed).
async fn feed_broker(service: Service, broker: SharedBroker, mut stop: watch::Receiver<bool>) {
    let mut seen = 0u64;
    let mut nodes_seen = 0u64;
    let mut allocs_seen = 0u64;
    loop {
        let t = service.store.snapshot();
        let now = now_ns();
        // An operator paused the broker: evaluations queue but are not
        // handed out (set before enqueueing what this snapshot adds).
        let paused = t
            .scheduler_config
            .as_ref()
            .is_some_and(|c| c.pause_eval_broker);
        broker.with(|b| b.set_paused(paused));
        let fresh: Vec<Evaluation> = t
            .evals_changed_after(seen)
            .filter(|e| e.status == "pending" || e.status == "blocked")
            .map(|e| (**e).clone())
            .collect();
        if !fresh.is_empty() {
            broker.with(|b| {
                for e in fresh {
                    b.enqueue(e, now);
                }
            });
        }
        seen = t.table_index(table::EVALS);
        // Computed classes of nodes whose capacity may have grown: nodes
        // that changed, nodes where allocations ended.
        let mut classes = std::collections::BTreeSet::new();
        if nodes_seen != 0 && t.table_index(table::NODES) > nodes_seen {
            classes.extend(
                t.nodes
                    .values()
                    .filter(|n| n.modify_index > nodes_seen)
                    .map(|n| n.computed_class.clone()),
            );
        }
        if allocs_seen != 0 && t.table_index(table::ALLOCS) > allocs_seen {
            classes.extend(
                freed_nodes(&t, allocs_seen)
                    .filter_map(|node_id| t.nodes.get(&node_id))
                    .map(|n| n.computed_class.clone()),
            );
        }
        nodes_seen = t.table_index(table::NODES).max(1);
        allocs_seen = t.table_index(table::ALLOCS).max(1);
        if !classes.is_empty() {
            broker.with(|b| b.unblock_classes(&classes));
        }
        tokio::select! {
            _ = service.store.wait_for_change(&[table::EVALS, table::NODES, table::ALLOCS, table::OPERATOR_CONFIG], t.index, Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        if stopped(&stop) {
            return;
        }
    }
}

/// Nodes where an allocation changed after `since` is terminal (so it
/// freed capacity there).
fn freed_nodes(t: &Tables, since: u64) -> impl Iterator<Item = String> + '_ {
    t.allocs_changed_after(since)
        .filter(|a| {
            a.desired_status != "run"
                || matches!(a.client_status.as_str(), "complete" | "failed" | "lost")
        })
        .map(|a| a.node_id.clone())
}

/// Delayed evaluations, nack timeouts, and writing back canceled and failed
/// evaluations.
async fn broker_housekeeping(
    service: Service,
    broker: SharedBroker,
    metrics: LeaderMetrics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (canceled, failed) = broker.with(|b| {
            b.tick(now_ns());
            (b.take_cancelable(), b.take_failed())
        });
        let mut updates = Vec::new();
        for mut e in canceled {
            e.status = "canceled".into();
            e.status_description = "superseded by a newer evaluation of the job".into();
            e.modify_time = now_ns();
            updates.push(e);
        }
        for mut e in failed {
            e.status = "failed".into();
            e.status_description = "evaluation reached its delivery limit".into();
            e.modify_time = now_ns();
            updates.push(e);
        }
        let failed = updates.iter().filter(|e| e.status == "failed").count();
        if !updates.is_empty() {
            match service.write(Command::EvalUpsert { evals: updates }).await {
                Ok(_) => metrics.evaluations_failed.inc_by(failed as u64),
                Err(e) => tracing::warn!(error = %e, "writing canceled/failed evaluations"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
        if stopped(&stop) {
            return;
        }
    }
}

/// A plan and what to commit with it, sent to the plan applier.
struct PlanSubmission {
    plan: Plan,
    evals: Vec<Evaluation>,
    reply: oneshot::Sender<Result<PlanOutcome, String>>,
}

/// What the applier committed of a plan.
struct PlanOutcome {
    /// Raft index of the commit.
    index: u64,
    /// Whether any node's part of the plan was rejected.
    partial: bool,
}

async fn worker(
    service: Service,
    cfg: LeaderConfig,
    broker: SharedBroker,
    plans: mpsc::Sender<PlanSubmission>,
    metrics: LeaderMetrics,
    stop: watch::Receiver<bool>,
) {
    while !stopped(&stop) {
        let Some((eval, token)) = broker
            .dequeue(&SCHEDULER_TYPES, now_ns, Duration::from_millis(500))
            .await
        else {
            continue;
        };
        let outcome = schedule(&service, &cfg, &plans, &metrics, &eval).await;
        let result = if outcome.is_ok() { "ack" } else { "nack" };
        metrics.evaluations.with_label_values(&[result]).inc();
        broker.with(|b| {
            let r = match &outcome {
                Ok(()) => b.ack(&eval.id, &token),
                Err(_) => b.nack(&eval.id, &token),
            };
            if let Err(e) = r {
                tracing::debug!(eval = %eval.id, error = %e, "ack/nack");
            }
        });
        if let Err(e) = outcome {
            tracing::warn!(eval = %eval.id, error = %e, "evaluation nacked");
        }
    }
}

/// Run the scheduler on an evaluation and commit its plan, refreshing and
/// re-planning when the applier rejected part of it.
async fn schedule(
    service: &Service,
    cfg: &LeaderConfig,
    plans: &mpsc::Sender<PlanSubmission>,
    metrics: &LeaderMetrics,
    eval: &Evaluation,
) -> Result<(), String> {
    // The scheduler must see at least the state the evaluation was made in.
    if !service
        .store
        .wait_applied(eval.modify_index, Duration::from_secs(5))
        .await
    {
        return Err(format!("state did not reach index {}", eval.modify_index));
    }
    for attempt in 0..cfg.max_plan_attempts.max(1) {
        let state = service.store.snapshot();
        let ctx = SchedulerContext {
            state: &state,
            now: now_ns(),
            config: &cfg.scheduler,
            rng_seed: seed(&eval.id, attempt),
        };
        let result =
            cpu_heavy(|| scheduler::process(&ctx, eval)).map_err(|e| format!("scheduler: {e}"))?;
        let mut evals = vec![result.eval_update];
        evals.extend(result.blocked_eval);
        evals.extend(result.followup_evals);
        let (tx, rx) = oneshot::channel();
        metrics.plan_queue_depth.inc();
        plans
            .send(PlanSubmission {
                plan: result.plan,
                evals,
                reply: tx,
            })
            .await
            .map_err(|_| {
                metrics.plan_queue_depth.dec();
                "plan applier stopped".to_string()
            })?;
        let outcome = rx.await.map_err(|_| "plan applier stopped".to_string())??;
        if !outcome.partial {
            return Ok(());
        }
        // Refresh: wait for the committed part, then plan the rest again.
        service
            .store
            .wait_applied(outcome.index, Duration::from_secs(5))
            .await;
    }
    Err(format!(
        "plan still partially rejected after {} attempts",
        cfg.max_plan_attempts
    ))
}

/// Runs CPU-bound work (scheduling, plan checks, state apply) so that it
/// does not hold up the other tasks of this runtime worker: on a
/// multi-threaded runtime the worker hands its queue to another thread
/// first (`block_in_place`), so Raft heartbeats and votes keep being
/// answered while a large evaluation is scheduled or applied; on a
/// current-thread runtime (tests) it just runs.
pub(crate) fn cpu_heavy<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn seed(id: &str, attempt: usize) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) ^ attempt as u64
}

/// The one plan applier: re-checks each plan node by node against the
/// latest state plus the plans accepted before it in the same batch, and
/// commits every queued plan's accepted part in one Raft entry.
async fn plan_applier(
    service: Service,
    mut rx: mpsc::Receiver<PlanSubmission>,
    metrics: LeaderMetrics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            s = rx.recv() => match s { Some(s) => s, None => return },
            _ = stop.changed() => return,
        };
        let mut allocs_in_batch = plan_allocs(&first.plan);
        let mut batch = vec![first];
        while !batch_is_full(batch.len(), allocs_in_batch) {
            match rx.try_recv() {
                Ok(s) => {
                    allocs_in_batch += plan_allocs(&s.plan);
                    batch.push(s);
                }
                Err(_) => break,
            }
        }
        metrics.plan_queue_depth.sub(batch.len() as i64);
        let _timer = metrics.plan_apply_duration.start_timer();
        let mut overlay: Tables = (*service.store.snapshot()).clone();
        let mut allocs: Vec<Allocation> = Vec::new();
        let mut evals: Vec<Evaluation> = Vec::new();
        let mut deployments: Vec<Deployment> = Vec::new();
        let mut partial = Vec::with_capacity(batch.len());
        let mut placed = 0usize;
        cpu_heavy(|| {
            for sub in &batch {
                let result = scheduler::evaluate_plan(&overlay, &sub.plan);
                // The state keeps allocations without an embedded job copy, so
                // the Raft entry need not carry one per allocation either.
                let accepted: Vec<Allocation> = result
                    .node_update
                    .values()
                    .chain(result.node_allocation.values())
                    .flatten()
                    .map(|a| Allocation {
                        job: None,
                        ..a.clone()
                    })
                    .collect();
                placed += result
                    .node_allocation
                    .values()
                    .flatten()
                    .filter(|a| !overlay.allocs.contains_key(&a.id))
                    .count();
                // Later plans in this batch are checked against this one's effect.
                let scratch_index = overlay.index;
                overlay.apply(
                    scratch_index,
                    Command::AllocUpsert {
                        allocs: accepted.clone(),
                    },
                );
                allocs.extend(accepted);
                let rejected = !result.rejected_nodes.is_empty();
                // A partially rejected plan is planned again; its evaluation is
                // written with the final attempt only.
                if !rejected {
                    evals.extend(sub.evals.iter().cloned());
                }
                deployments.extend(result.deployment.clone());
                for u in &result.deployment_updates {
                    let current = deployments
                        .iter()
                        .rev()
                        .find(|d| d.id == u.deployment_id)
                        .cloned()
                        .or_else(|| {
                            overlay
                                .deployments
                                .get(&u.deployment_id)
                                .map(|d| (**d).clone())
                        });
                    if let Some(mut d) = current {
                        d.status = u.status.clone();
                        d.status_description = u.status_description.clone();
                        deployments.push(d);
                    }
                }
                partial.push(rejected);
            }
        });
        let cmd = Command::PlanResults {
            allocs,
            evals,
            deployments,
        };
        if cmd_is_empty(&cmd) {
            for sub in batch {
                let _ = sub.reply.send(Ok(PlanOutcome {
                    index: service.store.snapshot().index,
                    partial: false,
                }));
            }
            continue;
        }
        let committed = service.write(cmd).await.map(|(_, index)| index);
        if committed.is_ok() {
            metrics.placements.inc_by(placed as u64);
        }
        for (sub, partial) in batch.into_iter().zip(partial) {
            let r = match &committed {
                Ok(index) => Ok(PlanOutcome {
                    index: *index,
                    partial,
                }),
                Err(e) => Err(format!("committing plan: {e}")),
            };
            let _ = sub.reply.send(r);
        }
    }
}

/// Plans the applier commits together in one Raft entry, at most.
const MAX_PLANS_PER_ENTRY: usize = 64;
/// Allocations (placed or updated) the applier puts in one Raft entry
/// before it stops adding plans: every server decodes and applies an entry
/// at once, and a follower must receive it within one heartbeat interval,
/// so entries stay a few MiB (a plan larger than this still goes alone).
const MAX_ALLOCS_PER_ENTRY: usize = 2048;

/// Whether a batch of `plans` plans holding `allocs` allocations is full.
fn batch_is_full(plans: usize, allocs: usize) -> bool {
    plans >= MAX_PLANS_PER_ENTRY || allocs >= MAX_ALLOCS_PER_ENTRY
}

/// Allocations a plan places or updates.
fn plan_allocs(plan: &Plan) -> usize {
    plan.node_update
        .values()
        .chain(plan.node_allocation.values())
        .map(Vec::len)
        .sum()
}

fn cmd_is_empty(cmd: &Command) -> bool {
    matches!(cmd, Command::PlanResults { allocs, evals, deployments } if allocs.is_empty() && evals.is_empty() && deployments.is_empty())
}

/// The leader's shared handles, for APIs that need them.
#[derive(Clone)]
pub struct LeaderHandle {
    /// The broker (empty while this server follows).
    pub broker: SharedBroker,
    /// Node heartbeat timers (empty while this server follows).
    pub heartbeats: Heartbeats,
    /// Counters of the leader's work.
    pub metrics: LeaderMetrics,
}

impl LeaderHandle {
    /// A handle with an empty broker and no timers.
    pub fn new(cfg: &LeaderConfig) -> Self {
        Self {
            broker: SharedBroker::new(cfg.broker.clone()),
            heartbeats: Heartbeats::default(),
            metrics: LeaderMetrics::default(),
        }
    }

    /// Count the leader's work into `metrics` (registered ones).
    pub fn with_metrics(mut self, metrics: LeaderMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

/// Mark nodes whose heartbeats stopped `down` (with evaluations so their
/// allocations are replaced). A new leader first gives every ready node a
/// fresh TTL; nodes registered through another server are picked up too.
async fn heartbeat_timers(
    service: Service,
    heartbeats: Heartbeats,
    cfg: HeartbeatConfig,
    metrics: LeaderMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let ready = |t: &Tables| -> Vec<String> {
        t.nodes
            .values()
            .filter(|n| n.status == "ready" || n.status == "initializing")
            .map(|n| n.id.clone())
            .collect()
    };
    heartbeats.reset_all(&cfg, ready(&service.store.snapshot()));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        if stopped(&stop) {
            return;
        }
        let t = service.store.snapshot();
        // Ready nodes without a timer (registered through a follower).
        let untracked: Vec<String> = ready(&t)
            .into_iter()
            .filter(|n| !heartbeats.tracks(n))
            .collect();
        for n in untracked {
            heartbeats.reset(&cfg, &n, 1.0);
        }
        for node_id in heartbeats.take_expired() {
            let t = service.store.snapshot();
            match t.nodes.get(&node_id) {
                Some(n) if n.status != "down" => {}
                _ => continue,
            }
            let evals = crate::client_rpc::evals_for_node(&t, &node_id, "node-update");
            tracing::warn!(node = %node_id, "node missed its heartbeats: marking it down");
            if let Err(e) = service
                .write(Command::NodeStatus {
                    node_id: node_id.clone(),
                    status: "down".into(),
                    evals,
                    now: now_ns(),
                })
                .await
            {
                tracing::warn!(node = %node_id, error = %e, "marking node down");
                heartbeats.reset(&cfg, &node_id, 0.0);
            } else {
                metrics.heartbeats_expired.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applier_batches_are_bounded_by_plans_and_allocations() {
        assert!(!batch_is_full(1, 0));
        assert!(!batch_is_full(63, MAX_ALLOCS_PER_ENTRY - 1));
        assert!(batch_is_full(MAX_PLANS_PER_ENTRY, 0));
        // Two plans of 1,000 placements share an entry; a third waits.
        assert!(!batch_is_full(2, 2000));
        assert!(batch_is_full(3, 3000));
        // One oversized plan fills a batch by itself.
        assert!(batch_is_full(1, 10_000));
    }

    #[test]
    fn plan_allocations_count_updates_and_placements() {
        let mut plan = Plan::default();
        let a = || Allocation::default();
        plan.node_allocation.insert("n1".into(), vec![a(), a()]);
        plan.node_allocation.insert("n2".into(), vec![a()]);
        plan.node_update.insert("n1".into(), vec![a()]);
        assert_eq!(plan_allocs(&plan), 4);
    }
}
