//! The control channel against the fake platform: hello, binds, requests, liveness, reconnects
//! and shutdown.

use crate::common::*;
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thingport_agent::AGENT_NAME_VERSION;
use thingport_protocol::control::{codes, AgentMessage, ErrorInfo, PlatformMessage};

fn request(id: u64, thing: &str, name: &str) -> Cmd {
    Cmd::Send(PlatformMessage::Request {
        id,
        thing: thing.into(),
        name: name.into(),
        body: json!({}),
    })
}

fn error_code(response: &AgentMessage) -> Option<&str> {
    match response {
        AgentMessage::Response {
            error: Some(ErrorInfo { code, .. }),
            result: None,
            ..
        } => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn binds_every_thing_after_hello_and_welcome() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let agent = Agent::start(config(&platform.http_url(), &["pump-1", "pump-2"]));
    let conn = platform.connected(1).await;
    agent
        .logs
        .wait_for_line(&["INFO", "bound Thing pump-1"])
        .await;
    agent
        .logs
        .wait_for_line(&["INFO", "bound Thing pump-2"])
        .await;

    let events = platform.events();
    assert!(
        events.contains(&Event::Upgrade {
            conn,
            status: 101,
            app_key: Some(APP_KEY.into()),
            protocols: Some("thingport.v1".into()),
        }),
        "{events:#?}"
    );
    let received: Vec<AgentMessage> = events
        .iter()
        .filter_map(|e| match e {
            Event::Received { conn: c, message } if *c == conn => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        received,
        [
            AgentMessage::Hello {
                agent: format!("thingport-agent/{}", env!("CARGO_PKG_VERSION"))
            },
            AgentMessage::Bind {
                id: 1,
                thing: "pump-1".into()
            },
            AgentMessage::Bind {
                id: 2,
                thing: "pump-2".into()
            },
        ]
    );
    assert!(!agent.logs.text().contains(APP_KEY), "the key was logged");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn answers_requests_and_survives_malformed_messages() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let agent = Agent::start(config(&platform.http_url(), &["gw"]));
    let conn = platform.connected(1).await;
    agent.logs.wait_for_line(&["bound Thing gw"]).await;

    platform.send(conn, Cmd::SendText("not json".into())).await;
    platform
        .send(conn, Cmd::SendText(r#"{"type":"launchMissiles"}"#.into()))
        .await;
    platform.send(conn, request(7, "gw", "ping")).await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    match platform.response(conn, 7).await {
        AgentMessage::Response {
            result: Some(result),
            error: None,
            ..
        } => {
            assert_eq!(result["agent"], AGENT_NAME_VERSION);
            let time = result["time"].as_u64().expect("time in ms");
            assert!(time.abs_diff(now_ms) < 60_000, "{result}");
        }
        other => panic!("unexpected answer {other:?}"),
    }
    assert_eq!(
        agent.logs.count(&["WARN", "ignoring a malformed message"]),
        2
    );

    platform.send(conn, request(8, "not-mine", "ping")).await;
    assert_eq!(
        error_code(&platform.response(conn, 8).await),
        Some(codes::NOT_BOUND)
    );
    platform.send(conn, request(9, "gw", "reboot")).await;
    assert_eq!(
        error_code(&platform.response(conn, 9).await),
        Some(codes::UNKNOWN_REQUEST)
    );

    platform
        .send(
            conn,
            Cmd::Send(PlatformMessage::Message {
                thing: "gw".into(),
                name: "notice".into(),
                body: json!({"x": 1}),
            }),
        )
        .await;
    platform
        .send(
            conn,
            Cmd::Send(PlatformMessage::Error {
                code: codes::MALFORMED.into(),
                message: "what was that".into(),
            }),
        )
        .await;
    platform.send(conn, request(10, "gw", "ping")).await;
    platform.response(conn, 10).await;
    assert_eq!(
        agent
            .logs
            .count(&["DEBUG", "message from the platform", "notice"]),
        1
    );
    assert_eq!(
        agent
            .logs
            .count(&["WARN", "reported an error", "what was that"]),
        1
    );
    // Still the first connection.
    assert!(!platform
        .events()
        .iter()
        .any(|e| matches!(e, Event::Connected { conn: 2 })));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn reconnects_after_the_platform_drops_or_closes_the_connection() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let agent = Agent::start(config(&platform.http_url(), &["gw"]));
    let first = platform.connected(1).await;
    platform.binds(first, "gw", 1).await;
    platform.send(first, Cmd::Drop).await;

    let second = platform.connected(2).await;
    assert_ne!(first, second);
    assert_eq!(
        platform.binds(second, "gw", 1).await,
        [1],
        "ids start again per connection"
    );
    agent
        .logs
        .wait_for_line(&["WARN", "connection lost", "retry_in"])
        .await;

    platform
        .send(second, Cmd::Close(1008, "policy".into()))
        .await;
    let third = platform.connected(3).await;
    platform.binds(third, "gw", 1).await;
    agent
        .logs
        .wait_for_line(&["connection lost", "code 1008: policy"])
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_bind_is_retried_on_the_same_connection() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    platform.behaviour(|b| {
        b.refuse_binds.insert("gw".into(), 1);
    });
    let mut cfg = config(&platform.http_url(), &["gw", "other"]);
    cfg.bind_retry_interval = Duration::from_millis(200);
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    let ids = platform.binds(conn, "gw", 2).await;
    assert!(ids[1] > ids[0], "{ids:?}");
    let line = agent
        .logs
        .wait_for_line(&["ERROR", "refused to bind Thing gw"])
        .await;
    assert!(
        line.contains("DISABLED") && line.contains("Thing 'gw' is disabled"),
        "{line}"
    );
    agent.logs.wait_for_line(&["bound Thing gw"]).await;
    agent.logs.wait_for_line(&["bound Thing other"]).await;
    assert_eq!(platform.binds(conn, "other", 1).await.len(), 1);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn too_many_things_is_not_retried_on_the_same_connection() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    platform.behaviour(|b| {
        b.refuse_binds.insert("gw".into(), 1);
        b.refuse_code = codes::TOO_MANY_THINGS.into();
    });
    let mut cfg = config(&platform.http_url(), &["gw", "x"]);
    cfg.bind_retry_interval = Duration::from_millis(100);
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    agent
        .logs
        .wait_for_line(&["ERROR", "TOO_MANY_THINGS", "not retried on this connection"])
        .await;
    agent.logs.wait_for_line(&["bound Thing x"]).await;
    // A GONE for x is retried after 100 ms; by then gw would have been retried too.
    platform
        .send(
            conn,
            Cmd::Send(PlatformMessage::Unbound {
                id: None,
                thing: "x".into(),
                code: codes::GONE.into(),
                reason: "gone".into(),
            }),
        )
        .await;
    platform.binds(conn, "x", 2).await;
    assert_eq!(platform.binds(conn, "gw", 1).await.len(), 1);
    platform.send(conn, Cmd::Drop).await;
    let next = platform.connected(2).await;
    platform.binds(next, "gw", 1).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_replaced_thing_is_not_rebound_until_the_next_connection_and_gone_is_retried() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let mut cfg = config(&platform.http_url(), &["a", "b"]);
    cfg.bind_retry_interval = Duration::from_millis(100);
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    agent.logs.wait_for_line(&["bound Thing a"]).await;
    agent.logs.wait_for_line(&["bound Thing b"]).await;

    let unbound = |thing: &str, code: &str, reason: &str| {
        Cmd::Send(PlatformMessage::Unbound {
            id: None,
            thing: thing.into(),
            code: code.into(),
            reason: reason.into(),
        })
    };
    platform
        .send(conn, unbound("a", codes::REPLACED, "bound from 10.0.0.2"))
        .await;
    agent
        .logs
        .wait_for_line(&[
            "WARN",
            "Thing a is now served by another agent: bound from 10.0.0.2",
        ])
        .await;
    platform.send(conn, request(1, "a", "ping")).await;
    assert_eq!(
        error_code(&platform.response(conn, 1).await),
        Some(codes::NOT_BOUND)
    );

    platform
        .send(conn, unbound("b", codes::GONE, "Thing 'b' was disabled"))
        .await;
    assert_eq!(platform.binds(conn, "b", 2).await.len(), 2);
    platform.send(conn, request(2, "b", "ping")).await;
    assert_eq!(error_code(&platform.response(conn, 2).await), None);
    assert_eq!(
        platform.binds(conn, "a", 1).await.len(),
        1,
        "a was bound again"
    );

    platform.send(conn, Cmd::Drop).await;
    let next = platform.connected(2).await;
    platform.binds(next, "a", 1).await;
    platform.binds(next, "b", 1).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn an_http_error_at_the_upgrade_is_logged_and_retried() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    platform.behaviour(|b| b.reject_401 = 2);
    let agent = Agent::start(config(&platform.http_url(), &["gw"]));
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    let rejected = platform
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Upgrade { status: 401, .. }))
        .count();
    assert_eq!(rejected, 2);
    let needles = [
        "ERROR",
        "refused the connection",
        "status=401",
        "unknown or expired application key",
    ];
    agent.logs.wait_for_line(&needles).await;
    assert_eq!(agent.logs.count(&needles), 2);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_retried_forever_without_being_logged() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.app_key = thingport_agent::AppKey::new("wrong-key-42").unwrap();
    let agent = Agent::start(cfg);
    platform
        .wait_for("three refused upgrades", |events| {
            (events
                .iter()
                .filter(|e| matches!(e, Event::Upgrade { status: 401, .. }))
                .count()
                >= 3)
                .then_some(())
        })
        .await;
    assert!(!platform
        .events()
        .iter()
        .any(|e| matches!(e, Event::Connected { .. })));
    assert!(!agent.logs.text().contains("wrong-key-42"));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn pings_flow_both_ways() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    platform.behaviour(|b| b.ping_interval_ms = 100);
    let agent = Agent::start(config(&platform.http_url(), &["gw"]));
    let conn = platform.connected(1).await;
    platform
        .wait_for("two pings from the agent", |events| {
            (events
                .iter()
                .filter(|e| matches!(e, Event::Ping { conn: c } if *c == conn))
                .count()
                >= 2)
                .then_some(())
        })
        .await;
    platform.send(conn, Cmd::Ping).await;
    platform
        .wait_for("the agent's pong", |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::Pong { conn: c } if *c == conn))
                .then_some(())
        })
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_platform_is_dropped_after_the_idle_timeout() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.idle_timeout = Duration::from_millis(500);
    let agent = Agent::start(cfg);
    let first = platform.connected(1).await;
    platform.binds(first, "gw", 1).await;
    platform.send(first, Cmd::Freeze).await;
    let second = platform.connected(2).await;
    assert_ne!(first, second);
    agent
        .logs
        .wait_for_line(&["connection lost", "nothing received from the platform"])
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn no_welcome_means_a_new_connection() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    platform.behaviour(|b| b.send_welcome = false);
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.welcome_timeout = Duration::from_millis(300);
    let agent = Agent::start(cfg);
    platform.connected(2).await;
    agent
        .logs
        .wait_for_line(&["connection failed", "no welcome"])
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_ends_the_connection_not_the_agent() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let agent = Agent::start(config(&platform.http_url(), &["gw"]));
    let first = platform.connected(1).await;
    platform.binds(first, "gw", 1).await;
    let big = format!(
        r#"{{"type":"message","thing":"gw","name":"n","body":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    platform.send(first, Cmd::SendText(big)).await;
    let second = platform.connected(2).await;
    platform.binds(second, "gw", 1).await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_sends_close_1000_and_returns() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let agent = Agent::start(config(&platform.http_url(), &["gw"]));
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    let started = Instant::now();
    agent.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let events = platform.events();
    assert!(
        events.contains(&Event::Closed {
            conn,
            code: Some(1000),
            reason: "agent shutting down".into()
        }),
        "{events:#?}"
    );
}

#[tokio::test]
async fn shutdown_waits_briefly_for_a_platform_that_does_not_answer_the_close() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let mut cfg = config(&platform.http_url(), &["gw"]);
    cfg.close_timeout = Duration::from_millis(300);
    let agent = Agent::start(cfg);
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw", 1).await;
    platform.send(conn, Cmd::Freeze).await;
    let started = Instant::now();
    agent.stop().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn shutdown_interrupts_the_backoff() {
    let addr = closed_port().await;
    let mut cfg = config(&format!("http://{addr}"), &["gw"]);
    cfg.min_backoff = Duration::from_secs(60);
    cfg.max_backoff = Duration::from_secs(60);
    let agent = Agent::start(cfg);
    let line = agent
        .logs
        .wait_for_line(&["WARN", "connection failed", "retry_in"])
        .await;
    assert!(line.contains("cannot connect to 127.0.0.1"), "{line}");
    let started = Instant::now();
    agent.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}
