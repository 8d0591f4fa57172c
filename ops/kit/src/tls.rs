//! Identity and trust.
//!
//! One cluster CA signs every certificate. A certificate names its holder's role
//! and region in a DNS subject alternative name: `server.<region>.atoll`,
//! `client.<region>.atoll`, or `gateway.atoll` (after Nomad's
//! `server.<region>.nomad`). All gRPC traffic is mutual TLS: both sides present
//! a certificate of the cluster CA, and handlers decide what a peer may do from
//! the identity in its certificate ([`peer_identity`], [`require_peer`]). A
//! certificate of region A never passes as region B.
//!
//! [`DevCa`] makes a throwaway CA and leaf certificates for `atoll dev` and tests.
//! [`CertBundle`] is what a process loads at start: the CA certificate, its own
//! certificate and its key, turned into tonic server and client TLS settings.
//!
//! rustls is used with the `ring` provider only; call [`install_crypto_provider`]
//! at the top of every `main`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS suffix of every Atoll identity name.
pub const IDENTITY_SUFFIX: &str = ".atoll";

/// Validity of leaf certificates issued by [`DevCa::issue`].
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Validity of a [`DevCa`]'s own certificate.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start to be valid a little in the past, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

/// What an Atoll process is, as named in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A region server (Raft member): `server.<region>.atoll`.
    Server,
    /// A client agent (runs allocations): `client.<region>.atoll`.
    Client,
    /// A federation gateway, not tied to a region: `gateway.atoll`.
    Gateway,
}

impl Role {
    /// The first label of the role's identity name: `server`, `client`, `gateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The holder's role.
    pub role: Role,
    /// The holder's region; `None` for a gateway, `Some` for servers and clients.
    pub region: Option<String>,
}

impl PeerIdentity {
    /// The identity name this identity is written as (`server.eu.atoll`).
    pub fn name(&self) -> String {
        identity_name(self.role, self.region.as_deref().unwrap_or(""))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Everything that can go wrong loading, storing, generating or reading
/// certificates. Each variant says which file or which certificate, and what.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or directory operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done: "read", "write", "create directory", ...
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// PEM data did not hold what was expected.
    #[error("{what}: {problem}")]
    Pem {
        /// Which data: "certificate file /etc/atoll/server.pem", "own certificate", ...
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A certificate could not be parsed or does not fit its use.
    #[error("{what}: {problem}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Generating, signing or parsing with rcgen failed.
    #[error("could not {action}")]
    Generate {
        /// What was being done.
        action: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A region name that cannot appear in an identity name.
    #[error(
        "invalid region name {0:?}: use ASCII letters, digits and '-' (not first or last), at most 63 characters"
    )]
    InvalidRegion(String),
    /// A CA directory holds only one of the CA certificate and its key.
    #[error("CA directory {}: found {} but not {}; remove it or restore the missing file", dir.display(), present.display(), missing.display())]
    IncompleteCa {
        /// The directory.
        dir: PathBuf,
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
}

/// The identity name of `role` in `region`: `server.eu.atoll`, `client.eu.atoll`,
/// or `gateway.atoll` (a gateway's name ignores `region`).
pub fn identity_name(role: Role, region: &str) -> String {
    match role {
        Role::Gateway => format!("gateway{IDENTITY_SUFFIX}"),
        Role::Server | Role::Client => format!("{}.{region}{IDENTITY_SUFFIX}", role.as_str()),
    }
}

/// Whether `region` can appear in an identity name: a single DNS label of ASCII
/// letters, digits and `-`, not starting or ending with `-`, 1 to 63 characters.
pub fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 63
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Parses an identity name (`server.eu.atoll`, `client.eu.atoll`,
/// `gateway.atoll`) back into an identity. Matching is exact (case-sensitive);
/// anything else, including an invalid region, gives `None`.
pub fn parse_identity_name(name: &str) -> Option<PeerIdentity> {
    let rest = name.strip_suffix(IDENTITY_SUFFIX)?;
    match rest.split_once('.') {
        None if rest == "gateway" => Some(PeerIdentity {
            role: Role::Gateway,
            region: None,
        }),
        None => None,
        Some((role, region)) => {
            let role = match role {
                "server" => Role::Server,
                "client" => Role::Client,
                _ => return None,
            };
            is_valid_region(region).then(|| PeerIdentity {
                role,
                region: Some(region.to_string()),
            })
        }
    }
}

/// Installs rustls' `ring` provider as the process-wide default. Safe to call any
/// number of times, from any thread; later calls (and a provider installed by
/// someone else first) leave things as they are.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The identity a DER certificate names in its DNS SANs. Only SANs that parse as
/// identity names count; a certificate naming two different identities is
/// rejected rather than guessed at.
fn identity_from_der(der: &[u8]) -> Result<PeerIdentity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
    let mut found: Vec<PeerIdentity> = Vec::new();
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                if let Some(id) = parse_identity_name(dns) {
                    if !found.contains(&id) {
                        found.push(id);
                    }
                }
            }
        }
    }
    match found.len() {
        0 => Err(
            "names no Atoll identity (expected a DNS SAN like server.<region>.atoll)".to_string(),
        ),
        1 => Ok(found.remove(0)),
        _ => Err(format!(
            "names several Atoll identities ({}), refusing to pick one",
            found
                .iter()
                .map(PeerIdentity::name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The identity named by a DER-encoded certificate (its DNS SANs ending in
/// `.atoll`).
pub fn identity_from_cert_der(der: &[u8]) -> Result<PeerIdentity, TlsError> {
    identity_from_der(der).map_err(|problem| TlsError::Certificate {
        what: "certificate".to_string(),
        problem,
    })
}

/// All certificates in PEM text; an error when there is none.
fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            problem: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_string(),
            problem: "no PEM CERTIFICATE block".to_string(),
        });
    }
    Ok(certs)
}

/// Checks that PEM text holds a private key.
fn check_key_pem(pem: &str, what: &str) -> Result<(), TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            problem: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        })
}

pub(crate) fn read_file(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers
/// never see half a file. With `private`, the file is created with mode 0600
/// (on Unix) before anything is written to it.
pub(crate) fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    use std::io::Write;

    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| TlsError::Io {
            action,
            path: p,
            source,
        }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    // A stale temporary file could carry a wider mode; start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove stale temporary file", &tmp)(e))
        }
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io("create", &tmp))?;
    file.write_all(contents.as_bytes())
        .map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    Ok(())
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// A process's TLS material: the cluster CA certificate, its own certificate
/// (chain) and its private key, all PEM.
#[derive(Clone)]
pub struct CertBundle {
    /// The cluster CA certificate(s), PEM; peers are verified against these.
    pub ca_pem: String,
    /// Our certificate, PEM (leaf first, then any intermediates).
    pub cert_pem: String,
    /// Our private key, PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("identity", &self.own_identity().ok())
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertBundle {
    /// Reads the CA certificate, our certificate and our key from files, and
    /// checks that each holds what it should.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let ca_pem = read_file(ca)?;
        certs_from_pem(&ca_pem, &format!("CA certificate file {}", ca.display()))?;
        let cert_pem = read_file(cert)?;
        certs_from_pem(&cert_pem, &format!("certificate file {}", cert.display()))?;
        let key_pem = read_file(key)?;
        check_key_pem(&key_pem, &format!("key file {}", key.display()))?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// Writes `ca.pem`, `<stem>.pem` and `<stem>-key.pem` into `dir` (created if
    /// missing); the key file gets mode 0600. Returns the paths in that order.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf, PathBuf), TlsError> {
        create_dir(dir)?;
        let ca = dir.join("ca.pem");
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        write_file(&ca, &self.ca_pem, false)?;
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        Ok((ca, cert, key))
    }

    /// Server-side mutual TLS: presents our certificate, and requires every
    /// client to present a certificate signed by the CA. What a verified peer may
    /// do is then up to [`peer_identity`] / [`require_peer`] in the handlers.
    pub fn server_tls_config(&self) -> ServerTlsConfig {
        install_crypto_provider();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// Client-side mutual TLS: trusts only the CA, expects the server's
    /// certificate to name `server_name` (e.g. `server.eu.atoll`, whatever
    /// address is dialled), and presents our certificate.
    pub fn client_tls_config(&self, server_name: &str) -> ClientTlsConfig {
        install_crypto_provider();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(server_name)
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// The identity our own certificate names (from its SAN).
    pub fn own_identity(&self) -> Result<PeerIdentity, TlsError> {
        let what = "own certificate";
        let certs = certs_from_pem(&self.cert_pem, what)?;
        let leaf = certs.first().ok_or_else(|| TlsError::Pem {
            what: what.to_string(),
            problem: "no certificate".to_string(),
        })?;
        identity_from_der(leaf.as_ref()).map_err(|problem| TlsError::Certificate {
            what: what.to_string(),
            problem,
        })
    }
}

/// Makes `params` valid from a little before now (clock skew) for `validity`.
fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + validity;
}

/// A throwaway certificate authority for `atoll dev` and tests, made with rcgen.
/// Not for production: the key sits in memory and, with
/// [`DevCa::load_or_create`], in a file next to the certificate.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA with a fresh ECDSA P-256 key, valid for ten years.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(|source| TlsError::Generate {
            action: "generate the CA key".to_string(),
            source,
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Atoll");
        // Tell dev CAs apart by a few bytes of their public key.
        let tag: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(DnType::CommonName, format!("Atoll development CA {tag}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(|source| TlsError::Generate {
                action: "self-sign the CA certificate".to_string(),
                source,
            })?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// A CA from its certificate and private key (PEM). Checks that the
    /// certificate is a CA certificate and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::from_pem_described(cert_pem, key_pem, "CA certificate", "CA key")
    }

    fn from_pem_described(
        cert_pem: &str,
        key_pem: &str,
        cert_what: &str,
        key_what: &str,
    ) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|source| TlsError::Generate {
            action: format!("read the private key in {key_what}"),
            source,
        })?;
        let bad = |problem: String| TlsError::Certificate {
            what: cert_what.to_string(),
            problem,
        };
        let certs = certs_from_pem(cert_pem, cert_what)?;
        let der = certs
            .first()
            .ok_or_else(|| bad("no certificate".to_string()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| bad(format!("not a valid X.509 certificate: {e}")))?;
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| bad(format!("unreadable basic constraints: {e}")))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(bad("not a CA certificate".to_string()));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(format!("does not match the private key in {key_what}")));
        }
        let issuer = Issuer::from_ca_cert_der(der, key).map_err(|source| TlsError::Generate {
            action: format!("use {cert_what} as an issuer"),
            source,
        })?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// A leaf certificate and fresh key for `role` in `region` (ignored for a
    /// gateway), valid for about a year. SANs: the identity name, `localhost`,
    /// `127.0.0.1` and `::1`; usable for both TLS server and client auth.
    pub fn issue(&self, role: Role, region: &str) -> Result<CertBundle, TlsError> {
        self.issue_with_sans(role, region, &[])
    }

    /// Like [`DevCa::issue`], with `extra_sans` (DNS names or IP addresses)
    /// added to the certificate's subject alternative names.
    pub fn issue_with_sans(
        &self,
        role: Role,
        region: &str,
        extra_sans: &[String],
    ) -> Result<CertBundle, TlsError> {
        if role != Role::Gateway && !is_valid_region(region) {
            return Err(TlsError::InvalidRegion(region.to_string()));
        }
        let name = identity_name(role, region);
        let generate = |action: &str| {
            let action = format!("{action} for {name}");
            move |source| TlsError::Generate { action, source }
        };
        let mut sans = vec![
            name.clone(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        for san in extra_sans {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        let mut params = CertificateParams::new(sans).map_err(generate("build the certificate"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Atoll");
        dn.push(DnType::CommonName, name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY);
        let key = KeyPair::generate().map_err(generate("generate a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate("sign the certificate"))?;
        Ok(CertBundle {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA stored in `dir` as `ca.pem` and `ca-key.pem`, or, when neither file
    /// exists, a new CA written there (the key with mode 0600). Only one of the
    /// two files existing is an error.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_pem = read_file(&cert_path)?;
                let key_pem = read_file(&key_path)?;
                Self::from_pem_described(
                    &cert_pem,
                    &key_pem,
                    &format!("CA certificate file {}", cert_path.display()),
                    &format!("CA key file {}", key_path.display()),
                )
            }
            (false, false) => {
                let ca = Self::generate()?;
                create_dir(dir)?;
                write_file(&key_path, &ca.key_pem, true)?;
                write_file(&cert_path, &ca.cert_pem, false)?;
                Ok(ca)
            }
            (true, false) => Err(TlsError::IncompleteCa {
                dir: dir.to_path_buf(),
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(TlsError::IncompleteCa {
                dir: dir.to_path_buf(),
                present: key_path,
                missing: cert_path,
            }),
        }
    }
}

/// The verified identity of the peer of a gRPC request served with mutual TLS:
/// the Atoll identity named by the DNS SANs of its leaf certificate (see
/// [`parse_identity_name`]). The certificate chain was already verified against
/// the CA by the TLS handshake.
///
/// `Err(Status::unauthenticated)` when the request came without a client
/// certificate (plain TCP, or TLS without client auth), or the certificate names
/// no Atoll identity, or several.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Result<PeerIdentity, tonic::Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate: this endpoint requires mutual TLS")
    })?;
    let leaf = certs.first().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate: this endpoint requires mutual TLS")
    })?;
    identity_from_der(leaf.as_ref())
        .map_err(|problem| tonic::Status::unauthenticated(format!("client certificate {problem}")))
}

/// Like [`peer_identity`], and the peer must also hold one of the `allowed` roles
/// in `region` (a gateway's region does not matter). A certificate of another
/// region never passes: with `[Role::Server]` and `"eu"`, `server.us.atoll` gets
/// `Err(Status::permission_denied)`.
pub fn require_peer<T>(
    req: &tonic::Request<T>,
    allowed: &[Role],
    region: &str,
) -> Result<PeerIdentity, tonic::Status> {
    let id = peer_identity(req)?;
    let permitted = allowed.iter().any(|role| {
        *role == id.role && (id.role == Role::Gateway || id.region.as_deref() == Some(region))
    });
    if permitted {
        return Ok(id);
    }
    let wanted: Vec<String> = allowed.iter().map(|r| identity_name(*r, region)).collect();
    let wanted = if wanted.is_empty() {
        "nobody".to_string()
    } else {
        wanted.join(" or ")
    };
    Err(tonic::Status::permission_denied(format!(
        "certificate {id} may not call this endpoint (allowed: {wanted})"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        assert!(is_valid_region("eu"));
        assert!(is_valid_region("us-east-1"));
        assert!(is_valid_region("global"));
        assert!(!is_valid_region(""));
        assert!(!is_valid_region("-eu"));
        assert!(!is_valid_region("eu-"));
        assert!(!is_valid_region("e.u"));
        assert!(!is_valid_region("e_u"));
        assert!(!is_valid_region(&"a".repeat(64)));
    }

    #[test]
    fn validity_is_now_plus() {
        let mut params = CertificateParams::default();
        set_validity(&mut params, LEAF_VALIDITY);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let nb = params.not_before.unix_timestamp();
        let na = params.not_after.unix_timestamp();
        assert!(
            nb <= now - 3500 && nb > now - 3700,
            "not_before {nb}, now {now}"
        );
        assert!(na >= now + LEAF_VALIDITY.as_secs() as i64 - 100);
        assert!(na <= now + LEAF_VALIDITY.as_secs() as i64 + 100);
    }
}
