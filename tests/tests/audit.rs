//! The audit log: every security-relevant action leaves a persistent entry, readable through
//! `GET /Thingworx/AuditLog` and `AuditSubsystem.QueryAuditHistory`, by administrators only by default.

use serde_json::{json, Value};
use thingport_e2e::{now_ms, unique_secret, Client, Server};

/// The rows of `category` in which `needle` appears (as principal, entity or in the message).
async fn entries(admin: &Client, category: &str, needle: &str) -> Vec<Value> {
    let resp = admin
        .audit_log(&format!("category={category}&limit=10000"))
        .await
        .expect(200);
    resp.rows()
        .iter()
        .filter(|r| {
            assert_eq!(r["category"], json!(category), "filter ignored: {r}");
            ["principal", "entity", "message"]
                .iter()
                .any(|f| r[*f].as_str().is_some_and(|s| s.contains(needle)))
        })
        .cloned()
        .collect()
}

/// Whether the row's `entity` is `name`, bare or qualified by its type (`Thing:name`): docs/api.md
/// leaves the form open. The `entity=` filter, though, must work with the bare name.
fn names_entity(row: &Value, name: &str) -> bool {
    row["entity"]
        .as_str()
        .is_some_and(|e| e == name || e.ends_with(&format!(":{name}")))
}

async fn assert_audited(admin: &Client, category: &str, needle: &str, what: &str) {
    let found = entries(admin, category, needle).await;
    assert!(
        !found.is_empty(),
        "no {category} audit entry mentions {needle:?} after {what}; log: {}",
        admin.audit_log("limit=10000").await.text
    );
}

#[tokio::test]
async fn failed_login_is_audited_without_the_password() {
    let server = Server::default_started();
    let admin = server.admin();
    let wrong = unique_secret("AttemptedPw");
    server.secrets().add(wrong.clone());
    server
        .with_basic("Administrator", &wrong)
        .get("/Thingworx/Things")
        .await
        .expect(401);
    server
        .with_basic("ghost", &wrong)
        .get("/Thingworx/Things")
        .await
        .expect(401);
    assert_audited(&admin, "AUTHENTICATION", "Administrator", "a failed login").await;
    assert_audited(
        &admin,
        "AUTHENTICATION",
        "ghost",
        "a failed login of an unknown user",
    )
    .await;
    let all = admin.audit_log("limit=10000").await.expect(200);
    assert!(
        !all.text.contains(&wrong),
        "attempted password in the audit log"
    );
    assert!(
        !all.text.contains(server.admin_password()),
        "admin password in the audit log"
    );
}

#[tokio::test]
async fn security_changes_are_audited() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.new_user("alice").await;
    assert_audited(&admin, "SECURITY", "alice", "CreateUser").await;

    admin.create_group("Operators").await.ok();
    admin
        .add_member("Groups", "Operators", "alice", "User")
        .await
        .ok();
    let found = entries(&admin, "SECURITY", "Operators").await;
    assert!(
        found.iter().any(|r| r.to_string().contains("alice")),
        "no SECURITY entry for the membership change: {found:?}"
    );

    let key = admin.new_app_key("alice-key", "alice").await;
    assert_audited(&admin, "SECURITY", "alice-key", "CreateApplicationKey").await;
    let all = admin.audit_log("limit=10000").await.expect(200);
    assert!(!all.text.contains(&key), "key value in the audit log");

    admin.create_thing("T", "GenericThing").await.ok();
    admin.allow_user("T", "PropertyRead", "*", "alice").await;
    let found = entries(&admin, "SECURITY", "T").await;
    assert!(
        found.iter().any(|r| r.to_string().contains("PropertyRead")),
        "no SECURITY entry for the grant: {found:?}"
    );
}

#[tokio::test]
async fn thing_create_and_delete_are_audited() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_thing("Pump7", "GenericThing").await.ok();
    admin
        .entity_service("DeleteThing", json!({"name": "Pump7"}))
        .await
        .ok();
    let found = entries(&admin, "ENTITY", "Pump7").await;
    assert!(
        found.len() >= 2,
        "expected a create and a delete entry: {found:?}"
    );
    for row in &found {
        assert_eq!(row["principal"], json!("Administrator"), "{row}");
    }
    // Newest first: the delete comes before the create.
    let text: Vec<String> = found
        .iter()
        .map(|r| r["message"].to_string().to_lowercase())
        .collect();
    assert!(
        text[0].contains("delet"),
        "newest entry should be the delete: {text:?}"
    );
}

#[tokio::test]
async fn audit_rows_have_the_documented_fields_and_order() {
    let server = Server::default_started();
    let admin = server.admin();
    let before = now_ms() - 1_000;
    for i in 0..3 {
        admin
            .create_thing(&format!("T{i}"), "GenericThing")
            .await
            .ok();
    }
    let resp = admin.audit_log("category=ENTITY").await.expect(200);
    let rows = resp.rows();
    assert!(rows.len() >= 3, "{}", resp.text);
    for r in rows {
        for field in [
            "id",
            "timestamp",
            "principal",
            "category",
            "entity",
            "message",
            "sourceIp",
        ] {
            assert!(r.get(field).is_some(), "row lacks {field}: {r}");
        }
        let ts = r["timestamp"]
            .as_i64()
            .unwrap_or_else(|| panic!("timestamp is not ms: {r}"));
        assert!(
            ts >= before && ts <= now_ms() + 1_000,
            "timestamp {ts} out of range"
        );
    }
    let stamps: Vec<i64> = rows
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {stamps:?}"
    );
    assert!(names_entity(&rows[0], "T2"), "{}", resp.text);
}

#[tokio::test]
async fn audit_filters_and_limit() {
    let server = Server::default_started();
    let admin = server.admin();
    for i in 0..3 {
        admin
            .create_thing(&format!("T{i}"), "GenericThing")
            .await
            .ok();
    }
    let one = admin.audit_log("category=ENTITY&limit=1").await.expect(200);
    assert_eq!(one.rows().len(), 1, "{}", one.text);
    // Filtering by the name a user knows the Thing by must find it.
    let t1 = admin.audit_log("entity=T1").await.expect(200);
    assert!(
        !t1.rows().is_empty(),
        "GET /Thingworx/AuditLog?entity=T1 found no entry for the Thing T1: {}",
        t1.text
    );
    assert!(
        t1.rows().iter().all(|r| names_entity(r, "T1")),
        "{}",
        t1.text
    );
    let by_admin = admin
        .audit_log("principal=Administrator&category=ENTITY")
        .await
        .expect(200);
    assert!(by_admin.rows().len() >= 3, "{}", by_admin.text);
    let future = now_ms() + 3_600_000;
    let none = admin
        .audit_log(&format!("since={future}"))
        .await
        .expect(200);
    assert!(none.rows().is_empty(), "{}", none.text);
    let past = admin
        .audit_log(&format!("until={}", now_ms() - 3_600_000))
        .await
        .expect(200);
    assert!(past.rows().is_empty(), "{}", past.text);
}

#[tokio::test]
async fn query_audit_history_service_matches_the_endpoint() {
    let server = Server::default_started();
    let admin = server.admin();
    let wrong = unique_secret("WrongPw");
    server.secrets().add(wrong.clone());
    server
        .with_basic("Administrator", &wrong)
        .get("/Thingworx/Things")
        .await
        .expect(401);
    admin.new_user("alice").await;
    admin.create_thing("Pump7", "GenericThing").await.ok();
    for (category, needle) in [
        ("AUTHENTICATION", "Administrator"),
        ("SECURITY", "alice"),
        ("ENTITY", "Pump7"),
    ] {
        let svc = admin
            .call(
                "Subsystems",
                "AuditSubsystem",
                "QueryAuditHistory",
                json!({"category": category, "limit": 50}),
            )
            .await
            .expect(200);
        assert!(
            svc.rows().iter().any(|r| r.to_string().contains(needle)),
            "{category}: {}",
            svc.text
        );
        let get = admin
            .audit_log(&format!("category={category}&limit=50"))
            .await
            .expect(200);
        assert_eq!(svc.rows(), get.rows(), "{category}");
    }
    admin
        .call(
            "Subsystems",
            "AuditSubsystem",
            "QueryAuditHistory",
            json!({"limit": "many"}),
        )
        .await
        .expect_error(400, "'limit'");
}

#[tokio::test]
async fn non_admins_cannot_read_the_audit_log_until_granted() {
    let server = Server::default_started();
    let admin = server.admin();
    let alice = admin.new_user("alice").await;
    alice.audit_log("").await.expect(403);
    alice
        .call(
            "Subsystems",
            "AuditSubsystem",
            "QueryAuditHistory",
            json!({}),
        )
        .await
        .expect_status_in(&[403, 404]);

    admin
        .grant_visibility("Subsystems", "AuditSubsystem", "Everyone")
        .await
        .ok();
    admin
        .grant_runtime(
            "Subsystems",
            "AuditSubsystem",
            "ServiceInvoke",
            "QueryAuditHistory",
            "alice",
            "User",
            true,
        )
        .await
        .ok();
    alice.audit_log("").await.expect(200);
    alice
        .call(
            "Subsystems",
            "AuditSubsystem",
            "QueryAuditHistory",
            json!({}),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn audit_entries_survive_kill9() {
    let mut server = Server::default_started();
    let admin = server.admin();
    admin.create_thing("Pump7", "GenericThing").await.ok();
    server.kill9();
    server.start_again();
    assert_audited(&admin, "ENTITY", "Pump7", "a crash").await;
}
