//! `atoll server members`.

use clap::Subcommand;
use serde_json::Value;

use crate::client::ApiClient;
use crate::format::{n, s, table};

/// `atoll server ...`.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// The servers of every region, as the gossip pool sees them.
    Members {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a server command.
pub async fn run(cmd: ServerCommand, client: &ApiClient) -> anyhow::Result<u8> {
    match cmd {
        ServerCommand::Members { json } => {
            let resp = client.get("/v1/agent/members", &[]).await?;
            if json {
                println!("{}", crate::format::json(&resp));
                return Ok(0);
            }
            println!("{}", members_table(&resp));
            Ok(0)
        }
    }
}

/// The `server members` table.
pub fn members_table(resp: &Value) -> String {
    let rows: Vec<Vec<String>> = resp["Members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let tags = &m["Tags"];
            vec![
                s(m, "Name"),
                s(m, "Addr"),
                n(m, "Port").to_string(),
                s(m, "Status"),
                tags["leader"].as_bool().unwrap_or(false).to_string(),
                tags["raft_vsn"].as_str().unwrap_or_default().to_string(),
                tags["build"].as_str().unwrap_or_default().to_string(),
                tags["dc"].as_str().unwrap_or_default().to_string(),
                tags["region"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "Name",
            "Address",
            "Port",
            "Status",
            "Leader",
            "Raft Version",
            "Build",
            "Datacenter",
            "Region",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::members_table;

    #[test]
    fn members_table_reads_tags() {
        let resp = json!({"Members": [{
            "Name": "s1.eu", "Addr": "127.0.0.1", "Port": 4648, "Status": "alive",
            "Tags": {"leader": true, "raft_vsn": "3", "build": "0.1.0", "dc": "dc1", "region": "eu"}
        }]});
        assert_eq!(
            members_table(&resp),
            "Name   Address    Port  Status  Leader  Raft Version  Build  Datacenter  Region\n\
             s1.eu  127.0.0.1  4648  alive   true    3             0.1.0  dc1         eu"
        );
    }
}
