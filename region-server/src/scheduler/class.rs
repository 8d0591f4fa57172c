//! Computed node classes: nodes that agree on everything feasibility checks
//! look at (datacenter, pool, class, non-unique attributes and meta, drivers)
//! share a class, so a check done for one node holds for all of them.

use proto::model::Node;

/// The class of `node` used for feasibility caching and blocked-evaluation
/// class eligibility: `Node::computed_class` when the node reports one, else
/// [`compute_node_class`].
pub fn node_class(node: &Node) -> String {
    if node.computed_class.is_empty() {
        compute_node_class(node)
    } else {
        node.computed_class.clone()
    }
}

/// A stable hash (`v1:<decimal>`) of the scheduling-relevant parts of a node:
/// datacenter, node pool, node class, attributes and meta whose keys do not
/// start with `unique.`, and the detected/healthy state of each driver.
///
/// The state layer should store this in `Node::computed_class` when a node
/// registers, so the blocked-evaluation tracker sees the same class names as
/// the scheduler.
pub fn compute_node_class(node: &Node) -> String {
    let mut hasher = Fnv64::default();
    hasher.field("dc", &node.datacenter);
    hasher.field("pool", &node.node_pool);
    hasher.field("class", &node.node_class);
    for (key, value) in &node.attributes {
        if !key.starts_with("unique.") {
            hasher.field(key, value);
        }
    }
    hasher.write(b"\x01meta");
    for (key, value) in &node.meta {
        if !key.starts_with("unique.") {
            hasher.field(key, value);
        }
    }
    hasher.write(b"\x01drivers");
    for (name, info) in &node.drivers {
        let state = match (info.detected, info.healthy) {
            (true, true) => "ok",
            (true, false) => "unhealthy",
            _ => "missing",
        };
        hasher.field(name, state);
    }
    format!("v1:{}", hasher.0)
}

/// FNV-1a, 64 bits: deterministic across processes (unlike `DefaultHasher`).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, key: &str, value: &str) {
        self.write(key.as_bytes());
        self.write(&[0]);
        self.write(value.as_bytes());
        self.write(&[0xff]);
    }
}
