//! The real `atoll` binary against an in-process region server and client
//! agent: an HCL job goes through `job run` (parsed by `/v1/jobs/parse`,
//! followed to the end of its evaluation), runs, its logs are read with
//! `alloc logs`, `job status -json` and `job plan` (exit codes 0/1/255)
//! see it, and `job stop` stops it; `server members`, `operator raft
//! list-peers`, `operator snapshot save/inspect`, `node status`, `tls`
//! and error exit codes along the way. Flags are written Nomad's way
//! (`-address`, `-json`), which the CLI accepts beside `--address`.

use std::path::Path;
use std::time::{Duration, Instant};

use client_agent::{ClientAgent, ClientConfig};
use region_server::{RegionServer, ServerConfig};
use serde_json::Value;

use atoll_tests::CliOut as Out;

async fn atoll(bin: &Path, args: &[&str]) -> Out {
    atoll_tests::run_cli(bin, None, args).await
}

/// Runs `args` until `check` accepts the output, for up to `timeout`.
async fn until(bin: &Path, args: &[&str], what: &str, check: impl Fn(&Out) -> bool) -> Out {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = atoll(bin, args).await;
        if check(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: last output {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

const JOB: &str = r#"
variable "message" {
  type    = string
  default = "hello"
}

job "hello" {
  type = "batch"

  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "while true; do echo ${var.message} from $NOMAD_TASK_NAME; sleep 1; done"]
      }
      resources {
        cpu    = 100
        memory = 64
      }
      kill_timeout = "1s"
    }
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_drives_a_job_through_its_lifecycle() {
    let _serial = atoll_tests::serial().await;
    ops_kit::tls::install_crypto_provider();
    let bin = atoll_tests::workspace_binary("atoll", "atoll").expect("atoll binary");
    let dir = tempfile::tempdir().expect("temp dir");

    // Errors before any server exists: unreachable is 1, usage is 2.
    let out = atoll(&bin, &["job", "status", "-address", "http://127.0.0.1:1"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("cannot reach http://127.0.0.1:1"),
        "{out}"
    );
    assert!(out.stderr.contains("ATOLL_ADDR"), "{out}");
    let out = atoll(&bin, &["job", "frobnicate"]).await;
    assert_eq!(out.code, 2, "{out}");

    let ca = ops_kit::tls::DevCa::generate().expect("ca");
    let server = RegionServer::start(ServerConfig::dev(
        "s1",
        "global",
        dir.path().join("s1"),
        ca.issue(ops_kit::tls::Role::Server, "global")
            .expect("cert"),
    ))
    .await
    .expect("server");
    let addr = format!("http://{}", server.http_addr);
    let a = addr.as_str();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.service.is_leader() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = ClientAgent::start(ClientConfig::dev(
        "c1",
        "global",
        dir.path().join("c1"),
        vec![server.rpc_addr.to_string()],
        ca.issue(ops_kit::tls::Role::Client, "global")
            .expect("cert"),
    ))
    .await
    .expect("agent");
    assert!(
        agent.wait_registered(Duration::from_secs(20)).await,
        "client registered"
    );
    let node_id = agent.node_id();

    // node status lists the client; -json shows it in full.
    let out = atoll(&bin, &["node", "status", "-address", a]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(&node_id[..8]), "{out}");
    assert!(out.stdout.contains("ready"), "{out}");
    let out = atoll(
        &bin,
        &["node", "status", &node_id[..6], "-address", a, "-json"],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(json(&out)["Node"]["ID"], node_id.as_str(), "{out}");

    // job run: HCL with a variable, followed to the end of the evaluation.
    let job_file = dir.path().join("hello.hcl");
    std::fs::write(&job_file, JOB).expect("write job");
    let job_path = job_file.to_str().expect("utf-8 path");
    let out = atoll(
        &bin,
        &[
            "job",
            "run",
            "-address",
            a,
            "-var",
            "message=from-cli",
            job_path,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Monitoring evaluation"), "{out}");
    assert!(out.stdout.contains("Allocation \""), "{out}");
    assert!(
        out.stdout.contains("finished with status \"complete\""),
        "{out}"
    );

    // job status -json: the job and its allocation, running.
    let out = until(
        &bin,
        &["job", "status", "-address", a, "-json", "hello"],
        "a running allocation",
        |o| {
            o.code == 0
                && serde_json::from_str::<Value>(&o.stdout).is_ok_and(|v| {
                    v[0]["Allocations"]
                        .as_array()
                        .is_some_and(|allocs| allocs.iter().any(|x| x["ClientStatus"] == "running"))
                })
        },
    )
    .await;
    let status = json(&out);
    assert_eq!(status[0]["Job"]["ID"], "hello");
    assert_eq!(status[0]["Job"]["Type"], "batch");
    assert_eq!(
        status[0]["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "while true; do echo from-cli from $NOMAD_TASK_NAME; sleep 1; done"
    );
    let alloc_id = status[0]["Allocations"][0]["ID"]
        .as_str()
        .expect("alloc id")
        .to_string();

    // The table form.
    let out = atoll(&bin, &["job", "status", "-address", a, "hello"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("ID            = hello"), "{out}");
    assert!(out.stdout.contains(&alloc_id[..8]), "{out}");
    let out = atoll(&bin, &["job", "status", "-address", a]).await;
    assert!(out.stdout.lines().any(|l| l.starts_with("hello ")), "{out}");

    // alloc logs by id prefix, the single task found by itself.
    let out = until(
        &bin,
        &["alloc", "logs", "-address", a, &alloc_id[..8]],
        "the task's output",
        |o| o.code == 0 && o.stdout.contains("from-cli from t"),
    )
    .await;
    assert!(out.stdout.lines().all(|l| l == "from-cli from t"), "{out}");
    let out = atoll(&bin, &["alloc", "status", "-address", a, &alloc_id]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Task \"t\" is \"running\""), "{out}");

    // job plan: the same file is no change (0), another value is (1),
    // errors are 255.
    let out = atoll(
        &bin,
        &[
            "job",
            "plan",
            "-address",
            a,
            "-var",
            "message=from-cli",
            job_path,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("(no changes)"), "{out}");
    let out = atoll(
        &bin,
        &[
            "job",
            "plan",
            "-address",
            a,
            "-var",
            "message=changed",
            job_path,
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("+/- Job: \"hello\""), "{out}");
    assert!(
        out.stdout.contains("~ TaskGroups[g].Tasks[t].Config.args:"),
        "{out}"
    );
    assert!(out.stdout.contains("Job Modify Index: "), "{out}");
    let bad = dir.path().join("bad.hcl");
    std::fs::write(
        &bad,
        "job \"x\" {\n  group \"g\" {\n    cuont = 1\n  }\n}\n",
    )
    .expect("write");
    let out = atoll(
        &bin,
        &["job", "plan", "-address", a, bad.to_str().expect("path")],
    )
    .await;
    assert_eq!(out.code, 255, "{out}");
    assert!(out.stderr.contains("line 3, column 5"), "{out}");

    // A job nothing can run: plan shows the failure, run exits 2 (Nomad's
    // code for placement failures) and explains it.
    let nowhere = dir.path().join("nowhere.hcl");
    std::fs::write(
        &nowhere,
        "job \"nowhere\" {\n  constraint {\n    attribute = \"${attr.kernel.name}\"\n    value     = \"plan9\"\n  }\n  group \"g\" {\n    task \"t\" {\n      driver = \"raw_exec\"\n      config {\n        command = \"/bin/true\"\n      }\n    }\n  }\n}\n",
    )
    .expect("write");
    let nowhere = nowhere.to_str().expect("path");
    let out = atoll(&bin, &["job", "plan", "-address", a, nowhere]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("+ Job: \"nowhere\""), "{out}");
    assert!(out.stdout.contains("Task Group \"g\""), "{out}");
    let out = atoll(&bin, &["job", "run", "-address", a, nowhere]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stdout.contains("Failed to place all allocations"),
        "{out}"
    );
    assert!(out.stdout.contains("plan9"), "{out}");
    let out = atoll(
        &bin,
        &["job", "stop", "-purge", "-detach", "-address", a, "nowhere"],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("stopped and purged"), "{out}");

    // Servers and Raft.
    let out = atoll(&bin, &["server", "members", "-address", a]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("s1"), "{out}");
    assert!(out.stdout.contains("alive"), "{out}");
    let out = atoll(&bin, &["operator", "raft", "list-peers", "-address", a]).await;
    assert_eq!(out.code, 0, "{out}");
    let peer = out
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(peer.first(), Some(&"s1"), "{out}");
    assert!(peer.contains(&"leader"), "{out}");

    // Snapshots: saved over HTTP, inspected locally.
    let snap = dir.path().join("state.snap");
    let snap_path = snap.to_str().expect("path");
    let out = atoll(
        &bin,
        &["operator", "snapshot", "save", "-address", a, snap_path],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(snap.exists());
    let out = atoll(
        &bin,
        &["operator", "snapshot", "inspect", "-json", snap_path],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let inspect = json(&out);
    assert_eq!(inspect["Valid"], true, "{out}");
    assert_eq!(inspect["Counts"]["job"], 1, "{out}");
    assert_eq!(inspect["Counts"]["node"], 1, "{out}");
    assert!(inspect["Index"].as_u64().unwrap_or(0) > 0, "{out}");
    let junk = dir.path().join("junk.snap");
    std::fs::write(&junk, b"not a snapshot").expect("write");
    let out = atoll(
        &bin,
        &[
            "operator",
            "snapshot",
            "inspect",
            junk.to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");

    // Region overview.
    let out = atoll(&bin, &["status", "-address", a]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("global  ok"), "{out}");
    assert!(out.stdout.contains("1/1"), "{out}");

    // job stop, followed to the end of its evaluation; the job is stopped.
    let out = atoll(&bin, &["job", "stop", "-address", a, "hello"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("finished with status \"complete\""),
        "{out}"
    );
    let out = atoll(&bin, &["job", "status", "-address", a, "-json", "hello"]).await;
    assert_eq!(json(&out)[0]["Job"]["Stop"], true, "{out}");
    until(
        &bin,
        &["alloc", "status", "-address", a, "-json", &alloc_id],
        "the allocation to stop",
        |o| {
            serde_json::from_str::<Value>(&o.stdout)
                .is_ok_and(|v| v["ClientStatus"] != "running" && v["DesiredStatus"] == "stop")
        },
    )
    .await;
    let out = atoll(&bin, &["job", "stop", "-address", a, "nope"]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("no job with id or prefix \"nope\""),
        "{out}"
    );

    // Node drain and eligibility, by id prefix.
    let prefix = &node_id[..8];
    let out = atoll(
        &bin,
        &[
            "node",
            "drain",
            "-address",
            a,
            "-enable",
            "-deadline",
            "10m",
            "-yes",
            prefix,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("drain strategy set"), "{out}");
    let out = atoll(&bin, &["node", "status", "-address", a, "-json", prefix]).await;
    let node = json(&out);
    // Either the drain is still under way with the deadline given, or the
    // leader's drainer already completed it (nothing left to move).
    let draining = node["Node"]["DrainStrategy"]["Deadline"] == 600_000_000_000i64;
    let completed = node["Node"]["LastDrain"]["Status"] == "complete";
    assert!(draining || completed, "{out}");
    assert_eq!(node["Node"]["SchedulingEligibility"], "ineligible", "{out}");
    let out = atoll(&bin, &["node", "drain", "-address", a, "-disable", prefix]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = atoll(&bin, &["node", "status", "-address", a, "-json", prefix]).await;
    let node = json(&out);
    assert!(node["Node"]["DrainStrategy"].is_null(), "{out}");
    assert_eq!(node["Node"]["SchedulingEligibility"], "eligible", "{out}");
    let out = atoll(
        &bin,
        &["node", "eligibility", "-address", a, "-disable", prefix],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let out = atoll(&bin, &["node", "status", "-address", a, prefix]).await;
    assert!(out.stdout.contains("Eligibility  = ineligible"), "{out}");
    let out = atoll(&bin, &["node", "eligibility", "-address", a, prefix]).await;
    assert_eq!(out.code, 2, "-enable or -disable is required: {out}");

    // A JSON job file is submitted as it is.
    let json_job = dir.path().join("batch.json");
    std::fs::write(
        &json_job,
        r#"{"Job": {"ID": "json-job", "Type": "batch", "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "/bin/true"}}]}]}}"#,
    )
    .expect("write");
    let out = atoll(
        &bin,
        &[
            "job",
            "run",
            "-detach",
            "-address",
            a,
            json_job.to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let out = atoll(&bin, &["job", "inspect", "-address", a, "json-job"]).await;
    assert_eq!(json(&out)["Job"]["Type"], "batch", "{out}");

    // tls: a CA, then a server certificate for region eu signed by it.
    let tls = dir.path().join("tls");
    let tls_dir = tls.to_str().expect("path");
    let out = atoll(&bin, &["tls", "ca", "create", "-dir", tls_dir]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = atoll(
        &bin,
        &[
            "tls",
            "cert",
            "create",
            "-server",
            "-region",
            "eu",
            "-dir",
            tls_dir,
            "-ca",
            tls.join("atoll-agent-ca.pem").to_str().expect("path"),
            "-key",
            tls.join("atoll-agent-ca-key.pem").to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    let bundle = ops_kit::tls::CertBundle::load(
        &tls.join("atoll-agent-ca.pem"),
        &tls.join("eu-server-atoll.pem"),
        &tls.join("eu-server-atoll-key.pem"),
    )
    .expect("certificate files");
    assert_eq!(
        bundle.own_identity().expect("identity").name(),
        "server.eu.atoll"
    );

    agent.shutdown_and_kill_tasks().await;
    server.shutdown().await;
}

const SERVICE: &str = r#"
variable "greeting" {
  default = "hello"
}

job "web" {
  group "web" {
    count = 2
    update {
      max_parallel     = 2
      health_check     = "task_states"
      min_healthy_time = "1s"
      healthy_deadline = "1m"
    }
    task "hello" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "while true; do echo ${var.greeting}; sleep 1; done"]
      }
      resources {
        cpu    = 50
        memory = 32
      }
      kill_timeout = "1s"
    }
  }
}
"#;

/// A region of one server with one client agent.
async fn start(dir: &Path) -> (RegionServer, ClientAgent, String) {
    let ca = ops_kit::tls::DevCa::generate().expect("ca");
    let server = RegionServer::start(ServerConfig::dev(
        "s1",
        "global",
        dir.join("s1"),
        ca.issue(ops_kit::tls::Role::Server, "global")
            .expect("cert"),
    ))
    .await
    .expect("server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.service.is_leader() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = ClientAgent::start(ClientConfig::dev(
        "c1",
        "global",
        dir.join("c1"),
        vec![server.rpc_addr.to_string()],
        ca.issue(ops_kit::tls::Role::Client, "global")
            .expect("cert"),
    ))
    .await
    .expect("agent");
    assert!(
        agent.wait_registered(Duration::from_secs(20)).await,
        "client registered"
    );
    let addr = format!("http://{}", server.http_addr);
    (server, agent, addr)
}

/// The parse endpoint takes a variables file and reports errors with
/// their position; `job run -detach` submits new versions, which `job
/// history -p` lists with their changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parse_endpoint_and_job_history() {
    let _serial = atoll_tests::serial().await;
    ops_kit::tls::install_crypto_provider();
    let bin = atoll_tests::workspace_binary("atoll", "atoll").expect("atoll binary");
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, agent, addr) = start(dir.path()).await;
    let a = addr.as_str();

    let http = reqwest::Client::new();
    let parsed: Value = http
        .put(format!("{addr}/v1/jobs/parse"))
        .json(&serde_json::json!({
            "JobHCL": SERVICE,
            "Canonicalize": true,
            "Variables": "greeting = \"bonjour\"\n",
        }))
        .send()
        .await
        .expect("parse")
        .json()
        .await
        .expect("json");
    assert_eq!(parsed["ID"], "web");
    assert_eq!(parsed["Region"], "global", "filled in when canonicalized");
    assert_eq!(
        parsed["TaskGroups"][0]["Update"]["MinHealthyTime"],
        1_000_000_000i64
    );
    assert_eq!(
        parsed["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "while true; do echo bonjour; sleep 1; done"
    );
    assert_eq!(
        parsed["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"],
        32
    );
    let raw: Value = http
        .put(format!("{addr}/v1/jobs/parse"))
        .json(&serde_json::json!({"JobHCL": SERVICE, "Variables": {"greeting": "hej"}}))
        .send()
        .await
        .expect("parse")
        .json()
        .await
        .expect("json");
    assert_eq!(raw["Region"], "", "not canonicalized");
    assert_eq!(
        raw["TaskGroups"][0]["Tasks"][0]["Config"]["args"][1],
        "while true; do echo hej; sleep 1; done"
    );
    let bad = http
        .put(format!("{addr}/v1/jobs/parse"))
        .json(&serde_json::json!({"JobHCL": "job \"x\" {\n  typo = 1\n}\n"}))
        .send()
        .await
        .expect("parse");
    assert_eq!(bad.status().as_u16(), 400);
    let text = bad.text().await.unwrap_or_default();
    assert!(text.contains("line 2, column 3"), "{text}");

    let job_file = dir.path().join("web.hcl");
    std::fs::write(&job_file, SERVICE).expect("write job");
    let job_path = job_file.to_str().expect("utf-8 path");
    for greeting in ["hello", "hi"] {
        let var = format!("greeting={greeting}");
        let out = atoll(
            &bin,
            &[
                "job", "run", "-detach", "-address", a, "-var", &var, job_path,
            ],
        )
        .await;
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stdout.contains("Evaluation ID: "), "{out}");
    }
    let out = atoll(&bin, &["job", "history", "-p", "-address", a, "web"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Version     = 1"), "{out}");
    assert!(out.stdout.contains("Version     = 0"), "{out}");
    assert!(
        out.stdout.contains(
            "~ TaskGroups[web].Tasks[hello].Config.args: [\"-c\",\"while true; do echo hello; sleep 1; done\"] => [\"-c\",\"while true; do echo hi; sleep 1; done\"]"
        ),
        "{out}"
    );
    let out = atoll(&bin, &["job", "inspect", "-address", a, "web"]).await;
    assert_eq!(json(&out)["Job"]["Version"], 1, "{out}");

    agent.shutdown_and_kill_tasks().await;
    server.shutdown().await;
}

/// A service job: `job run` follows the evaluation and then the deployment
/// until it succeeds, printing the progress table as it changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_run_follows_a_deployment_to_its_end() {
    let _serial = atoll_tests::serial().await;
    ops_kit::tls::install_crypto_provider();
    let bin = atoll_tests::workspace_binary("atoll", "atoll").expect("atoll binary");
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, agent, addr) = start(dir.path()).await;
    let job_file = dir.path().join("web.hcl");
    std::fs::write(&job_file, SERVICE).expect("write job");
    let job_path = job_file.to_str().expect("utf-8 path");
    // A safety net against a deployment that never ends, not an
    // assertion on how long it takes.
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        atoll(&bin, &["job", "run", "-address", &addr, job_path]),
    )
    .await
    .expect("job run returned");
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Monitoring deployment"), "{out}");
    assert!(
        out.stdout.contains("Task Group  Promoted  Desired"),
        "{out}"
    );
    assert!(out.stdout.contains("successful"), "{out}");
    let out = atoll(&bin, &["job", "status", "-address", &addr, "web"]).await;
    assert!(out.stdout.contains("Latest Deployment"), "{out}");

    agent.shutdown_and_kill_tasks().await;
    server.shutdown().await;
}
