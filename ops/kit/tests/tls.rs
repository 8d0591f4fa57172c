//! Identity names, the dev CA, certificate files, and mutual TLS end to end
//! over tonic.

use std::net::SocketAddr;
use std::time::Duration;

use ops_kit::tls::{
    identity_name, install_crypto_provider, parse_identity_name, peer_identity, require_peer,
    CertBundle, DevCa, PeerIdentity, Role, TlsError,
};
use proto::rpc::raft_service_client::RaftServiceClient;
use proto::rpc::raft_service_server::{RaftService, RaftServiceServer};
use proto::rpc::Payload;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{ClientTlsConfig, Endpoint, Server};
use tonic::{Request, Response, Status};

fn id(role: Role, region: Option<&str>) -> PeerIdentity {
    PeerIdentity {
        role,
        region: region.map(str::to_string),
    }
}

#[test]
fn identity_names_round_trip() {
    assert_eq!(identity_name(Role::Server, "eu"), "server.eu.atoll");
    assert_eq!(identity_name(Role::Client, "eu"), "client.eu.atoll");
    assert_eq!(identity_name(Role::Gateway, "eu"), "gateway.atoll");
    assert_eq!(identity_name(Role::Gateway, ""), "gateway.atoll");
    for (role, region) in [
        (Role::Server, "eu"),
        (Role::Client, "us-east-1"),
        (Role::Server, "global"),
    ] {
        let name = identity_name(role, region);
        assert_eq!(parse_identity_name(&name), Some(id(role, Some(region))));
    }
    assert_eq!(
        parse_identity_name("gateway.atoll"),
        Some(id(Role::Gateway, None))
    );
    assert_eq!(id(Role::Server, Some("eu")).to_string(), "server.eu.atoll");
    assert_eq!(id(Role::Gateway, None).to_string(), "gateway.atoll");
}

#[test]
fn parse_rejects_junk() {
    for junk in [
        "",
        "atoll",
        ".atoll",
        "server.atoll",
        "client.atoll",
        "server..atoll",
        "server.eu",
        "server.eu.nomad",
        "server.eu.atoll.evil.com",
        "server.eu.us.atoll",
        "gateway.eu.atoll",
        "admin.eu.atoll",
        "Server.eu.atoll",
        "server.eu.ATOLL",
        "server.-eu.atoll",
        "server.e_u.atoll",
        "localhost",
        "127.0.0.1",
        "xserver.eu.atoll",
        "gateway.atoll.",
    ] {
        assert_eq!(parse_identity_name(junk), None, "{junk:?} should not parse");
    }
}

#[test]
fn install_crypto_provider_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(install_crypto_provider);
        }
    });
    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}

#[test]
fn dev_ca_issues_certificates_naming_their_identity() {
    let ca = DevCa::generate().expect("generate CA");
    assert!(ca.cert_pem().contains("BEGIN CERTIFICATE"));
    assert!(ca.key_pem().contains("PRIVATE KEY"));
    for (role, region, want) in [
        (Role::Server, "eu", id(Role::Server, Some("eu"))),
        (Role::Client, "us", id(Role::Client, Some("us"))),
        (Role::Gateway, "eu", id(Role::Gateway, None)),
    ] {
        let bundle = ca.issue(role, region).expect("issue");
        assert_eq!(bundle.ca_pem, ca.cert_pem());
        assert_eq!(bundle.own_identity().expect("own identity"), want);
    }
    // A different CA's certificate is a different certificate.
    let other = DevCa::generate().expect("generate CA");
    assert_ne!(other.cert_pem(), ca.cert_pem());
}

#[test]
fn dev_ca_rejects_bad_regions() {
    let ca = DevCa::generate().expect("generate CA");
    for bad in ["", "e.u", "eu.atoll", "-eu"] {
        assert!(
            matches!(ca.issue(Role::Server, bad), Err(TlsError::InvalidRegion(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn dev_ca_from_pem_round_trip_and_checks() {
    let ca = DevCa::generate().expect("generate CA");
    let again = DevCa::from_pem(&ca.cert_pem(), &ca.key_pem()).expect("from_pem");
    assert_eq!(again.cert_pem(), ca.cert_pem());
    // Certificates issued by the reloaded CA chain to the same CA: proven by the
    // mTLS tests below; here check it still issues.
    let bundle = again.issue(Role::Server, "eu").expect("issue");
    assert_eq!(bundle.ca_pem, ca.cert_pem());

    // Key of another CA.
    let other = DevCa::generate().expect("generate CA");
    let err = DevCa::from_pem(&ca.cert_pem(), &other.key_pem()).expect_err("mismatched key");
    assert!(err.to_string().contains("does not match"), "{err}");

    // A leaf is not a CA.
    let err = DevCa::from_pem(&bundle.cert_pem, &bundle.key_pem).expect_err("leaf as CA");
    assert!(err.to_string().contains("not a CA"), "{err}");

    assert!(DevCa::from_pem("junk", &ca.key_pem()).is_err());
    assert!(DevCa::from_pem(&ca.cert_pem(), "junk").is_err());
}

#[test]
fn bundle_write_load_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = DevCa::generate().expect("generate CA");
    let bundle = ca.issue(Role::Client, "eu").expect("issue");
    let sub = dir.path().join("certs");
    let (ca_path, cert_path, key_path) = bundle.write(&sub, "client").expect("write");
    assert_eq!(ca_path, sub.join("ca.pem"));
    assert_eq!(cert_path, sub.join("client.pem"));
    assert_eq!(key_path, sub.join("client-key.pem"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path)
            .expect("stat key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }

    let loaded = CertBundle::load(&ca_path, &cert_path, &key_path).expect("load");
    assert_eq!(loaded.ca_pem, bundle.ca_pem);
    assert_eq!(loaded.cert_pem, bundle.cert_pem);
    assert_eq!(loaded.key_pem, bundle.key_pem);
    assert_eq!(
        loaded.own_identity().expect("identity"),
        id(Role::Client, Some("eu"))
    );

    // Writing again over existing files works and keeps the key private.
    bundle.write(&sub, "client").expect("rewrite");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path)
            .expect("stat key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Debug output never shows the key.
    let debug = format!("{loaded:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn bundle_load_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = DevCa::generate().expect("generate CA");
    let (ca_path, cert_path, key_path) = ca
        .issue(Role::Server, "eu")
        .expect("issue")
        .write(dir.path(), "server")
        .expect("write");

    let missing = dir.path().join("nope.pem");
    let err = CertBundle::load(&ca_path, &missing, &key_path).expect_err("missing");
    assert!(matches!(err, TlsError::Io { .. }));
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").expect("write junk");
    let err = CertBundle::load(&junk, &cert_path, &key_path).expect_err("junk CA");
    assert!(err.to_string().contains("junk.pem"), "{err}");
    let err = CertBundle::load(&ca_path, &cert_path, &junk).expect_err("junk key");
    assert!(err.to_string().contains("junk.pem"), "{err}");
    // A certificate is not a key.
    let err = CertBundle::load(&ca_path, &cert_path, &cert_path).expect_err("cert as key");
    assert!(err.to_string().contains("server.pem"), "{err}");
}

#[test]
fn own_identity_of_a_foreign_certificate_fails() {
    let ca = DevCa::generate().expect("generate CA");
    let bundle = CertBundle {
        ca_pem: ca.cert_pem(),
        // The CA certificate names no identity.
        cert_pem: ca.cert_pem(),
        key_pem: ca.key_pem(),
    };
    let err = bundle.own_identity().expect_err("no identity");
    assert!(err.to_string().contains("no Atoll identity"), "{err}");
}

#[test]
fn dev_ca_load_or_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let created = DevCa::load_or_create(&ca_dir).expect("create");
    assert!(ca_dir.join("ca.pem").exists());
    assert!(ca_dir.join("ca-key.pem").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join("ca-key.pem"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = DevCa::load_or_create(&ca_dir).expect("load");
    assert_eq!(loaded.cert_pem(), created.cert_pem());
    assert_eq!(loaded.key_pem(), created.key_pem());

    std::fs::remove_file(ca_dir.join("ca-key.pem")).expect("rm key");
    let err = DevCa::load_or_create(&ca_dir).expect_err("incomplete");
    assert!(matches!(err, TlsError::IncompleteCa { .. }), "{err}");
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
}

// ---------------------------------------------------------------- mTLS end to end

/// `vote` answers with the caller's identity ("server eu"); `append_entries`
/// first applies `require_peer(allowed, region)`.
struct WhoAmI {
    allowed: Vec<Role>,
    region: &'static str,
}

fn describe(id: &PeerIdentity) -> Payload {
    let text = format!("{} {}", id.role, id.region.as_deref().unwrap_or(""));
    Payload {
        data: text.trim_end().as_bytes().to_vec(),
    }
}

#[tonic::async_trait]
impl RaftService for WhoAmI {
    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let id = peer_identity(&request)?;
        Ok(Response::new(describe(&id)))
    }

    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let id = require_peer(&request, &self.allowed, self.region)?;
        Ok(Response::new(describe(&id)))
    }

    async fn install_snapshot(
        &self,
        _request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves `WhoAmI` on 127.0.0.1:<free port>, with mTLS when `tls` is given.
async fn serve(tls: Option<&CertBundle>, allowed: &[Role], region: &'static str) -> SocketAddr {
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let mut builder = Server::builder();
    if let Some(bundle) = tls {
        builder = builder
            .tls_config(bundle.server_tls_config())
            .expect("server tls config");
    }
    let router = builder.add_service(RaftServiceServer::new(WhoAmI {
        allowed: allowed.to_vec(),
        region,
    }));
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

enum Rpc {
    Vote,
    AppendEntries,
}

/// Connects (with `tls`, or plain when `None`) and makes one call; the reply
/// text, or the failure.
async fn call(addr: SocketAddr, tls: Option<ClientTlsConfig>, rpc: Rpc) -> Result<String, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = RaftServiceClient::new(channel);
    let request = Payload { data: Vec::new() };
    let reply = match rpc {
        Rpc::Vote => client.vote(request).await,
        Rpc::AppendEntries => client.append_entries(request).await,
    }
    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    String::from_utf8(reply.into_inner().data).map_err(|e| e.to_string())
}

#[tokio::test]
async fn mtls_reports_the_callers_identity() {
    let ca = DevCa::generate().expect("CA");
    let server = ca.issue(Role::Server, "eu").expect("server cert");
    let addr = serve(Some(&server), &[Role::Server], "eu").await;

    let peer = ca.issue(Role::Server, "eu").expect("peer cert");
    let got = call(
        addr,
        Some(peer.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("server eu"));

    let client = ca.issue(Role::Client, "eu").expect("client cert");
    let got = call(
        addr,
        Some(client.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("client eu"));

    let gateway = ca.issue(Role::Gateway, "").expect("gateway cert");
    let got = call(
        addr,
        Some(gateway.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("gateway"));
}

#[tokio::test]
async fn mtls_works_with_files_and_a_reloaded_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = DevCa::load_or_create(&dir.path().join("ca")).expect("CA");
    let (c, s, k) = ca
        .issue(Role::Server, "eu")
        .expect("issue")
        .write(dir.path(), "server")
        .expect("write");
    let server = CertBundle::load(&c, &s, &k).expect("load");
    let addr = serve(Some(&server), &[Role::Server], "eu").await;

    // A client certificate from the CA as reloaded from disk.
    let reloaded = DevCa::load_or_create(&dir.path().join("ca")).expect("reload CA");
    let peer = reloaded.issue(Role::Server, "eu").expect("peer cert");
    let got = call(
        addr,
        Some(peer.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("server eu"));
}

/// The server refused the TLS handshake; the call never reached a handler
/// (which would have answered with a gRPC status of its own).
fn assert_rejected_by_tls(err: &str) {
    assert!(
        !err.starts_with("Unauthenticated") && !err.starts_with("PermissionDenied"),
        "rejected by the handler, not by TLS: {err}"
    );
    assert!(
        err.contains("transport error") || err.starts_with("connect"),
        "{err}"
    );
}

#[tokio::test]
async fn mtls_rejects_a_client_of_another_ca() {
    let ca = DevCa::generate().expect("CA");
    let server = ca.issue(Role::Server, "eu").expect("server cert");
    let addr = serve(Some(&server), &[Role::Server], "eu").await;

    // Same name, same CA certificate to verify the server, but our certificate
    // comes from a different CA.
    let rogue_ca = DevCa::generate().expect("rogue CA");
    let mut rogue = rogue_ca.issue(Role::Server, "eu").expect("rogue cert");
    rogue.ca_pem = ca.cert_pem();
    let got = call(
        addr,
        Some(rogue.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    let err = got.expect_err("a foreign certificate was accepted");
    assert_rejected_by_tls(&err);

    // Entirely foreign: does not trust our server either.
    let foreign = rogue_ca.issue(Role::Server, "eu").expect("foreign cert");
    let got = call(
        addr,
        Some(foreign.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    let err = got.expect_err("a foreign CA was accepted");
    assert!(err.contains("InvalidCertificate"), "{err}");

    // And no client certificate at all.
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert_pem()))
        .domain_name("server.eu.atoll");
    let got = call(addr, Some(anonymous), Rpc::Vote).await;
    let err = got.expect_err("a client without certificate was accepted");
    assert_rejected_by_tls(&err);

    // The server still serves its own.
    let peer = ca.issue(Role::Server, "eu").expect("peer cert");
    let got = call(
        addr,
        Some(peer.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("server eu"));
}

#[tokio::test]
async fn mtls_rejects_the_wrong_server_name() {
    let ca = DevCa::generate().expect("CA");
    let server = ca.issue(Role::Server, "eu").expect("server cert");
    let addr = serve(Some(&server), &[Role::Server], "eu").await;
    let peer = ca.issue(Role::Server, "us").expect("peer cert");

    for wrong in ["server.us.atoll", "gateway.atoll", "client.eu.atoll"] {
        let got = call(addr, Some(peer.client_tls_config(wrong)), Rpc::Vote).await;
        let err = got.expect_err("server accepted under a wrong name");
        assert!(err.contains("NotValidForName"), "{wrong}: {err}");
    }
    // The right name works with the same client certificate.
    let got = call(
        addr,
        Some(peer.client_tls_config("server.eu.atoll")),
        Rpc::Vote,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("server us"));
}

#[tokio::test]
async fn require_peer_enforces_role_and_region() {
    let ca = DevCa::generate().expect("CA");
    let server = ca.issue(Role::Server, "eu").expect("server cert");
    let tls = |role, region| {
        ca.issue(role, region)
            .expect("cert")
            .client_tls_config("server.eu.atoll")
    };

    // Raft-like endpoint: only servers of eu.
    let raft = serve(Some(&server), &[Role::Server], "eu").await;
    let got = call(raft, Some(tls(Role::Server, "eu")), Rpc::AppendEntries).await;
    assert_eq!(got.as_deref(), Ok("server eu"));

    let got = call(raft, Some(tls(Role::Server, "us")), Rpc::AppendEntries).await;
    let err = got.expect_err("server.us must not act in eu");
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("server.us.atoll"), "{err}");

    for (role, region) in [
        (Role::Client, "eu"),
        (Role::Client, "us"),
        (Role::Gateway, ""),
    ] {
        let got = call(raft, Some(tls(role, region)), Rpc::AppendEntries).await;
        let err = got.expect_err("only servers");
        assert!(
            err.starts_with("PermissionDenied"),
            "{role:?} {region}: {err}"
        );
    }

    // Client RPC: only clients of eu.
    let client_rpc = serve(Some(&server), &[Role::Client], "eu").await;
    let got = call(
        client_rpc,
        Some(tls(Role::Client, "eu")),
        Rpc::AppendEntries,
    )
    .await;
    assert_eq!(got.as_deref(), Ok("client eu"));
    let got = call(
        client_rpc,
        Some(tls(Role::Client, "us")),
        Rpc::AppendEntries,
    )
    .await;
    let err = got.expect_err("client.us must not act in eu");
    assert!(
        err.starts_with("PermissionDenied") && err.contains("client.us.atoll"),
        "{err}"
    );

    // Forwarded requests: gateways (any region) or servers of eu.
    let forward = serve(Some(&server), &[Role::Gateway, Role::Server], "eu").await;
    let got = call(forward, Some(tls(Role::Gateway, "")), Rpc::AppendEntries).await;
    assert_eq!(got.as_deref(), Ok("gateway"));
    let got = call(forward, Some(tls(Role::Server, "eu")), Rpc::AppendEntries).await;
    assert_eq!(got.as_deref(), Ok("server eu"));
    let got = call(forward, Some(tls(Role::Server, "us")), Rpc::AppendEntries).await;
    assert!(got.is_err(), "{got:?}");
}

#[tokio::test]
async fn plaintext_requests_are_unauthenticated() {
    let addr = serve(None, &[Role::Server], "eu").await;
    let err = call(addr, None, Rpc::Vote).await.expect_err("no TLS");
    assert!(err.starts_with("Unauthenticated"), "{err}");
    let err = call(addr, None, Rpc::AppendEntries)
        .await
        .expect_err("no TLS");
    assert!(err.starts_with("Unauthenticated"), "{err}");
}
