//! ACE against the SDK's fake host, through the C ABI: the definitions, the grant services (what
//! they grant, in which order, once; whom they refuse and why) and the lookup.
//!
//! The fake host answers the permission services from a small in-memory ACL store modelled on
//! the host's (`services/permissions.rs`): adding a grant replaces the same (perm, resource,
//! principal), visibility is a set.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use thingport_sdk::protocol::{BaseType, Caller, ErrorBody, ErrorKind, InfoTable};
use thingport_sdk::testing::{FakeHost, FakeInstance};
use thingport_sdk::Error;

use crate::grants::SESSION_SERVICES;
use crate::{EMESSAGE_SERVICES, FIND_THING, GRANT_FOR_TEMPLATE, GRANT_FOR_THING};

#[derive(Default, Clone, Debug)]
struct Acl {
    design: Vec<Value>,
    runtime: Vec<Value>,
    visibility: Vec<String>,
    instance_visibility: Vec<String>,
}

/// The ACLs of the fake host's entities, and every permission change in order.
#[derive(Default, Clone)]
struct Acls {
    acls: Arc<Mutex<BTreeMap<(String, String), Acl>>>,
    changes: Arc<Mutex<Vec<String>>>,
}

impl Acls {
    fn of(&self, kind: &str, entity: &str) -> Acl {
        let acls = self.acls.lock().unwrap();
        acls.get(&(kind.into(), entity.into()))
            .cloned()
            .unwrap_or_default()
    }

    fn changes(&self) -> Vec<String> {
        std::mem::take(&mut *self.changes.lock().unwrap())
    }

    /// Makes `kind/entity` exist, with the permission services of the host.
    fn entity(&self, host: &FakeHost, kind: &str, entity: &str) {
        let key = (kind.to_string(), entity.to_string());
        self.acls.lock().unwrap().entry(key.clone()).or_default();
        let read = |f: fn(&Acl) -> Value| {
            let acls = self.acls.clone();
            let key = key.clone();
            move |_: &Value| -> Result<InfoTable, Error> {
                Ok(InfoTable::scalar(f(&acls.lock().unwrap()[&key])))
            }
        };
        host.on_invoke(
            kind,
            entity,
            "GetVisibilityPermissionsAsJSON",
            read(|a| json!({"permissions": a.visibility, "instancePermissions": a.instance_visibility})),
        );
        host.on_invoke(
            kind,
            entity,
            "GetDesignTimePermissionsAsJSON",
            read(|a| json!({"permissions": a.design})),
        );
        host.on_invoke(
            kind,
            entity,
            "GetRunTimePermissionsAsJSON",
            read(|a| json!({"permissions": a.runtime})),
        );
        for service in [
            "AddVisibilityPermission",
            "AddInstanceVisibilityPermission",
            "AddDesignTimePermission",
            "AddRunTimePermission",
        ] {
            let acls = self.acls.clone();
            let changes = self.changes.clone();
            let key = key.clone();
            host.on_invoke(kind, entity, service, move |p| {
                let mut acls = acls.lock().unwrap();
                let acl = acls.get_mut(&key).unwrap();
                let principal = json!({"type": p["principalType"], "name": p["principal"]});
                match service {
                    "AddVisibilityPermission" => acl
                        .visibility
                        .push(p["organization"].as_str().unwrap().into()),
                    "AddInstanceVisibilityPermission" => acl
                        .instance_visibility
                        .push(p["organization"].as_str().unwrap().into()),
                    "AddDesignTimePermission" => {
                        acl.design
                            .retain(|g| !(g["perm"] == p["type"] && g["principal"] == principal));
                        acl.design.push(
                            json!({"perm": p["type"], "principal": principal, "allow": p["allow"]}),
                        );
                    }
                    _ => {
                        acl.runtime.retain(|g| {
                            !(g["perm"] == p["type"]
                                && g["resource"] == p["resource"]
                                && g["principal"] == principal)
                        });
                        acl.runtime
                            .push(json!({"perm": p["type"], "resource": p["resource"],
                            "principal": principal, "allow": p["allow"]}));
                    }
                }
                let what = p
                    .get("resource")
                    .or(p.get("type"))
                    .or(p.get("organization"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                changes
                    .lock()
                    .unwrap()
                    .push(format!("{}/{}: {service} {what}", key.0, key.1));
                Ok(InfoTable::default())
            });
        }
    }
}

/// A host with organization `acme`, group `acme-ops`, the gateway `gw-1` and the standalone
/// devices `sa-1`, `sa-2` (all Axeda models), and `plain` (a RemoteThing).
fn setup() -> (FakeHost, FakeInstance, Acls) {
    let host = FakeHost::new();
    let acls = Acls::default();
    acls.entity(&host, "Organizations", "acme");
    acls.entity(&host, "Groups", "acme-ops");
    for (thing, template) in [
        ("gw-1", "AxedaEMessageGatewayModel"),
        ("sa-1", "AxedaStandaloneModel"),
        ("sa-2", "AxedaStandaloneModel"),
        ("plain", "RemoteThing"),
    ] {
        host.add_thing(thing, template, json!({}));
        acls.entity(&host, "Things", thing);
    }
    for template in ["AxedaStandaloneModel", "Custom", "Empty", "RemoteThing"] {
        acls.entity(&host, "ThingTemplates", template);
    }
    let i = host
        .instantiate(crate::thingport_extension_table(), Value::Null)
        .expect("create");
    (host, i, acls)
}

fn admin() -> Caller {
    Caller {
        name: "Administrator".into(),
        admin: true,
        source_ip: "127.0.0.1".into(),
    }
}

fn user(name: &str) -> Caller {
    Caller {
        name: name.into(),
        admin: false,
        source_ip: "192.0.2.7".into(),
    }
}

fn for_thing(
    i: &FakeInstance,
    who: Caller,
    org: &str,
    group: &str,
    thing: &str,
) -> Result<Value, ErrorBody> {
    i.invoke_as(
        who,
        "Things",
        EMESSAGE_SERVICES,
        GRANT_FOR_THING,
        json!({"organization": org, "userGroup": group, "thingName": thing}),
    )
}

fn for_template(i: &FakeInstance, template: &str) -> Result<Value, ErrorBody> {
    i.invoke_as(
        admin(),
        "Things",
        EMESSAGE_SERVICES,
        GRANT_FOR_TEMPLATE,
        json!({"organization": "acme", "userGroup": "acme-ops", "templateName": template}),
    )
}

fn group_runtime(acl: &Acl) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = acl
        .runtime
        .iter()
        .filter(|g| g["principal"] == json!({"type": "Group", "name": "acme-ops"}))
        .map(|g| {
            assert_eq!(g["allow"], json!(true));
            (
                g["perm"].as_str().unwrap().into(),
                g["resource"].as_str().unwrap().into(),
            )
        })
        .collect();
    v.sort();
    v
}

fn session_grants() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = SESSION_SERVICES
        .iter()
        .map(|s| ("ServiceInvoke".to_string(), s.to_string()))
        .chain([("PropertyRead".to_string(), "endpoints".to_string())])
        .collect();
    v.sort();
    v
}

#[test]
fn the_manifest_defines_the_axeda_models_the_alias_and_emessage_services() {
    let m = crate::thingport_extension_table().manifest();
    assert_eq!(
        (m.name.as_str(), m.version.as_str()),
        ("axeda-compat", "1.0.0")
    );
    let d = &m.definitions;
    let template = |n: &str| d.thing_templates.iter().find(|t| t.name == n).unwrap();
    let base = template("AxedaBaseModel");
    assert_eq!(base.base.as_deref(), Some("RemoteThing"));
    assert_eq!(base.shapes, ["RemoteAccessible", "GASRemoteAccessible"]);
    let props: Vec<_> = base
        .properties
        .iter()
        .map(|p| (p.name.as_str(), p.base_type))
        .collect();
    assert_eq!(
        props,
        [
            ("modelNumber", BaseType::String),
            ("serialNumber", BaseType::String)
        ]
    );
    for model in ["AxedaEMessageGatewayModel", "AxedaStandaloneModel"] {
        assert_eq!(template(model).base.as_deref(), Some("AxedaBaseModel"));
    }
    let alias = d
        .thing_shapes
        .iter()
        .find(|s| s.name == "Axeda.RemoteAccessible")
        .unwrap();
    assert!(alias.properties.is_empty() && alias.services.is_empty());
    assert!(alias
        .description
        .contains("replaced by GASRemoteAccessible"));
    let thing = d
        .things
        .iter()
        .find(|t| t.name == "eMessageServices")
        .unwrap();
    let services: Vec<_> = thing.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(services, [GRANT_FOR_THING, GRANT_FOR_TEMPLATE, FIND_THING]);
    let grant = &thing.services[0];
    let inputs: Vec<_> = grant
        .inputs
        .iter()
        .map(|f| (f.name.as_str(), f.base_type, f.required))
        .collect();
    assert_eq!(
        inputs,
        [
            ("organization", BaseType::String, true),
            ("thingName", BaseType::Thingname, true),
            ("userGroup", BaseType::String, true)
        ]
    );
    assert_eq!(
        thing.services[2].result.as_ref().unwrap().base_type,
        BaseType::String
    );
}

#[test]
fn granting_for_a_thing_adds_exactly_the_session_permissions_visibility_last_and_only_once() {
    let (host, i, acls) = setup();
    let r = for_thing(&i, admin(), "acme", "acme-ops", "gw-1").unwrap();
    assert_eq!(r["entity"], json!("gw-1"));
    assert_eq!(r["granted"].as_array().unwrap().len(), 8, "{r}");
    assert_eq!(r["alreadyHeld"], json!([]));
    let acl = acls.of("Things", "gw-1");
    assert_eq!(group_runtime(&acl), session_grants());
    assert_eq!(
        acl.design,
        [
            json!({"perm": "Read", "principal": {"type": "Group", "name": "acme-ops"}, "allow": true})
        ]
    );
    assert_eq!(acl.visibility, ["acme"]);
    let changes = acls.changes();
    assert_eq!(changes.len(), 8);
    assert_eq!(
        changes.last().unwrap(),
        "Things/gw-1: AddVisibilityPermission acme"
    );
    // Nothing on other entities: the organization, the group, other Things.
    for (kind, entity) in [
        ("Organizations", "acme"),
        ("Groups", "acme-ops"),
        ("Things", "sa-1"),
    ] {
        let other = acls.of(kind, entity);
        assert!(other.runtime.is_empty() && other.design.is_empty() && other.visibility.is_empty());
    }
    let audit = host.audit_entries();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].category.as_str(), audit[0].entity.as_str()),
        ("SECURITY", "Thing:gw-1")
    );
    assert!(
        audit[0].message.starts_with(
            "remote access for user group 'acme-ops' (organization 'acme') on Thing 'gw-1' by Administrator: granted PropertyRead on endpoints in Thing 'gw-1'; ServiceInvoke on StartSession in Thing 'gw-1'"
        ),
        "{}",
        audit[0].message
    );
    assert!(audit[0]
        .message
        .ends_with("visibility of Thing 'gw-1' for organization 'acme'; already held nothing"));

    // Again: nothing changes.
    let again = for_thing(&i, admin(), "acme", "acme-ops", "gw-1").unwrap();
    assert_eq!(again["granted"], json!([]));
    assert_eq!(again["alreadyHeld"].as_array().unwrap().len(), 8);
    assert_eq!(acls.changes(), Vec::<String>::new());
    assert!(host.audit_entries()[1]
        .message
        .contains("granted nothing; already held"));
}

#[test]
fn only_administrators_may_grant_and_are_refused_before_anything_is_looked_up() {
    let (host, i, acls) = setup();
    let e = for_thing(&i, user("mallory"), "acme", "acme-ops", "gw-1").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert!(
        e.error.contains("administrators only") && e.error.contains("'mallory'"),
        "{e:?}"
    );
    // Even for entities that do not exist: no oracle of what exists.
    let e = for_thing(&i, user("mallory"), "nope", "nope", "nope").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert!(acls.changes().is_empty() && host.audit_entries().is_empty());
}

#[test]
fn bad_inputs_name_what_is_wrong_and_change_nothing() {
    let (host, i, acls) = setup();
    let err = |org: &str, group: &str, thing: &str| {
        let e = for_thing(&i, admin(), org, group, thing).unwrap_err();
        (e.kind, e.error)
    };
    assert_eq!(
        err("nope", "acme-ops", "gw-1"),
        (
            ErrorKind::NotFound,
            "organization 'nope' does not exist".into()
        )
    );
    assert_eq!(
        err("acme", "nope", "gw-1"),
        (
            ErrorKind::NotFound,
            "user group 'nope' does not exist".into()
        )
    );
    assert_eq!(
        err("acme", "acme-ops", "nope"),
        (ErrorKind::NotFound, "Thing 'nope' does not exist".into())
    );
    let (kind, message) = err("acme", "acme-ops", "plain");
    assert_eq!(kind, ErrorKind::Unprocessable);
    assert!(
        message.starts_with(
            "Thing 'plain' (template RemoteThing) does not implement RemoteAccessible"
        ),
        "{message}"
    );
    assert_eq!(
        err("", "acme-ops", "gw-1"),
        (
            ErrorKind::BadRequest,
            "parameter 'organization' must not be empty".into()
        )
    );
    let e = i
        .invoke_as(
            admin(),
            "Things",
            EMESSAGE_SERVICES,
            GRANT_FOR_THING,
            json!({"organization": "acme"}),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(acls.changes().is_empty() && host.audit_entries().is_empty());
}

#[test]
fn an_explicit_denial_refuses_the_whole_grant() {
    let (host, i, acls) = setup();
    acls.acls
        .lock()
        .unwrap()
        .get_mut(&("Things".into(), "gw-1".into()))
        .unwrap()
        .runtime
        .push(
            json!({"perm": "ServiceInvoke", "resource": "*", "allow": false,
                     "principal": {"type": "Group", "name": "acme-ops"}}),
        );
    let e = for_thing(&i, admin(), "acme", "acme-ops", "gw-1").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        e.error.starts_with("user group 'acme-ops' is explicitly denied ServiceInvoke on StartSession in Thing 'gw-1'"),
        "{e:?}"
    );
    assert!(acls.changes().is_empty() && host.audit_entries().is_empty());
}

#[test]
fn a_failure_part_way_is_reported_and_audited_and_a_second_run_finishes() {
    let (host, i, acls) = setup();
    host.on_invoke("Things", "gw-1", "AddVisibilityPermission", |_| {
        Err(Error::unavailable("the store is busy"))
    });
    let e = for_thing(&i, admin(), "acme", "acme-ops", "gw-1").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(
        e.error.contains(
            "run GrantRemoteAccessPermissionsGASForThing again to finish: the store is busy"
        ),
        "{e:?}"
    );
    assert_eq!(acls.changes().len(), 7);
    assert!(host.audit_entries()[0]
        .message
        .contains("by Administrator (failed part way): granted"));
    // The visibility service works again: the second run adds only what is missing.
    acls.entity(&host, "Things", "gw-1");
    let r = for_thing(&i, admin(), "acme", "acme-ops", "gw-1").unwrap();
    assert_eq!(
        r["granted"],
        json!(["visibility of Thing 'gw-1' for organization 'acme'"])
    );
}

#[test]
fn granting_for_a_template_uses_instance_permissions_and_reads_each_thing() {
    let (host, i, acls) = setup();
    let r = for_template(&i, "AxedaStandaloneModel").unwrap();
    assert_eq!(r["entityType"], json!("ThingTemplate"));
    assert_eq!(r["granted"].as_array().unwrap().len(), 9, "{r}");
    let acl = acls.of("ThingTemplates", "AxedaStandaloneModel");
    assert_eq!(group_runtime(&acl), session_grants());
    assert_eq!(acl.instance_visibility, ["acme"]);
    assert!(acl.visibility.is_empty() && acl.design.is_empty());
    for thing in ["sa-1", "sa-2"] {
        let acl = acls.of("Things", thing);
        assert_eq!(acl.design.len(), 1, "{thing}");
        assert!(acl.runtime.is_empty() && acl.visibility.is_empty());
    }
    assert!(acls.of("Things", "gw-1").design.is_empty());
    assert_eq!(
        acls.changes().last().unwrap(),
        "ThingTemplates/AxedaStandaloneModel: AddInstanceVisibilityPermission acme"
    );
    // A Thing created later gets its design-time Read from a second run, and only that.
    host.add_thing("sa-3", "AxedaStandaloneModel", json!({}));
    acls.entity(&host, "Things", "sa-3");
    let r = for_template(&i, "AxedaStandaloneModel").unwrap();
    assert_eq!(r["granted"], json!(["design-time Read on Thing 'sa-3'"]));
    assert_eq!(
        host.audit_entries()[1].entity,
        "ThingTemplate:AxedaStandaloneModel"
    );
}

#[test]
fn a_template_must_be_known_to_implement_remote_accessible() {
    let (host, i, acls) = setup();
    let e = for_template(&i, "nope").unwrap_err();
    assert_eq!(
        (e.kind, e.error.as_str()),
        (ErrorKind::NotFound, "ThingTemplate 'nope' does not exist")
    );
    // A template whose own Thing has no RemoteAccessible.
    host.add_thing("c-1", "Custom", json!({}));
    let e = for_template(&i, "Custom").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unprocessable);
    assert!(
        e.error
            .starts_with("ThingTemplate 'Custom' does not implement RemoteAccessible"),
        "{e:?}"
    );
    let e = for_template(&i, "RemoteThing").unwrap_err();
    assert!(
        e.error.contains("does not implement RemoteAccessible"),
        "{e:?}"
    );
    // Without Things it cannot be checked.
    let e = for_template(&i, "Empty").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unprocessable);
    assert!(e.error.contains("create its Things, then grant"), "{e:?}");
    assert!(acls.changes().is_empty() && host.audit_entries().is_empty());
}

fn find(i: &FakeInstance, who: Caller, model: &str, serial: &str) -> Result<Value, ErrorBody> {
    i.invoke_as(
        who,
        "Things",
        EMESSAGE_SERVICES,
        FIND_THING,
        json!({"modelNumber": model, "serialNumber": serial}),
    )
}

#[test]
fn lookup_finds_the_one_visible_device_by_model_and_serial() {
    let host = FakeHost::new();
    for (thing, model, serial) in [
        ("dev-1", "X100", "S-1"),
        ("dev-2", "X100", "S-2"),
        ("dup-a", "X200", "S-9"),
        ("dup-b", "X200", "S-9"),
    ] {
        host.add_thing(
            thing,
            "AxedaBaseModel",
            json!({"modelNumber": model, "serialNumber": serial}),
        );
    }
    host.add_thing(
        "other",
        "RemoteAccessibleThing",
        json!({"modelNumber": "X100", "serialNumber": "S-3"}),
    );
    let i = host
        .instantiate(crate::thingport_extension_table(), Value::Null)
        .unwrap();
    assert_eq!(find(&i, user("ops"), "X100", "S-2"), Ok(json!("dev-2")));
    let e = find(&i, user("ops"), "X100", "S-3").unwrap_err();
    assert_eq!(
        (e.kind, e.error.as_str()),
        (
            ErrorKind::NotFound,
            "no AxedaBaseModel Thing has modelNumber 'X100' and serialNumber 'S-3'"
        )
    );
    let e = find(&i, admin(), "X200", "S-9").unwrap_err();
    assert_eq!(
        (e.kind, e.error.as_str()),
        (
            ErrorKind::Conflict,
            "2 Things have modelNumber 'X200' and serialNumber 'S-9': dup-a, dup-b"
        )
    );
    // What the caller cannot see does not count, for them.
    host.deny("ops", "dev-2", "Visible")
        .deny("ops", "dup-b", "Visible");
    assert_eq!(
        find(&i, user("ops"), "X100", "S-2").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(find(&i, user("ops"), "X200", "S-9"), Ok(json!("dup-a")));
    assert_eq!(find(&i, admin(), "X100", "S-2"), Ok(json!("dev-2")));
    let e = find(&i, admin(), "X100", "").unwrap_err();
    assert_eq!(
        (e.kind, e.error.as_str()),
        (
            ErrorKind::BadRequest,
            "parameter 'serialNumber' must not be empty"
        )
    );
}
