//! First-start and every-start setup: the built-in entities the platform relies on.

use crate::audit::Category;
use crate::error::ApiResult;
use crate::model::basetype::{BaseType, FieldDef};
use crate::model::entities::*;
use crate::platform::{put_acl, put_entity, Ctx, Platform};
use crate::security::{Acl, ADMINISTRATOR, ADMINISTRATORS, EVERYONE, USERS};
use crate::store::Write;

/// What bootstrap did that the operator must know.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Set when the administrator was created with a generated password.
    pub generated_password: Option<String>,
    pub created_admin: bool,
}

/// Creates whatever built-in entity is missing. The administrator is created only when the
/// platform has no user at all, with `admin_password` or a generated one.
pub async fn ensure(p: &Platform, admin_password: Option<&str>) -> ApiResult<Outcome> {
    let ctx = Ctx::system();
    let mut out = Outcome::default();
    let needs_admin = p.model().users.is_empty();
    let admin_hash = if needs_admin {
        let pw = match admin_password {
            Some(pw) => {
                crate::services::check_admin_password(pw)?;
                pw.to_string()
            }
            None => {
                let pw = crate::security::secrets::random_password();
                out.generated_password = Some(pw.clone());
                pw
            }
        };
        out.created_admin = true;
        Some(p.hash_password(&pw).await?)
    } else {
        None
    };
    p.commit(|m| {
        let mut w: Vec<Write> = Vec::new();
        let everyone_visible = || Acl {
            visibility: [EVERYONE.to_string()].into(),
            ..Acl::default()
        };
        if !m.templates.contains_key("GenericThing") {
            let t = ThingTemplate {
                description: "the base of every Thing".into(),
                base: None,
                shapes: vec![],
                properties: vec![],
                owner: None,
            };
            w.push(put_entity(EntityKind::ThingTemplate, "GenericThing", &t));
            w.push(put_acl(
                EntityKind::ThingTemplate,
                "GenericThing",
                &everyone_visible(),
            ));
        }
        if !m.templates.contains_key("RemoteThing") {
            let t = ThingTemplate {
                description: "a device that connects to the platform".into(),
                base: Some("GenericThing".into()),
                shapes: vec![],
                properties: vec![
                    FieldDef::new("isConnected", BaseType::Boolean)
                        .describe("whether the device is connected now")
                        .default(false.into()),
                    FieldDef::new("lastConnection", BaseType::Datetime)
                        .describe("when the device last connected"),
                ],
                owner: None,
            };
            w.push(put_entity(EntityKind::ThingTemplate, "RemoteThing", &t));
            w.push(put_acl(
                EntityKind::ThingTemplate,
                "RemoteThing",
                &everyone_visible(),
            ));
        }
        let mut admins = m
            .groups
            .get(ADMINISTRATORS)
            .cloned()
            .unwrap_or_else(|| MemberSet {
                description: "members bypass every permission check".into(),
                members: Default::default(),
            });
        let mut users = m.groups.get(USERS).cloned().unwrap_or_else(|| MemberSet {
            description: "every user".into(),
            members: Default::default(),
        });
        if let Some(hash) = &admin_hash {
            let u = User {
                description: "the built-in administrator".into(),
                password_hash: hash.clone(),
                enabled: true,
            };
            w.push(put_entity(EntityKind::User, ADMINISTRATOR, &u));
            let me = Member {
                kind: PrincipalKind::User,
                name: ADMINISTRATOR.into(),
            };
            admins.members.insert(me.clone());
            users.members.insert(me);
            w.push(ctx.audit(
                Category::Security,
                EntityKind::User,
                ADMINISTRATOR,
                "built-in administrator created",
            ));
        }
        if admin_hash.is_some() || !m.groups.contains_key(ADMINISTRATORS) {
            w.push(put_entity(EntityKind::Group, ADMINISTRATORS, &admins));
        }
        if admin_hash.is_some() || !m.groups.contains_key(USERS) {
            w.push(put_entity(EntityKind::Group, USERS, &users));
        }
        if !m.orgs.contains_key(EVERYONE) {
            let mut o = MemberSet {
                description: "every user".into(),
                members: Default::default(),
            };
            o.members.insert(Member {
                kind: PrincipalKind::Group,
                name: USERS.into(),
            });
            w.push(put_entity(EntityKind::Organization, EVERYONE, &o));
        }
        for (name, description) in [
            ("AuditSubsystem", "the audit trail"),
            (
                "PlatformSubsystem",
                "platform information and extension packages",
            ),
        ] {
            if !m.subsystems.contains_key(name) {
                w.push(put_entity(
                    EntityKind::Subsystem,
                    name,
                    &Subsystem {
                        description: description.into(),
                        ..Subsystem::default()
                    },
                ));
                // Visible to all, so a caller without ServiceInvoke gets a 403 that names it.
                w.push(put_acl(EntityKind::Subsystem, name, &everyone_visible()));
            }
        }
        Ok((w, ()))
    })
    .await?;
    Ok(out)
}
