//! Deployments end to end, in-process: a region server and a real client
//! agent running `mock_driver` tasks, whose task states decide allocation
//! health. A service job rolls out version after version:
//!
//! 1. version 0 is placed and its deployment succeeds (the version becomes
//!    stable);
//! 2. version 1 starts with a canary beside the three old allocations; once
//!    healthy it is promoted over HTTP and the rest follow;
//! 3. version 2 is a rolling update (`max_parallel = 2`) that converges to
//!    a successful deployment;
//! 4. version 3 fails to start: its allocations are unhealthy, the
//!    deployment misses its progress deadline and fails, and rolls back
//!    (`auto_revert`) to version 2's spec as version 4, whose deployment
//!    succeeds.
//!
//! Along the way the deployment endpoints answer with Nomad's shapes and
//! status codes.

use std::time::Duration;

use anyhow::{ensure, Context};
use atoll_tests::{get_json, poll, put_json, register, serial, TestRegion, DEFAULT_TIMEOUT};
use client_agent::{ClientAgent, ClientConfig};
use ops_kit::tls::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECOND: i64 = 1_000_000_000;
const MILLI: i64 = 1_000_000;
const REGION: &str = "deploy";
const JOB: &str = "web";
const WAIT: Duration = Duration::from_secs(60);

/// Version `v` of the job: three `mock_driver` tasks that run until
/// stopped (or fail to start when `broken`), rolled out two at a time,
/// healthy after 300 ms of running. A broken version gets a short progress
/// deadline (the model reads a zero deadline as unset, so every group has
/// one).
fn job(v: u32, canary: i64, broken: bool) -> Value {
    let mut config = json!({});
    let (healthy_deadline, progress_deadline) = if broken {
        config = json!({"start_error": "broken build", "start_error_recoverable": false});
        (SECOND, 3 * SECOND)
    } else {
        (10 * SECOND, 60 * SECOND)
    };
    json!({
        "ID": JOB,
        "Datacenters": ["dc1"],
        "Update": {
            "MaxParallel": 2,
            "Canary": canary,
            "MinHealthyTime": 300 * MILLI,
            "HealthyDeadline": healthy_deadline,
            "ProgressDeadline": progress_deadline,
            "AutoRevert": true,
            "HealthCheck": "task_states",
            "Stagger": SECOND
        },
        "TaskGroups": [{
            "Name": "web",
            "Count": 3,
            "RestartPolicy": {"Attempts": 0, "Interval": 10 * SECOND, "Delay": 100 * MILLI, "Mode": "fail"},
            "Tasks": [{
                "Name": "app",
                "Driver": "mock_driver",
                "KillTimeout": SECOND,
                "Config": config,
                "Env": {"VERSION": v.to_string()},
                "Resources": {"CPU": 100, "MemoryMB": 32}
            }]
        }]
    })
}

async fn json_ok(url: &str) -> anyhow::Result<Value> {
    let (code, v) = get_json(url).await?;
    ensure!(code == StatusCode::OK, "GET {url}: {code} {v}");
    Ok(v)
}

/// The job's deployment for `version`, once it exists.
async fn deployment_of(base: &str, version: u64) -> anyhow::Result<Value> {
    poll(
        &format!("a deployment of version {version}"),
        WAIT,
        || async {
            let all = json_ok(&format!("{base}/v1/job/{JOB}/deployments"))
                .await
                .ok()?;
            all.as_array()?
                .iter()
                .find(|d| d["JobVersion"] == version)
                .cloned()
        },
    )
    .await
}

/// Waits until deployment `id` has status `status`; the deployment.
async fn wait_status(base: &str, id: &str, status: &str) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    let found = poll(&format!("deployment {id} {status}"), WAIT, || async {
        let d = json_ok(&format!("{base}/v1/deployment/{id}")).await.ok()?;
        (d["Status"] == status).then_some(d)
    })
    .await;
    if found.is_err() {
        last = json_ok(&format!("{base}/v1/deployment/{id}")).await?;
    }
    found.with_context(|| format!("last seen: {last}"))
}

/// The job's live allocations (desired `run`, not terminal).
async fn live(base: &str) -> anyhow::Result<Vec<Value>> {
    let all = json_ok(&format!("{base}/v1/job/{JOB}/allocations")).await?;
    Ok(all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            a["DesiredStatus"] == "run"
                && matches!(a["ClientStatus"].as_str(), Some("pending" | "running"))
        })
        .collect())
}

/// Waits until exactly three allocations run, all of `version`.
async fn wait_all_at(base: &str, version: u64) -> anyhow::Result<Vec<Value>> {
    poll(
        &format!("three running allocations of version {version}"),
        WAIT,
        || async {
            let allocs = live(base).await.ok()?;
            (allocs.len() == 3
                && allocs
                    .iter()
                    .all(|a| a["JobVersion"] == version && a["ClientStatus"] == "running"))
            .then_some(allocs)
        },
    )
    .await
}

async fn scenario(r: &TestRegion, dir: &std::path::Path) -> anyhow::Result<()> {
    let base = r.http(0);
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

    // 1. Version 0: its deployment succeeds and the version is stable.
    register(&base, job(0, 0, false))
        .await?
        .expect(StatusCode::OK)?;
    let d0 = deployment_of(&base, 0).await?;
    let d0_id = d0["ID"].as_str().context("ID")?.to_string();
    let d0 = wait_status(&base, &d0_id, "successful").await?;
    ensure!(d0["TaskGroups"]["web"]["HealthyAllocs"] == 3, "{d0}");
    ensure!(
        d0["StatusDescription"] == "Deployment completed successfully",
        "{d0}"
    );
    let v0 = json_ok(&format!("{base}/v1/job/{JOB}")).await?;
    ensure!(v0["Stable"] == true && v0["Version"] == 0, "{v0}");
    wait_all_at(&base, 0).await?;

    // 2. Version 1 with a canary: placed beside the three old allocations,
    // promoted once healthy, then the rest follow.
    register(&base, job(1, 1, false))
        .await?
        .expect(StatusCode::OK)?;
    let dc = deployment_of(&base, 1).await?;
    let dc_id = dc["ID"].as_str().context("ID")?.to_string();
    let dc = poll("a healthy canary", WAIT, || async {
        let d = json_ok(&format!("{base}/v1/deployment/{dc_id}"))
            .await
            .ok()?;
        let web = &d["TaskGroups"]["web"];
        (web["PlacedCanaries"].as_array().map(Vec::len) == Some(1) && web["HealthyAllocs"] == 1)
            .then_some(d)
    })
    .await?;
    ensure!(dc["Status"] == "running", "{dc}");
    ensure!(
        dc["StatusDescription"] == "Deployment is running but requires manual promotion",
        "{dc}"
    );
    ensure!(dc["TaskGroups"]["web"]["DesiredCanaries"] == 1, "{dc}");
    let canary_id = dc["TaskGroups"]["web"]["PlacedCanaries"][0]
        .as_str()
        .context("canary id")?
        .to_string();
    let running = live(&base).await?;
    let old = running.iter().filter(|a| a["JobVersion"] == 0).count();
    ensure!(
        old == 3,
        "the old allocations run until promotion: {running:?}"
    );
    let canary = json_ok(&format!("{base}/v1/allocation/{canary_id}")).await?;
    ensure!(canary["DeploymentStatus"]["Canary"] == true, "{canary}");
    ensure!(canary["DeploymentStatus"]["Healthy"] == true, "{canary}");
    // Nothing moves before promotion (the deployment waits for it).
    ensure!(
        json_ok(&format!("{base}/v1/deployment/{dc_id}")).await?["Status"] == "running",
        "a deployment with canaries waits for promotion"
    );
    let promoted = put_json(
        &format!("{base}/v1/deployment/promote/{dc_id}"),
        &json!({"DeploymentID": dc_id, "All": true}),
    )
    .await?
    .expect(StatusCode::OK)?
    .json();
    ensure!(
        promoted["EvalID"].as_str().is_some_and(|e| !e.is_empty()),
        "{promoted}"
    );
    ensure!(
        promoted["DeploymentModifyIndex"].as_u64() > Some(0),
        "{promoted}"
    );
    let dc = wait_status(&base, &dc_id, "successful").await?;
    ensure!(dc["TaskGroups"]["web"]["Promoted"] == true, "{dc}");
    let allocs = wait_all_at(&base, 1).await?;
    ensure!(
        allocs.iter().any(|a| a["ID"] == canary_id.as_str()),
        "the promoted canary stays: {allocs:?}"
    );

    // 3. Version 2: a rolling update, two at a time, to success.
    register(&base, job(2, 0, false))
        .await?
        .expect(StatusCode::OK)?;
    let dr = deployment_of(&base, 2).await?;
    let dr_id = dr["ID"].as_str().context("ID")?.to_string();
    let dr = wait_status(&base, &dr_id, "successful").await?;
    let web = &dr["TaskGroups"]["web"];
    ensure!(
        web["DesiredTotal"] == 3 && web["PlacedAllocs"] == 3 && web["HealthyAllocs"] == 3,
        "{dr}"
    );
    ensure!(
        web["UnhealthyAllocs"] == 0 && web["AutoRevert"] == true,
        "{dr}"
    );
    let allocs = wait_all_at(&base, 2).await?;
    for a in &allocs {
        ensure!(a["DeploymentStatus"]["Healthy"] == true, "{a}");
    }
    let of_dr = json_ok(&format!("{base}/v1/deployment/allocations/{dr_id}")).await?;
    ensure!(of_dr.as_array().map(Vec::len) == Some(3), "{of_dr}");
    let latest = json_ok(&format!("{base}/v1/job/{JOB}/deployment")).await?;
    ensure!(latest["ID"] == dr_id.as_str(), "{latest}");
    // A terminal deployment cannot be promoted, paused or failed: 400.
    for (op, body) in [
        ("promote", json!({"DeploymentID": dr_id, "All": true})),
        ("pause", json!({"DeploymentID": dr_id, "Pause": true})),
        ("fail", json!({})),
    ] {
        let reply = put_json(&format!("{base}/v1/deployment/{op}/{dr_id}"), &body).await?;
        ensure!(reply.status == StatusCode::BAD_REQUEST, "{op}: {reply:?}");
    }
    let unknown = put_json(
        &format!("{base}/v1/deployment/promote/00000000-0000-0000-0000-000000000000"),
        &json!({"All": true}),
    )
    .await?;
    ensure!(unknown.status == StatusCode::NOT_FOUND, "{unknown:?}");

    // 4. Version 3 cannot start: its allocations turn unhealthy, no
    // progress is made by the deadline, the deployment fails and rolls
    // back to version 2's spec, registered as version 4.
    register(&base, job(3, 0, true))
        .await?
        .expect(StatusCode::OK)?;
    let d3 = deployment_of(&base, 3).await?;
    let d3_id = d3["ID"].as_str().context("ID")?.to_string();
    let d3 = wait_status(&base, &d3_id, "failed").await?;
    ensure!(
        d3["StatusDescription"]
            == "Failed due to progress deadline - rolling back to job version 2",
        "{d3}"
    );
    ensure!(
        d3["TaskGroups"]["web"]["UnhealthyAllocs"].as_i64() >= Some(1),
        "{d3}"
    );
    let v4 = poll("version 4", WAIT, || async {
        let j = json_ok(&format!("{base}/v1/job/{JOB}")).await.ok()?;
        (j["Version"] == 4).then_some(j)
    })
    .await?;
    ensure!(
        v4["TaskGroups"][0]["Tasks"][0]["Env"]["VERSION"] == "2",
        "version 4 is version 2's spec: {v4}"
    );
    let d4 = deployment_of(&base, 4).await?;
    let d4_id = d4["ID"].as_str().context("ID")?.to_string();
    wait_status(&base, &d4_id, "successful").await?;
    wait_all_at(&base, 4).await?;
    let versions = json_ok(&format!("{base}/v1/job/{JOB}/versions")).await?;
    let stable: Vec<u64> = versions["Versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|v| v["Stable"] == true)
        .filter_map(|v| v["Version"].as_u64())
        .collect();
    ensure!(
        !stable.contains(&3),
        "the failed version is not stable: {stable:?}"
    );
    ensure!(
        stable.contains(&4),
        "the rollback's version is stable: {stable:?}"
    );

    // Revert and stability endpoints.
    let current = put_json(
        &format!("{base}/v1/job/{JOB}/revert"),
        &json!({"JobID": JOB, "JobVersion": 4}),
    )
    .await?;
    ensure!(current.status == StatusCode::BAD_REQUEST, "{current:?}");
    let unstable = put_json(
        &format!("{base}/v1/job/{JOB}/stable"),
        &json!({"JobID": JOB, "JobVersion": 4, "Stable": false}),
    )
    .await?
    .expect(StatusCode::OK)?;
    ensure!(unstable.json()["Index"].as_u64() > Some(0), "{unstable:?}");
    let j = json_ok(&format!("{base}/v1/job/{JOB}")).await?;
    ensure!(j["Stable"] == false, "{j}");
    let reverted = put_json(
        &format!("{base}/v1/job/{JOB}/revert"),
        &json!({"JobID": JOB, "JobVersion": 1, "EnforcePriorVersion": 4}),
    )
    .await?
    .expect(StatusCode::OK)?
    .json();
    ensure!(
        reverted["EvalID"].as_str().is_some_and(|e| !e.is_empty()),
        "{reverted}"
    );
    let j = json_ok(&format!("{base}/v1/job/{JOB}")).await?;
    ensure!(
        j["Version"] == 5 && j["TaskGroups"][0]["Tasks"][0]["Env"]["VERSION"] == "1",
        "{j}"
    );

    agent.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_canary_promotion_and_auto_revert() -> anyhow::Result<()> {
    let _serial = serial().await;
    atoll_tests::init_logging();
    let dir = tempfile::Builder::new().prefix("atoll-deploy-").tempdir()?;
    let r = TestRegion::start(1, REGION).await?;
    let result = scenario(&r, dir.path()).await;
    r.shutdown().await;
    result
}
