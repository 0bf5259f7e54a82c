//! Bad input (issue 2): each kind gets the right 4xx, a message that names the problem, and changes
//! nothing. Every error body is also checked for leaks by `Resp::expect`.

use serde_json::{json, Value};
use thingport_e2e::Server;

const CREATE_THING: &str = "/Thingworx/Resources/EntityServices/Services/CreateThing";

#[tokio::test]
async fn malformed_json_is_400_naming_json() {
    let server = Server::default_started();
    let admin = server.admin();
    for body in [
        r#"{"name": "#,
        "{name: 'x'}",
        "not json at all",
        r#"{"name":"A","thingTemplateName":"GenericThing""#,
    ] {
        let resp = admin.post_raw(CREATE_THING, body).await.expect(400);
        assert!(
            resp.error().contains("JSON"),
            "body {body:?}: message {:?}",
            resp.error()
        );
    }
    assert!(admin.names("Things").await.is_empty());
}

#[tokio::test]
async fn body_that_is_not_an_object_is_400() {
    let server = Server::default_started();
    let admin = server.admin();
    for body in [json!([1, 2]), json!("name"), json!(5), json!(true)] {
        let resp = admin.post(CREATE_THING, &body).await.expect(400);
        assert!(
            resp.error().to_lowercase().contains("object"),
            "body {body}: message {:?} should say an object is expected",
            resp.error()
        );
    }
    // JSON `null` may be read as "no parameters"; it must still be refused.
    admin.post(CREATE_THING, &json!(null)).await.expect(400);
    assert!(admin.names("Things").await.is_empty());
}

#[tokio::test]
async fn wrong_parameter_type_is_400_naming_parameter_and_type() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .entity_service(
            "CreateThing",
            json!({"name": 5, "thingTemplateName": "GenericThing"}),
        )
        .await
        .expect_error(400, "parameter 'name' must be STRING");
    admin
        .entity_service(
            "CreateThing",
            json!({"name": "A", "thingTemplateName": ["GenericThing"]}),
        )
        .await
        .expect_error(400, "'thingTemplateName'");
    admin
        .entity_service(
            "CreateThing",
            json!({"name": "A", "thingTemplateName": "GenericThing", "tags": "not-an-array"}),
        )
        .await
        .expect_error(400, "'tags'");
    admin.create_thing("T", "GenericThing").await.ok();
    let resp = admin
        .call(
            "Things",
            "T",
            "AddRunTimePermission",
            json!({"type": "PropertyRead", "resource": "*", "principal": "Administrator",
                   "principalType": "User", "allow": "yes"}),
        )
        .await
        .expect_error(400, "'allow'");
    assert!(resp.error().contains("BOOLEAN"), "{:?}", resp.error());
    assert_eq!(admin.names("Things").await, vec!["T".to_string()]);
}

#[tokio::test]
async fn missing_required_parameter_is_400_naming_it() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .entity_service("CreateThing", json!({"thingTemplateName": "GenericThing"}))
        .await
        .expect_error(400, "missing required parameter 'name' (STRING)");
    admin
        .entity_service("CreateThing", json!({"name": "A"}))
        .await
        .expect_error(400, "missing required parameter 'thingTemplateName'");
    admin
        .entity_service("CreateUser", json!({"name": "bob"}))
        .await
        .expect_error(400, "missing required parameter 'password'");
    assert!(admin.names("Things").await.is_empty());
    assert!(!admin.names("Users").await.contains(&"bob".to_string()));
}

#[tokio::test]
async fn unknown_parameter_is_400_naming_it_and_the_service() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .entity_service(
            "CreateThing",
            json!({"name": "A", "thingTemplateName": "GenericThing", "bogus": 1}),
        )
        .await
        .expect_error(400, "unknown parameter 'bogus' for service 'CreateThing'");
    assert!(admin.names("Things").await.is_empty());
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_is_created() {
    let server = Server::default_started();
    let admin = server.admin();
    let things = admin.names("Things").await;
    let users = admin.names("Users").await;
    let groups = admin.names("Groups").await;
    let long = "a".repeat(200);
    let hostile = [
        "../x",
        "a/b",
        "a\\b",
        "x'; DROP TABLE things;--",
        "\"quoted\"",
        "",
        " ",
        "white space",
        "-leading",
        "nul\u{0}byte",
        "new\nline",
        "<script>",
        long.as_str(),
    ];
    for name in hostile {
        let r = admin.create_thing(name, "GenericThing").await.expect(400);
        assert!(
            r.error().starts_with("invalid ") && r.error().contains(" name '"),
            "{name:?}: {:?}",
            r.error()
        );
        admin
            .create_user(name, "a-good-long-password")
            .await
            .expect_error(400, "name '");
        admin.create_group(name).await.expect_error(400, "name '");
    }
    assert_eq!(admin.names("Things").await, things);
    assert_eq!(admin.names("Users").await, users);
    assert_eq!(admin.names("Groups").await, groups);
    // 128 characters is the documented maximum and is fine.
    admin
        .create_thing(&"b".repeat(128), "GenericThing")
        .await
        .expect(200);
    admin
        .create_thing(&"c".repeat(129), "GenericThing")
        .await
        .expect(400);
    // A hostile property name is refused the same way.
    admin.create_thing("T", "GenericThing").await.ok();
    admin
        .add_property("Things", "T", "../p", "STRING")
        .await
        .expect_error(400, "name '");
}

#[tokio::test]
async fn unknown_entities_services_and_properties_are_404() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .thing_with_properties("T", "GenericThing", &[("p", "STRING", json!("v"))])
        .await;
    admin
        .get_entity("Things", "Nope")
        .await
        .expect_error(404, "Entity Not Found : [Nope]");
    admin
        .get_property("Nope", "p")
        .await
        .expect_error(404, "Entity Not Found : [Nope]");
    admin
        .call("Things", "Nope", "GetPropertyValues", json!({}))
        .await
        .expect_error(404, "Entity Not Found : [Nope]");
    admin
        .call("Things", "T", "NoSuchService", json!({}))
        .await
        .expect_error(404, "Service Not Found : [NoSuchService] in [T]");
    admin
        .get_property("T", "nope")
        .await
        .expect_error(404, "Property Not Found : [nope] in [T]");
    admin
        .set_property("T", "nope", json!("v"))
        .await
        .expect_error(404, "Property Not Found : [nope] in [T]");
    admin
        .entity_service("DeleteThing", json!({"name": "Nope"}))
        .await
        .expect_error(404, "Entity Not Found : [Nope]");
    admin
        .get_entity("Users", "nobody")
        .await
        .expect_error(404, "Entity Not Found : [nobody]");
    admin
        .add_member("Groups", "NoGroup", "Administrator", "User")
        .await
        .expect_error(404, "Entity Not Found : [NoGroup]");
    admin
        .add_member("Groups", "Users", "nobody", "User")
        .await
        .expect_error(404, "Entity Not Found : [nobody]");
    admin
        .create_thing("Orphan", "NoSuchTemplate")
        .await
        .expect_error(404, "Entity Not Found : [NoSuchTemplate]");
    assert_eq!(admin.names("Things").await, vec!["T".to_string()]);
}

#[tokio::test]
async fn property_value_of_the_wrong_type_is_400_and_the_old_value_stays() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .thing_with_properties("T", "GenericThing", &[("count", "INTEGER", json!(5))])
        .await;
    admin
        .set_property("T", "count", json!("six"))
        .await
        .expect_error(400, "INTEGER");
    admin
        .set_property("T", "count", json!(6.5))
        .await
        .expect_error(400, "INTEGER");
    assert_eq!(
        admin.get_property("T", "count").await.expect(200).row()["count"],
        json!(5)
    );
    // A body naming another property than the path is refused too.
    admin
        .put("/Thingworx/Things/T/Properties/count", &json!({"other": 1}))
        .await
        .expect(400);
    assert_eq!(
        admin.get_property("T", "count").await.expect(200).row()["count"],
        json!(5)
    );
}

#[tokio::test]
async fn invalid_values_for_each_base_type_are_400() {
    let server = Server::default_started();
    let admin = server.admin();
    let cases: &[(&str, Value)] = &[
        ("STRING", json!(5)),
        ("NUMBER", json!("1.5")),
        ("INTEGER", json!(4_294_967_296_i64)),
        ("LONG", json!(1.5)),
        ("BOOLEAN", json!("true")),
        ("DATETIME", json!("yesterday")),
        ("THINGNAME", json!("../etc")),
        ("INFOTABLE", json!(5)),
        ("GUID", json!("not-a-guid")),
    ];
    admin.create_thing("T", "GenericThing").await.ok();
    for (i, (base_type, bad)) in cases.iter().enumerate() {
        let prop = format!("p{i}");
        admin
            .add_property("Things", "T", &prop, base_type)
            .await
            .ok();
        let resp = admin.set_property("T", &prop, bad.clone()).await;
        // A value outside the type's range may be 422 (docs/api.md); everything else is 400.
        let resp = if *base_type == "INTEGER" {
            resp.expect_status_in(&[400, 422])
        } else {
            resp.expect(400)
        };
        assert!(
            resp.error().contains(base_type) || resp.error().contains(&prop),
            "{base_type}: {:?}",
            resp.error()
        );
        let now = admin.get_property("T", &prop).await.expect(200);
        assert!(
            now.row()[&prop].is_null(),
            "{base_type}: bad value stored: {}",
            now.text
        );
    }
    admin
        .add_property("Things", "T", "bad", "NOSUCHTYPE")
        .await
        .expect_error(400, "NOSUCHTYPE");
}

#[tokio::test]
async fn set_property_values_is_all_or_nothing() {
    let server = Server::default_started();
    let admin = server.admin();
    admin
        .thing_with_properties(
            "T",
            "GenericThing",
            &[("a", "INTEGER", json!(1)), ("b", "STRING", json!("one"))],
        )
        .await;
    admin
        .call(
            "Things",
            "T",
            "SetPropertyValues",
            json!({"values": {"rows": [{"a": 2, "b": 3}]}}),
        )
        .await
        .expect(400);
    let values = admin
        .call("Things", "T", "GetPropertyValues", json!({}))
        .await
        .expect(200);
    assert_eq!(values.row()["a"], json!(1), "half-written: {}", values.text);
    assert_eq!(values.row()["b"], json!("one"));
    admin
        .call(
            "Things",
            "T",
            "SetPropertyValues",
            json!({"values": {"rows": [{"a": 2, "b": "two"}]}}),
        )
        .await
        .expect(200);
    let values = admin
        .call("Things", "T", "GetPropertyValues", json!({}))
        .await
        .expect(200);
    assert_eq!(values.row()["a"], json!(2));
    assert_eq!(values.row()["b"], json!("two"));
}

#[tokio::test]
async fn out_of_range_values_are_422_naming_the_parameter() {
    let server = Server::default_started();
    let admin = server.admin();
    let past = thingport_e2e::now_ms() - 60_000;
    admin
        .create_app_key("old", "Administrator", Some(past))
        .await
        .expect_error(422, "expirationDate");
    admin
        .create_user("shorty", "short")
        .await
        .expect_error(422, "password");
    admin.audit_log("limit=0").await.expect_error(422, "limit");
    admin
        .audit_log("limit=10001")
        .await
        .expect_error(422, "limit");
    assert!(!admin
        .names("ApplicationKeys")
        .await
        .contains(&"old".to_string()));
    assert!(!admin.names("Users").await.contains(&"shorty".to_string()));
}

#[tokio::test]
async fn conflicts_are_409() {
    let server = Server::default_started();
    let admin = server.admin();
    admin.create_thing("T", "GenericThing").await.ok();
    admin
        .create_thing("T", "GenericThing")
        .await
        .expect_error(409, "Thing 'T' already exists");
    admin
        .create_user("Administrator", "another-password-1")
        .await
        .expect(409);
    admin.create_group("Administrators").await.expect(409);
    assert_eq!(admin.names("Things").await, vec!["T".to_string()]);
}
