//! Pairing, relaying, closing, keepalive and shutting down, over real sockets.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use thingport_gas::{EndCause, EventKind, RelayConfig, Role};
use thingport_protocol::tunnel::{self, Kind};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A payload whose every byte depends on its position (a misplaced byte shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[tokio::test]
async fn pairs_the_sides_and_relays_frames_byte_exact_both_ways() {
    let gas = Gas::start(quick()).await;
    let mut events = gas.relay.events();
    let s = session_id("relay");
    let mut client = attach(&gas, &s, Role::Client).await;
    assert_eq!(
        wait_event(&mut events, &s, |_| true).await,
        EventKind::SideAttached(Role::Client)
    );
    assert_eq!((gas.relay.sessions(), gas.relay.waiting()), (0, 1));
    let mut agent = attach(&gas, &s, Role::Agent).await;
    assert_eq!(
        wait_event(&mut events, &s, |_| true).await,
        EventKind::SideAttached(Role::Agent)
    );
    assert_eq!(
        wait_event(&mut events, &s, |_| true).await,
        EventKind::Started
    );
    assert_eq!((gas.relay.sessions(), gas.relay.waiting()), (1, 0));

    let up = [
        frame(Kind::Open, 1, &[]),
        frame(Kind::Data, 1, &pattern(tunnel::MAX_DATA, 1)),
        frame(Kind::Data, 1, b"x"),
        frame(Kind::Credit, 1, &65_536u32.to_be_bytes()),
        frame(Kind::Fin, 1, &[]),
        frame(Kind::Open, 2, &[]),
    ];
    let down = [
        frame(Kind::Opened, 1, &[]),
        frame(Kind::Data, 1, &pattern(1000, 7)),
        frame(Kind::Data, 1, &pattern(tunnel::MAX_DATA, 9)),
        frame(Kind::OpenFailed, 2, b"connection refused"),
        frame(Kind::Reset, 1, b"done"),
    ];
    // Both directions at once, each side sending and then reading.
    tokio::join!(
        async {
            for f in &up {
                send(&mut client, f.clone()).await;
            }
            for f in &down {
                assert_eq!(&recv(&mut client).await, f, "agent to client");
            }
        },
        async {
            for f in &down {
                send(&mut agent, f.clone()).await;
            }
            for f in &up {
                assert_eq!(&recv(&mut agent).await, f, "client to agent");
            }
        }
    );
}

#[tokio::test]
async fn closing_one_side_closes_the_other_and_reports_the_bytes() {
    let gas = Gas::start(quick()).await;
    let mut events = gas.relay.events();
    let s = session_id("close");
    let (mut client, mut agent) = pair(&gas, &s).await;
    send(&mut client, frame(Kind::Data, 1, &[1; 300])).await;
    send(&mut client, frame(Kind::Open, 2, &[])).await;
    send(&mut agent, frame(Kind::Data, 1, &[2; 4000])).await;
    recv(&mut agent).await;
    recv(&mut agent).await;
    recv(&mut client).await;
    // The agent's last frame is sent just before its close: it still arrives, then the close.
    send(&mut agent, frame(Kind::Data, 1, &[3; 21])).await;
    agent.close(None).await.unwrap();
    assert_eq!(recv(&mut client).await, frame(Kind::Data, 1, &[3; 21]));
    let close = closed(&mut client).await;
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "the agent side closed");
    let ended = wait_event(&mut events, &s, |k| matches!(k, EventKind::Ended { .. })).await;
    let EventKind::Ended {
        cause,
        bytes_up,
        bytes_down,
        ..
    } = ended
    else {
        unreachable!()
    };
    assert_eq!(cause, EndCause::Closed(Role::Agent));
    assert_eq!((bytes_up, bytes_down), (300, 4021));
    until("the session is gone", || gas.relay.sessions() == 0).await;
}

#[tokio::test]
async fn frames_sent_before_the_other_side_attaches_are_delivered() {
    let gas = Gas::start(quick()).await;
    let s = session_id("early");
    let mut client = attach(&gas, &s, Role::Client).await;
    send(&mut client, frame(Kind::Open, 1, &[])).await;
    send(&mut client, frame(Kind::Data, 1, b"hello")).await;
    let mut agent = attach(&gas, &s, Role::Agent).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Open, 1, &[]));
    assert_eq!(recv(&mut agent).await, frame(Kind::Data, 1, b"hello"));
}

#[tokio::test]
async fn a_lone_side_is_closed_when_its_partner_does_not_attach() {
    let gas = Gas::start(RelayConfig {
        pairing_timeout: Duration::from_millis(300),
        ..quick()
    })
    .await;
    let mut events = gas.relay.events();
    let s = session_id("lone");
    let started = std::time::Instant::now();
    let mut agent = attach(&gas, &s, Role::Agent).await;
    let close = closed(&mut agent).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "the other side did not attach");
    let ended = wait_event(&mut events, &s, |k| matches!(k, EventKind::Ended { .. })).await;
    assert!(matches!(
        ended,
        EventKind::Ended {
            cause: EndCause::NotPaired,
            duration_ms: 0,
            ..
        }
    ));
    assert_eq!(gas.relay.waiting(), 0);
}

#[tokio::test]
async fn an_invalid_frame_closes_its_sender_with_1002_and_ends_the_session() {
    let gas = Gas::start(quick()).await;
    let mut events = gas.relay.events();
    let s = session_id("invalid");
    let (mut client, mut agent) = pair(&gas, &s).await;
    // Stream 0 does not exist.
    send(&mut client, Bytes::from_static(&[4, 0, 0, 0, 0, 1])).await;
    let close = closed(&mut client).await;
    assert_eq!(close.code, CloseCode::Protocol);
    assert!(close.reason.contains("stream 0"), "{}", close.reason);
    let close = closed(&mut agent).await;
    assert_eq!(close.code, CloseCode::Away);
    let ended = wait_event(&mut events, &s, |k| matches!(k, EventKind::Ended { .. })).await;
    assert!(
        matches!(&ended, EventKind::Ended { cause: EndCause::Protocol(Role::Client, why), .. } if why.contains("stream 0")),
        "{ended:?}"
    );
}

#[tokio::test]
async fn text_messages_are_refused_with_1003() {
    let gas = Gas::start(quick()).await;
    let s = session_id("text");
    let (mut client, mut agent) = pair(&gas, &s).await;
    agent.send(Message::text("hello")).await.unwrap();
    assert_eq!(closed(&mut agent).await.code, CloseCode::Unsupported);
    assert_eq!(closed(&mut client).await.code, CloseCode::Away);
}

#[tokio::test]
async fn a_message_larger_than_a_frame_is_refused_with_1009() {
    let gas = Gas::start(quick()).await;
    let s = session_id("big");
    let (mut client, mut agent) = pair(&gas, &s).await;
    let too_big = frame(Kind::Data, 1, &vec![0; tunnel::MAX_DATA + 1]);
    client.send(Message::Binary(too_big)).await.unwrap();
    assert_eq!(closed(&mut client).await.code, CloseCode::Size);
    assert_eq!(closed(&mut agent).await.code, CloseCode::Away);
}

/// Reads for `quiet` (nothing but pings may arrive); the number of pings.
async fn pings_during(ws: &mut Ws, quiet: Duration) -> usize {
    let mut n = 0;
    let end = tokio::time::timeout(quiet, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => n += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(end.is_err());
    n
}

#[tokio::test]
async fn keepalive_keeps_quiet_sides_and_drops_a_silent_one() {
    let idle = Duration::from_millis(400);
    let gas = Gas::start(RelayConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: idle,
        ..quick()
    })
    .await;
    let mut events = gas.relay.events();
    let s = session_id("keepalive");
    let (mut client, mut agent) = pair(&gas, &s).await;

    // Both sides send nothing for three idle timeouts, but they read, so tungstenite answers
    // the relay's pings: the session lives.
    let (client_pings, agent_pings) = tokio::join!(
        pings_during(&mut client, 3 * idle),
        pings_during(&mut agent, 3 * idle)
    );
    assert!(
        client_pings >= 5 && agent_pings >= 5,
        "{client_pings} {agent_pings}"
    );
    assert_eq!(gas.relay.sessions(), 1);

    // Now the agent stops reading: it answers nothing and is dropped after the idle timeout.
    let close = closed(&mut client).await;
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "the agent side was lost");
    let ended = wait_event(&mut events, &s, |k| matches!(k, EventKind::Ended { .. })).await;
    assert!(matches!(
        ended,
        EventKind::Ended {
            cause: EndCause::Silent(Role::Agent),
            ..
        }
    ));
    drop(agent);
}

#[tokio::test]
async fn shutdown_closes_lone_sides_at_once_and_live_sessions_after_the_drain() {
    let mut gas = Gas::start(RelayConfig {
        drain: Duration::from_millis(300),
        ..quick()
    })
    .await;
    let mut events = gas.relay.events();
    let s = session_id("shutdown");
    let (mut client, mut agent) = pair(&gas, &s).await;
    let lone = session_id("shutdown-lone");
    let mut waiting = attach(&gas, &lone, Role::Client).await;
    let addr = gas.addr;

    let started = std::time::Instant::now();
    gas.shutdown();
    let close = closed(&mut waiting).await;
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason.as_str(), "GAS shutting down");
    assert!(started.elapsed() < Duration::from_millis(300));
    // The live session still relays during the drain.
    send(&mut client, frame(Kind::Data, 1, b"still here")).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Data, 1, b"still here"));
    for ws in [&mut client, &mut agent] {
        let close = closed(ws).await;
        assert_eq!(close.code, CloseCode::Away);
        assert_eq!(close.reason.as_str(), "GAS shutting down");
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let ended = wait_event(&mut events, &s, |k| matches!(k, EventKind::Ended { .. })).await;
    assert!(matches!(
        ended,
        EventKind::Ended {
            cause: EndCause::Shutdown,
            bytes_up: 10,
            ..
        }
    ));
    gas.stopped().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_stalled_reader_does_not_stop_other_sessions() {
    let gas = Gas::start(quick()).await;
    // Session A: the agent never reads, so everything the client sends piles up in the socket
    // buffers and the relay's queue until the client is held back.
    let a = session_id("stalled");
    let (client_a, agent_a) = pair(&gas, &a).await;
    let (mut a_tx, _a_rx) = client_a.split();
    let flood = tokio::spawn(async move {
        let data = frame(Kind::Data, 1, &vec![0x5a; tunnel::MAX_DATA]);
        // Blocks for good at some point (backpressure); the test ends it.
        while a_tx.send(Message::Binary(data.clone())).await.is_ok() {}
    });
    // Session B, concurrently: ping-pong frames flow.
    let b = session_id("flowing");
    let (mut client_b, mut agent_b) = pair(&gas, &b).await;
    for i in 1..=50u32 {
        let f = frame(Kind::Data, i, &i.to_be_bytes());
        send(&mut client_b, f.clone()).await;
        assert_eq!(recv(&mut agent_b).await, f);
        send(&mut agent_b, f.clone()).await;
        assert_eq!(recv(&mut client_b).await, f);
    }
    // A bulk transfer on B still goes through.
    let big = frame(Kind::Data, 99, &pattern(tunnel::MAX_DATA, 3));
    for _ in 0..64 {
        send(&mut client_b, big.clone()).await;
        assert_eq!(recv(&mut agent_b).await, big);
    }
    flood.abort();
    drop(agent_a);
}
