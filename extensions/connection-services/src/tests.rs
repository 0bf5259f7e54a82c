//! The protocol state machine against the SDK's fake host, through the C ABI.

use serde_json::{json, Value};
use thingport_protocol::control::{codes, PlatformMessage};
use thingport_sdk::testing::{FakeHost, FakeInstance};

fn setup() -> (FakeHost, FakeInstance) {
    let host = FakeHost::new();
    host.add_thing("pump-1", "RemoteThing", json!({"isConnected": true}));
    host.add_thing("pump-2", "RemoteThing", json!({"isConnected": false}));
    host.add_thing("lamp", "GenericThing", json!({}));
    let instance = host
        .instantiate(crate::thingport_extension_table(), Value::Null)
        .expect("create");
    (host, instance)
}

fn sent(host: &FakeHost, connection: u64) -> Vec<PlatformMessage> {
    host.take_sent()
        .into_iter()
        .filter(|(c, _)| *c == connection)
        .map(|(_, t)| PlatformMessage::decode(&t).expect("valid message"))
        .collect()
}

fn greet(host: &FakeHost, i: &FakeInstance, connection: u64, user: &str) {
    i.open(connection, "/Thingworx/WS", user).unwrap();
    i.message(connection, r#"{"type":"hello","agent":"test/1"}"#)
        .unwrap();
    assert!(matches!(
        sent(host, connection).as_slice(),
        [PlatformMessage::Welcome { .. }]
    ));
}

#[test]
fn stale_flags_are_cleared_at_start_and_the_flush_timer_runs() {
    let (host, _i) = setup();
    assert_eq!(
        host.properties("pump-1").unwrap()["isConnected"],
        json!(false)
    );
    assert!(host.timers().contains_key("flush-connection-state"));
}

#[test]
fn bind_checks_existence_template_enabled_and_permission() {
    let (host, i) = setup();
    host.add_thing("off", "RemoteThing", json!({}));
    host.disable_thing("off");
    host.deny("agent", "pump-2", "PropertyWrite");
    greet(&host, &i, 1, "agent");
    for (id, thing) in [(1, "nope"), (2, "lamp"), (3, "off"), (4, "pump-2")] {
        i.message(
            1,
            &format!(r#"{{"type":"bind","id":{id},"thing":"{thing}"}}"#),
        )
        .unwrap();
    }
    let codes: Vec<String> = sent(&host, 1)
        .into_iter()
        .map(|m| match m {
            PlatformMessage::BindRefused { code, .. } => code,
            other => panic!("expected a refusal, got {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            codes::NOT_FOUND,
            codes::NOT_REMOTE_THING,
            codes::DISABLED,
            codes::FORBIDDEN
        ]
    );
}

#[test]
fn bind_sets_is_connected_after_a_flush_and_close_clears_it() {
    let (host, i) = setup();
    greet(&host, &i, 1, "agent");
    i.message(1, r#"{"type":"bind","id":1,"thing":"pump-1"}"#)
        .unwrap();
    assert!(matches!(
        sent(&host, 1).as_slice(),
        [PlatformMessage::Bound { id: 1, .. }]
    ));
    i.timer("flush-connection-state").unwrap();
    let p = host.properties("pump-1").unwrap();
    assert_eq!(p["isConnected"], json!(true));
    assert!(p["lastConnection"].as_i64().unwrap() > 0);
    i.connection_closed(1, "test").unwrap();
    i.timer("flush-connection-state").unwrap();
    assert_eq!(
        host.properties("pump-1").unwrap()["isConnected"],
        json!(false)
    );
}

#[test]
fn the_newest_connection_wins_and_the_older_is_told_why() {
    let (host, i) = setup();
    greet(&host, &i, 1, "agent");
    greet(&host, &i, 2, "agent");
    i.message(1, r#"{"type":"bind","id":1,"thing":"pump-1"}"#)
        .unwrap();
    i.message(2, r#"{"type":"bind","id":1,"thing":"pump-1"}"#)
        .unwrap();
    let all = host.take_sent();
    let to_first: Vec<PlatformMessage> = all
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, t)| PlatformMessage::decode(t).unwrap())
        .collect();
    assert!(matches!(
        to_first.as_slice(),
        [PlatformMessage::Bound { .. }, PlatformMessage::Unbound { code, .. }] if code == codes::REPLACED
    ));
    // The old connection closing does not disconnect the Thing the new one serves.
    i.connection_closed(1, "test").unwrap();
    i.timer("flush-connection-state").unwrap();
    assert_eq!(
        host.properties("pump-1").unwrap()["isConnected"],
        json!(true)
    );
}

#[test]
fn messages_before_hello_and_malformed_ones_are_refused() {
    let (host, i) = setup();
    i.open(1, "/Thingworx/WS", "agent").unwrap();
    i.message(1, r#"{"type":"bind","id":1,"thing":"pump-1"}"#)
        .unwrap();
    assert!(matches!(
        sent(&host, 1).as_slice(),
        [PlatformMessage::Error { code, .. }] if code == codes::MALFORMED
    ));
    assert_eq!(host.closed().get(&1).map(|c| c.0), Some(1008));

    i.open(2, "/Thingworx/WS", "agent").unwrap();
    i.message(2, "{").unwrap();
    // Garbage before hello is answered and the connection closed.
    assert_eq!(sent(&host, 2).len(), 1);
    assert_eq!(host.closed().get(&2).map(|c| c.0), Some(1008));

    greet(&host, &i, 3, "agent");
    for junk in ["", "{", "[]", &"x".repeat(1000)] {
        i.message(3, junk).unwrap();
    }
    i.message(3, r#"{"type":"nope"}"#).unwrap();
    let replies = sent(&host, 3);
    assert_eq!(replies.len(), 5);
    assert!(replies[..4]
        .iter()
        .all(|m| matches!(m, PlatformMessage::Error { code, .. } if code == codes::MALFORMED)));
    assert!(
        matches!(&replies[4], PlatformMessage::Error { code, .. } if code == codes::UNSUPPORTED)
    );
    assert!(!host.closed().contains_key(&3));
}

#[test]
fn egress_to_an_unbound_thing_is_unavailable() {
    let (_host, i) = setup();
    let err = i
        .invoke("Things", "pump-1", "Ping", Value::Null)
        .unwrap_err();
    assert!(err.error.contains("not connected"), "{}", err.error);
    let err = i
        .invoke(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "SendMessage",
            json!({"thingName": "pump-1", "name": "x"}),
        )
        .unwrap_err();
    assert!(err.error.contains("not connected"), "{}", err.error);
}

#[test]
fn a_thing_disabled_while_bound_is_unbound_as_gone() {
    let (host, i) = setup();
    greet(&host, &i, 1, "agent");
    i.message(1, r#"{"type":"bind","id":1,"thing":"pump-1"}"#)
        .unwrap();
    let _ = sent(&host, 1);
    host.disable_thing("pump-1");
    i.timer("verify-bindings").unwrap();
    assert!(matches!(
        sent(&host, 1).as_slice(),
        [PlatformMessage::Unbound { code, .. }] if code == codes::GONE
    ));
    assert!(host.timers().contains_key("verify-bindings"));
}

#[test]
fn session_orders_are_reserved_for_the_platform() {
    let (_host, i) = setup();
    for name in ["startSession", "endSession"] {
        let e = i
            .invoke(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "SendMessage",
                json!({"thingName": "pump-1", "name": name, "body": {}}),
            )
            .unwrap_err();
        assert_eq!(
            e.kind,
            thingport_sdk::protocol::ErrorKind::Forbidden,
            "{e:?}"
        );
        assert!(
            e.error.contains("reserved for RemoteAccessExtension"),
            "{e:?}"
        );
    }
}
