//! Thing services and property access: the generic run-time services, property reads and
//! writes (also used by the REST property routes), and property definitions.

use super::{Params, ServiceDef};
use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::{BaseType, FieldDef};
use crate::model::entities::{EntityKind, Thing};
use crate::model::infotable::InfoTable;
use crate::model::{names, Model};
use crate::platform::{put_entity, Ctx, Platform};
use crate::security::{Principal, RunPerm};
use crate::store::Write;
use serde_json::{Map, Value};

/// Run-time services that still run on a disabled Thing.
pub const RUNS_WHEN_DISABLED: &[&str] = &[
    "EnableThing",
    "DisableThing",
    "GetMetadata",
    "GetPropertyValues",
];

pub async fn run(
    p: &Platform,
    ctx: &Ctx,
    thing: &str,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    match def.name {
        "GetPropertyValues" => read_properties(p, &ctx.who, thing),
        "SetPropertyValues" => {
            let row = params
                .get("values")
                .and_then(|v| v["rows"].get(0))
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| {
                    ApiError::bad_request("parameter 'values' must hold one row of property values")
                })?;
            write_properties(p, ctx, thing, row).await?;
            Ok(InfoTable::empty())
        }
        "GetMetadata" => {
            let md = p.with_thing(thing, |m, t| Ok(metadata(m, thing, t)))?;
            Ok(InfoTable::scalar(BaseType::Json, md))
        }
        "EnableThing" | "DisableThing" => {
            let enable = def.name == "EnableThing";
            p.commit(|m| {
                let mut t = m
                    .things
                    .get(thing)
                    .ok_or_else(|| ApiError::entity_not_found(thing))?
                    .clone();
                if t.enabled == enable {
                    return Ok((vec![], ()));
                }
                t.enabled = enable;
                let what = if enable { "enabled" } else { "disabled" };
                Ok((
                    vec![
                        put_entity(EntityKind::Thing, thing, &t),
                        ctx.audit(
                            Category::Entity,
                            EntityKind::Thing,
                            thing,
                            format!("Thing {what}"),
                        ),
                    ],
                    (),
                ))
            })
            .await?;
            Ok(InfoTable::empty())
        }
        other => Err(ApiError::bad_request(format!(
            "service '{other}' is not implemented on Things"
        ))),
    }
}

/// The Thing's metadata as JSON.
pub fn metadata(m: &Model, name: &str, t: &Thing) -> Value {
    let props: Map<String, Value> = m
        .thing_properties(t)
        .into_iter()
        .map(|d| (d.name.clone(), serde_json::to_value(d).unwrap_or_default()))
        .collect();
    let services: Map<String, Value> = super::services_for(EntityKind::Thing, name)
        .map(|d| (d.name.to_string(), d.metadata()))
        .collect();
    serde_json::json!({
        "name": name,
        "description": t.description,
        "thingTemplate": t.template,
        "implementedShapes": t.shapes,
        "tags": t.tags,
        "enabled": t.enabled,
        "owner": t.owner,
        "propertyDefinitions": props,
        "serviceDefinitions": services,
    })
}

/// Every property of a Thing the caller may read, as one row; 403 when none is readable.
pub fn read_properties(p: &Platform, who: &Principal, thing: &str) -> ApiResult<InfoTable> {
    let m = p.model();
    m.check_visible(who, EntityKind::Thing, thing)?;
    let t = &m.things[thing];
    let defs: Vec<&FieldDef> = m
        .thing_properties(t)
        .into_iter()
        .filter(|d| {
            m.runtime_allowed(
                who,
                EntityKind::Thing,
                thing,
                RunPerm::PropertyRead,
                &d.name,
            )
        })
        .collect();
    if defs.is_empty() && !m.thing_properties(t).is_empty() {
        return Err(ApiError::not_authorized("PropertyRead", "*", thing));
    }
    let fields: Vec<FieldDef> = defs.iter().map(|d| (*d).clone()).collect();
    let row: Map<String, Value> = defs
        .iter()
        .map(|d| (d.name.clone(), Model::property_value(t, d)))
        .collect();
    Ok(InfoTable::new(&fields).with_row(row))
}

/// One property of a Thing, as one row.
pub fn read_property(
    p: &Platform,
    who: &Principal,
    thing: &str,
    prop: &str,
) -> ApiResult<InfoTable> {
    let m = p.model();
    m.check_runtime(who, EntityKind::Thing, thing, RunPerm::PropertyRead, prop)?;
    let t = &m.things[thing];
    let d = m
        .thing_property(t, prop)
        .ok_or_else(|| property_not_found(prop, thing))?;
    let mut row = Map::new();
    row.insert(d.name.clone(), Model::property_value(t, d));
    Ok(InfoTable::new(std::slice::from_ref(d)).with_row(row))
}

fn property_not_found(prop: &str, thing: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!(
            "Property Not Found : [{}] in [{}]",
            names::printable(prop),
            thing
        ),
    )
}

/// Validates and writes property values atomically (all or none); answers the new values.
pub async fn write_properties(
    p: &Platform,
    ctx: &Ctx,
    thing: &str,
    values: Map<String, Value>,
) -> ApiResult<InfoTable> {
    p.commit(|m| property_writes(m, ctx, thing, values)).await
}

/// Writes property values of several Things in one transaction, all or nothing (extensions'
/// `SetPropertiesBatch`): the same checks as [`write_properties`] for each.
pub async fn write_properties_batch(
    p: &Platform,
    ctx: &Ctx,
    updates: Vec<(String, Map<String, Value>)>,
) -> ApiResult<()> {
    p.commit(|m| {
        let mut writes = Vec::new();
        for (thing, values) in updates {
            writes.extend(property_writes(m, ctx, &thing, values)?.0);
        }
        Ok((writes, ()))
    })
    .await
}

/// The checked writes of one Thing's property values, and the row they produce.
fn property_writes(
    m: &crate::model::Model,
    ctx: &Ctx,
    thing: &str,
    values: Map<String, Value>,
) -> ApiResult<(Vec<Write>, InfoTable)> {
    m.check_visible(&ctx.who, EntityKind::Thing, thing)?;
    let t = &m.things[thing];
    // Permission on every property first, so a caller learns nothing about types they may not write.
    for k in values.keys() {
        m.check_runtime(
            &ctx.who,
            EntityKind::Thing,
            thing,
            RunPerm::PropertyWrite,
            k,
        )?;
    }
    if !t.enabled {
        return Err(ApiError::conflict(format!(
            "Thing '{thing}' is disabled: enable it with EnableThing"
        )));
    }
    let mut writes = Vec::with_capacity(values.len());
    let mut fields = Vec::with_capacity(values.len());
    let mut row = Map::new();
    for (k, v) in values {
        let d = m
            .thing_property(t, &k)
            .ok_or_else(|| property_not_found(&k, thing))?;
        let v = d.check(&format!("property '{k}'"), v, m)?;
        fields.push(d.clone());
        row.insert(k.clone(), v.clone());
        writes.push(Write::PutValue {
            thing: thing.to_string(),
            property: k,
            value: v,
        });
    }
    Ok((writes, InfoTable::new(&fields).with_row(row)))
}

/// AddPropertyDefinition / RemovePropertyDefinition on a Thing, template or shape.
pub async fn run_definition(
    p: &Platform,
    ctx: &Ctx,
    kind: EntityKind,
    entity: &str,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    let name = params.str("name").to_string();
    names::validate("property", &name)?;
    let adding = def.name == "AddPropertyDefinition";
    let field = if adding {
        let base_type = BaseType::parse(params.str("type"))?;
        let mut f = FieldDef::new(&name, base_type);
        f.description = params
            .opt_str("description")
            .unwrap_or_default()
            .to_string();
        f.data_shape = params.opt_str("dataShape").map(str::to_string);
        Some(f)
    } else {
        None
    };
    p.commit(|m| {
        super::refuse_if_owned(m, kind, entity)?;
        let mut writes = Vec::new();
        let mut field = field;
        if let Some(f) = &mut field {
            if let Some(ds) = &f.data_shape {
                if f.base_type != BaseType::Infotable {
                    return Err(ApiError::bad_request(
                        "parameter 'dataShape' applies only to INFOTABLE properties",
                    ));
                }
                if !m.data_shapes.contains_key(ds) {
                    return Err(ApiError::unprocessable(format!(
                        "parameter 'dataShape': data shape '{}' does not exist",
                        names::printable(ds)
                    )));
                }
            }
            if let Some(v) = params.get("defaultValue") {
                f.default_value = Some(f.check("parameter 'defaultValue'", v.clone(), m)?);
            }
        }
        let existing: Vec<String> = match kind {
            EntityKind::Thing => m
                .thing_properties(&m.things[entity])
                .iter()
                .map(|d| d.name.clone())
                .collect(),
            EntityKind::ThingTemplate => m
                .template_properties(entity)
                .iter()
                .map(|d| d.name.clone())
                .collect(),
            _ => m.shapes[entity]
                .properties
                .iter()
                .map(|d| d.name.clone())
                .collect(),
        };
        let local = |defs: &mut Vec<FieldDef>| -> ApiResult<()> {
            match &field {
                Some(f) => {
                    if existing.contains(&f.name) {
                        return Err(ApiError::conflict(format!(
                            "property '{}' already exists on {entity}",
                            f.name
                        )));
                    }
                    defs.push(f.clone());
                }
                None => {
                    let before = defs.len();
                    defs.retain(|d| d.name != name);
                    if defs.len() == before {
                        return Err(property_not_found(&name, entity));
                    }
                }
            }
            Ok(())
        };
        let affected: Vec<String> = match kind {
            EntityKind::Thing => {
                let mut t = m.things[entity].clone();
                local(&mut t.properties)?;
                writes.push(put_entity(kind, entity, &t));
                vec![entity.to_string()]
            }
            EntityKind::ThingTemplate => {
                let mut t = m.templates[entity].clone();
                local(&mut t.properties)?;
                writes.push(put_entity(kind, entity, &t));
                m.things
                    .iter()
                    .filter(|(_, t)| m.template_derives_from(&t.template, entity))
                    .map(|(n, _)| n.clone())
                    .collect()
            }
            _ => {
                let mut s = m.shapes[entity].clone();
                local(&mut s.properties)?;
                writes.push(put_entity(kind, entity, &s));
                m.things.keys().cloned().collect()
            }
        };
        if !adding {
            for t in affected {
                writes.push(Write::DeleteValue {
                    thing: t,
                    property: name.clone(),
                });
            }
        }
        let verb = if adding { "added" } else { "removed" };
        writes.push(ctx.audit(
            Category::Entity,
            kind,
            entity,
            format!("{verb} property definition '{name}'"),
        ));
        Ok((writes, ()))
    })
    .await?;
    Ok(InfoTable::empty())
}
