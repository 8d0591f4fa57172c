//! The operator commands, one module per noun, all over the HTTP API
//! ([`crate::client`]). Each `run` returns the process exit code: 0 for
//! success, 1 for an error (or, for `job plan`, changes), 2 for usage
//! errors (clap) and, as Nomad, for `job run` placement failures; `job
//! plan` exits 255 on errors.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client::{ApiClient, ClientConfig, DEFAULT_ADDR};

pub mod alloc;
pub mod eval;
pub mod job;
pub mod monitor;
pub mod node;
pub mod operator;
pub mod region;
pub mod server;
pub mod status;
pub mod tls;

/// Flags every API command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalFlags {
    /// Address of the HTTP API [env: ATOLL_ADDR, NOMAD_ADDR; default
    /// http://127.0.0.1:4646].
    #[arg(long, global = true, value_name = "URL")]
    pub address: Option<String>,
    /// Region the request is for (sent as ?region=) [env: ATOLL_REGION,
    /// NOMAD_REGION].
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// ACL token, sent as X-Nomad-Token [env: ATOLL_TOKEN, NOMAD_TOKEN].
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify the server's certificate with
    /// [env: ATOLL_CACERT, NOMAD_CACERT].
    #[arg(long = "ca-cert", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS [env: ATOLL_CLIENT_CERT,
    /// NOMAD_CLIENT_CERT].
    #[arg(long = "client-cert", global = true, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM) [env: ATOLL_CLIENT_KEY,
    /// NOMAD_CLIENT_KEY].
    #[arg(long = "client-key", global = true, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

/// The first set environment variable of `names`.
fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl GlobalFlags {
    /// The client configuration: flags first, then `ATOLL_*`, then
    /// `NOMAD_*` variables, then defaults.
    pub fn config(&self) -> ClientConfig {
        let mut address = self
            .address
            .clone()
            .or_else(|| env(&["ATOLL_ADDR", "NOMAD_ADDR"]))
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        if !address.contains("://") {
            address = format!("http://{address}");
        }
        ClientConfig {
            address,
            region: self
                .region
                .clone()
                .or_else(|| env(&["ATOLL_REGION", "NOMAD_REGION"])),
            token: self
                .token
                .clone()
                .or_else(|| env(&["ATOLL_TOKEN", "NOMAD_TOKEN"])),
            ca_cert: self
                .ca_cert
                .clone()
                .or_else(|| env(&["ATOLL_CACERT", "NOMAD_CACERT"]).map(PathBuf::from)),
            client_cert: self
                .client_cert
                .clone()
                .or_else(|| env(&["ATOLL_CLIENT_CERT", "NOMAD_CLIENT_CERT"]).map(PathBuf::from)),
            client_key: self
                .client_key
                .clone()
                .or_else(|| env(&["ATOLL_CLIENT_KEY", "NOMAD_CLIENT_KEY"]).map(PathBuf::from)),
        }
    }

    /// An API client for these flags.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(self.config())
    }
}

/// The API commands (everything but `bench` and `dev`).
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Submit, plan, inspect and stop jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Inspect allocations and read their logs.
    #[command(subcommand)]
    Alloc(alloc::AllocCommand),
    /// List, drain and mark client nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Inspect evaluations.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// The servers of the region.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Raft peers, snapshots and the gossip keyring.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// The regions of the federation.
    #[command(subcommand)]
    Region(region::RegionCommand),
    /// An overview of the federation: each region's leader, servers,
    /// clients and jobs.
    Status(status::StatusArgs),
    /// Create a CA and certificates for servers, clients and gateways.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

/// Runs an API command; the result is the exit code.
pub async fn run(cmd: ApiCommand, global: &GlobalFlags) -> anyhow::Result<u8> {
    match cmd {
        ApiCommand::Tls(c) => tls::run(c, global.config().region.as_deref()),
        ApiCommand::Job(c) => job::run(c, &global.client()?).await,
        ApiCommand::Alloc(c) => alloc::run(c, &global.client()?).await,
        ApiCommand::Node(c) => node::run(c, &global.client()?).await,
        ApiCommand::Eval(c) => eval::run(c, &global.client()?).await,
        ApiCommand::Server(c) => server::run(c, &global.client()?).await,
        ApiCommand::Operator(c) => operator::run(c, global).await,
        ApiCommand::Region(c) => region::run(c, &global.client()?).await,
        ApiCommand::Status(a) => status::run(a, &global.client()?).await,
    }
}

/// Rewrites Nomad-style single-dash long flags (`-region eu`,
/// `-json`) to clap's double-dash form; `long` lists the known long flag
/// names. Single-letter flags, values, and everything after `--` stay.
pub fn normalize_args(args: Vec<String>, long: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        if rest || arg == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let rewritten = match arg.strip_prefix('-') {
            Some(tail) if !tail.starts_with('-') && tail.len() > 1 => {
                let name = tail.split('=').next().unwrap_or(tail);
                long.iter().any(|l| l == name).then(|| format!("-{arg}"))
            }
            _ => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// Every long flag name of a clap command tree.
pub fn long_flags(cmd: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    collect_long(cmd, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_long(cmd: &clap::Command, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if let Some(l) = arg.get_long() {
            out.push(l.to_string());
        }
        if let Some(aliases) = arg.get_all_aliases() {
            out.extend(aliases.into_iter().map(str::to_string));
        }
    }
    for sub in cmd.get_subcommands() {
        collect_long(sub, out);
    }
}

/// Finds the one id that starts with `prefix` among `/v1/<list>?prefix=`.
pub async fn resolve_id(
    client: &ApiClient,
    list: &str,
    what: &str,
    prefix: &str,
) -> anyhow::Result<String> {
    let items = client
        .get(&format!("/v1/{list}"), &[("prefix", prefix.to_string())])
        .await?;
    let ids: Vec<String> = items
        .as_array()
        .map(|a| a.iter().map(|v| crate::format::s(v, "ID")).collect())
        .unwrap_or_default();
    if ids.iter().any(|id| id == prefix) {
        return Ok(prefix.to_string());
    }
    match ids.as_slice() {
        [] => anyhow::bail!("no {what} with id or prefix {prefix:?}"),
        [one] => Ok(one.clone()),
        many => anyhow::bail!(
            "prefix {prefix:?} matches {} {what}s: {}; give more of the id",
            many.len(),
            many.iter()
                .map(|i| crate::format::short(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_args;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        let long = v(&["region", "json", "var", "address"]);
        assert_eq!(
            normalize_args(
                v(&[
                    "atoll", "job", "status", "-region", "eu", "-json", "-f", "-x", "-var=a=b",
                    "web"
                ]),
                &long
            ),
            v(&[
                "atoll",
                "job",
                "status",
                "--region",
                "eu",
                "--json",
                "-f",
                "-x",
                "--var=a=b",
                "web"
            ])
        );
        assert_eq!(
            normalize_args(v(&["atoll", "--", "-json"]), &long),
            v(&["atoll", "--", "-json"])
        );
        assert_eq!(
            normalize_args(v(&["atoll", "-unknown"]), &long),
            v(&["atoll", "-unknown"])
        );
    }
}
