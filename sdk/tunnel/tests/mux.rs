//! Two multiplexers over a real loopback WebSocket (the GAS relays frames unchanged, so this is
//! the end-to-end stream behaviour), the agent dialling a real TCP echo server.

use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thingport_tunnel::{Closed, Dial, Mux, Options, Role, TunnelError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

type ClientWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;
type AgentWs = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Two ends of a loopback WebSocket: the client's and the agent's.
async fn ws_pair() -> (ClientWs, AgentWs) {
    let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    let agent_side = tokio::spawn(async move {
        let (s, _) = ws_listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(s).await.unwrap()
    });
    let (client_ws, _) = tokio_tungstenite::connect_async(format!("ws://{ws_addr}/tunnel"))
        .await
        .unwrap();
    (client_ws, agent_side.await.unwrap())
}

/// A client mux and an agent mux joined by a WebSocket; the agent dials `target`. Returns the
/// address of a local listener whose connections the client carries through the tunnel.
async fn tunnel_to(dial: Dial) -> (SocketAddr, Mux) {
    let (client_ws, agent_ws) = ws_pair().await;
    let (_agent, run_agent) = Mux::start(agent_ws, Role::Agent { dial });
    tokio::spawn(run_agent);
    let (client, run_client) = Mux::start(client_ws, Role::Client);
    tokio::spawn(run_client);
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let carrier = client.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = local.accept().await {
            let c = carrier.clone();
            tokio::spawn(async move {
                let _ = c.carry(s).await;
            });
        }
    });
    (local_addr, client)
}

fn dial_to(target: SocketAddr) -> Dial {
    Arc::new(move || Box::pin(TcpStream::connect(target)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_connections_are_byte_exact_both_ways() {
    let echo = echo_server().await;
    let (local, _client) = tunnel_to(dial_to(echo)).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut data = vec![0u8; 2 * 1024 * 1024 + i * 977];
            rand::thread_rng().fill_bytes(&mut data);
            let s = TcpStream::connect(local).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&sent).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::with_capacity(data.len());
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            assert_eq!(back.len(), data.len(), "connection {i}");
            assert!(back == data, "connection {i}: bytes differ");
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("8 connections within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_does_not_stall_its_sibling() {
    let echo = echo_server().await;
    let (local, _client) = tunnel_to(dial_to(echo)).await;
    // A: writes far more than every buffer on the way can hold, and never reads its echo.
    let stalled = TcpStream::connect(local).await.unwrap();
    let (_stalled_r, mut stalled_w) = stalled.into_split();
    let pushed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = pushed.clone();
    let pusher = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..4096 {
            if stalled_w.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Wait (under a deadline) until A is stuck: no progress for 300 ms.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, Instant::now());
    loop {
        let now = pushed.load(std::sync::atomic::Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never stalled ({now} bytes pushed)"
        );
        assert!(
            !pusher.is_finished(),
            "A pushed 256 MiB without being stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B: 50 ping-pongs of 64 bytes, each well under a second.
    let mut b = TcpStream::connect(local).await.unwrap();
    let msg = [42u8; 64];
    let mut buf = [0u8; 64];
    let started = Instant::now();
    for i in 0..50 {
        let one = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), async {
            b.write_all(&msg).await.unwrap();
            b.read_exact(&mut buf).await.unwrap();
        })
        .await
        .unwrap_or_else(|_| panic!("round trip {i} stalled behind the stalled sibling"));
        assert_eq!(buf, msg);
        assert!(one.elapsed() < Duration::from_secs(1));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !pusher.is_finished(),
        "A was expected to be blocked by flow control"
    );
    pusher.abort();
}

#[tokio::test]
async fn a_failed_dial_is_reported_to_the_client() {
    let refused: Dial = Arc::new(|| {
        Box::pin(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused by 127.0.0.1:9",
            ))
        })
    });
    let (local_addr, client) = tunnel_to(refused).await;
    let _ = local_addr;
    // Carry a socket directly to see the error.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let _peer = TcpStream::connect(a).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    match client.carry(s).await {
        Err(TunnelError::OpenFailed(reason)) => assert!(reason.contains("refused"), "{reason}"),
        other => panic!("expected OpenFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn any_byte_stream_can_be_carried_and_half_closed() {
    let echo = echo_server().await;
    let (_local, client) = tunnel_to(dial_to(echo)).await;
    // As `connect --stdio` does with stdin and stdout: a pair of halves that are not a socket.
    let (ours, theirs) = tokio::io::duplex(4096);
    let carried = tokio::spawn(async move { client.carry_io(theirs).await });
    let (mut r, mut w) = tokio::io::split(ours);
    let data: Vec<u8> = (0..300 * 1024).map(|b| (b % 253) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap(); // EOF: FIN, the echo comes back, then the peer's FIN
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut back))
        .await
        .expect("the echo and the FIN within 20 s")
        .unwrap();
    writer.await.unwrap();
    assert!(back == data, "bytes differ");
    tokio::time::timeout(Duration::from_secs(5), carried)
        .await
        .expect("carry returns once both directions ended")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn close_ends_the_tunnel_and_the_peer_sees_the_reason() {
    let (client_ws, agent_ws) = ws_pair().await;
    let (_agent, run_agent) = Mux::start(
        agent_ws,
        Role::Agent {
            dial: dial_to(echo_server().await),
        },
    );
    let agent = tokio::spawn(run_agent);
    let (client, run_client) = Mux::start(client_ws, Role::Client);
    let client_run = tokio::spawn(run_client);
    client.close("the user ended the session").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent's tunnel ends")
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        Some(Closed {
            code: 1000,
            reason: "the user ended the session".into()
        })
    );
    tokio::time::timeout(Duration::from_secs(10), client_run)
        .await
        .expect("the client's tunnel ends when the close is answered")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_silent_peer_ends_the_tunnel_after_the_idle_timeout() {
    let (client_ws, _agent_ws) = ws_pair().await; // the agent end never sends anything
    let idle = Duration::from_millis(200);
    let options = Options {
        idle_timeout: Some(idle),
    };
    let (_client, run) = Mux::start_with(client_ws, Role::Client, options);
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Err(TunnelError::Idle(d))) => assert_eq!(d, idle),
        other => panic!("expected Idle, got {other:?}"),
    }
}
