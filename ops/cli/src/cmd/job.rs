//! `atoll job ...`: run, plan, status, stop, history, revert, dispatch,
//! periodic force, inspect.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::monitor;
use crate::client::ApiClient;
use crate::format::{self, ago, json as pretty, kv, n, s, short, table};

/// `atoll job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job file (HCL or JSON) and follow its evaluation and
    /// deployment.
    Run(RunArgs),
    /// Dry-run a job file: the changes and what the scheduler would do.
    /// Exit code 0: no changes, 1: changes, 255: error.
    Plan(PlanArgs),
    /// List jobs, or show one job.
    Status(StatusArgs),
    /// Stop a job (and purge it with -purge).
    Stop(StopArgs),
    /// The versions of a job.
    History(HistoryArgs),
    /// Go back to an earlier version of a job.
    Revert(RevertArgs),
    /// Start an instance of a parameterized job.
    Dispatch(DispatchArgs),
    /// Periodic job actions.
    #[command(subcommand)]
    Periodic(PeriodicCommand),
    /// The job's full specification as JSON.
    Inspect(InspectArgs),
}

/// Variables and the file of a job.
#[derive(Debug, Args)]
pub struct JobFileArgs {
    /// The job file: HCL (`.hcl`, `.nomad`) or JSON; `-` for stdin.
    pub file: PathBuf,
    /// A value for a variable of an HCL job file, `name=value`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A file of variable values (`name = value` lines).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

/// `atoll job run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobFileArgs,
    /// Return after submitting, without following the evaluation.
    #[arg(long)]
    pub detach: bool,
    /// Register only if the job's modify index is this (from `job plan`;
    /// 0: only if the job does not exist yet).
    #[arg(long = "check-index")]
    pub check_index: Option<u64>,
    /// Print the registration response as JSON (implies -detach).
    #[arg(long)]
    pub json: bool,
}

/// `atoll job plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub job: JobFileArgs,
    /// Print the plan response as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `atoll job status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Job id (or prefix); all jobs when omitted.
    pub id: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `atoll job stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Job id.
    pub id: String,
    /// Remove the job from the state instead of marking it stopped.
    #[arg(long)]
    pub purge: bool,
    /// Stop a multiregion job in every region.
    #[arg(long)]
    pub global: bool,
    /// Return without following the evaluation.
    #[arg(long)]
    pub detach: bool,
    /// Accepted for Nomad compatibility (the CLI never prompts).
    #[arg(long)]
    pub yes: bool,
}

/// `atoll job history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Job id.
    pub id: String,
    /// Show the changes each version made.
    #[arg(short = 'p')]
    pub diff: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `atoll job revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Job id.
    pub id: String,
    /// The version to go back to.
    pub version: u64,
    /// Return without following the evaluation.
    #[arg(long)]
    pub detach: bool,
}

/// `atoll job dispatch`.
#[derive(Debug, Args)]
pub struct DispatchArgs {
    /// The parameterized job.
    pub id: String,
    /// A file whose content is the payload (`-` for stdin).
    pub input: Option<PathBuf>,
    /// Metadata of the dispatched job, `key=value`.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Return without following the evaluation.
    #[arg(long)]
    pub detach: bool,
}

/// `atoll job periodic ...`.
#[derive(Debug, Subcommand)]
pub enum PeriodicCommand {
    /// Launch a periodic job now.
    Force(ForceArgs),
}

/// `atoll job periodic force`.
#[derive(Debug, Args)]
pub struct ForceArgs {
    /// The periodic job.
    pub id: String,
    /// Return without following the evaluation.
    #[arg(long)]
    pub detach: bool,
}

/// `atoll job inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Job id.
    pub id: String,
    /// A past version.
    #[arg(long)]
    pub version: Option<u64>,
}

/// Runs a job command.
pub async fn run(cmd: JobCommand, client: &ApiClient) -> anyhow::Result<u8> {
    match cmd {
        JobCommand::Run(a) => job_run(a, client).await,
        JobCommand::Plan(a) => match job_plan(a, client).await {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("Error: {e:#}");
                Ok(255)
            }
        },
        JobCommand::Status(a) => status(a, client).await,
        JobCommand::Stop(a) => stop(a, client).await,
        JobCommand::History(a) => history(a, client).await,
        JobCommand::Revert(a) => revert(a, client).await,
        JobCommand::Dispatch(a) => dispatch(a, client).await,
        JobCommand::Periodic(PeriodicCommand::Force(a)) => force(a, client).await,
        JobCommand::Inspect(a) => inspect(a, client).await,
    }
}

/// `name=value` pairs.
pub fn parse_pairs(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{what} {item:?} must look like name=value"),
        })
        .collect()
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("read stdin")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

/// Whether a job file is JSON (by extension, or by its first character).
pub fn is_json(path: &Path, content: &str) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("hcl") | Some("nomad") => false,
        _ => content.trim_start().starts_with('{'),
    }
}

/// Reads a job file into the job's JSON: JSON files as they are (a bare job
/// or `{"Job": ...}`), HCL through the server's `/v1/jobs/parse`.
pub async fn load_job(args: &JobFileArgs, client: &ApiClient) -> anyhow::Result<Value> {
    let bytes = read_input(&args.file)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", args.file.display()))?;
    if is_json(&args.file, &text) {
        if !args.vars.is_empty() || !args.var_files.is_empty() {
            bail!("-var and -var-file only apply to HCL job files");
        }
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", args.file.display()))?;
        let job = match v.get("Job") {
            Some(job) if job.is_object() => job.clone(),
            _ => v,
        };
        if !job.is_object() {
            bail!("{} does not hold a job object", args.file.display());
        }
        return Ok(job);
    }
    let mut vars = BTreeMap::new();
    for file in &args.var_files {
        let content = std::fs::read_to_string(file)
            .with_context(|| format!("read variables file {}", file.display()))?;
        let parsed =
            proto::hcl::parse_var_file(&content).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        vars.extend(parsed);
    }
    vars.extend(parse_pairs(&args.vars, "-var")?);
    let job = client
        .put(
            "/v1/jobs/parse",
            &[],
            json!({"JobHCL": text, "Canonicalize": true, "Variables": vars}),
        )
        .await
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    Ok(job)
}

async fn job_run(a: RunArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let job = load_job(&a.job, client).await?;
    let id = s(&job, "ID");
    if id.is_empty() {
        bail!("the job has no ID");
    }
    let mut body = json!({ "Job": job });
    if let Some(index) = a.check_index {
        body["EnforceIndex"] = json!(true);
        body["JobModifyIndex"] = json!(index);
    }
    let resp = client.put("/v1/jobs", &[], body).await?;
    if a.json {
        println!("{}", pretty(&resp));
        return Ok(0);
    }
    let warnings = s(&resp, "Warnings");
    if !warnings.is_empty() {
        println!("Job Warnings:\n{warnings}\n");
    }
    let eval_id = s(&resp, "EvalID");
    if eval_id.is_empty() {
        println!("Job registration successful");
        if !job["Periodic"].is_null() {
            println!("Periodic job: launches follow its schedule (`atoll job periodic force {id}` launches one now)");
        } else if !job["ParameterizedJob"].is_null() {
            println!("Parameterized job: start instances with `atoll job dispatch {id}`");
        }
        return Ok(0);
    }
    if a.detach {
        println!("Job registration successful");
        println!("Evaluation ID: {eval_id}");
        return Ok(0);
    }
    monitor::eval(client, &eval_id, true).await
}

async fn job_plan(a: PlanArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let mut job = load_job(&a.job, client).await?;
    let id = s(&job, "ID");
    if id.is_empty() {
        bail!("the job has no ID");
    }
    // Canonicalize locally so the diff against the stored job shows only
    // real changes (the server canonicalizes the same way).
    if let Ok(mut typed) = serde_json::from_value::<proto::model::Job>(job.clone()) {
        if typed.region.is_empty() {
            if let Some(r) = client.region() {
                typed.region = r.to_string();
            }
        }
        let region_unset = typed.region.is_empty();
        typed.canonicalize();
        if let Ok(v) = serde_json::to_value(&typed) {
            job = v;
            if region_unset {
                job["Region"] = Value::Null;
            }
        }
    }
    let resp = client
        .put(
            &format!("/v1/job/{id}/plan"),
            &[],
            json!({"Job": job.clone(), "Diff": true}),
        )
        .await?;
    if a.json {
        println!("{}", pretty(&resp));
    }
    let diff_type = s(&resp["Diff"], "Type");
    let changed = diff_type != "None";
    if !a.json {
        print_plan(client, &id, &job, &resp, &diff_type).await;
    }
    Ok(if changed { 1 } else { 0 })
}

async fn print_plan(client: &ApiClient, id: &str, job: &Value, resp: &Value, diff_type: &str) {
    match diff_type {
        "Added" => println!("+ Job: \"{id}\""),
        "None" => println!("Job: \"{id}\" (no changes)"),
        _ => {
            println!("+/- Job: \"{id}\"");
            if let Ok(old) = client.get(&format!("/v1/job/{id}"), &[]).await {
                let mut new = job.clone();
                if new["Region"].is_null() {
                    new["Region"] = old["Region"].clone();
                }
                if new["Namespace"].is_null() || s(&new, "Namespace").is_empty() {
                    new["Namespace"] = old["Namespace"].clone();
                }
                for line in format::job_diff(&old, &new) {
                    println!("  {line}");
                }
            }
        }
    }
    println!("\nScheduler dry-run:");
    let failed = monitor::placement_failures(resp);
    if failed.is_empty() {
        println!("- All tasks successfully allocated.");
    } else {
        for line in failed {
            println!("- {}", line.trim_start_matches("==> "));
        }
    }
    if let Some(updates) = resp["Annotations"]["DesiredTGUpdates"].as_object() {
        for (group, u) in updates {
            let mut parts = Vec::new();
            for (key, label) in [
                ("Place", "create"),
                ("Stop", "destroy"),
                ("InPlaceUpdate", "in-place update"),
                ("DestructiveUpdate", "create/destroy update"),
                ("Migrate", "migrate"),
                ("Canary", "canary"),
                ("Ignore", "ignore"),
            ] {
                let count = n(u, key);
                if count > 0 {
                    parts.push(format!("{count} {label}"));
                }
            }
            if !parts.is_empty() {
                println!("  Task Group: \"{group}\" ({})", parts.join(", "));
            }
        }
    }
    let index = n(resp, "JobModifyIndex");
    println!("\nJob Modify Index: {index}");
    println!("To submit the job with version verification run:\n");
    println!("atoll job run -check-index {index} <file>\n");
    println!(
        "When running the job with the check-index flag, the job will only be run if the\n\
         job modify index given matches the server-side version. If the index has\n\
         changed, another user has modified the job and the plan's results are\n\
         potentially invalid."
    );
}

async fn resolve_job(client: &ApiClient, prefix: &str) -> anyhow::Result<String> {
    super::resolve_id(client, "jobs", "job", prefix).await
}

async fn status(a: StatusArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let Some(prefix) = a.id else {
        let jobs = client.get("/v1/jobs", &[]).await?;
        if a.json {
            println!("{}", pretty(&jobs));
            return Ok(0);
        }
        let list = jobs.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!("No running jobs");
            return Ok(0);
        }
        let now = crate::format::now();
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|j| {
                vec![
                    s(j, "ID"),
                    s(j, "Type"),
                    n(j, "Priority").to_string(),
                    s(j, "Status"),
                    ago(n(j, "SubmitTime"), now),
                ]
            })
            .collect();
        println!(
            "{}",
            table(&["ID", "Type", "Priority", "Status", "Submit Date"], &rows)
        );
        return Ok(0);
    };
    let id = resolve_job(client, &prefix).await?;
    let job = client.get(&format!("/v1/job/{id}"), &[]).await?;
    let summary = client.get(&format!("/v1/job/{id}/summary"), &[]).await?;
    let allocs = client
        .get(&format!("/v1/job/{id}/allocations"), &[])
        .await?;
    let evals = client
        .get(&format!("/v1/job/{id}/evaluations"), &[])
        .await?;
    let deployment = client.get(&format!("/v1/job/{id}/deployment"), &[]).await?;
    if a.json {
        let out = json!([{
            "Job": job,
            "Summary": summary,
            "Allocations": allocs,
            "Evaluations": evals,
            "LatestDeployment": deployment,
        }]);
        println!("{}", pretty(&out));
        return Ok(0);
    }
    print_job_status(&job, &summary, &allocs, &deployment);
    Ok(0)
}

fn print_job_status(job: &Value, summary: &Value, allocs: &Value, deployment: &Value) {
    let now = crate::format::now();
    let mut pairs = vec![
        ("ID", s(job, "ID")),
        ("Name", s(job, "Name")),
        ("Submit Date", format::time(n(job, "SubmitTime"))),
        ("Type", s(job, "Type")),
        ("Priority", n(job, "Priority").to_string()),
        ("Datacenters", join(&job["Datacenters"])),
        ("Namespace", s(job, "Namespace")),
        ("Node Pool", s(job, "NodePool")),
        ("Status", s(job, "Status")),
        ("Periodic", (!job["Periodic"].is_null()).to_string()),
        (
            "Parameterized",
            (!job["ParameterizedJob"].is_null()).to_string(),
        ),
    ];
    pairs.push(("Version", n(job, "Version").to_string()));
    println!("{}", kv(&pairs));
    if let Some(mr) = job["Multiregion"]["Regions"].as_array() {
        if !mr.is_empty() {
            let rows: Vec<Vec<String>> = mr
                .iter()
                .map(|r| {
                    vec![
                        s(r, "Name"),
                        n(r, "Count").to_string(),
                        join(&r["Datacenters"]),
                    ]
                })
                .collect();
            println!(
                "\nMultiregion\n{}",
                table(&["Region", "Count", "Datacenters"], &rows)
            );
        }
    }
    if let Some(groups) = summary["Summary"].as_object() {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(name, c)| {
                let mut row = vec![name.clone()];
                for k in [
                    "Queued", "Starting", "Running", "Failed", "Complete", "Lost", "Unknown",
                ] {
                    row.push(n(c, k).to_string());
                }
                row
            })
            .collect();
        println!(
            "\nSummary\n{}",
            table(
                &[
                    "Task Group",
                    "Queued",
                    "Starting",
                    "Running",
                    "Failed",
                    "Complete",
                    "Lost",
                    "Unknown"
                ],
                &rows
            )
        );
    }
    if deployment.is_object() {
        println!(
            "\nLatest Deployment\n{}",
            kv(&[
                ("ID", short(&s(deployment, "ID"))),
                ("Status", s(deployment, "Status")),
                ("Description", s(deployment, "StatusDescription")),
            ])
        );
        println!("\nDeployed\n{}", monitor::deployment_table(deployment));
    }
    let list = allocs.as_array().cloned().unwrap_or_default();
    println!("\nAllocations");
    if list.is_empty() {
        println!("No allocations placed");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                short(&s(a, "ID")),
                short(&s(a, "NodeID")),
                s(a, "TaskGroup"),
                n(a, "JobVersion").to_string(),
                s(a, "DesiredStatus"),
                s(a, "ClientStatus"),
                ago(n(a, "CreateTime"), now),
                ago(n(a, "ModifyTime"), now),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "ID",
                "Node ID",
                "Task Group",
                "Version",
                "Desired",
                "Status",
                "Created",
                "Modified"
            ],
            &rows
        )
    );
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

async fn stop(a: StopArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let id = resolve_job(client, &a.id).await?;
    let mut q = Vec::new();
    if a.purge {
        q.push(("purge", "true".to_string()));
    }
    if a.global {
        q.push(("global", "true".to_string()));
    }
    let resp = client.delete(&format!("/v1/job/{id}"), &q).await?;
    let eval_id = s(&resp, "EvalID");
    if a.detach || eval_id.is_empty() {
        println!(
            "Job \"{id}\" stopped{}",
            if a.purge { " and purged" } else { "" }
        );
        if !eval_id.is_empty() {
            println!("Evaluation ID: {eval_id}");
        }
        return Ok(0);
    }
    monitor::eval(client, &eval_id, false).await
}

async fn history(a: HistoryArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let id = resolve_job(client, &a.id).await?;
    let resp = client.get(&format!("/v1/job/{id}/versions"), &[]).await?;
    if a.json {
        println!("{}", pretty(&resp));
        return Ok(0);
    }
    let versions = resp["Versions"].as_array().cloned().unwrap_or_default();
    let mut blocks = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let mut text = kv(&[
            ("Version", n(v, "Version").to_string()),
            ("Stable", v["Stable"].as_bool().unwrap_or(false).to_string()),
            ("Submit Date", format::time(n(v, "SubmitTime"))),
        ]);
        if a.diff {
            if let Some(older) = versions.get(i + 1) {
                let lines = format::job_diff(older, v);
                if !lines.is_empty() {
                    text.push_str("\nDiff:\n");
                    text.push_str(
                        &lines
                            .iter()
                            .map(|l| format!("  {l}"))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    );
                }
            }
        }
        blocks.push(text);
    }
    println!("{}", blocks.join("\n\n"));
    Ok(0)
}

async fn revert(a: RevertArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let id = resolve_job(client, &a.id).await?;
    let resp = client
        .put(
            &format!("/v1/job/{id}/revert"),
            &[],
            json!({"JobID": id, "JobVersion": a.version}),
        )
        .await?;
    follow_eval(client, &resp, a.detach, true).await
}

async fn follow_eval(
    client: &ApiClient,
    resp: &Value,
    detach: bool,
    deployment: bool,
) -> anyhow::Result<u8> {
    let eval_id = s(resp, "EvalID");
    if eval_id.is_empty() {
        return Ok(0);
    }
    if detach {
        println!("Evaluation ID: {eval_id}");
        return Ok(0);
    }
    monitor::eval(client, &eval_id, deployment).await
}

async fn dispatch(a: DispatchArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let meta = parse_pairs(&a.meta, "-meta")?;
    let payload = match &a.input {
        Some(path) => Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            read_input(path)?,
        )),
        None => None,
    };
    let resp = client
        .put(
            &format!("/v1/job/{}/dispatch", a.id),
            &[],
            json!({"JobID": a.id, "Payload": payload, "Meta": meta}),
        )
        .await?;
    println!("Dispatched Job ID = {}", s(&resp, "DispatchedJobID"));
    println!("Evaluation ID     = {}", short(&s(&resp, "EvalID")));
    follow_eval(client, &resp, a.detach, false).await
}

async fn force(a: ForceArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let resp = client
        .put(&format!("/v1/job/{}/periodic/force", a.id), &[], json!({}))
        .await?;
    follow_eval(client, &resp, a.detach, false).await
}

async fn inspect(a: InspectArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let id = resolve_job(client, &a.id).await?;
    let job = match a.version {
        None => client.get(&format!("/v1/job/{id}"), &[]).await?,
        Some(version) => {
            let resp = client.get(&format!("/v1/job/{id}/versions"), &[]).await?;
            resp["Versions"]
                .as_array()
                .and_then(|vs| {
                    vs.iter()
                        .find(|v| v["Version"].as_u64() == Some(version))
                        .cloned()
                })
                .ok_or_else(|| anyhow!("job {id:?} has no version {version}"))?
        }
    };
    println!("{}", pretty(&json!({ "Job": job })));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_an_equals_sign() {
        let p = parse_pairs(&["a=1".into(), "b=x=y".into()], "-var").expect("pairs");
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "x=y");
        assert!(parse_pairs(&["novalue".into()], "-var").is_err());
        assert!(parse_pairs(&["=v".into()], "-var").is_err());
    }

    #[test]
    fn json_or_hcl_by_extension_then_content() {
        assert!(is_json(Path::new("a.json"), "job \"x\" {}"));
        assert!(!is_json(Path::new("a.hcl"), "{}"));
        assert!(!is_json(Path::new("a.nomad"), "{}"));
        assert!(is_json(Path::new("a"), "  {\"Job\": {}}"));
        assert!(!is_json(Path::new("-"), "job \"x\" {}"));
    }
}
