//! Feasibility: which nodes may run a job's task group at all, regardless of
//! free resources. Results are cached per computed node class, so a large
//! cluster of similar nodes costs one check per class.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use proto::model::{
    Constraint, Job, Node, TaskGroup, CONSTRAINT_DISTINCT_HOSTS, CONSTRAINT_DISTINCT_PROPERTY,
    DEFAULT_NODE_POOL, NODE_POOL_ALL, NODE_STATUS_DISCONNECTED, NODE_STATUS_DOWN,
};

use super::class::node_class;
use super::constraint::{check_operand, resolve_target, target_is_unique, OperandCache};
use crate::state::Tables;

/// Filter reason for a node without a task's driver.
pub const FILTER_MISSING_DRIVERS: &str = "missing drivers";
/// Filter reason for a node without a requested host volume.
pub const FILTER_HOST_VOLUMES: &str = "missing compatible host volumes";
/// Filter reason for a node already running the job or group.
pub const FILTER_DISTINCT_HOSTS: &str = "distinct_hosts";

/// Whether a datacenter pattern (`*` matches any run of characters) matches.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the node is in one of the job's datacenters.
pub fn in_datacenters(job: &Job, node: &Node) -> bool {
    job.datacenters
        .iter()
        .any(|pattern| glob_match(pattern, &node.datacenter))
}

/// Whether the node is in the job's node pool: pool `all` takes every node;
/// an empty pool (job or node) is `default`.
pub fn in_node_pool(job: &Job, node: &Node) -> bool {
    let job_pool = if job.node_pool.is_empty() {
        DEFAULT_NODE_POOL
    } else {
        &job.node_pool
    };
    if job_pool == NODE_POOL_ALL {
        return true;
    }
    let node_pool = if node.node_pool.is_empty() {
        DEFAULT_NODE_POOL
    } else {
        &node.node_pool
    };
    job_pool == node_pool
}

/// Whether the node is gone for its allocations: down or disconnected.
pub fn node_lost(node: &Node) -> bool {
    node.status == NODE_STATUS_DOWN || node.status == NODE_STATUS_DISCONNECTED
}

/// Whether the node is draining.
pub fn node_draining(node: &Node) -> bool {
    node.drain || node.drain_strategy.is_some()
}

/// The nodes a job may be placed on, before feasibility checks.
#[derive(Debug, Default)]
pub struct CandidateNodes {
    /// Ready, eligible, not draining nodes in the job's datacenters and pool,
    /// sorted by ID.
    pub ready: Vec<Arc<Node>>,
    /// Nodes in the job's datacenters and pool that are up but not ready for
    /// placements (ineligible, initializing): their allocations are left
    /// alone.
    pub not_ready: BTreeSet<String>,
    /// Ready nodes per datacenter (`NodesAvailable`).
    pub by_datacenter: BTreeMap<String, u64>,
    /// Nodes in the job's pool (`NodesInPool`).
    pub in_pool: u64,
}

impl CandidateNodes {
    /// Collects the candidate nodes of `job` from `state`.
    pub fn collect(state: &Tables, job: &Job) -> Self {
        let mut out = Self::default();
        for node in state.nodes.values() {
            if !in_node_pool(job, node) {
                continue;
            }
            out.in_pool += 1;
            if !in_datacenters(job, node) {
                continue;
            }
            if node.ready_for_scheduling() {
                *out.by_datacenter
                    .entry(node.datacenter.clone())
                    .or_default() += 1;
                out.ready.push(node.clone());
            } else if !node_lost(node) && !node_draining(node) {
                out.not_ready.insert(node.id.clone());
            }
        }
        out
    }
}

/// The class-independent and class-dependent checks of one group.
struct GroupChecks {
    drivers: BTreeSet<String>,
    constraints: Vec<Constraint>,
    escaped: bool,
}

/// Feasibility checker for one job, caching results per computed class.
pub struct Feasibility {
    operands: OperandCache,
    use_cache: bool,
    job_constraints: Vec<Constraint>,
    job_escaped: bool,
    groups: HashMap<String, GroupChecks>,
    classes: HashMap<String, Rc<str>>,
    job_cache: HashMap<Rc<str>, Result<(), String>>,
    group_cache: HashMap<(String, Rc<str>), Result<(), String>>,
}

/// Constraints checked per node by feasibility (everything except
/// `distinct_hosts` and `distinct_property`, which depend on placements).
fn static_constraints<'a>(constraints: impl Iterator<Item = &'a Constraint>) -> Vec<Constraint> {
    constraints
        .filter(|c| {
            c.operand != CONSTRAINT_DISTINCT_HOSTS && c.operand != CONSTRAINT_DISTINCT_PROPERTY
        })
        .cloned()
        .collect()
}

fn escapes(constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .any(|c| target_is_unique(&c.l_target) || target_is_unique(&c.r_target))
}

/// Nomad's `Constraint.String()`: `LTarget Operand RTarget`.
pub fn constraint_string(c: &Constraint) -> String {
    format!("{} {} {}", c.l_target, c.operand, c.r_target)
}

impl Feasibility {
    /// A checker for `job`; `use_cache` enables per-class caching.
    pub fn new(job: &Job, use_cache: bool) -> Self {
        let job_constraints = static_constraints(job.constraints.iter());
        let job_escaped = escapes(&job_constraints);
        let groups = job
            .task_groups
            .iter()
            .map(|group| {
                let constraints = static_constraints(
                    group
                        .constraints
                        .iter()
                        .chain(group.tasks.iter().flat_map(|t| t.constraints.iter())),
                );
                let escaped = escapes(&constraints);
                let drivers = group
                    .tasks
                    .iter()
                    .filter(|t| !t.driver.is_empty())
                    .map(|t| t.driver.clone())
                    .collect();
                (
                    group.name.clone(),
                    GroupChecks {
                        drivers,
                        constraints,
                        escaped,
                    },
                )
            })
            .collect();
        Self {
            operands: OperandCache::default(),
            use_cache,
            job_constraints,
            job_escaped,
            groups,
            classes: HashMap::new(),
            job_cache: HashMap::new(),
            group_cache: HashMap::new(),
        }
    }

    /// The node's computed class (cached per node).
    pub fn class_of(&mut self, node: &Node) -> Rc<str> {
        if let Some(class) = self.classes.get(&node.id) {
            return class.clone();
        }
        let class: Rc<str> = node_class(node).into();
        self.classes.insert(node.id.clone(), class.clone());
        class
    }

    /// Whether `group` of the job may run on `node` (drivers, job, group and
    /// task constraints); `Err` carries the filter reason.
    pub fn check(&mut self, node: &Node, group: &TaskGroup) -> Result<(), String> {
        let class = self.class_of(node);

        // Job-level constraints.
        let cached = if self.use_cache && !self.job_escaped {
            self.job_cache.get(&class).cloned()
        } else {
            None
        };
        let job_result = match cached {
            Some(result) => result,
            None => {
                let result = check_constraints(&mut self.operands, &self.job_constraints, node);
                if !self.job_escaped {
                    self.job_cache.insert(class.clone(), result.clone());
                }
                result
            }
        };
        job_result?;

        // Group-level checks.
        let Some(checks) = self.groups.get(&group.name) else {
            return Ok(());
        };
        let key = (group.name.clone(), class);
        let cached = if self.use_cache && !checks.escaped {
            self.group_cache.get(&key).cloned()
        } else {
            None
        };
        let result = match cached {
            Some(result) => result,
            None => {
                let result = if !has_drivers(node, &checks.drivers) {
                    Err(FILTER_MISSING_DRIVERS.to_string())
                } else {
                    check_constraints(&mut self.operands, &checks.constraints, node)
                };
                if !checks.escaped {
                    self.group_cache.insert(key, result.clone());
                }
                result
            }
        };
        result?;
        // Host volumes are not part of the computed class: never cached.
        if !has_host_volumes(node, group) {
            return Err(FILTER_HOST_VOLUMES.to_string());
        }
        Ok(())
    }

    /// Whether some constraint refers to a unique node property, so class
    /// eligibility does not tell the whole story.
    pub fn escaped(&self) -> bool {
        self.job_escaped || self.groups.values().any(|g| g.escaped)
    }

    /// Eligibility of every class seen, for blocked evaluations: a class is
    /// eligible when the job-level checks and some group's checks passed.
    pub fn class_eligibility(&self) -> BTreeMap<String, bool> {
        let mut out = BTreeMap::new();
        for ((_, class), result) in &self.group_cache {
            let entry = out.entry(class.to_string()).or_insert(false);
            *entry |= result.is_ok();
        }
        for (class, result) in &self.job_cache {
            match result {
                Ok(()) => {
                    out.entry(class.to_string()).or_insert(true);
                }
                Err(_) => {
                    out.insert(class.to_string(), false);
                }
            }
        }
        out
    }

    /// The operand cache, for affinities.
    pub fn operands(&mut self) -> &mut OperandCache {
        &mut self.operands
    }
}

fn check_constraints(
    operands: &mut OperandCache,
    constraints: &[Constraint],
    node: &Node,
) -> Result<(), String> {
    for constraint in constraints {
        let lval = resolve_target(&constraint.l_target, node);
        let rval = resolve_target(&constraint.r_target, node);
        if !check_operand(operands, &constraint.operand, lval, rval) {
            return Err(constraint_string(constraint));
        }
    }
    Ok(())
}

/// Whether the node has every driver, detected and healthy (or, for nodes
/// without driver info, a true `driver.<name>` attribute).
pub fn has_drivers(node: &Node, drivers: &BTreeSet<String>) -> bool {
    drivers.iter().all(|driver| match node.drivers.get(driver) {
        Some(info) => info.detected && info.healthy,
        None => node
            .attributes
            .get(&format!("driver.{driver}"))
            .is_some_and(|value| parse_bool(value)),
    })
}

/// Whether the node offers every host volume the group asks for (volumes of
/// type `host`, by `Source`), writable when the request is.
pub fn has_host_volumes(node: &Node, group: &TaskGroup) -> bool {
    group.volumes.values().all(|request| {
        let field = |name: &str| request.get(name).and_then(serde_json::Value::as_str);
        let kind = field("Type").unwrap_or("host");
        if !kind.is_empty() && !kind.eq_ignore_ascii_case("host") {
            return true;
        }
        let Some(source) = field("Source").filter(|s| !s.is_empty()) else {
            return true;
        };
        let Some(offered) = node.host_volumes.get(source) else {
            return false;
        };
        let read_only = |value: &serde_json::Value| {
            value
                .get("ReadOnly")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        read_only(request) || !read_only(offered)
    })
}

/// Go's `strconv.ParseBool` truth values.
fn parse_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}
