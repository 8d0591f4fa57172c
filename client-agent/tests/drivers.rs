//! Drivers running real processes (and the mock driver).

use std::path::Path;
use std::time::{Duration, Instant};

use client_agent::allocdir::{AllocDir, TaskDirs};
use client_agent::driver::exec::ExecDriver;
use client_agent::driver::mock::MockDriver;
use client_agent::driver::procfs;
use client_agent::driver::raw_exec::RawExecDriver;
use client_agent::driver::{Driver, DriverError, TaskConfig, TaskResources};
use client_agent::logs::LogPumps;
use proto::model::LogConfig;
use serde_json::json;

struct Task {
    _base: tempfile::TempDir,
    dirs: TaskDirs,
    pumps: Option<LogPumps>,
    cfg: TaskConfig,
}

fn task(name: &str, config: serde_json::Value) -> Task {
    let base = tempfile::tempdir().unwrap();
    let alloc_id = uuid::Uuid::new_v4().to_string();
    let ad = AllocDir::new(base.path(), &alloc_id);
    let dirs = ad.build_task(name, None).unwrap();
    let pumps = LogPumps::start(&dirs.logs, name, &LogConfig::default()).unwrap();
    let cfg = TaskConfig {
        id: format!("{alloc_id}/{name}"),
        alloc_id,
        task_name: name.into(),
        config: config.as_object().cloned().unwrap_or_default(),
        env: [("GREETING".to_string(), "hello".to_string())]
            .into_iter()
            .collect(),
        user: String::new(),
        dirs: Some(dirs.clone()),
        resources: TaskResources {
            cpu_mhz: 100,
            memory_mb: 64,
            memory_max_mb: 0,
        },
        stdout: Some(pumps.stdout_fifo.clone()),
        stderr: Some(pumps.stderr_fifo.clone()),
    };
    Task {
        _base: base,
        dirs,
        pumps: Some(pumps),
        cfg,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test]
async fn raw_exec_runs_and_logs() {
    let d = RawExecDriver::new();
    assert!(d.fingerprint().healthy);
    let mut t = task(
        "web",
        json!({"command": "/bin/sh", "args": ["-c", "echo hi; echo $GREETING; pwd; echo oops >&2; sleep 0.2"]}),
    );
    let h = d.start(&t.cfg).await.unwrap();
    assert!(h.pid > 0);
    assert_eq!(h.pgid, h.pid, "the task leads its own process group");
    assert!(procfs::alive(h.pid, h.start_ticks));
    let exit = tokio::time::timeout(Duration::from_secs(10), d.wait(&h))
        .await
        .unwrap();
    assert!(exit.successful(), "{exit:?}");
    d.destroy(&h);
    t.pumps.take().unwrap().finish().await;
    let out = read(&t.dirs.logs.join("web.stdout.0"));
    assert_eq!(
        out,
        format!("hi\nhello\n{}\n", t.dirs.local.display()),
        "stdout goes to the rotated log, the task runs in local/"
    );
    assert_eq!(read(&t.dirs.logs.join("web.stderr.0")), "oops\n");
}

#[tokio::test]
async fn raw_exec_exit_codes_and_missing_command() {
    let d = RawExecDriver::new();
    let t = task("t", json!({"command": "/bin/sh", "args": ["-c", "exit 3"]}));
    let h = d.start(&t.cfg).await.unwrap();
    let exit = d.wait(&h).await;
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, 0);
    assert!(!exit.successful());

    let t = task("t", json!({"command": "definitely-not-a-command-xyz"}));
    match d.start(&t.cfg).await {
        Err(DriverError::Start { message, .. }) => {
            assert!(message.contains("not found"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let t = task("t", json!({"args": ["x"]}));
    assert!(matches!(
        d.start(&t.cfg).await,
        Err(DriverError::BadConfig(_))
    ));
}

#[tokio::test]
async fn stop_kills_the_whole_process_tree() {
    let d = RawExecDriver::new();
    let t = task(
        "tree",
        json!({"command": "/bin/sh", "args": ["-c", "sleep 100 & sleep 100"]}),
    );
    let h = d.start(&t.cfg).await.unwrap();
    // Wait for the tree: shim, sh, two sleeps.
    let deadline = Instant::now() + Duration::from_secs(5);
    let members = loop {
        let m = procfs::group_members(h.pgid);
        if m.len() >= 4 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(members.len() >= 4, "{members:?}");
    // The background sleep ignores SIGINT (non-interactive shells do that to
    // background jobs): only the SIGKILL after the kill timeout gets it.
    let started = Instant::now();
    d.stop(&h, libc::SIGINT, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let exit = d.wait(&h).await;
    assert!(!exit.successful());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for m in &members {
        assert!(
            !procfs::alive(m.pid, m.start_time),
            "process {} survived the stop",
            m.pid
        );
    }
    assert!(procfs::group_members(h.pgid).is_empty());
    d.destroy(&h);
}

#[tokio::test]
async fn kill_timeout_escalates_to_sigkill() {
    let d = RawExecDriver::new();
    let t = task(
        "stubborn",
        json!({"command": "/bin/sh", "args": ["-c", "trap '' INT; echo ready; while true; do sleep 0.1; done"]}),
    );
    let h = d.start(&t.cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    d.stop(&h, libc::SIGINT, Duration::from_millis(700))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "stopped after {took:?}, before the kill timeout"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let exit = d.wait(&h).await;
    assert_eq!(exit.signal, libc::SIGKILL as i64, "{exit:?}");
    assert_eq!(exit.exit_code, 128 + libc::SIGKILL as i64);
    assert!(procfs::group_members(h.pgid).is_empty());
}

#[tokio::test]
async fn sigint_stops_a_well_behaved_task_quickly() {
    let d = RawExecDriver::new();
    let t = task("nice", json!({"command": "sleep", "args": ["100"]}));
    let h = d.start(&t.cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    d.stop(&h, libc::SIGINT, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let exit = d.wait(&h).await;
    assert_eq!(exit.signal, libc::SIGINT as i64, "{exit:?}");
}

#[tokio::test]
async fn signal_reaches_the_task() {
    let d = RawExecDriver::new();
    let mut t = task(
        "sig",
        json!({"command": "/bin/sh", "args": ["-c", "trap 'echo got-hup' HUP; echo ready; while true; do sleep 0.05; done"]}),
    );
    let h = d.start(&t.cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.signal(&h, libc::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.stop(&h, libc::SIGTERM, Duration::from_secs(2))
        .await
        .unwrap();
    t.pumps.take().unwrap().finish().await;
    let out = read(&t.dirs.logs.join("sig.stdout.0"));
    assert!(out.contains("got-hup"), "{out:?}");
}

#[tokio::test]
async fn recover_reattaches_and_reads_the_exit_status() {
    // A first driver starts the task; a second one (as after an agent
    // restart) re-attaches from the handle alone.
    let first = RawExecDriver::new();
    let t = task(
        "re",
        json!({"command": "/bin/sh", "args": ["-c", "sleep 0.5; exit 7"]}),
    );
    let h = first.start(&t.cfg).await.unwrap();
    first.detach_all();
    drop(first);
    let second = RawExecDriver::new();
    second.recover(&h).await.unwrap();
    assert!(procfs::alive(h.pid, h.start_ticks));
    let exit = tokio::time::timeout(Duration::from_secs(10), second.wait(&h))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 7, "{exit:?}");

    // A pid whose start time does not match is not the task.
    let mut fake = h.clone();
    fake.pid = std::process::id() as i32;
    fake.pgid = fake.pid;
    fake.start_ticks = 1;
    fake.exit_file = None;
    fake.task_id = "other".into();
    let third = RawExecDriver::new();
    third.recover(&fake).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), third.wait(&fake))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, -1, "unknown exit: {exit:?}");
    assert!(exit.err.is_some());
}

#[tokio::test]
async fn exec_isolates_and_oom_kills() {
    let d = ExecDriver::new(None);
    let fp = d.fingerprint();
    if !fp.healthy {
        eprintln!("SKIPPED: driver.exec is unhealthy here: {}", fp.description);
        let t = task("x", json!({"command": "true"}));
        assert!(matches!(
            d.start(&t.cfg).await,
            Err(DriverError::Unhealthy { .. })
        ));
        return;
    }
    // Its own PID namespace (a small pid, a /proc of its own) and cgroup.
    let mut t = task(
        "iso",
        json!({"command": "/bin/sh", "args": ["-c", "echo pid=$$; ls /proc | grep -c '^[0-9]'; cat /proc/self/cgroup"]}),
    );
    let h = d.start(&t.cfg).await.unwrap();
    assert!(!h.cgroups.is_empty());
    let limit = std::fs::read_to_string(h.cgroups[0].join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(h.cgroups[0].join("memory.max")))
        .unwrap();
    assert_eq!(limit.trim(), (64u64 * 1024 * 1024).to_string());
    let exit = tokio::time::timeout(Duration::from_secs(10), d.wait(&h))
        .await
        .unwrap();
    assert!(exit.successful(), "{exit:?}");
    d.destroy(&h);
    assert!(!h.cgroups[0].exists(), "cgroup removed");
    t.pumps.take().unwrap().finish().await;
    let out = read(&t.dirs.logs.join("iso.stdout.0"));
    let mut lines = out.lines();
    let pid: i32 = lines
        .next()
        .and_then(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        pid < 10,
        "task pid {pid} is not from a fresh namespace: {out}"
    );
    let visible: usize = lines.next().and_then(|l| l.trim().parse().ok()).unwrap();
    assert!(visible < 10, "{visible} processes visible: {out}");
    assert!(
        out.contains(&t.cfg.alloc_id),
        "task not in its cgroup: {out}"
    );

    // Allocating beyond MemoryMB gets the task OOM-killed, and reported so.
    let mut t = task("hog", json!({"command": "tail", "args": ["/dev/zero"]}));
    t.cfg.resources.memory_mb = 32;
    let h = d.start(&t.cfg).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), d.wait(&h))
        .await
        .expect("the memory hog was not killed");
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.signal, libc::SIGKILL as i64, "{exit:?}");
    assert_eq!(exit.err.as_deref(), Some("OOM Killed"));
    d.destroy(&h);
}

#[tokio::test]
async fn exec_stop_leaves_no_orphan() {
    let d = ExecDriver::new(None);
    if !d.fingerprint().healthy {
        eprintln!(
            "SKIPPED: driver.exec is unhealthy here: {}",
            d.fingerprint().description
        );
        return;
    }
    let t = task(
        "tree",
        json!({"command": "/bin/sh", "args": ["-c", "setsid sleep 100 & sleep 100"]}),
    );
    let h = d.start(&t.cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let in_cgroup: Vec<procfs::ProcStat> = procfs::cgroup_pids(&h.cgroups[0])
        .into_iter()
        .filter_map(procfs::stat)
        .collect();
    assert!(in_cgroup.len() >= 4, "{in_cgroup:?}");
    d.stop(&h, libc::SIGINT, Duration::from_millis(500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for p in &in_cgroup {
        assert!(
            !procfs::alive(p.pid, p.start_time),
            "pid {} survived",
            p.pid
        );
    }
    d.destroy(&h);
}

#[tokio::test]
async fn mock_driver_behaviours() {
    let d = MockDriver::new();
    let cfg = |config: serde_json::Value| TaskConfig {
        id: format!("{}/t", uuid::Uuid::new_v4()),
        config: config.as_object().cloned().unwrap(),
        ..Default::default()
    };
    // run_for + exit_code.
    let c = cfg(json!({"run_for": "100ms", "exit_code": 2}));
    let started = Instant::now();
    let h = d.start(&c).await.unwrap();
    let exit = d.wait(&h).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(exit.exit_code, 2);
    // run_for in nanoseconds, successful.
    let h = d.start(&cfg(json!({"run_for": 1_000_000}))).await.unwrap();
    assert!(d.wait(&h).await.successful());
    // start_error, recoverable or not.
    match d.start(&cfg(json!({"start_error": "boom"}))).await {
        Err(e) => assert!(e.recoverable() && e.to_string() == "boom"),
        Ok(_) => panic!("started"),
    }
    match d
        .start(&cfg(
            json!({"start_error": "boom", "start_error_recoverable": false}),
        ))
        .await
    {
        Err(e) => assert!(!e.recoverable()),
        Ok(_) => panic!("started"),
    }
    // kill_after: dies of SIGKILL.
    let h = d
        .start(&cfg(json!({"run_for": "10s", "kill_after": "50ms"})))
        .await
        .unwrap();
    let exit = d.wait(&h).await;
    assert_eq!(exit.signal, libc::SIGKILL as i64);
    // Without run_for it runs until stopped.
    let h = d.start(&cfg(json!({}))).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(100), d.wait(&h))
        .await
        .is_err());
    d.stop(&h, libc::SIGINT, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(d.wait(&h).await.signal, libc::SIGINT as i64);
    // The mock alias and bad config.
    assert!(matches!(
        d.start(&cfg(json!({"run_for": "soon"}))).await,
        Err(DriverError::BadConfig(_))
    ));
    // Recover from a handle: the remaining time is kept.
    let h = d
        .start(&cfg(json!({"run_for": "300ms", "exit_code": 4})))
        .await
        .unwrap();
    let other = MockDriver::new();
    other.recover(&h).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(2), other.wait(&h))
        .await
        .unwrap();
    assert_eq!(exit.exit_code, 4);
}
