//! `wss`: the relay behind a rustls acceptor (throwaway CA made with `openssl`).

mod common;

use common::*;
use std::sync::Arc;
use thingport_gas::Role;
use thingport_protocol::tunnel::{self, Kind};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn attach_wss(gas: &Gas, tls: &TlsConnector, session: &str, role: Role) -> Wss {
    let tcp = TcpStream::connect(gas.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tls.connect(name, tcp).await.expect("TLS handshake");
    let mut request = format!("wss://127.0.0.1:{}{}", gas.addr.port(), tunnel::PATH)
        .into_client_request()
        .unwrap();
    let token = token(session, role);
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
    );
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(request, stream))
        .await
        .unwrap()
        .expect("upgrade over TLS");
    ws
}

#[tokio::test]
async fn sessions_pair_and_relay_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let acceptor =
        thingport_gas::tls::acceptor(&dir.path().join("gas.pem"), &dir.path().join("gas.key"))
            .unwrap();
    let gas = Gas::start_with(quick(), Some(acceptor)).await;
    gas.keys.set(KEY);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(dir.path().join("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config));

    let s = session_id("tls");
    let mut client = attach_wss(&gas, &tls, &s, Role::Client).await;
    let mut agent = attach_wss(&gas, &tls, &s, Role::Agent).await;
    let big = frame(Kind::Data, 1, &vec![0xa5; tunnel::MAX_DATA]);
    send(&mut client, big.clone()).await;
    assert_eq!(recv(&mut agent).await, big);
    send(&mut agent, frame(Kind::Credit, 1, &65_536u32.to_be_bytes())).await;
    assert_eq!(
        recv(&mut client).await,
        frame(Kind::Credit, 1, &65_536u32.to_be_bytes())
    );

    // Plain WebSocket is not served on a TLS listener.
    let plain = tokio_tungstenite::connect_async(gas.url(tunnel::PATH)).await;
    assert!(plain.is_err());
}

#[test]
fn unusable_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = thingport_gas::tls::acceptor(&missing, &missing)
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    let e = thingport_gas::tls::acceptor(&dir.path().join("empty.pem"), &missing)
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("no certificate found"), "{e}");
}
