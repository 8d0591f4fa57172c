//! `atoll eval status` and `atoll eval list`.

use clap::{Args, Subcommand};

use super::monitor::placement_failures;
use crate::client::ApiClient;
use crate::format::{json as pretty, kv, n, s, short, table};

/// `atoll eval ...`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Show an evaluation.
    Status(StatusArgs),
    /// List evaluations.
    List(ListArgs),
}

/// `atoll eval status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Evaluation id or prefix.
    pub id: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Follow the evaluation until it finishes.
    #[arg(long)]
    pub monitor: bool,
}

/// `atoll eval list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only evaluations with this status.
    #[arg(long)]
    pub status: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Runs an eval command.
pub async fn run(cmd: EvalCommand, client: &ApiClient) -> anyhow::Result<u8> {
    match cmd {
        EvalCommand::Status(a) => {
            let id = super::resolve_id(client, "evaluations", "evaluation", &a.id).await?;
            if a.monitor {
                return super::monitor::eval(client, &id, false).await;
            }
            let ev = client.get(&format!("/v1/evaluation/{id}"), &[]).await?;
            if a.json {
                println!("{}", pretty(&ev));
                return Ok(0);
            }
            println!(
                "{}",
                kv(&[
                    ("ID", s(&ev, "ID")),
                    ("Create Time", crate::format::time(n(&ev, "CreateTime"))),
                    ("Modify Time", crate::format::time(n(&ev, "ModifyTime"))),
                    ("Status", s(&ev, "Status")),
                    ("Status Description", s(&ev, "StatusDescription")),
                    ("Type", s(&ev, "Type")),
                    ("TriggeredBy", s(&ev, "TriggeredBy")),
                    ("Job ID", s(&ev, "JobID")),
                    ("Node ID", s(&ev, "NodeID")),
                    ("Deployment ID", s(&ev, "DeploymentID")),
                    ("Priority", n(&ev, "Priority").to_string()),
                    (
                        "Placement Failures",
                        (!placement_failures(&ev).is_empty()).to_string()
                    ),
                ])
            );
            for line in placement_failures(&ev) {
                println!("{line}");
            }
            Ok(0)
        }
        EvalCommand::List(a) => {
            let mut q = Vec::new();
            if let Some(st) = a.status {
                q.push(("status", st));
            }
            let evals = client.get("/v1/evaluations", &q).await?;
            if a.json {
                println!("{}", pretty(&evals));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = evals
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        short(&s(e, "ID")),
                        n(e, "Priority").to_string(),
                        s(e, "TriggeredBy"),
                        s(e, "JobID"),
                        short(&s(e, "NodeID")),
                        s(e, "Status"),
                        (!placement_failures(e).is_empty()).to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "ID",
                        "Priority",
                        "Triggered By",
                        "Job ID",
                        "Node ID",
                        "Status",
                        "Placement Failures"
                    ],
                    &rows
                )
            );
            Ok(0)
        }
    }
}
