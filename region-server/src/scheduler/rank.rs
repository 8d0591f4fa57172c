//! Ranking: among feasible nodes with room, score each (bin-packing or
//! spread fitness, job anti-affinity, reschedule penalty, affinities,
//! spreads), look at a limited number of candidates from a shuffled order
//! and pick the best.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proto::model::{
    AllocatedResources, Job, Node, TaskGroup, CONSTRAINT_DISTINCT_HOSTS,
    CONSTRAINT_DISTINCT_PROPERTY,
};

use super::constraint::{check_operand, resolve_target};
use super::context::{EvalState, STREAM_SHUFFLE};
use super::feasible::{constraint_string, CandidateNodes, Feasibility, FILTER_DISTINCT_HOSTS};
use super::metrics::AllocMetric;
use super::resources::{allocate, group_ask, score_fit_binpack, score_fit_spread};
use super::rng::SeededRng;
use super::{SchedulerAlgorithm, SchedulerConfig};

/// Scorer names, as they appear in `ScoreMetaData`.
pub const SCORER_BINPACK: &str = "binpack";
/// Job anti-affinity scorer.
pub const SCORER_ANTI_AFFINITY: &str = "job-anti-affinity";
/// Reschedule penalty scorer.
pub const SCORER_RESCHEDULE_PENALTY: &str = "node-reschedule-penalty";
/// Affinity scorer.
pub const SCORER_AFFINITY: &str = "node-affinity";
/// Spread scorer.
pub const SCORER_SPREAD: &str = "allocation-spread";

/// The highest bin-packing fitness, used to normalize it to `[0, 1]`.
const BINPACK_MAX_FIT: f64 = 18.0;
/// Options scoring at most this are set aside (up to `max_skip`) in favour
/// of better ones.
const SKIP_SCORE_THRESHOLD: f64 = 0.0;

/// Extra inputs of one selection.
#[derive(Debug, Default, Clone)]
pub struct SelectOptions {
    /// Nodes to penalize (where the replaced allocation failed).
    pub penalty_nodes: BTreeSet<String>,
    /// A node to try first (sticky ephemeral disk).
    pub preferred_node: Option<String>,
}

/// A chosen node with the resources assigned there.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The node.
    pub node: Arc<Node>,
    /// Resources assigned to the new allocation.
    pub resources: AllocatedResources,
    /// Final score.
    pub score: f64,
}

/// Candidate nodes of one job in a seeded random order, scanned round-robin
/// across placements so consecutive placements look at different nodes.
pub struct Stack {
    nodes: Vec<Arc<Node>>,
    offset: usize,
    limit: usize,
    max_skip: usize,
    algorithm: SchedulerAlgorithm,
    in_pool: u64,
    by_dc: BTreeMap<String, u64>,
}

impl Stack {
    /// A stack over the job's ready candidate nodes, shuffled with `seed`.
    /// The candidate limit is `config.candidate_limit` when set, else 2 for
    /// batch jobs (power of two choices) and `max(2, ceil(log2(n)))` for
    /// others.
    pub fn new(
        candidates: &CandidateNodes,
        seed: u64,
        batch: bool,
        config: &SchedulerConfig,
    ) -> Self {
        let mut nodes = candidates.ready.clone();
        SeededRng::new(seed, STREAM_SHUFFLE).shuffle(&mut nodes);
        let n = nodes.len();
        let limit = match config.candidate_limit {
            Some(limit) => limit.max(1),
            None if batch => 2,
            None => {
                let log = if n > 1 {
                    (n as f64).log2().ceil() as usize
                } else {
                    0
                };
                log.max(2)
            }
        };
        Self {
            nodes,
            offset: 0,
            limit,
            max_skip: config.max_skip,
            algorithm: config.algorithm,
            in_pool: candidates.in_pool,
            by_dc: candidates.by_datacenter.clone(),
        }
    }

    /// A fresh metric for one selection.
    pub fn new_metric(&self) -> AllocMetric {
        AllocMetric::new(self.in_pool, self.by_dc.clone())
    }

    /// Picks the best node for one allocation of `group`.
    pub fn select(
        &mut self,
        es: &mut EvalState,
        feas: &mut Feasibility,
        job: &Job,
        group: &TaskGroup,
        options: &SelectOptions,
    ) -> (Option<Selected>, AllocMetric) {
        let mut metric = self.new_metric();
        if let Some(preferred) = &options.preferred_node {
            if let Some(node) = self.nodes.iter().find(|n| &n.id == preferred).cloned() {
                let mut sticky_metric = self.new_metric();
                if let Some(selected) = rank_node(
                    es,
                    feas,
                    job,
                    group,
                    &node,
                    options,
                    self.algorithm,
                    &mut sticky_metric,
                ) {
                    sticky_metric.norm_score(&node.id, selected.score);
                    return (Some(selected), sticky_metric);
                }
            }
        }
        let unlimited = has_affinities_or_spreads(job, group);
        let limit = if unlimited { usize::MAX } else { self.limit };
        let n = self.nodes.len();
        let mut seen = 0usize;
        let mut skipped: Vec<Selected> = Vec::new();
        let mut best: Option<Selected> = None;
        let mut scanned = 0;
        while scanned < n && seen < limit {
            let node = self.nodes[self.offset].clone();
            self.offset = (self.offset + 1) % n;
            scanned += 1;
            let Some(option) = rank_node(
                es,
                feas,
                job,
                group,
                &node,
                options,
                self.algorithm,
                &mut metric,
            ) else {
                continue;
            };
            metric.norm_score(&node.id, option.score);
            if option.score <= SKIP_SCORE_THRESHOLD && skipped.len() < self.max_skip {
                skipped.push(option);
                continue;
            }
            seen += 1;
            if best.as_ref().is_none_or(|b| option.score > b.score) {
                best = Some(option);
            }
        }
        for option in skipped {
            if seen >= limit {
                break;
            }
            seen += 1;
            if best.as_ref().is_none_or(|b| option.score > b.score) {
                best = Some(option);
            }
        }
        (best, metric)
    }

    /// Checks one specific node (system jobs): feasibility, fit and score.
    pub fn select_node(
        &self,
        es: &mut EvalState,
        feas: &mut Feasibility,
        job: &Job,
        group: &TaskGroup,
        node: &Arc<Node>,
    ) -> (Option<Selected>, AllocMetric) {
        let mut metric = self.new_metric();
        let selected = rank_node(
            es,
            feas,
            job,
            group,
            node,
            &SelectOptions::default(),
            self.algorithm,
            &mut metric,
        );
        if let Some(selected) = &selected {
            metric.norm_score(&node.id, selected.score);
        }
        (selected, metric)
    }
}

fn has_affinities_or_spreads(job: &Job, group: &TaskGroup) -> bool {
    !job.affinities.is_empty()
        || !job.spreads.is_empty()
        || !group.affinities.is_empty()
        || !group.spreads.is_empty()
        || group.tasks.iter().any(|t| !t.affinities.is_empty())
}

/// Whether a `distinct_hosts` constraint is switched on (`RTarget` empty or
/// true).
fn distinct_hosts_enabled(r_target: &str) -> bool {
    let value = r_target.trim();
    value.is_empty() || value.eq_ignore_ascii_case("true") || value == "1"
}

/// Feasibility, distinct-hosts/property, fit and score of one node; `None`
/// when it is filtered or exhausted (recorded in `metric`).
#[allow(clippy::too_many_arguments)]
fn rank_node(
    es: &mut EvalState,
    feas: &mut Feasibility,
    job: &Job,
    group: &TaskGroup,
    node: &Arc<Node>,
    options: &SelectOptions,
    algorithm: SchedulerAlgorithm,
    metric: &mut AllocMetric,
) -> Option<Selected> {
    metric.evaluate_node();
    if let Err(reason) = feas.check(node, group) {
        metric.filter_node(&node.node_class, &reason);
        return None;
    }

    // distinct_hosts and distinct_property, at job and group level.
    let group_constraints = group
        .constraints
        .iter()
        .chain(group.tasks.iter().flat_map(|t| t.constraints.iter()));
    let scoped = job
        .constraints
        .iter()
        .map(|c| (c, None))
        .chain(group_constraints.map(|c| (c, Some(group.name.as_str()))));
    for (constraint, scope) in scoped {
        match constraint.operand.as_str() {
            CONSTRAINT_DISTINCT_HOSTS
                if distinct_hosts_enabled(&constraint.r_target)
                    && es.job_allocs_on_node(&node.id, scope) > 0 =>
            {
                metric.filter_node(&node.node_class, FILTER_DISTINCT_HOSTS);
                return None;
            }
            CONSTRAINT_DISTINCT_PROPERTY => {
                let limit: u64 = constraint.r_target.trim().parse().unwrap_or(1).max(1);
                let Some(value) = resolve_target(&constraint.l_target, node) else {
                    metric.filter_node(&node.node_class, &constraint_string(constraint));
                    return None;
                };
                let used = es
                    .property_counts(&constraint.l_target, scope)
                    .get(value)
                    .copied()
                    .unwrap_or(0);
                if used >= limit {
                    metric.filter_node(&node.node_class, &constraint_string(constraint));
                    return None;
                }
            }
            _ => {}
        }
    }

    // Resources.
    let usage = es.usage(&node.id).clone();
    let resources = match allocate(group, node, &usage, &mut es.ports) {
        Ok(resources) => resources,
        Err(dimension) => {
            metric.exhausted_node(&node.node_class, dimension);
            return None;
        }
    };

    // Scores.
    let mut scores: Vec<f64> = Vec::with_capacity(5);
    let used = usage.res.plus(group_ask(group, Some(node)));
    let fitness = match algorithm {
        SchedulerAlgorithm::Binpack => score_fit_binpack(node, &used),
        SchedulerAlgorithm::Spread => score_fit_spread(node, &used),
    };
    let binpack = fitness / BINPACK_MAX_FIT;
    scores.push(binpack);
    metric.score_node(&node.id, SCORER_BINPACK, binpack);

    let collisions = es.job_allocs_on_node(&node.id, Some(&group.name));
    if collisions > 0 {
        let desired = group.count.max(1) as f64;
        let penalty = -((collisions + 1) as f64) / desired;
        scores.push(penalty);
        metric.score_node(&node.id, SCORER_ANTI_AFFINITY, penalty);
    } else {
        metric.score_node(&node.id, SCORER_ANTI_AFFINITY, 0.0);
    }

    if options.penalty_nodes.contains(&node.id) {
        scores.push(-1.0);
        metric.score_node(&node.id, SCORER_RESCHEDULE_PENALTY, -1.0);
    }

    let affinity = affinity_score(feas, job, group, node);
    if affinity != 0.0 {
        scores.push(affinity);
        metric.score_node(&node.id, SCORER_AFFINITY, affinity);
    }

    let spread = spread_score(es, job, group, node);
    if spread != 0.0 {
        scores.push(spread);
        metric.score_node(&node.id, SCORER_SPREAD, spread);
    }

    let score = scores.iter().sum::<f64>() / scores.len() as f64;
    Some(Selected {
        node: node.clone(),
        resources,
        score,
    })
}

/// Sum of the weights of matching affinities (job, group and task level)
/// over the sum of all their absolute weights, in `[-1, 1]`.
pub fn affinity_score(feas: &mut Feasibility, job: &Job, group: &TaskGroup, node: &Node) -> f64 {
    let affinities: Vec<_> = job
        .affinities
        .iter()
        .chain(group.affinities.iter())
        .chain(group.tasks.iter().flat_map(|t| t.affinities.iter()))
        .collect();
    if affinities.is_empty() {
        return 0.0;
    }
    let sum_weight: f64 = affinities.iter().map(|a| f64::from(a.weight).abs()).sum();
    if sum_weight == 0.0 {
        return 0.0;
    }
    let mut total = 0.0;
    for affinity in affinities {
        let lval = resolve_target(&affinity.l_target, node);
        let rval = resolve_target(&affinity.r_target, node);
        if check_operand(feas.operands(), &affinity.operand, lval, rval) {
            total += f64::from(affinity.weight);
        }
    }
    total / sum_weight
}

/// The implicit target of a spread's remaining percentage.
const IMPLICIT_TARGET: &str = "*";

/// Nomad's spread score of placing one more allocation of `group` on
/// `node`: with targets, `(desired - used) / desired` weighted by the
/// spread's share of the total weight; without targets, the even-spread
/// boost; -1 when the node lacks the attribute or its value has no target.
pub fn spread_score(es: &mut EvalState, job: &Job, group: &TaskGroup, node: &Node) -> f64 {
    let spreads: Vec<_> = group.spreads.iter().chain(job.spreads.iter()).collect();
    if spreads.is_empty() {
        return 0.0;
    }
    let sum_weights: f64 = spreads.iter().map(|s| f64::from(s.weight)).sum();
    let total = group.count as f64;
    let mut score = 0.0;
    for spread in spreads {
        let Some(value) = resolve_target(&spread.attribute, node) else {
            score -= 1.0;
            continue;
        };
        let counts = es.property_counts(&spread.attribute, Some(&group.name));
        if spread.spread_target.is_empty() {
            score += even_spread_boost(counts, value);
            continue;
        }
        let used = counts.get(value).copied().unwrap_or(0) as f64 + 1.0;
        let mut desired: BTreeMap<&str, f64> = BTreeMap::new();
        let mut sum_desired = 0.0;
        for target in &spread.spread_target {
            let count = f64::from(target.percent) / 100.0 * total;
            desired.insert(&target.value, count);
            sum_desired += count;
        }
        if sum_desired > 0.0 && sum_desired < total {
            desired.insert(IMPLICIT_TARGET, total - sum_desired);
        }
        let Some(want) = desired
            .get(value)
            .or_else(|| desired.get(IMPLICIT_TARGET))
            .copied()
        else {
            score -= 1.0;
            continue;
        };
        if want <= 0.0 {
            score -= 1.0;
            continue;
        }
        let weight = if sum_weights > 0.0 {
            f64::from(spread.weight) / sum_weights
        } else {
            0.0
        };
        score += (want - used) / want * weight;
    }
    score
}

/// Boost for spreading evenly over the values seen so far: positive for a
/// value with fewer allocations than the others, -1 when the distribution is
/// already even, 0 when nothing is placed yet.
fn even_spread_boost(counts: &BTreeMap<String, u64>, value: &str) -> f64 {
    if counts.is_empty() {
        return 0.0;
    }
    let current = counts.get(value).copied().unwrap_or(0);
    let min = counts.values().copied().min().unwrap_or(0);
    let max = counts.values().copied().max().unwrap_or(0);
    if current != min {
        return if min == 0 {
            -1.0
        } else {
            (min as f64 - current as f64) / min as f64
        };
    }
    if min == max {
        return -1.0;
    }
    if min == 0 {
        return 1.0;
    }
    (max - min) as f64 / min as f64
}
