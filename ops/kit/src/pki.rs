//! A file-based certificate authority for `atoll tls`: the CA lives in two
//! PEM files (`atoll-agent-ca.pem`, `atoll-agent-ca-key.pem`, as Nomad's
//! `nomad-agent-ca*.pem`), and certificates for servers, clients and
//! gateways are signed with it into `<region>-<role>-atoll.pem` and
//! `<region>-<role>-atoll-key.pem`. Signing itself is [`DevCa`]'s: the
//! same SAN rules (`server.<region>.atoll`, `client.<region>.atoll`,
//! `gateway.atoll`) as the certificates `atoll dev` makes.

use std::path::{Path, PathBuf};

use crate::tls::{create_dir, read_file, write_file, DevCa, Role, TlsError};

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "atoll-agent-ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "atoll-agent-ca-key.pem";

/// Paths of a written certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key (mode 0600).
    pub key: PathBuf,
}

fn refuse_existing(paths: &[&Path]) -> Result<(), TlsError> {
    for p in paths {
        if p.exists() {
            return Err(TlsError::Io {
                action: "create (it already exists; remove it first)",
                path: p.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
    }
    Ok(())
}

/// Creates a new CA in `dir`; never overwrites existing files.
pub fn create_ca(dir: &Path) -> Result<Written, TlsError> {
    let cert = dir.join(CA_CERT_FILE);
    let key = dir.join(CA_KEY_FILE);
    refuse_existing(&[&cert, &key])?;
    let ca = DevCa::generate()?;
    create_dir(dir)?;
    write_file(&key, &ca.key_pem(), true)?;
    write_file(&cert, &ca.cert_pem(), false)?;
    Ok(Written { cert, key })
}

/// Loads a CA from its certificate and key files.
pub fn load_ca(cert: &Path, key: &Path) -> Result<DevCa, TlsError> {
    let cert_pem = read_file(cert)?;
    let key_pem = read_file(key)?;
    DevCa::from_pem(&cert_pem, &key_pem)
}

/// The file stem of a certificate: `eu-server-atoll`, `eu-client-atoll`,
/// `eu-gateway-atoll`.
pub fn cert_stem(role: Role, region: &str) -> String {
    format!("{region}-{}-atoll", role.as_str())
}

/// Signs a certificate for `role` in `region` (with `extra_sans`) and writes
/// it with its key into `dir`; never overwrites existing files.
pub fn create_cert(
    ca: &DevCa,
    role: Role,
    region: &str,
    extra_sans: &[String],
    dir: &Path,
) -> Result<Written, TlsError> {
    let stem = cert_stem(role, region);
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    refuse_existing(&[&cert, &key])?;
    let bundle = ca.issue_with_sans(role, region, extra_sans)?;
    create_dir(dir)?;
    write_file(&key, &bundle.key_pem, true)?;
    write_file(&cert, &bundle.cert_pem, false)?;
    Ok(Written { cert, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{CertBundle, PeerIdentity};

    #[test]
    fn ca_and_certificates_round_trip_through_files() {
        let dir = tempfile::tempdir().expect("dir");
        let ca_files = create_ca(dir.path()).expect("ca");
        assert!(create_ca(dir.path()).is_err(), "never overwrites a CA");
        let ca = load_ca(&ca_files.cert, &ca_files.key).expect("load");
        let written = create_cert(
            &ca,
            Role::Server,
            "eu",
            &["s1.example.com".to_string()],
            dir.path(),
        )
        .expect("cert");
        assert_eq!(written.cert, dir.path().join("eu-server-atoll.pem"));
        assert_eq!(written.key, dir.path().join("eu-server-atoll-key.pem"));
        let bundle = CertBundle::load(&ca_files.cert, &written.cert, &written.key).expect("bundle");
        assert_eq!(
            bundle.own_identity().expect("identity"),
            PeerIdentity {
                role: Role::Server,
                region: Some("eu".to_string())
            }
        );
        assert!(bundle.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&written.key)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            create_cert(&ca, Role::Client, "not a region", &[], dir.path()).is_err(),
            "bad region"
        );
        let gw = create_cert(&ca, Role::Gateway, "eu", &[], dir.path()).expect("gateway");
        assert_eq!(gw.cert, dir.path().join("eu-gateway-atoll.pem"));
    }
}
