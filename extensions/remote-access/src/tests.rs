//! RAE against the SDK's fake host, through the C ABI: registration, the credentials StartSession
//! signs, the agent's order, the transitions the GAS's reports and heartbeats cause, and refusals.

use crate::engine::Settings;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use thingport_protocol::tunnel::{self, Role};
use thingport_sdk::protocol::{Caller, ErrorKind, InfoTable};
use thingport_sdk::testing::{FakeHost, FakeInstance};
use thingport_sdk::Error;

const PROVIDER: &str = "GASRemoteAccessProvider";

/// A host with device `gw-1` (connected, endpoint `ssh` → 10.0.0.5:22), the provider Thing,
/// CreateThing and SendMessage answered; the orders the agent would receive are collected.
fn setup(
    agent: fn(&Value) -> Result<InfoTable, Error>,
) -> (FakeHost, FakeInstance, Arc<Mutex<Vec<Value>>>) {
    let host = FakeHost::new();
    host.add_thing(
        "gw-1",
        "RemoteAccessibleThing",
        json!({"isConnected": true, "endpoints": {"rows": [
            {"name": "ssh", "protocol": "SSH", "host": "10.0.0.5", "port": 22}]}}),
    );
    host.add_thing(
        PROVIDER,
        "GASRemoteAccessProviderTemplate",
        json!({"maxServers": 2}),
    );
    let h = host.clone();
    host.on_invoke("Resources", "EntityServices", "CreateThing", move |p| {
        h.add_thing(p["name"].as_str().unwrap(), "GASModel", json!({}));
        Ok(InfoTable::default())
    });
    let orders = Arc::new(Mutex::new(Vec::new()));
    let o = orders.clone();
    host.on_invoke(
        "Subsystems",
        "ConnectionServicesSubsystem",
        "SendMessage",
        move |p| {
            o.lock().unwrap().push(p.clone());
            if p["name"] == json!("startSession") {
                agent(p)
            } else {
                Ok(InfoTable::default())
            }
        },
    );
    let i = host
        .instantiate(crate::thingport_extension_table(), Value::Null)
        .expect("create");
    (host, i, orders)
}

fn accept(_: &Value) -> Result<InfoTable, Error> {
    Ok(InfoTable::scalar(json!({"accepted": true})))
}

fn operator() -> Caller {
    Caller {
        name: "operator".into(),
        admin: false,
        source_ip: "192.0.2.7".into(),
    }
}

/// Registers and enables `gas-1`: the registration and the key.
fn gas(host: &FakeHost, i: &FakeInstance) -> (String, Vec<u8>) {
    let reg = i
        .invoke(
            "Things",
            PROVIDER,
            "RegisterServer",
            json!({"name": "gas-1", "publicUrl": "https://gas.example:8443/", "version": "t", "capacity": 5}),
        )
        .unwrap();
    assert_eq!(reg["enabled"], json!(false));
    assert_eq!(
        host.properties("gas-1").unwrap()["enabledForRemoteSessions"],
        json!(false)
    );
    i.invoke("Things", "gas-1", "EnableForRemoteSessions", json!({}))
        .unwrap();
    let key = URL_SAFE_NO_PAD
        .decode(reg["key"].as_str().unwrap())
        .unwrap();
    (reg["registration"].as_str().unwrap().to_string(), key)
}

fn start(i: &FakeInstance) -> Result<Value, thingport_sdk::protocol::ErrorBody> {
    i.invoke_as(
        operator(),
        "Things",
        "gw-1",
        "StartSession",
        json!({"remoteEndpoint": "ssh"}),
    )
    .map(|t| t["rows"][0].clone())
}

fn report(i: &FakeInstance, registration: &str, events: Value) {
    i.invoke(
        "Things",
        PROVIDER,
        "ReportSessionEvents",
        json!({"name": "gas-1", "registration": registration, "events": events}),
    )
    .unwrap();
}

fn session(i: &FakeInstance, id: &str) -> Value {
    i.invoke("Things", "gw-1", "GetSession", json!({"sessionId": id}))
        .unwrap()["rows"][0]
        .clone()
}

#[test]
fn start_session_signs_one_credential_per_side_with_the_gas_key() {
    let (host, i, orders) = setup(accept);
    let (_, key) = gas(&host, &i);
    let row = start(&i).unwrap();
    assert_eq!(row["status"], json!("CREATED"));
    assert_eq!(row["gasUrl"], json!("https://gas.example:8443"));
    assert_eq!(row["createdBy"], json!("operator"));
    assert_eq!(row["userIP"], json!("192.0.2.7"));
    let id = row["sessionId"].as_str().unwrap();
    let now = crate::model::now_ms();
    let client = tunnel::verify(row["credential"].as_str().unwrap(), &key, now).unwrap();
    assert_eq!(
        (client.session.as_str(), client.role, client.gas.as_str()),
        (id, Role::Client, "gas-1")
    );
    assert!(client.exp > now && client.exp <= now + 60_000);

    let orders = orders.lock().unwrap();
    let order = &orders[0];
    assert_eq!(order["thingName"], json!("gw-1"));
    assert_eq!(order["waitForReply"], json!(true));
    let body = &order["body"];
    assert_eq!(
        body["endpoint"],
        json!({"host": "10.0.0.5", "port": 22, "name": "ssh"})
    );
    let agent = tunnel::verify(body["credential"].as_str().unwrap(), &key, now).unwrap();
    assert_eq!((agent.session.as_str(), agent.role), (id, Role::Agent));
    assert_ne!(agent.nonce, client.nonce);
    // A credential signed with another key is not this GAS's.
    assert!(tunnel::verify(row["credential"].as_str().unwrap(), &[7u8; 32], now).is_err());
    // The record never holds the credential.
    let stored = session(&i, id);
    assert!(stored.get("credential").is_none(), "{stored}");
    let audit = host.audit_entries();
    assert!(audit.iter().any(|a| a.category == "REMOTE_ACCESS"
        && a.message.contains(&format!("session {id} created by operator from 192.0.2.7: Thing gw-1, endpoint ssh (10.0.0.5:22), GAS gas-1"))), "{audit:?}");
}

#[test]
fn reports_move_the_session_and_the_end_cause_follows_the_side() {
    let (host, i, _) = setup(accept);
    let (reg, _) = gas(&host, &i);
    let id = start(&i).unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    report(
        &i,
        &reg,
        json!([{"event": "attached", "session": id, "role": "client"},
                            {"event": "started", "session": id}]),
    );
    assert_eq!(session(&i, &id)["status"], json!("STARTED"));
    report(
        &i,
        &reg,
        json!([{"event": "ended", "session": id, "cause": "LOST", "role": "agent",
                             "bytesUp": 100, "bytesDown": 23, "durationMs": 5}]),
    );
    let row = session(&i, &id);
    assert_eq!(row["terminationCause"], json!("DEVICE_SHUTDOWN"), "{row}");
    assert_eq!(row["bytesTransferred"], json!(123));
    // A late report changes nothing but a larger byte count.
    report(
        &i,
        &reg,
        json!([{"event": "ended", "session": id, "cause": "CLOSED", "role": "client",
                             "bytesUp": 200, "bytesDown": 23, "durationMs": 5}]),
    );
    let row = session(&i, &id);
    assert_eq!(row["terminationCause"], json!("DEVICE_SHUTDOWN"));
    assert_eq!(row["bytesTransferred"], json!(223));
    let ended: Vec<_> = host
        .audit_entries()
        .into_iter()
        .filter(|a| a.message.contains(&format!("session {id} terminated")))
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].message.contains(
        "(DEVICE_SHUTDOWN): Thing gw-1, endpoint ssh, GAS gas-1, started by operator, 123 bytes"
    ));
    // Reports under another registration are refused: register again.
    let e = i
        .invoke(
            "Things",
            PROVIDER,
            "ReportSessionEvents",
            json!({"name": "gas-1", "registration": "nope", "events": []}),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn a_started_session_two_heartbeats_do_not_list_is_server_lost_and_ended_ones_are_ordered_closed() {
    let (host, i, orders) = setup(accept);
    let (reg, _) = gas(&host, &i);
    let id = start(&i).unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let beat = |sessions: Value| {
        i.invoke(
            "Things",
            PROVIDER,
            "Heartbeat",
            json!({"name": "gas-1", "registration": reg, "healthy": true, "sessions": sessions}),
        )
        .unwrap()
    };
    // Listed as paired with bytes: STARTED, activity counted.
    beat(json!([{"session": id, "bytesUp": 10, "bytesDown": 5, "paired": true}]));
    let row = session(&i, &id);
    assert_eq!(
        (row["status"].clone(), row["bytesTransferred"].clone()),
        (json!("STARTED"), json!(15))
    );
    assert_eq!(
        host.properties("gas-1").unwrap()["currentNumberOfSessions"],
        json!(1)
    );
    beat(json!([]));
    assert_eq!(session(&i, &id)["status"], json!("STARTED"));
    beat(json!([]));
    assert_eq!(session(&i, &id)["terminationCause"], json!("SERVER_LOST"));
    // The GAS is told to close it, and so is the agent.
    assert_eq!(
        beat(json!([{"session": id, "bytesUp": 0, "bytesDown": 0, "paired": true}]))["end"],
        json!([id])
    );
    assert!(orders
        .lock()
        .unwrap()
        .iter()
        .any(|o| o["name"] == json!("endSession") && o["body"]["session"] == json!(id)));
}

#[test]
fn refusals_are_recorded_with_their_cause() {
    fn deny(_: &Value) -> Result<InfoTable, Error> {
        Err(Error::unprocessable(
            "the agent of Thing 'gw-1' answered 'startSession' with SESSION_DENIED: 10.0.0.5:22 is not allowed",
        ))
    }
    let (host, i, _) = setup(deny);
    let e = start(&i).unwrap_err();
    assert!(e.error.starts_with("NO_SERVERS: "), "{e:?}");
    gas(&host, &i);
    let e = start(&i).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_eq!(
        e.error,
        "SESSION_DENIED: the device's agent refused: 10.0.0.5:22 is not allowed"
    );
    let e = i
        .invoke_as(
            operator(),
            "Things",
            "gw-1",
            "StartSession",
            json!({"remoteEndpoint": "vnc"}),
        )
        .unwrap_err();
    assert_eq!(
        (e.kind, e.error.as_str()),
        (
            ErrorKind::NotFound,
            "Thing 'gw-1' has no endpoint 'vnc' (it has: ssh)"
        )
    );
    host.deny("operator", "gw-1", "PropertyRead");
    let e = start(&i).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    let rows = i
        .invoke("Things", "gw-1", "GetSessions", json!({}))
        .unwrap()["rows"]
        .clone();
    let mut causes: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["terminationCause"].as_str().unwrap())
        .collect();
    // Newest first, but two refusals within the same millisecond have no order (session ids
    // start with the creation millisecond, then random hex).
    causes.sort_unstable();
    assert_eq!(causes, ["NO_SERVERS", "SESSION_DENIED"]);
}

#[test]
fn registration_is_bounded_by_max_servers_and_keeps_the_flag() {
    let (host, i, _) = setup(accept);
    gas(&host, &i);
    let again = i
        .invoke(
            "Things",
            PROVIDER,
            "RegisterServer",
            json!({"name": "gas-1", "publicUrl": "http://h:1", "version": "t", "capacity": 5}),
        )
        .unwrap();
    assert_eq!(again["enabled"], json!(true));
    i.invoke(
        "Things",
        PROVIDER,
        "RegisterServer",
        json!({"name": "gas-2", "publicUrl": "http://h:2", "version": "t", "capacity": 5}),
    )
    .unwrap();
    let e = i
        .invoke(
            "Things",
            PROVIDER,
            "RegisterServer",
            json!({"name": "gas-3", "publicUrl": "http://h:3", "version": "t", "capacity": 5}),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.error.contains("maxServers"), "{e:?}");
}

#[test]
fn settings_are_clamped_and_endpoints_checked() {
    let s = Settings::from_config(&json!({"Settings": {"maxSessionDurationHours": 1000,
        "inactiveSessionTimeoutMinutes": 0, "maxSessionsReturned": 7}}));
    assert_eq!(
        s,
        Settings {
            max_duration_ms: 240 * 3_600_000,
            inactive_ms: 60_000,
            max_returned: 7
        }
    );
    let d = Settings::from_config(&Value::Null);
    assert_eq!(
        (d.max_duration_ms, d.inactive_ms, d.max_returned),
        (24 * 3_600_000, 15 * 60_000, 500)
    );
    let ep = |v: Value| {
        serde_json::from_value::<crate::model::RemoteEndpoint>(v)
            .unwrap()
            .target("t")
    };
    assert_eq!(
        ep(json!({"name": "a", "host": "h", "port": 22})).unwrap(),
        ("h".to_string(), 22)
    );
    for bad in [
        json!({"name": "a", "host": "h", "port": 70000}),
        json!({"name": "a", "host": "", "port": 22}),
        json!({"name": "a", "host": "h"}),
        json!({"name": "a", "host": "h", "port": 22, "protocol": "FTP"}),
    ] {
        assert!(ep(bad.clone()).is_err(), "{bad}");
    }
}

#[test]
fn another_key_cannot_take_a_gas_over_and_gas_listings_hide_invisible_devices() {
    let (host, i, _) = setup(accept);
    let gas_user = |name: &str| Caller {
        name: name.into(),
        admin: false,
        source_ip: "192.0.2.9".into(),
    };
    let register = |who: &str, name: &str, capacity: u32| {
        i.invoke_as(
            gas_user(who),
            "Things",
            PROVIDER,
            "RegisterServer",
            json!({"name": name, "publicUrl": "https://g.example", "version": "t", "capacity": capacity}),
        )
    };
    register("gas-a", "gas-1", 5).unwrap();
    register("gas-a", "gas-1", 5).unwrap();
    let e = register("gas-b", "gas-1", 5).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden, "{e:?}");
    assert!(e.error.contains("registered by another user"), "{e:?}");
    let e = register("gas-a", "gas-2", crate::engine::MAX_CAPACITY + 1).unwrap_err();
    assert!(
        e.error.contains("capacity must be between 1 and 5000"),
        "{e:?}"
    );

    i.invoke("Things", "gas-1", "EnableForRemoteSessions", json!({}))
        .unwrap();
    let id = start(&i).unwrap()["sessionId"].clone();
    let listed = |who: Caller| {
        i.invoke_as(who, "Things", "gas-1", "GetSessions", json!({}))
            .unwrap()["rows"]
            .clone()
    };
    assert_eq!(listed(operator())[0]["sessionId"], id);
    host.deny("operator", "gw-1", "Visible");
    assert_eq!(listed(operator()), json!([]));
}

fn switch(
    i: &FakeInstance,
    scope: &str,
    name: &str,
    enabled: bool,
) -> Result<InfoTable, thingport_sdk::protocol::ErrorBody> {
    i.invoke(
        "Subsystems",
        "RemoteAccessSubsystem",
        "SetRemoteAccessSwitch",
        json!({"scope": scope, "name": name, "enabled": enabled}),
    )
    .map(|v| serde_json::from_value(v).unwrap_or_default())
}

#[test]
fn remote_access_switched_off_on_the_device_its_template_or_a_tag_refuses_and_records() {
    let (host, i, orders) = setup(accept);
    gas(&host, &i);
    host.tag_thing("gw-1", &["Site:Plant-7"]);
    // The device's own switch.
    host.add_thing(
        "gw-1",
        "RemoteAccessibleThing",
        json!({"isConnected": true, "remoteAccessEnabled": false, "endpoints": {"rows": [
            {"name": "ssh", "protocol": "SSH", "host": "10.0.0.5", "port": 22}]}}),
    );
    host.tag_thing("gw-1", &["Site:Plant-7"]);
    let e = start(&i).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_eq!(
        e.error,
        "REMOTE_ACCESS_DISABLED: remote access is switched off on Thing 'gw-1'"
    );
    host.add_thing(
        "gw-1",
        "RemoteAccessibleThing",
        json!({"isConnected": true, "remoteAccessEnabled": true, "endpoints": {"rows": [
            {"name": "ssh", "protocol": "SSH", "host": "10.0.0.5", "port": 22}]}}),
    );
    host.tag_thing("gw-1", &["Site:Plant-7"]);
    // The template's switch (its whole chain counts).
    switch(&i, "template", "RemoteAccessibleThing", false).unwrap();
    let e = start(&i).unwrap_err();
    assert!(
        e.error
            .contains("switched off for the template 'RemoteAccessibleThing'"),
        "{}",
        e.error
    );
    switch(&i, "template", "RemoteAccessibleThing", true).unwrap();
    // A tag's switch.
    switch(&i, "Tag", "Site:Plant-7", false).unwrap();
    let e = start(&i).unwrap_err();
    assert!(
        e.error.contains("switched off for the tag 'Site:Plant-7'"),
        "{}",
        e.error
    );
    let listed = i
        .invoke(
            "Subsystems",
            "RemoteAccessSubsystem",
            "GetRemoteAccessSwitches",
            json!({}),
        )
        .unwrap();
    assert_eq!(listed["rows"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["rows"][0]["name"], json!("Site:Plant-7"));
    switch(&i, "tag", "Site:Plant-7", true).unwrap();
    assert_eq!(start(&i).unwrap()["status"], json!("CREATED"));
    // No order reached the agent while it was off; each refusal is a recorded session.
    assert_eq!(orders.lock().unwrap().len(), 1);
    let all = i
        .invoke(
            "Subsystems",
            "RemoteAccessSubsystem",
            "GetSessions",
            json!({"status": "TERMINATED"}),
        )
        .unwrap();
    let causes: Vec<&Value> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["terminationCause"])
        .collect();
    assert_eq!(causes.len(), 3);
    assert!(causes
        .iter()
        .all(|c| **c == json!("REMOTE_ACCESS_DISABLED")));
    let audit = host.audit_entries();
    assert!(
        audit.iter().any(|a| a.message
            == "remote access switched off for tag 'Site:Plant-7' by System"
            || a.message
                .starts_with("remote access switched off for tag 'Site:Plant-7' by ")),
        "{audit:?}"
    );
    // Bad input: an unknown scope, an empty or control-laden name.
    assert!(switch(&i, "group", "x", false)
        .unwrap_err()
        .error
        .contains("scope must be 'template' or 'tag'"));
    assert!(switch(&i, "tag", "  ", false)
        .unwrap_err()
        .error
        .contains("name must be"));
    assert!(switch(&i, "tag", "a\nb", false)
        .unwrap_err()
        .error
        .contains("name must be"));
}

#[test]
fn attach_gives_the_creator_a_fresh_credential_while_the_session_waits() {
    let (host, i, _) = setup(accept);
    let (registration, key) = gas(&host, &i);
    let row = start(&i).unwrap();
    let id = row["sessionId"].as_str().unwrap().to_string();
    let attach = |who: Caller, id: &str| {
        i.invoke_as(
            who,
            "Things",
            "gw-1",
            "AttachSession",
            json!({"sessionId": id}),
        )
        .map(|t| t["rows"][0].clone())
    };
    let again = attach(operator(), &id).unwrap();
    let now = crate::model::now_ms();
    let fresh = tunnel::verify(again["credential"].as_str().unwrap(), &key, now).unwrap();
    assert_eq!(
        (fresh.session.as_str(), fresh.role),
        (id.as_str(), Role::Client)
    );
    assert_ne!(again["credential"], row["credential"], "a new nonce");
    assert!(
        fresh.exp <= row["credentialExpires"].as_i64().unwrap(),
        "never past the session's deadline"
    );
    // Someone else may not.
    let other = Caller {
        name: "mallory".into(),
        admin: false,
        source_ip: "203.0.113.9".into(),
    };
    let e = attach(other, &id).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    // Unknown, malformed and other devices' ids are not found.
    assert_eq!(
        attach(operator(), "0000").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        attach(operator(), "../x").unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Once started, no second client.
    report(
        &i,
        &registration,
        json!([{"event": "started", "session": id}]),
    );
    let e = attach(operator(), &id).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.error.contains("is STARTED"), "{}", e.error);
}
