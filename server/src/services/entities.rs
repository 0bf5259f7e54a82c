//! `Resources/EntityServices`: creating and deleting entities, with their cascades.

use super::{members, Params, ServiceDef};
use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::{now_millis, BaseType, FieldDef};
use crate::model::entities::*;
use crate::model::infotable::InfoTable;
use crate::model::{names, Model};
use crate::platform::{put_acl, put_entity, Ctx, Platform};
use crate::security::{secrets, Acl, DesignPerm, ADMINISTRATOR, ADMINISTRATORS, EVERYONE, USERS};
use crate::store::Write;
use serde_json::{json, Value};

/// Entities the platform needs and that cannot be deleted.
pub const BUILT_IN: &[(EntityKind, &str)] = &[
    (EntityKind::ThingTemplate, "GenericThing"),
    (EntityKind::ThingTemplate, "RemoteThing"),
    (EntityKind::User, ADMINISTRATOR),
    (EntityKind::Group, ADMINISTRATORS),
    (EntityKind::Group, USERS),
    (EntityKind::Organization, EVERYONE),
];

fn kind_of(service: &str) -> Option<EntityKind> {
    let noun = service
        .strip_prefix("Create")
        .or_else(|| service.strip_prefix("Delete"))?;
    EntityKind::parse(noun)
}

pub async fn run(
    p: &Platform,
    ctx: &Ctx,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    let kind = kind_of(def.name).ok_or_else(|| {
        ApiError::bad_request(format!("service '{}' is not implemented", def.name))
    })?;
    let name = params.str("name").to_string();
    if def.name.starts_with("Delete") {
        return delete(p, ctx, kind, &name).await;
    }
    p.model()
        .check_collection(&ctx.who, kind, DesignPerm::Create)?;
    names::validate(kind.as_str(), &name)?;
    // Expensive or random preparation happens before the write gate is taken.
    let password_hash = if kind == EntityKind::User {
        members::check_password("password", params.str("password"))?;
        Some(p.hash_password(params.str("password")).await?)
    } else {
        None
    };
    let key_value = (kind == EntityKind::ApplicationKey).then(secrets::new_app_key);
    let description = params
        .opt_str("description")
        .unwrap_or_default()
        .to_string();
    let result = p
        .commit(|m| {
            if m.exists(kind, &name) {
                return Err(ApiError::conflict(format!("{kind} '{name}' already exists")));
            }
            let mut writes = Vec::new();
            let mut result = InfoTable::empty();
            match kind {
                EntityKind::Thing => {
                    let template = params.str("thingTemplateName");
                    m.check_visible(&ctx.who, EntityKind::ThingTemplate, template)?;
                    let tags = string_list(&params, "tags", "tag")?;
                    let t = Thing {
                        description,
                        template: template.to_string(),
                        shapes: vec![],
                        properties: vec![],
                        tags,
                        enabled: true,
                        owner: None,
                        values: Default::default(),
                    };
                    writes.push(put_entity(kind, &name, &t));
                }
                EntityKind::ThingTemplate => {
                    let base = params.str("baseThingTemplateName");
                    m.check_visible(&ctx.who, EntityKind::ThingTemplate, base)?;
                    let shapes = string_list(&params, "implementedShapes", "shape")?;
                    for s in &shapes {
                        m.check_visible(&ctx.who, EntityKind::ThingShape, s)?;
                    }
                    let t = ThingTemplate { description, base: Some(base.to_string()), shapes, properties: vec![], owner: None };
                    writes.push(put_entity(kind, &name, &t));
                }
                EntityKind::ThingShape => {
                    writes.push(put_entity(kind, &name, &ThingShape { description, properties: vec![], owner: None }));
                }
                EntityKind::DataShape => {
                    let fields = data_shape_fields(m, params.get("fields"))?;
                    writes.push(put_entity(kind, &name, &DataShape { description, fields, owner: None }));
                }
                EntityKind::User => {
                    let u = User { description, password_hash: password_hash.clone().unwrap_or_default(), enabled: true };
                    writes.push(put_entity(kind, &name, &u));
                    if let Some(users) = m.groups.get(USERS) {
                        let mut users = users.clone();
                        users.members.insert(Member { kind: PrincipalKind::User, name: name.clone() });
                        writes.push(put_entity(EntityKind::Group, USERS, &users));
                    }
                }
                EntityKind::Group | EntityKind::Organization => {
                    writes.push(put_entity(kind, &name, &MemberSet { description, members: Default::default() }));
                }
                EntityKind::ApplicationKey => {
                    let user = params.str("user");
                    if !m.users.contains_key(user) {
                        return Err(ApiError::entity_not_found(user));
                    }
                    if !ctx.who.admin && user != ctx.who.name {
                        return Err(ApiError::not_authorized("Create", &format!("a key for user {user}"), "ApplicationKeys"));
                    }
                    let expires_at = params.i64("expirationDate");
                    if expires_at.is_some_and(|t| t <= now_millis()) {
                        return Err(ApiError::unprocessable("parameter 'expirationDate' must be in the future"));
                    }
                    let value = key_value.clone().unwrap_or_default();
                    let k = AppKey { description, user: user.to_string(), key_hash: secrets::sha256_hex(value.as_bytes()), expires_at, created_at: now_millis() };
                    writes.push(put_entity(kind, &name, &k));
                    result = InfoTable::new(&[
                        FieldDef::new("name", BaseType::String),
                        FieldDef::new("keyId", BaseType::String),
                        FieldDef::new("user", BaseType::String),
                        FieldDef::new("expirationDate", BaseType::Datetime),
                    ]);
                    result.push(json!({"name": name, "keyId": value, "user": user, "expirationDate": expires_at}));
                }
                _ => return Err(ApiError::bad_request(format!("{kind} entities cannot be created here"))),
            }
            if !ctx.who.admin {
                let acl = Acl { owner: Some(ctx.who.name.clone()), ..Acl::default() };
                writes.push(put_acl(kind, &name, &acl));
            }
            let category = if matches!(kind, EntityKind::User | EntityKind::Group | EntityKind::Organization | EntityKind::ApplicationKey) {
                Category::Security
            } else {
                Category::Entity
            };
            let detail = match kind {
                EntityKind::ApplicationKey => format!("{kind} created for user {}", params.str("user")),
                EntityKind::Thing => format!("{kind} created from template {}", params.str("thingTemplateName")),
                _ => format!("{kind} created"),
            };
            writes.push(ctx.audit(category, kind, &name, detail));
            Ok((writes, result))
        })
        .await?;
    tracing::info!(kind = %kind, entity = %name, principal = %ctx.who.name, "entity created");
    Ok(result)
}

fn string_list(params: &Params, param: &str, what: &str) -> ApiResult<Vec<String>> {
    let Some(v) = params.get(param) else {
        return Ok(vec![]);
    };
    let arr = v.as_array().ok_or_else(|| {
        ApiError::bad_request(format!("parameter '{param}' must be an array of strings"))
    })?;
    arr.iter()
        .map(|x| {
            let s = x.as_str().ok_or_else(|| {
                ApiError::bad_request(format!("parameter '{param}' must be an array of strings"))
            })?;
            names::validate(what, s)?;
            Ok(s.to_string())
        })
        .collect()
}

fn data_shape_fields(m: &Model, fields: Option<&Value>) -> ApiResult<Vec<FieldDef>> {
    let rows = fields
        .and_then(|f| f["rows"].as_array())
        .cloned()
        .unwrap_or_default();
    if rows.is_empty() {
        return Err(ApiError::bad_request(
            "parameter 'fields' must have at least one row",
        ));
    }
    let mut out: Vec<FieldDef> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let name = r["name"].as_str().ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter 'fields'.rows[{i}].name must be a string"
            ))
        })?;
        names::validate("field", name)?;
        if out.iter().any(|f| f.name == name) {
            return Err(ApiError::bad_request(format!(
                "parameter 'fields' defines '{name}' twice"
            )));
        }
        let bt = BaseType::parse(r["baseType"].as_str().unwrap_or_default()).map_err(|e| {
            ApiError::bad_request(format!(
                "parameter 'fields'.rows[{i}].baseType: {}",
                e.message
            ))
        })?;
        let mut f = FieldDef::new(name, bt);
        f.description = r["description"].as_str().unwrap_or_default().to_string();
        f.required = r["required"].as_bool().unwrap_or(false);
        if let Some(ds) = r["dataShape"].as_str() {
            if !m.data_shapes.contains_key(ds) {
                return Err(ApiError::unprocessable(format!(
                    "parameter 'fields'.rows[{i}].dataShape: data shape '{}' does not exist",
                    names::printable(ds)
                )));
            }
            f.data_shape = Some(ds.to_string());
        }
        out.push(f);
    }
    Ok(out)
}

/// Names of what still uses an entity, for a 409.
pub(crate) fn users_of(m: &Model, kind: EntityKind, name: &str) -> Vec<String> {
    let mut v: Vec<String> = match kind {
        EntityKind::ThingTemplate => m
            .things
            .iter()
            .filter(|(_, t)| t.template == name)
            .map(|(n, _)| format!("Thing {n}"))
            .chain(
                m.templates
                    .iter()
                    .filter(|(_, t)| t.base.as_deref() == Some(name))
                    .map(|(n, _)| format!("ThingTemplate {n}")),
            )
            .collect(),
        EntityKind::ThingShape => m
            .things
            .iter()
            .filter(|(_, t)| t.shapes.iter().any(|s| s == name))
            .map(|(n, _)| format!("Thing {n}"))
            .chain(
                m.templates
                    .iter()
                    .filter(|(_, t)| t.shapes.iter().any(|s| s == name))
                    .map(|(n, _)| format!("ThingTemplate {n}")),
            )
            .collect(),
        EntityKind::DataShape => {
            let uses =
                |defs: &[FieldDef]| defs.iter().any(|d| d.data_shape.as_deref() == Some(name));
            m.things
                .iter()
                .filter(|(_, t)| uses(&t.properties))
                .map(|(n, _)| format!("Thing {n}"))
                .chain(
                    m.templates
                        .iter()
                        .filter(|(_, t)| uses(&t.properties))
                        .map(|(n, _)| format!("ThingTemplate {n}")),
                )
                .chain(
                    m.shapes
                        .iter()
                        .filter(|(_, t)| uses(&t.properties))
                        .map(|(n, _)| format!("ThingShape {n}")),
                )
                .chain(
                    m.data_shapes
                        .iter()
                        .filter(|(_, t)| uses(&t.fields))
                        .map(|(n, _)| format!("DataShape {n}")),
                )
                .collect()
        }
        _ => vec![],
    };
    v.sort();
    v
}

async fn delete(p: &Platform, ctx: &Ctx, kind: EntityKind, name: &str) -> ApiResult<InfoTable> {
    p.commit(|m| {
        m.check_design(&ctx.who, kind, name, DesignPerm::Delete)?;
        super::refuse_if_owned(m, kind, name)?;
        if BUILT_IN.contains(&(kind, name)) {
            return Err(ApiError::conflict(format!(
                "{kind} '{name}' is built in and cannot be deleted"
            )));
        }
        let used = users_of(m, kind, name);
        if !used.is_empty() {
            return Err(ApiError::conflict(format!(
                "{kind} '{name}' is in use by {}",
                used.join(", ")
            )));
        }
        let mut writes = vec![Write::DeleteEntity {
            kind,
            name: name.to_string(),
        }];
        match kind {
            EntityKind::Thing => writes.push(Write::DeleteValues {
                thing: name.to_string(),
            }),
            EntityKind::User | EntityKind::Group => {
                let me = Member {
                    kind: if kind == EntityKind::User {
                        PrincipalKind::User
                    } else {
                        PrincipalKind::Group
                    },
                    name: name.to_string(),
                };
                for (ckind, sets) in [
                    (EntityKind::Group, &m.groups),
                    (EntityKind::Organization, &m.orgs),
                ] {
                    for (n, set) in sets.iter().filter(|(_, s)| s.members.contains(&me)) {
                        let mut set = set.clone();
                        set.members.remove(&me);
                        writes.push(put_entity(ckind, n, &set));
                    }
                }
                for ((akind, aname), acl) in &m.acl {
                    let mut acl = acl.clone();
                    if acl.forget_principal(&me) {
                        writes.push(put_acl(*akind, aname, &acl));
                    }
                }
                if kind == EntityKind::User {
                    for (kn, _) in m.app_keys.iter().filter(|(_, k)| k.user == name) {
                        writes.push(Write::DeleteEntity {
                            kind: EntityKind::ApplicationKey,
                            name: kn.clone(),
                        });
                    }
                }
            }
            EntityKind::Organization => {
                for ((akind, aname), acl) in &m.acl {
                    if acl.visibility.contains(name) || acl.instance_visibility.contains(name) {
                        let mut acl = acl.clone();
                        acl.visibility.remove(name);
                        acl.instance_visibility.remove(name);
                        writes.push(put_acl(*akind, aname, &acl));
                    }
                }
            }
            _ => {}
        }
        let category = if matches!(
            kind,
            EntityKind::User
                | EntityKind::Group
                | EntityKind::Organization
                | EntityKind::ApplicationKey
        ) {
            Category::Security
        } else {
            Category::Entity
        };
        writes.push(ctx.audit(category, kind, name, format!("{kind} deleted")));
        Ok((writes, ()))
    })
    .await?;
    tracing::info!(kind = %kind, entity = %name, principal = %ctx.who.name, "entity deleted");
    Ok(InfoTable::empty())
}
