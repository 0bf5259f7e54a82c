//! The device control channel end to end: the real server imports the real
//! ConnectionServicesExtension package, and a raw `thingport.v1` client (one that can misbehave)
//! connects over a real WebSocket. Agent-process behaviour (reconnects, restarts, network cuts)
//! is in `agent.rs`.

use serde_json::json;
use std::time::{Duration, Instant};
use thingport_e2e::control::{ControlClient, Ended};
use thingport_e2e::fleet::{add_device, is_connected, wait_connected, Fleet};
use thingport_e2e::{now_ms, wait_until, Server};
use thingport_protocol::control::{codes, AgentMessage, PlatformMessage, SUBPROTOCOL_V1};
use tokio_tungstenite::tungstenite::Message;

async fn fleet(things: &[&str]) -> Fleet {
    Fleet::start(things).await
}

#[tokio::test]
async fn bind_marks_connected_ping_round_trips_and_close_marks_disconnected() {
    let f = fleet(&["pump-1"]).await;
    let before = now_ms();
    let mut c = ControlClient::greeted(f.server.addr(), &f.key).await;
    assert!(matches!(
        c.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    wait_connected(&f.admin, "pump-1", true, Duration::from_secs(5)).await;
    let last = f.admin.get_property("pump-1", "lastConnection").await.ok();
    assert!(last.row()["lastConnection"].as_i64().unwrap() >= before - 1000);

    // Ping goes to the device and back: answer the request by hand.
    let admin = f.admin.clone();
    let ping = tokio::spawn(async move { admin.call("Things", "pump-1", "Ping", json!({})).await });
    let (id, name) = match c.recv().await.expect("a request") {
        PlatformMessage::Request {
            id, thing, name, ..
        } => {
            assert_eq!(thing, "pump-1");
            (id, name)
        }
        other => panic!("expected a request, got {other:?}"),
    };
    assert_eq!(name, "ping");
    c.send(&AgentMessage::Response {
        id,
        result: Some(json!({"agent": "raw/1", "time": 42})),
        error: None,
    })
    .await;
    let r = ping.await.unwrap().ok();
    let answer = &r.row()["result"];
    assert_eq!(answer["agent"], json!("raw/1"), "{}", r.text);
    assert!(answer["roundTripMs"].as_f64().unwrap() >= 0.0);

    // SendMessage with waitForReply: an agent error comes back as 422 naming the code.
    let admin = f.admin.clone();
    let send = tokio::spawn(async move {
        admin
            .call(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "SendMessage",
                json!({"thingName": "pump-1", "name": "reboot", "waitForReply": true, "timeoutMs": 5000}),
            )
            .await
    });
    let PlatformMessage::Request { id, .. } = c.recv().await.expect("a request") else {
        panic!("expected a request")
    };
    c.send(&AgentMessage::Response {
        id,
        result: None,
        error: Some(thingport_protocol::control::ErrorInfo::new(
            codes::UNKNOWN_REQUEST,
            "no such request",
        )),
    })
    .await;
    send.await.unwrap().expect_error(422, "UNKNOWN_REQUEST");

    // GetConnectedThings names the Thing, its user and the agent.
    let r = f
        .admin
        .call(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "GetConnectedThings",
            json!({}),
        )
        .await
        .ok();
    let rows = r.row()["result"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{}", r.text);
    assert_eq!(rows[0]["thing"], json!("pump-1"));
    assert_eq!(rows[0]["user"], json!("device"));

    drop(c);
    wait_connected(&f.admin, "pump-1", false, Duration::from_secs(5)).await;
    f.admin
        .call("Things", "pump-1", "Ping", json!({}))
        .await
        .expect_error(503, "not connected");
}

#[tokio::test]
async fn the_upgrade_refuses_bad_credentials_and_subprotocols() {
    let f = fleet(&["pump-1"]).await;
    let addr = f.server.addr();
    let r = ControlClient::connect_with(addr, None, &[SUBPROTOCOL_V1])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let r = ControlClient::connect_with(
        addr,
        Some("11111111-2222-3333-4444-555555555555"),
        &[SUBPROTOCOL_V1],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    // A key that expires: once the REST API refuses it, so does the upgrade.
    let short = f
        .admin
        .create_app_key("short-key", "device", Some(now_ms() + 1_500))
        .await
        .ok();
    let k = short.row()["keyId"].as_str().unwrap().to_string();
    let with_key = f.server.with_app_key(&k);
    wait_until(
        Duration::from_secs(10),
        "the short key has expired",
        || async { with_key.get("/Thingworx/Things").await.status == 401 },
    )
    .await;
    let r = ControlClient::connect_with(addr, Some(&k), &[SUBPROTOCOL_V1])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);
    // A browser's session cookie is not a credential here, and nothing with an Origin gets in.
    let (_, cookie) = f.admin.login().await;
    let cookie = format!("thingport_session={}", cookie.expect("a session cookie"));
    let r =
        ControlClient::connect_with_headers(addr, None, &[SUBPROTOCOL_V1], &[("cookie", &cookie)])
            .await
            .err()
            .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    let r = ControlClient::connect_with_headers(
        addr,
        Some(&f.key),
        &[SUBPROTOCOL_V1],
        &[("origin", "https://evil.example")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Origin"), "{}", r.body);
    let r = ControlClient::connect_with(addr, Some(&f.key), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("thingport.v1"), "{}", r.body);
    let r = ControlClient::connect_with(addr, Some(&f.key), &["mqtt"])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    // Secrets never appear in what the server answers or logs.
    assert!(!r.body.contains(&f.key));
}

#[tokio::test]
async fn without_the_extension_there_is_no_control_channel() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_user("device", "Device-Password-1").await.ok();
    let key = admin.new_app_key("k", "device").await;
    let r = ControlClient::connect_with(server.addr(), Some(&key), &[SUBPROTOCOL_V1])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("ConnectionServicesExtension"), "{}", r.body);
}

#[tokio::test]
async fn binds_are_refused_with_a_reason() {
    let f = fleet(&["pump-1"]).await;
    f.admin.create_thing("plain", "GenericThing").await.ok();
    f.admin
        .grant_visibility("Things", "plain", "Everyone")
        .await
        .ok();
    add_device(&f.admin, "off").await;
    f.admin
        .call("Things", "off", "DisableThing", json!({}))
        .await
        .ok();
    f.admin.create_thing("secret", "RemoteThing").await.ok();
    f.admin.create_thing("readonly", "RemoteThing").await.ok();
    f.admin
        .grant_visibility("Things", "readonly", "Everyone")
        .await
        .ok();
    let mut c = ControlClient::greeted(f.server.addr(), &f.key).await;
    for (thing, code) in [
        ("missing", codes::NOT_FOUND),
        ("plain", codes::NOT_REMOTE_THING),
        ("off", codes::DISABLED),
        ("secret", codes::NOT_FOUND),
        ("readonly", codes::FORBIDDEN),
    ] {
        match c.bind(thing).await {
            PlatformMessage::BindRefused {
                code: got, reason, ..
            } => {
                assert_eq!(got, code, "{thing}: {reason}");
                assert!(reason.contains(thing), "{reason}");
            }
            other => panic!("{thing}: expected a refusal, got {other:?}"),
        }
    }
    // The connection still works after refusals.
    assert!(matches!(
        c.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    assert!(!is_connected(&f.admin, "secret").await);
}

#[tokio::test]
async fn malformed_binary_oversized_and_out_of_order_frames() {
    let f = fleet(&["pump-1"]).await;
    let addr = f.server.addr();
    // Junk gets an error answer and the connection stays usable.
    let mut c = ControlClient::greeted(addr, &f.key).await;
    for junk in ["", "{", "[1,2]", r#"{"type":"bind","id":"x"}"#] {
        c.send_raw(Message::Text(junk.into())).await;
        match c.recv().await {
            Ok(PlatformMessage::Error { code, .. }) => assert_eq!(code, codes::MALFORMED),
            other => panic!("{junk:?}: expected an error, got {other:?}"),
        }
    }
    assert!(matches!(
        c.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    // A message type from a newer agent is answered UNSUPPORTED, as often as it comes.
    for _ in 0..30 {
        c.send_raw(Message::Text(r#"{"type":"telemetry","x":1}"#.into()))
            .await;
        match c.recv().await {
            Ok(PlatformMessage::Error { code, .. }) => assert_eq!(code, codes::UNSUPPORTED),
            other => panic!("expected UNSUPPORTED, got {other:?}"),
        }
    }
    assert!(matches!(
        c.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));

    // A binary frame closes with 1003.
    let mut c = ControlClient::greeted(addr, &f.key).await;
    c.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert!(matches!(c.recv().await, Err(Ended::Closed(1003, _))));

    // A frame over 64 KiB closes with 1009.
    let mut c = ControlClient::greeted(addr, &f.key).await;
    c.send_raw(Message::Text("x".repeat(70 * 1024).into()))
        .await;
    match c.recv().await {
        Err(Ended::Closed(code, _)) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }

    // A bind before hello is refused and the connection closed (1008).
    let mut c = ControlClient::connect_with(addr, Some(&f.key), &[SUBPROTOCOL_V1])
        .await
        .unwrap();
    c.send(&AgentMessage::Bind {
        id: 1,
        thing: "pump-1".into(),
    })
    .await;
    assert!(matches!(c.recv().await, Ok(PlatformMessage::Error { .. })));
    assert!(matches!(c.recv().await, Err(Ended::Closed(1008, _))));

    // The server is fine.
    f.admin.get("/healthz").await.ok();
}

#[tokio::test]
async fn a_client_that_never_speaks_is_closed_after_the_hello_timeout() {
    let f = fleet(&[]).await;
    let started = Instant::now();
    let mut c = ControlClient::connect_with(f.server.addr(), Some(&f.key), &[SUBPROTOCOL_V1])
        .await
        .unwrap();
    match c.recv_within(Duration::from_secs(20)).await {
        Err(Ended::Closed(code, reason)) => {
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("no message"), "{reason}");
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_newest_binding_wins_and_the_older_agent_is_told_why() {
    let f = fleet(&["pump-1"]).await;
    let mut old = ControlClient::greeted(f.server.addr(), &f.key).await;
    assert!(matches!(
        old.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    let mut new = ControlClient::greeted(f.server.addr(), &f.key).await;
    assert!(matches!(
        new.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    match old.recv().await {
        Ok(PlatformMessage::Unbound {
            thing,
            code,
            reason,
            ..
        }) => {
            assert_eq!(thing, "pump-1");
            assert_eq!(code, codes::REPLACED);
            assert!(reason.contains("newest"), "{reason}");
        }
        other => panic!("expected unbound REPLACED, got {other:?}"),
    }
    // The older connection going away does not disconnect the Thing.
    drop(old);
    wait_connected(&f.admin, "pump-1", true, Duration::from_secs(5)).await;
    let r = f
        .admin
        .call(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "GetConnectedThings",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        r.row()["result"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    drop(new);
    wait_connected(&f.admin, "pump-1", false, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_flood_of_binds_is_bounded_and_the_server_stays_responsive() {
    let f = fleet(&[]).await;
    let mut c = ControlClient::greeted(f.server.addr(), &f.key).await;
    // Fire 1,500 binds of unknown Things without waiting for answers.
    for id in 0..1_500u64 {
        c.send(&AgentMessage::Bind {
            id,
            thing: format!("ghost-{id}"),
        })
        .await;
    }
    let mut refused = 0;
    let end = loop {
        match c.recv().await {
            Ok(PlatformMessage::BindRefused { .. }) => refused += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(end, Ended::Closed(1008, ref r) if r.contains("refused binds")),
        "{end:?}"
    );
    assert_eq!(refused, 1_000);
    f.admin.get("/healthz").await.ok();
    // Binds of real Things from many connections at once all succeed.
    for i in 0..50 {
        add_device(&f.admin, &format!("dev-{i}")).await;
    }
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut c = ControlClient::greeted(f.server.addr(), &f.key).await;
        c.send(&AgentMessage::Bind {
            id: 1,
            thing: format!("dev-{i}"),
        })
        .await;
        clients.push(c);
    }
    for c in clients.iter_mut() {
        assert!(matches!(c.recv().await, Ok(PlatformMessage::Bound { .. })));
    }
    let admin = f.admin.clone();
    wait_until(Duration::from_secs(5), "50 Things connected", || async {
        let r = admin
            .call(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "GetConnectedThings",
                json!({}),
            )
            .await
            .ok();
        r.row()["result"].as_array().map(Vec::len) == Some(50)
    })
    .await;
}

#[tokio::test]
async fn one_way_messages_arrive_and_oversized_ones_are_refused() {
    let f = fleet(&["pump-1"]).await;
    let mut c = ControlClient::greeted(f.server.addr(), &f.key).await;
    assert!(matches!(
        c.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    let send = |body: serde_json::Value| {
        let admin = f.admin.clone();
        async move {
            admin
                .call(
                    "Subsystems",
                    "ConnectionServicesSubsystem",
                    "SendMessage",
                    json!({"thingName": "pump-1", "name": "config", "body": body}),
                )
                .await
        }
    };
    send(json!({"level": 3})).await.ok();
    match c.recv().await {
        Ok(PlatformMessage::Message { thing, name, body }) => {
            assert_eq!((thing.as_str(), name.as_str()), ("pump-1", "config"));
            assert_eq!(body, json!({"level": 3}));
        }
        other => panic!("expected a message, got {other:?}"),
    }
    send(json!({"blob": "x".repeat(70 * 1024)}))
        .await
        .expect_error(400, "at most 65536 bytes");
    // An unanswered request fails at its deadline with 503.
    f.admin
        .call(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "SendMessage",
            json!({"thingName": "pump-1", "name": "slow", "waitForReply": true, "timeoutMs": 300}),
        )
        .await
        .expect_error(503, "did not answer");
}

#[tokio::test]
async fn deleting_the_extension_closes_its_channels_and_clears_is_connected() {
    let f = fleet(&["pump-1"]).await;
    let mut c = ControlClient::greeted(f.server.addr(), &f.key).await;
    assert!(matches!(
        c.bind("pump-1").await,
        PlatformMessage::Bound { .. }
    ));
    wait_connected(&f.admin, "pump-1", true, Duration::from_secs(5)).await;
    f.admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "DeleteExtensionPackage",
            json!({"packageName": "ConnectionServicesExtension"}),
        )
        .await
        .ok();
    match c.recv().await {
        Err(Ended::Closed(code, _)) => assert_eq!(code, 1012),
        other => panic!("expected close 1012, got {other:?}"),
    }
    wait_connected(&f.admin, "pump-1", false, Duration::from_secs(5)).await;
    // No extension serves the route any more.
    let r = ControlClient::connect_with(f.server.addr(), Some(&f.key), &[SUBPROTOCOL_V1])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
}
