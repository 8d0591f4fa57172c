//! In-process: a one-server region's leader turns registered jobs into
//! allocations through the broker, a worker and the plan applier.

use std::time::{Duration, Instant};

use region_server::scheduler::harness::mock;
use region_server::state::Command;
use region_server::{RegionServer, ServerConfig};
use serde_json::{json, Value};

async fn start() -> (RegionServer, tempfile::TempDir) {
    ops_kit::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ops_kit::tls::DevCa::generate().expect("ca");
    let bundle = ca
        .issue(ops_kit::tls::Role::Server, "global")
        .expect("cert");
    let cfg = ServerConfig::dev("s1", "global", dir.path().join("s1"), bundle);
    let server = RegionServer::start(cfg).await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.service.is_leader() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (server, dir)
}

async fn register_nodes(server: &RegionServer, range: std::ops::Range<usize>) {
    for i in range {
        let mut node = mock::node(i);
        node.secret_id = format!("secret-{i}");
        server
            .service
            .write(Command::NodeRegister {
                node: Box::new(node),
                evals: Vec::new(),
                now: 0,
            })
            .await
            .expect("register node");
    }
}

fn job(id: &str, count: u32, memory_mb: u32) -> Value {
    json!({"Job": {
        "ID": id,
        "Datacenters": ["dc1"],
        "TaskGroups": [{
            "Name": "web",
            "Count": count,
            "Tasks": [{
                "Name": "app",
                "Driver": "mock_driver",
                "Config": {"run_for": "1h"},
                "Resources": {"CPU": 100, "MemoryMB": memory_mb}
            }]
        }]
    }})
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn wait_for<F: Fn(&Value) -> bool>(base: &str, path: &str, what: &str, f: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(base, path).await;
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: last {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn running(allocs: &Value) -> usize {
    allocs
        .as_array()
        .map(|a| a.iter().filter(|x| x["DesiredStatus"] == "run").count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_are_placed_stopped_and_blocked_until_capacity() {
    let (server, _dir) = start().await;
    let base = format!("http://{}", server.http_addr);
    register_nodes(&server, 0..3).await;
    let client = reqwest::Client::new();

    // Placed: five allocations spread over the three nodes.
    let r: Value = client
        .put(format!("{base}/v1/jobs"))
        .json(&job("web", 5, 256))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let eval_id = r["EvalID"].as_str().expect("eval id").to_string();
    let allocs = wait_for(&base, "/v1/job/web/allocations", "5 allocations", |v| {
        running(v) == 5
    })
    .await;
    for a in allocs.as_array().expect("list") {
        assert_eq!(a["JobID"], "web");
        assert!(a["NodeID"].as_str().is_some_and(|n| !n.is_empty()));
    }
    wait_for(
        &base,
        &format!("/v1/evaluation/{eval_id}"),
        "eval complete",
        |v| v["Status"] == "complete",
    )
    .await;

    // Scaled down: two are stopped.
    client
        .put(format!("{base}/v1/jobs"))
        .json(&job("web", 3, 256))
        .send()
        .await
        .expect("update");
    wait_for(&base, "/v1/job/web/allocations", "3 running", |v| {
        running(v) == 3
    })
    .await;

    // Too big for any node: blocked, then placed when a large node joins.
    let r: Value = client
        .put(format!("{base}/v1/jobs"))
        .json(&job("big", 1, 10_000))
        .send()
        .await
        .expect("register big")
        .json()
        .await
        .expect("json");
    let eval_id = r["EvalID"].as_str().expect("eval id").to_string();
    let eval = wait_for(
        &base,
        &format!("/v1/evaluation/{eval_id}"),
        "failed placement",
        |v| {
            v["Status"] == "complete"
                && !v["FailedTGAllocs"].is_null()
                && v["FailedTGAllocs"] != json!({})
        },
    )
    .await;
    assert!(
        !eval["BlockedEval"].as_str().unwrap_or_default().is_empty(),
        "{eval}"
    );
    assert_eq!(running(&get(&base, "/v1/job/big/allocations").await), 0);
    let mut large = mock::node(10);
    large.secret_id = "s".into();
    large.node_resources.memory.memory_mb = 32_768;
    server
        .service
        .write(Command::NodeRegister {
            node: Box::new(large),
            evals: Vec::new(),
            now: 0,
        })
        .await
        .expect("large node");
    let allocs = wait_for(&base, "/v1/job/big/allocations", "big placed", |v| {
        running(v) == 1
    })
    .await;
    assert_eq!(allocs[0]["NodeID"], mock::node_id(10));

    // Stopped: every allocation is told to stop.
    client
        .delete(format!("{base}/v1/job/web"))
        .send()
        .await
        .expect("stop");
    wait_for(&base, "/v1/job/web/allocations", "all stopped", |v| {
        running(v) == 0
    })
    .await;
    server.shutdown().await;
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_drain_eligibility_stop_and_gc() {
    let (server, _dir) = start().await;
    let base = format!("http://{}", server.http_addr);
    register_nodes(&server, 0..2).await;
    let c = reqwest::Client::new();

    // A dry run places without committing anything.
    let (status, plan) = send(
        &c,
        reqwest::Method::PUT,
        format!("{base}/v1/job/web/plan"),
        Some(json!({"Job": job("web", 4, 256)["Job"], "Diff": true})),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        plan["Annotations"]["DesiredTGUpdates"]["web"]["Place"], 4,
        "{plan}"
    );
    assert_eq!(plan["Diff"]["Type"], "Added");
    let (status, _) = send(&c, reqwest::Method::GET, format!("{base}/v1/job/web"), None).await;
    assert_eq!(status, 404, "plan must not register the job");
    // A plan that can't fit says why.
    let (_, plan) = send(
        &c,
        reqwest::Method::PUT,
        format!("{base}/v1/job/huge/plan"),
        Some(json!({"Job": job("huge", 1, 100_000)["Job"]})),
    )
    .await;
    assert!(plan["FailedTGAllocs"]["web"].is_object(), "{plan}");

    send(
        &c,
        reqwest::Method::PUT,
        format!("{base}/v1/jobs"),
        Some(job("web", 4, 256)),
    )
    .await;
    let allocs = wait_for(&base, "/v1/job/web/allocations", "4 placed", |v| {
        running(v) == 4
    })
    .await;
    let (_, plan) = send(
        &c,
        reqwest::Method::PUT,
        format!("{base}/v1/job/web/plan"),
        Some(json!({"Job": job("web", 4, 256)["Job"], "Diff": true})),
    )
    .await;
    assert_eq!(plan["Diff"]["Type"], "None", "{plan}");
    assert_eq!(
        plan["Annotations"]["DesiredTGUpdates"]["web"]["Ignore"], 4,
        "{plan}"
    );

    // Draining node 0 moves its allocations to node 1.
    let n0 = mock::node_id(0);
    let (status, r) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/node/{n0}/drain"),
        Some(json!({"DrainSpec": {"Deadline": 60_000_000_000u64}})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let node = get(&base, &format!("/v1/node/{n0}")).await;
    assert_eq!(node["SchedulingEligibility"], "ineligible");
    assert_eq!(node["Drain"], true);
    // The drainer moves one allocation at a time (Migrate.MaxParallel 1);
    // these nodes have no client, so the replacement never runs and the
    // drain stays in progress.
    wait_for(&base, "/v1/job/web/allocations", "one migration", |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["DesiredTransition"]["Migrate"] == true && x["DesiredStatus"] == "stop")
        })
    })
    .await;
    // Eligibility can't be set while draining.
    let (status, _) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/node/{n0}/eligibility"),
        Some(json!({"Eligibility": "eligible"})),
    )
    .await;
    assert_eq!(status, 400);
    // Forcing the drain (Deadline -1) moves the rest at once.
    let (status, r) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/node/{n0}/drain"),
        Some(json!({"DrainSpec": {"Deadline": -1}})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    wait_for(&base, "/v1/job/web/allocations", "all on node 1", |v| {
        let live: Vec<&Value> = v
            .as_array()
            .map(|a| a.iter().filter(|x| x["DesiredStatus"] == "run").collect())
            .unwrap_or_default();
        live.len() == 4 && live.iter().all(|a| a["NodeID"] == mock::node_id(1))
    })
    .await;
    // Nothing left: the drain completes, the node stays ineligible.
    wait_for(&base, &format!("/v1/node/{n0}"), "drain complete", |n| {
        n["DrainStrategy"].is_null()
            && n["Drain"] == false
            && n["LastDrain"]["Status"] == "complete"
            && n["SchedulingEligibility"] == "ineligible"
    })
    .await;
    let (status, _) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/node/{n0}/drain"),
        Some(json!({"DrainSpec": null, "MarkEligible": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&base, &format!("/v1/node/{n0}")).await["SchedulingEligibility"],
        "eligible"
    );
    let (status, _) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/node/{n0}/eligibility"),
        Some(json!({"Eligibility": "maybe"})),
    )
    .await;
    assert_eq!(status, 400);

    // Stopping one allocation replaces it.
    let victim = allocs[0]["ID"].as_str().expect("id").to_string();
    let (status, r) = send(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/allocation/{victim}/stop"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    wait_for(&base, "/v1/job/web/allocations", "replacement", |v| {
        running(v) == 4
            && v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["ID"] == victim.as_str() && x["DesiredStatus"] != "run")
            })
    })
    .await;

    // Stop the job, then GC removes it and its terminal allocations.
    send(
        &c,
        reqwest::Method::DELETE,
        format!("{base}/v1/job/web"),
        None,
    )
    .await;
    wait_for(&base, "/v1/job/web/allocations", "stopped", |v| {
        running(v) == 0
    })
    .await;
    let allocs = get(&base, "/v1/job/web/allocations").await;
    let ids: Vec<String> = allocs
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["ID"].as_str().map(str::to_string))
        .collect();
    // Terminal from the client's side too, as a client would report.
    let updates = ids
        .iter()
        .map(|id| proto::model::Allocation {
            id: id.clone(),
            client_status: "complete".into(),
            ..Default::default()
        })
        .collect();
    server
        .service
        .write(Command::AllocClientUpdate {
            allocs: updates,
            evals: Vec::new(),
        })
        .await
        .expect("client update");
    let (status, _) = send(
        &c,
        reqwest::Method::PUT,
        format!("{base}/v1/system/gc"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(&c, reqwest::Method::GET, format!("{base}/v1/job/web"), None).await;
    assert_eq!(
        status, 404,
        "a stopped job with only terminal allocations is collected"
    );
    assert_eq!(get(&base, "/v1/job/web/allocations").await, json!([]));
    server.shutdown().await;
}
