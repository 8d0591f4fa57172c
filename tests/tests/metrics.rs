//! Telemetry end to end: a region server and a client agent in this process
//! serve `/metrics` and `/v1/metrics`, the families an operator needs are
//! there with values that follow what happened, and `promtool check metrics`
//! accepts every exposition. The deployment assets in `ops/deploy/` pass
//! `promtool check config`, `check rules` and their rule unit tests.
//!
//! `promtool` comes with Debian's `prometheus` package; `.ci/run` installs
//! it. Without it these tests fail and say so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use atoll_tests::{poll, TestRegion};
use client_agent::{ClientAgent, ClientConfig};
use ops_kit::telemetry::{ScrapeTarget, TargetRole};
use serde_json::{json, Value};

/// The `promtool` binary (`$PROMTOOL`, else the one on `PATH`).
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "promtool not found on PATH: install it (`apt-get install -y prometheus`, as .ci/run does) or set PROMTOOL"
        ),
    }
}

/// Runs promtool with `args` (and `stdin`), failing the test with its
/// output unless it succeeds.
fn run_promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting promtool {args:?}: {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("promtool stdin");
        pipe.write_all(text.as_bytes())
            .expect("writing to promtool");
    }
    let out = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{report}",
        out.status
    );
    report
}

/// `promtool check metrics` on an exposition: fails on lint problems
/// (counters without `_total`, non-base units, missing help, ...).
fn check_metrics(what: &str, text: &str) {
    let report = run_promtool(&["check", "metrics"], Some(text), Path::new("."));
    assert!(
        report.trim().is_empty(),
        "promtool has remarks on the {what} metrics:\n{report}\n{text}"
    );
}

/// The sample value of `family{labels...}` in a text exposition (the
/// first series carrying all `labels`).
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn text(url: &str) -> anyhow::Result<String> {
    let r = reqwest::get(url).await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(ct.starts_with("text/plain"), "{url}: content type {ct}");
    Ok(r.text().await?)
}

const SERVER_FAMILIES: &[&str] = &[
    "atoll_raft_term",
    "atoll_raft_commit_index",
    "atoll_raft_applied_index",
    "atoll_raft_last_log_index",
    "atoll_raft_is_leader",
    "atoll_raft_known_leader",
    "atoll_raft_voters",
    "atoll_raft_last_contact_seconds",
    "atoll_raft_leader_changes_total",
    "atoll_raft_apply_duration_seconds_bucket",
    "atoll_http_requests_total",
    "atoll_http_request_duration_seconds_bucket",
    "atoll_grpc_requests_total",
    "atoll_grpc_request_duration_seconds_bucket",
    "atoll_broker_evaluations",
    "atoll_plan_queue_depth",
    "atoll_plan_apply_duration_seconds_bucket",
    "atoll_scheduler_placements_total",
    "atoll_scheduler_evaluations_total",
    "atoll_scheduler_evaluations_failed_total",
    "atoll_heartbeat_active",
    "atoll_heartbeat_expired_total",
    "atoll_state_nodes",
    "atoll_state_allocations",
    "atoll_state_jobs",
    "atoll_state_evaluations",
];

const CLIENT_FAMILIES: &[&str] = &[
    "atoll_client_registered",
    "atoll_client_allocations",
    "atoll_client_registrations_total",
    "atoll_client_heartbeats_total",
    "atoll_client_heartbeat_failures_total",
    "atoll_client_alloc_update_batches_total",
    "atoll_client_alloc_updates_total",
    "atoll_client_watch_events_total",
    "atoll_client_allocations_started_total",
    "atoll_http_requests_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_component_serves_metrics_that_promtool_accepts() -> anyhow::Result<()> {
    let _serial = atoll_tests::serial().await;
    // Fail early and clearly when promtool is missing.
    promtool();
    // Short heartbeat TTLs, so the node goes down soon after its agent stops.
    let region = TestRegion::start_with(1, "eu", |c| {
        c.leader.heartbeat.min_ttl = Duration::from_secs(2);
        c.leader.heartbeat.grace = Duration::from_secs(1);
    })
    .await?;
    region.wait_leader(Duration::from_secs(10)).await?;
    let base = region.http(0);

    let dir = tempfile::tempdir()?;
    let agent = ClientAgent::start(ClientConfig::dev(
        "c1",
        "eu",
        dir.path().join("c1"),
        vec![region.rpc_addr(0)],
        region.ca.issue(ops_kit::tls::Role::Client, "eu")?,
    ))
    .await?;
    anyhow::ensure!(
        agent.wait_registered(Duration::from_secs(20)).await,
        "client did not register"
    );
    let client_base = format!(
        "http://{}",
        agent
            .http_addr()
            .ok_or_else(|| anyhow::anyhow!("agent has no HTTP address"))?
    );

    let job = json!({"Job": {
        "ID": "metrics-probe",
        "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Count": 1, "Tasks": [{
            "Name": "t",
            "Driver": "mock_driver",
            "Config": {"run_for": "10m"},
            "Resources": {"CPU": 100, "MemoryMB": 64}
        }]}]
    }});
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/jobs"))
        .json(&job)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "register: {}", r.status());
    // Read the job a few times under distinct ids: one route label.
    for id in ["metrics-probe", "nope-1", "nope-2"] {
        reqwest::get(format!("{base}/v1/job/{id}")).await?;
    }

    // The scrape shows the allocation running on the client.
    let server_text = poll("the allocation running", Duration::from_secs(30), || {
        let url = format!("{base}/metrics");
        async move {
            let t = text(&url).await.ok()?;
            (sample(&t, "atoll_state_allocations", &[("status", "running")]) == Some(1.0))
                .then_some(t)
        }
    })
    .await?;

    for family in SERVER_FAMILIES {
        assert!(
            server_text.lines().any(|l| l.starts_with(family)),
            "{family} missing from the server's metrics:\n{server_text}"
        );
    }
    let s = |family: &str, labels: &[(&str, &str)]| sample(&server_text, family, labels);
    assert_eq!(s("atoll_raft_is_leader", &[("region", "eu")]), Some(1.0));
    assert_eq!(s("atoll_raft_known_leader", &[]), Some(1.0));
    assert_eq!(s("atoll_raft_voters", &[]), Some(1.0));
    assert!(s("atoll_raft_term", &[]).unwrap_or(0.0) >= 1.0);
    let applied = s("atoll_raft_applied_index", &[]).unwrap_or(0.0);
    assert!(applied >= 3.0, "applied index {applied}");
    assert!(s("atoll_raft_commit_index", &[]).unwrap_or(0.0) >= applied);
    assert!(s("atoll_raft_leader_changes_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(s("atoll_raft_apply_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(s("atoll_state_nodes", &[("status", "ready")]), Some(1.0));
    assert_eq!(s("atoll_state_nodes", &[("status", "down")]), Some(0.0));
    assert_eq!(s("atoll_state_jobs", &[("status", "running")]), Some(1.0));
    assert_eq!(s("atoll_heartbeat_active", &[]), Some(1.0));
    assert_eq!(s("atoll_scheduler_placements_total", &[]), Some(1.0));
    assert!(s("atoll_scheduler_evaluations_total", &[("result", "ack")]).unwrap_or(0.0) >= 1.0);
    assert!(s("atoll_plan_apply_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(s("atoll_plan_queue_depth", &[]), Some(0.0));
    // HTTP by route template, never the raw path.
    assert_eq!(
        s(
            "atoll_http_requests_total",
            &[("route", "/v1/job/{id}"), ("status", "404")]
        ),
        Some(2.0)
    );
    assert!(
        s(
            "atoll_http_requests_total",
            &[("route", "/v1/jobs"), ("method", "PUT"), ("status", "200")]
        )
        .is_some(),
        "{server_text}"
    );
    assert!(!server_text.contains("nope-1"), "{server_text}");
    // gRPC by service, method and status: the client's registration.
    assert!(
        s(
            "atoll_grpc_requests_total",
            &[
                ("service", "atoll.v1.ClientService"),
                ("method", "Register"),
                ("status", "OK")
            ]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{server_text}"
    );
    check_metrics("server", &server_text);

    // The same exposition through Nomad's endpoint, and the JSON shape.
    let v1 = text(&format!("{base}/v1/metrics?format=prometheus")).await?;
    check_metrics("server (/v1/metrics?format=prometheus)", &v1);
    let json: Value = reqwest::get(format!("{base}/v1/metrics"))
        .await?
        .json()
        .await?;
    for key in ["Timestamp", "Gauges", "Counters", "Samples"] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
    assert!(
        json["Gauges"].as_array().is_some_and(|g| g
            .iter()
            .any(|m| m["Name"] == "atoll.raft.is_leader" && m["Value"] == 1.0)),
        "{json}"
    );

    // The client agent (one request to its API first, so its HTTP
    // counters have a series).
    reqwest::get(format!("{client_base}/v1/client/stats")).await?;
    let client_text = poll(
        "the client's running allocation",
        Duration::from_secs(10),
        || {
            let url = format!("{client_base}/metrics");
            async move {
                let t = text(&url).await.ok()?;
                (sample(&t, "atoll_client_allocations", &[("status", "running")]) == Some(1.0))
                    .then_some(t)
            }
        },
    )
    .await?;
    for family in CLIENT_FAMILIES {
        assert!(
            client_text.lines().any(|l| l.starts_with(family)),
            "{family} missing from the client's metrics:\n{client_text}"
        );
    }
    let c = |family: &str, labels: &[(&str, &str)]| sample(&client_text, family, labels);
    assert_eq!(c("atoll_client_registered", &[("region", "eu")]), Some(1.0));
    assert_eq!(c("atoll_client_registrations_total", &[]), Some(1.0));
    assert_eq!(c("atoll_client_allocations_started_total", &[]), Some(1.0));
    assert!(c("atoll_client_watch_events_total", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        c(
            "atoll_http_requests_total",
            &[("route", "/v1/client/stats"), ("status", "200")]
        ),
        Some(1.0)
    );
    check_metrics("client", &client_text);
    check_metrics(
        "client (/v1/metrics?format=prometheus)",
        &text(&format!("{client_base}/v1/metrics?format=prometheus")).await?,
    );

    // The agent goes away: its heartbeat timer expires, the node is marked
    // down, and the next scrape shows it (the cached node counts follow the
    // table).
    agent.shutdown_and_kill_tasks().await;
    let after = poll("the node marked down", Duration::from_secs(30), || {
        let url = format!("{base}/metrics");
        async move {
            let t = text(&url).await.ok()?;
            (sample(&t, "atoll_state_nodes", &[("status", "down")]) == Some(1.0)).then_some(t)
        }
    })
    .await?;
    assert_eq!(
        sample(&after, "atoll_state_nodes", &[("status", "ready")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&after, "atoll_heartbeat_expired_total", &[]),
        Some(1.0)
    );
    check_metrics("server (after the node went down)", &after);
    region.shutdown().await;
    Ok(())
}

/// A metric whose name breaks the conventions makes `check_metrics` fail:
/// the check above can fail.
#[test]
fn promtool_check_metrics_rejects_bad_names() {
    let bad = "# HELP atoll_requests Requests\n# TYPE atoll_requests counter\natoll_requests 1\n";
    let out = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut p) = c.stdin.take() {
                p.write_all(bad.as_bytes())?;
            }
            c.wait_with_output()
        })
        .expect("promtool");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("_total"), "{report}");
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/deploy")
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    let deploy = deploy_dir();
    // The rules and their unit tests.
    run_promtool(&["check", "rules", "alerts.yml"], None, &deploy);
    run_promtool(&["test", "rules", "alerts_test.yml"], None, &deploy);

    // The scrape config, with its file_sd path pointed at a targets file in
    // the format `atoll dev` writes (so promtool checks that file too).
    let dir = tempfile::tempdir().expect("temp dir");
    let targets = dir.path().join("prometheus").join("targets.json");
    std::fs::create_dir_all(targets.parent().expect("parent")).expect("mkdir");
    let example = std::fs::read_to_string(deploy.join("targets.example.json"))
        .expect("ops/deploy/targets.example.json");
    let parsed: Value = serde_json::from_str(&example).expect("targets.example.json is JSON");
    for group in parsed.as_array().expect("a list of target groups") {
        assert!(group["targets"].is_array(), "{group}");
        let role = group["labels"]["role"].as_str().unwrap_or_default();
        assert!(
            ["server", "client", "gateway"].contains(&role),
            "role {role:?} in {group}"
        );
        assert!(group["labels"]["instance_name"].is_string(), "{group}");
    }
    std::fs::write(&targets, &example).expect("write targets");
    // The file as ops-kit writes it for `atoll dev` has the example's shape.
    let written = ops_kit::telemetry::file_sd_json(&[
        ScrapeTarget {
            addr: "127.0.0.1:4646".into(),
            role: TargetRole::Server,
            region: Some("eu".into()),
            instance_name: "s1.eu".into(),
        },
        ScrapeTarget {
            addr: "127.0.0.1:4646".into(),
            role: TargetRole::Client,
            region: Some("eu".into()),
            instance_name: "c1.eu".into(),
        },
        ScrapeTarget {
            addr: "127.0.0.1:4656".into(),
            role: TargetRole::Gateway,
            region: None,
            instance_name: "gw1".into(),
        },
    ]);
    let written: Value = serde_json::from_str(&written).expect("file_sd JSON");
    let keys = |v: &Value| -> Vec<Vec<String>> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let mut k: Vec<String> = g["labels"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                k.insert(0, g["labels"]["role"].as_str().unwrap_or("").to_string());
                k
            })
            .collect()
    };
    for group in keys(&written) {
        assert!(
            keys(&parsed).contains(&group),
            "{group:?} not in the example"
        );
    }
    let config = std::fs::read_to_string(deploy.join("prometheus.yml")).expect("prometheus.yml");
    assert!(
        config.contains("/tmp/atoll-dev/prometheus/targets.json"),
        "prometheus.yml should read the documented default targets file"
    );
    let config = config.replace(
        "/tmp/atoll-dev/prometheus/targets.json",
        &targets.display().to_string(),
    );
    std::fs::copy(deploy.join("alerts.yml"), dir.path().join("alerts.yml")).expect("copy rules");
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
    let report = run_promtool(&["check", "config", "prometheus.yml"], None, dir.path());
    assert!(!report.contains("WARNING"), "{report}");

    // And promtool takes the written file too.
    ops_kit::telemetry::write_file_sd(
        &targets,
        &[ScrapeTarget {
            addr: "127.0.0.1:4646".into(),
            role: TargetRole::Server,
            region: Some("eu".into()),
            instance_name: "s1.eu".into(),
        }],
    )
    .expect("write_file_sd");
    run_promtool(&["check", "config", "prometheus.yml"], None, dir.path());

    // A broken targets file is caught: the check above can fail.
    std::fs::write(&targets, r#"[{"targets": "not-a-list"}]"#).expect("write targets");
    let out = Command::new(promtool())
        .args(["check", "config", "prometheus.yml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool");
    assert!(!out.status.success(), "a broken targets file passed");
}

#[test]
fn grafana_dashboard_queries_known_families() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana-dashboard.json"))
        .expect("ops/deploy/grafana-dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let known: Vec<&str> = SERVER_FAMILIES
        .iter()
        .chain(CLIENT_FAMILIES)
        .copied()
        .chain([
            "atoll_gossip_members",
            "atoll_gateway_region_reachable",
            "atoll_gateway_forwarded_requests_total",
            "atoll_gateway_forward_latency_seconds_bucket",
            "atoll_raft_replication_lag_entries",
            "up",
        ])
        .collect();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr}");
            for n in names {
                assert!(
                    known.iter().any(|k| *k == n),
                    "panel {:?} queries unknown metric {n}",
                    p["title"]
                );
            }
        }
    }
}

/// The `atoll_*` and `up` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && ((bytes[i] as char).is_ascii_alphanumeric() || bytes[i] == b'_')
            {
                i += 1;
            }
            let word = &expr[start..i];
            // Label names inside {...} are followed by = or !=/=~.
            let next = expr[i..].trim_start();
            let is_label =
                next.starts_with('=') || next.starts_with("!=") || next.starts_with("=~");
            if !is_label && (word.starts_with("atoll_") || word == "up") {
                out.push(word.to_string());
            }
        } else if c == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The example configurations use the keys the binaries read (both file
/// formats reject unknown keys).
#[test]
fn example_configs_parse() {
    let dir = deploy_dir().join("config");
    let server: region_server::config::FileConfig =
        ops_kit::config::load_toml(&dir.join("server.toml")).expect("config/server.toml");
    assert_eq!(server.region, "eu");
    assert_eq!(server.bootstrap_expect, Some(3));
    assert!(server.tls.is_some());
    assert_eq!(server.gossip.keys.len(), 1);
    let client: client_agent::config::FileConfig =
        ops_kit::config::load_toml(&dir.join("client.toml")).expect("config/client.toml");
    assert_eq!(client.region, "eu");
    assert_eq!(client.servers.len(), 3);
    assert_eq!(client.reserved.cpu, 500);
    let gateway: federation_gateway::config::FileConfig =
        ops_kit::config::load_toml(&dir.join("gateway.toml")).expect("config/gateway.toml");
    assert_eq!(gateway.region, "eu");
    assert!(gateway.tls.as_ref().is_some_and(|t| t.http));
    assert_eq!(gateway.gossip.retry_join.len(), 2);
}

/// `--log-level` takes per-module directives and refuses bad ones;
/// `--log-json` writes one JSON object per line. (Real processes: logging
/// is process-global.)
#[test]
fn binaries_take_log_level_and_log_json() -> anyhow::Result<()> {
    use std::io::BufRead;
    let server = atoll_tests::workspace_binary("region-server", "region-server")?;
    let client = atoll_tests::workspace_binary("client-agent", "client-agent")?;
    for bin in [&server, &client] {
        let out = Command::new(bin)
            .args(["--log-level", "info,region_server=loud"])
            .stdin(Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {err}", bin.display());
        assert!(
            err.contains("invalid log level") && err.contains("region_server=loud"),
            "{}: {err}",
            bin.display()
        );
    }

    let dir = tempfile::tempdir()?;
    let child = Command::new(&server)
        .args([
            "--log-json",
            "--log-level",
            "warn,region_server::server=info",
            "--name",
            "s1",
            "--region",
            "eu",
            "--bootstrap-expect",
            "1",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("s1"))
        .args(["--http-addr", &atoll_tests::free_addr()])
        .args(["--rpc-addr", &atoll_tests::free_addr()])
        .args(["--gossip-addr", &atoll_tests::free_addr()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut proc = atoll_tests::Proc { child };
    let stderr = proc
        .child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let started = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                if v["fields"]["message"] == "region server started" {
                    break v;
                }
                seen.push(line);
            }
            Err(e) => panic!("no start line ({e}); saw {seen:?}"),
        }
    };
    assert_eq!(started["level"], "INFO", "{started}");
    assert_eq!(started["target"], "region_server::server", "{started}");
    assert_eq!(started["fields"]["region"], "eu", "{started}");
    // Only warnings from other modules got through the filter.
    for line in &seen {
        let v: Value = serde_json::from_str(line)?;
        assert!(
            v["level"] == "WARN" || v["level"] == "ERROR" || v["target"] == "region_server::server",
            "{line}"
        );
    }
    proc.kill();
    Ok(())
}

/// The federation gateway's metrics (written by the gateway) pass promtool
/// too, with the two families the alert rules rely on; and a server in a
/// gossip pool (with its `atoll_gossip_*` families) as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_and_gossiping_server_metrics_pass_promtool() -> anyhow::Result<()> {
    let _serial = atoll_tests::serial().await;
    promtool();
    let mut fed = atoll_tests::TestFederation::start(&["eu"], 1).await?;
    let gw = fed.start_gateway("gw1").await?;
    let gw_base = fed.gateway_http(gw);

    // The gateway learns region eu from the pool; one request forwarded.
    poll("a request forwarded to eu", Duration::from_secs(30), || {
        let url = format!("{gw_base}/v1/jobs?region=eu");
        async move {
            let r = reqwest::get(url).await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await?;
    // The reachability gauge follows the region map (refreshed by a loop).
    let gw_text = poll("region eu reachable", Duration::from_secs(10), || {
        let url = format!("{gw_base}/metrics");
        async move {
            let t = text(&url).await.ok()?;
            (sample(&t, "atoll_gateway_region_reachable", &[("region", "eu")]) == Some(1.0))
                .then_some(t)
        }
    })
    .await?;
    assert!(
        sample(
            &gw_text,
            "atoll_gateway_forwarded_requests_total",
            &[("region", "eu"), ("method", "GET"), ("status", "200")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{gw_text}"
    );
    check_metrics("gateway", &gw_text);

    let server_base = fed.region("eu").http(0);
    let server_text = poll(
        "the server sees the gateway",
        Duration::from_secs(30),
        || {
            let url = format!("{server_base}/metrics");
            async move {
                let t = text(&url).await.ok()?;
                (sample(&t, "atoll_gossip_members", &[("status", "alive")]) == Some(2.0))
                    .then_some(t)
            }
        },
    )
    .await?;
    check_metrics("server in a gossip pool", &server_text);
    fed.shutdown().await;
    Ok(())
}
