//! Fault injection with a history checker.
//!
//! - [`cluster`]: a federation of real processes on per-process loopback
//!   addresses that can be killed, stopped and restarted.
//! - [`workload`]: concurrent clients that register, update, deregister and
//!   read jobs, recording a [`history::History`].
//! - [`linearizability`]: the checker (per-job registers, Wing & Gong search
//!   with memoization) and the lost-write check.
//! - [`Summary`]: what a scenario prints.

pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod netns;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use history::{History, Op, OpKind, Outcome};

/// How long a scenario drives its workload: `ATOLL_SOAK_DURATION` (`10m`,
/// `90s`) when set, `short` otherwise.
pub fn workload_duration(short: Duration) -> Duration {
    std::env::var("ATOLL_SOAK_DURATION")
        .ok()
        .and_then(|s| parse_duration(&s))
        .unwrap_or(short)
}

/// `10m`, `90s`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// What a scenario found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Scenario name.
    pub name: String,
    /// Workload duration.
    pub duration: Duration,
    /// Operations recorded (including the final reads).
    pub ops: usize,
    /// Acknowledged operations.
    pub acked: usize,
    /// Definitely failed operations.
    pub failed: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Faults injected, with the time they were injected.
    pub faults: Vec<String>,
    /// Acknowledged writes missing once the faults healed.
    pub lost_writes: Vec<Op>,
    /// Keys whose history is not linearizable.
    pub violations: Vec<linearizability::Violation>,
    /// Keys the checker could not decide.
    pub undecided: Vec<String>,
    /// Keys checked.
    pub keys: usize,
    /// Job slots with two running allocations.
    pub slot_conflicts: Vec<String>,
    /// Nodes whose allocations exceed their resources.
    pub overcommits: Vec<String>,
    /// Per region: the longest time without an acknowledged operation.
    pub unavailable: BTreeMap<String, Duration>,
    /// Per target (`via`): (operations not acknowledged, operations).
    pub errors_by_target: BTreeMap<String, (usize, usize)>,
    /// (errors, total) of the workload's operations per region.
    pub errors_by_region: BTreeMap<String, (usize, usize)>,
}

impl Summary {
    /// Whether the scenario kept every guarantee.
    pub fn clean(&self) -> bool {
        self.lost_writes.is_empty()
            && self.violations.is_empty()
            && self.undecided.is_empty()
            && self.slot_conflicts.is_empty()
            && self.overcommits.is_empty()
    }

    /// Error rate of the operations sent through targets whose name starts
    /// with `prefix`: (errors, total).
    pub fn errors_via(&self, prefix: &str) -> (usize, usize) {
        self.errors_by_target
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .fold((0, 0), |(e, t), (_, (e2, t2))| (e + e2, t + t2))
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "=== scenario {} ===", self.name)?;
        writeln!(f, "workload:        {:?}", self.duration)?;
        writeln!(
            f,
            "operations:      {} ({} ok, {} failed, {} unknown)",
            self.ops, self.acked, self.failed, self.unknown
        )?;
        writeln!(f, "faults:          {}", self.faults.len())?;
        for x in &self.faults {
            writeln!(f, "  {x}")?;
        }
        writeln!(f, "keys checked:    {}", self.keys)?;
        writeln!(f, "lost writes:     {}", self.lost_writes.len())?;
        writeln!(f, "lin. violations: {}", self.violations.len())?;
        writeln!(f, "undecided keys:  {}", self.undecided.len())?;
        writeln!(f, "slot conflicts:  {}", self.slot_conflicts.len())?;
        writeln!(f, "over-commits:    {}", self.overcommits.len())?;
        for (r, d) in &self.unavailable {
            writeln!(f, "longest unavailability in {r}: {d:?}")?;
        }
        for (t, (e, n)) in &self.errors_by_target {
            writeln!(f, "errors via {t}: {e}/{n}")?;
        }
        for (r, (e, n)) in &self.errors_by_region {
            writeln!(f, "errors in region {r}: {e}/{n}")?;
        }
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        for w in &self.lost_writes {
            writeln!(f, "lost: {w:?}")?;
        }
        for c in self.slot_conflicts.iter().chain(&self.overcommits) {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The region a key belongs to (`<prefix>-<region>-<slot>-g<gen>`).
fn region_of(key: &str) -> Option<&str> {
    key.split('-').nth(1)
}

/// After the faults healed: read every key the history touched through
/// `bases[region]` (linearizably, retrying until an answer), record the
/// reads in the history, and return the final value of each key.
pub async fn final_reads(
    history: &History,
    bases: &BTreeMap<String, String>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Option<u64>>> {
    let keys: BTreeSet<String> = history.ops().into_iter().map(|o| o.key).collect();
    let http = workload::http_client(Duration::from_secs(10))?;
    let mut out = BTreeMap::new();
    for key in keys {
        let region = region_of(&key).unwrap_or_default().to_string();
        let base = bases
            .get(&region)
            .ok_or_else(|| anyhow::anyhow!("no server to read {key} from"))?;
        let target = workload::Target {
            name: "final".into(),
            base: base.clone(),
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let op =
                workload::one_op(&http, history, 0, &target, &region, &key, OpKind::Read).await;
            if let Outcome::Ok(v) = op.outcome {
                out.insert(key.clone(), v);
                break;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("no final read of {key}: {:?}", op.error);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(out)
}

/// Check the allocation invariants through `base` (a server): no job slot
/// (job, allocation name) with two allocations that run and are meant to,
/// and no node whose live allocations ask for more CPU or memory than it
/// offers. Returns (slot conflicts, over-commits).
pub async fn alloc_invariants(base: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    // Every read must succeed: a failed read (a fault in progress) proves
    // nothing and must not be mistaken for an empty node.
    async fn read(url: String) -> anyhow::Result<Value> {
        let (status, v) = crate::get_json(&url).await?;
        if status != reqwest::StatusCode::OK {
            anyhow::bail!("GET {url}: {status}");
        }
        Ok(v)
    }
    let allocs = read(format!("{base}/v1/allocations")).await?;
    let mut slots: HashMap<(String, String), Vec<String>> = HashMap::new();
    for a in allocs.as_array().into_iter().flatten() {
        if a["DesiredStatus"] == "run" && a["ClientStatus"] == "running" {
            slots
                .entry((
                    a["JobID"].as_str().unwrap_or_default().to_string(),
                    a["Name"].as_str().unwrap_or_default().to_string(),
                ))
                .or_default()
                .push(a["ID"].as_str().unwrap_or_default().to_string());
        }
    }
    let conflicts = slots
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|((job, name), ids)| format!("slot {name} of {job} has running allocations {ids:?}"))
        .collect();
    let mut over = Vec::new();
    let nodes = read(format!("{base}/v1/nodes")).await?;
    for n in nodes.as_array().into_iter().flatten() {
        let id = n["ID"].as_str().unwrap_or_default();
        let node = read(format!("{base}/v1/node/{id}")).await?;
        let allocs = read(format!("{base}/v1/node/{id}/allocations")).await?;
        let cap = |k: &str, f: &str| {
            node["NodeResources"][k][f].as_i64().unwrap_or(0)
                - node["ReservedResources"][k][f].as_i64().unwrap_or(0)
        };
        let (cpu_cap, mem_cap) = (cap("Cpu", "CpuShares"), cap("Memory", "MemoryMB"));
        let (mut cpu, mut mem) = (0i64, 0i64);
        for a in allocs.as_array().into_iter().flatten() {
            let live = a["DesiredStatus"] == "run"
                && !matches!(
                    a["ClientStatus"].as_str(),
                    Some("complete" | "failed" | "lost")
                );
            if !live {
                continue;
            }
            let tasks = a["AllocatedResources"]["Tasks"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for t in tasks.values() {
                cpu += t["Cpu"]["CpuShares"].as_i64().unwrap_or(0);
                mem += t["Memory"]["MemoryMB"].as_i64().unwrap_or(0);
            }
        }
        if cpu > cpu_cap || mem > mem_cap {
            over.push(format!(
                "node {id}: cpu {cpu}/{cpu_cap} MHz, memory {mem}/{mem_cap} MB"
            ));
        }
    }
    Ok((conflicts, over))
}

/// Analyse a finished history: counts, linearizability, lost writes
/// (against `finals`, the values read after the faults healed),
/// unavailability windows per region and errors per target.
pub fn analyze(
    name: &str,
    duration: Duration,
    history: &History,
    finals: &BTreeMap<String, Option<u64>>,
) -> Summary {
    let ops = history.ops();
    let mut s = Summary {
        name: name.into(),
        duration,
        ops: ops.len(),
        ..Summary::default()
    };
    for o in &ops {
        match o.outcome {
            Outcome::Ok(_) => s.acked += 1,
            Outcome::Failed => s.failed += 1,
            Outcome::Unknown => s.unknown += 1,
        }
        if o.via != "final" {
            let region = region_of(&o.key).unwrap_or_default().to_string();
            for e in [
                s.errors_by_target.entry(o.via.clone()).or_default(),
                s.errors_by_region.entry(region).or_default(),
            ] {
                e.1 += 1;
                if !o.acknowledged() {
                    e.0 += 1;
                }
            }
        }
    }
    let report = linearizability::check(&ops);
    s.keys = report.keys;
    s.violations = report.violations;
    s.undecided = report.undecided;
    for (key, v) in finals {
        s.lost_writes
            .extend(linearizability::lost_writes(&ops, key, *v));
    }
    // Longest window without an acknowledged operation, per region, over
    // the workload (final reads excluded).
    let end = ops
        .iter()
        .filter(|o| o.via != "final")
        .map(|o| o.complete)
        .max()
        .unwrap_or(0);
    let mut by_region: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.via != "final" && o.acknowledged()) {
        by_region
            .entry(region_of(&o.key).unwrap_or_default().to_string())
            .or_default()
            .push(o.complete);
    }
    for (r, mut times) in by_region {
        times.sort_unstable();
        let mut prev = 0;
        let mut longest = 0;
        for t in times.iter().copied().chain(std::iter::once(end)) {
            longest = longest.max(t.saturating_sub(prev));
            prev = t;
        }
        s.unavailable.insert(r, Duration::from_nanos(longest));
    }
    s
}

/// Pretty JSON of a value, for failure messages.
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
