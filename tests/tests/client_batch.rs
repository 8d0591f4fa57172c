//! A failing batch job end to end, in-process: a region server and a real
//! client agent. The task (`raw_exec`, `exit 1`) is restarted once by the
//! client under its restart policy, the allocation fails, the servers
//! reschedule it once per its reschedule policy (a second allocation whose
//! `PreviousAllocation` is the first), that one fails too, and nothing more
//! happens: every allocation of the job ends `failed`, with the exit code in
//! the task events.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use atoll_tests::{get_json, poll, register, serial, TestRegion, DEFAULT_TIMEOUT};
use client_agent::{ClientAgent, ClientConfig};
use ops_kit::tls::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECOND: i64 = 1_000_000_000;
const MILLI: i64 = 1_000_000;
const REGION: &str = "batch";
const JOB: &str = "fails";
/// The smallest reschedule delay job validation accepts (Nomad's too).
const RESCHEDULE_DELAY: i64 = 5 * SECOND;

/// Kills (SIGKILL) every process started for an allocation under `root`
/// when dropped, so a failing test leaves no task behind. A task is
/// recognised by the `NOMAD_ALLOC_DIR` in its environment.
struct TaskSweeper {
    root: PathBuf,
}

impl Drop for TaskSweeper {
    fn drop(&mut self) {
        for pid in processes_under(&self.root) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Live (non-zombie) processes whose `NOMAD_ALLOC_DIR` lies under `root`.
fn processes_under(root: &std::path::Path) -> Vec<i32> {
    let prefix = format!("NOMAD_ALLOC_DIR={}", root.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.trim().chars().next())
                });
            let live = matches!(state, Some(c) if c != 'Z' && c != 'X');
            live && std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|kv| kv.starts_with(prefix.as_bytes()))
                })
                .unwrap_or(false)
        })
        .collect()
}

fn failing_job(reschedule_delay: i64) -> Value {
    json!({
        "ID": JOB,
        "Type": "batch",
        "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "g",
            "Count": 1,
            "RestartPolicy": {
                "Attempts": 1,
                "Interval": 10 * SECOND,
                "Delay": 100 * MILLI,
                "Mode": "fail"
            },
            "ReschedulePolicy": {
                "Attempts": 1,
                "Interval": 3600 * SECOND,
                "Delay": reschedule_delay,
                "DelayFunction": "constant",
                "Unlimited": false
            },
            "Tasks": [{
                "Name": "t",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", "echo failing; exit 1"]},
                "Resources": {"CPU": 100, "MemoryMB": 64}
            }]
        }]
    })
}

async fn allocations(base: &str) -> anyhow::Result<Vec<Value>> {
    let (code, v) = get_json(&format!("{base}/v1/job/{JOB}/allocations")).await?;
    ensure!(code == StatusCode::OK, "allocations: {code} {v}");
    Ok(v.as_array().cloned().unwrap_or_default())
}

async fn allocation(base: &str, id: &str) -> anyhow::Result<Value> {
    let (code, v) = get_json(&format!("{base}/v1/allocation/{id}")).await?;
    ensure!(code == StatusCode::OK, "allocation {id}: {code} {v}");
    Ok(v)
}

/// Wait until allocation `id` reports `failed`; the full allocation.
async fn wait_failed(base: &str, id: &str, timeout: Duration) -> anyhow::Result<Value> {
    let a = poll(&format!("allocation {id} failed"), timeout, || async {
        let a = allocation(base, id).await.ok()?;
        matches!(
            a["ClientStatus"].as_str(),
            Some("failed" | "complete" | "lost")
        )
        .then_some(a)
    })
    .await?;
    ensure!(
        a["ClientStatus"] == "failed",
        "allocation {id} ended {} instead of failed: {}",
        a["ClientStatus"],
        a["TaskStates"]
    );
    Ok(a)
}

fn events(alloc: &Value) -> Vec<Value> {
    alloc["TaskStates"]["t"]["Events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["Type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The task ran twice (one client restart), both runs ended with exit code
/// 1, the restart is announced by "Restarting" and the end by "Not
/// Restarting", and the task state is dead and failed.
fn check_task_history(alloc: &Value) -> anyhow::Result<()> {
    let id = alloc["ID"].as_str().unwrap_or("?");
    let evs = events(alloc);
    let ts = types(&evs);
    let pos = |t: &str| ts.iter().position(|x| x == t);
    let count = |t: &str| ts.iter().filter(|x| *x == t).count();
    ensure!(
        count("Started") == 2,
        "allocation {id}: expected the task to start twice (one restart), events {ts:?}"
    );
    ensure!(
        count("Restarting") == 1,
        "allocation {id}: expected one Restarting event, events {ts:?}"
    );
    ensure!(
        count("Not Restarting") == 1,
        "allocation {id}: expected one Not Restarting event, events {ts:?}"
    );
    let restarting = pos("Restarting").context("Restarting")?;
    let not_restarting = pos("Not Restarting").context("Not Restarting")?;
    ensure!(
        restarting < not_restarting,
        "allocation {id}: Restarting should come before Not Restarting: {ts:?}"
    );
    let terminated: Vec<&Value> = evs.iter().filter(|e| e["Type"] == "Terminated").collect();
    ensure!(
        terminated.len() == 2,
        "allocation {id}: expected two Terminated events, events {ts:?}"
    );
    for e in &terminated {
        ensure!(
            e["ExitCode"] == 1,
            "allocation {id}: Terminated without exit code 1: {e}"
        );
    }
    ensure!(
        pos("Terminated").is_some_and(|t| t < restarting),
        "allocation {id}: the first run should terminate before the restart: {ts:?}"
    );
    let last_terminated = evs
        .iter()
        .rposition(|e| e["Type"] == "Terminated")
        .unwrap_or(0);
    ensure!(
        last_terminated > restarting && last_terminated < not_restarting,
        "allocation {id}: the second run should terminate between the restart and Not Restarting: {ts:?}"
    );
    ensure!(
        evs[not_restarting]["FailsTask"] == true,
        "allocation {id}: Not Restarting should fail the task: {}",
        evs[not_restarting]
    );
    let state = &alloc["TaskStates"]["t"];
    ensure!(
        state["State"] == "dead" && state["Failed"] == true,
        "allocation {id}: task state {state}"
    );
    ensure!(
        state["Restarts"] == 1,
        "allocation {id}: expected Restarts 1, task state {state}"
    );
    Ok(())
}

/// A client agent of the region's single server, registered.
async fn start_agent(r: &TestRegion, dir: &std::path::Path) -> anyhow::Result<ClientAgent> {
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    let agent = ClientAgent::start(ClientConfig::dev(
        "c1",
        REGION,
        dir.join("c1"),
        vec![r.rpc_addr(0)],
        r.ca.issue(Role::Client, REGION)?,
    ))
    .await
    .context("starting the client agent")?;
    ensure!(
        agent.wait_registered(Duration::from_secs(20)).await,
        "client registered"
    );
    Ok(agent)
}

async fn scenario(r: &TestRegion, dir: &std::path::Path) -> anyhow::Result<()> {
    let base = r.http(0);
    let agent = start_agent(r, dir).await?;
    let node_id = agent.node_id();

    // A 200 ms reschedule delay is below the 5 s minimum (Nomad's too):
    // validation rejects it, naming the field.
    let rejected = register(&base, failing_job(200 * MILLI)).await?;
    ensure!(
        rejected.status == StatusCode::BAD_REQUEST && rejected.body.contains("Delay"),
        "a 200ms reschedule delay should be rejected naming the field: {} {}",
        rejected.status,
        rejected.body
    );

    register(&base, failing_job(RESCHEDULE_DELAY))
        .await?
        .expect(StatusCode::OK)
        .context("registering the failing job")?;

    // The first allocation: restarted once on the client, then failed.
    let first = poll("the first allocation", Duration::from_secs(20), || async {
        allocations(&base).await.ok()?.first().cloned()
    })
    .await?;
    let first_id = first["ID"].as_str().context("allocation id")?.to_string();
    let first = wait_failed(&base, &first_id, Duration::from_secs(30)).await?;
    eprintln!("first allocation events: {:?}", types(&events(&first)));
    ensure!(first["NodeID"] == node_id.as_str(), "{first}");
    check_task_history(&first)?;
    let failed_at = events(&first)
        .iter()
        .filter_map(|e| e["Time"].as_i64())
        .max()
        .unwrap_or(0);

    // The servers reschedule it once, after the reschedule delay.
    let second_id = poll(
        "a replacement of the first allocation",
        Duration::from_secs(30),
        || async {
            allocations(&base)
                .await
                .ok()?
                .iter()
                .find(|a| a["ID"] != first_id.as_str())
                .and_then(|a| a["ID"].as_str().map(str::to_string))
        },
    )
    .await?;
    let second = wait_failed(&base, &second_id, Duration::from_secs(30)).await?;
    eprintln!("second allocation events: {:?}", types(&events(&second)));
    ensure!(
        second["PreviousAllocation"] == first_id.as_str(),
        "the replacement's PreviousAllocation should be {first_id}: {}",
        second["PreviousAllocation"]
    );
    let tracker = second["RescheduleTracker"]["Events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(
        tracker.len() == 1 && tracker[0]["PrevAllocID"] == first_id.as_str(),
        "the replacement's RescheduleTracker should hold one event naming {first_id}: {}",
        second["RescheduleTracker"]
    );
    let created = second["CreateTime"].as_i64().unwrap_or(0);
    ensure!(
        failed_at > 0 && created - failed_at >= RESCHEDULE_DELAY - 500 * MILLI,
        "rescheduled {} ms after the failure, the policy's delay is {} ms",
        (created - failed_at) / MILLI,
        RESCHEDULE_DELAY / MILLI
    );
    check_task_history(&second)?;
    let first = allocation(&base, &first_id).await?;
    ensure!(
        first["NextAllocation"] == second_id.as_str(),
        "the first allocation's NextAllocation should be {second_id}: {}",
        first["NextAllocation"]
    );

    // No more: the single reschedule attempt is used up. Wait out another
    // reschedule delay (and some) to be sure no third allocation appears.
    let until = Instant::now() + Duration::from_nanos((RESCHEDULE_DELAY + 3 * SECOND) as u64);
    while Instant::now() < until {
        let all = allocations(&base).await?;
        ensure!(
            all.len() == 2,
            "expected exactly two allocations, found {}: {:?}",
            all.len(),
            all.iter().map(|a| &a["ID"]).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = allocations(&base).await?;
    for a in &all {
        ensure!(
            a["ClientStatus"] == "failed",
            "every allocation should be failed: {} is {}",
            a["ID"],
            a["ClientStatus"]
        );
        let full = allocation(&base, a["ID"].as_str().unwrap_or("")).await?;
        ensure!(
            full["NextAllocation"] == ""
                || full["NextAllocation"].is_null()
                || full["ID"] == first_id.as_str(),
            "the last allocation should have no replacement: {}",
            full["NextAllocation"]
        );
    }
    let summary = get_json(&format!("{base}/v1/job/{JOB}/summary")).await?.1;
    ensure!(
        summary["Summary"]["g"]["Failed"] == 2
            && summary["Summary"]["g"]["Running"] == 0
            && summary["Summary"]["g"]["Queued"] == 0,
        "job summary: {summary}"
    );
    agent.shutdown_and_kill_tasks().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_batch_task_is_restarted_once_then_rescheduled_once_then_left_failed(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let dir = tempfile::Builder::new().prefix("atoll-batch-").tempdir()?;
    let _sweeper = TaskSweeper {
        root: dir.path().to_path_buf(),
    };
    let r = TestRegion::start(1, REGION).await?;
    let result = scenario(&r, dir.path()).await;
    r.shutdown().await;
    result
}

async fn job_status(base: &str, id: &str) -> Option<String> {
    let (code, job) = get_json(&format!("{base}/v1/job/{id}")).await.ok()?;
    (code == StatusCode::OK).then(|| job["Status"].as_str().unwrap_or("").to_string())
}

/// Nomad's job status follows the allocations: `running` while one runs,
/// `dead` once every allocation is terminal and no evaluation is pending.
async fn status_scenario(r: &TestRegion, dir: &std::path::Path) -> anyhow::Result<()> {
    let base = r.http(0);
    let agent = start_agent(r, dir).await?;
    let id = "short";
    let job = json!({
        "ID": id,
        "Type": "batch",
        "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "g",
            "Count": 1,
            "RestartPolicy": {"Attempts": 0, "Interval": 10 * SECOND, "Delay": 0, "Mode": "fail"},
            "ReschedulePolicy": {"Attempts": 0, "Unlimited": false},
            "Tasks": [{
                "Name": "t",
                "Driver": "raw_exec",
                "Config": {"command": "/bin/sh", "args": ["-c", "sleep 3; exit 1"]},
                "Resources": {"CPU": 100, "MemoryMB": 64}
            }]
        }]
    });
    register(&base, job)
        .await?
        .expect(StatusCode::OK)
        .context("registering the job")?;
    let alloc_id = poll("a running allocation", Duration::from_secs(20), || async {
        let (_, v) = get_json(&format!("{base}/v1/job/{id}/allocations"))
            .await
            .ok()?;
        v.as_array()?
            .iter()
            .find(|a| a["ClientStatus"] == "running")
            .and_then(|a| a["ID"].as_str().map(str::to_string))
    })
    .await?;
    let running = job_status(&base, id).await;
    let failed = wait_failed(&base, &alloc_id, Duration::from_secs(20)).await?;
    ensure!(
        failed["TaskStates"]["t"]["Restarts"] == 0,
        "no restart expected: {}",
        failed["TaskStates"]["t"]
    );
    // Evaluations triggered by the failure settle first.
    let dead = poll("job status dead", Duration::from_secs(10), || async {
        let s = job_status(&base, id).await?;
        (s == "dead").then_some(s)
    })
    .await;
    let after = job_status(&base, id).await;
    agent.shutdown_and_kill_tasks().await;
    ensure!(
        running.as_deref() == Some("running") && dead.is_ok(),
        "job status while its allocation ran: {running:?} (Nomad: \"running\"); \
         10 s after its only allocation failed with nothing left to reschedule: {after:?} \
         (Nomad: \"dead\")"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_job_is_running_while_its_allocation_runs_and_dead_once_it_failed(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let dir = tempfile::Builder::new().prefix("atoll-batch-").tempdir()?;
    let _sweeper = TaskSweeper {
        root: dir.path().to_path_buf(),
    };
    let r = TestRegion::start(1, REGION).await?;
    let result = status_scenario(&r, dir.path()).await;
    r.shutdown().await;
    result
}
