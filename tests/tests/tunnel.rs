//! The tunnel path below RemoteAccessExtension: the platform orders the real agent (through the
//! real server and CSE) to start a session on a GAS relay (the library, keyed by the test); the agent attaches with
//! its credential and dials the endpoint per tunnelled connection; a client multiplexer carries
//! eight concurrent connections through the GAS, byte-exact. The session order is refused
//! (SESSION_DENIED) with --disable-remote-access and for an endpoint outside --allow.

use futures_util::StreamExt;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thingport_e2e::fleet::{wait_connected, Fleet};
use thingport_e2e::{now_ms, Agent};
use thingport_gas::{KeyCell, Relay, RelayConfig};
use thingport_protocol::tunnel::{self, Grant, Role as Side};
use thingport_tunnel::{Mux, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const KEY: &[u8] = b"an-e2e-test-key-of-32-bytes-long";

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn gas() -> SocketAddr {
    let keys = Arc::new(KeyCell::new("gas-1"));
    keys.set(KEY);
    let relay = Relay::new(keys, RelayConfig::default(), None).unwrap();
    let listener = thingport_gas::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(relay.serve(listener, std::future::pending()));
    addr
}

fn credential(session: &str, role: Side) -> String {
    tunnel::sign(
        &Grant {
            session: session.into(),
            role,
            gas: "gas-1".into(),
            exp: now_ms() + 60_000,
            nonce: format!("{session}-{role:?}"),
        },
        KEY,
    )
}

async fn order(f: &Fleet, gas: SocketAddr, target: SocketAddr) -> thingport_e2e::Resp {
    f.admin
        .call(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "SendMessage",
            json!({
                "thingName": "gw-1",
                "name": "startSession",
                "waitForReply": true,
                "body": {
                    "session": "s-1",
                    "gasUrl": format!("http://{gas}"),
                    "credential": credential("s-1", Side::Agent),
                    "endpoint": {"name": "echo", "host": "127.0.0.1", "port": target.port()},
                },
            }),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_connections_through_agent_and_gas_are_byte_exact() {
    let f = Fleet::start(&["gw-1"]).await;
    let (gas, echo) = (gas().await, echo_server().await);
    // A plain RemoteThing has no endpoints property: the agent is told what it may dial.
    let allow = echo.to_string();
    let _agent = Agent::start(&f.url(), &f.key, &["gw-1"], &["--allow", &allow]);
    wait_connected(&f.admin, "gw-1", true, Duration::from_secs(15)).await;
    let r = order(&f, gas, echo).await.ok();
    assert_eq!(r.row()["result"], json!({"accepted": true}), "{}", r.text);

    // The client side: its own credential, a multiplexer, a local listener.
    let mut req = format!("ws://{gas}{}", tunnel::PATH)
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {}", credential("s-1", Side::Client));
    req.headers_mut()
        .insert("Authorization", HeaderValue::from_str(&bearer).unwrap());
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (client, run) = Mux::start(ws, Role::Client);
    tokio::spawn(run);
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = local.accept().await {
            let c = client.clone();
            tokio::spawn(async move {
                let _ = c.carry(s).await;
            });
        }
    });
    let results = futures_util::stream::iter(0..8)
        .map(|i| async move {
            let data: Vec<u8> = (0..256 * 1024 + i * 131)
                .map(|b| (b * 7 + i) as u8)
                .collect();
            let s = TcpStream::connect(local_addr).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&sent).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            back == data
        })
        .buffer_unordered(8)
        .collect::<Vec<bool>>();
    let results = tokio::time::timeout(Duration::from_secs(60), results)
        .await
        .expect("8 connections within 60 s");
    assert!(results.iter().all(|ok| *ok), "{results:?}");
}

#[tokio::test]
async fn the_agent_denies_sessions_it_may_not_serve() {
    let f = Fleet::start(&["gw-1"]).await;
    let (gas, echo) = (gas().await, echo_server().await);
    for extra in [
        &["--disable-remote-access"][..],
        &["--allow", "127.0.0.1:1"][..],
    ] {
        let agent = Agent::start(&f.url(), &f.key, &["gw-1"], extra);
        wait_connected(&f.admin, "gw-1", true, Duration::from_secs(15)).await;
        order(&f, gas, echo)
            .await
            .expect_error(422, "SESSION_DENIED");
        drop(agent);
        wait_connected(&f.admin, "gw-1", false, Duration::from_secs(15)).await;
    }
}
