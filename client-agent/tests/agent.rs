//! The agent against fake region servers: registration, heartbeats, leader
//! following, allocations end to end, restart policy, re-attaching after an
//! agent restart, the HTTP endpoints, and a simulated fleet.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use client_agent::{ClientAgent, ClientConfig, FleetConfig, SimulatedFleet};
use common::*;
use proto::model::{RestartPolicy, Task, MILLISECOND, SECOND};
use serde_json::json;

const REGION: &str = "eu";

fn config(pki: &Pki, dir: &std::path::Path, servers: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::dev("c1", REGION, dir.to_path_buf(), servers, pki.client(REGION));
    c.update_interval = Duration::from_millis(100);
    c.max_backoff = Duration::from_millis(500);
    c
}

fn fast_restarts(mut t: Task, attempts: i64) -> Task {
    t.restart_policy = Some(RestartPolicy {
        attempts,
        interval: 60 * SECOND,
        delay: 100 * MILLISECOND,
        mode: "fail".into(),
        render_templates: false,
    });
    t.kill_timeout = 2 * SECOND;
    t
}

/// Processes whose command line starts with `prefix`.
fn processes_with(prefix: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.starts_with(prefix)
        })
        .filter(|pid| client_agent::driver::procfs::stat(*pid).is_some_and(|s| s.state != 'Z'))
        .collect()
}

#[tokio::test]
async fn registers_heartbeats_and_runs_a_batch_allocation() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    server.st.ttl_ms.store(600, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    let node = server.node(&agent.node_id()).unwrap();
    assert_eq!(node.attributes["kernel.name"], "linux");
    assert_eq!(node.attributes["driver.raw_exec"], "1");
    assert_eq!(node.attributes["unique.network.ip-address"], "127.0.0.1");
    assert!(node.drivers["raw_exec"].healthy);
    assert!(node.drivers.contains_key("exec"));
    assert!(node.node_resources.cpu.cpu_shares > 0);
    assert!(node.node_resources.memory.memory_mb > 0);
    assert!(node.node_resources.disk.disk_mb > 0);
    assert_eq!(node.http_addr, agent.http_addr().unwrap().to_string());
    // Heartbeats at about TTL/2.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hb = server.svc.heartbeats.load(Ordering::Relaxed);
    assert!(hb >= 3, "only {hb} heartbeats in 1.5 s with a 600 ms TTL");

    let job = job(
        "hello",
        "batch",
        raw_task(
            "web",
            "echo hi; echo $NOMAD_JOB_ID $NOMAD_ALLOC_INDEX; sleep 0.3",
        ),
    );
    let a = alloc(&job, &agent.node_id());
    server.put_alloc(a.clone());
    let running = server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "running"
        })
        .await;
    assert_eq!(running.task_states["web"].state, "running");
    let done = server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "complete"
        })
        .await;
    assert_eq!(
        events(&done, "web"),
        vec!["Received", "Task Setup", "Started", "Terminated"]
    );
    let st = &done.task_states["web"];
    assert_eq!(st.state, "dead");
    assert!(!st.failed);
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    assert_eq!(st.events[3].exit_code, 0);

    // Logs over HTTP.
    let base = format!("http://{}", agent.http_addr().unwrap());
    let http = reqwest::Client::new();
    let logs = http
        .get(format!(
            "{base}/v1/client/fs/logs/{}?task=web&type=stdout",
            a.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    assert_eq!(logs.text().await.unwrap(), "hi\nhello 0\n");
    let tail = http
        .get(format!(
            "{base}/v1/client/fs/logs/{}?task=web&type=stdout&origin=end&offset=8",
            a.id
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tail, "hello 0\n");
    let ls: serde_json::Value = http
        .get(format!("{base}/v1/client/fs/ls/{}?path=/", a.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alloc", "web"]);
    let cat = http
        .get(format!(
            "{base}/v1/client/fs/cat/{}?path=alloc/logs/web.stdout.0",
            a.id
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(cat, "hi\nhello 0\n");
    let stat: serde_json::Value = http
        .get(format!("{base}/v1/client/fs/stat/{}?path=web/local", a.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stat["IsDir"], true);
    assert_eq!(stat["Name"], "local");
    for bad in ["../", "web/../../etc", "/../x"] {
        let r = http
            .get(format!("{base}/v1/client/fs/cat/{}?path={bad}", a.id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = http
        .get(format!("{base}/v1/client/fs/ls/nope?path=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let stats: serde_json::Value = http
        .get(format!("{base}/v1/client/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats["Memory"]["Total"].as_u64().unwrap() > 0);
    assert!(!stats["CPU"].as_array().unwrap().is_empty());
    agent.shutdown_and_kill_tasks().await;
}

#[tokio::test]
async fn stops_allocations_and_applies_restart_policy() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    let node = agent.node_id();

    // A service task that keeps failing: restarted once, then failed.
    let failing = job(
        "failing",
        "service",
        fast_restarts(raw_task("t", "exit 3"), 1),
    );
    let fa = alloc(&failing, &node);
    server.put_alloc(fa.clone());
    let failed = server
        .wait_alloc(&fa.id, Duration::from_secs(10), |x| {
            x.client_status == "failed"
        })
        .await;
    let evs = events(&failed, "t");
    assert_eq!(
        evs,
        vec![
            "Received",
            "Task Setup",
            "Started",
            "Terminated",
            "Restarting",
            "Started",
            "Terminated",
            "Not Restarting"
        ]
    );
    let st = &failed.task_states["t"];
    assert!(st.failed);
    assert_eq!(st.restarts, 1);
    assert_eq!(st.events[3].exit_code, 3);
    assert!(st.events[7].fails_task);

    // A long-running service stopped by the servers: Killing, Killed, complete.
    let long = job("long", "service", raw_task("srv", "sleep 100"));
    let la = alloc(&long, &node);
    server.put_alloc(la.clone());
    server
        .wait_alloc(&la.id, Duration::from_secs(10), |x| {
            x.client_status == "running"
        })
        .await;
    // Signal and in-place update while it runs.
    let base = format!("http://{}", agent.http_addr().unwrap());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/client/allocation/{}/signal", la.id))
        .json(&json!({"Signal": "SIGCONT", "Task": "srv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let stats: serde_json::Value = http
        .get(format!("{base}/v1/client/allocation/{}/stats", la.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stats["Tasks"]["srv"]["ResourceUsage"]["MemoryStats"]["RSS"]
            .as_u64()
            .unwrap()
            > 0
    );
    let mut updated = long.clone();
    updated.version = 1;
    updated.job_modify_index = 99;
    updated.meta.insert("note".into(), "in place".into());
    let mut la2 = server.alloc(&la.id).unwrap();
    la2.job = Some(std::sync::Arc::new(updated));
    la2.job_version = 1;
    server.put_alloc(la2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let view = agent
        .allocations()
        .into_iter()
        .find(|v| v.alloc.id == la.id)
        .unwrap();
    assert_eq!(view.job.version, 1, "in-place update applied");
    assert_eq!(view.tasks["srv"].restarts, 0, "and the task kept running");
    assert_eq!(view.client_status, "running");

    // A user-requested restart does not count against the policy.
    let r = http
        .post(format!("{base}/v1/client/allocation/{}/restart", la.id))
        .json(&json!({"TaskName": "srv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let restarted = server
        .wait_alloc(&la.id, Duration::from_secs(10), |x| {
            x.task_states["srv"].restarts == 1 && x.task_states["srv"].state == "running"
        })
        .await;
    assert!(events(&restarted, "srv").contains(&"Restart Signal".to_string()));

    server.set_desired(&la.id, "stop");
    let stopped = server
        .wait_alloc(&la.id, Duration::from_secs(10), |x| {
            x.client_status == "complete"
        })
        .await;
    let evs = events(&stopped, "srv");
    assert!(
        evs.ends_with(&["Killing".to_string(), "Killed".to_string()]),
        "{evs:?}"
    );
    assert!(!stopped.task_states["srv"].failed);
    agent.shutdown_and_kill_tasks().await;
}

#[tokio::test]
async fn reattaches_to_running_tasks_after_an_agent_restart() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("reattach-{}", uuid::Uuid::new_v4());
    let script = format!("echo started; sleep 60; : {marker}");
    let prefix = format!("/bin/sh -c {script}");

    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    let node_id = agent.node_id();
    let j = job("sleeper", "service", raw_task("s", &script));
    let a = alloc(&j, &node_id);
    server.put_alloc(a.clone());
    server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "running"
        })
        .await;
    let before = processes_with(&prefix);
    assert_eq!(before.len(), 1, "{before:?}");

    // The agent goes away; its task does not.
    agent.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processes_with(&prefix), before, "task survived the agent");

    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert_eq!(agent.node_id(), node_id, "stable node id");
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let view = agent
        .allocations()
        .into_iter()
        .find(|v| v.alloc.id == a.id)
        .expect("restored allocation");
    assert_eq!(view.client_status, "running");
    assert_eq!(view.handles["s"].pid, {
        let stat = client_agent::driver::procfs::stat(before[0]).unwrap();
        stat.ppid
    });
    assert_eq!(processes_with(&prefix), before, "no second process");
    let now = server.alloc(&a.id).unwrap();
    assert_eq!(now.client_status, "running");
    assert_eq!(
        events(&now, "s").iter().filter(|e| *e == "Started").count(),
        1,
        "{:?}",
        events(&now, "s")
    );

    // The re-attached task is stopped like any other.
    server.set_desired(&a.id, "stop");
    let stopped = server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "complete"
        })
        .await;
    assert!(events(&stopped, "s").ends_with(&["Killing".to_string(), "Killed".to_string()]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(processes_with(&prefix).is_empty());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_task_that_died_while_the_agent_was_down_is_restarted() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    let j = job(
        "short",
        "service",
        fast_restarts(
            raw_task(
                "s",
                "if [ -f ../local/second ]; then sleep 60; fi; touch second; sleep 0.7; exit 5",
            ),
            2,
        ),
    );
    let a = alloc(&j, &agent.node_id());
    server.put_alloc(a.clone());
    server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "running"
        })
        .await;
    agent.shutdown().await;
    // The task exits (code 5) while no agent runs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    let back = server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            events(x, "s").iter().filter(|e| *e == "Started").count() == 2
                && x.task_states["s"].state == "running"
        })
        .await;
    let st = &back.task_states["s"];
    let term = st
        .events
        .iter()
        .find(|e| e.r#type == "Terminated")
        .expect("termination reported");
    assert_eq!(
        term.exit_code, 5,
        "exit code learned from the shim's status file"
    );
    assert!(events(&back, "s").contains(&"Restarting".to_string()));
    assert_eq!(st.restarts, 1);
    agent.shutdown_and_kill_tasks().await;
}

#[tokio::test]
async fn follows_the_leader_and_survives_server_trouble() {
    let pki = Pki::new();
    let st = FakeState::new();
    let follower = FakeServer::start_on(&pki, REGION, st.clone(), "127.0.0.1:0").await;
    let leader = FakeServer::start_on(&pki, REGION, st.clone(), "127.0.0.1:0").await;
    *follower.svc.redirect_to.lock().unwrap() = Some(leader.addr.clone());
    st.ttl_ms.store(600, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    // The agent only knows the follower.
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![follower.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(follower.svc.heartbeats.load(Ordering::Relaxed), 0);
    assert!(leader.svc.heartbeats.load(Ordering::Relaxed) >= 2);

    // The servers forget the node: it registers again.
    let regs = st.registrations.load(Ordering::Relaxed);
    follower.forget_nodes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while st.registrations.load(Ordering::Relaxed) == regs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never re-registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(follower.node(&agent.node_id()).is_some());

    // Both servers down for a while: the watch reconnects and resumes.
    let j = job("m", "batch", mock_task("t", json!({"run_for": "100ms"})));
    let a = alloc(&j, &agent.node_id());
    server_put(&follower, a.clone());
    follower
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "complete"
        })
        .await;
    follower.set_down(true);
    leader.set_down(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    follower.set_down(false);
    leader.set_down(false);
    let b = alloc(&j, &agent.node_id());
    server_put(&follower, b.clone());
    follower
        .wait_alloc(&b.id, Duration::from_secs(15), |x| {
            x.client_status == "complete"
        })
        .await;
    // The first allocation was not started again.
    let view = agent
        .allocations()
        .into_iter()
        .find(|v| v.alloc.id == a.id)
        .unwrap();
    assert_eq!(
        view.tasks["t"]
            .events
            .iter()
            .filter(|e| e.r#type == "Started")
            .count(),
        1
    );
    agent.shutdown().await;
}

fn server_put(s: &FakeServer, a: proto::model::Allocation) {
    s.put_alloc(a)
}

#[tokio::test]
async fn sibling_failure_and_lifecycle_order() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);

    // prestart runs to completion before main; main fails; the sidecar is
    // killed as its sibling failed.
    let mut pre = mock_task("pre", json!({"run_for": "100ms"}));
    pre.lifecycle = Some(proto::model::TaskLifecycle {
        hook: "prestart".into(),
        sidecar: false,
    });
    let mut side = mock_task("side", json!({}));
    side.lifecycle = Some(proto::model::TaskLifecycle {
        hook: "poststart".into(),
        sidecar: true,
    });
    let main = fast_restarts(
        mock_task("main", json!({"run_for": "300ms", "exit_code": 1})),
        0,
    );
    let mut j = job("lc", "batch", main);
    j.task_groups[0].tasks.insert(0, pre);
    j.task_groups[0].tasks.push(side);
    let a = alloc(&j, &agent.node_id());
    server.put_alloc(a.clone());
    let done = server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "failed" && x.task_states.values().all(|t| t.state == "dead")
        })
        .await;
    let started = |t: &str| {
        proto::model::time::parse_rfc3339(done.task_states[t].started_at.as_deref().unwrap())
            .unwrap()
    };
    let pre_done =
        proto::model::time::parse_rfc3339(done.task_states["pre"].finished_at.as_deref().unwrap())
            .unwrap();
    assert!(
        started("main") >= pre_done,
        "main started before prestart finished"
    );
    assert!(started("side") >= started("main"));
    assert!(!done.task_states["pre"].failed);
    assert!(done.task_states["main"].failed);
    assert!(events(&done, "side").contains(&"Sibling Task Failed".to_string()));
    assert!(!done.task_states["side"].failed);

    // A missing driver fails the allocation at once.
    let mut t = mock_task("x", json!({}));
    t.driver = "docker".into();
    let j = job("nodriver", "batch", t);
    let b = alloc(&j, &agent.node_id());
    server.put_alloc(b.clone());
    let failed = server
        .wait_alloc(&b.id, Duration::from_secs(10), |x| {
            x.client_status == "failed"
        })
        .await;
    assert_eq!(events(&failed, "x"), vec!["Driver Failure"]);
    agent.shutdown().await;
}

#[tokio::test]
async fn deployment_health_is_reported() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    let mut j = job("web", "service", mock_task("t", json!({})));
    let mut u = j.task_groups[0].update.clone().unwrap_or_default();
    u.min_healthy_time = 300 * MILLISECOND;
    u.healthy_deadline = 10 * SECOND;
    u.health_check = "task_states".into();
    j.task_groups[0].update = Some(u);
    let mut a = alloc(&j, &agent.node_id());
    a.deployment_id = "d1".into();
    server.put_alloc(a.clone());
    let healthy = server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.deployment_status.as_ref().and_then(|d| d.healthy) == Some(true)
        })
        .await;
    assert_eq!(healthy.client_status, "running");
    agent.shutdown_and_kill_tasks().await;
}

#[tokio::test]
async fn simulated_fleet_runs_mock_allocations() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let mut cfg = FleetConfig::new(60, vec![server.addr.clone()], REGION);
    cfg.lanes = 3;
    cfg.ramp = Duration::from_millis(300);
    let fleet = SimulatedFleet::start_with(cfg, pki.client(REGION))
        .await
        .unwrap();
    assert!(fleet.wait_registered(Duration::from_secs(20)).await);
    let ids = fleet.node_ids();
    assert_eq!(ids.len(), 60);
    assert_eq!(server.st.nodes.lock().unwrap().len(), 60);
    let j = job(
        "bench",
        "batch",
        mock_task("t", json!({"run_for": "200ms"})),
    );
    let mut allocs = Vec::new();
    for id in &ids {
        for _ in 0..3 {
            let a = alloc(&j, id);
            allocs.push(a.id.clone());
            server.put_alloc(a);
        }
    }
    for id in &allocs {
        server
            .wait_alloc(id, Duration::from_secs(30), |x| {
                x.client_status == "complete"
            })
            .await;
    }
    let totals = fleet.totals();
    assert_eq!(totals.allocs_started, 180);
    assert_eq!(totals.registrations, 60);
    assert_eq!(fleet.active_allocs(), 0);
    fleet.shutdown().await;
}

#[tokio::test]
async fn follows_logs_and_reports_oom_kills() {
    let pki = Pki::new();
    let server = FakeServer::start(&pki, REGION).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = ClientAgent::start(config(&pki, dir.path(), vec![server.addr.clone()]))
        .await
        .unwrap();
    assert!(agent.wait_registered(Duration::from_secs(10)).await);
    let j = job(
        "chatty",
        "batch",
        raw_task("t", "for i in 1 2 3; do echo line$i; sleep 0.3; done"),
    );
    let a = alloc(&j, &agent.node_id());
    server.put_alloc(a.clone());
    server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "running"
        })
        .await;
    let base = format!("http://{}", agent.http_addr().unwrap());
    let followed = tokio::time::timeout(
        Duration::from_secs(15),
        reqwest::get(format!(
            "{base}/v1/client/fs/logs/{}?task=t&type=stdout&follow=true",
            a.id
        )),
    )
    .await
    .unwrap()
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(followed, "line1\nline2\nline3\n");

    let exec_healthy = agent.node().drivers["exec"].healthy;
    if !exec_healthy {
        eprintln!(
            "SKIPPED OOM part: driver.exec is unhealthy here: {}",
            agent.node().drivers["exec"].health_description
        );
    } else {
        let mut hog = fast_restarts(raw_task("hog", ""), 0);
        hog.driver = "exec".into();
        hog.config = json!({"command": "tail", "args": ["/dev/zero"]})
            .as_object()
            .cloned()
            .unwrap();
        hog.resources.memory_mb = 32;
        let j = job("hog", "batch", hog);
        let b = alloc(&j, &agent.node_id());
        server.put_alloc(b.clone());
        let failed = server
            .wait_alloc(&b.id, Duration::from_secs(30), |x| {
                x.client_status == "failed"
            })
            .await;
        let term = failed.task_states["hog"]
            .events
            .iter()
            .find(|e| e.r#type == "Terminated")
            .unwrap()
            .clone();
        assert!(term.message.contains("OOM"), "{}", term.message);
        assert_eq!(
            term.details.get("oom_killed").map(String::as_str),
            Some("true")
        );
        assert_eq!(term.signal, 9);
    }
    agent.shutdown_and_kill_tasks().await;
}

#[tokio::test]
async fn the_binary_stops_cleanly_on_sigterm_and_leaves_tasks_running() {
    let tmp = tempfile::tempdir().unwrap();
    init();
    let ca = ops_kit::tls::DevCa::load_or_create(&tmp.path().join("tls")).unwrap();
    let pki = Pki { ca };
    let server = FakeServer::start(&pki, "global").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_client-agent"))
        .args([
            "--name",
            "bin1",
            "--region",
            "global",
            "--servers",
            &server.addr,
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--http-addr", "127.0.0.1:0", "--meta", "rack=r1"])
        .arg("--dev-ca-dir")
        .arg(tmp.path().join("tls"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let node = loop {
        let n = server.st.nodes.lock().unwrap().values().next().cloned();
        if let Some(n) = n {
            break n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(node.name, "bin1");
    assert_eq!(node.meta["rack"], "r1");
    let marker = format!("bin-{}", uuid::Uuid::new_v4());
    let script = format!("sleep 60; : {marker}");
    let j = job("fromcli", "service", raw_task("s", &script));
    let a = alloc(&j, &node.id);
    server.put_alloc(a.clone());
    server
        .wait_alloc(&a.id, Duration::from_secs(10), |x| {
            x.client_status == "running"
        })
        .await;
    let pid = child.id().unwrap() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the agent did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let left = processes_with(&format!("/bin/sh -c {script}"));
    assert_eq!(
        left.len(),
        1,
        "the task keeps running after the agent stopped"
    );
    let pgid = client_agent::driver::procfs::stat(left[0]).unwrap().pgrp;
    client_agent::driver::procfs::kill_group(pgid, libc::SIGKILL).unwrap();
}
