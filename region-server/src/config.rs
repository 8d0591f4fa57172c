//! Region server configuration: a TOML file, overridden by flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::raft::RaftTuning;

/// Where the server's TLS identity comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files named by the configuration.
    Files {
        /// CA certificate.
        ca: PathBuf,
        /// Our certificate.
        cert: PathBuf,
        /// Our key.
        key: PathBuf,
    },
    /// Certificates in memory (tests, `atoll dev`).
    Bundle(ops_kit::tls::CertBundle),
    /// A development CA kept in `<data-dir>/tls`, created on first start.
    DevGenerated,
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
            TlsSource::DevGenerated => f.write_str("DevGenerated"),
        }
    }
}

/// The server's configuration, as the TOML file spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Server name (default: the host name).
    pub name: Option<String>,
    /// Region (default `global`).
    pub region: String,
    /// Datacenter (default `dc1`).
    pub datacenter: String,
    /// Data directory (Raft log, snapshots, node id).
    pub data_dir: Option<PathBuf>,
    /// HTTP API address.
    pub http_addr: String,
    /// gRPC address (Raft, forwarding).
    pub rpc_addr: String,
    /// Gossip address (used by the gossip pool).
    pub gossip_addr: String,
    /// Servers expected before the region bootstraps.
    pub bootstrap_expect: Option<usize>,
    /// RPC addresses of other servers of the region.
    pub join: Vec<String>,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Largest accepted HTTP request body, bytes.
    pub max_request_body_bytes: usize,
    /// Raft timings.
    pub raft: RaftTuning,
    /// Gossip settings.
    pub gossip: GossipFile,
}

/// `[gossip]` in the TOML file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipFile {
    /// Keys, primary first.
    pub keys: Vec<String>,
    /// Gossip addresses to join.
    pub retry_join: Vec<String>,
    /// Remove a server from Raft after it stayed failed this long.
    pub reap_failed_after_secs: u64,
}

impl Default for GossipFile {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            retry_join: Vec::new(),
            reap_failed_after_secs: 300,
        }
    }
}

/// TLS file paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_file: PathBuf,
    /// This server's certificate (PEM).
    pub cert_file: PathBuf,
    /// This server's key (PEM).
    pub key_file: PathBuf,
    /// Serve the HTTP API over TLS too (with this certificate).
    #[serde(default)]
    pub http: bool,
    /// With `http`, require client certificates of the CA.
    #[serde(default)]
    pub verify_https_client: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            name: None,
            region: "global".into(),
            datacenter: "dc1".into(),
            data_dir: None,
            http_addr: "127.0.0.1:4646".into(),
            rpc_addr: "127.0.0.1:4647".into(),
            gossip_addr: "127.0.0.1:4648".into(),
            bootstrap_expect: None,
            join: Vec::new(),
            tls: None,
            max_request_body_bytes: 10 * 1024 * 1024,
            raft: RaftTuning::default(),
            gossip: GossipFile::default(),
        }
    }
}

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Server name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP bind address (port 0 picks one).
    pub http_addr: String,
    /// gRPC bind address (port 0 picks one).
    pub rpc_addr: String,
    /// Gossip address.
    pub gossip_addr: String,
    /// Servers expected before bootstrapping; `None` means join an existing
    /// region through `join`.
    pub bootstrap_expect: Option<usize>,
    /// Peers' RPC addresses.
    pub join: Vec<String>,
    /// TLS identity.
    pub tls: TlsSource,
    /// Largest accepted HTTP request body, bytes.
    pub max_request_body_bytes: usize,
    /// Raft timings.
    pub raft: RaftTuning,
    /// Leader duties: workers, broker, heartbeat TTLs, scheduler.
    pub leader: crate::leader::LeaderConfig,
    /// The WAN gossip pool; `None` runs without one (static `join` only).
    pub gossip: Option<GossipSettings>,
    /// Serve the HTTP API over TLS with the server's certificate; `None`
    /// serves plain HTTP.
    pub https: Option<HttpsSettings>,
}

/// The HTTP API over TLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpsSettings {
    /// Require client certificates of the cluster CA.
    pub verify_clients: bool,
}

/// Membership in the federation's gossip pool.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// Pool settings (bind address, seeds, timings).
    pub pool: ops_kit::gossip::GossipConfig,
    /// The primary key (base64, 32 bytes) and other accepted keys.
    pub keys: Vec<String>,
    /// A server failed this long is removed from Raft by the leader.
    pub reap_failed_after: std::time::Duration,
}

impl ServerConfig {
    /// A configuration for tests and `atoll dev`: loopback, picked ports.
    pub fn dev(name: &str, region: &str, data_dir: PathBuf, tls: ops_kit::tls::CertBundle) -> Self {
        Self {
            name: name.to_string(),
            region: region.to_string(),
            datacenter: "dc1".into(),
            data_dir,
            http_addr: "127.0.0.1:0".into(),
            rpc_addr: "127.0.0.1:0".into(),
            gossip_addr: "127.0.0.1:0".into(),
            bootstrap_expect: Some(1),
            join: Vec::new(),
            tls: TlsSource::Bundle(tls),
            max_request_body_bytes: 10 * 1024 * 1024,
            raft: RaftTuning::default(),
            leader: Default::default(),
            gossip: None,
            https: None,
        }
    }
}
