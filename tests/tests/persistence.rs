//! Persistence (SPEC §8): what was acknowledged survives a graceful restart and `kill -9`.

use serde_json::json;
use thingport_e2e::{Client, Server};

/// Thing `T` with INTEGER `count` = 42, visible to everyone, readable by user `alice`, who owns an
/// application key; also a group `Operators` with `alice`. Returns alice's password and key.
async fn populate(server: &Server) -> String {
    let admin = server.admin();
    admin
        .thing_with_properties("T", "GenericThing", &[("count", "INTEGER", json!(42))])
        .await;
    admin.new_user("alice").await;
    admin.create_group("Operators").await.ok();
    admin
        .add_member("Groups", "Operators", "alice", "User")
        .await
        .ok();
    admin.show_to_everyone("T").await;
    admin
        .grant_runtime(
            "Things",
            "T",
            "PropertyRead",
            "*",
            "Operators",
            "Group",
            true,
        )
        .await
        .ok();
    admin.new_app_key("alice-key", "alice").await
}

async fn assert_populated(server: &Server, key: &str) {
    let admin = server.admin();
    assert!(admin.names("Things").await.contains(&"T".to_string()));
    let meta = admin.get_entity("Things", "T").await.expect(200);
    assert!(
        meta.text.contains("count"),
        "property definition lost: {}",
        meta.text
    );
    assert!(admin.names("Users").await.contains(&"alice".to_string()));
    let members = admin
        .call("Groups", "Operators", "GetMembers", json!({}))
        .await
        .expect(200);
    assert!(
        members.text.contains("alice"),
        "membership lost: {}",
        members.text
    );
    // The key, the visibility and the group grant, all in one read.
    let by_key = server.with_app_key(key);
    let value = by_key.get_property("T", "count").await.expect(200);
    assert_eq!(value.row()["count"], json!(42));
}

#[tokio::test]
async fn everything_survives_a_graceful_restart() {
    let mut server = Server::default_started();
    let key = populate(&server).await;
    server.restart();
    assert_populated(&server, &key).await;
}

#[tokio::test]
async fn everything_survives_kill9_right_after_the_last_write() {
    let mut server = Server::default_started();
    let key = populate(&server).await;
    server.kill9();
    server.start_again();
    assert_populated(&server, &key).await;
}

#[tokio::test]
async fn each_acknowledged_write_survives_kill9() {
    let mut server = Server::default_started();
    let admin = server.admin();

    admin.create_thing("T", "GenericThing").await.expect(200);
    server.kill9();
    server.start_again();
    assert!(admin.names("Things").await.contains(&"T".to_string()));

    admin
        .add_property("Things", "T", "count", "INTEGER")
        .await
        .expect(200);
    server.kill9();
    server.start_again();
    admin.set_property("T", "count", json!(7)).await.expect(200);
    server.kill9();
    server.start_again();
    assert_eq!(
        admin.get_property("T", "count").await.expect(200).row()["count"],
        json!(7)
    );

    let alice = admin.new_user("alice").await;
    server.kill9();
    server.start_again();
    admin.show_to_everyone("T").await;
    server.kill9();
    server.start_again();
    admin
        .allow_user("T", "PropertyRead", "count", "alice")
        .await;
    server.kill9();
    server.start_again();
    assert_eq!(
        alice.get_property("T", "count").await.expect(200).row()["count"],
        json!(7)
    );

    let key = admin.new_app_key("k1", "alice").await;
    server.kill9();
    server.start_again();
    server
        .with_app_key(&key)
        .get_property("T", "count")
        .await
        .expect(200);

    admin
        .revoke_runtime("Things", "T", "PropertyRead", "count", "alice", "User")
        .await
        .expect(200);
    server.kill9();
    server.start_again();
    alice.get_property("T", "count").await.expect(403);

    admin
        .entity_service("DeleteThing", json!({"name": "T"}))
        .await
        .expect(200);
    server.kill9();
    server.start_again();
    assert!(!admin.names("Things").await.contains(&"T".to_string()));
    admin
        .get_entity("Things", "T")
        .await
        .expect_error(404, "Entity Not Found : [T]");
}

#[tokio::test]
async fn a_burst_of_writes_survives_kill9() {
    let mut server = Server::default_started();
    let admin = server.admin();
    admin
        .thing_with_properties("T", "GenericThing", &[("count", "INTEGER", json!(0))])
        .await;
    for i in 1..=50 {
        admin.set_property("T", "count", json!(i)).await.expect(200);
    }
    // Concurrent creates, all acknowledged before the kill.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c: Client = admin.clone();
        tasks.push(tokio::spawn(async move {
            c.create_thing(&format!("Burst{i}"), "GenericThing")
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    server.kill9();
    server.start_again();
    assert_eq!(
        admin.get_property("T", "count").await.expect(200).row()["count"],
        json!(50)
    );
    let names = admin.names("Things").await;
    for i in 0..20 {
        assert!(
            names.contains(&format!("Burst{i}")),
            "Burst{i} lost: {names:?}"
        );
    }
}

#[tokio::test]
async fn sigterm_exits_zero_and_releases_the_data_dir() {
    let mut server = Server::default_started();
    server
        .admin()
        .create_thing("T", "GenericThing")
        .await
        .expect(200);
    let status = server.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown must exit 0, got {status:?}"
    );
    server.start_again();
    assert!(server
        .admin()
        .names("Things")
        .await
        .contains(&"T".to_string()));
}

#[tokio::test]
async fn admin_password_flag_only_applies_on_first_start() {
    let mut server = Server::default_started();
    let first = server.admin_password().to_string();
    let second = thingport_e2e::unique_secret("OtherAdminPw");
    server.secrets().add(second.clone());
    server.options_mut().admin_password = second.clone();
    server.restart();
    server
        .anonymous()
        .with_basic("Administrator", &first)
        .get("/Thingworx/Things")
        .await
        .expect(200);
    server
        .anonymous()
        .with_basic("Administrator", &second)
        .get("/Thingworx/Things")
        .await
        .expect_error(401, "invalid credentials");
}

#[tokio::test]
async fn failed_writes_leave_nothing_behind_after_restart() {
    let mut server = Server::default_started();
    let admin = server.admin();
    let before = admin.names("Things").await;
    admin
        .create_thing("x'; DROP TABLE things;--", "GenericThing")
        .await
        .expect(400);
    admin
        .create_thing("Orphan", "NoSuchTemplate")
        .await
        .expect(404);
    server.kill9();
    server.start_again();
    assert_eq!(admin.names("Things").await, before);
}
