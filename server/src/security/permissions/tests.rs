use super::*;
use crate::model::entities::*;
use crate::security::{DesignGrant, RunGrant};

fn user(n: &str) -> Member {
    Member {
        kind: PrincipalKind::User,
        name: n.into(),
    }
}
fn group(n: &str) -> Member {
    Member {
        kind: PrincipalKind::Group,
        name: n.into(),
    }
}

fn model() -> Model {
    let mut m = Model::default();
    for u in ["alice", "bob"] {
        m.users.insert(
            u.into(),
            User {
                description: String::new(),
                password_hash: String::new(),
                enabled: true,
            },
        );
    }
    let mut ops = MemberSet::default();
    ops.members.insert(user("alice"));
    m.groups.insert("Operators".into(), ops);
    let mut field = MemberSet::default();
    field.members.insert(group("Operators"));
    m.groups.insert("Field".into(), field);
    let mut org = MemberSet::default();
    org.members.insert(group("Field"));
    m.orgs.insert("Plant".into(), org);
    m.templates.insert(
        "Base".into(),
        ThingTemplate {
            description: String::new(),
            base: None,
            shapes: vec![],
            properties: vec![],
            owner: None,
        },
    );
    m.templates.insert(
        "Gw".into(),
        ThingTemplate {
            description: String::new(),
            base: Some("Base".into()),
            shapes: vec![],
            properties: vec![],
            owner: None,
        },
    );
    m.things.insert(
        "gw1".into(),
        Thing {
            description: String::new(),
            template: "Gw".into(),
            shapes: vec![],
            properties: vec![],
            tags: vec![],
            enabled: true,
            owner: None,
            values: Default::default(),
        },
    );
    m
}

fn acl<'a>(m: &'a mut Model, kind: EntityKind, name: &str) -> &'a mut Acl {
    m.acl.entry((kind, name.into())).or_default()
}

#[test]
fn nested_groups_and_orgs_resolve() {
    let m = model();
    let p = m.principal("alice");
    assert!(p.groups.contains("Operators") && p.groups.contains("Field"));
    assert!(p.orgs.contains("Plant"));
    assert!(m.principal("bob").orgs.is_empty());
}

#[test]
fn invisible_is_not_found_and_instance_visibility_applies() {
    let mut m = model();
    let alice = m.principal("alice");
    assert_eq!(
        m.check_visible(&alice, EntityKind::Thing, "gw1")
            .unwrap_err()
            .status
            .as_u16(),
        404
    );
    acl(&mut m, EntityKind::ThingTemplate, "Base")
        .instance_visibility
        .insert("Plant".into());
    assert!(m.check_visible(&alice, EntityKind::Thing, "gw1").is_ok());
    // Instance visibility does not make the template itself visible.
    assert!(m
        .check_visible(&alice, EntityKind::ThingTemplate, "Base")
        .is_err());
}

#[test]
fn deny_beats_allow_and_template_instance_grants_apply() {
    let mut m = model();
    acl(&mut m, EntityKind::Thing, "gw1")
        .visibility
        .insert("Plant".into());
    acl(&mut m, EntityKind::ThingTemplate, "Base")
        .runtime
        .push(RunGrant {
            perm: RunPerm::PropertyRead,
            resource: "*".into(),
            principal: group("Field"),
            allow: true,
        });
    let alice = m.principal("alice");
    assert!(m
        .check_runtime(&alice, EntityKind::Thing, "gw1", RunPerm::PropertyRead, "x")
        .is_ok());
    acl(&mut m, EntityKind::Thing, "gw1")
        .runtime
        .push(RunGrant {
            perm: RunPerm::PropertyRead,
            resource: "x".into(),
            principal: user("alice"),
            allow: false,
        });
    let e = m
        .check_runtime(&alice, EntityKind::Thing, "gw1", RunPerm::PropertyRead, "x")
        .unwrap_err();
    assert_eq!(e.message, "Not authorized for PropertyRead on x in gw1");
    assert!(m
        .check_runtime(&alice, EntityKind::Thing, "gw1", RunPerm::PropertyRead, "y")
        .is_ok());
}

#[test]
fn collection_grants_and_admin_bypass() {
    let mut m = model();
    let alice = m.principal("alice");
    assert!(m
        .check_collection(&alice, EntityKind::Thing, DesignPerm::Create)
        .is_err());
    acl(&mut m, EntityKind::Collection, "Things")
        .design
        .push(DesignGrant {
            perm: DesignPerm::Create,
            principal: group("Operators"),
            allow: true,
        });
    assert!(m
        .check_collection(&alice, EntityKind::Thing, DesignPerm::Create)
        .is_ok());
    let mut admin = m.principal("bob");
    admin.admin = true;
    assert!(m
        .check_runtime(
            &admin,
            EntityKind::Thing,
            "gw1",
            RunPerm::ServiceInvoke,
            "S"
        )
        .is_ok());
    assert_eq!(
        m.check_runtime(
            &admin,
            EntityKind::Thing,
            "nope",
            RunPerm::ServiceInvoke,
            "S"
        )
        .unwrap_err()
        .status
        .as_u16(),
        404
    );
}
