//! Group and organization membership, and user passwords.

use super::{Params, ServiceDef};
use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::{BaseType, FieldDef};
use crate::model::entities::{EntityKind, Member, PrincipalKind};
use crate::model::infotable::InfoTable;
use crate::model::names::printable;
use crate::platform::{put_entity, Ctx, Platform};
use crate::security::{secrets, ADMINISTRATOR, ADMINISTRATORS};
use serde_json::json;

pub async fn run(
    p: &Platform,
    ctx: &Ctx,
    kind: EntityKind,
    entity: &str,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    match def.name {
        "GetMembers" => {
            let m = p.model();
            let set = if kind == EntityKind::Group {
                m.groups.get(entity)
            } else {
                m.orgs.get(entity)
            };
            let set = set.ok_or_else(|| ApiError::entity_not_found(entity))?;
            let mut t = InfoTable::new(&[
                FieldDef::new("name", BaseType::String),
                FieldDef::new("type", BaseType::String),
            ]);
            for mem in &set.members {
                t.push(json!({"name": mem.name, "type": mem.kind.as_str()}));
            }
            Ok(t)
        }
        "AddMember" | "RemoveMember" => {
            membership(p, ctx, kind, entity, def.name == "AddMember", &params).await
        }
        "SetPassword" => set_password(p, ctx, entity, params.str("password"), None).await,
        "ChangePassword" => {
            if ctx.who.name != entity {
                return Err(ApiError::not_authorized("ChangePassword", entity, entity));
            }
            set_password(
                p,
                ctx,
                entity,
                params.str("newPassword"),
                Some(params.str("oldPassword")),
            )
            .await
        }
        other => Err(ApiError::bad_request(format!(
            "service '{other}' is not implemented here"
        ))),
    }
}

async fn membership(
    p: &Platform,
    ctx: &Ctx,
    kind: EntityKind,
    entity: &str,
    add: bool,
    params: &Params,
) -> ApiResult<InfoTable> {
    let mkind = PrincipalKind::parse(params.str("type")).ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter 'type' must be User or Group, got '{}'",
            printable(params.str("type"))
        ))
    })?;
    let member = Member {
        kind: mkind,
        name: params.str("member").to_string(),
    };
    p.commit(|m| {
        if !m.exists(mkind.entity_kind(), &member.name) {
            return Err(ApiError::entity_not_found(&member.name));
        }
        let mut set = if kind == EntityKind::Group {
            m.groups[entity].clone()
        } else {
            m.orgs[entity].clone()
        };
        if add {
            if kind == EntityKind::Group && mkind == PrincipalKind::Group {
                let container = Member {
                    kind: PrincipalKind::Group,
                    name: entity.to_string(),
                };
                if member.name == entity || m.groups_of(&container).contains(&member.name) {
                    return Err(ApiError::conflict(format!(
                        "adding group '{}' to '{entity}' would create a membership cycle",
                        member.name
                    )));
                }
            }
            if !set.members.insert(member.clone()) {
                return Ok((vec![], ()));
            }
        } else {
            if kind == EntityKind::Group
                && entity == ADMINISTRATORS
                && member.name == ADMINISTRATOR
                && mkind == PrincipalKind::User
            {
                return Err(ApiError::conflict(
                    "the built-in Administrator cannot leave Administrators",
                ));
            }
            if !set.members.remove(&member) {
                return Err(ApiError::entity_not_found(&member.name));
            }
        }
        let verb = if add { "added" } else { "removed" };
        let msg = format!("{} {} {verb}", mkind.as_str(), member.name);
        Ok((
            vec![
                put_entity(kind, entity, &set),
                ctx.audit(Category::Security, kind, entity, msg),
            ],
            (),
        ))
    })
    .await?;
    Ok(InfoTable::empty())
}

/// Checks the password policy.
pub fn check_password(param: &str, pw: &str) -> ApiResult<()> {
    if pw.len() < secrets::MIN_PASSWORD_LEN || pw.len() > secrets::MAX_PASSWORD_LEN {
        return Err(ApiError::unprocessable(format!(
            "parameter '{param}' must be {} to {} bytes long",
            secrets::MIN_PASSWORD_LEN,
            secrets::MAX_PASSWORD_LEN
        )));
    }
    Ok(())
}

async fn set_password(
    p: &Platform,
    ctx: &Ctx,
    user: &str,
    new: &str,
    old: Option<&str>,
) -> ApiResult<InfoTable> {
    check_password(
        if old.is_some() {
            "newPassword"
        } else {
            "password"
        },
        new,
    )?;
    if let Some(old) = old {
        p.authenticate_password(user, old).await.map_err(|_| {
            ApiError::forbidden("parameter 'oldPassword' does not match the current password")
        })?;
    }
    let h = p.hash_password(new).await?;
    p.commit(|m| {
        let mut u = m
            .users
            .get(user)
            .ok_or_else(|| ApiError::entity_not_found(user))?
            .clone();
        u.password_hash = h;
        Ok((
            vec![
                put_entity(EntityKind::User, user, &u),
                ctx.audit(
                    Category::Security,
                    EntityKind::User,
                    user,
                    "password changed",
                ),
            ],
            (),
        ))
    })
    .await?;
    Ok(InfoTable::empty())
}
