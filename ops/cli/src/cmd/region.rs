//! `atoll region list`.

use clap::Subcommand;

use crate::client::ApiClient;

/// `atoll region ...`.
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// The regions the servers know of (from the gossip pool).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a region command.
pub async fn run(cmd: RegionCommand, client: &ApiClient) -> anyhow::Result<u8> {
    match cmd {
        RegionCommand::List { json } => {
            let regions = client.get("/v1/regions", &[]).await?;
            if json {
                println!("{}", crate::format::json(&regions));
            } else {
                for r in regions.as_array().into_iter().flatten() {
                    println!("{}", r.as_str().unwrap_or_default());
                }
            }
            Ok(0)
        }
    }
}
