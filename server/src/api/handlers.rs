//! Route handlers: lists, entity metadata, properties, service calls, the audit log.

use super::auth::Caller;
use super::body::JsonBody;
use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::{BaseType, FieldDef};
use crate::model::entities::EntityKind;
use crate::model::infotable::InfoTable;
use crate::model::names::printable;
use crate::security::DesignPerm;
use crate::services::{self, things};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

fn kind(collection: &str) -> ApiResult<EntityKind> {
    EntityKind::from_collection(collection)
        .filter(|k| *k != EntityKind::Collection)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("unknown collection '{}'", printable(collection)),
            )
        })
}

/// `GET /Thingworx/{collection}`: the entities the caller can see.
pub async fn list(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Path(collection): Path<String>,
) -> ApiResult<Json<InfoTable>> {
    let kind = kind(&collection)?;
    let m = s.platform.model();
    let mut fields = vec![
        FieldDef::new("name", BaseType::String),
        FieldDef::new("description", BaseType::String),
    ];
    match kind {
        EntityKind::Thing => fields.extend([
            FieldDef::new("thingTemplate", BaseType::String),
            FieldDef::new("enabled", BaseType::Boolean),
            FieldDef::new("tags", BaseType::Json),
        ]),
        EntityKind::ThingTemplate => {
            fields.push(FieldDef::new("baseThingTemplate", BaseType::String))
        }
        EntityKind::ApplicationKey => fields.extend([
            FieldDef::new("user", BaseType::String),
            FieldDef::new("expirationDate", BaseType::Datetime),
        ]),
        _ => {}
    }
    let mut t = InfoTable::new(&fields);
    for name in m.names(kind) {
        if !m.is_visible(&ctx.who, kind, name) {
            continue;
        }
        let mut row = json!({"name": name, "description": m.description(kind, name)});
        match kind {
            EntityKind::Thing => {
                let th = &m.things[name];
                row["thingTemplate"] = th.template.clone().into();
                row["enabled"] = th.enabled.into();
                row["tags"] = json!(th.tags);
            }
            EntityKind::ThingTemplate => row["baseThingTemplate"] = json!(m.templates[name].base),
            EntityKind::ApplicationKey => {
                let k = &m.app_keys[name];
                row["user"] = k.user.clone().into();
                row["expirationDate"] = json!(k.expires_at);
            }
            _ => {}
        }
        t.push(row);
    }
    Ok(Json(t))
}

/// `GET /Thingworx/{collection}/{name}`: an entity's metadata (needs design-time Read).
pub async fn entity(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Path((collection, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let kind = kind(&collection)?;
    let m = s.platform.model();
    m.check_design(&ctx.who, kind, &name, DesignPerm::Read)?;
    let services: Map<String, Value> = services::services_for(kind, &name)
        .map(|d| (d.name.to_string(), d.metadata()))
        .collect();
    let props = |defs: Vec<&FieldDef>| -> Map<String, Value> {
        defs.into_iter()
            .map(|d| (d.name.clone(), json!(d)))
            .collect()
    };
    let v = match kind {
        EntityKind::Thing => things::metadata(&m, &name, &m.things[&name]),
        EntityKind::ThingTemplate => {
            let t = &m.templates[&name];
            json!({"name": name, "description": t.description, "baseThingTemplate": t.base, "implementedShapes": t.shapes,
                   "owner": t.owner, "propertyDefinitions": props(m.template_properties(&name)), "serviceDefinitions": services})
        }
        EntityKind::ThingShape => {
            let t = &m.shapes[&name];
            json!({"name": name, "description": t.description, "owner": t.owner,
                   "propertyDefinitions": props(t.properties.iter().collect()), "serviceDefinitions": services})
        }
        EntityKind::DataShape => {
            let d = &m.data_shapes[&name];
            json!({"name": name, "description": d.description, "owner": d.owner,
                   "fieldDefinitions": crate::model::infotable::data_shape_json(&d.fields)["fieldDefinitions"]})
        }
        EntityKind::User => {
            let u = &m.users[&name];
            let groups = m.principal(&name).groups;
            json!({"name": name, "description": u.description, "enabled": u.enabled, "groups": groups, "serviceDefinitions": services})
        }
        EntityKind::Group | EntityKind::Organization => {
            let set = if kind == EntityKind::Group {
                &m.groups[&name]
            } else {
                &m.orgs[&name]
            };
            json!({"name": name, "description": set.description, "members": set.members, "serviceDefinitions": services})
        }
        EntityKind::ApplicationKey => {
            let k = &m.app_keys[&name];
            json!({"name": name, "description": k.description, "user": k.user, "expirationDate": k.expires_at, "createdAt": k.created_at})
        }
        _ => {
            json!({"name": name, "description": m.description(kind, &name), "serviceDefinitions": services})
        }
    };
    Ok(Json(v))
}

/// `GET /Thingworx/Things/{thing}/Properties`.
pub async fn properties(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Path(thing): Path<String>,
) -> ApiResult<Json<InfoTable>> {
    things::read_properties(&s.platform, &ctx.who, &thing).map(Json)
}

/// `GET /Thingworx/Things/{thing}/Properties/{property}`.
pub async fn property(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Path((thing, prop)): Path<(String, String)>,
) -> ApiResult<Json<InfoTable>> {
    things::read_property(&s.platform, &ctx.who, &thing, &prop).map(Json)
}

/// `PUT /Thingworx/Things/{thing}/Properties/{property}` with `{"property": value}`.
pub async fn put_property(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Path((thing, prop)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<InfoTable>> {
    let mut obj = match body {
        Value::Object(o) => o,
        _ => {
            return Err(ApiError::bad_request(format!(
                "request body must be a JSON object {{\"{}\": value}}",
                printable(&prop)
            )))
        }
    };
    let value = obj.remove(&prop).ok_or_else(|| {
        ApiError::bad_request(format!(
            "request body must hold the property '{}'",
            printable(&prop)
        ))
    })?;
    if let Some(extra) = obj.keys().next() {
        return Err(ApiError::bad_request(format!(
            "request body holds '{}' besides '{}': write one property per PUT",
            printable(extra),
            printable(&prop)
        )));
    }
    let mut values = Map::new();
    values.insert(prop, value);
    things::write_properties(&s.platform, &ctx, &thing, values)
        .await
        .map(Json)
}

/// `POST /Thingworx/{collection}/{name}/Services/{service}`.
pub async fn invoke(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Path((collection, name, service)): Path<(String, String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<InfoTable>> {
    let kind = EntityKind::from_collection(&collection).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("unknown collection '{}'", printable(&collection)),
        )
    })?;
    services::invoke(&s.platform, &ctx, kind, &name, &service, body)
        .await
        .map(Json)
}

/// `GET /Thingworx/AuditLog?category=&principal=&entity=&since=&until=&limit=`: the same
/// service as `AuditSubsystem.QueryAuditHistory`, with query-string parameters.
pub async fn audit_log(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<InfoTable>> {
    let mut params = Map::new();
    for (k, v) in q {
        let value = match k.as_str() {
            "limit" => Value::from(
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request("parameter 'limit' must be INTEGER"))?,
            ),
            "since" | "until" => match v.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::from(v),
            },
            _ => Value::from(v),
        };
        params.insert(k, value);
    }
    services::invoke(
        &s.platform,
        &ctx,
        EntityKind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
        Value::Object(params),
    )
    .await
    .map(Json)
}
