//! Process supervision shared by `raw_exec` and `exec`.
//!
//! Every task runs under a small `/bin/sh` shim, started in a new session
//! (so the task has its own process group, and the group id is the shim's
//! pid):
//!
//! ```sh
//! exit_file=$1; exec 3<>"$2" 4<>"$3"; shift 3
//! trap : HUP INT QUIT USR1 USR2 ALRM TERM
//! "$@" 3<&- 4<&-
//! rc=$?; echo "$rc" > "$exit_file"; exit "$rc"
//! ```
//!
//! * Signals are sent to the whole group, so the task gets them directly;
//!   the shim only defers them (a trap, not an ignore, so the task still gets
//!   default dispositions) and survives to record the task's exit status.
//! * It records the exit status in a file, so an agent that re-attaches
//!   after a restart (the task is then not its child) still learns it.
//! * It holds the log FIFOs open (fds 3 and 4, closed for the task), so the
//!   task's writes never fail while the agent is down.
//!
//! `exec` adds, in the forked child before `exec` of the shim: joining the
//! task's cgroups, and `unshare(CLONE_NEWPID | CLONE_NEWNS)` with `/` made
//! recursively private. Since a new PID namespace only applies to children,
//! the shim's child — a second `sh` — is PID 1 of the namespace: it mounts a
//! fresh `/proc` (so the task sees only its own processes) and runs the task
//! as its child, trapping signals the same way. PID 1 only receives signals it
//! handles, so the task being PID 2 keeps `SIGINT` & co. working; and when
//! PID 1 exits the kernel kills everything left in the namespace, so no
//! orphan survives (this is `unshare --pid --fork --mount-proc`, with a
//! signal-friendly init).
//!
//! Stopping: the kill signal to the group, then after the kill timeout
//! `SIGKILL` to the group (and, for `exec`, to every process of the cgroup).
//! When the shim exits, whatever is left of its group is killed.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::cgroup::{self, TaskCgroup};
use super::procfs;
use super::{DriverError, ExitResult, TaskConfig, TaskHandle, TaskUsage};
use crate::util::{lock, now_ns, Tasks};

const TRAPPED: &str = "HUP INT QUIT USR1 USR2 ALRM TERM";

fn raw_script() -> String {
    format!(
        "exit_file=$1; exec 3<>\"$2\" 4<>\"$3\"; shift 3\n\
         trap : {TRAPPED}\n\
         \"$@\" 3<&- 4<&-\n\
         rc=$?\n\
         echo \"$rc\" > \"$exit_file\"\n\
         exit \"$rc\"\n"
    )
}

fn ns_script() -> String {
    format!(
        "exit_file=$1; exec 3<>\"$2\" 4<>\"$3\"; shift 3\n\
         trap : {TRAPPED}\n\
         /bin/sh -c 'trap : {TRAPPED}; mount -t proc -o nosuid,nodev,noexec proc /proc >/dev/null 2>&1; \"$@\"; exit $?' atoll-init \"$@\" 3<&- 4<&-\n\
         rc=$?\n\
         echo \"$rc\" > \"$exit_file\"\n\
         exit \"$rc\"\n"
    )
}

/// Isolation for `exec`.
pub(crate) struct Isolation {
    pub cgroup: TaskCgroup,
}

struct Proc {
    handle: TaskHandle,
    exit: watch::Sender<Option<ExitResult>>,
    oom_dir: Option<PathBuf>,
}

/// The running processes of one driver.
pub(crate) struct Supervisor {
    driver: String,
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    tasks: Tasks,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Looks `cmd` up like a shell would, in `path`.
fn find_executable(cmd: &str, cwd: &Path, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.contains('/') {
        let p = if Path::new(cmd).is_absolute() {
            PathBuf::from(cmd)
        } else {
            cwd.join(cmd)
        };
        return is_exec(&p).then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(cmd))
        .find(|p| is_exec(p))
}

/// uid and gid of a user name.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r with a buffer we own.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// Writes this process's pid into an open-able file (a `cgroup.procs`).
/// Async-signal-safe: runs between fork and exec.
unsafe fn write_own_pid(path: &CString) -> std::io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 16];
    let mut n = libc::getpid() as u32;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let r = libc::write(fd, buf[i..].as_ptr() as *const libc::c_void, buf.len() - i);
    let err = std::io::Error::last_os_error();
    libc::close(fd);
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

impl Supervisor {
    pub fn new(driver: &str) -> Self {
        Self {
            driver: driver.to_string(),
            procs: Mutex::default(),
            tasks: Tasks::default(),
        }
    }

    /// Starts `cfg`'s command under the shim.
    pub async fn spawn(
        &self,
        cfg: &TaskConfig,
        isolation: Option<Isolation>,
    ) -> Result<TaskHandle, DriverError> {
        let command = cfg
            .config
            .get("command")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| DriverError::BadConfig("missing `command`".into()))?
            .to_string();
        let args: Vec<String> = match cfg.config.get("args") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(_) => return Err(DriverError::BadConfig("`args` must be a list".into())),
        };
        let dirs = cfg
            .dirs
            .as_ref()
            .ok_or_else(|| DriverError::Other("task has no directories".into()))?;
        std::fs::create_dir_all(&dirs.local)
            .map_err(|e| DriverError::Other(format!("creating {}: {e}", dirs.local.display())))?;
        let exit_file = dirs.task.join(".exit_status");
        let _ = std::fs::remove_file(&exit_file);

        let mut env = cfg.env.clone();
        if !env.contains_key("PATH") {
            env.insert(
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into()),
            );
        }
        if find_executable(&command, &dirs.local, &env["PATH"]).is_none() {
            return Err(DriverError::Start {
                message: format!("failed to launch command: executable file {command:?} not found"),
                recoverable: true,
            });
        }

        let mut argv: Vec<OsString> = vec![
            "-c".into(),
            if isolation.is_some() {
                ns_script()
            } else {
                raw_script()
            }
            .into(),
            "atoll-shim".into(),
            exit_file.clone().into_os_string(),
            cfg.stdout
                .clone()
                .unwrap_or_else(|| "/dev/null".into())
                .into_os_string(),
            cfg.stderr
                .clone()
                .unwrap_or_else(|| "/dev/null".into())
                .into_os_string(),
        ];
        if !cfg.user.is_empty() {
            let (uid, gid) = lookup_user(&cfg.user).ok_or_else(|| DriverError::Start {
                message: format!("unknown user {:?}", cfg.user),
                recoverable: false,
            })?;
            let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .ok_or_else(|| DriverError::Start {
                    message: "running as another user needs setpriv(1)".into(),
                    recoverable: false,
                })?;
            argv.push(setpriv.into());
            argv.push(format!("--reuid={uid}").into());
            argv.push(format!("--regid={gid}").into());
            argv.push("--clear-groups".into());
            argv.push("--".into());
        }
        argv.push(command.into());
        argv.extend(args.into_iter().map(OsString::from));

        let open_out = |p: &Option<PathBuf>| -> Result<Stdio, DriverError> {
            match p {
                None => Ok(Stdio::null()),
                Some(p) => crate::logs::open_fifo_writer(p)
                    .map(Stdio::from)
                    .map_err(|e| DriverError::Other(format!("opening {}: {e}", p.display()))),
            }
        };

        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(&argv)
            .env_clear()
            .envs(&env)
            .current_dir(&dirs.local)
            .stdin(Stdio::null())
            .stdout(open_out(&cfg.stdout)?)
            .stderr(open_out(&cfg.stderr)?)
            .kill_on_drop(false);

        let cgroup_files: Vec<CString> = isolation
            .as_ref()
            .map(|i| {
                i.cgroup
                    .dirs
                    .iter()
                    .filter_map(|d| {
                        CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let namespaces = isolation.is_some();
        let root = CString::new("/").expect("no NUL");
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (setsid, open, write, close, unshare,
        // mount) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for f in &cgroup_files {
                    write_own_pid(f)?;
                }
                if namespaces {
                    if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| DriverError::Start {
            message: format!("failed to start task: {e}"),
            recoverable: true,
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let start_ticks = procfs::stat(pid).map(|s| s.start_time).unwrap_or(0);
        let handle = TaskHandle {
            driver: self.driver.clone(),
            task_id: cfg.id.clone(),
            pid,
            pgid: pid,
            start_ticks,
            started_at: now_ns(),
            exit_file: Some(exit_file),
            cgroups: isolation
                .as_ref()
                .map(|i| i.cgroup.dirs.clone())
                .unwrap_or_default(),
            state: serde_json::json!({
                "oom_dir": isolation.as_ref().map(|i| i.cgroup.memory_dir.clone()),
            }),
        };
        let proc = self.register(&handle);
        self.tasks.spawn(async move {
            let status = child.wait().await;
            let result = match status {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (st.code(), st.signal()) {
                        (Some(c), _) => ExitResult::from_code(c as i64),
                        (None, Some(s)) => ExitResult::from_signal(s as i64),
                        _ => ExitResult::unknown("no exit status"),
                    }
                }
                Err(e) => ExitResult::unknown(format!("waiting for the task: {e}")),
            };
            finish(&proc, result);
        });
        Ok(handle)
    }

    fn register(&self, handle: &TaskHandle) -> Arc<Proc> {
        let (tx, _) = watch::channel(None);
        let oom_dir = handle
            .state
            .get("oom_dir")
            .and_then(|v| v.as_str())
            .map(PathBuf::from);
        let proc = Arc::new(Proc {
            handle: handle.clone(),
            exit: tx,
            oom_dir,
        });
        lock(&self.procs).insert(handle.task_id.clone(), proc.clone());
        proc
    }

    fn get(&self, handle: &TaskHandle) -> Option<Arc<Proc>> {
        lock(&self.procs)
            .get(&handle.task_id)
            .filter(|p| p.handle.pid == handle.pid && p.handle.start_ticks == handle.start_ticks)
            .cloned()
    }

    /// Re-attaches to a task of an earlier agent: watches its pid by polling
    /// `/proc` (it is not our child), and reads its exit status from the
    /// shim's file once it is gone.
    pub fn recover(&self, handle: &TaskHandle) -> Result<(), DriverError> {
        if self.get(handle).is_some() {
            return Ok(());
        }
        if handle.pid <= 0 {
            return Err(DriverError::NotFound);
        }
        let proc = self.register(handle);
        self.tasks.spawn(async move {
            let h = &proc.handle;
            while procfs::alive(h.pid, h.start_ticks) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let result = read_exit_file(h.exit_file.as_deref()).unwrap_or_else(|| {
                ExitResult::unknown(
                    "the task exited while the agent was not running and its exit status is unknown",
                )
            });
            finish(&proc, result);
        });
        Ok(())
    }

    pub async fn wait(&self, handle: &TaskHandle) -> ExitResult {
        let Some(proc) = self.get(handle) else {
            return ExitResult::unknown("task not found");
        };
        let mut rx = proc.exit.subscribe();
        let result = match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        result.unwrap_or_else(|| ExitResult::unknown("driver stopped"))
    }

    fn exited(&self, handle: &TaskHandle) -> bool {
        match self.get(handle) {
            Some(p) => p.exit.borrow().is_some(),
            None => !procfs::alive(handle.pid, handle.start_ticks),
        }
    }

    pub fn signal(&self, handle: &TaskHandle, sig: i32) -> Result<(), DriverError> {
        if self.exited(handle) || !procfs::alive(handle.pid, handle.start_ticks) {
            return Ok(());
        }
        procfs::kill_group(handle.pgid, sig).map_err(|e| DriverError::Other(e.to_string()))
    }

    pub async fn stop(
        &self,
        handle: &TaskHandle,
        sig: i32,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        if self.get(handle).is_none() {
            // Not watched (should not happen): act on the group directly.
            if procfs::alive(handle.pid, handle.start_ticks) {
                let _ = procfs::kill_group(handle.pgid, libc::SIGKILL);
            }
            kill_cgroups(handle);
            return Ok(());
        }
        self.signal(handle, sig)?;
        if tokio::time::timeout(timeout, self.wait(handle))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::debug!(task = %handle.task_id, "kill timeout passed, sending SIGKILL");
        if procfs::alive(handle.pid, handle.start_ticks) {
            let _ = procfs::kill_group(handle.pgid, libc::SIGKILL);
        }
        kill_cgroups(handle);
        match tokio::time::timeout(Duration::from_secs(10), self.wait(handle)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(DriverError::Other(format!(
                "task {} did not exit after SIGKILL",
                handle.task_id
            ))),
        }
    }

    pub fn destroy(&self, handle: &TaskHandle) {
        let mut procs = lock(&self.procs);
        if procs
            .get(&handle.task_id)
            .is_some_and(|p| p.handle.pid == handle.pid)
        {
            procs.remove(&handle.task_id);
        }
        drop(procs);
        for d in &handle.cgroups {
            cgroup::destroy_dir(d);
        }
    }

    pub fn stats(&self, handle: &TaskHandle) -> Option<TaskUsage> {
        if !procfs::alive(handle.pid, handle.start_ticks) {
            return None;
        }
        let members: Vec<procfs::ProcStat> = if handle.cgroups.is_empty() {
            procfs::group_members(handle.pgid)
        } else {
            let mut pids: Vec<i32> = handle
                .cgroups
                .iter()
                .flat_map(|d| procfs::cgroup_pids(d))
                .collect();
            pids.sort_unstable();
            pids.dedup();
            pids.into_iter().filter_map(procfs::stat).collect()
        };
        let ticks = procfs::clock_ticks() as f64;
        let page = procfs::page_size();
        let mut usage = TaskUsage::default();
        for m in &members {
            usage.rss_bytes += m.rss_pages.max(0) as u64 * page;
            usage.cpu_seconds += (m.utime + m.stime) as f64 / ticks;
            usage.pids.push(m.pid);
        }
        if let Some(dir) = handle.cgroups.first() {
            if let Some(bytes) = cgroup::memory_usage(dir) {
                usage.rss_bytes = usage.rss_bytes.max(bytes);
            }
        }
        Some(usage)
    }

    pub fn detach_all(&self) {
        self.tasks.abort_all();
        lock(&self.procs).clear();
    }
}

fn kill_cgroups(handle: &TaskHandle) {
    for d in &handle.cgroups {
        cgroup::kill_all(d);
    }
}

fn read_exit_file(path: Option<&Path>) -> Option<ExitResult> {
    let text = std::fs::read_to_string(path?).ok()?;
    let code: i64 = text.trim().parse().ok()?;
    Some(ExitResult::from_code(code))
}

fn finish(proc: &Proc, mut result: ExitResult) {
    let h = &proc.handle;
    if let Some(dir) = &proc.oom_dir {
        if cgroup::oom_kills(dir) > 0 {
            result.oom_killed = true;
            if result.err.is_none() {
                result.err = Some("OOM Killed".into());
            }
        }
    }
    // What is left of the task's process group (or cgroup) goes with it.
    if h.pgid > 1 {
        let _ = procfs::kill_group(h.pgid, libc::SIGKILL);
    }
    kill_cgroups(h);
    let _ = proc.exit.send_replace(Some(result));
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
