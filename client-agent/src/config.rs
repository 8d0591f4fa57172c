//! Client agent configuration: a TOML file, overridden by flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ops_kit::tls::{CertBundle, DevCa, Role};
use serde::{Deserialize, Serialize};

/// Where the agent's TLS identity comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files.
    Files {
        /// CA certificate.
        ca: PathBuf,
        /// Our certificate (naming `client.<region>.atoll`).
        cert: PathBuf,
        /// Our key.
        key: PathBuf,
    },
    /// Certificates in memory (tests, `atoll dev`).
    Bundle(CertBundle),
    /// A development CA directory (`ca.pem` + `ca-key.pem`, e.g. a dev
    /// server's `<data-dir>/tls`): a client certificate is issued from it.
    DevCaDir(PathBuf),
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::Files { ca, cert, key } => f
                .debug_struct("Files")
                .field("ca", ca)
                .field("cert", cert)
                .field("key", key)
                .finish(),
            TlsSource::Bundle(_) => f.write_str("Bundle"),
            TlsSource::DevCaDir(d) => f.debug_tuple("DevCaDir").field(d).finish(),
        }
    }
}

impl TlsSource {
    /// The certificate bundle for a client of `region`.
    pub fn load(&self, region: &str) -> anyhow::Result<CertBundle> {
        Ok(match self {
            TlsSource::Files { ca, cert, key } => CertBundle::load(ca, cert, key)?,
            TlsSource::Bundle(b) => b.clone(),
            TlsSource::DevCaDir(dir) => {
                let ca = DevCa::from_pem(
                    &std::fs::read_to_string(dir.join("ca.pem"))?,
                    &std::fs::read_to_string(dir.join("ca-key.pem"))?,
                )?;
                ca.issue(Role::Client, region)?
            }
        })
    }
}

/// Resources the node keeps for itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reserved {
    /// CPU, MHz.
    pub cpu: i64,
    /// Memory, MB.
    pub memory: i64,
    /// Disk, MB.
    pub disk: i64,
    /// Host ports (`22,80,8000-8100`).
    pub reserved_ports: String,
}

/// The drivers enabled by default.
pub fn default_drivers() -> Vec<String> {
    vec!["raw_exec".into(), "exec".into(), "mock_driver".into()]
}

/// Everything an agent needs to start.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Node name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node class.
    pub node_class: String,
    /// Node pool.
    pub node_pool: String,
    /// Data directory (identity, `client.db`).
    pub data_dir: PathBuf,
    /// Allocation directories' root (default `<data-dir>/alloc`).
    pub alloc_dir: Option<PathBuf>,
    /// Servers' RPC addresses.
    pub servers: Vec<String>,
    /// HTTP address for log/fs serving; `None` for no HTTP server.
    pub http_addr: Option<String>,
    /// TLS identity.
    pub tls: TlsSource,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
    /// Reserved resources.
    pub reserved: Reserved,
    /// Enabled drivers (`raw_exec`, `exec`, `mock_driver`).
    pub drivers: Vec<String>,
    /// Parent of task cgroups, relative to each hierarchy's mount (default:
    /// `atoll.slice` on v2, `<agent's cgroup>/atoll` on v1).
    pub cgroup_parent: Option<String>,
    /// Terminal allocations kept (with their directories) before the oldest
    /// are garbage collected.
    pub gc_max_allocs: usize,
    /// How often allocation updates are batched to the servers.
    pub update_interval: Duration,
    /// Upper bound of a task's kill timeout.
    pub max_kill_timeout: Duration,
    /// Largest wait between attempts when no server answers.
    pub max_backoff: Duration,
}

impl ClientConfig {
    /// A configuration with defaults for everything but the essentials: no
    /// HTTP server, every driver.
    pub fn new(
        name: &str,
        region: &str,
        data_dir: PathBuf,
        servers: Vec<String>,
        tls: TlsSource,
    ) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
            datacenter: "dc1".into(),
            node_class: String::new(),
            node_pool: "default".into(),
            data_dir,
            alloc_dir: None,
            servers,
            http_addr: None,
            tls,
            meta: BTreeMap::new(),
            reserved: Reserved::default(),
            drivers: default_drivers(),
            cgroup_parent: None,
            gc_max_allocs: 50,
            update_interval: Duration::from_millis(200),
            max_kill_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// A configuration for tests and `atoll dev`: loopback HTTP on a picked
    /// port, every driver.
    pub fn dev(
        name: &str,
        region: &str,
        data_dir: PathBuf,
        servers: Vec<String>,
        tls: CertBundle,
    ) -> Self {
        let mut c = Self::new(name, region, data_dir, servers, TlsSource::Bundle(tls));
        c.http_addr = Some("127.0.0.1:0".into());
        c
    }

    /// The allocation root.
    pub fn alloc_root(&self) -> PathBuf {
        self.alloc_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("alloc"))
    }
}

/// The configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Node name (default: host name).
    pub name: Option<String>,
    /// Region (default `global`).
    pub region: String,
    /// Datacenter (default `dc1`).
    pub datacenter: String,
    /// Node class.
    pub node_class: String,
    /// Node pool (default `default`).
    pub node_pool: String,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Allocation directories' root.
    pub alloc_dir: Option<PathBuf>,
    /// Servers' RPC addresses.
    pub servers: Vec<String>,
    /// HTTP address (default [`DEFAULT_HTTP_ADDR`]).
    pub http_addr: Option<String>,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
    /// Reserved resources.
    pub reserved: Reserved,
    /// Enabled drivers.
    pub drivers: Option<Vec<String>>,
    /// Parent of task cgroups.
    pub cgroup_parent: Option<String>,
    /// Terminal allocations kept.
    pub gc_max_allocs: usize,
    /// Upper bound of a task's kill timeout (Go duration).
    pub max_kill_timeout: Option<String>,
}

/// TLS file paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_file: Option<PathBuf>,
    /// Our certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Our key (PEM).
    pub key_file: Option<PathBuf>,
    /// A development CA directory to issue our certificate from.
    pub dev_ca_dir: Option<PathBuf>,
}

/// The agent's HTTP address when none is configured (Nomad clients share the
/// agent port 4646; a separate process needs its own).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4649";

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            name: None,
            region: "global".into(),
            datacenter: "dc1".into(),
            node_class: String::new(),
            node_pool: "default".into(),
            data_dir: None,
            alloc_dir: None,
            servers: Vec::new(),
            http_addr: None,
            tls: None,
            meta: BTreeMap::new(),
            reserved: Reserved::default(),
            drivers: None,
            cgroup_parent: None,
            gc_max_allocs: 50,
            max_kill_timeout: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file() {
        let f: FileConfig = toml::from_str(
            r#"
            name = "c1"
            region = "eu"
            servers = ["127.0.0.1:4647"]
            drivers = ["raw_exec"]
            [meta]
            rack = "r1"
            [reserved]
            cpu = 200
            memory = 256
            [tls]
            ca_file = "/etc/atoll/ca.pem"
            cert_file = "/etc/atoll/client.pem"
            key_file = "/etc/atoll/client-key.pem"
            "#,
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("c1"));
        assert_eq!(f.region, "eu");
        assert_eq!(f.meta["rack"], "r1");
        assert_eq!(f.reserved.cpu, 200);
        assert_eq!(f.datacenter, "dc1");
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}
