//! The service and batch scheduler: reconcile, then place.

use std::collections::BTreeMap;
use std::sync::Arc;

use proto::model::{Allocation, Evaluation, Job, Node, TaskGroup};

use super::common::{latest_deployment, new_alloc, stopped_copy, Failures, Outcome};
use super::context::EvalState;
use super::feasible::{
    in_datacenters, in_node_pool, node_draining, node_lost, CandidateNodes, Feasibility,
};
use super::names::name_index;
use super::plan::Plan;
use super::rank::{SelectOptions, Stack};
use super::reconcile::{
    is_outdated, PlaceRequest, Reconciler, UpdateDecision, ALLOC_RESCHEDULED, ALLOC_UPDATING,
};
use super::reschedule::{next_tracker, policy_of};
use super::update::tasks_updated;
use super::{PlanAnnotations, SchedulerContext, SchedulerResult};
use crate::state::Tables;

/// Processes a service (`batch == false`) or batch evaluation.
pub fn process(ctx: &SchedulerContext, eval: &Evaluation, batch: bool) -> SchedulerResult {
    let state = ctx.state;
    let job = state.job(&eval.namespace, &eval.job_id);
    let plan = Plan {
        eval_id: eval.id.clone(),
        priority: eval.priority,
        job: job.as_deref().cloned(),
        all_at_once: job.as_ref().is_some_and(|j| j.all_at_once),
        snapshot_index: state.index,
        ..Plan::default()
    };
    let mut es = EvalState::new(state, ctx.rng_seed, plan, &eval.namespace, &eval.job_id);
    let allocs = state.allocs_by_job(&eval.namespace, &eval.job_id);

    let mut tainted: BTreeMap<String, Option<Arc<Node>>> = BTreeMap::new();
    for alloc in &allocs {
        match state.nodes.get(&alloc.node_id) {
            None => {
                tainted.insert(alloc.node_id.clone(), None);
            }
            Some(node) if node_lost(node) || node_draining(node) => {
                tainted.insert(alloc.node_id.clone(), Some(node.clone()));
            }
            Some(_) => {}
        }
    }

    let mut feas = job
        .as_ref()
        .map(|job| Feasibility::new(job, ctx.config.feasibility_cache));
    let now = ctx.now;
    let recon = {
        let feas_ref = &mut feas;
        Reconciler {
            job: job.as_deref(),
            job_id: &eval.job_id,
            batch,
            allocs,
            tainted,
            migrate_on_drain: ctx.config.migrate_on_drain,
            eval,
            now,
            deployment: latest_deployment(state, &eval.namespace, &eval.job_id),
            update_fn: |alloc: &Allocation, job: &Job, group: &TaskGroup| match feas_ref.as_mut() {
                Some(feas) => update_decision(state, feas, eval, now, alloc, job, group),
                None => UpdateDecision::Ignore,
            },
            ids: &mut es.ids,
        }
        .compute()
    };

    es.plan.deployment = recon.deployment.clone();
    es.plan.deployment_updates = recon.deployment_updates.clone();
    let deployment_id = recon.deployment_id.clone();

    for stop in &recon.stop {
        es.stop(stopped_copy(
            &stop.alloc,
            stop.description,
            stop.client_status,
            now,
        ));
    }
    for alloc in recon.attribute_updates {
        es.place(alloc);
    }
    for mut alloc in recon.inplace {
        alloc.eval_id = eval.id.clone();
        alloc.modify_time = now;
        // Joining another deployment: its health there is yet to be seen.
        if let Some(id) = deployment_id
            .as_ref()
            .filter(|id| **id != alloc.deployment_id)
        {
            alloc.deployment_id = id.clone();
            alloc.deployment_status = None;
        }
        es.place(alloc);
    }

    let mut failures = Failures::default();
    let mut queued: BTreeMap<String, i64> = BTreeMap::new();
    if let Some(job) = job.as_deref().filter(|j| !j.stop && !j.is_template()) {
        for group in &job.task_groups {
            queued.insert(group.name.clone(), 0);
        }
        let mut requests: Vec<PlaceRequest> = recon.destructive;
        let group_order = |name: &str| job.task_groups.iter().position(|g| g.name == name);
        let mut fresh = recon.place;
        fresh.sort_by_key(|r| (group_order(&r.group), name_index(&r.name)));
        requests.sort_by_key(|r| (group_order(&r.group), name_index(&r.name)));
        requests.extend(fresh);

        if !requests.is_empty() {
            let candidates = CandidateNodes::collect(state, job);
            let mut stack = Stack::new(&candidates, ctx.rng_seed, batch, ctx.config);
            let feas = feas.as_mut().expect("a job has a feasibility checker");
            for request in requests {
                let Some(group) = job.task_group(&request.group) else {
                    continue;
                };
                place_one(
                    &mut es,
                    &mut stack,
                    feas,
                    eval,
                    job,
                    group,
                    request,
                    deployment_id.as_deref(),
                    now,
                    &mut failures,
                    &mut queued,
                );
            }
        }
    }

    let plan = std::mem::take(&mut es.plan);
    Outcome {
        eval,
        now,
        snapshot_index: state.index,
        failures,
        queued,
        feasibility: feas.as_ref(),
        followup_evals: recon.followup_evals,
        next_eval: None,
        deployment_id,
        annotations: PlanAnnotations {
            desired_tg_updates: recon.desired,
            preempted_allocs: Vec::new(),
        },
    }
    .finish(&mut es, plan)
}

/// Places one allocation, recording a failure if no node fits.
#[allow(clippy::too_many_arguments)]
fn place_one(
    es: &mut EvalState,
    stack: &mut Stack,
    feas: &mut Feasibility,
    eval: &Evaluation,
    job: &Job,
    group: &TaskGroup,
    request: PlaceRequest,
    deployment_id: Option<&str>,
    now: i64,
    failures: &mut Failures,
    queued: &mut BTreeMap<String, i64>,
) {
    let previous = request.previous.clone();
    // A replaced allocation frees its resources before the new one is
    // placed, and is kept if the placement fails.
    if let (true, Some(prev)) = (request.destructive, &previous) {
        es.stop(stopped_copy(prev, ALLOC_UPDATING, None, now));
    }
    let mut options = SelectOptions::default();
    if let Some(prev) = &previous {
        if request.reschedule {
            options.penalty_nodes.insert(prev.node_id.clone());
            if let Some(tracker) = &prev.reschedule_tracker {
                options
                    .penalty_nodes
                    .extend(tracker.events.iter().map(|e| e.prev_node_id.clone()));
            }
        }
        if group.ephemeral_disk.sticky {
            options.preferred_node = Some(prev.node_id.clone());
        }
    }
    let (selected, metric) = stack.select(es, feas, job, group, &options);
    let Some(selected) = selected else {
        if let (true, Some(prev)) = (request.destructive, &previous) {
            es.unstop(&prev.node_id, &prev.id);
        }
        failures.record(&group.name, metric);
        *queued.entry(group.name.clone()).or_default() += 1;
        return;
    };
    let mut alloc = new_alloc(
        es,
        eval,
        job,
        group,
        request.name.clone(),
        selected,
        &metric,
        deployment_id,
        now,
    );
    if request.canary && deployment_id.is_some() {
        alloc.deployment_status = Some(proto::model::AllocDeploymentStatus {
            canary: true,
            ..Default::default()
        });
    }
    if let Some(prev) = &previous {
        alloc.previous_allocation = prev.id.clone();
        if request.reschedule {
            let policy = policy_of(prev, group.reschedule_policy.as_ref());
            alloc.reschedule_tracker = Some(next_tracker(prev, policy, now));
            es.stop(stopped_copy(prev, ALLOC_RESCHEDULED, None, now));
        }
        // The replaced allocation points at its replacement; one stopped
        // by an earlier plan is updated (its stop is already committed, so
        // this frees nothing twice).
        if let Some(stopped) = es
            .plan
            .node_update
            .get_mut(&prev.node_id)
            .and_then(|list| list.iter_mut().find(|a| a.id == prev.id))
        {
            stopped.next_allocation = alloc.id.clone();
        } else if prev.terminal() {
            let mut linked = (**prev).clone();
            linked.next_allocation = alloc.id.clone();
            es.stop(linked);
        }
    }
    es.place(alloc);
}

/// Whether an allocation of an older job version is updated in place,
/// replaced, or left alone.
fn update_decision(
    state: &Tables,
    feas: &mut Feasibility,
    eval: &Evaluation,
    now: i64,
    alloc: &Allocation,
    job: &Job,
    group: &TaskGroup,
) -> UpdateDecision {
    if !is_outdated(alloc, job) {
        return UpdateDecision::Ignore;
    }
    let Some(old_job) = alloc.job.as_deref() else {
        return UpdateDecision::Destructive;
    };
    if tasks_updated(job, old_job, &group.name) {
        return UpdateDecision::Destructive;
    }
    if alloc.terminal() {
        return UpdateDecision::Ignore;
    }
    let Some(node) = state.nodes.get(&alloc.node_id) else {
        return UpdateDecision::Destructive;
    };
    if !in_datacenters(job, node) || !in_node_pool(job, node) || feas.check(node, group).is_err() {
        return UpdateDecision::Destructive;
    }
    let mut updated = alloc.clone();
    updated.job = Some(std::sync::Arc::new(job.clone()));
    updated.job_version = job.version;
    updated.eval_id = eval.id.clone();
    updated.modify_time = now;
    UpdateDecision::InPlace(Box::new(updated))
}
