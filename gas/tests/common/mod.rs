//! The test harness: a relay on `127.0.0.1:0`, credentials signed with a test key, WebSocket
//! clients for both sides, and waits with deadlines.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thingport_gas::{EventKind, KeyCell, Relay, RelayConfig, Role, SessionEvent};
use thingport_protocol::tunnel::{self, Grant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
pub const GAS: &str = "gas-test";
/// How long any single expectation may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A relay serving on a loopback port.
pub struct Gas {
    pub addr: SocketAddr,
    pub relay: Arc<Relay>,
    pub keys: Arc<KeyCell>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Gas {
    /// A registered relay (its key set).
    pub async fn start(config: RelayConfig) -> Gas {
        let gas = Gas::start_without_key(config).await;
        gas.keys.set(KEY);
        gas
    }

    pub async fn start_without_key(config: RelayConfig) -> Gas {
        Gas::start_with(config, None).await
    }

    pub async fn start_with(config: RelayConfig, tls: Option<tokio_rustls::TlsAcceptor>) -> Gas {
        let keys = Arc::new(KeyCell::new(GAS));
        let relay = Relay::new(keys.clone(), config, tls).expect("valid config");
        let listener = thingport_gas::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Gas {
            addr,
            relay,
            keys,
            stop: Some(stop),
            task,
        }
    }

    /// Starts the graceful shutdown; [`Gas::stopped`] waits for its end.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (with a deadline) until `serve` returned.
    pub async fn stopped(self) {
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

static NONCE: AtomicU64 = AtomicU64::new(1);

/// A grant for this test GAS, valid for 60 s, with a fresh nonce.
pub fn grant(session: &str, role: Role) -> Grant {
    Grant {
        session: session.into(),
        role,
        gas: GAS.into(),
        exp: now_ms() + 60_000,
        nonce: format!(
            "n-{}-{}",
            std::process::id(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        ),
    }
}

pub fn token(session: &str, role: Role) -> String {
    tunnel::sign(&grant(session, role), KEY)
}

/// A session id unique in this test process.
pub fn session_id(name: &str) -> String {
    format!("{name}-{}", NONCE.fetch_add(1, Ordering::Relaxed))
}

/// An upgrade the relay refused: status and the `error` of the JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub error: String,
}

/// Opens a WebSocket to `url` with an optional bearer token, offering our subprotocol or not.
pub async fn open(url: &str, token: Option<&str>, subprotocol: bool) -> Result<Ws, Refused> {
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    if let Some(token) = token {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    if subprotocol {
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
        );
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(DEADLINE, connect)
        .await
        .expect("the handshake finishes")
    {
        Ok((ws, response)) => {
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                tunnel::SUBPROTOCOL_V1
            );
            Ok(ws)
        }
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json: serde_json::Value =
                serde_json::from_slice(&body).expect("refusals carry a JSON body");
            Err(Refused {
                status: response.status().as_u16(),
                error: json["error"].as_str().expect("an error string").to_owned(),
            })
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// Attaches one side of `session` with a fresh credential.
pub async fn attach(gas: &Gas, session: &str, role: Role) -> Ws {
    open(&gas.url(tunnel::PATH), Some(&token(session, role)), true)
        .await
        .unwrap_or_else(|r| panic!("{role:?} of {session} refused: {r:?}"))
}

/// Attaches both sides (client first) and waits until the session started.
pub async fn pair(gas: &Gas, session: &str) -> (Ws, Ws) {
    let mut events = gas.relay.events();
    let client = attach(gas, session, Role::Client).await;
    let agent = attach(gas, session, Role::Agent).await;
    wait_event(&mut events, session, |k| *k == EventKind::Started).await;
    (client, agent)
}

/// A frame: header and payload.
pub fn frame(kind: tunnel::Kind, stream: u32, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(tunnel::HEADER_LEN + payload.len());
    tunnel::write_frame(&mut out, kind, stream, payload);
    Bytes::from(out)
}

pub async fn send<S>(ws: &mut WebSocketStream<S>, bytes: Bytes)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(DEADLINE, ws.send(Message::Binary(bytes)))
        .await
        .expect("send in time")
        .expect("send");
}

/// The next binary message (pings and pongs skipped).
pub async fn recv<S>(ws: &mut WebSocketStream<S>) -> Bytes
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time");
        match next {
            Some(Ok(Message::Binary(b))) => return b,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// Reads until the relay's close frame (data still in flight is skipped), answers it, and
/// sees the connection end.
pub async fn closed<S>(ws: &mut WebSocketStream<S>) -> CloseFrame
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("closed in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                read_to_end(ws).await;
                return frame;
            }
            Some(Ok(Message::Close(None))) => panic!("a close without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// After a close frame: reading on sends tungstenite's reply and sees the connection end, as a
/// real side does.
pub async fn read_to_end<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let end = tokio::time::timeout(DEADLINE, ws.next()).await;
    assert!(
        matches!(end, Ok(None | Some(Err(_)))),
        "after the close: {end:?}"
    );
}

/// Waits for the event of `session` that `pred` accepts; earlier ones are skipped.
pub async fn wait_event(
    events: &mut broadcast::Receiver<SessionEvent>,
    session: &str,
    pred: impl Fn(&EventKind) -> bool,
) -> EventKind {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let e = events.recv().await.expect("events flow");
            if &*e.session == session && pred(&e.kind) {
                return e.kind;
            }
        }
    })
    .await
    .expect("the event in time")
}

/// Waits until `cond` holds, polling.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A short configuration for tests.
pub fn quick() -> RelayConfig {
    RelayConfig {
        close_timeout: Duration::from_secs(2),
        ..RelayConfig::default()
    }
}

/// Makes a throwaway CA and a leaf certificate for 127.0.0.1 in `dir`.
pub fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
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
        "/CN=GAS test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "gas.key",
        "-out",
        "gas.csr",
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
        "gas.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "gas.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}
