//! The gateway's HTTP API over TLS: answered for a client that trusts the
//! cluster CA; with client verification on, refused to a client without a
//! certificate and answered to one with a certificate of the CA.

use std::sync::Arc;

use federation_gateway::{Gateway, GatewayConfig, HttpTls};
use ops_kit::tls::{CertBundle, DevCa, Role};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(ca: &DevCa, verify_clients: bool) -> Gateway {
    let bundle = ca.issue(Role::Gateway, "").expect("gateway certificate");
    let mut cfg = GatewayConfig::dev(
        "gw",
        "eu",
        bundle,
        vec![ops_kit::gossip::Keyring::generate_key()],
    );
    cfg.http_tls = Some(HttpTls { verify_clients });
    Gateway::start(cfg).await.expect("gateway")
}

/// `GET /v1/regions` over TLS; the raw HTTP answer, or the I/O error.
async fn get_regions(
    gw: &Gateway,
    ca: &DevCa,
    client: Option<&CertBundle>,
) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA pem");
    roots.add(ca_der).expect("root");
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(b) => {
            let certs = CertificateDer::pem_slice_iter(b.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certs");
            let key = PrivateKeyDer::from_pem_slice(b.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.http_addr).await?;
    let name = ServerName::try_from("gateway.atoll").expect("server name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"GET /v1/regions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn https_with_and_without_client_certificates() {
    ops_kit::tls::install_crypto_provider();
    let ca = DevCa::generate().expect("ca");

    let open = start(&ca, false).await;
    let answer = get_regions(&open, &ca, None).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("[\"eu\"]"), "{answer}");
    open.shutdown().await;

    let strict = start(&ca, true).await;
    let refused = get_regions(&strict, &ca, None).await;
    assert!(
        refused.as_ref().map_or(true, |a| !a.contains("200")),
        "answered without a client certificate: {refused:?}"
    );
    let client = ca.issue(Role::Client, "eu").expect("client certificate");
    let answer = get_regions(&strict, &ca, Some(&client))
        .await
        .expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    strict.shutdown().await;
}
