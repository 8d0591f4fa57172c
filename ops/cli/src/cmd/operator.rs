//! `atoll operator ...`: Raft peers, snapshots, the gossip keyring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::GlobalFlags;
use crate::client::{ApiClient, Body};
use crate::format::{json as pretty, kv, s, table};

/// `atoll operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// The Raft configuration of the region.
    #[command(subcommand)]
    Raft(RaftCommand),
    /// Save, restore and inspect snapshots of the region's state.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The gossip pool.
    #[command(subcommand)]
    Gossip(GossipCommand),
}

/// `atoll operator raft ...`.
#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// The servers in the region's Raft configuration.
    ListPeers {
        /// Read from the server answering, without asking the leader.
        #[arg(long)]
        stale: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a server from the region's Raft configuration.
    RemovePeer {
        /// The server's Raft id (from list-peers).
        #[arg(long = "peer-id", required_unless_present = "peer_address")]
        peer_id: Option<String>,
        /// The server's RPC address (from list-peers).
        #[arg(long = "peer-address", conflicts_with = "peer_id")]
        peer_address: Option<String>,
    },
}

/// `atoll operator snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save the region's state to a file.
    Save(SaveArgs),
    /// Replace the region's state with a saved snapshot.
    Restore(FileArg),
    /// Describe a saved snapshot file (read locally).
    Inspect(InspectArgs),
}

/// `atoll operator snapshot save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the snapshot.
    pub file: PathBuf,
    /// Save from the server answering without asking the leader.
    #[arg(long)]
    pub stale: bool,
}

/// A snapshot file.
#[derive(Debug, Args)]
pub struct FileArg {
    /// The snapshot file.
    pub file: PathBuf,
}

/// `atoll operator snapshot inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `atoll operator gossip ...`.
#[derive(Debug, Subcommand)]
pub enum GossipCommand {
    /// List, install, use and remove gossip encryption keys.
    Keyring(KeyringArgs),
}

/// `atoll operator gossip keyring`: exactly one action.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct KeyringArgs {
    /// List the keys in use.
    #[arg(long)]
    pub list: bool,
    /// Add a key (base64) to the keyring.
    #[arg(long, value_name = "KEY")]
    pub install: Option<String>,
    /// Make an installed key the primary (encrypting) key.
    #[arg(long = "use", value_name = "KEY")]
    pub use_key: Option<String>,
    /// Remove a key that is not the primary.
    #[arg(long, value_name = "KEY")]
    pub remove: Option<String>,
}

/// Runs an operator command.
pub async fn run(cmd: OperatorCommand, global: &GlobalFlags) -> anyhow::Result<u8> {
    if let OperatorCommand::Snapshot(SnapshotCommand::Inspect(a)) = cmd {
        return inspect(a).await;
    }
    let client = global.client()?;
    match cmd {
        OperatorCommand::Raft(RaftCommand::ListPeers { stale, json }) => {
            let q = if stale {
                vec![("stale", "true".to_string())]
            } else {
                Vec::new()
            };
            let cfg = client.get("/v1/operator/raft/configuration", &q).await?;
            if json {
                println!("{}", pretty(&cfg));
            } else {
                println!("{}", peers_table(&cfg));
            }
            Ok(0)
        }
        OperatorCommand::Raft(RaftCommand::RemovePeer {
            peer_id,
            peer_address,
        }) => {
            let (q, what) = match (peer_id, peer_address) {
                (Some(id), _) => (vec![("id", id.clone())], format!("id {id}")),
                (None, Some(addr)) => (vec![("address", addr.clone())], format!("address {addr}")),
                (None, None) => bail!("give -peer-id or -peer-address"),
            };
            client
                .send(Method::DELETE, "/v1/operator/raft/peer", &q, None)
                .await?;
            println!("Removed peer with {what}");
            Ok(0)
        }
        OperatorCommand::Snapshot(SnapshotCommand::Save(a)) => save(a, &client).await,
        OperatorCommand::Snapshot(SnapshotCommand::Restore(a)) => restore(a, &client).await,
        OperatorCommand::Snapshot(SnapshotCommand::Inspect(a)) => inspect(a).await,
        OperatorCommand::Gossip(GossipCommand::Keyring(a)) => keyring(a, &client).await,
    }
}

/// The `raft list-peers` table.
pub fn peers_table(cfg: &Value) -> String {
    let rows: Vec<Vec<String>> = cfg["Servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(p, "Node"),
                s(p, "ID"),
                s(p, "Address"),
                if p["Leader"].as_bool() == Some(true) {
                    "leader"
                } else {
                    "follower"
                }
                .to_string(),
                p["Voter"].as_bool().unwrap_or(false).to_string(),
                s(p, "RaftProtocol"),
            ]
        })
        .collect();
    table(
        &["Node", "ID", "Address", "State", "Voter", "RaftProtocol"],
        &rows,
    )
}

async fn save(a: SaveArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let q = if a.stale {
        vec![("stale", "true".to_string())]
    } else {
        Vec::new()
    };
    let resp = client
        .send(Method::GET, "/v1/operator/snapshot", &q, None)
        .await?;
    let digest = resp
        .headers()
        .get("Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.context("download the snapshot")?;
    let have = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
    if let Some(d) = &digest {
        let want = d.strip_prefix("sha-256=").unwrap_or(d);
        if want != have {
            bail!("the snapshot download is damaged: its digest does not match the server's; try again");
        }
    }
    write_atomic(&a.file, &bytes)?;
    println!(
        "State file written to {} ({} bytes, sha-256={have})",
        a.file.display(),
        bytes.len()
    );
    Ok(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("create a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).context("write the snapshot")?;
    tmp.as_file().sync_all().context("sync the snapshot")?;
    tmp.persist(path)
        .map_err(|e| anyhow!("write {}: {}", path.display(), e.error))?;
    Ok(())
}

async fn restore(a: FileArg, client: &ApiClient) -> anyhow::Result<u8> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("read {}", a.file.display()))?;
    let digest = format!(
        "sha-256={}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes))
    );
    client
        .send(
            Method::PUT,
            "/v1/operator/snapshot",
            &[],
            Some(Body::Bytes(bytes, Some(digest))),
        )
        .await?;
    println!("Snapshot restored");
    Ok(0)
}

/// `operator snapshot inspect`: reads the sqlite snapshot file locally.
pub async fn inspect(a: InspectArgs) -> anyhow::Result<u8> {
    let size = std::fs::metadata(&a.file)
        .with_context(|| format!("read {}", a.file.display()))?
        .len();
    let (meta, rows) = region_server::state::snapshot_file::read(&a.file).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        *counts.entry(row.kind.clone()).or_default() += 1;
    }
    // Decoding every row checks that a restore would accept the file.
    let valid = region_server::state::snapshot_file::tables_from_rows(rows);
    let raft: Option<Value> = meta
        .raft
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    let term = raft
        .as_ref()
        .and_then(|r| r["last_log_id"]["leader_id"]["term"].as_u64());
    if a.json {
        println!(
            "{}",
            pretty(&json!({
                "Index": meta.index,
                "Term": term,
                "Size": size,
                "Counts": counts,
                "Valid": valid.is_ok(),
                "Error": valid.as_ref().err().map(|e| e.to_string()),
            }))
        );
    } else {
        println!(
            "{}",
            kv(&[
                ("Index", meta.index.to_string()),
                (
                    "Term",
                    term.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
                ),
                ("Size", format!("{size} bytes")),
                (
                    "Valid",
                    match &valid {
                        Ok(_) => "true".to_string(),
                        Err(e) => format!("false ({e})"),
                    }
                ),
            ])
        );
        let rows: Vec<Vec<String>> = counts
            .iter()
            .map(|(k, c)| vec![k.clone(), c.to_string()])
            .collect();
        println!("\n{}", table(&["Type", "Count"], &rows));
    }
    Ok(if valid.is_ok() { 0 } else { 1 })
}

async fn keyring(a: KeyringArgs, client: &ApiClient) -> anyhow::Result<u8> {
    let (op, key) = match (a.install, a.use_key, a.remove) {
        (Some(k), _, _) => ("install", k),
        (_, Some(k), _) => ("use", k),
        (_, _, Some(k)) => ("remove", k),
        _ => {
            let resp = client.get("/v1/operator/keyring/list", &[]).await?;
            let primary: Vec<String> = resp["PrimaryKeys"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = resp["Keys"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .map(|k| vec![k.clone(), primary.contains(k).to_string()])
                        .collect()
                })
                .unwrap_or_default();
            println!("{}", table(&["Key", "Primary"], &rows));
            return Ok(0);
        }
    };
    client
        .put(
            &format!("/v1/operator/keyring/{op}"),
            &[],
            json!({"Key": key}),
        )
        .await?;
    let done = match op {
        "install" => "Installed",
        "use" => "Now using",
        _ => "Removed",
    };
    println!("{done} key {key}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::peers_table;

    #[test]
    fn peers_table_marks_the_leader() {
        let cfg = json!({"Servers": [
            {"Node": "s1", "ID": "11", "Address": "127.0.0.1:4647", "Leader": true, "Voter": true, "RaftProtocol": "3"},
            {"Node": "s2", "ID": "22", "Address": "127.0.0.1:5647", "Leader": false, "Voter": false, "RaftProtocol": "3"}
        ]});
        assert_eq!(
            peers_table(&cfg),
            "Node  ID  Address         State     Voter  RaftProtocol\n\
             s1    11  127.0.0.1:4647  leader    true   3\n\
             s2    22  127.0.0.1:5647  follower  false  3"
        );
    }
}
