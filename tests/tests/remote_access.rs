//! RemoteAccessExtension through the real server, over REST: GAS registration (created disabled,
//! maxServers, re-registration keeps the flag, heartbeats and their unknown-registration answer),
//! StartSession's checks and refusals (the four permissions, unknown endpoint, offline device,
//! NO_SERVERS) and the records and audit entries they leave. The GAS here is this test speaking
//! the GAS's REST protocol; the tunnel itself is in `remote_sessions.rs`.

use serde_json::{json, Value};
use std::time::Duration;
use thingport_e2e::fleet::wait_connected;
use thingport_e2e::remote::{Site, OPERATOR};
use thingport_e2e::{Agent, Client};

const PROVIDER: &str = "GASRemoteAccessProvider";

async fn register(gas: &Client, name: &str) -> Value {
    gas.call(
        "Things",
        PROVIDER,
        "RegisterServer",
        json!({"name": name, "publicUrl": "http://127.0.0.1:9/", "version": "test", "capacity": 10}),
    )
    .await
    .ok()
    .row()["result"]
        .clone()
}

async fn heartbeat(
    gas: &Client,
    name: &str,
    registration: &str,
    sessions: Value,
) -> thingport_e2e::Resp {
    gas.call(
        "Things",
        PROVIDER,
        "Heartbeat",
        json!({"name": name, "registration": registration, "healthy": true, "sessions": sessions}),
    )
    .await
}

#[tokio::test]
async fn a_gas_registers_disabled_and_keeps_its_flag_across_registrations() {
    let site = Site::start(&[]).await;
    let gas = site.admin.with_app_key(&site.gas_key);
    let reg = register(&gas, "gas-1").await;
    assert_eq!(reg["enabled"], json!(false), "{reg}");
    assert_eq!(reg["heartbeatIntervalMs"], json!(10_000));
    let key = reg["key"].as_str().unwrap();
    assert_eq!(key.len(), 43, "32 bytes base64url: {key}");
    let thing = site.admin.get_entity("Things", "gas-1").await.ok();
    let thing: Value = serde_json::from_str(&thing.text).unwrap();
    assert_eq!(thing["thingTemplate"], json!("GASModel"));
    let flag = site
        .admin
        .get_property("gas-1", "enabledForRemoteSessions")
        .await
        .ok();
    assert_eq!(flag.row()["enabledForRemoteSessions"], json!(false));
    let host = site
        .admin
        .get_property("gas-1", "externalHostName")
        .await
        .ok();
    assert_eq!(host.row()["externalHostName"], json!("127.0.0.1:9"));

    // PTC's alias enables it; a second registration keeps the flag and replaces the key.
    site.admin
        .call("Things", "gas-1", "enableRemoteSessions", json!({}))
        .await
        .ok();
    let again = register(&gas, "gas-1").await;
    assert_eq!(again["enabled"], json!(true));
    assert_ne!(again["key"], reg["key"]);
    // The first registration is gone: its heartbeat is answered 404 (register again).
    heartbeat(
        &gas,
        "gas-1",
        reg["registration"].as_str().unwrap(),
        json!([]),
    )
    .await
    .expect_error(404, "register again");
    let beat = heartbeat(
        &gas,
        "gas-1",
        again["registration"].as_str().unwrap(),
        json!([]),
    )
    .await
    .ok();
    assert_eq!(beat.row()["result"], json!({"end": []}));

    // Bad registrations name their problem.
    for (body, needle) in [
        (
            json!({"name": "bad name", "publicUrl": "http://h", "version": "v", "capacity": 1}),
            "invalid GAS name",
        ),
        (
            json!({"name": "g2", "publicUrl": "ftp://h", "version": "v", "capacity": 1}),
            "publicUrl",
        ),
        (
            json!({"name": "g2", "publicUrl": "http://h", "version": "v", "capacity": 0}),
            "capacity",
        ),
        (
            json!({"name": "GASSelector", "publicUrl": "http://h", "version": "v", "capacity": 1}),
            "not a GASModel",
        ),
    ] {
        let r = gas.call("Things", PROVIDER, "RegisterServer", body).await;
        assert!(matches!(r.status, 409 | 422), "{}", r.text);
        assert!(r.error().contains(needle), "{needle}: {}", r.text);
    }
    // The operator has no ServiceInvoke on the provider.
    site.operator
        .call(
            "Things",
            PROVIDER,
            "RegisterServer",
            json!({"name": "x", "publicUrl": "http://h", "version": "v", "capacity": 1}),
        )
        .await
        .expect_status_in(&[403, 404]);

    // maxServers bounds the GAS Things registration creates.
    site.admin
        .set_property(PROVIDER, "maxServers", json!(1))
        .await
        .ok();
    gas.call(
        "Things",
        PROVIDER,
        "RegisterServer",
        json!({"name": "gas-2", "publicUrl": "http://h", "version": "v", "capacity": 1}),
    )
    .await
    .expect_error(409, "maxServers");
    let audit = site.remote_access_audit().await;
    assert!(
        audit
            .iter()
            .any(|m| m.contains("GAS gas-1 enabled for remote sessions by Administrator")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_session_checks_permissions_endpoint_device_and_servers() {
    let site = Site::start(&["gw-1"]).await;
    site.set_endpoints(
        "gw-1",
        &[
            ("ssh", "SSH", "127.0.0.1", 22),
            ("bad", "SSH", "127.0.0.1", 0),
        ],
    )
    .await;

    // Offline device: refused, recorded, audited.
    site.start_session("gw-1", "ssh")
        .await
        .expect_error(503, "DEVICE_OFFLINE");
    // Unknown endpoint: named with the ones that exist; a broken row: named.
    site.start_session("gw-1", "vnc")
        .await
        .expect_error(404, "has no endpoint 'vnc' (it has: ssh, bad)");
    site.start_session("gw-1", "bad")
        .await
        .expect_error(422, "port 0 is outside 1..65535");

    let _agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], &[]);
    wait_connected(&site.admin, "gw-1", true, Duration::from_secs(15)).await;
    // No GAS at all, then one registered but not enabled: NO_SERVERS.
    site.start_session("gw-1", "ssh")
        .await
        .expect_error(503, "NO_SERVERS");
    let gas = site.admin.with_app_key(&site.gas_key);
    let reg = register(&gas, "gas-1").await;
    site.start_session("gw-1", "ssh")
        .await
        .expect_error(503, "NO_SERVERS");
    site.enable("gas-1").await;
    let _ = reg;

    // Each of the four permissions, taken away in turn.
    let a = &site.admin;
    a.revoke_runtime("Things", "gw-1", "ServiceInvoke", "*", OPERATOR, "User")
        .await
        .ok();
    site.start_session("gw-1", "ssh").await.expect(403);
    a.grant_runtime(
        "Things",
        "gw-1",
        "ServiceInvoke",
        "*",
        OPERATOR,
        "User",
        true,
    )
    .await
    .ok();
    a.revoke_runtime("Things", "gw-1", "PropertyRead", "*", OPERATOR, "User")
        .await
        .ok();
    site.start_session("gw-1", "ssh")
        .await
        .expect_error(403, "PropertyRead");
    a.grant_runtime(
        "Things",
        "gw-1",
        "PropertyRead",
        "*",
        OPERATOR,
        "User",
        true,
    )
    .await
    .ok();
    a.call(
        "Things",
        "gw-1",
        "DeleteDesignTimePermission",
        json!({"type": "Read", "principal": OPERATOR, "principalType": "User"}),
    )
    .await
    .ok();
    site.start_session("gw-1", "ssh")
        .await
        .expect_error(403, "Read");
    a.grant_design("Things", "gw-1", "Read", OPERATOR, "User", true)
        .await
        .ok();
    a.call(
        "Things",
        "gw-1",
        "DeleteVisibilityPermission",
        json!({"organization": "Everyone"}),
    )
    .await
    .ok();
    site.start_session("gw-1", "ssh")
        .await
        .expect_status_in(&[403, 404]);
    a.grant_visibility("Things", "gw-1", "Everyone").await.ok();

    // All four held, a GAS enabled and heard, the agent connected: CREATED, with the client's
    // credential and the GAS's URL.
    let r = site.start_session("gw-1", "ssh").await.ok();
    let row = r.row().clone();
    assert_eq!(row["status"], json!("CREATED"), "{}", r.text);
    assert_eq!(row["agentDevice"], json!("gw-1"));
    assert_eq!(row["remoteServer"], json!("gas-1"));
    assert_eq!(row["createdBy"], json!(OPERATOR));
    assert_eq!(row["gasUrl"], json!("http://127.0.0.1:9"));
    assert!(row["credential"].as_str().unwrap().starts_with("v1."));
    let id = row["sessionId"].as_str().unwrap().to_string();
    // Stored without the credential; listed on the device and on the GAS.
    let stored = site.session("gw-1", &id).await;
    assert_eq!(stored["status"], json!("CREATED"));
    assert!(
        stored.get("credential").is_none_or(Value::is_null),
        "{stored}"
    );
    let listed = a
        .call("Things", "gw-1", "GetSessions", json!({}))
        .await
        .ok();
    assert_eq!(listed.rows()[0]["sessionId"], json!(id));
    let count = a
        .call("Things", "gas-1", "GetSessionCount", json!({}))
        .await
        .ok();
    assert_eq!(count.row()["result"], json!(1));

    // EndSession: USER_SHUTDOWN, audited; ending it again answers the same record.
    let ended = site
        .operator
        .call("Things", "gw-1", "EndSession", json!({"sessionId": id}))
        .await
        .ok();
    assert_eq!(
        ended.row()["terminationCause"],
        json!("USER_SHUTDOWN"),
        "{}",
        ended.text
    );
    let again = site
        .operator
        .call("Things", "gw-1", "EndSession", json!({"sessionId": id}))
        .await
        .ok();
    assert_eq!(again.row()["status"], json!("TERMINATED"));
    // The GAS hears of it at its next heartbeat.
    let beat = heartbeat(
        &gas,
        "gas-1",
        reg["registration"].as_str().unwrap(),
        json!([]),
    )
    .await
    .ok();
    assert_eq!(beat.row()["result"]["end"], json!([id]));
    site.admin
        .call("Things", "gw-1", "GetSession", json!({"sessionId": "00ff"}))
        .await
        .expect_error(404, "no session");

    let audit = site.remote_access_audit().await;
    for needle in [
        "refused (ERROR_STARTING_REMOTE_SESSION)",
        "refused (NO_SERVERS)",
        &format!("session {id} created by operator"),
        &format!("session {id} terminated (USER_SHUTDOWN): Thing gw-1, endpoint ssh, GAS gas-1"),
    ] {
        assert!(
            audit.iter().any(|m| m.contains(needle)),
            "{needle}: {audit:?}"
        );
    }
    // Across all devices (the subsystem's listing), filtered by status.
    let all = a
        .call(
            "Subsystems",
            "RemoteAccessSubsystem",
            "GetSessions",
            json!({"status": "terminated"}),
        )
        .await
        .ok();
    assert!(all.rows().len() >= 3, "{}", all.text);
    a.call(
        "Subsystems",
        "RemoteAccessSubsystem",
        "GetSessions",
        json!({"status": "nope"}),
    )
    .await
    .expect_error(422, "status must be");
}

#[tokio::test]
async fn configuration_out_of_range_is_refused() {
    let site = Site::start(&[]).await;
    for (field, value) in [
        ("maxSessionDurationHours", 0),
        ("maxSessionDurationHours", 241),
        ("inactiveSessionTimeoutMinutes", 61),
        ("maxSessionsReturned", 0),
    ] {
        let r = site
            .admin
            .call(
                "Subsystems",
                "RemoteAccessSubsystem",
                "SetConfigurationTable",
                json!({"configurationTable": "Settings", "values": {"rows": [{field: value}]}}),
            )
            .await;
        assert_eq!(r.status, 422, "{field}={value}: {}", r.text);
        assert!(r.error().contains(field), "{}", r.text);
    }
}

#[tokio::test]
async fn session_orders_cannot_be_sent_around_start_session() {
    let site = Site::start(&["gw-1"]).await;
    for name in ["startSession", "endSession"] {
        site.admin
            .call(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "SendMessage",
                json!({"thingName": "gw-1", "name": name, "waitForReply": true,
                       "body": {"session": "s", "gasUrl": "http://127.0.0.1:9", "credential": "v1.x.y",
                                "endpoint": {"name": "e", "host": "127.0.0.1", "port": 22}}}),
            )
            .await
            .expect_error(403, "reserved for RemoteAccessExtension");
    }
}
