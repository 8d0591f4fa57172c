//! Serving an HTTP API over TLS (region servers and gateways): the
//! process's own certificate, and, when asked, client certificates
//! verified against the cluster CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::CertBundle;

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[error("HTTPS settings: {0}")]
pub struct HttpsError(pub String);

/// rustls server settings presenting `bundle`'s certificate; with
/// `verify_clients`, clients must present a certificate of `bundle`'s CA.
pub fn server_config(
    bundle: &CertBundle,
    verify_clients: bool,
) -> Result<Arc<rustls::ServerConfig>, HttpsError> {
    crate::tls::install_crypto_provider();
    let bad = |what: &str, e: &dyn std::fmt::Display| HttpsError(format!("{what}: {e}"));
    let certs = CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
        .map_err(|e| bad("private key", &e))?;
    let builder = rustls::ServerConfig::builder();
    let builder = if verify_clients {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(bundle.ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| bad("CA certificate", &e))?;
            roots.add(ca).map_err(|e| bad("CA certificate", &e))?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| bad("client verifier", &e))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `router` over TLS on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    config: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTPS connection");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
        });
    }
}
