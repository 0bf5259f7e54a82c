//! TLS to the platform: a throwaway CA made with `openssl`, the fake platform serving TLS with
//! tokio-rustls, and the agent trusting the CA with --ca-file (or not).

use crate::common::*;
use crate::proxy::Proxy;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use thingport_agent::tls::load_ca_file;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject};

/// Makes a throwaway CA and a leaf certificate for 127.0.0.1/localhost in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (install it: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Thingport test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

fn server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

struct Tls {
    dir: tempfile::TempDir,
    platform: FakePlatform,
}

async fn tls_platform() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let platform = FakePlatform::start_tls(Behaviour::default(), server_config(dir.path())).await;
    Tls { dir, platform }
}

#[tokio::test]
async fn connects_over_tls_when_the_ca_file_is_trusted() {
    let Tls { dir, platform } = tls_platform().await;
    let mut cfg = config(&format!("https://{}", platform.addr), &["gw"]);
    cfg.tls.extra_roots = load_ca_file(&dir.path().join("ca.pem")).unwrap();
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn refuses_an_untrusted_certificate_and_keeps_retrying() {
    let Tls {
        dir: _dir,
        platform,
    } = tls_platform().await;
    let agent = Agent::start(config(&format!("https://{}", platform.addr), &["gw"]));
    let line = agent
        .logs
        .wait_for_line(&["WARN", "connection failed", "TLS handshake", "certificate"])
        .await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    agent
        .logs
        .wait_for_line(&["connection{attempt=2", "certificate"])
        .await;
    platform
        .wait_for("a failed TLS handshake at the platform", |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::TlsFailed { .. }))
                .then_some(())
        })
        .await;
    assert!(!platform
        .events()
        .iter()
        .any(|e| matches!(e, Event::Connected { .. } | Event::Upgrade { .. })));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn insecure_skips_verification_with_a_loud_warning() {
    let Tls {
        dir: _dir,
        platform,
    } = tls_platform().await;
    let mut cfg = config(&format!("https://{}", platform.addr), &["gw"]);
    cfg.tls.insecure = true;
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    agent
        .logs
        .wait_for_line(&["WARN", "certificates are NOT verified"])
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn tls_by_host_name_through_a_proxy() {
    let Tls { dir, platform } = tls_platform().await;
    let proxy = Proxy::start(None).await;
    let mut cfg = config(
        &format!("https://localhost:{}", platform.addr.port()),
        &["gw"],
    );
    cfg.tls.extra_roots = load_ca_file(&dir.path().join("ca.pem")).unwrap();
    cfg.proxy = Some(proxy.url(""));
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    let requests = proxy.requests.lock().unwrap().clone();
    let expected = format!("CONNECT localhost:{} HTTP/1.1\r\n", platform.addr.port());
    assert!(requests[0].starts_with(&expected), "{requests:?}");
    agent.stop().await.unwrap();
}
