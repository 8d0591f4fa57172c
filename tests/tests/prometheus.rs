//! Prometheus (Debian's `prometheus`, installed by `.ci/run`) started with
//! `ops/deploy/prometheus.yml` and its alert rules against a dev federation
//! (`atoll dev`): through Prometheus's query API every target the
//! federation wrote to its file-based discovery list is up, and leader
//! elections and placements are visible.

use std::path::Path;
use std::time::{Duration, Instant};

use atoll_tests::{free_port, workspace_binary, DevProcess, Proc};
use serde_json::{json, Value};

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("ops/deploy")
}

async fn query(prom: &str, expr: &str) -> Option<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), [("query", expr)]).ok()?;
    let r = reqwest::get(url).await.ok()?;
    let v: Value = r.json().await.ok()?;
    (v["status"] == "success").then(|| v["data"]["result"].clone())
}

/// The sum of an instant query's values, if it returned any series.
fn total(result: &Value) -> Option<f64> {
    let series = result.as_array()?;
    if series.is_empty() {
        return None;
    }
    Some(
        series
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .sum(),
    )
}

async fn until<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_process_of_a_dev_federation() {
    let _serial = atoll_tests::serial().await;
    // Built with the whole workspace, reqwest uses rustls without a
    // default provider: install ours first.
    ops_kit::tls::install_crypto_provider();
    let prometheus = which("prometheus").expect(
        "the prometheus binary is needed (Debian: apt-get install -y prometheus; .ci/run does it)",
    );
    let bin = workspace_binary("atoll", "atoll").expect("build atoll");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dev = DevProcess::start(&bin, dir.path(), &[], Duration::from_secs(120))
        .await
        .expect("atoll dev comes up");
    let gw = dev.gateway().expect("gateway");
    let targets_file = dev.data_dir.join("prometheus/targets.json");
    let targets: Value =
        serde_json::from_str(&std::fs::read_to_string(&targets_file).expect("targets.json"))
            .expect("targets.json is JSON");
    let expected = targets.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(expected, 9, "6 servers, a gateway, 2 clients: {targets}");

    // The shipped configuration, pointed at this federation's targets
    // file and scraping every second; the alert rules beside it.
    let shipped = std::fs::read_to_string(deploy_dir().join("prometheus.yml"))
        .expect("ops/deploy/prometheus.yml");
    assert!(shipped.contains("/tmp/atoll-dev/prometheus/targets.json"));
    let config = shipped
        .replace(
            "/tmp/atoll-dev/prometheus/targets.json",
            targets_file.to_str().expect("utf-8 path"),
        )
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("refresh_interval: 30s", "refresh_interval: 1s");
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    std::fs::write(prom_dir.join("prometheus.yml"), config).expect("config");
    std::fs::copy(deploy_dir().join("alerts.yml"), prom_dir.join("alerts.yml"))
        .expect("alerts.yml");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let child = std::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            prom_dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let _prom_proc = Proc { child };
    let prom = format!("http://127.0.0.1:{port}");

    // A placement in each region, through the gateway.
    for region in ["eu", "us"] {
        let job = json!({"Job": {
            "ID": format!("probe-{region}"),
            "Region": region,
            "Datacenters": ["dc1"],
            "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{
                "Name": "t", "Driver": "raw_exec",
                "Config": {"command": "/bin/sleep", "args": ["300"]},
                "Resources": {"CPU": 50, "MemoryMB": 32}
            }]}]
        }});
        let r = reqwest::Client::new()
            .put(format!("{gw}/v1/jobs"))
            .json(&job)
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 200, "register in {region}");
    }

    // Every target is up.
    let up = until("every target up", Duration::from_secs(90), || {
        let prom = prom.clone();
        async move {
            let r: Value = reqwest::get(format!("{prom}/api/v1/targets?state=active"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let active = r["data"]["activeTargets"].as_array()?.clone();
            (active.len() == expected && active.iter().all(|t| t["health"] == "up"))
                .then_some(active)
        }
    })
    .await;
    let roles: Vec<&str> = up
        .iter()
        .filter_map(|t| t["labels"]["role"].as_str())
        .collect();
    for role in ["server", "client", "gateway"] {
        assert!(roles.contains(&role), "no {role} target: {roles:?}");
    }

    // Leader elections: one leader per region took office.
    let leaders = until("leader changes", Duration::from_secs(60), || {
        let prom = prom.clone();
        async move {
            let r = query(&prom, "sum by (region) (atoll_raft_leader_changes_total)").await?;
            (r.as_array()?.len() == 2).then_some(r)
        }
    })
    .await;
    assert!(total(&leaders).unwrap_or(0.0) >= 2.0, "{leaders}");
    let is_leader = query(&prom, "sum by (region) (atoll_raft_is_leader)")
        .await
        .expect("is_leader query");
    for s in is_leader.as_array().expect("series") {
        assert_eq!(s["value"][1], "1", "one leader per region: {is_leader}");
    }

    // Placements, in both regions.
    until(
        "placements in both regions",
        Duration::from_secs(60),
        || {
            let prom = prom.clone();
            async move {
                let r = query(
                    &prom,
                    "sum by (region) (atoll_scheduler_placements_total) > 0",
                )
                .await?;
                (r.as_array()?.len() == 2).then_some(())
            }
        },
    )
    .await;

    // The gateway's reachability gauge, per region.
    let reachable = until("gateway reachability", Duration::from_secs(30), || {
        let prom = prom.clone();
        async move {
            let r = query(&prom, "atoll_gateway_region_reachable == 1").await?;
            (r.as_array()?.len() == 2).then_some(r)
        }
    })
    .await;
    assert_eq!(reachable.as_array().map(Vec::len), Some(2), "{reachable}");

    // The alert rules loaded and evaluate (none fires on a healthy
    // federation's no-leader rule).
    let rules: Value = reqwest::get(format!("{prom}/api/v1/rules"))
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules JSON");
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!groups.is_empty(), "alert rules loaded: {rules}");

    let status = dev
        .interrupt(Duration::from_secs(60))
        .await
        .expect("atoll dev stops");
    assert!(status.success(), "{status}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
