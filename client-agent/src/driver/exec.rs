//! `exec`: `raw_exec` plus isolation — a per-task cgroup (memory limit from
//! `MemoryMB`, or `MemoryMaxMB` when larger; CPU shares/weight from `CPU`)
//! and new PID and mount namespaces (see [`super::shim`] for how). A task
//! killed by the OOM killer is reported as such.
//!
//! Unlike Nomad's `exec`, there is no chroot: the task sees the host's
//! filesystem (with its own `/proc`), and runs as the agent's user unless the
//! task names a `user`.
//!
//! The driver needs root, cgroups with the memory and cpu controllers, and
//! the right to create namespaces; without them it fingerprints as detected
//! but unhealthy, with the reason, and refuses to start tasks.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::cgroup::{self, CgroupMode};
use super::shim::{Isolation, Supervisor};
use super::{
    Driver, DriverError, DriverFingerprint, ExitResult, TaskConfig, TaskHandle, TaskUsage,
};

/// The driver's name.
pub const NAME: &str = "exec";

/// The `exec` driver.
pub struct ExecDriver {
    sup: Supervisor,
    mode: Result<CgroupMode, String>,
    parent: Option<String>,
    fingerprint: DriverFingerprint,
}

/// Whether this process may create PID and mount namespaces: runs
/// `/bin/sh -c true` in new ones.
fn probe_namespaces() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only the unshare syscall runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("namespace probe exited with {s}")),
        Err(e) => Err(format!("cannot create pid/mount namespaces: {e}")),
    }
}

impl ExecDriver {
    /// Fingerprints the host. `cgroup_parent` overrides where task cgroups go
    /// (relative to each hierarchy's mount point).
    pub fn new(cgroup_parent: Option<String>) -> Self {
        let mode = cgroup::detect();
        let fingerprint = (|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return DriverFingerprint::unhealthy("exec driver must run as root");
            }
            let mode = match &mode {
                Ok(m) => m,
                Err(e) => return DriverFingerprint::unhealthy(e.clone()),
            };
            if let Err(e) = probe_namespaces() {
                return DriverFingerprint::unhealthy(e);
            }
            let mut f = DriverFingerprint::healthy();
            f.attributes.insert(
                "cgroup".into(),
                match mode {
                    CgroupMode::V2 { .. } => "v2".into(),
                    CgroupMode::V1 { .. } => "v1".into(),
                },
            );
            f
        })();
        Self {
            sup: Supervisor::new(NAME),
            mode,
            parent: cgroup_parent,
            fingerprint,
        }
    }

    async fn start_task(&self, cfg: &TaskConfig) -> Result<TaskHandle, DriverError> {
        if !self.fingerprint.healthy {
            return Err(DriverError::Unhealthy {
                driver: NAME.into(),
                reason: self.fingerprint.description.clone(),
            });
        }
        let mode = self.mode.as_ref().map_err(|e| DriverError::Unhealthy {
            driver: NAME.into(),
            reason: e.clone(),
        })?;
        let name: String = format!("{}.{}", cfg.alloc_id, cfg.task_name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cg = mode
            .create(self.parent.as_deref(), &name, &cfg.resources)
            .map_err(|e| DriverError::Start {
                message: format!("creating the task's cgroup: {e}"),
                recoverable: true,
            })?;
        match self
            .sup
            .spawn(cfg, Some(Isolation { cgroup: cg.clone() }))
            .await
        {
            Ok(h) => Ok(h),
            Err(e) => {
                for d in &cg.dirs {
                    cgroup::destroy_dir(d);
                }
                Err(e)
            }
        }
    }
}

impl Driver for ExecDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn fingerprint(&self) -> DriverFingerprint {
        self.fingerprint.clone()
    }

    fn start<'a>(&'a self, cfg: &'a TaskConfig) -> BoxFuture<'a, Result<TaskHandle, DriverError>> {
        self.start_task(cfg).boxed()
    }

    fn recover<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, Result<(), DriverError>> {
        async move { self.sup.recover(handle) }.boxed()
    }

    fn wait<'a>(&'a self, handle: &'a TaskHandle) -> BoxFuture<'a, ExitResult> {
        self.sup.wait(handle).boxed()
    }

    fn signal(&self, handle: &TaskHandle, signal: i32) -> Result<(), DriverError> {
        self.sup.signal(handle, signal)
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TaskHandle,
        signal: i32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        self.sup.stop(handle, signal, timeout).boxed()
    }

    fn destroy(&self, handle: &TaskHandle) {
        self.sup.destroy(handle)
    }

    fn stats(&self, handle: &TaskHandle) -> Option<TaskUsage> {
        self.sup.stats(handle)
    }

    fn detach_all(&self) {
        self.sup.detach_all()
    }
}
