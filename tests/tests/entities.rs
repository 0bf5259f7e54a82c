//! The entity model through the REST API: bootstrap entities, Things and their properties, templates,
//! shapes, data shapes, groups, enable/disable, conflicts.

use serde_json::{json, Value};
use thingport_e2e::Server;

fn has_name(v: &Value, name: &str) -> bool {
    v.to_string().contains(&format!("\"{name}\""))
}

#[tokio::test]
async fn bootstrap_entities_exist() {
    let server = Server::default_started();
    let admin = server.admin();
    let templates = admin.names("ThingTemplates").await;
    assert!(
        templates.contains(&"GenericThing".to_string()),
        "{templates:?}"
    );
    assert!(
        templates.contains(&"RemoteThing".to_string()),
        "{templates:?}"
    );
    let groups = admin.names("Groups").await;
    assert!(groups.contains(&"Administrators".to_string()), "{groups:?}");
    assert!(groups.contains(&"Users".to_string()), "{groups:?}");
    assert!(admin
        .names("Organizations")
        .await
        .contains(&"Everyone".to_string()));
    assert!(admin
        .names("Users")
        .await
        .contains(&"Administrator".to_string()));
    admin
        .get_entity("Subsystems", "AuditSubsystem")
        .await
        .expect(200);
    admin
        .get_entity("Subsystems", "PlatformSubsystem")
        .await
        .expect(200);

    let admins = admin
        .call("Groups", "Administrators", "GetMembers", json!({}))
        .await
        .expect(200);
    assert!(has_name(&admins.body, "Administrator"), "{}", admins.text);
    let everyone = admin
        .call("Organizations", "Everyone", "GetMembers", json!({}))
        .await
        .expect(200);
    assert!(has_name(&everyone.body, "Users"), "{}", everyone.text);

    // Every created user lands in `Users`.
    admin.new_user("alice").await;
    let users = admin
        .call("Groups", "Users", "GetMembers", json!({}))
        .await
        .expect(200);
    assert!(has_name(&users.body, "alice"), "{}", users.text);
}

#[tokio::test]
async fn remote_thing_template_has_connection_properties() {
    let server = Server::default_started();
    let admin = server.admin();
    let meta = admin
        .get_entity("ThingTemplates", "RemoteThing")
        .await
        .expect(200);
    assert!(
        meta.text.contains("isConnected") && meta.text.contains("lastConnection"),
        "{}",
        meta.text
    );
    admin.create_thing("Gw", "RemoteThing").await.expect(200);
    let meta = admin.get_entity("Things", "Gw").await.expect(200);
    assert!(
        meta.text.contains("isConnected") && meta.text.contains("lastConnection"),
        "{}",
        meta.text
    );
    let values = admin
        .get("/Thingworx/Things/Gw/Properties")
        .await
        .expect(200);
    assert!(values.row().get("isConnected").is_some(), "{}", values.text);
    let v = &values.row()["isConnected"];
    assert!(
        v.is_null() || *v == json!(false),
        "a new Thing is not connected: {v}"
    );
}

#[tokio::test]
async fn thing_lifecycle_create_list_read_delete() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .entity_service(
            "CreateThing",
            json!({"name": "Pump1", "thingTemplateName": "GenericThing",
                   "description": "the first pump", "tags": ["site:north", "pumps"]}),
        )
        .await
        .expect(200);
    let list = admin.get("/Thingworx/Things").await.expect(200);
    let row = list
        .rows()
        .iter()
        .find(|r| r["name"] == json!("Pump1"))
        .expect("listed");
    assert_eq!(row["description"], json!("the first pump"));
    assert_eq!(row["thingTemplate"], json!("GenericThing"));
    assert_eq!(row["enabled"], json!(true));
    assert!(row["tags"].to_string().contains("pumps"), "{}", row);

    let meta = admin.get_entity("Things", "Pump1").await.expect(200);
    assert!(meta.text.contains("GenericThing"), "{}", meta.text);
    assert!(
        meta.body.get("propertyDefinitions").is_some(),
        "{}",
        meta.text
    );
    assert!(
        meta.body.get("serviceDefinitions").is_some(),
        "{}",
        meta.text
    );
    assert!(
        meta.text.contains("GetPropertyValues"),
        "generic services missing: {}",
        meta.text
    );

    admin
        .entity_service("DeleteThing", json!({"name": "Pump1"}))
        .await
        .expect(200);
    admin
        .get_entity("Things", "Pump1")
        .await
        .expect_error(404, "Entity Not Found : [Pump1]");
    assert!(admin.names("Things").await.is_empty());
    // The name is free again.
    admin
        .create_thing("Pump1", "GenericThing")
        .await
        .expect(200);
}

#[tokio::test]
async fn property_values_round_trip_for_every_base_type() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_thing("T", "GenericThing").await.ok();
    admin.create_thing("Other", "GenericThing").await.ok();
    let cases: Vec<(&str, Value, Value)> = vec![
        ("STRING", json!("héllo \"world\""), json!("héllo \"world\"")),
        ("NUMBER", json!(1.5), json!(1.5)),
        ("INTEGER", json!(-7), json!(-7)),
        (
            "LONG",
            json!(1_099_511_627_776_i64),
            json!(1_099_511_627_776_i64),
        ),
        ("BOOLEAN", json!(true), json!(true)),
        (
            "DATETIME",
            json!("2024-01-02T03:04:05Z"),
            json!(1_704_164_645_000_i64),
        ),
        (
            "DATETIME",
            json!(1_704_164_645_000_i64),
            json!(1_704_164_645_000_i64),
        ),
        (
            "JSON",
            json!({"a": [1, "b", null]}),
            json!({"a": [1, "b", null]}),
        ),
        ("THINGNAME", json!("Other"), json!("Other")),
        (
            "GUID",
            json!("123e4567-e89b-12d3-a456-426614174000"),
            json!("123e4567-e89b-12d3-a456-426614174000"),
        ),
    ];
    for (i, (base_type, input, expected)) in cases.iter().enumerate() {
        let prop = format!("p{i}");
        admin
            .add_property("Things", "T", &prop, base_type)
            .await
            .expect(200);
        admin
            .set_property("T", &prop, input.clone())
            .await
            .expect(200);
        let got = admin.get_property("T", &prop).await.expect(200);
        let got = &got.row()[&prop];
        if let (Some(a), Some(b)) = (got.as_f64(), expected.as_f64()) {
            assert_eq!(a, b, "{base_type}");
        } else {
            assert_eq!(got, expected, "{base_type}");
        }
    }
    // INFOTABLE: rows come back.
    admin
        .add_property("Things", "T", "table", "INFOTABLE")
        .await
        .expect(200);
    admin
        .set_property("T", "table", json!({"rows": [{"x": 1}, {"x": 2}]}))
        .await
        .expect(200);
    let got = admin.get_property("T", "table").await.expect(200);
    assert_eq!(
        got.row()["table"]["rows"].as_array().map(Vec::len),
        Some(2),
        "{}",
        got.text
    );
    // null clears.
    admin.set_property("T", "p0", Value::Null).await.expect(200);
    assert!(admin.get_property("T", "p0").await.expect(200).row()["p0"].is_null());
}

#[tokio::test]
async fn template_properties_and_defaults_are_inherited() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .create_template("Pump", "GenericThing")
        .await
        .expect(200);
    admin
        .call(
            "ThingTemplates",
            "Pump",
            "AddPropertyDefinition",
            json!({"name": "speed", "type": "NUMBER", "defaultValue": 5, "description": "rpm"}),
        )
        .await
        .expect(200);
    admin.create_template("BigPump", "Pump").await.expect(200);
    admin.create_thing("P1", "BigPump").await.expect(200);
    let got = admin.get_property("P1", "speed").await.expect(200);
    assert_eq!(got.row()["speed"].as_f64(), Some(5.0), "{}", got.text);
    admin
        .set_property("P1", "speed", json!(7))
        .await
        .expect(200);
    assert_eq!(
        admin.get_property("P1", "speed").await.expect(200).row()["speed"].as_f64(),
        Some(7.0)
    );
    let list = admin.get("/Thingworx/ThingTemplates").await.expect(200);
    let row = list
        .rows()
        .iter()
        .find(|r| r["name"] == json!("BigPump"))
        .expect("listed");
    assert_eq!(row["baseThingTemplate"], json!("Pump"));
    // A template in use cannot be deleted.
    admin
        .entity_service("DeleteThingTemplate", json!({"name": "Pump"}))
        .await
        .expect(409);
}

#[tokio::test]
async fn shapes_add_their_properties_to_templates() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .entity_service("CreateThingShape", json!({"name": "Located"}))
        .await
        .expect(200);
    admin
        .add_property("ThingShapes", "Located", "position", "STRING")
        .await
        .expect(200);
    admin
        .entity_service(
            "CreateThingTemplate",
            json!({"name": "Truck", "implementedShapes": ["Located"]}),
        )
        .await
        .expect(200);
    admin.create_thing("Truck1", "Truck").await.expect(200);
    admin
        .set_property("Truck1", "position", json!("depot"))
        .await
        .expect(200);
    assert_eq!(
        admin
            .get_property("Truck1", "position")
            .await
            .expect(200)
            .row()["position"],
        json!("depot")
    );
    assert!(admin
        .names("ThingShapes")
        .await
        .contains(&"Located".to_string()));
}

#[tokio::test]
async fn infotable_rows_are_checked_against_the_data_shape() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .entity_service(
            "CreateDataShape",
            json!({"name": "Point", "fields": {"rows": [
                {"name": "x", "baseType": "NUMBER"}, {"name": "label", "baseType": "STRING"}]}}),
        )
        .await
        .expect(200);
    assert!(admin
        .names("DataShapes")
        .await
        .contains(&"Point".to_string()));
    admin.create_thing("T", "GenericThing").await.ok();
    admin
        .call(
            "Things",
            "T",
            "AddPropertyDefinition",
            json!({"name": "points", "type": "INFOTABLE", "dataShape": "Point"}),
        )
        .await
        .expect(200);
    admin
        .set_property("T", "points", json!({"rows": [{"x": 1.5, "label": "a"}]}))
        .await
        .expect(200);
    admin
        .set_property(
            "T",
            "points",
            json!({"rows": [{"x": "not a number", "label": "a"}]}),
        )
        .await
        .expect(400);
    let got = admin.get_property("T", "points").await.expect(200);
    assert_eq!(
        got.row()["points"]["rows"][0]["label"],
        json!("a"),
        "{}",
        got.text
    );
}

#[tokio::test]
async fn remove_property_definition() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .thing_with_properties("T", "GenericThing", &[("p", "STRING", json!("v"))])
        .await;
    admin
        .call(
            "Things",
            "T",
            "RemovePropertyDefinition",
            json!({"name": "p"}),
        )
        .await
        .expect(200);
    admin
        .get_property("T", "p")
        .await
        .expect_error(404, "Property Not Found : [p] in [T]");
    // Re-adding starts empty.
    admin
        .add_property("Things", "T", "p", "STRING")
        .await
        .expect(200);
    assert!(admin.get_property("T", "p").await.expect(200).row()["p"].is_null());
}

#[tokio::test]
async fn disabled_thing_refuses_writes_until_enabled() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .thing_with_properties("T", "GenericThing", &[("p", "STRING", json!("v"))])
        .await;
    admin
        .call("Things", "T", "DisableThing", json!({}))
        .await
        .expect(200);
    let list = admin.get("/Thingworx/Things").await.expect(200);
    assert_eq!(list.row()["enabled"], json!(false), "{}", list.text);
    let r = admin.set_property("T", "p", json!("w")).await.expect(409);
    assert!(
        r.error().to_lowercase().contains("disabled"),
        "{:?}",
        r.error()
    );
    admin
        .call("Things", "T", "EnableThing", json!({}))
        .await
        .expect(200);
    admin.set_property("T", "p", json!("w")).await.expect(200);
}

#[tokio::test]
async fn group_membership_cycles_are_refused() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_group("A").await.ok();
    admin.create_group("B").await.ok();
    admin.create_group("C").await.ok();
    admin
        .add_member("Groups", "A", "B", "Group")
        .await
        .expect(200);
    admin
        .add_member("Groups", "B", "C", "Group")
        .await
        .expect(200);
    admin
        .add_member("Groups", "C", "A", "Group")
        .await
        .expect(409);
    admin
        .add_member("Groups", "A", "A", "Group")
        .await
        .expect(409);
    let members = admin
        .call("Groups", "C", "GetMembers", json!({}))
        .await
        .expect(200);
    assert!(!has_name(&members.body, "A"), "{}", members.text);
}

#[tokio::test]
async fn builtin_entities_cannot_be_deleted() {
    let server = Server::default_started();
    let admin = server.admin();
    for (service, name) in [
        ("DeleteThingTemplate", "GenericThing"),
        ("DeleteThingTemplate", "RemoteThing"),
        ("DeleteGroup", "Administrators"),
        ("DeleteGroup", "Users"),
        ("DeleteOrganization", "Everyone"),
        ("DeleteUser", "Administrator"),
    ] {
        admin
            .entity_service(service, json!({"name": name}))
            .await
            .expect(409);
    }
    assert!(admin
        .names("ThingTemplates")
        .await
        .contains(&"GenericThing".to_string()));
    assert!(admin
        .names("Users")
        .await
        .contains(&"Administrator".to_string()));
}

#[tokio::test]
async fn permissions_are_readable_as_json() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_thing("T", "GenericThing").await.ok();
    admin.new_user("alice").await;
    admin.allow_user("T", "PropertyRead", "*", "alice").await;
    admin
        .grant_design("Things", "T", "Read", "alice", "User", true)
        .await
        .ok();
    admin.show_to_everyone("T").await;
    let rt = admin
        .call("Things", "T", "GetRunTimePermissionsAsJSON", json!({}))
        .await
        .expect(200);
    assert!(
        rt.text.contains("alice") && rt.text.contains("PropertyRead"),
        "{}",
        rt.text
    );
    let dt = admin
        .call("Things", "T", "GetDesignTimePermissionsAsJSON", json!({}))
        .await
        .expect(200);
    assert!(
        dt.text.contains("alice") && dt.text.contains("Read"),
        "{}",
        dt.text
    );
    let vis = admin
        .call("Things", "T", "GetVisibilityPermissionsAsJSON", json!({}))
        .await
        .expect(200);
    assert!(vis.text.contains("Everyone"), "{}", vis.text);
}
