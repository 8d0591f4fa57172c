//! End to end, in-process, everything on mTLS: two regions of three servers,
//! one federation gateway, one client agent per region.
//!
//! - A multi-region job submitted once to the gateway runs in both regions
//!   with each region's count; the federated view shows both.
//! - Any server answers for the other region (through the gateway).
//! - With one region cut off (its servers killed) its requests fail with
//!   `503 No path to region` while every request for the other region
//!   succeeds; after the servers come back everything converges.
//! - The trust layer refuses a certificate of a foreign CA, a client
//!   certificate calling Raft, and a region-A server calling region B's Raft.

use std::time::{Duration, Instant};

use atoll_tests::{
    delete, get, get_bytes, poll, put_json, put_raw, serial, TestFederation, DEFAULT_TIMEOUT,
};
use ops_kit::tls::{CertBundle, DevCa, Role};
use proto::rpc::raft_service_client::RaftServiceClient;
use proto::rpc::Payload;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;

fn multiregion_job(id: &str) -> Value {
    json!({
        "ID": id,
        "Multiregion": {
            "Strategy": { "MaxParallel": 1, "OnFailure": "fail_all" },
            "Regions": [
                { "Name": "a", "Count": 2, "Datacenters": ["dc1"], "Meta": { "tier": "primary" } },
                { "Name": "b", "Count": 1, "Datacenters": ["dc1"] }
            ]
        },
        "TaskGroups": [{
            "Name": "web",
            "Count": 5,
            "Tasks": [{
                "Name": "app",
                "Driver": "mock_driver",
                "Config": { "run_for": "1h" }
            }]
        }]
    })
}

/// Running allocations of `job` in the region `base` (a gateway or server)
/// routes `?region=` to.
async fn running(base: &str, job: &str, region: &str) -> Option<usize> {
    let r = get(&format!("{base}/v1/job/{job}/allocations?region={region}"))
        .await
        .ok()?;
    if r.status != StatusCode::OK {
        return None;
    }
    let allocs = r.json();
    Some(
        allocs
            .as_array()?
            .iter()
            .filter(|a| a["ClientStatus"] == "running" && a["DesiredStatus"] == "run")
            .count(),
    )
}

async fn wait_running(base: &str, job: &str, region: &str, want: usize) -> anyhow::Result<()> {
    let r = poll(
        &format!("{want} running allocations of {job} in {region}"),
        Duration::from_secs(60),
        || async move { (running(base, job, region).await == Some(want)).then_some(()) },
    )
    .await;
    if r.is_err() {
        // Say where things stand.
        let view = get(&format!("{base}/v1/job/{job}/regions"))
            .await
            .map(|r| r.body);
        let allocs = get(&format!("{base}/v1/job/{job}/allocations?region={region}"))
            .await
            .map(|r| r.body);
        eprintln!("federated view: {view:?}\nallocations in {region}: {allocs:?}");
    }
    r
}

/// A `RaftService.Vote` with an empty payload, made with `cert` to the
/// server at `addr` whose certificate must name `server.<region>.atoll`.
async fn raft_vote(cert: &CertBundle, addr: &str, region: &str) -> Result<(), tonic::Status> {
    let tls = cert.client_tls_config(&ops_kit::tls::identity_name(Role::Server, region));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    RaftServiceClient::new(channel)
        .vote(Payload {
            data: b"{}".to_vec(),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_federation_routes_by_region_fans_out_jobs_survives_a_cut_off_region_and_refuses_wrong_certificates(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut fed = TestFederation::start(&["a", "b"], 3).await?;
    let g = fed.start_gateway("gw1").await?;
    let gw = fed.gateway_http(g);
    fed.wait_gateway_sees(g, "a", true).await?;
    fed.wait_gateway_sees(g, "b", true).await?;
    fed.start_client("a", "ca1").await?;
    fed.start_client("b", "cb1").await?;

    // Routing: the gateway answers for both regions; regions list both.
    let regions = get(&format!("{gw}/v1/regions"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    assert_eq!(regions, json!(["a", "b"]));
    for region in ["a", "b"] {
        let r = get(&format!("{gw}/v1/agent/self?region={region}"))
            .await?
            .expect(StatusCode::OK)?;
        assert_eq!(r.json()["config"]["Region"], region, "{}", r.body);
    }

    // A multi-region job submitted once, through the gateway.
    let r = put_json(
        &format!("{gw}/v1/jobs"),
        &json!({ "Job": multiregion_job("web") }),
    )
    .await?
    .expect(StatusCode::OK)?;
    assert!(
        r.json()["EvalID"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        r.body
    );
    wait_running(&gw, "web", "a", 2).await?;
    wait_running(&gw, "web", "b", 1).await?;
    let job_a = get(&format!("{gw}/v1/job/web?region=a"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    let job_b = get(&format!("{gw}/v1/job/web?region=b"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    assert_eq!(job_a["Region"], "a");
    assert_eq!(job_a["TaskGroups"][0]["Count"], 2);
    assert_eq!(job_a["Meta"]["tier"], "primary");
    assert_eq!(job_b["Region"], "b");
    assert_eq!(job_b["TaskGroups"][0]["Count"], 1);

    // Any server answers for the other region, through the gateway.
    let a0 = fed.region("a").http(0);
    let via_server = get(&format!("{a0}/v1/job/web?region=b"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    assert_eq!(via_server["Region"], "b");
    assert_eq!(via_server["TaskGroups"][0]["Count"], 1);

    // The federated view: both regions side by side, the rollout done.
    let view = poll(
        "both regions healthy in the federated view",
        DEFAULT_TIMEOUT,
        || async {
            let v = get(&format!("{gw}/v1/job/web/regions")).await.ok()?.json();
            let all_healthy = v["Regions"]
                .as_array()?
                .iter()
                .all(|r| r["Rollout"]["State"] == "healthy");
            all_healthy.then_some(v)
        },
    )
    .await?;
    let regions = view["Regions"].as_array().cloned().unwrap_or_default();
    assert_eq!(regions.len(), 2, "{view}");
    assert_eq!(regions[0]["Region"], "a");
    assert_eq!(regions[0]["Count"], 2);
    assert_eq!(regions[1]["Region"], "b");
    assert_eq!(regions[1]["Count"], 1);
    assert!(regions.iter().all(|r| r["Reachable"] == true), "{view}");

    // Per-region operator APIs through the gateway: Raft configuration,
    // gossip keyring, and a snapshot streamed back with its digest.
    let raft = get(&format!("{gw}/v1/operator/raft/configuration?region=b"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    assert_eq!(raft["Servers"].as_array().map(Vec::len), Some(3), "{raft}");
    get(&format!("{gw}/v1/operator/keyring/list?region=b"))
        .await?
        .expect(StatusCode::OK)?;
    let (status, headers, snapshot) =
        get_bytes(&format!("{gw}/v1/operator/snapshot?region=b")).await?;
    assert_eq!(status, StatusCode::OK);
    let digest = headers
        .get("Digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let have = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        sha2::Sha256::digest(&snapshot),
    );
    assert_eq!(digest, format!("sha-256={have}"));

    // A blocking query passes through: it returns once region B changes.
    let jobs = get(&format!("{gw}/v1/jobs?region=b"))
        .await?
        .expect(StatusCode::OK)?;
    let index = jobs.index();
    assert!(index > 0);
    let blocking = tokio::spawn({
        let gw = gw.clone();
        async move { get(&format!("{gw}/v1/jobs?region=b&index={index}&wait=20s")).await }
    });
    let mut other = atoll_tests::job_spec("other");
    other["Region"] = json!("b");
    put_json(&format!("{gw}/v1/jobs"), &json!({ "Job": other }))
        .await?
        .expect(StatusCode::OK)?;
    let woke = blocking.await??.expect(StatusCode::OK)?;
    assert!(woke.index() > index, "{} <= {index}", woke.index());
    assert!(woke.body.contains("\"other\""), "{}", woke.body);

    // Trust: a foreign CA's certificate fails the handshake; a client
    // certificate may not call Raft; region A's server may not call B's Raft.
    let b0_rpc = fed.region("b").rpc_addr(0);
    let foreign = DevCa::generate()?.issue(Role::Server, "b")?;
    let foreign = CertBundle {
        ca_pem: fed.ca.cert_pem(),
        ..foreign
    };
    let refused = raft_vote(&foreign, &b0_rpc, "b").await;
    // The handshake fails: the connection closes before any call is
    // answered (no PERMISSION_DENIED or INVALID_ARGUMENT from a service).
    assert!(
        matches!(
            refused.as_ref().map_err(|s| s.code()),
            Err(tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
        ),
        "foreign CA: {refused:?}"
    );
    let client_b = fed.ca.issue(Role::Client, "b")?;
    let refused = raft_vote(&client_b, &b0_rpc, "b").await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    let server_a = fed.ca.issue(Role::Server, "a")?;
    let refused = raft_vote(&server_a, &b0_rpc, "b").await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::PermissionDenied)
    );
    // ... while region B's own server certificate gets through to Raft,
    // which then rejects the empty vote as undecodable.
    let server_b = fed.ca.issue(Role::Server, "b")?;
    let passed = raft_vote(&server_b, &b0_rpc, "b").await;
    assert_eq!(
        passed.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );

    // Cut region B off: its servers die.
    for i in 0..3 {
        fed.region_mut("b").take(i).kill().await;
    }
    fed.wait_gateway_sees(g, "b", false).await?;
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let start = Instant::now();
        let r = get(&format!("{gw}/v1/jobs?region=b")).await?;
        slowest = slowest.max(start.elapsed());
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert_eq!(r.body, "No path to region \"b\"");
        let r = get(&format!("{gw}/v1/job/web?region=a")).await?;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {i} for region a: {}",
            r.body
        );
        // Servers of A answer the same for B.
        let r = get(&format!("{a0}/v1/jobs?region=b")).await?;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    }
    println!("slowest 503 for the cut-off region: {slowest:?}");
    // The federated view reports B unreachable instead of failing.
    let view = get(&format!("{gw}/v1/job/web/regions"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    let b = view["Regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["Region"] == "b").cloned())
        .unwrap_or_default();
    assert_eq!(b["Reachable"], false, "{view}");
    let a = view["Regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["Region"] == "a").cloned())
        .unwrap_or_default();
    assert_eq!(a["Reachable"], true, "{view}");

    // Heal: B's servers come back from their data; everything converges.
    fed.region_mut("b").start_all().await?;
    fed.region("b").wait_leader(DEFAULT_TIMEOUT).await?;
    fed.wait_gateway_sees(g, "b", true).await?;
    poll(
        "region b answering through the gateway",
        DEFAULT_TIMEOUT,
        || async {
            let r = get(&format!("{gw}/v1/job/web?region=b")).await.ok()?;
            (r.status == StatusCode::OK && r.json()["TaskGroups"][0]["Count"] == 1).then_some(())
        },
    )
    .await?;
    wait_running(&gw, "web", "b", 1).await?;
    wait_running(&a0, "web", "b", 1).await?;

    // Global deregister through a server of A stops the job everywhere.
    let r = delete(&format!("{a0}/v1/job/web?global=true"))
        .await?
        .expect(StatusCode::OK)?;
    assert!(r.json()["Regions"]["b"]["Status"] == 200, "{}", r.body);
    for region in ["a", "b"] {
        poll(
            &format!("job stopped in {region}"),
            DEFAULT_TIMEOUT,
            || async {
                let j = get(&format!("{gw}/v1/job/web?region={region}"))
                    .await
                    .ok()?
                    .json();
                (j["Stop"] == true).then_some(())
            },
        )
        .await?;
        wait_running(&gw, "web", region, 0).await?;
    }

    fed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_reach_another_region_directly_without_a_gateway_and_refuse_multiregion_jobs_without_one(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let fed = TestFederation::start(&["a", "b"], 1).await?;
    let a0 = fed.region("a").http(0);
    poll("server of a seeing region b", DEFAULT_TIMEOUT, || async {
        let r = get(&format!("{a0}/v1/regions")).await.ok()?;
        (r.json() == json!(["a", "b"])).then_some(())
    })
    .await?;
    // A plain job for region B, registered through a server of A.
    let mut job = atoll_tests::job_spec("plain");
    job["Region"] = json!("b");
    let r = put_json(&format!("{a0}/v1/jobs"), &json!({ "Job": job })).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let b0 = fed.region("b").http(0);
    let j = get(&format!("{b0}/v1/job/plain"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    assert_eq!(j["Region"], "b");
    // A multi-region job needs a gateway.
    let r = put_json(
        &format!("{a0}/v1/jobs"),
        &json!({ "Job": multiregion_job("multi") }),
    )
    .await?;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    // A snapshot of B saved and restored through a server of A (no
    // gateway: server to server), streamed both ways with its digest.
    let (status, headers, snapshot) =
        get_bytes(&format!("{a0}/v1/operator/snapshot?region=b")).await?;
    assert_eq!(status, StatusCode::OK);
    let digest = headers
        .get("Digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    put_raw(
        &format!("{a0}/v1/operator/snapshot?region=b"),
        snapshot,
        &[("Digest", digest)],
    )
    .await?
    .expect(StatusCode::OK)?;
    get(&format!("{b0}/v1/job/plain"))
        .await?
        .expect(StatusCode::OK)?;
    // An unknown region: a clear 503.
    let r = get(&format!("{a0}/v1/jobs?region=nowhere")).await?;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body, "No path to region \"nowhere\"");
    fed.shutdown().await;
    Ok(())
}

/// A server stopped without leaving (SIGTERM without
/// `--leave-on-terminate`, an upgrade's restart) stays a voter: gossip sees
/// it failed, not left, so the leader does not remove it from Raft, and
/// it rejoins from its files as the same voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_server_stays_a_voter_and_rejoins() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut fed = TestFederation::start(&["stay"], 3).await?;
    let r = fed.region_mut("stay");
    let leader = r.wait_leader(DEFAULT_TIMEOUT).await?;
    let victim = r.others(leader)[0];
    let victim_id = r.server(victim).service.id.to_string();
    let victim_name = format!("{}.", r.server(victim).service.node.name);
    let base = r.http(leader);
    let members = format!("{base}/v1/agent/members");
    // The gossip pool forms beside Raft (its seed may well be the victim).
    poll(
        "all three servers in the gossip pool",
        DEFAULT_TIMEOUT,
        || async {
            let r = get(&members).await.ok()?;
            let v = r.json();
            let alive = v["Members"]
                .as_array()?
                .iter()
                .filter(|m| m["Status"] == "alive")
                .count();
            (alive == 3).then_some(())
        },
    )
    .await?;
    let r = fed.region_mut("stay");
    r.stop(victim).await;
    let status = poll(
        "the stopped server to be seen failed",
        DEFAULT_TIMEOUT,
        || async {
            let r = get(&members).await.ok()?;
            let v = r.json();
            let m = v["Members"]
                .as_array()?
                .iter()
                .find(|m| {
                    m["Name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&victim_name))
                })?
                .clone();
            (m["Status"] != "alive").then_some(m["Status"].clone())
        },
    )
    .await;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let seen = get(&members).await.map(|r| r.body).unwrap_or_default();
            return Err(e.context(format!("members: {seen}")));
        }
    };
    assert_eq!(status, "failed", "a plain stop is no leave");
    // The leader's reaper runs every 500 ms: give it a few rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let config = get(&format!("{base}/v1/operator/raft/configuration"))
        .await?
        .expect(StatusCode::OK)?
        .json();
    let voter = config["Servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["ID"] == victim_id.as_str()))
        .map(|s| s["Voter"].clone());
    assert_eq!(
        voter,
        Some(Value::Bool(true)),
        "the stopped server left the configuration: {config}"
    );
    atoll_tests::must_register(&base, "while-down").await?;
    r.restart(victim).await?;
    atoll_tests::wait_ok(
        &format!("{}/v1/job/while-down?stale", r.http(victim)),
        DEFAULT_TIMEOUT,
    )
    .await?;
    fed.shutdown().await;
    Ok(())
}
