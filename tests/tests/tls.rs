//! TLS on the API listener: a client that trusts the platform's CA gets answers over HTTPS; one
//! that does not is refused at the handshake; plain HTTP to the TLS port gets no answer; a
//! half-configured or broken TLS set-up stops the server at start with a one-line reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thingport_e2e::certs::make_certs;
use thingport_e2e::{run_binary, Server, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

fn client_config(trusted: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots.add(c.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Sends one HTTP/1.1 request over TLS and returns the whole response text.
async fn https_get(
    server: &Server,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timed out reading the response"))??;
    Ok(out)
}

fn tls_server(dir: &Path) -> Server {
    Server::start(ServerOptions {
        extra_args: vec![
            "--tls-cert".into(),
            dir.join("server.pem").display().to_string(),
            "--tls-key".into(),
            dir.join("server.key").display().to_string(),
        ],
        ..ServerOptions::default()
    })
}

#[tokio::test]
async fn https_is_served_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let server = tls_server(dir.path());
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.path().join("ca.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();

    let ok = https_get(&server, client_config(&ca), "/healthz")
        .await
        .expect("HTTPS request with the CA trusted");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"status\":\"ok\""), "{ok}");

    // Authentication still applies over TLS.
    let anon = https_get(&server, client_config(&ca), "/Thingworx/Things")
        .await
        .unwrap();
    assert!(anon.starts_with("HTTP/1.1 401"), "{anon}");

    // A client that does not trust the CA is refused at the handshake.
    let err = https_get(&server, client_config(&[]), "/healthz")
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr()).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP must not be served on the TLS port"
    );
}

#[test]
fn broken_tls_configuration_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let ca_key = dir.path().join("ca.key");
    let (cert, key, ca_key) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        ca_key.to_str().unwrap(),
    );

    // A certificate without a key.
    let r = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--tls-cert",
            cert,
        ],
        Duration::from_secs(30),
    );
    assert!(!r.status.success());
    assert!(r.stderr.contains("--tls-key"), "{}", r.stderr);

    // A key that does not belong to the certificate.
    let r = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--admin-password",
            "adminpass1",
            "--tls-cert",
            cert,
            "--tls-key",
            ca_key,
        ],
        Duration::from_secs(30),
    );
    assert!(!r.status.success());
    let line = r.stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("thingport-server:") && line.contains("key"),
        "{}",
        r.stderr
    );

    // A missing file.
    let r = run_binary(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            key,
        ],
        Duration::from_secs(30),
    );
    assert!(!r.status.success());
    assert!(r.stderr.contains("/nonexistent.pem"), "{}", r.stderr);
}
