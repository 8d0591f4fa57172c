//! Resources: what nodes offer, what allocations use, whether a set of
//! allocations fits a node, and the assignment of ports and cores to a new
//! allocation.

use std::collections::{BTreeMap, BTreeSet};

use proto::model::{
    AllocatedCpuResources, AllocatedMemoryResources, AllocatedPortMapping, AllocatedResources,
    AllocatedSharedResources, AllocatedTaskResources, Allocation, NamedMap, NetworkResource, Node,
    Port, TaskGroup, NODE_ATTR_ADDRESS,
};

use super::rng::SeededRng;

/// Lowest dynamic port when the node names none (Nomad's default).
pub const DEFAULT_MIN_DYNAMIC_PORT: i64 = 20_000;
/// Highest dynamic port when the node names none (Nomad's default).
pub const DEFAULT_MAX_DYNAMIC_PORT: i64 = 32_000;

/// Exhausted dimension: CPU.
pub const DIM_CPU: &str = "cpu";
/// Exhausted dimension: reserved cores.
pub const DIM_CORES: &str = "cores";
/// Exhausted dimension: memory.
pub const DIM_MEMORY: &str = "memory";
/// Exhausted dimension: disk.
pub const DIM_DISK: &str = "disk";
/// Exhausted dimension: a static port is taken.
pub const DIM_PORT_COLLISION: &str = "network: reserved port collision";
/// Exhausted dimension: no dynamic port left.
pub const DIM_DYNAMIC_PORTS: &str = "network: dynamic port selection failed";

/// Scalar resources that can be added, subtracted and compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Comparable {
    /// CPU in MHz (reserved cores included at the node's MHz per core).
    pub cpu: i64,
    /// Number of whole cores reserved.
    pub cores: i64,
    /// Memory in MB.
    pub memory_mb: i64,
    /// Disk in MB.
    pub disk_mb: i64,
}

impl Comparable {
    /// The sum.
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu + other.cpu,
            cores: self.cores + other.cores,
            memory_mb: self.memory_mb + other.memory_mb,
            disk_mb: self.disk_mb + other.disk_mb,
        }
    }

    /// The difference.
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu - other.cpu,
            cores: self.cores - other.cores,
            memory_mb: self.memory_mb - other.memory_mb,
            disk_mb: self.disk_mb - other.disk_mb,
        }
    }

    /// `Ok` when `self` (available) covers `used`, else the first exhausted
    /// dimension, checked in Nomad's order: cpu, cores, memory, disk.
    pub fn superset(&self, used: &Self) -> Result<(), &'static str> {
        if used.cpu > self.cpu {
            Err(DIM_CPU)
        } else if used.cores > self.cores {
            Err(DIM_CORES)
        } else if used.memory_mb > self.memory_mb {
            Err(DIM_MEMORY)
        } else if used.disk_mb > self.disk_mb {
            Err(DIM_DISK)
        } else {
            Ok(())
        }
    }
}

/// MHz of one core of the node (0 when the node reports no cores).
pub fn mhz_per_core(node: &Node) -> i64 {
    let cores = node.node_resources.cpu.total_cpu_cores;
    if cores > 0 {
        node.node_resources.cpu.cpu_shares / cores
    } else {
        0
    }
}

/// IDs of the cores allocations may reserve on the node.
fn reservable_cores(node: &Node) -> Vec<u32> {
    let cpu = &node.node_resources.cpu;
    let all: Vec<u32> = if cpu.reservable_cpu_cores.is_empty() {
        (0..u32::try_from(cpu.total_cpu_cores.max(0)).unwrap_or(0)).collect()
    } else {
        cpu.reservable_cpu_cores.clone()
    };
    let reserved = &node.reserved_resources.cpu.reserved_cpu_cores;
    all.into_iter().filter(|c| !reserved.contains(c)).collect()
}

/// What the node offers to allocations: its resources minus what it keeps.
pub fn node_available(node: &Node) -> Comparable {
    let res = &node.node_resources;
    let reserved = &node.reserved_resources;
    Comparable {
        cpu: res.cpu.cpu_shares - reserved.cpu.cpu_shares,
        cores: reservable_cores(node).len() as i64,
        memory_mb: res.memory.memory_mb - reserved.memory.memory_mb,
        disk_mb: res.disk.disk_mb - reserved.disk.disk_mb,
    }
}

/// What one copy of the group asks for on `node`.
pub fn group_ask(group: &TaskGroup, node: Option<&Node>) -> Comparable {
    let per_core = node.map(mhz_per_core).unwrap_or(0);
    let mut ask = Comparable {
        disk_mb: group.ephemeral_disk.size_mb,
        ..Comparable::default()
    };
    for task in &group.tasks {
        ask.cpu += task.resources.cpu + task.resources.cores * per_core;
        ask.cores += task.resources.cores;
        ask.memory_mb += task.resources.memory_mb;
    }
    ask
}

/// What an allocation uses: its `AllocatedResources`, else its legacy
/// `Resources`, else what its job's group asks for.
pub fn alloc_resources(alloc: &Allocation) -> Comparable {
    if let Some(allocated) = &alloc.allocated_resources {
        let mut used = Comparable {
            disk_mb: allocated.shared.disk_mb,
            ..Comparable::default()
        };
        for task in allocated.tasks.values() {
            used.cpu += task.cpu.cpu_shares;
            used.cores += task.cpu.reserved_cores.len() as i64;
            used.memory_mb += task.memory.memory_mb;
        }
        return used;
    }
    if let Some(resources) = &alloc.resources {
        return Comparable {
            cpu: resources.cpu,
            cores: resources.cores,
            memory_mb: resources.memory_mb,
            disk_mb: resources.disk_mb,
        };
    }
    alloc
        .job
        .as_ref()
        .and_then(|job| job.task_group(&alloc.task_group))
        .map(|group| group_ask(group, None))
        .unwrap_or_default()
}

/// Host ports an allocation holds.
pub fn alloc_ports(alloc: &Allocation) -> Vec<i64> {
    let mut ports = Vec::new();
    let mut from_networks = |networks: &[NetworkResource]| {
        for network in networks {
            for port in network.reserved_ports.iter().chain(&network.dynamic_ports) {
                if port.value > 0 {
                    ports.push(port.value);
                }
            }
        }
    };
    if let Some(allocated) = &alloc.allocated_resources {
        from_networks(&allocated.shared.networks);
        for task in allocated.tasks.values() {
            from_networks(&task.networks);
        }
        for mapping in &allocated.shared.ports {
            if mapping.value > 0 {
                ports.push(mapping.value);
            }
        }
    } else if let Some(resources) = &alloc.resources {
        from_networks(&resources.networks);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Cores an allocation reserved.
pub fn alloc_cores(alloc: &Allocation) -> Vec<u32> {
    alloc
        .allocated_resources
        .as_ref()
        .map(|allocated| {
            allocated
                .tasks
                .values()
                .flat_map(|task| task.cpu.reserved_cores.iter().copied())
                .collect()
        })
        .unwrap_or_default()
}

/// Ports the node keeps for itself (`ReservedHostPorts`, e.g. `22,80,8000-8100`).
pub fn node_reserved_ports(node: &Node) -> BTreeSet<i64> {
    let mut ports = BTreeSet::new();
    for part in node
        .reserved_resources
        .networks
        .reserved_host_ports
        .split(',')
    {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('-') {
            Some((lo, hi)) => {
                if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<i64>(), hi.trim().parse::<i64>()) {
                    if hi - lo <= 65_535 {
                        ports.extend(lo..=hi);
                    }
                }
            }
            None => {
                if let Ok(port) = part.parse() {
                    ports.insert(port);
                }
            }
        }
    }
    ports
}

/// What the allocations placed on one node use together, as multisets so
/// that allocations can be removed again and collisions are visible.
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    /// Summed scalar resources.
    pub res: Comparable,
    /// Host port -> number of allocations holding it.
    pub ports: BTreeMap<i64, u32>,
    /// Core id -> number of allocations holding it.
    pub cores: BTreeMap<u32, u32>,
}

impl NodeUsage {
    /// Adds an allocation.
    pub fn add(&mut self, alloc: &Allocation) {
        self.res = self.res.plus(alloc_resources(alloc));
        for port in alloc_ports(alloc) {
            *self.ports.entry(port).or_default() += 1;
        }
        for core in alloc_cores(alloc) {
            *self.cores.entry(core).or_default() += 1;
        }
    }

    /// Removes an allocation added before.
    pub fn remove(&mut self, alloc: &Allocation) {
        self.res = self.res.minus(alloc_resources(alloc));
        for port in alloc_ports(alloc) {
            if let Some(count) = self.ports.get_mut(&port) {
                *count -= 1;
                if *count == 0 {
                    self.ports.remove(&port);
                }
            }
        }
        for core in alloc_cores(alloc) {
            if let Some(count) = self.cores.get_mut(&core) {
                *count -= 1;
                if *count == 0 {
                    self.cores.remove(&core);
                }
            }
        }
    }

    /// Whether these allocations fit the node: scalar resources, no port held
    /// twice or reserved by the node, no core held twice.
    pub fn fits(&self, node: &Node) -> Result<(), &'static str> {
        node_available(node).superset(&self.res)?;
        let reserved = node_reserved_ports(node);
        if self
            .ports
            .iter()
            .any(|(port, count)| *count > 1 || reserved.contains(port))
        {
            return Err(DIM_PORT_COLLISION);
        }
        if self.cores.values().any(|count| *count > 1) {
            return Err(DIM_CORES);
        }
        Ok(())
    }
}

/// The IP allocations on the node bind to.
fn node_ip(node: &Node) -> String {
    node.node_resources
        .networks
        .iter()
        .find(|network| !network.ip.is_empty())
        .map(|network| network.ip.clone())
        .or_else(|| node.attributes.get(NODE_ATTR_ADDRESS).cloned())
        .unwrap_or_default()
}

/// Builds the resources of a new allocation of `group` on `node`, whose
/// allocations already use `usage`: checks scalar fit, assigns static and
/// dynamic ports and reserved cores. Errors with the exhausted dimension.
pub fn allocate(
    group: &TaskGroup,
    node: &Node,
    usage: &NodeUsage,
    rng: &mut SeededRng,
) -> Result<AllocatedResources, &'static str> {
    let ask = group_ask(group, Some(node));
    node_available(node).superset(&usage.res.plus(ask))?;

    // Ports.
    let mut taken: BTreeSet<i64> = node_reserved_ports(node);
    taken.extend(usage.ports.keys().copied());
    let ip = node_ip(node);
    let mut ports = PortPicker {
        taken,
        min: if node.node_resources.min_dynamic_port > 0 {
            node.node_resources.min_dynamic_port
        } else {
            DEFAULT_MIN_DYNAMIC_PORT
        },
        max: if node.node_resources.max_dynamic_port > 0 {
            node.node_resources.max_dynamic_port
        } else {
            DEFAULT_MAX_DYNAMIC_PORT
        },
        rng,
    };
    let mut shared_ports = Vec::new();
    let mut shared_networks = Vec::new();
    for network in &group.networks {
        let assigned = ports.assign(network, &ip)?;
        for port in assigned
            .reserved_ports
            .iter()
            .chain(&assigned.dynamic_ports)
        {
            shared_ports.push(AllocatedPortMapping {
                label: port.label.clone(),
                value: port.value,
                to: port.to,
                host_ip: ip.clone(),
            });
        }
        shared_networks.push(assigned);
    }

    // Cores.
    let mut free_cores: Vec<u32> = reservable_cores(node)
        .into_iter()
        .filter(|core| !usage.cores.contains_key(core))
        .collect();
    free_cores.reverse();

    let per_core = mhz_per_core(node);
    let mut tasks = NamedMap::new();
    let mut task_lifecycles = NamedMap::new();
    for task in &group.tasks {
        let mut reserved_cores = Vec::new();
        for _ in 0..task.resources.cores.max(0) {
            reserved_cores.push(free_cores.pop().ok_or(DIM_CORES)?);
        }
        let mut networks = Vec::new();
        for network in &task.resources.networks {
            networks.push(ports.assign(network, &ip)?);
        }
        tasks.insert(
            task.name.clone(),
            AllocatedTaskResources {
                cpu: AllocatedCpuResources {
                    cpu_shares: task.resources.cpu + task.resources.cores * per_core,
                    reserved_cores,
                },
                memory: AllocatedMemoryResources {
                    memory_mb: task.resources.memory_mb,
                    memory_max_mb: task.resources.memory_max_mb,
                },
                networks,
                devices: Vec::new(),
            },
        );
        task_lifecycles.insert(task.name.clone(), task.lifecycle.clone());
    }
    Ok(AllocatedResources {
        tasks,
        task_lifecycles,
        shared: AllocatedSharedResources {
            networks: shared_networks,
            disk_mb: group.ephemeral_disk.size_mb,
            ports: shared_ports,
        },
    })
}

struct PortPicker<'a> {
    taken: BTreeSet<i64>,
    min: i64,
    max: i64,
    rng: &'a mut SeededRng,
}

impl PortPicker<'_> {
    fn assign(
        &mut self,
        network: &NetworkResource,
        ip: &str,
    ) -> Result<NetworkResource, &'static str> {
        let mut out = network.clone();
        out.ip = ip.to_string();
        for port in &network.reserved_ports {
            if port.value > 0 && !self.taken.insert(port.value) {
                return Err(DIM_PORT_COLLISION);
            }
        }
        out.dynamic_ports = Vec::with_capacity(network.dynamic_ports.len());
        for port in &network.dynamic_ports {
            let value = self.pick()?;
            out.dynamic_ports.push(Port {
                value,
                ..port.clone()
            });
        }
        Ok(out)
    }

    fn pick(&mut self) -> Result<i64, &'static str> {
        if self.max < self.min {
            return Err(DIM_DYNAMIC_PORTS);
        }
        let span = (self.max - self.min + 1) as u64;
        for _ in 0..20 {
            let candidate = self.min + self.rng.below(span) as i64;
            if self.taken.insert(candidate) {
                return Ok(candidate);
            }
        }
        let start = self.rng.below(span) as i64;
        for offset in 0..span as i64 {
            let candidate = self.min + (start + offset) % span as i64;
            if self.taken.insert(candidate) {
                return Ok(candidate);
            }
        }
        Err(DIM_DYNAMIC_PORTS)
    }
}

/// Nomad's bin-packing fitness of a node whose allocations would use `used`:
/// `20 - (10^freeCpu + 10^freeMem)`, in `[0, 18]`.
pub fn score_fit_binpack(node: &Node, used: &Comparable) -> f64 {
    let (cpu, mem) = free_fractions(node, used);
    let score = 20.0 - (10f64.powf(cpu) + 10f64.powf(mem));
    score.clamp(0.0, 18.0)
}

/// The inverse fitness used by the `spread` algorithm:
/// `(10^freeCpu + 10^freeMem) - 2`, in `[0, 18]`.
pub fn score_fit_spread(node: &Node, used: &Comparable) -> f64 {
    let (cpu, mem) = free_fractions(node, used);
    let score = (10f64.powf(cpu) + 10f64.powf(mem)) - 2.0;
    score.clamp(0.0, 18.0)
}

fn free_fractions(node: &Node, used: &Comparable) -> (f64, f64) {
    let available = node_available(node);
    let fraction = |used: i64, total: i64| {
        if total <= 0 {
            0.0
        } else {
            1.0 - used as f64 / total as f64
        }
    };
    (
        fraction(used.cpu, available.cpu),
        fraction(used.memory_mb, available.memory_mb),
    )
}
