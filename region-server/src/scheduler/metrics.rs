//! Placement metrics in the JSON shape of Nomad's `AllocMetric`, reported per
//! placement in `Allocation.Metrics` and per failed group in an evaluation's
//! `FailedTGAllocs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many of the best scored nodes `ScoreMetaData` keeps.
const TOP_SCORES: usize = 5;

/// Scores of one node, as `ScoreMetaData` lists them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeScoreMeta {
    /// The node.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Each scorer's score (`binpack`, `job-anti-affinity`, `node-affinity`,
    /// `allocation-spread`, `node-reschedule-penalty`).
    pub scores: BTreeMap<String, f64>,
    /// The final, normalized score.
    pub norm_score: f64,
}

/// What the scheduler saw while placing one allocation (Nomad's
/// `AllocMetric`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocMetric {
    /// Nodes looked at.
    pub nodes_evaluated: u64,
    /// Nodes rejected by a feasibility check.
    pub nodes_filtered: u64,
    /// Nodes of the job's node pool.
    pub nodes_in_pool: u64,
    /// Ready nodes per datacenter of the job.
    pub nodes_available: BTreeMap<String, u64>,
    /// Filtered nodes per node class.
    pub class_filtered: BTreeMap<String, u64>,
    /// Filtered nodes per reason (constraint text, `missing drivers`, ...).
    pub constraint_filtered: BTreeMap<String, u64>,
    /// Feasible nodes without room.
    pub nodes_exhausted: u64,
    /// Exhausted nodes per node class.
    pub class_exhausted: BTreeMap<String, u64>,
    /// Exhausted nodes per dimension (`cpu`, `memory`, `disk`, ...).
    pub dimension_exhausted: BTreeMap<String, u64>,
    /// Quotas that were reached (always empty: no quotas).
    pub quota_exhausted: Vec<String>,
    /// Deprecated flat scores, `<node id>.<scorer>` (left empty, as Nomad
    /// does since 0.9).
    pub scores: BTreeMap<String, f64>,
    /// The best scored nodes, best first.
    pub score_meta_data: Vec<NodeScoreMeta>,
    /// Time spent placing, in nanoseconds (0: the scheduler reads no clock).
    pub allocation_time: i64,
    /// Further placements of the same group that failed the same way.
    pub coalesced_failures: u64,
    #[serde(skip)]
    pending: BTreeMap<String, BTreeMap<String, f64>>,
}

impl AllocMetric {
    /// A metric for a scan over `nodes_in_pool` nodes.
    pub fn new(nodes_in_pool: u64, nodes_available: BTreeMap<String, u64>) -> Self {
        Self {
            nodes_in_pool,
            nodes_available,
            ..Self::default()
        }
    }

    /// A node was looked at.
    pub fn evaluate_node(&mut self) {
        self.nodes_evaluated += 1;
    }

    /// A node was rejected by a feasibility check for `reason`.
    pub fn filter_node(&mut self, node_class: &str, reason: &str) {
        self.nodes_filtered += 1;
        if !node_class.is_empty() {
            *self
                .class_filtered
                .entry(node_class.to_string())
                .or_default() += 1;
        }
        if !reason.is_empty() {
            *self
                .constraint_filtered
                .entry(reason.to_string())
                .or_default() += 1;
        }
    }

    /// A feasible node had no room in `dimension`.
    pub fn exhausted_node(&mut self, node_class: &str, dimension: &str) {
        self.nodes_exhausted += 1;
        if !node_class.is_empty() {
            *self
                .class_exhausted
                .entry(node_class.to_string())
                .or_default() += 1;
        }
        if !dimension.is_empty() {
            *self
                .dimension_exhausted
                .entry(dimension.to_string())
                .or_default() += 1;
        }
    }

    /// Records one scorer's score of a node.
    pub fn score_node(&mut self, node_id: &str, scorer: &str, score: f64) {
        self.pending
            .entry(node_id.to_string())
            .or_default()
            .insert(scorer.to_string(), score);
    }

    /// Records a node's final score, keeping the best few.
    pub fn norm_score(&mut self, node_id: &str, score: f64) {
        let scores = self.pending.remove(node_id).unwrap_or_default();
        let entry = NodeScoreMeta {
            node_id: node_id.to_string(),
            scores,
            norm_score: score,
        };
        let pos = self
            .score_meta_data
            .iter()
            .position(|other| other.norm_score < score)
            .unwrap_or(self.score_meta_data.len());
        if pos < TOP_SCORES {
            self.score_meta_data.insert(pos, entry);
            self.score_meta_data.truncate(TOP_SCORES);
        }
    }

    /// The metric as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The metric as compact JSON text, as allocations keep it.
    pub fn to_raw(&self) -> Option<proto::model::RawJson> {
        proto::model::RawJson::encode(self).ok()
    }

    /// A one-line, human-readable reason why nothing was placed, e.g.
    /// `no node fits: 12 of 12 nodes filtered ("${attr.kernel.name} = windows": 12)`.
    pub fn summary(&self) -> String {
        if self.nodes_evaluated == 0 {
            return if self.nodes_in_pool == 0 {
                "no nodes in the job's node pool".to_string()
            } else {
                "no ready nodes in the job's datacenters and node pool".to_string()
            };
        }
        let mut parts = Vec::new();
        if self.nodes_filtered > 0 {
            let reasons: Vec<String> = self
                .constraint_filtered
                .iter()
                .map(|(reason, count)| format!("{reason:?}: {count}"))
                .collect();
            parts.push(format!(
                "{} of {} nodes filtered ({})",
                self.nodes_filtered,
                self.nodes_evaluated,
                reasons.join(", ")
            ));
        }
        if self.nodes_exhausted > 0 {
            let dims: Vec<String> = self
                .dimension_exhausted
                .iter()
                .map(|(dim, count)| format!("{dim}: {count}"))
                .collect();
            parts.push(format!(
                "{} nodes exhausted ({})",
                self.nodes_exhausted,
                dims.join(", ")
            ));
        }
        if parts.is_empty() {
            "no node fits".to_string()
        } else {
            format!("no node fits: {}", parts.join("; "))
        }
    }
}
