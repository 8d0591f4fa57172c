//! Per-task cgroups for the `exec` driver.
//!
//! * **v2** when a unified hierarchy offers both the `memory` and `cpu`
//!   controllers: tasks live in `<mount>/atoll.slice/<alloc>.<task>` (a
//!   child of the root, like Nomad's `nomad.slice`, because v2 forbids
//!   processes in inner cgroups), with `memory.max`, `memory.swap.max = 0`
//!   and `cpu.weight`.
//! * **v1** otherwise, when the `memory` and `cpu` controllers are mounted:
//!   tasks live in `<controller mount>/<agent's own cgroup>/atoll/<alloc>.<task>`
//!   for each of the two controllers (nested under the agent's own cgroup, so
//!   the tasks stay inside whatever limits the agent itself runs under), with
//!   `memory.limit_in_bytes` (and a soft limit) and `cpu.shares`.
//!
//! The parent can be set explicitly (`cgroup_parent`, relative to each
//! hierarchy's mount point).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::procfs;
use super::TaskResources;

/// The cgroup hierarchy in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// The unified hierarchy, at this mount point.
    V2 {
        /// Mount point (e.g. `/sys/fs/cgroup`).
        mount: PathBuf,
    },
    /// Legacy per-controller hierarchies.
    V1 {
        /// Mount point of the memory controller.
        memory: PathBuf,
        /// Mount point of the cpu controller.
        cpu: PathBuf,
    },
}

/// A mount of `/proc/self/mountinfo`: (mount point, fs type, super options).
fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
}

/// Parses `/proc/self/mountinfo` into (mount point, fs type, super options).
pub fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String, String)> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?.to_string();
            let _source = r.next()?;
            let opts = r.next().unwrap_or("").to_string();
            Some((PathBuf::from(unescape(mount_point)), fstype, opts))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// Finds a usable hierarchy, or says why there is none.
pub fn detect() -> Result<CgroupMode, String> {
    detect_from(&mounts(), |p| std::fs::read_to_string(p).ok())
}

/// [`detect`] over given mounts, reading files with `read`.
pub fn detect_from(
    mounts: &[(PathBuf, String, String)],
    read: impl Fn(&Path) -> Option<String>,
) -> Result<CgroupMode, String> {
    for (mp, fstype, _) in mounts {
        if fstype == "cgroup2" {
            let ctrl = read(&mp.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| ctrl.split_whitespace().any(|x| x == c);
            if has("memory") && has("cpu") {
                return Ok(CgroupMode::V2 { mount: mp.clone() });
            }
        }
    }
    let v1 = |controller: &str| {
        mounts.iter().find_map(|(mp, fstype, opts)| {
            (fstype == "cgroup" && opts.split(',').any(|o| o == controller)).then(|| mp.clone())
        })
    };
    match (v1("memory"), v1("cpu")) {
        (Some(memory), Some(cpu)) => Ok(CgroupMode::V1 { memory, cpu }),
        _ => Err(
            "no cgroup hierarchy with the memory and cpu controllers (v2 unified hierarchy without them, and no v1 memory/cpu mounts)"
                .into(),
        ),
    }
}

/// This process's cgroup path in a v1 hierarchy holding `controller`, from
/// `/proc/self/cgroup` (`4:memory:/some/path`).
pub fn own_v1_path(proc_self_cgroup: &str, controller: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// Converts cgroup v1 `cpu.shares` to v2 `cpu.weight` (the kernel's and
/// runc's formula).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The cgroup (one directory per hierarchy) of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    /// The directories; the task's shim writes its pid into each
    /// `cgroup.procs`.
    pub dirs: Vec<PathBuf>,
    /// The memory controller's directory.
    pub memory_dir: PathBuf,
    /// The hierarchy kind.
    pub v2: bool,
}

impl CgroupMode {
    /// The parent directories (per hierarchy) for task cgroups.
    fn parents(&self, parent: Option<&str>) -> io::Result<Vec<PathBuf>> {
        match self {
            CgroupMode::V2 { mount } => {
                let rel = parent.unwrap_or("atoll.slice").trim_start_matches('/');
                let dir = mount.join(rel);
                std::fs::create_dir_all(&dir)?;
                // Delegate memory and cpu down to the tasks' cgroups.
                let mut chain = vec![mount.clone()];
                let mut cur = mount.clone();
                for comp in Path::new(rel).components() {
                    cur.push(comp);
                    chain.push(cur.clone());
                }
                chain.pop();
                chain.push(dir.clone());
                for d in chain {
                    let _ = std::fs::write(d.join("cgroup.subtree_control"), "+memory +cpu");
                }
                Ok(vec![dir])
            }
            CgroupMode::V1 { memory, cpu } => {
                let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let mut out = Vec::new();
                for (mp, ctrl) in [(memory, "memory"), (cpu, "cpu")] {
                    let rel = match parent {
                        Some(p) => p.trim_start_matches('/').to_string(),
                        None => {
                            let own = own_v1_path(&own, ctrl).unwrap_or_else(|| "/".into());
                            format!(
                                "{}/atoll",
                                own.trim_start_matches('/').trim_end_matches('/')
                            )
                        }
                    };
                    let dir = mp.join(rel.trim_start_matches('/'));
                    std::fs::create_dir_all(&dir)?;
                    out.push(dir);
                }
                Ok(out)
            }
        }
    }

    /// Creates a fresh cgroup `name` for a task with its limits. An old one of
    /// the same name is emptied and removed first.
    pub fn create(
        &self,
        parent: Option<&str>,
        name: &str,
        res: &TaskResources,
    ) -> io::Result<TaskCgroup> {
        let parents = self.parents(parent)?;
        let dirs: Vec<PathBuf> = parents.iter().map(|p| p.join(name)).collect();
        for d in &dirs {
            if d.exists() {
                destroy_dir(d);
            }
            std::fs::create_dir_all(d)?;
        }
        let memory_mb = res.memory_mb.max(1) as u64;
        let hard_mb = if res.memory_max_mb > res.memory_mb {
            res.memory_max_mb as u64
        } else {
            memory_mb
        };
        let hard = hard_mb * 1024 * 1024;
        let shares = res.cpu_mhz.max(2) as u64;
        match self {
            CgroupMode::V2 { .. } => {
                let d = &dirs[0];
                std::fs::write(d.join("memory.max"), hard.to_string())?;
                if hard_mb > memory_mb {
                    let _ =
                        std::fs::write(d.join("memory.low"), (memory_mb * 1024 * 1024).to_string());
                }
                let _ = std::fs::write(d.join("memory.swap.max"), "0");
                std::fs::write(d.join("cpu.weight"), shares_to_weight(shares).to_string())?;
                Ok(TaskCgroup {
                    memory_dir: d.clone(),
                    dirs,
                    v2: true,
                })
            }
            CgroupMode::V1 { .. } => {
                let (mem, cpu) = (&dirs[0], &dirs[1]);
                std::fs::write(mem.join("memory.limit_in_bytes"), hard.to_string())?;
                // Without swap accounting this file is absent; with it, no swapping past the limit.
                let _ = std::fs::write(mem.join("memory.memsw.limit_in_bytes"), hard.to_string());
                if hard_mb > memory_mb {
                    let _ = std::fs::write(
                        mem.join("memory.soft_limit_in_bytes"),
                        (memory_mb * 1024 * 1024).to_string(),
                    );
                }
                std::fs::write(cpu.join("cpu.shares"), shares.to_string())?;
                Ok(TaskCgroup {
                    memory_dir: mem.clone(),
                    dirs,
                    v2: false,
                })
            }
        }
    }
}

/// How many times the OOM killer killed a process of the cgroup whose memory
/// directory is `dir` (v2 `memory.events`, v1 `memory.oom_control`).
pub fn oom_kills(dir: &Path) -> u64 {
    let field = |file: &str, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    field("memory.events", "oom_kill")
        .or_else(|| field("memory.oom_control", "oom_kill"))
        .unwrap_or(0)
}

/// Memory charged to the cgroup, bytes.
pub fn memory_usage(dir: &Path) -> Option<u64> {
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Kills every process of a cgroup directory.
pub fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..10 {
        let pids = procfs::cgroup_pids(dir);
        if pids.is_empty() {
            return;
        }
        for p in pids {
            let _ = procfs::kill_pid(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Empties and removes a cgroup directory (best effort).
pub fn destroy_dir(dir: &Path) {
    kill_all(dir);
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!(dir = %dir.display(), "could not remove cgroup");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    #[test]
    fn detects_v1_when_unified_has_no_controllers() {
        let m = parse_mountinfo(MOUNTINFO_V1);
        let mode = detect_from(&m, |_| Some("hugetlb\n".into())).unwrap();
        assert_eq!(
            mode,
            CgroupMode::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into()
            }
        );
    }

    #[test]
    fn detects_v2_with_controllers() {
        let m = parse_mountinfo(
            "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let mode = detect_from(&m, |_| Some("cpuset cpu io memory pids\n".into())).unwrap();
        assert_eq!(
            mode,
            CgroupMode::V2 {
                mount: "/sys/fs/cgroup".into()
            }
        );
        assert!(detect_from(&m, |_| Some("pids\n".into())).is_err());
    }

    #[test]
    fn own_path_and_weights() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(
            own_v1_path(text, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_v1_path(text, "cpu").as_deref(), Some("/x"));
        assert_eq!(own_v1_path(text, "pids"), None);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn oom_counters() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(oom_kills(d.path()), 0);
        std::fs::write(
            d.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(oom_kills(d.path()), 2);
        std::fs::write(
            d.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(oom_kills(d.path()), 1);
    }
}
