//! Gateway configuration: a TOML file ([`FileConfig`]), overridden by flags,
//! turned into the [`GatewayConfig`] [`crate::Gateway::start`] takes.

use std::path::PathBuf;
use std::time::Duration;

use ops_kit::gossip::GossipConfig;
use ops_kit::tls::CertBundle;
use serde::{Deserialize, Serialize};

/// Where the gateway's TLS identity (`gateway.atoll`) comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files.
    Files {
        /// CA certificate.
        ca: PathBuf,
        /// Our certificate.
        cert: PathBuf,
        /// Our key.
        key: PathBuf,
    },
    /// Certificates in memory (tests, `atoll dev`).
    Bundle(CertBundle),
    /// A development CA kept in this directory (`ca.pem`, `ca-key.pem`),
    /// created on first start; the gateway issues itself a certificate.
    DevGenerated(PathBuf),
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
            TlsSource::DevGenerated(d) => f.debug_tuple("DevGenerated").field(d).finish(),
        }
    }
}

/// Serving the HTTP API over TLS.
#[derive(Clone, Debug)]
pub struct HttpTls {
    /// Require and verify client certificates of the cluster CA.
    pub verify_clients: bool,
}

/// Everything a gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Gateway name; in the gossip pool it is `<name>.<region>`.
    pub name: String,
    /// The region requests go to when they name none (`?region=`, the
    /// job's `Region`); also the region the gateway says it is deployed in.
    pub region: String,
    /// Datacenter (informational).
    pub datacenter: String,
    /// HTTP bind address (port 0 picks one).
    pub http_addr: String,
    /// gRPC bind address of `GatewayService` (port 0 picks one).
    pub rpc_addr: String,
    /// The gossip pool (bind address, seeds, timings).
    pub gossip: GossipConfig,
    /// Gossip keys (base64 of 32 bytes), primary first.
    pub gossip_keys: Vec<String>,
    /// TLS identity, `gateway.atoll`.
    pub tls: TlsSource,
    /// Serve the HTTP API over TLS with the same certificate (`None`: plain HTTP).
    pub http_tls: Option<HttpTls>,
    /// How long a forwarded request may take to produce its response head
    /// (a blocking query gets its `wait` on top).
    pub request_timeout: Duration,
    /// gRPC connections kept to each server.
    pub connections_per_server: usize,
    /// How long dialing a server may take before the next one is tried.
    pub connect_timeout: Duration,
    /// Largest accepted HTTP request body, bytes.
    pub max_request_body_bytes: usize,
    /// Multi-region rollouts: how often a region's deployment is checked.
    pub rollout_poll: Duration,
    /// Multi-region rollouts: a region not healthy within this long has failed.
    pub rollout_deadline: Duration,
}

impl GatewayConfig {
    /// A configuration for tests and `atoll dev`: loopback, picked ports,
    /// the fast local gossip profile joining `seeds`, a certificate in
    /// memory.
    pub fn dev(name: &str, region: &str, tls: CertBundle, gossip_keys: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            region: region.to_string(),
            datacenter: "dc1".into(),
            http_addr: "127.0.0.1:0".into(),
            rpc_addr: "127.0.0.1:0".into(),
            gossip: GossipConfig::local(),
            gossip_keys,
            tls: TlsSource::Bundle(tls),
            http_tls: None,
            request_timeout: Duration::from_secs(30),
            connections_per_server: 2,
            connect_timeout: Duration::from_millis(500),
            max_request_body_bytes: 10 * 1024 * 1024,
            rollout_poll: Duration::from_millis(500),
            rollout_deadline: Duration::from_secs(600),
        }
    }
}

/// The gateway's configuration, as the TOML file spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Gateway name (default: the host name).
    pub name: Option<String>,
    /// Default region for requests that name none (default `global`).
    pub region: String,
    /// Datacenter (default `dc1`).
    pub datacenter: String,
    /// HTTP API address (default `127.0.0.1:4656`).
    pub http_addr: String,
    /// gRPC address of `GatewayService` (default `127.0.0.1:4657`).
    pub rpc_addr: String,
    /// Gossip address (default `127.0.0.1:4658`).
    pub gossip_addr: String,
    /// Where a development CA is kept when no TLS files are given.
    pub data_dir: Option<PathBuf>,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Gossip settings.
    pub gossip: GossipFile,
    /// Seconds a forwarded request may take to produce its response head.
    pub request_timeout_secs: u64,
    /// gRPC connections kept to each server.
    pub connections_per_server: usize,
    /// Largest accepted HTTP request body, bytes.
    pub max_request_body_bytes: usize,
    /// Seconds a region of a multi-region rollout may take to become healthy.
    pub rollout_deadline_secs: u64,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            name: None,
            region: "global".into(),
            datacenter: "dc1".into(),
            http_addr: "127.0.0.1:4656".into(),
            rpc_addr: "127.0.0.1:4657".into(),
            gossip_addr: "127.0.0.1:4658".into(),
            data_dir: None,
            tls: None,
            gossip: GossipFile::default(),
            request_timeout_secs: 30,
            connections_per_server: 2,
            max_request_body_bytes: 10 * 1024 * 1024,
            rollout_deadline_secs: 600,
        }
    }
}

/// `[gossip]` in the TOML file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipFile {
    /// Keys, primary first.
    pub keys: Vec<String>,
    /// Gossip addresses to join.
    pub retry_join: Vec<String>,
}

/// `[tls]` in the TOML file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_file: PathBuf,
    /// The gateway's certificate (PEM), naming `gateway.atoll`.
    pub cert_file: PathBuf,
    /// The gateway's key (PEM).
    pub key_file: PathBuf,
    /// Serve the HTTP API over TLS too.
    #[serde(default)]
    pub http: bool,
    /// With `http`, require client certificates of the cluster CA.
    #[serde(default)]
    pub verify_https_client: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_defaults_and_unknown_fields() {
        let f: FileConfig =
            toml::from_str("region = \"eu\"\n[gossip]\nretry_join = [\"127.0.0.1:4648\"]\n")
                .expect("parses");
        assert_eq!(f.region, "eu");
        assert_eq!(f.http_addr, "127.0.0.1:4656");
        assert_eq!(f.gossip.retry_join.len(), 1);
        assert!(toml::from_str::<FileConfig>("regoin = \"eu\"").is_err());
    }
}
