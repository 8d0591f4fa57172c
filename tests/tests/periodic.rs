//! Periodic and parameterized jobs in-process: a one-server region with a
//! simulated client node (mock driver).
//!
//! - a periodic job (`*/1 * * * * * *`, every second) launches children
//!   `<id>/periodic-<unix>` with `ParentID` set; the parent itself gets no
//!   evaluation and no allocation; its summary counts the children;
//! - `ProhibitOverlap` holds launches while a child runs (a second periodic
//!   job on the same schedule is the witness that launches happened), and
//!   `/periodic/force` launches anyway;
//! - `/v1/job/:id/dispatch` checks payload and meta against the job's
//!   rules, answers an idempotency token's retry with the same child, and
//!   the child carries the payload and the merged meta;
//! - a bad cron spec or time zone is a 400 naming the field;
//! - the leader garbage-collects dead children past the job GC threshold,
//!   never the parent or a child that still runs.

use anyhow::{ensure, Context};
use atoll_tests::{get_json, poll, put_json, register, TestRegion, DEFAULT_TIMEOUT};
use base64::Engine as _;
use client_agent::SimulatedFleet;
use ops_kit::tls::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

const REGION: &str = "periodic";

async fn region_with_node() -> anyhow::Result<(TestRegion, SimulatedFleet, String)> {
    region_with_node_and(|_| {}).await
}

async fn region_with_node_and(
    tweak: impl Fn(&mut region_server::ServerConfig),
) -> anyhow::Result<(TestRegion, SimulatedFleet, String)> {
    atoll_tests::init_logging();
    let r = TestRegion::start_with(1, REGION, tweak).await?;
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    let tls = r.ca.issue(Role::Client, REGION)?;
    let fleet = SimulatedFleet::start(1, vec![r.rpc_addr(0)], tls, REGION).await?;
    ensure!(
        fleet.wait_registered(DEFAULT_TIMEOUT).await,
        "the simulated node did not register"
    );
    let base = r.http(0);
    Ok((r, fleet, base))
}

/// A batch job whose mock task runs `run_for` (`None`: until stopped).
fn batch_job(id: &str, run_for: Option<&str>) -> Value {
    let mut config = json!({});
    if let Some(d) = run_for {
        config["run_for"] = json!(d);
    }
    json!({
        "ID": id,
        "Type": "batch",
        "TaskGroups": [{
            "Name": "g",
            "Tasks": [{
                "Name": "t",
                "Driver": "mock_driver",
                "Config": config,
                "Resources": {"CPU": 10, "MemoryMB": 16}
            }]
        }]
    })
}

fn periodic(mut job: Value, spec: &str, prohibit_overlap: bool) -> Value {
    job["Periodic"] = json!({
        "Enabled": true,
        "Spec": spec,
        "SpecType": "cron",
        "ProhibitOverlap": prohibit_overlap,
        "TimeZone": "UTC"
    });
    job
}

fn enc(id: &str) -> String {
    id.replace('/', "%2F")
}

/// Jobs whose ID starts with `prefix`.
async fn jobs_with_prefix(base: &str, prefix: &str) -> anyhow::Result<Vec<Value>> {
    let (code, v) = get_json(&format!("{base}/v1/jobs?prefix={}", enc(prefix))).await?;
    ensure!(code == StatusCode::OK, "jobs: {code} {v}");
    Ok(v.as_array().cloned().unwrap_or_default())
}

async fn children(base: &str, parent: &str) -> anyhow::Result<Vec<Value>> {
    Ok(jobs_with_prefix(base, &format!("{parent}/"))
        .await?
        .into_iter()
        .filter(|j| j["ParentID"] == parent)
        .collect())
}

async fn wait_children(base: &str, parent: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    poll(
        &format!("{n} children of {parent}"),
        DEFAULT_TIMEOUT,
        || async {
            let c = children(base, parent).await.ok()?;
            (c.len() >= n).then_some(c)
        },
    )
    .await
}

async fn must_register(base: &str, job: Value) -> anyhow::Result<Value> {
    Ok(register(base, job).await?.expect(StatusCode::OK)?.json())
}

async fn list_len(base: &str, path: &str) -> anyhow::Result<usize> {
    let (code, v) = get_json(&format!("{base}{path}")).await?;
    ensure!(code == StatusCode::OK, "{path}: {code} {v}");
    Ok(v.as_array().map(Vec::len).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn periodic_jobs_launch_children_on_their_schedule() -> anyhow::Result<()> {
    let (r, _fleet, base) = region_with_node().await?;

    let reg = must_register(
        &base,
        periodic(batch_job("tick", Some("50ms")), "*/1 * * * * * *", false),
    )
    .await?;
    ensure!(
        reg["EvalID"] == "",
        "a periodic job gets no evaluation: {reg}"
    );

    let kids = wait_children(&base, "tick", 3).await?;
    for kid in &kids {
        let id = kid["ID"].as_str().context("child ID")?;
        let secs = id
            .strip_prefix("tick/periodic-")
            .with_context(|| format!("child ID {id}"))?;
        ensure!(secs.parse::<i64>().is_ok(), "child ID {id}");
        ensure!(
            kid["Periodic"] == false,
            "child {id} is not periodic: {kid}"
        );
        let (code, job) = get_json(&format!("{base}/v1/job/{}", enc(id))).await?;
        ensure!(code == StatusCode::OK, "GET child {id}: {code} {job}");
        ensure!(job["ParentID"] == "tick" && job["Name"] == id, "{job}");
        ensure!(job["Periodic"].is_null(), "child keeps no schedule: {job}");
    }

    // Children run and finish on the node; the parent counts them.
    let summary = poll("a dead child counted", DEFAULT_TIMEOUT, || async {
        let (_, s) = get_json(&format!("{base}/v1/job/tick/summary"))
            .await
            .ok()?;
        (s["Children"]["Dead"].as_i64().unwrap_or(0) >= 1).then_some(s)
    })
    .await?;
    ensure!(summary["Children"].is_object(), "{summary}");

    // The parent itself never runs.
    ensure!(list_len(&base, "/v1/job/tick/allocations").await? == 0);
    ensure!(list_len(&base, "/v1/job/tick/evaluations").await? == 0);
    let (_, parent) = get_json(&format!("{base}/v1/job/tick")).await?;
    ensure!(parent["Status"] == "running", "{parent}");

    // Evaluating a template is refused.
    let r2 = put_json(&format!("{base}/v1/job/tick/evaluate"), &json!({})).await?;
    ensure!(r2.status == StatusCode::BAD_REQUEST, "{}", r2.body);

    // A stopped periodic job launches no more.
    atoll_tests::delete(&format!("{base}/v1/job/tick")).await?;
    let before = children(&base, "tick").await?.len();
    // Witness: another every-second job launches twice more meanwhile.
    must_register(
        &base,
        periodic(batch_job("witness", Some("10ms")), "*/1 * * * * * *", false),
    )
    .await?;
    wait_children(&base, "witness", 2).await?;
    let after = children(&base, "tick").await?.len();
    ensure!(
        after <= before + 1,
        "a stopped periodic job kept launching: {before} -> {after}"
    );
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prohibit_overlap_holds_launches_and_force_launches_anyway() -> anyhow::Result<()> {
    let (r, _fleet, base) = region_with_node().await?;

    // Children of "long" run until stopped.
    must_register(
        &base,
        periodic(batch_job("long", None), "*/1 * * * * * *", true),
    )
    .await?;
    let first = wait_children(&base, "long", 1).await?;
    // The witness launches three times after that.
    must_register(
        &base,
        periodic(batch_job("beat", Some("10ms")), "*/1 * * * * * *", false),
    )
    .await?;
    wait_children(&base, "beat", 3).await?;
    let now = children(&base, "long").await?;
    ensure!(
        now.len() == first.len(),
        "prohibit_overlap: launches while a child ran: {} -> {}",
        first.len(),
        now.len()
    );

    // Force ignores the overlap rule.
    let forced = put_json(&format!("{base}/v1/job/long/periodic/force"), &json!({}))
        .await?
        .expect(StatusCode::OK)?
        .json();
    ensure!(
        forced["EvalID"].as_str().is_some_and(|e| !e.is_empty()),
        "force answer: {forced}"
    );
    ensure!(
        forced["EvalCreateIndex"].as_u64().unwrap_or(0) > 0,
        "{forced}"
    );
    let (code, eval) = get_json(&format!(
        "{base}/v1/evaluation/{}",
        forced["EvalID"].as_str().unwrap_or("")
    ))
    .await?;
    ensure!(code == StatusCode::OK, "{eval}");
    ensure!(eval["TriggeredBy"] == "periodic-job", "{eval}");
    ensure!(
        eval["JobID"]
            .as_str()
            .is_some_and(|j| j.starts_with("long/periodic-")),
        "{eval}"
    );
    wait_children(&base, "long", first.len() + 1).await?;

    // Force of a job that is not periodic, or unknown.
    must_register(&base, batch_job("plain", Some("10ms"))).await?;
    let r1 = put_json(&format!("{base}/v1/job/plain/periodic/force"), &json!({})).await?;
    ensure!(r1.status == StatusCode::BAD_REQUEST, "{}", r1.body);
    let r2 = put_json(&format!("{base}/v1/job/nope/periodic/force"), &json!({})).await?;
    ensure!(r2.status == StatusCode::NOT_FOUND, "{}", r2.body);
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_on_a_rare_schedule_and_bad_specs() -> anyhow::Result<()> {
    atoll_tests::init_logging();
    let r = TestRegion::start(1, REGION).await?;
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    let base = r.http(0);

    // Bad spec and bad time zone: 400 naming the field.
    let bad = register(&base, periodic(batch_job("bad", None), "61 * * * *", false)).await?;
    ensure!(bad.status == StatusCode::BAD_REQUEST, "{}", bad.body);
    ensure!(bad.body.contains("Periodic.Spec"), "{}", bad.body);
    let mut tz = periodic(batch_job("bad", None), "0 3 * * *", false);
    tz["Periodic"]["TimeZone"] = json!("Mars/Olympus_Mons");
    let bad = register(&base, tz).await?;
    ensure!(bad.status == StatusCode::BAD_REQUEST, "{}", bad.body);
    ensure!(bad.body.contains("Periodic.TimeZone"), "{}", bad.body);
    // Periodic service jobs are refused too.
    let mut svc = periodic(batch_job("bad", None), "0 3 * * *", false);
    svc["Type"] = json!("service");
    let bad = register(&base, svc).await?;
    ensure!(bad.status == StatusCode::BAD_REQUEST, "{}", bad.body);

    // Once a year, in a named time zone: nothing runs until forced.
    let mut yearly = periodic(batch_job("yearly", None), "0 0 1 1 *", false);
    yearly["Periodic"]["TimeZone"] = json!("Europe/Paris");
    must_register(&base, yearly).await?;
    ensure!(children(&base, "yearly").await?.is_empty());
    put_json(&format!("{base}/v1/job/yearly/periodic/force"), &json!({}))
        .await?
        .expect(StatusCode::OK)?;
    let kids = wait_children(&base, "yearly", 1).await?;
    ensure!(kids.len() == 1, "{kids:?}");
    let summary = poll("the child counted", DEFAULT_TIMEOUT, || async {
        let (_, s) = get_json(&format!("{base}/v1/job/yearly/summary"))
            .await
            .ok()?;
        let c = &s["Children"];
        let total = ["Pending", "Running", "Dead"]
            .iter()
            .map(|k| c[*k].as_i64().unwrap_or(0))
            .sum::<i64>();
        (total == 1).then_some(s)
    })
    .await?;
    // No node: the child's evaluation is blocked, so it is pending.
    ensure!(summary["Children"]["Pending"] == 1, "{summary}");

    // The plan shows the next launch, in the job's time zone.
    let (code, plan) = {
        let job = get_json(&format!("{base}/v1/job/yearly")).await?.1;
        let reply = put_json(
            &format!("{base}/v1/job/yearly/plan"),
            &json!({ "Job": job, "Diff": false }),
        )
        .await?;
        (reply.status, reply.json())
    };
    ensure!(code == StatusCode::OK, "{plan}");
    ensure!(
        plan["NextPeriodicLaunch"]
            .as_str()
            .is_some_and(|t| t.ends_with("-01-01T00:00:00+01:00")),
        "next launch of a yearly Paris job: {plan}"
    );
    r.shutdown().await;
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispatch_checks_payload_meta_and_idempotency() -> anyhow::Result<()> {
    atoll_tests::init_logging();
    let r = TestRegion::start(1, REGION).await?;
    r.wait_leader(DEFAULT_TIMEOUT).await?;
    let base = r.http(0);

    let mut job = batch_job("render", Some("10ms"));
    job["ParameterizedJob"] = json!({
        "Payload": "required",
        "MetaRequired": ["size"],
        "MetaOptional": ["color"]
    });
    job["Meta"] = json!({"owner": "ops", "color": "blue"});
    job["TaskGroups"][0]["Tasks"][0]["DispatchPayload"] = json!({"File": "input.txt"});
    let reg = must_register(&base, job).await?;
    ensure!(
        reg["EvalID"] == "",
        "a parameterized job gets no evaluation: {reg}"
    );

    let url = format!("{base}/v1/job/render/dispatch");
    let dispatch = |body: Value| {
        let url = url.clone();
        async move { put_json(&url, &body).await }
    };

    // Rule violations.
    let cases = [
        (
            json!({"Meta": {"size": "1"}}),
            StatusCode::BAD_REQUEST,
            "Payload is not provided",
        ),
        (
            json!({"Payload": b64(b"x"), "Meta": {"size": "1", "shape": "round"}}),
            StatusCode::BAD_REQUEST,
            "unpermitted metadata keys",
        ),
        (
            json!({"Payload": b64(b"x"), "Meta": {"color": "red"}}),
            StatusCode::BAD_REQUEST,
            "required meta keys",
        ),
        (
            json!({"Payload": b64(&vec![b'a'; 16 * 1024 + 1]), "Meta": {"size": "1"}}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload exceeds maximum size",
        ),
        (
            json!({"Payload": "%%% not base64", "Meta": {"size": "1"}}),
            StatusCode::BAD_REQUEST,
            "base64",
        ),
    ];
    for (body, status, words) in cases {
        let reply = dispatch(body.clone()).await?;
        ensure!(
            reply.status == status && reply.body.contains(words),
            "dispatch {body}: expected {status} with {words:?}, got {} {}",
            reply.status,
            reply.body
        );
    }
    ensure!(children(&base, "render").await?.is_empty());

    // Success, at the size limit.
    let payload = vec![b'p'; 16 * 1024];
    let ok = dispatch(json!({
        "Payload": b64(&payload),
        "Meta": {"size": "10", "color": "red"},
        "IdempotencyToken": "once"
    }))
    .await?
    .expect(StatusCode::OK)?
    .json();
    let child_id = ok["DispatchedJobID"]
        .as_str()
        .context("DispatchedJobID")?
        .to_string();
    let suffix = child_id
        .strip_prefix("render/dispatch-")
        .with_context(|| format!("child ID {child_id}"))?;
    let (secs, hex) = suffix.split_once('-').context("dispatch suffix")?;
    ensure!(secs.parse::<i64>().is_ok(), "{child_id}");
    ensure!(
        hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{child_id}"
    );
    ensure!(ok["EvalID"].as_str().is_some_and(|e| !e.is_empty()), "{ok}");
    ensure!(ok["EvalCreateIndex"].as_u64().unwrap_or(0) > 0, "{ok}");
    ensure!(ok["JobCreateIndex"].as_u64().unwrap_or(0) > 0, "{ok}");
    ensure!(ok["Index"].as_u64().unwrap_or(0) > 0, "{ok}");

    let (code, child) = get_json(&format!("{base}/v1/job/{}", enc(&child_id))).await?;
    ensure!(code == StatusCode::OK, "{child}");
    ensure!(
        child["ParentID"] == "render" && child["Dispatched"] == true,
        "{child}"
    );
    ensure!(child["Payload"] == b64(&payload), "payload kept");
    ensure!(
        child["Meta"] == json!({"owner": "ops", "color": "red", "size": "10"}),
        "merged meta: {}",
        child["Meta"]
    );

    // The same token again: the same child, no new evaluation.
    let again = dispatch(json!({
        "Payload": b64(b"other"),
        "Meta": {"size": "2"},
        "IdempotencyToken": "once"
    }))
    .await?
    .expect(StatusCode::OK)?
    .json();
    ensure!(again["DispatchedJobID"] == child_id.as_str(), "{again}");
    ensure!(again["EvalID"] == "", "{again}");
    // Another token: another child.
    let other = dispatch(json!({"Payload": b64(b"y"), "Meta": {"size": "3"}}))
        .await?
        .expect(StatusCode::OK)?
        .json();
    ensure!(other["DispatchedJobID"] != child_id.as_str(), "{other}");
    ensure!(children(&base, "render").await?.len() == 2);

    // The template never runs.
    ensure!(list_len(&base, "/v1/job/render/allocations").await? == 0);
    ensure!(list_len(&base, "/v1/job/render/evaluations").await? == 0);

    // Forbidden payloads, not parameterized, unknown.
    let mut quiet = batch_job("quiet", Some("10ms"));
    quiet["ParameterizedJob"] = json!({"Payload": "forbidden"});
    must_register(&base, quiet).await?;
    let reply = put_json(
        &format!("{base}/v1/job/quiet/dispatch"),
        &json!({"Payload": b64(b"x")}),
    )
    .await?;
    ensure!(
        reply.status == StatusCode::BAD_REQUEST && reply.body.contains("not permitted"),
        "{} {}",
        reply.status,
        reply.body
    );
    put_json(&format!("{base}/v1/job/quiet/dispatch"), &json!({}))
        .await?
        .expect(StatusCode::OK)?;
    must_register(&base, batch_job("plain", Some("10ms"))).await?;
    let reply = put_json(&format!("{base}/v1/job/plain/dispatch"), &json!({})).await?;
    ensure!(reply.status == StatusCode::BAD_REQUEST, "{}", reply.body);
    let reply = put_json(&format!("{base}/v1/job/nope/dispatch"), &json!({})).await?;
    ensure!(reply.status == StatusCode::NOT_FOUND, "{}", reply.body);
    // A bad parameterized block is a 400 naming the field.
    let mut bad = batch_job("badparam", None);
    bad["ParameterizedJob"] = json!({"Payload": "sometimes"});
    let reply = register(&base, bad).await?;
    ensure!(
        reply.status == StatusCode::BAD_REQUEST && reply.body.contains("ParameterizedJob.Payload"),
        "{}",
        reply.body
    );
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_autopilot_health_and_configurations() -> anyhow::Result<()> {
    atoll_tests::init_logging();
    let r = TestRegion::start(3, "ops").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let follower = r.others(leader)[0];
    let base = r.http(follower);

    // Health, asked of a follower: three healthy voters, one leader.
    let health = poll("a healthy region", DEFAULT_TIMEOUT, || async {
        let (code, h) = get_json(&format!("{base}/v1/operator/autopilot/health"))
            .await
            .ok()?;
        (code == StatusCode::OK && h["Healthy"] == true).then_some(h)
    })
    .await?;
    ensure!(health["FailureTolerance"] == 1, "{health}");
    let servers = health["Servers"].as_array().context("Servers")?;
    ensure!(servers.len() == 3, "{health}");
    ensure!(
        servers.iter().filter(|s| s["Leader"] == true).count() == 1,
        "{health}"
    );
    for s in servers {
        for key in [
            "ID",
            "Name",
            "Address",
            "SerfStatus",
            "Version",
            "LastContact",
            "StableSince",
        ] {
            ensure!(s[key].as_str().is_some(), "{key} in {s}");
        }
        ensure!(s["Voter"] == true && s["Healthy"] == true, "{s}");
        ensure!(s["SerfStatus"] == "alive", "{s}");
        ensure!(s["LastIndex"].as_u64().unwrap_or(0) > 0, "{s}");
        ensure!(s["LastTerm"].as_u64().unwrap_or(0) > 0, "{s}");
    }

    // Scheduler configuration: defaults, a write, check-and-set, bad input.
    let url = format!("{base}/v1/operator/scheduler/configuration");
    let (code, cfg) = get_json(&url).await?;
    ensure!(code == StatusCode::OK, "{cfg}");
    ensure!(
        cfg["SchedulerConfig"]["SchedulerAlgorithm"] == "binpack",
        "{cfg}"
    );
    ensure!(
        cfg["SchedulerConfig"]["PreemptionConfig"]["SystemSchedulerEnabled"] == true,
        "{cfg}"
    );
    let set = put_json(
        &url,
        &json!({"SchedulerAlgorithm": "spread", "MemoryOversubscriptionEnabled": true}),
    )
    .await?
    .expect(StatusCode::OK)?
    .json();
    ensure!(
        set["Updated"] == true && set["Index"].as_u64().unwrap_or(0) > 0,
        "{set}"
    );
    let (_, cfg) = get_json(&url).await?;
    let modify = cfg["SchedulerConfig"]["ModifyIndex"].as_u64().unwrap_or(0);
    ensure!(
        cfg["SchedulerConfig"]["SchedulerAlgorithm"] == "spread",
        "{cfg}"
    );
    ensure!(
        cfg["SchedulerConfig"]["MemoryOversubscriptionEnabled"] == true,
        "{cfg}"
    );
    ensure!(modify > 0, "{cfg}");
    let stale = put_json(
        &format!("{url}?cas={}", modify - 1),
        &json!({"SchedulerAlgorithm": "binpack"}),
    )
    .await?
    .expect(StatusCode::OK)?
    .json();
    ensure!(stale["Updated"] == false, "{stale}");
    let fresh = put_json(
        &format!("{url}?cas={modify}"),
        &json!({"SchedulerAlgorithm": "binpack"}),
    )
    .await?
    .expect(StatusCode::OK)?
    .json();
    ensure!(fresh["Updated"] == true, "{fresh}");
    let bad = put_json(&url, &json!({"SchedulerAlgorithm": "random"})).await?;
    ensure!(
        bad.status == StatusCode::BAD_REQUEST && bad.body.contains("SchedulerAlgorithm"),
        "{} {}",
        bad.status,
        bad.body
    );

    // PauseEvalBroker holds evaluations until it is lifted.
    put_json(&url, &json!({"PauseEvalBroker": true}))
        .await?
        .expect(StatusCode::OK)?;
    let reg = register(&base, batch_job("held", Some("10ms")))
        .await?
        .expect(StatusCode::OK)?
        .json();
    let eval_id = reg["EvalID"].as_str().context("EvalID")?.to_string();
    // Witness: a periodic launch goes through Raft meanwhile, so the leader
    // was busy and still did not schedule the held evaluation.
    must_register(
        &base,
        periodic(batch_job("pulse", Some("10ms")), "*/1 * * * * * *", false),
    )
    .await?;
    wait_children(&base, "pulse", 2).await?;
    let (_, eval) = get_json(&format!("{base}/v1/evaluation/{eval_id}")).await?;
    ensure!(eval["Status"] == "pending", "paused broker: {eval}");
    put_json(&url, &json!({"PauseEvalBroker": false}))
        .await?
        .expect(StatusCode::OK)?;
    poll("the held evaluation processed", DEFAULT_TIMEOUT, || async {
        let (_, e) = get_json(&format!("{base}/v1/evaluation/{eval_id}"))
            .await
            .ok()?;
        (e["Status"] != "pending").then_some(())
    })
    .await?;

    // Autopilot configuration: defaults and a write.
    let url = format!("{base}/v1/operator/autopilot/configuration");
    let (code, ap) = get_json(&url).await?;
    ensure!(code == StatusCode::OK, "{ap}");
    ensure!(
        ap["LastContactThreshold"] == "200ms" && ap["MaxTrailingLogs"] == 250,
        "{ap}"
    );
    let mut changed = ap.clone();
    changed["MaxTrailingLogs"] = json!(500);
    let set = put_json(&url, &changed)
        .await?
        .expect(StatusCode::OK)?
        .json();
    ensure!(set["Updated"] == true, "{set}");
    let (_, ap) = get_json(&url).await?;
    ensure!(ap["MaxTrailingLogs"] == 500, "{ap}");
    let mut bad = ap.clone();
    bad["LastContactThreshold"] = json!("soon");
    let reply = put_json(&url, &bad).await?;
    ensure!(reply.status == StatusCode::BAD_REQUEST, "{}", reply.body);
    r.shutdown().await;
    Ok(())
}

async fn job_allocs(base: &str, job: &str) -> anyhow::Result<Vec<Value>> {
    let (code, v) = get_json(&format!("{base}/v1/job/{job}/allocations")).await?;
    ensure!(code == StatusCode::OK, "allocations of {job}: {code} {v}");
    Ok(v.as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_moves_service_allocs_then_enforces_the_deadline_and_completes() -> anyhow::Result<()>
{
    let (r, fleet_a, base) = region_with_node().await?;
    let node_a = fleet_a.node_ids()[0].clone();
    let mut svc = batch_job("svc", None);
    svc["Type"] = json!("service");
    svc["TaskGroups"][0]["Count"] = json!(2);
    must_register(&base, svc).await?;
    must_register(&base, batch_job("bat", None)).await?;
    poll("three allocations running", DEFAULT_TIMEOUT, || async {
        let mut n = 0;
        for job in ["svc", "bat"] {
            n += job_allocs(&base, job)
                .await
                .ok()?
                .iter()
                .filter(|a| a["ClientStatus"] == "running")
                .count();
        }
        (n == 3).then_some(())
    })
    .await?;

    // A second node to move to.
    let mut cfg = client_agent::FleetConfig::new(1, vec![r.rpc_addr(0)], REGION);
    cfg.name_prefix = "other-".into();
    let fleet_b = SimulatedFleet::start_with(cfg, r.ca.issue(Role::Client, REGION)?).await?;
    ensure!(fleet_b.wait_registered(DEFAULT_TIMEOUT).await, "node b");
    let node_b = fleet_b.node_ids()[0].clone();

    put_json(
        &format!("{base}/v1/node/{node_a}/drain"),
        &json!({"DrainSpec": {"Deadline": 3_000_000_000i64, "IgnoreSystemJobs": false}}),
    )
    .await?
    .expect(StatusCode::OK)?;
    let (_, node) = get_json(&format!("{base}/v1/node/{node_a}")).await?;
    let force_deadline = node["DrainStrategy"]["ForceDeadline"]
        .as_str()
        .context("ForceDeadline")?
        .to_string();
    let force_ns = proto::model::time::parse_rfc3339(&force_deadline).context("deadline")?;

    let node = poll("the drain completes", DEFAULT_TIMEOUT, || async {
        let (_, n) = get_json(&format!("{base}/v1/node/{node_a}")).await.ok()?;
        (n["DrainStrategy"].is_null() && n["LastDrain"]["Status"] == "complete").then_some(n)
    })
    .await?;
    ensure!(node["SchedulingEligibility"] == "ineligible", "{node}");

    // Service allocations moved, one plan at a time (MaxParallel 1).
    let svc = job_allocs(&base, "svc").await?;
    let moved: Vec<&Value> = svc
        .iter()
        .filter(|a| a["NodeID"] == node_a.as_str())
        .collect();
    ensure!(moved.len() == 2, "{svc:?}");
    for a in &moved {
        ensure!(a["DesiredStatus"] == "stop", "{a}");
    }
    let mut replacements: Vec<u64> = svc
        .iter()
        .filter(|a| a["NodeID"] == node_b.as_str() && a["DesiredStatus"] == "run")
        .map(|a| a["CreateIndex"].as_u64().unwrap_or(0))
        .collect();
    replacements.sort();
    replacements.dedup();
    ensure!(
        replacements.len() == 2,
        "two replacements by two plans: {svc:?}"
    );

    // The batch allocation stayed until the deadline, then was moved.
    let bat = job_allocs(&base, "bat").await?;
    let old = bat
        .iter()
        .find(|a| a["NodeID"] == node_a.as_str())
        .context("batch alloc on a")?;
    ensure!(old["DesiredStatus"] == "stop", "{old}");
    let stopped_at = old["ModifyTime"].as_i64().unwrap_or(0);
    ensure!(
        stopped_at >= force_ns,
        "batch allocation stopped at {stopped_at}, before the deadline {force_ns}"
    );
    ensure!(
        bat.iter()
            .any(|a| a["NodeID"] == node_b.as_str() && a["DesiredStatus"] == "run"),
        "{bat:?}"
    );
    r.shutdown().await;
    Ok(())
}

/// The dispatcher runs on whichever server leads: after the leader stops,
/// the new one keeps launching from the launches recorded in the state,
/// with no launch time repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_keeps_launching_without_repeating() -> anyhow::Result<()> {
    atoll_tests::init_logging();
    let _serial = atoll_tests::serial().await;
    let mut r = TestRegion::start(3, "failover").await?;
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let other = r.others(leader)[0];
    let base = r.http(other);
    must_register(
        &base,
        periodic(batch_job("every", Some("10ms")), "*/1 * * * * * *", false),
    )
    .await?;
    let before = wait_children(&base, "every", 2).await?.len();
    r.stop(leader).await;
    r.wait_leader_among(&r.others(leader), DEFAULT_TIMEOUT)
        .await?;
    let after = wait_children(&base, "every", before + 2).await?;
    let mut launches: Vec<i64> = after
        .iter()
        .filter_map(|j| {
            j["ID"]
                .as_str()?
                .strip_prefix("every/periodic-")?
                .parse()
                .ok()
        })
        .collect();
    let n = launches.len();
    launches.sort();
    launches.dedup();
    ensure!(launches.len() == n && n == after.len(), "{after:?}");
    r.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_collects_dead_children_past_the_gc_threshold() -> anyhow::Result<()> {
    let (_r, _fleet, base) = region_with_node_and(|c| {
        c.leader.gc = region_server::leader::gc::GcConfig {
            interval: std::time::Duration::from_millis(300),
            job_threshold: std::time::Duration::from_secs(3),
        };
    })
    .await?;
    // Children that finish at once, and one child that runs until stopped.
    must_register(
        &base,
        periodic(batch_job("brief", Some("10ms")), "*/1 * * * * * *", false),
    )
    .await?;
    must_register(
        &base,
        periodic(batch_job("lasting", None), "*/1 * * * * * *", true),
    )
    .await?;
    let first = wait_children(&base, "brief", 1).await?[0]["ID"]
        .as_str()
        .context("child ID")?
        .to_string();
    let lasting = wait_children(&base, "lasting", 1).await?[0]["ID"]
        .as_str()
        .context("child ID")?
        .to_string();
    let url = format!("{base}/v1/job/{}", enc(&first));
    let t = std::time::Instant::now();
    poll(
        "the first dead child to be collected",
        DEFAULT_TIMEOUT,
        || async {
            let (code, _) = get_json(&url).await.ok()?;
            (code == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await?;
    ensure!(
        t.elapsed() >= std::time::Duration::from_secs(2),
        "collected after {:?}, before the 3 s threshold",
        t.elapsed()
    );
    // The parents stay, the running child stays, and children keep coming.
    for parent in ["brief", "lasting"] {
        let (code, job) = get_json(&format!("{base}/v1/job/{parent}")).await?;
        ensure!(code == StatusCode::OK, "{parent} was collected: {job}");
    }
    let (code, job) = get_json(&format!("{base}/v1/job/{}", enc(&lasting))).await?;
    ensure!(
        code == StatusCode::OK,
        "the running child {lasting} was collected: {job}"
    );
    let kids = children(&base, "brief").await?;
    ensure!(!kids.is_empty(), "no recent child of brief is left");
    ensure!(
        kids.len() < 10,
        "{} children of brief: dead ones are not being collected",
        kids.len()
    );
    Ok(())
}
