//! Prometheus file-based service discovery: the `targets.json` that
//! `atoll dev` keeps in `<data-dir>/prometheus/` for
//! `ops/deploy/prometheus.yml` to scrape.
//!
//! The file is a list of target groups, one per process:
//!
//! ```json
//! [{"targets": ["127.0.0.1:4646"],
//!   "labels": {"region": "eu", "role": "server", "instance_name": "s1.eu"}}]
//! ```
//!
//! `targets` holds the process's HTTP address (where `/metrics` is served),
//! `role` is `server`, `client` or `gateway`, `region` the process's region
//! (absent for gateways, which belong to none), `instance_name` its name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What kind of process a target is (the `role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRole {
    /// A region server.
    Server,
    /// A client agent.
    Client,
    /// A federation gateway.
    Gateway,
}

impl TargetRole {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetRole::Server => "server",
            TargetRole::Client => "client",
            TargetRole::Gateway => "gateway",
        }
    }
}

/// One process to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// Its HTTP address, `host:port`.
    pub addr: String,
    /// Its role.
    pub role: TargetRole,
    /// Its region (`None` for gateways).
    pub region: Option<String>,
    /// Its name (`s1.eu`, `c1.eu`, `gw1`).
    pub instance_name: String,
}

#[derive(Serialize)]
struct Group<'a> {
    targets: [&'a str; 1],
    labels: BTreeMap<&'static str, &'a str>,
}

/// The `targets.json` content for `targets`.
pub fn file_sd_json(targets: &[ScrapeTarget]) -> String {
    let groups: Vec<Group<'_>> = targets
        .iter()
        .map(|t| {
            let mut labels = BTreeMap::from([
                ("role", t.role.as_str()),
                ("instance_name", t.instance_name.as_str()),
            ]);
            if let Some(r) = &t.region {
                labels.insert("region", r.as_str());
            }
            Group {
                targets: [t.addr.as_str()],
                labels,
            }
        })
        .collect();
    // Serializing strings and maps of strings cannot fail.
    serde_json::to_string_pretty(&groups).unwrap_or_else(|_| "[]".into()) + "\n"
}

/// `<data_dir>/prometheus/targets.json`.
pub fn file_sd_path(data_dir: &Path) -> PathBuf {
    data_dir.join("prometheus").join("targets.json")
}

/// Writes `targets` to `path` (creating its directory) atomically: a
/// temporary file beside it renamed into place, so Prometheus never reads
/// half a file.
pub fn write_file_sd(path: &Path, targets: &[ScrapeTarget]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, file_sd_json(targets))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_sd_path(dir.path());
        let targets = [
            ScrapeTarget {
                addr: "127.0.0.1:4646".into(),
                role: TargetRole::Server,
                region: Some("eu".into()),
                instance_name: "s1.eu".into(),
            },
            ScrapeTarget {
                addr: "127.0.0.1:4656".into(),
                role: TargetRole::Gateway,
                region: None,
                instance_name: "gw1".into(),
            },
        ];
        write_file_sd(&path, &targets).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"targets": ["127.0.0.1:4646"],
                 "labels": {"region": "eu", "role": "server", "instance_name": "s1.eu"}},
                {"targets": ["127.0.0.1:4656"],
                 "labels": {"role": "gateway", "instance_name": "gw1"}}
            ])
        );
        // Rewriting replaces the file; no temporary file is left behind.
        write_file_sd(&path, &targets[..1]).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v.as_array().map(|a| a.len()), Some(1));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("targets.json")]);
    }
}
