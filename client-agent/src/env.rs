//! A task's environment: Nomad's `NOMAD_*` variables, the task's `Env`, and
//! `${...}` interpolation of env values and driver config.

use std::collections::BTreeMap;

use proto::model::{Allocation, Job, Node, Task, TaskGroup};
use serde_json::Value;

use crate::allocdir::TaskDirs;

/// What the environment is built from.
pub struct EnvInput<'a> {
    /// The allocation.
    pub alloc: &'a Allocation,
    /// Its job.
    pub job: &'a Job,
    /// Its group.
    pub group: &'a TaskGroup,
    /// The task.
    pub task: &'a Task,
    /// The node.
    pub node: &'a Node,
    /// The agent's region (used when the job names none).
    pub region: &'a str,
    /// The task's directories.
    pub dirs: Option<&'a TaskDirs>,
}

/// `s` with every character that cannot appear in an environment variable
/// name replaced by `_` (Nomad's `CleanEnvVar`).
pub fn clean_env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The index in an allocation name `job.group[3]`.
pub fn alloc_index(name: &str) -> Option<u64> {
    let open = name.rfind('[')?;
    let close = name.rfind(']')?;
    name.get(open + 1..close)?.parse().ok()
}

/// The task's resources: from the allocation's assigned resources, else the
/// task's ask. (cpu MHz, memory MB, memory max MB, cores)
pub fn task_resources(alloc: &Allocation, task: &Task) -> (i64, i64, i64, usize) {
    if let Some(t) = alloc
        .allocated_resources
        .as_ref()
        .and_then(|r| r.tasks.get(&task.name))
    {
        return (
            t.cpu.cpu_shares,
            t.memory.memory_mb,
            t.memory.memory_max_mb,
            t.cpu.reserved_cores.len(),
        );
    }
    (
        task.resources.cpu,
        task.resources.memory_mb,
        task.resources.memory_max_mb,
        task.resources.cores.max(0) as usize,
    )
}

/// Builds the environment.
pub fn build_env(input: &EnvInput<'_>) -> BTreeMap<String, String> {
    let EnvInput {
        alloc,
        job,
        group,
        task,
        node,
        region,
        dirs,
    } = input;
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("NOMAD_ALLOC_ID", alloc.id.clone());
    set(
        "NOMAD_SHORT_ALLOC_ID",
        alloc.id.chars().take(8).collect::<String>(),
    );
    set("NOMAD_ALLOC_NAME", alloc.name.clone());
    if let Some(i) = alloc_index(&alloc.name) {
        set("NOMAD_ALLOC_INDEX", i.to_string());
    }
    set("NOMAD_JOB_ID", job.id.clone());
    set(
        "NOMAD_JOB_NAME",
        if job.name.is_empty() {
            job.id.clone()
        } else {
            job.name.clone()
        },
    );
    if !job.parent_id.is_empty() {
        set("NOMAD_JOB_PARENT_ID", job.parent_id.clone());
    }
    set("NOMAD_GROUP_NAME", group.name.clone());
    set("NOMAD_TASK_NAME", task.name.clone());
    set(
        "NOMAD_NAMESPACE",
        if alloc.namespace.is_empty() {
            job.namespace.clone()
        } else {
            alloc.namespace.clone()
        },
    );
    set(
        "NOMAD_REGION",
        if job.region.is_empty() {
            region.to_string()
        } else {
            job.region.clone()
        },
    );
    set("NOMAD_DC", node.datacenter.clone());
    if let Some(d) = dirs {
        set("NOMAD_ALLOC_DIR", d.shared.display().to_string());
        set("NOMAD_TASK_DIR", d.local.display().to_string());
        set("NOMAD_SECRETS_DIR", d.secrets.display().to_string());
        set("TMPDIR", d.tmp.display().to_string());
    }
    let (cpu, mem, mem_max, cores) = task_resources(alloc, task);
    set("NOMAD_CPU_LIMIT", cpu.to_string());
    if cores > 0 {
        set("NOMAD_CPU_CORES", cores.to_string());
    }
    set("NOMAD_MEMORY_LIMIT", mem.to_string());
    if mem_max > 0 {
        set("NOMAD_MEMORY_MAX_LIMIT", mem_max.to_string());
    }
    // Ports assigned to the group.
    if let Some(res) = &alloc.allocated_resources {
        for p in &res.shared.ports {
            let label = clean_env_name(&p.label);
            let inner = if p.to > 0 { p.to } else { p.value };
            set(&format!("NOMAD_PORT_{label}"), inner.to_string());
            set(&format!("NOMAD_HOST_PORT_{label}"), p.value.to_string());
            set(&format!("NOMAD_IP_{label}"), p.host_ip.clone());
            set(&format!("NOMAD_HOST_IP_{label}"), p.host_ip.clone());
            set(
                &format!("NOMAD_ADDR_{label}"),
                format!("{}:{}", p.host_ip, p.value),
            );
            set(
                &format!("NOMAD_HOST_ADDR_{label}"),
                format!("{}:{}", p.host_ip, p.value),
            );
        }
    }
    // Metadata: job < group < task.
    let mut meta = job.meta.clone();
    meta.extend(group.meta.clone());
    meta.extend(task.meta.clone());
    for (k, v) in &meta {
        let clean = clean_env_name(k);
        env.insert(format!("NOMAD_META_{clean}"), v.clone());
        env.insert(
            format!("NOMAD_META_{}", clean.to_ascii_uppercase()),
            v.clone(),
        );
    }
    // The task's own variables, interpolated.
    for (k, v) in &task.env {
        let value = interpolate(v, &env, node);
        env.insert(k.clone(), value);
    }
    env
}

/// Resolves `${...}` references in `s`: `${NOMAD_*}` and other variables of
/// `env`, `${env["NAME"]}`, `${node.unique.id}`, `${node.unique.name}`,
/// `${node.datacenter}`, `${node.region}`, `${node.class}`, `${node.pool}`,
/// `${attr.<name>}` and `${meta.<key>}` (node metadata). Unknown references
/// are left as they are, like Nomad does.
pub fn interpolate(s: &str, env: &BTreeMap<String, String>, node: &Node) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = after[..end].trim();
        match lookup(key, env, node) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn lookup(key: &str, env: &BTreeMap<String, String>, node: &Node) -> Option<String> {
    if let Some(inner) = key.strip_prefix("env[").and_then(|k| k.strip_suffix(']')) {
        let name = inner.trim().trim_matches('"');
        return env.get(name).cloned();
    }
    if let Some(v) = env.get(key) {
        return Some(v.clone());
    }
    match key {
        "node.unique.id" => return Some(node.id.clone()),
        "node.unique.name" => return Some(node.name.clone()),
        "node.datacenter" => return Some(node.datacenter.clone()),
        "node.class" => return Some(node.node_class.clone()),
        "node.pool" => return Some(node.node_pool.clone()),
        "node.region" => return env.get("NOMAD_REGION").cloned(),
        _ => {}
    }
    if let Some(a) = key.strip_prefix("attr.") {
        return node.attributes.get(a).cloned();
    }
    if let Some(m) = key.strip_prefix("meta.") {
        return node.meta.get(m).cloned();
    }
    None
}

/// Interpolates every string inside a driver config.
pub fn interpolate_value(v: &Value, env: &BTreeMap<String, String>, node: &Node) -> Value {
    match v {
        Value::String(s) => Value::String(interpolate(s, env, node)),
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| interpolate_value(x, env, node)).collect())
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), interpolate_value(x, env, node)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::model::{AllocatedPortMapping, AllocatedResources, Resources};

    fn fixture() -> (Allocation, Job, Node) {
        let task = Task {
            name: "web".into(),
            driver: "raw_exec".into(),
            env: [
                (
                    "GREETING".to_string(),
                    "hi ${NOMAD_TASK_NAME} on ${node.unique.name}".to_string(),
                ),
                ("RACK".to_string(), "${meta.rack}".to_string()),
                ("UNKNOWN".to_string(), "${nope.x}".to_string()),
            ]
            .into_iter()
            .collect(),
            meta: [("owner".to_string(), "ops".to_string())]
                .into_iter()
                .collect(),
            resources: Resources {
                cpu: 250,
                memory_mb: 128,
                ..Default::default()
            },
            ..Default::default()
        };
        let job = Job {
            id: "api".into(),
            name: "api".into(),
            namespace: "default".into(),
            region: "eu".into(),
            meta: [
                ("team".to_string(), "core".to_string()),
                ("owner".to_string(), "job".to_string()),
            ]
            .into_iter()
            .collect(),
            task_groups: vec![TaskGroup {
                name: "front".into(),
                meta: [("zone-name".to_string(), "a".to_string())]
                    .into_iter()
                    .collect(),
                tasks: vec![task],
                ..Default::default()
            }],
            ..Default::default()
        };
        let alloc = Allocation {
            id: "0123456789abcdef".into(),
            name: "api.front[3]".into(),
            namespace: "default".into(),
            allocated_resources: Some(AllocatedResources {
                shared: proto::model::AllocatedSharedResources {
                    ports: vec![AllocatedPortMapping {
                        label: "http".into(),
                        value: 25_000,
                        to: 8080,
                        host_ip: "10.0.0.5".into(),
                    }],
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = Node {
            id: "node-1-id".into(),
            name: "node-1".into(),
            datacenter: "dc1".into(),
            meta: [("rack".to_string(), "r7".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        (alloc, job, node)
    }

    #[test]
    fn nomad_variables() {
        let (alloc, job, node) = fixture();
        let group = &job.task_groups[0];
        let task = &group.tasks[0];
        let base = tempfile::tempdir().unwrap();
        let dirs = crate::allocdir::AllocDir::new(base.path(), &alloc.id).task_dirs("web");
        let env = build_env(&EnvInput {
            alloc: &alloc,
            job: &job,
            group,
            task,
            node: &node,
            region: "global",
            dirs: Some(&dirs),
        });
        assert_eq!(env["NOMAD_ALLOC_ID"], alloc.id);
        assert_eq!(env["NOMAD_SHORT_ALLOC_ID"], "01234567");
        assert_eq!(env["NOMAD_ALLOC_NAME"], "api.front[3]");
        assert_eq!(env["NOMAD_ALLOC_INDEX"], "3");
        assert_eq!(env["NOMAD_JOB_ID"], "api");
        assert_eq!(env["NOMAD_JOB_NAME"], "api");
        assert_eq!(env["NOMAD_GROUP_NAME"], "front");
        assert_eq!(env["NOMAD_TASK_NAME"], "web");
        assert_eq!(env["NOMAD_NAMESPACE"], "default");
        assert_eq!(env["NOMAD_REGION"], "eu");
        assert_eq!(env["NOMAD_DC"], "dc1");
        assert_eq!(env["NOMAD_CPU_LIMIT"], "250");
        assert_eq!(env["NOMAD_MEMORY_LIMIT"], "128");
        assert_eq!(env["NOMAD_TASK_DIR"], dirs.local.display().to_string());
        assert_eq!(env["NOMAD_ALLOC_DIR"], dirs.shared.display().to_string());
        assert_eq!(env["NOMAD_SECRETS_DIR"], dirs.secrets.display().to_string());
        assert_eq!(env["NOMAD_META_team"], "core");
        assert_eq!(env["NOMAD_META_TEAM"], "core");
        assert_eq!(env["NOMAD_META_owner"], "ops");
        assert_eq!(env["NOMAD_META_zone_name"], "a");
        assert_eq!(env["NOMAD_PORT_http"], "8080");
        assert_eq!(env["NOMAD_HOST_PORT_http"], "25000");
        assert_eq!(env["NOMAD_ADDR_http"], "10.0.0.5:25000");
        assert_eq!(env["GREETING"], "hi web on node-1");
        assert_eq!(env["RACK"], "r7");
        assert_eq!(env["UNKNOWN"], "${nope.x}");
    }

    #[test]
    fn interpolation_in_config() {
        let (_, _, node) = fixture();
        let env: BTreeMap<String, String> = [("NOMAD_ALLOC_ID".to_string(), "a1".to_string())]
            .into_iter()
            .collect();
        let v = serde_json::json!({"command": "echo", "args": ["${NOMAD_ALLOC_ID}", "${env[\"NOMAD_ALLOC_ID\"]}", "${attr.x}", 3]});
        let out = interpolate_value(&v, &env, &node);
        assert_eq!(
            out,
            serde_json::json!({"command": "echo", "args": ["a1", "a1", "${attr.x}", 3]})
        );
        assert_eq!(
            interpolate("a ${unterminated", &env, &node),
            "a ${unterminated"
        );
    }
}
