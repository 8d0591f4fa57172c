//! `atoll tls ca create` and `atoll tls cert create`: files like Nomad's
//! (`atoll-agent-ca.pem`, `<region>-server-atoll.pem`, ...), made with
//! `ops_kit::pki`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use ops_kit::pki;
use ops_kit::tls::Role;

/// `atoll tls ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// The certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates signed by the CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `atoll tls ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA: atoll-agent-ca.pem and atoll-agent-ca-key.pem.
    Create {
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// `atoll tls cert ...`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a certificate for a server, client or gateway.
    Create(CertArgs),
}

/// `atoll tls cert create`; the region is the global `-region` flag
/// (default `global`).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["server", "client", "gateway"])))]
pub struct CertArgs {
    /// A server certificate (`server.<region>.atoll`).
    #[arg(long)]
    pub server: bool,
    /// A client agent certificate (`client.<region>.atoll`).
    #[arg(long)]
    pub client: bool,
    /// A federation gateway certificate (`gateway.atoll`).
    #[arg(long)]
    pub gateway: bool,
    /// The CA certificate.
    #[arg(long, default_value = pki::CA_CERT_FILE)]
    pub ca: PathBuf,
    /// The CA key.
    #[arg(long, default_value = pki::CA_KEY_FILE)]
    pub key: PathBuf,
    /// An extra DNS name or IP address for the certificate (repeatable).
    #[arg(long = "additional-dnsname", value_name = "NAME")]
    pub dns: Vec<String>,
    /// An extra IP address for the certificate (repeatable).
    #[arg(long = "additional-ipaddress", value_name = "IP")]
    pub ips: Vec<String>,
    /// Directory to write into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Runs a tls command.
pub fn run(cmd: TlsCommand, region: Option<&str>) -> anyhow::Result<u8> {
    match cmd {
        TlsCommand::Ca(CaCommand::Create { dir }) => {
            let w = pki::create_ca(&dir)?;
            println!("==> CA certificate saved to: {}", w.cert.display());
            println!("==> CA certificate key saved to: {}", w.key.display());
            Ok(0)
        }
        TlsCommand::Cert(CertCommand::Create(a)) => {
            let role = match (a.server, a.client, a.gateway) {
                (true, _, _) => Role::Server,
                (_, true, _) => Role::Client,
                (_, _, true) => Role::Gateway,
                _ => bail!("give one of -server, -client, -gateway"),
            };
            for ip in &a.ips {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    bail!("-additional-ipaddress {ip:?} is not an IP address");
                }
            }
            let ca = pki::load_ca(&a.ca, &a.key).map_err(|e| {
                anyhow::anyhow!("{e}\n(create a CA first with `atoll tls ca create`, or point -ca and -key at yours)")
            })?;
            let mut sans = a.dns.clone();
            sans.extend(a.ips.iter().cloned());
            let region = region.unwrap_or("global");
            let w = pki::create_cert(&ca, role, region, &sans, &a.dir)?;
            println!(
                "==> Using CA file {} and CA key {}",
                a.ca.display(),
                a.key.display()
            );
            println!("==> {} certificate saved to: {}", role, w.cert.display());
            println!("==> {} certificate key saved to: {}", role, w.key.display());
            Ok(0)
        }
    }
}
