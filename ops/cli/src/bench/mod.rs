//! `atoll bench`: measurements of Atoll, side by side with reference systems.
//!
//! - [`raft`]: durable replicated writes on a 3-server Atoll region against a
//!   3-member etcd cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;

mod atoll_region;
pub mod c1m;
mod etcd;
pub mod load;
pub mod raft;

/// The `atoll bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Committed writes per second and latency of a 3-server Atoll region
    /// and a 3-member etcd cluster, on loopback, data on disk.
    Raft(raft::RaftArgs),
    /// Gossip pool vs HashiCorp Serf: join convergence, failure detection, bandwidth.
    Gossip(crate::bench_gossip::GossipBenchArgs),
    /// Client scale: one agent holding --allocs mock allocations (RSS, idle
    /// CPU) and --clients simulated nodes heartbeating a 3-server region
    /// (leader CPU).
    Clients(crate::bench_clients::ClientsBenchArgs),
    /// A read forwarded through a federation gateway against the same read
    /// made directly at a region server: added latency, forwarded reads/s.
    Gateway(crate::bench_gateway::GatewayBenchArgs),
    /// Nomad's C1M: --nodes simulated nodes, --jobs x --count allocations
    /// submitted at once to a 3-server region; time until all are placed
    /// and committed, placements/s, peak RSS per server.
    C1m(c1m::C1mArgs),
}

/// Run one `atoll bench` subcommand; Ctrl-C stops it and still cleans up.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let work = async {
        match cmd {
            BenchCommand::Raft(args) => raft::run(args).await,
            BenchCommand::Gossip(args) => crate::bench_gossip::run(args).await,
            BenchCommand::Clients(args) => crate::bench_clients::run(args).await,
            BenchCommand::Gateway(args) => crate::bench_gateway::run(args).await,
            BenchCommand::C1m(args) => c1m::run(args).await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

/// Parse `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 10s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Where the benchmark's data directories go when not told: `/var/tmp`
/// (disk-backed by convention, unlike a `/tmp` that may be tmpfs), else the
/// current directory.
pub fn default_work_dir() -> PathBuf {
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp.to_path_buf()
    } else {
        PathBuf::from(".")
    }
}

/// The type of the file system holding `path` (from `/proc/mounts`), if known.
pub fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _source = fields.next()?;
            let mount_point = fields.next()?.replace("\\040", " ");
            let fstype = fields.next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, t)| t)
}

/// Whether a file system type keeps data in memory only.
pub fn is_memory_fs(fstype: &str) -> bool {
    matches!(fstype, "tmpfs" | "ramfs")
}

/// Pick `n` distinct free TCP ports on 127.0.0.1 (bound together, then
/// released; something else could take one in between, which start-up
/// would then report).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(6).unwrap();
        let set: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(set.len(), 6);
    }

    #[test]
    fn root_has_a_file_system() {
        assert!(fs_type(Path::new("/")).is_some());
    }
}
