//! In-process: servers of three regions find each other through one gossip
//! pool from a single seed, each region bootstraps its own Raft, and a
//! killed server is marked failed and reaped from its region's Raft.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use region_server::config::GossipSettings;
use region_server::{RegionServer, ServerConfig};
use serde_json::Value;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

async fn start_server(
    ca: &ops_kit::tls::DevCa,
    dir: &std::path::Path,
    region: &str,
    i: usize,
    key: &str,
    seed: Option<String>,
) -> RegionServer {
    let bundle = ca.issue(ops_kit::tls::Role::Server, region).expect("cert");
    let name = format!("{region}{i}");
    let mut cfg = ServerConfig::dev(&name, region, dir.join(&name), bundle);
    cfg.bootstrap_expect = Some(3);
    let mut pool = ops_kit::gossip::GossipConfig::local();
    pool.seeds = seed.into_iter().collect();
    cfg.gossip = Some(GossipSettings {
        pool,
        keys: vec![key.to_string()],
        reap_failed_after: Duration::from_secs(2),
    });
    RegionServer::start(cfg).await.expect("start")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Value {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_regions_cluster_through_one_pool() {
    ops_kit::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ops_kit::tls::DevCa::generate().expect("ca");
    let key = ops_kit::gossip::Keyring::generate_key();
    let first = start_server(&ca, dir.path(), "eu", 0, &key, None).await;
    let seed = first
        .gossip
        .as_ref()
        .map(|p| p.local_addr().to_string())
        .expect("pool");
    let mut servers = vec![first];
    for region in REGIONS {
        for i in 0..3 {
            if region == "eu" && i == 0 {
                continue;
            }
            servers.push(start_server(&ca, dir.path(), region, i, &key, Some(seed.clone())).await);
        }
    }
    let addrs: Vec<_> = servers
        .iter()
        .map(|s| (s.http_addr, s.service.region.clone()))
        .collect();

    // Every server lists all three regions.
    for (addr, _) in &addrs {
        let addr = *addr;
        eventually(
            "all regions listed",
            Duration::from_secs(30),
            || async move {
                let r = get(addr, "/v1/regions").await;
                let want = serde_json::json!(["ap", "eu", "us"]);
                if r == want {
                    Ok(())
                } else {
                    Err(format!("{r}"))
                }
            },
        )
        .await;
    }
    // Each region bootstraps its own Raft with exactly its three servers.
    for region in REGIONS {
        let rpc_of_region: BTreeSet<String> = servers
            .iter()
            .filter(|s| s.service.region == region)
            .map(|s| s.rpc_addr.to_string())
            .collect();
        let addr = addrs
            .iter()
            .find(|(_, r)| r == region)
            .map(|(a, _)| *a)
            .expect("server");
        let want = rpc_of_region.clone();
        eventually("region raft of three", Duration::from_secs(30), || {
            let want = want.clone();
            async move {
                let cfg = get(addr, "/v1/operator/raft/configuration").await;
                let got: BTreeSet<String> = cfg["Servers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s["Address"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{cfg}"))
                }
            }
        })
        .await;
    }
    // Members list everyone with Nomad's fields.
    let members = get(addrs[0].0, "/v1/agent/members").await;
    assert_eq!(
        members["Members"].as_array().map(Vec::len),
        Some(9),
        "{members}"
    );
    assert!(members["Members"][0]["Tags"]["region"].is_string());

    // Kill a follower of "us": failed everywhere, then reaped from us's Raft.
    let victim_idx = servers
        .iter()
        .position(|s| s.service.region == "us" && !s.service.is_leader())
        .expect("a follower");
    let victim = servers.remove(victim_idx);
    let victim_name = format!("{}.us", victim.service.node.name);
    let victim_rpc = victim.rpc_addr.to_string();
    victim.kill().await;
    for s in &servers {
        let addr = s.http_addr;
        let name = victim_name.clone();
        eventually("victim failed", Duration::from_secs(30), || {
            let name = name.clone();
            async move {
                let m = get(addr, "/v1/agent/members").await;
                let status = m["Members"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["Name"] == name.as_str()))
                    .map(|x| x["Status"].clone());
                if status == Some(Value::from("failed")) {
                    Ok(())
                } else {
                    Err(format!("{status:?}"))
                }
            }
        })
        .await;
    }
    let us = servers
        .iter()
        .find(|s| s.service.region == "us")
        .expect("us server")
        .http_addr;
    eventually("victim reaped", Duration::from_secs(30), || {
        let victim_rpc = victim_rpc.clone();
        async move {
            let cfg = get(us, "/v1/operator/raft/configuration").await;
            let n = cfg["Servers"].as_array().map(Vec::len).unwrap_or(0);
            let present = cfg["Servers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s["Address"] == victim_rpc.as_str()));
            if n == 2 && !present {
                Ok(())
            } else {
                Err(format!("{cfg}"))
            }
        }
    })
    .await;
    // The region still writes.
    let c = reqwest::Client::new();
    let r = c
        .put(format!("http://{us}/v1/jobs"))
        .json(&serde_json::json!({"Job": {"ID": "after", "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}]}]}}))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status().as_u16(), 200);
    for s in servers {
        s.shutdown().await;
    }
}
