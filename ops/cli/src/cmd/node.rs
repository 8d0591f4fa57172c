//! `atoll node status`, `atoll node drain`, `atoll node eligibility`.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::ApiClient;
use crate::format::{self, json as pretty, kv, n, s, short, table};

/// `atoll node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List client nodes, or show one.
    Status(StatusArgs),
    /// Move the allocations off a node (or stop doing so).
    Drain(DrainArgs),
    /// Allow or forbid new placements on a node.
    Eligibility(EligibilityArgs),
}

/// `atoll node status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Node id or prefix; all nodes when omitted.
    pub id: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `atoll node drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Node id or prefix.
    pub id: String,
    /// Start draining.
    #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
    pub enable: bool,
    /// Stop draining.
    #[arg(long)]
    pub disable: bool,
    /// Force the remaining allocations off after this long (Go duration,
    /// e.g. 1h; default 1h; -1s for no deadline).
    #[arg(long, allow_hyphen_values = true)]
    pub deadline: Option<String>,
    /// Leave system jobs' allocations running.
    #[arg(long = "ignore-system")]
    pub ignore_system: bool,
    /// Keep the node ineligible after -disable.
    #[arg(long = "keep-ineligible")]
    pub keep_ineligible: bool,
    /// Accepted for Nomad compatibility (the CLI never prompts).
    #[arg(long)]
    pub yes: bool,
    /// Accepted for Nomad compatibility (the CLI does not follow drains).
    #[arg(long)]
    pub detach: bool,
}

/// `atoll node eligibility`.
#[derive(Debug, Args)]
pub struct EligibilityArgs {
    /// Node id or prefix.
    pub id: String,
    /// Mark eligible.
    #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
    pub enable: bool,
    /// Mark ineligible.
    #[arg(long)]
    pub disable: bool,
}

/// Runs a node command.
pub async fn run(cmd: NodeCommand, client: &ApiClient) -> anyhow::Result<u8> {
    match cmd {
        NodeCommand::Status(a) => status(a, client).await,
        NodeCommand::Drain(a) => drain(a, client).await,
        NodeCommand::Eligibility(a) => {
            let id = resolve(client, &a.id).await?;
            let eligibility = if a.enable { "eligible" } else { "ineligible" };
            client
                .put(
                    &format!("/v1/node/{id}/eligibility"),
                    &[],
                    json!({"NodeID": id, "Eligibility": eligibility}),
                )
                .await?;
            println!(
                "Node \"{}\" scheduling eligibility set: {eligibility}",
                short(&id)
            );
            Ok(0)
        }
    }
}

async fn resolve(client: &ApiClient, prefix: &str) -> anyhow::Result<String> {
    super::resolve_id(client, "nodes", "node", prefix).await
}

async fn drain(a: DrainArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let id = resolve(client, &a.id).await?;
    let body = if a.enable {
        let deadline = match a.deadline.as_deref() {
            None => 3_600_000_000_000,
            Some(text) => match proto::hcl::parse_duration(text) {
                Ok(d) => d,
                Err(e) => bail!("-deadline: {e}"),
            },
        };
        json!({
            "NodeID": id,
            "DrainSpec": {"Deadline": deadline, "IgnoreSystemJobs": a.ignore_system},
            "MarkEligible": false,
        })
    } else {
        json!({"NodeID": id, "DrainSpec": null, "MarkEligible": !a.keep_ineligible})
    };
    client
        .put(&format!("/v1/node/{id}/drain"), &[], body)
        .await?;
    if a.enable {
        println!("Node \"{}\" drain strategy set", short(&id));
    } else {
        println!("Node \"{}\" drain strategy unset", short(&id));
    }
    Ok(0)
}

async fn status(a: StatusArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let Some(prefix) = a.id else {
        let nodes = client.get("/v1/nodes", &[]).await?;
        if a.json {
            println!("{}", pretty(&nodes));
        } else {
            println!("{}", nodes_table(&nodes));
        }
        return Ok(0);
    };
    let id = resolve(client, &prefix).await?;
    let node = client.get(&format!("/v1/node/{id}"), &[]).await?;
    let allocs = client
        .get(&format!("/v1/node/{id}/allocations"), &[])
        .await?;
    if a.json {
        println!("{}", pretty(&json!({"Node": node, "Allocations": allocs})));
        return Ok(0);
    }
    let drivers: Vec<String> = node["Drivers"]
        .as_object()
        .map(|d| {
            d.iter()
                .filter(|(_, info)| info["Healthy"].as_bool() == Some(true))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{}",
        kv(&[
            ("ID", s(&node, "ID")),
            ("Name", s(&node, "Name")),
            ("Node Pool", s(&node, "NodePool")),
            ("Class", s(&node, "NodeClass")),
            ("DC", s(&node, "Datacenter")),
            ("Drain", drain_text(&node)),
            ("Eligibility", s(&node, "SchedulingEligibility")),
            ("Status", s(&node, "Status")),
            ("HTTP Address", s(&node, "HTTPAddr")),
            ("Drivers", drivers.join(",")),
        ])
    );
    let now = crate::format::now();
    let rows: Vec<Vec<String>> = allocs
        .as_array()
        .into_iter()
        .flatten()
        .map(|al| {
            vec![
                short(&s(al, "ID")),
                s(al, "JobID"),
                s(al, "TaskGroup"),
                s(al, "DesiredStatus"),
                s(al, "ClientStatus"),
                format::ago(n(al, "CreateTime"), now),
            ]
        })
        .collect();
    println!("\nAllocations");
    if rows.is_empty() {
        println!("No allocations placed");
    } else {
        println!(
            "{}",
            table(
                &["ID", "Job ID", "Task Group", "Desired", "Status", "Created"],
                &rows
            )
        );
    }
    Ok(0)
}

fn drain_text(node: &Value) -> String {
    let draining = node["Drain"].as_bool().unwrap_or(false) || node["DrainStrategy"].is_object();
    draining.to_string()
}

/// The `node status` list.
pub fn nodes_table(nodes: &Value) -> String {
    let rows: Vec<Vec<String>> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|nd| {
            vec![
                short(&s(nd, "ID")),
                s(nd, "NodePool"),
                s(nd, "Datacenter"),
                s(nd, "Name"),
                s(nd, "NodeClass"),
                drain_text(nd),
                s(nd, "SchedulingEligibility"),
                s(nd, "Status"),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Node Pool",
            "DC",
            "Name",
            "Class",
            "Drain",
            "Eligibility",
            "Status",
        ],
        &rows,
    )
}
