//! Remote sessions against the fake platform and the real GAS relay (`thingport_gas`): the
//! default allow-list (the Thing's `endpoints` property), `--allow`, `--disable-remote-access`,
//! the cap on sessions, and `endSession` closing the tunnel and the connections it carries.

use crate::common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thingport_gas::{EndCause, EventKind, KeyCell, Relay, RelayConfig, SessionEvent};
use thingport_protocol::control::{codes, requests, AgentMessage, ErrorInfo, PlatformMessage};
use thingport_protocol::tunnel::{self, Grant, Role as Side};
use thingport_tunnel::{Mux, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const GAS_KEY: &[u8] = b"agent-session-test-key-32-bytes!";
const GAS_NAME: &str = "gas-1";
const THING: &str = "gw-1";

/// An echo server; each connection's end is reported on the receiver.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended, ended_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = ended.send(());
            });
        }
    });
    (addr, ended_rx)
}

struct Gas {
    addr: SocketAddr,
    relay: Arc<Relay>,
}

async fn gas() -> Gas {
    let keys = Arc::new(KeyCell::new(GAS_NAME));
    keys.set(GAS_KEY);
    let relay = Relay::new(keys, RelayConfig::default(), None).unwrap();
    let listener = thingport_gas::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(relay.clone().serve(listener, std::future::pending()));
    Gas { addr, relay }
}

static NONCE: AtomicU64 = AtomicU64::new(1);

fn credential(session: &str, role: Side) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let grant = Grant {
        session: session.into(),
        role,
        gas: GAS_NAME.into(),
        exp: now + 60_000,
        nonce: format!("n-{}", NONCE.fetch_add(1, Ordering::Relaxed)),
    };
    tunnel::sign(&grant, GAS_KEY)
}

fn start_session(id: u64, session: &str, gas: SocketAddr, host: &str, port: u16) -> Cmd {
    Cmd::Send(PlatformMessage::Request {
        id,
        thing: THING.into(),
        name: requests::START_SESSION.into(),
        body: json!({"session": session, "gasUrl": format!("http://{gas}"),
                     "credential": credential(session, Side::Agent),
                     "endpoint": {"name": "echo", "host": host, "port": port}}),
    })
}

fn end_session(session: &str) -> Cmd {
    Cmd::Send(PlatformMessage::Message {
        thing: THING.into(),
        name: requests::END_SESSION.into(),
        body: json!({ "session": session }),
    })
}

fn accepted(response: &AgentMessage) -> bool {
    matches!(response, AgentMessage::Response { result: Some(r), error: None, .. }
        if *r == json!({"accepted": true}))
}

fn error(response: &AgentMessage) -> ErrorInfo {
    match response {
        AgentMessage::Response { error: Some(e), .. } => e.clone(),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// A platform whose `gw-1` defines `rows`, and an agent (configured by `tweak`) bound to it.
async fn setup(
    rows: &[(&str, &str, u16)],
    tweak: impl FnOnce(&mut thingport_agent::AgentConfig),
) -> (FakePlatform, Agent, usize) {
    let mut behaviour = Behaviour::default();
    behaviour.endpoints.insert(THING.into(), endpoints(rows));
    let platform = FakePlatform::start(behaviour).await;
    let mut c = config(&platform.http_url(), &[THING]);
    tweak(&mut c);
    let agent = Agent::start(c);
    let conn = platform.connected(1).await;
    agent.logs.wait_for_line(&["bound Thing gw-1"]).await;
    (platform, agent, conn)
}

/// Waits for a session event of `session` matching `f`.
async fn gas_event(
    events: &mut broadcast::Receiver<SessionEvent>,
    session: &str,
    mut f: impl FnMut(&EventKind) -> bool,
) -> EventKind {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching GAS event for {session}"))
            .unwrap();
        if &*event.session == session && f(&event.kind) {
            return event.kind;
        }
    }
}

/// The client side of `session`: a multiplexer on the GAS and one carried connection, returned
/// as the socket the test talks through.
async fn client_connection(gas: SocketAddr, session: &str) -> TcpStream {
    let mut req = format!("ws://{gas}{}", tunnel::PATH)
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {}", credential(session, Side::Client));
    let headers = req.headers_mut();
    headers.insert("Authorization", HeaderValue::from_str(&bearer).unwrap());
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (mux, run) = Mux::start(ws, Role::Client);
    tokio::spawn(run);
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = TcpStream::connect(local.local_addr().unwrap())
        .await
        .unwrap();
    let (theirs, _) = local.accept().await.unwrap();
    tokio::spawn(async move {
        let _ = mux.carry(theirs).await;
    });
    ours
}

#[tokio::test]
async fn end_session_closes_the_tunnel_and_every_connection_it_carries() {
    let (echo, mut echo_ended) = echo_server().await;
    let gas = gas().await;
    let mut events = gas.relay.events();
    let (platform, agent, conn) = setup(&[("echo", "127.0.0.1", echo.port())], |_| {}).await;

    platform
        .send(
            conn,
            start_session(7, "s-end", gas.addr, "127.0.0.1", echo.port()),
        )
        .await;
    let answer = platform.response(conn, 7).await;
    assert!(accepted(&answer), "{answer:?}");
    agent
        .logs
        .wait_for_line(&["remote session attached to the GAS", "s-end"])
        .await;

    // A connection through the tunnel reaches the endpoint and back.
    let mut c = client_connection(gas.addr, "s-end").await;
    gas_event(&mut events, "s-end", |k| *k == EventKind::Started).await;
    c.write_all(b"hello through the tunnel").await.unwrap();
    let mut back = [0u8; 24];
    tokio::time::timeout(DEADLINE, c.read_exact(&mut back))
        .await
        .expect("the echo answers")
        .unwrap();
    assert_eq!(&back, b"hello through the tunnel");

    platform.send(conn, end_session("s-end")).await;
    // The agent closed its side normally: the relay saw the agent close first.
    let ended = gas_event(&mut events, "s-end", |k| {
        matches!(k, EventKind::Ended { .. })
    })
    .await;
    assert!(
        matches!(
            &ended,
            EventKind::Ended {
                cause: EndCause::Closed(Side::Agent),
                ..
            }
        ),
        "{ended:?}"
    );
    // The endpoint's connection is closed by the agent ...
    tokio::time::timeout(DEADLINE, echo_ended.recv())
        .await
        .expect("the endpoint connection is closed")
        .unwrap();
    // ... and so is the client's, through the tunnel.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, c.read_to_end(&mut rest))
        .await
        .expect("the carried connection ends");

    let line = agent
        .logs
        .wait_for_line(&["remote session ended by the platform", "s-end"])
        .await;
    assert!(line.contains("by=\"platform\""), "{line}");
    agent
        .logs
        .wait_for_line(&["session slot released", "s-end"])
        .await;

    // Unknown (and already ended) sessions are ignored with a debug line.
    platform.send(conn, end_session("s-end")).await;
    agent
        .logs
        .wait_for_line(&["DEBUG", "ignoring endSession", "s-end"])
        .await;
    let logs = agent.logs.text();
    assert!(!logs.contains(APP_KEY), "the key was logged");
    assert!(!logs.contains("v1."), "a credential was logged");
    agent.stop().await.unwrap();
}

/// A fake GAS that accepts one agent side and reports the close frame (code, reason) it gets.
// The handshake callback's error type is tungstenite's `ErrorResponse`, large by its nature.
#[allow(clippy::result_large_err)]
async fn fake_gas() -> (SocketAddr, mpsc::UnboundedReceiver<Option<(u16, String)>>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let callback = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
            );
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(frame) = m {
                let _ = closed_tx.send(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
        }
    });
    (addr, closed_rx)
}

#[tokio::test]
async fn the_close_reason_is_ended_by_the_platform() {
    let (gas_addr, mut closed_rx) = fake_gas().await;
    let (platform, agent, conn) = setup(&[("ssh", "127.0.0.1", 22)], |_| {}).await;
    platform
        .send(
            conn,
            start_session(1, "s-reason", gas_addr, "127.0.0.1", 22),
        )
        .await;
    assert!(accepted(&platform.response(conn, 1).await));
    agent
        .logs
        .wait_for_line(&["remote session attached to the GAS", "s-reason"])
        .await;
    platform.send(conn, end_session("s-reason")).await;
    let frame = tokio::time::timeout(DEADLINE, closed_rx.recv())
        .await
        .expect("a close frame")
        .unwrap();
    assert_eq!(frame, Some((1000, "ended by the platform".to_string())));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn the_default_allow_list_is_the_things_endpoints_property() {
    let gas = gas().await;
    let (platform, agent, conn) = setup(
        &[("ssh", "Gateway.Example", 22), ("vnc", "127.0.0.1", 5900)],
        |_| {},
    )
    .await;

    // Present (the host compared without case) → accepted.
    platform
        .send(
            conn,
            start_session(1, "s-ok", gas.addr, "gateway.example", 22),
        )
        .await;
    let answer = platform.response(conn, 1).await;
    assert!(accepted(&answer), "{answer:?}");
    let requests = platform.http_requests();
    assert_eq!(
        requests,
        [Event::Http {
            method: "GET".into(),
            path: "/Thingworx/Things/gw-1/Properties/endpoints".into(),
            app_key: Some(APP_KEY.into()),
            accept: Some("application/json".into()),
            status: 200,
        }]
    );
    agent
        .logs
        .wait_for_line(&["remote session accepted", "s-ok", "endpoint ssh"])
        .await;

    // Absent (same host, other port) → denied, naming the endpoint and what the Thing defines.
    platform
        .send(conn, start_session(2, "s-no", gas.addr, "127.0.0.1", 23))
        .await;
    let e = error(&platform.response(conn, 2).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(
        e.message.contains("127.0.0.1:23")
            && e.message.contains("not among the endpoints of Thing gw-1")
            && e.message.contains("vnc 127.0.0.1:5900"),
        "{e:?}"
    );
    agent
        .logs
        .wait_for_line(&["WARN", "remote session denied", "s-no", "127.0.0.1:23"])
        .await;

    // The read fails (403) → denied with the platform's reason.
    platform.behaviour(|b| {
        b.endpoints_error = Some((
            403,
            "Not authorized for PropertyRead on endpoints in gw-1".into(),
        ))
    });
    platform
        .send(conn, start_session(3, "s-403", gas.addr, "127.0.0.1", 5900))
        .await;
    let e = error(&platform.response(conn, 3).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(
        e.message.contains("could not be verified")
            && e.message.contains("HTTP 403")
            && e.message
                .contains("Not authorized for PropertyRead on endpoints in gw-1")
            && e.message
                .contains("the key's user lacks PropertyRead on endpoints"),
        "{e:?}"
    );

    // A Thing without the property (404) → denied too.
    platform.behaviour(|b| {
        b.endpoints_error = None;
        b.endpoints.clear();
    });
    platform
        .send(conn, start_session(4, "s-404", gas.addr, "127.0.0.1", 5900))
        .await;
    let e = error(&platform.response(conn, 4).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(e.message.contains("HTTP 404"), "{e:?}");

    // The control channel kept working meanwhile, and nothing secret was logged.
    assert!(!agent.logs.text().contains(APP_KEY));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_platform_that_does_not_answer_the_read_denies_within_the_timeout() {
    let (platform, agent, conn) = setup(&[], |c| {
        c.endpoints_timeout = Duration::from_millis(300);
    })
    .await;
    platform.behaviour(|b| b.endpoints_hang = true);
    let gas = closed_port().await;
    platform
        .send(conn, start_session(1, "s-hang", gas, "127.0.0.1", 22))
        .await;
    // Pings and other requests are answered while the read hangs.
    platform
        .send(
            conn,
            Cmd::Send(PlatformMessage::Request {
                id: 2,
                thing: THING.into(),
                name: requests::PING.into(),
                body: json!({}),
            }),
        )
        .await;
    platform.response(conn, 2).await;
    let e = error(&platform.response(conn, 1).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(
        e.message.contains("could not be verified") && e.message.contains("no answer"),
        "{e:?}"
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn allow_and_disable_remote_access_decide_without_asking_the_platform() {
    let gas = gas().await;
    let (platform, agent, conn) = setup(&[("ssh", "127.0.0.1", 22)], |c| {
        c.allow = vec![thingport_agent::config::parse_endpoint("127.0.0.1:2222").unwrap()];
    })
    .await;
    platform
        .send(
            conn,
            start_session(1, "s-allow", gas.addr, "127.0.0.1", 2222),
        )
        .await;
    assert!(accepted(&platform.response(conn, 1).await));
    // On the Thing's endpoints, but not on --allow: --allow is the whole list.
    platform
        .send(conn, start_session(2, "s-not", gas.addr, "127.0.0.1", 22))
        .await;
    let e = error(&platform.response(conn, 2).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(e.message.contains("--allow"), "{e:?}");
    assert!(platform.http_requests().is_empty());
    agent.stop().await.unwrap();

    let (platform, agent, conn) = setup(&[("ssh", "127.0.0.1", 22)], |c| {
        c.disable_remote_access = true;
    })
    .await;
    platform
        .send(conn, start_session(1, "s-off", gas.addr, "127.0.0.1", 22))
        .await;
    let e = error(&platform.response(conn, 1).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(e.message.contains("--disable-remote-access"), "{e:?}");
    assert!(platform.http_requests().is_empty());
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_are_capped_and_slots_come_back() {
    let gas = gas().await;
    let mut events = gas.relay.events();
    let (platform, agent, conn) = setup(&[("ssh", "127.0.0.1", 22)], |c| {
        c.max_sessions = 1;
    })
    .await;
    platform
        .send(conn, start_session(1, "s-1", gas.addr, "127.0.0.1", 22))
        .await;
    assert!(accepted(&platform.response(conn, 1).await));
    // The same id again is refused as a duplicate, not as one too many.
    platform
        .send(conn, start_session(2, "s-1", gas.addr, "127.0.0.1", 22))
        .await;
    let e = error(&platform.response(conn, 2).await);
    assert_eq!(e.code, codes::FAILED);
    assert!(e.message.contains("already running"), "{e:?}");
    platform
        .send(conn, start_session(3, "s-2", gas.addr, "127.0.0.1", 22))
        .await;
    let e = error(&platform.response(conn, 3).await);
    assert_eq!(e.code, codes::SESSION_DENIED);
    assert!(e.message.contains("too many sessions"), "{e:?}");

    // Ending the first frees its slot.
    gas_event(&mut events, "s-1", |k| {
        *k == EventKind::SideAttached(Side::Agent)
    })
    .await;
    platform.send(conn, end_session("s-1")).await;
    agent
        .logs
        .wait_for_line(&["session slot released", "s-1"])
        .await;
    platform
        .send(conn, start_session(4, "s-3", gas.addr, "127.0.0.1", 22))
        .await;
    assert!(accepted(&platform.response(conn, 4).await));

    // Shutting the agent down ends the live session: its side closes at the GAS.
    gas_event(&mut events, "s-3", |k| {
        *k == EventKind::SideAttached(Side::Agent)
    })
    .await;
    let logs = agent.logs.clone();
    agent.stop().await.unwrap();
    gas_event(&mut events, "s-3", |k| matches!(k, EventKind::Ended { .. })).await;
    assert!(
        logs.count(&["remote session ended: agent shutting down", "s-3"]) == 1,
        "{}",
        logs.text()
    );
}
