//! Whether a job change can be applied to running allocations in place or
//! needs them replaced (Nomad's `tasksUpdated`).

use std::collections::BTreeMap;

use proto::model::{Affinity, Job, Spread, Task};

/// Whether moving group `group` from `old` to `new` needs its allocations
/// replaced (a destructive update). Changes of anything a running task was
/// started with are destructive: the set of tasks, drivers, users, driver
/// config, environment, artifacts, templates, vault, volume mounts, the
/// combined job/group/task meta, resources (CPU, cores, memory, networks,
/// devices), lifecycle, group networks, ephemeral disk, volumes, affinities
/// and spreads. Everything else (count, constraints, restart, reschedule,
/// update and migrate policies, services, kill timeout, log config, ...) is
/// applied in place.
pub fn tasks_updated(new: &Job, old: &Job, group: &str) -> bool {
    let (Some(a), Some(b)) = (new.task_group(group), old.task_group(group)) else {
        return true;
    };
    if a.tasks.len() != b.tasks.len()
        || a.ephemeral_disk != b.ephemeral_disk
        || a.networks != b.networks
        || a.volumes != b.volumes
        || combined_affinities(new, group) != combined_affinities(old, group)
        || combined_spreads(new, group) != combined_spreads(old, group)
    {
        return true;
    }
    let render = |job: &Job| {
        job.task_group(group)
            .and_then(|g| g.restart_policy.as_ref())
            .map(|p| p.render_templates)
    };
    if render(new) != render(old) {
        return true;
    }
    for at in &a.tasks {
        let Some(bt) = b.tasks.iter().find(|t| t.name == at.name) else {
            return true;
        };
        if task_updated(at, bt) || combined_meta(new, group, at) != combined_meta(old, group, bt) {
            return true;
        }
    }
    false
}

fn task_updated(a: &Task, b: &Task) -> bool {
    a.driver != b.driver
        || a.user != b.user
        || a.config != b.config
        || a.env != b.env
        || a.artifacts != b.artifacts
        || a.vault != b.vault
        || a.templates != b.templates
        || a.volume_mounts != b.volume_mounts
        || a.dispatch_payload != b.dispatch_payload
        || a.lifecycle != b.lifecycle
        || a.resources.cpu != b.resources.cpu
        || a.resources.cores != b.resources.cores
        || a.resources.memory_mb != b.resources.memory_mb
        || a.resources.memory_max_mb != b.resources.memory_max_mb
        || a.resources.networks != b.resources.networks
        || a.resources.devices != b.resources.devices
}

fn combined_meta(job: &Job, group: &str, task: &Task) -> BTreeMap<String, String> {
    let mut meta = job.meta.clone();
    if let Some(group) = job.task_group(group) {
        meta.extend(group.meta.clone());
    }
    meta.extend(task.meta.clone());
    meta
}

fn combined_affinities<'a>(job: &'a Job, group: &str) -> Vec<&'a Affinity> {
    let mut out: Vec<&Affinity> = job.affinities.iter().collect();
    if let Some(group) = job.task_group(group) {
        out.extend(group.affinities.iter());
        out.extend(group.tasks.iter().flat_map(|t| t.affinities.iter()));
    }
    out
}

fn combined_spreads<'a>(job: &'a Job, group: &str) -> Vec<&'a Spread> {
    let mut out: Vec<&Spread> = job.spreads.iter().collect();
    if let Some(group) = job.task_group(group) {
        out.extend(group.spreads.iter());
    }
    out
}
