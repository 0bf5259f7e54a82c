//! Permission rules of SPEC §2 that involve more than one principal or entity: group grants (nested
//! too), Deny over Allow, template instance permissions and instance visibility, organizations.

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
async fn group_grant_applies_to_members_only() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
    let bob = admin.new_user("bob").await;
    admin.create_group("Operators").await.ok();
    admin
        .add_member("Groups", "Operators", "alice", "User")
        .await
        .ok();
    admin.show_to_everyone("T").await;

    alice.get_property("T", "temp").await.expect(403);
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
    assert_eq!(
        alice.get_property("T", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(21.5)
    );
    bob.get_property("T", "temp")
        .await
        .expect_error(403, "Not authorized for PropertyRead on temp in T");

    admin
        .remove_member("Groups", "Operators", "alice", "User")
        .await
        .ok();
    alice.get_property("T", "temp").await.expect(403);
}

#[tokio::test]
async fn nested_group_grant_is_transitive() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
    admin.create_group("Outer").await.ok();
    admin.create_group("Inner").await.ok();
    admin
        .add_member("Groups", "Outer", "Inner", "Group")
        .await
        .ok();
    admin
        .add_member("Groups", "Inner", "alice", "User")
        .await
        .ok();
    admin.show_to_everyone("T").await;
    admin
        .grant_runtime("Things", "T", "PropertyRead", "*", "Outer", "Group", true)
        .await
        .ok();

    assert_eq!(
        alice.get_property("T", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(21.5)
    );
    // Cutting the link between the groups cuts the right.
    admin
        .remove_member("Groups", "Outer", "Inner", "Group")
        .await
        .ok();
    alice.get_property("T", "temp").await.expect(403);
}

#[tokio::test]
async fn user_deny_beats_group_allow() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
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
    admin
        .grant_runtime("Things", "T", "PropertyRead", "*", "alice", "User", false)
        .await
        .ok();
    alice
        .get_property("T", "temp")
        .await
        .expect_error(403, "Not authorized for PropertyRead on temp in T");
}

#[tokio::test]
async fn group_deny_beats_user_allow() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
    admin.create_group("Banned").await.ok();
    admin
        .add_member("Groups", "Banned", "alice", "User")
        .await
        .ok();
    admin.show_to_everyone("T").await;
    admin.allow_user("T", "PropertyRead", "*", "alice").await;
    alice.get_property("T", "temp").await.expect(200);
    admin
        .grant_runtime("Things", "T", "PropertyRead", "*", "Banned", "Group", false)
        .await
        .ok();
    alice
        .get_property("T", "temp")
        .await
        .expect_error(403, "Not authorized for PropertyRead on temp in T");
}

#[tokio::test]
async fn template_instance_permission_applies_to_its_things() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_template("Pump", "GenericThing").await.ok();
    admin
        .thing_with_properties("P1", "Pump", &[("temp", "NUMBER", json!(1))])
        .await;
    admin
        .thing_with_properties("G1", "GenericThing", &[("temp", "NUMBER", json!(2))])
        .await;
    let alice = admin.new_user("alice").await;
    admin.show_to_everyone("P1").await;
    admin.show_to_everyone("G1").await;

    alice.get_property("P1", "temp").await.expect(403);
    admin
        .grant_runtime(
            "ThingTemplates",
            "Pump",
            "PropertyRead",
            "*",
            "alice",
            "User",
            true,
        )
        .await
        .ok();
    assert_eq!(
        alice.get_property("P1", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(1.0)
    );
    alice
        .get_property("G1", "temp")
        .await
        .expect_error(403, "Not authorized for PropertyRead on temp in G1");

    // A Thing created after the grant inherits it too.
    admin
        .thing_with_properties("P2", "Pump", &[("temp", "NUMBER", json!(3))])
        .await;
    admin.show_to_everyone("P2").await;
    assert_eq!(
        alice.get_property("P2", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(3.0)
    );

    // A Deny on the Thing itself beats the template's Allow.
    admin
        .grant_runtime("Things", "P1", "PropertyRead", "*", "alice", "User", false)
        .await
        .ok();
    alice.get_property("P1", "temp").await.expect(403);
}

#[tokio::test]
async fn instance_visibility_on_template_makes_its_things_visible() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_template("Pump", "GenericThing").await.ok();
    admin
        .thing_with_properties("P1", "Pump", &[("temp", "NUMBER", json!(1))])
        .await;
    admin
        .thing_with_properties("G1", "GenericThing", &[("temp", "NUMBER", json!(2))])
        .await;
    let alice = admin.new_user("alice").await;
    admin.allow_user("P1", "PropertyRead", "*", "alice").await;
    admin.allow_user("G1", "PropertyRead", "*", "alice").await;

    alice
        .get_property("P1", "temp")
        .await
        .expect_error(404, "Entity Not Found : [P1]");
    admin
        .grant_instance_visibility("Pump", "Everyone")
        .await
        .ok();
    assert_eq!(
        alice.get_property("P1", "temp").await.expect(200).row()["temp"].as_f64(),
        Some(1.0)
    );
    alice
        .get_property("G1", "temp")
        .await
        .expect_error(404, "Entity Not Found : [G1]");
    let names = alice.names("Things").await;
    assert!(names.contains(&"P1".to_string()), "{names:?}");
    assert!(!names.contains(&"G1".to_string()), "{names:?}");

    admin
        .call(
            "ThingTemplates",
            "Pump",
            "DeleteInstanceVisibilityPermission",
            json!({"organization": "Everyone"}),
        )
        .await
        .ok();
    alice
        .get_property("P1", "temp")
        .await
        .expect_error(404, "Entity Not Found : [P1]");
}

#[tokio::test]
async fn visibility_follows_organization_membership() {
    let server = Server::default_started();
    let admin = server.admin();
    thing_t(&admin).await;
    let alice = admin.new_user("alice").await;
    let bob = admin.new_user("bob").await;
    admin.create_organization("Plant1").await.ok();
    admin
        .add_member("Organizations", "Plant1", "alice", "User")
        .await
        .ok();
    admin.grant_visibility("Things", "T", "Plant1").await.ok();
    admin.allow_user("T", "PropertyRead", "*", "alice").await;
    admin.allow_user("T", "PropertyRead", "*", "bob").await;

    alice.get_property("T", "temp").await.expect(200);
    bob.get_property("T", "temp")
        .await
        .expect_error(404, "Entity Not Found : [T]");
}
