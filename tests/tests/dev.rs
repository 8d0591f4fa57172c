//! `atoll dev` as a user meets it: the real binary starts the default
//! federation (regions eu and us, 3 servers each, a gateway, a client per
//! region), and the real CLI drives it through the gateway: the example
//! HCL multi-region job runs in both regions with their own counts, its
//! logs are read, the operator commands answer for each region, the job is
//! stopped everywhere with `-global`, and Ctrl-C stops the federation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atoll_tests::{workspace_binary, DevProcess};
use serde_json::Value;

use atoll_tests::CliOut as Out;

async fn atoll(bin: &Path, addr: &str, args: &[&str]) -> Out {
    atoll_tests::run_cli(bin, Some(addr), args).await
}

async fn get(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join(rel)
}

/// Running allocations of `job` in `region`, through the gateway.
async fn running(gw: &str, region: &str, job: &str) -> Vec<Value> {
    get(&format!("{gw}/v1/job/{job}/allocations?region={region}"))
        .await
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["ClientStatus"] == "running" && a["DesiredStatus"] == "run")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atoll_dev_runs_the_example_job_in_both_regions_through_the_cli() {
    let _serial = atoll_tests::serial().await;
    // reqwest is built without a default rustls provider: install ours
    // before the first HTTP client.
    ops_kit::tls::install_crypto_provider();
    let bin = workspace_binary("atoll", "atoll").expect("build atoll");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dev = DevProcess::start(&bin, dir.path(), &[], Duration::from_secs(120))
        .await
        .expect("atoll dev comes up");
    let data = dev.data_dir.clone();
    let info = dev.info.clone();
    let gw = dev.gateway().expect("gateway address");
    assert_eq!(info["Address"], info["Gateway"], "{info}");
    for region in ["eu", "us"] {
        assert_eq!(
            info["Regions"][region]["Servers"].as_array().map(Vec::len),
            Some(3),
            "{info}"
        );
        assert_eq!(
            info["Regions"][region]["Clients"].as_array().map(Vec::len),
            Some(1),
            "{info}"
        );
    }
    let targets: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("prometheus/targets.json")).expect("targets.json"),
    )
    .expect("targets.json is JSON");
    assert_eq!(targets.as_array().map(Vec::len), Some(9), "{targets}");

    // The federation overview and the region list.
    let out = atoll(&bin, &gw, &["status"]).await;
    assert_eq!(out.code, 0, "{out}");
    for line in ["eu", "us"] {
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line} row: {out}"));
        assert!(row.contains(" ok "), "{row}\n{out}");
    }
    let out = atoll(&bin, &gw, &["region", "list"]).await;
    assert_eq!(
        (out.code, out.stdout.lines().collect::<Vec<_>>()),
        (0, vec!["eu", "us"]),
        "{out}"
    );

    // The example multi-region job, submitted once through the gateway;
    // `job run` follows the evaluation and the deployment to the end.
    let example = repo_file("ops/deploy/jobs/example.hcl");
    let example = example.to_str().expect("utf-8 path");
    let out = atoll(
        &bin,
        &gw,
        &["job", "run", "-var", "greeting=hi-from-the-test", example],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("successful"), "{out}");

    // Both regions run it, each with its own count.
    for (region, count) in [("eu", 2), ("us", 1)] {
        let allocs = until(
            &format!("{count} running allocations in {region}"),
            Duration::from_secs(120),
            || {
                let gw = gw.clone();
                async move {
                    let r = running(&gw, region, "web").await;
                    (r.len() == count).then_some(r)
                }
            },
        )
        .await;
        let out = atoll(
            &bin,
            &gw,
            &["job", "status", "-region", region, "-json", "web"],
        )
        .await;
        assert_eq!(out.code, 0, "{out}");
        let status: Value = serde_json::from_str(&out.stdout).expect("job status -json");
        assert!(
            status.to_string().contains(r#""Status":"running""#),
            "{region}: {status}"
        );

        // Its logs, through the gateway and the region's servers.
        let id = allocs[0]["ID"].as_str().expect("alloc id").to_string();
        let logs = until(&format!("logs of {id}"), Duration::from_secs(30), || {
            let (bin, gw, id) = (bin.clone(), gw.clone(), id.clone());
            async move {
                let out = atoll(&bin, &gw, &["alloc", "logs", "-region", region, &id]).await;
                (out.code == 0 && out.stdout.contains("hi-from-the-test")).then_some(out)
            }
        })
        .await;
        assert!(logs.stdout.contains(&id), "{logs}");
    }
    let view = get(&format!("{gw}/v1/job/web/regions"))
        .await
        .expect("federated view");
    let regions = view["Regions"].as_array().cloned().unwrap_or_default();
    assert_eq!(regions.len(), 2, "{view}");
    assert!(regions.iter().all(|r| r["Reachable"] == true), "{view}");

    // Operator commands, each region through the gateway.
    for region in ["eu", "us"] {
        let out = atoll(
            &bin,
            &gw,
            &["operator", "raft", "list-peers", "-region", region],
        )
        .await;
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(
            out.stdout.lines().filter(|l| l.contains("leader")).count(),
            1,
            "{out}"
        );
        assert_eq!(
            out.stdout
                .lines()
                .filter(|l| l.contains("follower"))
                .count(),
            2,
            "{out}"
        );
        let out = atoll(&bin, &gw, &["server", "members", "-region", region]).await;
        assert_eq!(out.code, 0, "{out}");
        assert!(
            out.stdout.contains(&format!("{region}-s1.{region}")),
            "{out}"
        );
    }
    let snap = dir.path().join("eu.snap");
    let snap = snap.to_str().expect("utf-8 path");
    let out = atoll(
        &bin,
        &gw,
        &["operator", "snapshot", "save", "-region", "eu", snap],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let out = atoll(&bin, &gw, &["operator", "snapshot", "inspect", snap]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("job"), "{out}");

    // Stop everywhere.
    let out = atoll(&bin, &gw, &["job", "stop", "-global", "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    for region in ["eu", "us"] {
        until(
            &format!("web stopped in {region}"),
            Duration::from_secs(60),
            || {
                let gw = gw.clone();
                async move {
                    let job = get(&format!("{gw}/v1/job/web?region={region}")).await?;
                    (job["Stop"] == true && running(&gw, region, "web").await.is_empty())
                        .then_some(())
                }
            },
        )
        .await;
    }

    // A CLI pointed nowhere says so and exits 1.
    let out = atoll(&bin, "http://127.0.0.1:1", &["status"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("ATOLL_ADDR"), "{out}");

    // Ctrl-C stops everything and exits 0; the given data dir stays.
    let status = dev
        .interrupt(Duration::from_secs(60))
        .await
        .expect("atoll dev stops on SIGINT");
    assert!(status.success(), "atoll dev exited with {status}");
    assert!(data.join("dev.json").exists());
}
