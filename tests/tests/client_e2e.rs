//! End to end, in-process: a region server and a real client agent. A job
//! submitted over HTTP is scheduled onto the agent's node, runs as a real
//! process with raw_exec, reports its states back, and its logs are read
//! through the server's HTTP API; stopping the job kills the process.

use std::time::{Duration, Instant};

use client_agent::{ClientAgent, ClientConfig};
use region_server::{RegionServer, ServerConfig};
use serde_json::{json, Value};

async fn poll<F, Fut>(what: &str, timeout: Duration, f: F) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: String) -> Value {
    match reqwest::get(url).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_runs_on_a_real_client_and_its_logs_are_readable_through_the_server() {
    let _serial = atoll_tests::serial().await;
    ops_kit::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ops_kit::tls::DevCa::generate().expect("ca");
    let server_cert = ca
        .issue(ops_kit::tls::Role::Server, "global")
        .expect("cert");
    let server = RegionServer::start(ServerConfig::dev(
        "s1",
        "global",
        dir.path().join("s1"),
        server_cert,
    ))
    .await
    .expect("server");
    let base = format!("http://{}", server.http_addr);
    poll("leader", Duration::from_secs(10), || {
        let ok = server.service.is_leader();
        async move { ok.then_some(Value::Null) }
    })
    .await;

    let client_cert = ca
        .issue(ops_kit::tls::Role::Client, "global")
        .expect("cert");
    let agent = ClientAgent::start(ClientConfig::dev(
        "c1",
        "global",
        dir.path().join("c1"),
        vec![server.rpc_addr.to_string()],
        client_cert,
    ))
    .await
    .expect("agent");
    assert!(
        agent.wait_registered(Duration::from_secs(20)).await,
        "client registered"
    );
    let node_id = agent.node_id();
    let node = get(format!("{base}/v1/node/{node_id}")).await;
    assert_eq!(node["Status"], "ready", "{node}");
    assert_eq!(node["Attributes"]["kernel.name"], "linux");
    assert_eq!(node["Drivers"]["raw_exec"]["Healthy"], true, "{node}");

    let job = json!({"Job": {
        "ID": "hello",
        "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{
            "Name": "t",
            "Driver": "raw_exec",
            "Config": {"command": "/bin/sh", "args": ["-c", "echo hello-from-$NOMAD_TASK_NAME; sleep 300"]},
            "Resources": {"CPU": 100, "MemoryMB": 64}
        }]}]
    }});
    let c = reqwest::Client::new();
    let r = c
        .put(format!("{base}/v1/jobs"))
        .json(&job)
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 200);

    let alloc = poll("a running allocation", Duration::from_secs(30), || {
        let url = format!("{base}/v1/job/hello/allocations");
        async move {
            let v = get(url).await;
            v.as_array()
                .and_then(|a| a.iter().find(|x| x["ClientStatus"] == "running").cloned())
        }
    })
    .await;
    assert_eq!(alloc["NodeID"], node_id.as_str());
    let alloc_id = alloc["ID"].as_str().expect("id").to_string();
    let full = get(format!("{base}/v1/allocation/{alloc_id}")).await;
    let events: Vec<String> = full["TaskStates"]["t"]["Events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(events.iter().any(|e| e == "Started"), "{events:?}");
    assert_eq!(full["Job"]["ID"], "hello", "allocations carry their job");

    // Logs through the server, which passes the request to the agent.
    let logs = poll("logs", Duration::from_secs(10), || {
        let url = format!("{base}/v1/client/fs/logs/{alloc_id}?task=t&type=stdout&plain=true");
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.contains("hello-from-t").then_some(Value::String(text))
        }
    })
    .await;
    assert!(logs.as_str().is_some_and(|l| l.contains("hello-from-t")));

    // Stop the job: the process is killed and the allocation completes.
    c.delete(format!("{base}/v1/job/hello"))
        .send()
        .await
        .expect("stop");
    let stopped = poll(
        "allocation stopped on the client",
        Duration::from_secs(30),
        || {
            let url = format!("{base}/v1/allocation/{alloc_id}");
            async move {
                let v = get(url).await;
                (v["DesiredStatus"] == "stop"
                    && v["ClientStatus"] != "running"
                    && v["ClientStatus"] != "pending")
                    .then_some(v)
            }
        },
    )
    .await;
    assert_eq!(
        stopped["ClientStatus"], "complete",
        "{}",
        stopped["TaskStates"]
    );
    let summary = get(format!("{base}/v1/job/hello/summary")).await;
    assert_eq!(summary["Summary"]["g"]["Running"], 0, "{summary}");

    agent.shutdown_and_kill_tasks().await;
    server.shutdown().await;
}
