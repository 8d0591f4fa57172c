//! A region server's HTTP API over TLS, as an operator reaches it with the
//! real `atoll` CLI and its TLS flags: answered to a client that trusts the
//! cluster CA and presents a certificate of it; refused without the
//! certificate (client verification on), to a client that does not trust
//! the CA, and over plain HTTP.

use std::path::Path;
use std::time::{Duration, Instant};

use atoll_tests::workspace_binary;
use ops_kit::tls::{DevCa, Role};
use region_server::config::HttpsSettings;
use region_server::{RegionServer, ServerConfig};

use atoll_tests::CliOut as Out;

async fn atoll(bin: &Path, args: &[&str]) -> Out {
    atoll_tests::run_cli(bin, None, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_over_tls_with_client_certificates() {
    let _serial = atoll_tests::serial().await;
    ops_kit::tls::install_crypto_provider();
    let bin = workspace_binary("atoll", "atoll").expect("build atoll");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = DevCa::generate().expect("CA");
    let server_cert = ca.issue(Role::Server, "global").expect("server cert");
    let mut cfg = ServerConfig::dev("s1", "global", dir.path().join("s1"), server_cert);
    cfg.https = Some(HttpsSettings {
        verify_clients: true,
    });
    let server = RegionServer::start(cfg).await.expect("server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.service.is_leader() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ca_file, cert, key) = ca
        .issue(Role::Client, "global")
        .expect("client cert")
        .write(&dir.path().join("tls"), "cli")
        .expect("write certs");
    let (ca_file, cert, key) = (
        ca_file.to_str().expect("utf-8").to_string(),
        cert.to_str().expect("utf-8").to_string(),
        key.to_str().expect("utf-8").to_string(),
    );
    let https = format!("https://{}", server.http_addr);

    // Trusting the CA and presenting a certificate of it: answered.
    let out = atoll(
        &bin,
        &[
            "operator",
            "raft",
            "list-peers",
            "-address",
            &https,
            "-ca-cert",
            &ca_file,
            "-client-cert",
            &cert,
            "-client-key",
            &key,
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("leader"), "{out}");

    // No client certificate: the handshake is refused.
    let out = atoll(
        &bin,
        &[
            "server", "members", "-address", &https, "-ca-cert", &ca_file,
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");

    // Not trusting the cluster CA: the server is not believed.
    let other = DevCa::generate().expect("other CA");
    let (other_ca, other_cert, other_key) = other
        .issue(Role::Client, "global")
        .expect("foreign cert")
        .write(&dir.path().join("other"), "cli")
        .expect("write certs");
    let out = atoll(
        &bin,
        &[
            "server",
            "members",
            "-address",
            &https,
            "-ca-cert",
            other_ca.to_str().expect("utf-8"),
            "-client-cert",
            other_cert.to_str().expect("utf-8"),
            "-client-key",
            other_key.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");

    // Plain HTTP to the TLS port gets no answer.
    let out = atoll(
        &bin,
        &[
            "server",
            "members",
            "-address",
            &format!("http://{}", server.http_addr),
        ],
    )
    .await;
    assert_eq!(out.code, 1, "{out}");

    server.shutdown().await;
}
