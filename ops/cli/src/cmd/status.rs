//! `atoll status`: the federation at a glance. Every region the servers
//! know of is asked (with `?region=`) for its leader, servers, clients and
//! jobs; a region that does not answer shows as unreachable.

use clap::Args;
use serde_json::{json, Value};

use crate::client::ApiClient;
use crate::format::{json as pretty, table};

/// `atoll status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// One region's overview.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionStatus {
    /// Region name.
    pub name: String,
    /// Leader's RPC address, or the reason the region is unreachable.
    pub leader: Result<String, String>,
    /// Alive servers of the region (from the gossip pool).
    pub servers: usize,
    /// Ready client nodes / all client nodes.
    pub clients: (usize, usize),
    /// Running jobs / all jobs.
    pub jobs: (usize, usize),
}

async fn region_status(client: &ApiClient, name: &str, members: &Value) -> RegionStatus {
    let c = client.for_region(name);
    let servers = members["Members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Tags"]["region"] == name && m["Status"] == "alive")
        .count();
    let mut st = RegionStatus {
        name: name.to_string(),
        leader: Err(String::new()),
        servers,
        clients: (0, 0),
        jobs: (0, 0),
    };
    let leader = match c.get("/v1/status/leader", &[]).await {
        Ok(v) => v.as_str().unwrap_or_default().to_string(),
        Err(e) => {
            st.leader = Err(e.to_string());
            return st;
        }
    };
    st.leader = Ok(if leader.is_empty() {
        "(no leader)".to_string()
    } else {
        leader
    });
    match (c.get("/v1/nodes", &[]).await, c.get("/v1/jobs", &[]).await) {
        (Ok(nodes), Ok(jobs)) => {
            let nodes = nodes.as_array().cloned().unwrap_or_default();
            let jobs = jobs.as_array().cloned().unwrap_or_default();
            st.clients = (
                nodes.iter().filter(|n| n["Status"] == "ready").count(),
                nodes.len(),
            );
            st.jobs = (
                jobs.iter().filter(|j| j["Status"] == "running").count(),
                jobs.len(),
            );
        }
        (Err(e), _) | (_, Err(e)) => st.leader = Err(e.to_string()),
    }
    st
}

/// Runs `atoll status`.
pub async fn run(a: StatusArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let regions = client.get("/v1/regions", &[]).await?;
    let members = client
        .get("/v1/agent/members", &[])
        .await
        .unwrap_or(Value::Null);
    let names: Vec<String> = regions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let mut all = Vec::new();
    for name in &names {
        all.push(region_status(client, name, &members).await);
    }
    if a.json {
        let out: Vec<Value> = all
            .iter()
            .map(|r| {
                json!({
                    "Region": r.name,
                    "Reachable": r.leader.is_ok(),
                    "Leader": r.leader.as_ref().ok(),
                    "Error": r.leader.as_ref().err(),
                    "Servers": r.servers,
                    "ClientsReady": r.clients.0,
                    "Clients": r.clients.1,
                    "JobsRunning": r.jobs.0,
                    "Jobs": r.jobs.1,
                })
            })
            .collect();
        println!("{}", pretty(&Value::Array(out)));
    } else {
        println!("{}", render(&all));
        for r in &all {
            if let Err(e) = &r.leader {
                println!("\n{}: {e}", r.name);
            }
        }
    }
    let unreachable = all.iter().any(|r| r.leader.is_err());
    Ok(if unreachable { 1 } else { 0 })
}

/// The overview table.
pub fn render(all: &[RegionStatus]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| match &r.leader {
            Ok(leader) => vec![
                r.name.clone(),
                "ok".to_string(),
                leader.clone(),
                r.servers.to_string(),
                format!("{}/{}", r.clients.0, r.clients.1),
                format!("{}/{}", r.jobs.0, r.jobs.1),
            ],
            Err(_) => vec![
                r.name.clone(),
                "unreachable".to_string(),
                "-".to_string(),
                r.servers.to_string(),
                "-".to_string(),
                "-".to_string(),
            ],
        })
        .collect();
    table(
        &[
            "Region",
            "Status",
            "Leader",
            "Servers",
            "Clients (ready/all)",
            "Jobs (running/all)",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_regions_are_marked() {
        let all = vec![
            RegionStatus {
                name: "eu".into(),
                leader: Ok("127.0.0.1:4647".into()),
                servers: 3,
                clients: (2, 3),
                jobs: (1, 2),
            },
            RegionStatus {
                name: "us".into(),
                leader: Err("No path to region".into()),
                servers: 1,
                clients: (0, 0),
                jobs: (0, 0),
            },
        ];
        assert_eq!(
            render(&all),
            "Region  Status       Leader          Servers  Clients (ready/all)  Jobs (running/all)\n\
             eu      ok           127.0.0.1:4647  3        2/3                  1/2\n\
             us      unreachable  -               1        -                    -"
        );
    }
}
