//! Extension records (ABI 1.3) through the real server and the fixture extension: written with
//! their audit entry in one transaction, read and paged, kept across restarts and upgrades,
//! bounded in size, and deleted with the package.

use serde_json::{json, Value};
use thingport_e2e::packages::{upload, PackageSpec};
use thingport_e2e::{Client, Server};

async fn svc(admin: &Client, service: &str, params: Value) -> thingport_e2e::Resp {
    admin
        .call("Subsystems", "FixtureSubsystem", service, params)
        .await
}

async fn get(admin: &Client, key: &str) -> Value {
    let r = svc(
        admin,
        "GetRecord",
        json!({"collection": "sessions", "key": key}),
    )
    .await
    .ok();
    r.rows()
        .first()
        .and_then(|row| row.get("result"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn records_persist_page_and_go_with_their_package() {
    let mut server = Server::default_started();
    let admin = server.admin();
    upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    for i in 0..5 {
        svc(
            &admin,
            "PutRecord",
            json!({"collection": "sessions", "key": format!("s-{i}"), "value": {"n": i}, "audited": i == 0}),
        )
        .await
        .ok();
    }
    svc(
        &admin,
        "PutRecord",
        json!({"collection": "other", "key": "s-9", "value": 1}),
    )
    .await
    .ok();
    assert_eq!(get(&admin, "s-3").await, json!({"n": 3}));
    assert_eq!(get(&admin, "missing").await, Value::Null);
    // The audited write left its entry, attributed to the extension.
    let log = admin.audit_log("category=EXTENSIONS").await.ok();
    assert!(log.text.contains("PutRecord sessions/s-0"), "{}", log.text);
    assert!(log.text.contains("extension:NoopExtension"), "{}", log.text);

    // Paging in key order within one collection.
    let page = |after: &'static str| {
        let admin = admin.clone();
        async move {
            let r = svc(
                &admin,
                "QueryRecords",
                json!({"collection": "sessions", "prefix": "s-", "after": after, "limit": 2}),
            )
            .await
            .ok();
            r.row()["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["key"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("").await, ["s-0", "s-1"]);
    assert_eq!(page("s-1").await, ["s-2", "s-3"]);
    assert_eq!(page("s-3").await, ["s-4"]);

    // Bad input: a bad collection name, an oversized value, a limit out of range.
    svc(
        &admin,
        "PutRecord",
        json!({"collection": "../x", "key": "k", "value": 1}),
    )
    .await
    .expect_error(400, "collection");
    svc(
        &admin,
        "PutRecord",
        json!({"collection": "sessions", "key": "big", "value": "x".repeat(300 * 1024)}),
    )
    .await
    .expect_status_in(&[400, 413]);
    svc(
        &admin,
        "QueryRecords",
        json!({"collection": "sessions", "limit": 5000}),
    )
    .await
    .expect_error(400, "limit");

    // Kept across a restart and an upgrade.
    server.restart();
    let admin = server.admin();
    assert_eq!(get(&admin, "s-4").await, json!({"n": 4}));
    upload(
        &admin,
        PackageSpec::new("NoopExtension", "noop")
            .version("1.1.0")
            .build(),
    )
    .await
    .ok();
    assert_eq!(get(&admin, "s-4").await, json!({"n": 4}));
    svc(
        &admin,
        "DeleteRecord",
        json!({"collection": "sessions", "key": "s-4"}),
    )
    .await
    .ok();
    assert_eq!(get(&admin, "s-4").await, Value::Null);

    // Deleted with the package: a new import starts empty.
    admin
        .call(
            "Subsystems",
            "PlatformSubsystem",
            "DeleteExtensionPackage",
            json!({"packageName": "NoopExtension"}),
        )
        .await
        .ok();
    upload(&admin, PackageSpec::new("NoopExtension", "noop").build())
        .await
        .ok();
    assert_eq!(get(&admin, "s-3").await, Value::Null);
}
