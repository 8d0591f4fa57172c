//! `atoll alloc status` and `atoll alloc logs`.

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::client::ApiClient;
use crate::format::{self, json as pretty, kv, n, s, short, table};

/// `atoll alloc ...`.
#[derive(Debug, Subcommand)]
pub enum AllocCommand {
    /// Show an allocation and the states of its tasks.
    Status(StatusArgs),
    /// Print the stdout (or stderr) of a task of an allocation.
    Logs(LogsArgs),
}

/// `atoll alloc status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Allocation id or prefix.
    pub id: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `atoll alloc logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Allocation id or prefix.
    pub alloc: String,
    /// Task name; may be omitted when the allocation has one task.
    pub task: Option<String>,
    /// Keep printing new output until the allocation stops.
    #[arg(short = 'f')]
    pub follow: bool,
    /// stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// The task name, as a flag.
    #[arg(long = "task", value_name = "TASK")]
    pub task_flag: Option<String>,
}

/// Runs an alloc command.
pub async fn run(cmd: AllocCommand, client: &ApiClient) -> anyhow::Result<u8> {
    match cmd {
        AllocCommand::Status(a) => status(a, client).await,
        AllocCommand::Logs(a) => logs(a, client).await,
    }
}

async fn fetch(client: &ApiClient, prefix: &str) -> anyhow::Result<Value> {
    let id = super::resolve_id(client, "allocations", "allocation", prefix).await?;
    Ok(client.get(&format!("/v1/allocation/{id}"), &[]).await?)
}

async fn status(a: StatusArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let alloc = fetch(client, &a.id).await?;
    if a.json {
        println!("{}", pretty(&alloc));
        return Ok(0);
    }
    print!("{}", render_status(&alloc, crate::format::now()));
    Ok(0)
}

/// The text of `alloc status`.
pub fn render_status(alloc: &Value, now: i64) -> String {
    let mut out = kv(&[
        ("ID", s(alloc, "ID")),
        ("Eval ID", short(&s(alloc, "EvalID"))),
        ("Name", s(alloc, "Name")),
        ("Node ID", short(&s(alloc, "NodeID"))),
        ("Node Name", s(alloc, "NodeName")),
        ("Job ID", s(alloc, "JobID")),
        ("Job Version", n(alloc, "JobVersion").to_string()),
        ("Client Status", s(alloc, "ClientStatus")),
        ("Client Description", s(alloc, "ClientDescription")),
        ("Desired Status", s(alloc, "DesiredStatus")),
        ("Desired Description", s(alloc, "DesiredDescription")),
        ("Created", format::ago(n(alloc, "CreateTime"), now)),
        ("Modified", format::ago(n(alloc, "ModifyTime"), now)),
    ]);
    out.push('\n');
    if let Some(states) = alloc["TaskStates"].as_object() {
        for (task, st) in states {
            out.push_str(&format!("\nTask \"{task}\" is \"{}\"\n", s(st, "State")));
            let rows: Vec<Vec<String>> = st["Events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .rev()
                        .map(|e| {
                            let mut desc = s(e, "DisplayMessage");
                            if desc.is_empty() {
                                desc = s(e, "Message");
                            }
                            vec![format::time(n(e, "Time")), s(e, "Type"), desc]
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !rows.is_empty() {
                out.push_str("Recent Events:\n");
                out.push_str(&table(&["Time", "Type", "Description"], &rows));
                out.push('\n');
            }
        }
    }
    out
}

async fn logs(a: LogsArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let alloc = fetch(client, &a.alloc).await?;
    let id = s(&alloc, "ID");
    let task = match a.task.or(a.task_flag) {
        Some(t) => t,
        None => {
            let mut tasks: Vec<String> = alloc["TaskStates"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if tasks.is_empty() {
                tasks = alloc["Job"]["TaskGroups"]
                    .as_array()
                    .and_then(|groups| {
                        groups
                            .iter()
                            .find(|g| s(g, "Name") == s(&alloc, "TaskGroup"))
                    })
                    .and_then(|g| g["Tasks"].as_array())
                    .map(|ts| ts.iter().map(|t| s(t, "Name")).collect())
                    .unwrap_or_default();
            }
            match tasks.as_slice() {
                [one] => one.clone(),
                [] => bail!("allocation {} has no tasks yet; name the task", short(&id)),
                many => bail!(
                    "allocation {} has several tasks ({}): name one, e.g. `atoll alloc logs {} {}`",
                    short(&id),
                    many.join(", "),
                    short(&id),
                    many[0]
                ),
            }
        }
    };
    let q = [
        ("task", task.clone()),
        (
            "type",
            if a.stderr { "stderr" } else { "stdout" }.to_string(),
        ),
        ("origin", "start".to_string()),
        ("plain", "true".to_string()),
        ("follow", a.follow.to_string()),
    ];
    let mut resp = client
        .send(Method::GET, &format!("/v1/client/fs/logs/{id}"), &q, None)
        .await?;
    let mut stdout = tokio::io::stdout();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                stdout.write_all(&chunk).await?;
                stdout.flush().await?;
            }
            Ok(None) => break,
            Err(e) => bail!("reading the logs of task {task:?} failed: {e}"),
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render_status;

    #[test]
    fn status_lists_task_events_newest_first() {
        let now = 1_700_000_100_000_000_000;
        let alloc = json!({
            "ID": "0123456789", "EvalID": "abcdefghij", "Name": "web.web[0]",
            "NodeID": "nnnnnnnnnn", "JobID": "web", "ClientStatus": "running",
            "DesiredStatus": "run", "CreateTime": 1_700_000_000_000_000_000i64,
            "TaskStates": {"hello": {"State": "running", "Events": [
                {"Type": "Received", "Time": 1_700_000_000_000_000_000i64, "DisplayMessage": "Task received by client"},
                {"Type": "Started", "Time": 1_700_000_001_000_000_000i64, "DisplayMessage": "Task started by client"}
            ]}}
        });
        let text = render_status(&alloc, now);
        assert!(text.contains("ID                  = 0123456789"), "{text}");
        assert!(text.contains("Eval ID             = abcdefgh\n"), "{text}");
        assert!(text.contains("Created             = 1m40s ago"), "{text}");
        assert!(text.contains("Task \"hello\" is \"running\""), "{text}");
        let started = text.find("Started").expect("started");
        let received = text.find("Received").expect("received");
        assert!(started < received, "newest first: {text}");
    }
}
