//! The CLI's HTTP client: Nomad's `/v1` API on a server (or a gateway),
//! with the address, region, token and TLS settings of the global flags.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Default address of the HTTP API, as Nomad's.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:4646";

/// Where and how to reach the API (the global flags, resolved).
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:4646`.
    pub address: String,
    /// `?region=` for every request, if set.
    pub region: Option<String>,
    /// Sent as `X-Nomad-Token`.
    pub token: Option<String>,
    /// CA certificate (PEM) to verify the server with.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub client_key: Option<PathBuf>,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection could be made.
    #[error("cannot reach {addr}: is `atoll dev` or a server running there? set ATOLL_ADDR or -address ({detail})")]
    Unreachable {
        /// The base address.
        addr: String,
        /// The transport error.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("{method} {path}: {status}: {message}")]
    Status {
        /// Method of the request.
        method: String,
        /// Path of the request.
        path: String,
        /// HTTP status.
        status: StatusCode,
        /// The server's plain-text message.
        message: String,
    },
    /// Anything else (bad response, TLS files).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ApiError {
    /// Whether the server said 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// Client of the `/v1` API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
}

/// A response body with the index header of a blocking query.
#[derive(Debug)]
pub struct Indexed {
    /// The decoded body.
    pub body: Value,
    /// `X-Nomad-Index`.
    pub index: u64,
}

impl ApiClient {
    /// A client for `cfg`; reads the TLS files, if any.
    pub fn new(cfg: ClientConfig) -> anyhow::Result<Self> {
        // reqwest's default TLS setup (https without TLS flags) uses the
        // process-wide provider: make sure it is ring.
        ops_kit::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if cfg.ca_cert.is_some() || cfg.client_cert.is_some() {
            builder = builder.tls_backend_preconfigured(tls_config(&cfg)?);
        }
        let http = builder.build().context("build the HTTP client")?;
        Ok(Self {
            http,
            cfg: Arc::new(cfg),
        })
    }

    /// The base address.
    pub fn address(&self) -> &str {
        &self.cfg.address
    }

    /// The region flag, if any.
    pub fn region(&self) -> Option<&str> {
        self.cfg.region.as_deref()
    }

    /// The same client for another region.
    pub fn for_region(&self, region: &str) -> Self {
        let mut cfg = (*self.cfg).clone();
        cfg.region = Some(region.to_string());
        Self {
            http: self.http.clone(),
            cfg: Arc::new(cfg),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let base = format!("{}{}", self.cfg.address.trim_end_matches('/'), path);
        let mut url = reqwest::Url::parse(&base).map_err(|e| {
            ApiError::Other(anyhow!(
                "invalid address {:?}: {e} (expected e.g. http://127.0.0.1:4646)",
                self.cfg.address
            ))
        })?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if let Some(region) = &self.cfg.region {
                if !query.iter().any(|(k, _)| *k == "region") {
                    pairs.append_pair("region", region);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut req = self.http.request(method, url);
        if let Some(token) = &self.cfg.token {
            req = req.header("X-Nomad-Token", token);
        }
        Ok(req)
    }

    /// Sends a request; a non-2xx status is an [`ApiError::Status`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Body>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self.request(method.clone(), path, query)?;
        match body {
            Some(Body::Json(v)) => req = req.json(&v),
            Some(Body::Bytes(b, digest)) => {
                req = req.body(b);
                if let Some(d) = digest {
                    req = req.header("Digest", d);
                }
            }
            None => {}
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let message = resp.text().await.unwrap_or_default().trim().to_string();
        Err(ApiError::Status {
            method: method.to_string(),
            path: path.to_string(),
            status,
            message,
        })
    }

    fn transport(&self, e: reqwest::Error) -> ApiError {
        if e.is_connect() || e.is_timeout() {
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                detail = s.to_string();
                source = s.source();
            }
            ApiError::Unreachable {
                addr: self.cfg.address.clone(),
                detail,
            }
        } else {
            ApiError::Other(anyhow!("request to {} failed: {e}", self.cfg.address))
        }
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        Ok(self.get_indexed(path, query).await?.body)
    }

    /// `GET path` as JSON, with its `X-Nomad-Index`.
    pub async fn get_indexed(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Indexed, ApiError> {
        let resp = self.send(Method::GET, path, query, None).await?;
        let index = resp
            .headers()
            .get("X-Nomad-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = decode(resp, path).await?;
        Ok(Indexed { body, index })
    }

    /// A blocking query: `GET path?index=<index>&wait=<wait>`.
    pub async fn block(&self, path: &str, index: u64, wait: Duration) -> Result<Indexed, ApiError> {
        let q = [
            ("index", index.to_string()),
            ("wait", format!("{}ms", wait.as_millis())),
        ];
        self.get_indexed(path, &q).await
    }

    /// `PUT path` with a JSON body, answered with JSON.
    pub async fn put(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Value,
    ) -> Result<Value, ApiError> {
        let resp = self
            .send(Method::PUT, path, query, Some(Body::Json(body)))
            .await?;
        decode(resp, path).await
    }

    /// `DELETE path`, answered with JSON.
    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        let resp = self.send(Method::DELETE, path, query, None).await?;
        decode(resp, path).await
    }
}

/// A request body.
pub enum Body {
    /// JSON.
    Json(Value),
    /// Raw bytes with an optional `Digest` header.
    Bytes(Vec<u8>, Option<String>),
}

async fn decode(resp: reqwest::Response, path: &str) -> Result<Value, ApiError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ApiError::Other(anyhow!("read the response of {path}: {e}")))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Other(anyhow!("the response of {path} is not JSON: {e}")))
}

/// A rustls client config (ring provider) from the TLS flags.
fn tls_config(cfg: &ClientConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut roots = rustls::RootCertStore::empty();
    let ca = cfg.ca_cert.as_ref().ok_or_else(|| {
        anyhow!("-client-cert needs -ca-cert (the CA that signed the server's certificate)")
    })?;
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("read CA certificate {}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("read CA certificate {}", ca.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", ca.display());
    }
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("use {} as a CA", ca.display()))?;
    }
    let builder = builder.with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("read client certificate {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("read client certificate {}", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("read client key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .context("use the client certificate")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("-client-cert and -client-key go together"),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_load_pem_files() {
        let dir = tempfile::tempdir().expect("dir");
        let ca_files = ops_kit::pki::create_ca(dir.path()).expect("ca");
        let ca = ops_kit::pki::load_ca(&ca_files.cert, &ca_files.key).expect("load");
        let cert =
            ops_kit::pki::create_cert(&ca, ops_kit::tls::Role::Client, "eu", &[], dir.path())
                .expect("cert");
        let cfg = ClientConfig {
            address: "https://127.0.0.1:4646".into(),
            ca_cert: Some(ca_files.cert.clone()),
            client_cert: Some(cert.cert.clone()),
            client_key: Some(cert.key.clone()),
            ..ClientConfig::default()
        };
        assert!(tls_config(&cfg).is_ok());
        assert!(ApiClient::new(cfg.clone()).is_ok());
        let no_key = ClientConfig {
            client_key: None,
            ..cfg.clone()
        };
        let e = tls_config(&no_key).expect_err("cert without key");
        assert!(e.to_string().contains("go together"), "{e}");
        let no_ca = ClientConfig {
            ca_cert: None,
            ..cfg.clone()
        };
        assert!(tls_config(&no_ca).is_err());
        let missing = ClientConfig {
            ca_cert: Some(dir.path().join("nope.pem")),
            ..cfg
        };
        let e = tls_config(&missing).expect_err("missing file");
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
    }

    #[tokio::test]
    async fn unreachable_servers_say_what_to_do() {
        let client = ApiClient::new(ClientConfig {
            address: "http://127.0.0.1:1".into(),
            ..ClientConfig::default()
        })
        .expect("client");
        let e = client.get("/v1/jobs", &[]).await.expect_err("refused");
        assert!(matches!(e, ApiError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("set ATOLL_ADDR"), "{e}");
        let bad = ApiClient::new(ClientConfig {
            address: "not a url".into(),
            ..ClientConfig::default()
        })
        .expect("client");
        let e = bad.get("/v1/jobs", &[]).await.expect_err("bad address");
        assert!(e.to_string().contains("invalid address"), "{e}");
    }
}
