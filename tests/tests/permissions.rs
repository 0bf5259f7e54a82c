//! Permission rules of SPEC §2 through the real binary: visibility, design time, run time, groups,
//! Deny over Allow, template instance permissions, administrator bypass.

use serde_json::json;
use thingport_e2e::{Client, Server};

/// Admin creates Thing `T` (GenericThing) with NUMBER `temp` = 21.5 and STRING `other` = "x".
async fn thing_t(admin: &Client) {
    admin
        .thing_with_properties(
            "T",
            "GenericThing",
            &[
                ("temp", "NUMBER", json!(21.5)),
                ("other", "STRING", json!("x")),
            ],
        )
        .await;
}

#[tokio::test]
async fn invisible_thing_answers_exactly_like_a_missing_one() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let user = admin.new_user("alice").await;
    // Run-time rights without visibility must not reveal the Thing either.
    admin.allow_user("T", "PropertyRead", "*", "alice").await;
    admin
        .grant_design("Things", "T", "Read", "alice", "User", true)
        .await
        .ok();

    let hidden = user
        .get_entity("Things", "T")
        .await
        .expect_error(404, "Entity Not Found : [T]");
    let missing = user
        .get_entity("Things", "Nope")
        .await
        .expect_error(404, "Entity Not Found : [Nope]");
    assert_eq!(
        hidden.error().replace("[T]", "[?]"),
        missing.error().replace("[Nope]", "[?]"),
        "an invisible Thing must answer exactly like a missing one"
    );
    user.get_property("T", "temp")
        .await
        .expect_error(404, "Entity Not Found : [T]");
    user.call("Things", "T", "GetPropertyValues", json!({}))
        .await
        .expect_error(404, "Entity Not Found : [T]");
    assert!(!user.names("Things").await.contains(&"T".to_string()));
}

#[tokio::test]
async fn visible_thing_without_design_time_read_is_403() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let user = admin.new_user("alice").await;
    admin.show_to_everyone("T").await;

    let denied = user.get_entity("Things", "T").await.expect(403);
    assert!(
        denied.error().starts_with("Not authorized for Read on") && denied.error().contains('T'),
        "unexpected message {:?}",
        denied.error()
    );
    // Visible Things are listed.
    assert!(user.names("Things").await.contains(&"T".to_string()));

    admin
        .grant_design("Things", "T", "Read", "alice", "User", true)
        .await
        .ok();
    let meta = user.get_entity("Things", "T").await.expect(200);
    assert!(
        meta.text.contains("temp"),
        "metadata lacks the property definitions: {}",
        meta.text
    );
}

#[tokio::test]
async fn missing_property_read_is_403_naming_property_and_thing() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let user = admin.new_user("alice").await;
    admin.show_to_everyone("T").await;

    user.get_property("T", "temp")
        .await
        .expect_error(403, "Not authorized for PropertyRead on temp in T");
    user.get("/Thingworx/Things/T/Properties").await.expect(403);

    // A grant on one named property covers that property only.
    admin.allow_user("T", "PropertyRead", "temp", "alice").await;
    let row = user.get_property("T", "temp").await.expect(200);
    assert_eq!(row.row()["temp"].as_f64(), Some(21.5));
    user.get_property("T", "other")
        .await
        .expect_error(403, "Not authorized for PropertyRead on other in T");
    let all = user.get("/Thingworx/Things/T/Properties").await.expect(200);
    assert_eq!(all.row()["temp"].as_f64(), Some(21.5));
    assert!(
        all.row().get("other").is_none(),
        "unreadable property listed: {}",
        all.text
    );

    // Revoking takes effect at once.
    admin
        .revoke_runtime("Things", "T", "PropertyRead", "temp", "alice", "User")
        .await
        .ok();
    user.get_property("T", "temp")
        .await
        .expect_error(403, "Not authorized for PropertyRead on temp in T");
}

#[tokio::test]
async fn property_write_needs_property_write() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let user = admin.new_user("alice").await;
    admin.show_to_everyone("T").await;
    admin.allow_user("T", "PropertyRead", "*", "alice").await;

    user.set_property("T", "temp", json!(30))
        .await
        .expect_error(403, "Not authorized for PropertyWrite on temp in T");
    assert_eq!(
        admin.get_property("T", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(21.5)
    );

    admin
        .allow_user("T", "PropertyWrite", "temp", "alice")
        .await;
    user.set_property("T", "temp", json!(30)).await.expect(200);
    assert_eq!(
        admin.get_property("T", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(30.0)
    );
}

#[tokio::test]
async fn get_property_values_needs_service_invoke() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let user = admin.new_user("alice").await;
    admin.show_to_everyone("T").await;
    admin.allow_user("T", "PropertyRead", "*", "alice").await;

    user.call("Things", "T", "GetPropertyValues", json!({}))
        .await
        .expect_error(
            403,
            "Not authorized for ServiceInvoke on GetPropertyValues in T",
        );
    admin
        .allow_user("T", "ServiceInvoke", "GetPropertyValues", "alice")
        .await;
    let values = user
        .call("Things", "T", "GetPropertyValues", json!({}))
        .await
        .expect(200);
    assert_eq!(values.row()["temp"].as_f64(), Some(21.5));
    // The grant names one service: others stay closed.
    user.call("Things", "T", "DisableThing", json!({}))
        .await
        .expect_error(403, "Not authorized for ServiceInvoke on DisableThing in T");
}

#[tokio::test]
async fn administrators_bypass_every_check() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    // No grant at all: the administrator still reads, writes and sees.
    admin.get_entity("Things", "T").await.expect(200);
    admin.get_property("T", "temp").await.expect(200);
    admin
        .call("Things", "T", "GetPropertyValues", json!({}))
        .await
        .expect(200);

    let carol = admin.new_user("carol").await;
    carol.get_property("T", "temp").await.expect(404);
    admin
        .add_member("Groups", "Administrators", "carol", "User")
        .await
        .ok();
    carol.get_entity("Things", "T").await.expect(200);
    assert_eq!(
        carol.get_property("T", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(21.5)
    );
    carol
        .create_thing("ByCarol", "GenericThing")
        .await
        .expect(200);
}

#[tokio::test]
async fn create_thing_needs_create_on_the_collection() {
    let server = Server::default_started();
    let admin = server.admin();
    let alice = admin.new_user("alice").await;

    let denied = alice.create_thing("Mine", "GenericThing").await.expect(403);
    assert!(
        denied.error().starts_with("Not authorized for Create on"),
        "unexpected message {:?}",
        denied.error()
    );
    assert!(!admin.names("Things").await.contains(&"Mine".to_string()));

    admin
        .grant_collection("Things", "Create", "alice", "User", true)
        .await
        .ok();
    alice.create_thing("Mine", "GenericThing").await.expect(200);
    assert!(admin.names("Things").await.contains(&"Mine".to_string()));
}

#[tokio::test]
async fn design_time_update_needed_to_change_a_thing() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
    admin.show_to_everyone("T").await;
    admin
        .grant_design("Things", "T", "Read", "alice", "User", true)
        .await
        .ok();

    let denied = alice
        .add_property("Things", "T", "extra", "STRING")
        .await
        .expect(403);
    assert!(
        denied.error().starts_with("Not authorized for Update on"),
        "{:?}",
        denied.error()
    );
    // Nor may a user grant itself anything.
    alice
        .grant_runtime("Things", "T", "PropertyRead", "*", "alice", "User", true)
        .await
        .expect(403);
    alice.get_property("T", "temp").await.expect(403);

    admin
        .grant_design("Things", "T", "Update", "alice", "User", true)
        .await
        .ok();
    alice
        .add_property("Things", "T", "extra", "STRING")
        .await
        .expect(200);
}

#[tokio::test]
async fn non_admin_cannot_create_an_app_key_for_another_user() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
    admin.new_user("bob").await;
    admin
        .grant_collection("ApplicationKeys", "Create", "alice", "User", true)
        .await
        .ok();

    alice
        .create_app_key("bobs-key", "bob", None)
        .await
        .expect(403);
    alice
        .create_app_key("admin-key", "Administrator", None)
        .await
        .expect(403);
    assert!(!admin
        .names("ApplicationKeys")
        .await
        .contains(&"bobs-key".to_string()));

    let key = alice.new_app_key("alices-key", "alice").await;
    // The key acts as alice, with alice's rights and no more.
    let by_key = server.with_app_key(&key);
    by_key.get_property("T", "temp").await.expect(404);
    admin.show_to_everyone("T").await;
    admin.allow_user("T", "PropertyRead", "*", "alice").await;
    by_key.get_property("T", "temp").await.expect(200);
}

#[tokio::test]
async fn new_user_is_denied_by_default_but_sees_builtin_templates() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;

    let templates = alice.names("ThingTemplates").await;
    assert!(
        templates.contains(&"GenericThing".to_string()),
        "{templates:?}"
    );
    assert!(
        templates.contains(&"RemoteThing".to_string()),
        "{templates:?}"
    );
    assert!(alice.names("Things").await.is_empty());
    alice.create_thing("X", "GenericThing").await.expect(403);
    alice
        .create_user("mallory", "mallory-password-1")
        .await
        .expect(403);
    alice.create_group("Mine").await.expect(403);
    alice
        .add_member("Groups", "Administrators", "alice", "User")
        .await
        .expect_status_in(&[403, 404]);
}

#[tokio::test]
async fn delete_needs_design_time_delete() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    admin.create_thing("Hidden", "GenericThing").await.ok();
    let alice = admin.new_user("alice").await;
    admin.show_to_everyone("T").await;

    let denied = alice
        .entity_service("DeleteThing", json!({"name": "T"}))
        .await
        .expect(403);
    assert!(
        denied.error().starts_with("Not authorized for Delete on"),
        "{:?}",
        denied.error()
    );
    alice
        .entity_service("DeleteThing", json!({"name": "Hidden"}))
        .await
        .expect_error(404, "Entity Not Found : [Hidden]");
    assert_eq!(admin.names("Things").await.len(), 2);

    admin
        .grant_design("Things", "T", "Delete", "alice", "User", true)
        .await
        .ok();
    alice
        .entity_service("DeleteThing", json!({"name": "T"}))
        .await
        .expect(200);
    assert_eq!(admin.names("Things").await, vec!["Hidden".to_string()]);
}

#[tokio::test]
async fn creating_from_an_invisible_template_is_404() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_template("Secret", "GenericThing").await.ok();
    let alice = admin.new_user("alice").await;
    admin
        .grant_collection("Things", "Create", "alice", "User", true)
        .await
        .ok();
    alice
        .create_thing("Mine", "Secret")
        .await
        .expect_error(404, "Entity Not Found : [Secret]");
    assert!(admin.names("Things").await.is_empty());
    alice.create_thing("Mine", "GenericThing").await.expect(200);
}

#[tokio::test]
async fn users_cannot_touch_other_users() {
    let server = Server::default_started();
    let admin = server.admin();
    let alice = admin.new_user("alice").await;
    admin.new_user("bob").await;
    let stolen = thingport_e2e::unique_secret("StolenPw");
    server.secrets().add(stolen.clone());
    alice
        .call("Users", "bob", "SetPassword", json!({"password": stolen}))
        .await
        .expect_status_in(&[403, 404]);
    alice
        .call(
            "Users",
            "Administrator",
            "SetPassword",
            json!({"password": stolen}),
        )
        .await
        .expect_status_in(&[403, 404]);
    alice
        .entity_service("DeleteUser", json!({"name": "bob"}))
        .await
        .expect_status_in(&[403, 404]);
    server
        .with_basic("Administrator", &stolen)
        .get("/Thingworx/Things")
        .await
        .expect(401);
    assert!(admin.names("Users").await.contains(&"bob".to_string()));
}
