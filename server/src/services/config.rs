//! Subsystem configuration tables: `GetConfigurationTable` and `SetConfigurationTable`.
//!
//! Tables and their fields (types, defaults, ranges) are declared by whoever defines the
//! subsystem (extensions, through their manifest). Values are validated against the field's base
//! type and range, persisted with the subsystem, and pushed to the owning extension.

use super::{Params, ServiceDef};
use crate::audit::Category;
use crate::error::{ApiError, ApiResult};
use crate::model::basetype::FieldDef;
use crate::model::entities::{EntityKind, Subsystem};
use crate::model::infotable::InfoTable;
use crate::model::names::printable;
use crate::platform::{put_entity, Ctx, Platform};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use thingport_sdk::protocol::{ConfigTableDef, Request};

fn table<'a>(s: &'a Subsystem, subsystem: &str, name: &str) -> ApiResult<&'a ConfigTableDef> {
    s.configuration
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "Configuration table not found : [{}] in [{subsystem}]",
                    printable(name)
                ),
            )
        })
}

fn fields(t: &ConfigTableDef) -> Vec<FieldDef> {
    t.fields
        .iter()
        .filter_map(|f| {
            serde_json::to_value(&f.field)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
        })
        .collect()
}

pub async fn run(
    p: &Platform,
    ctx: &Ctx,
    subsystem: &str,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    let name = params.str("configurationTable").to_string();
    if def.name == "GetConfigurationTable" {
        let m = p.model();
        let s = m
            .subsystems
            .get(subsystem)
            .ok_or_else(|| ApiError::entity_not_found(subsystem))?;
        let t = table(s, subsystem, &name)?;
        let row = s.table_values(&name).unwrap_or_default();
        return Ok(InfoTable::new(&fields(t)).with_row(row));
    }
    let row: Map<String, Value> = params
        .get("values")
        .and_then(|v| v["rows"].get(0))
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "parameter 'values' must be an InfoTable with one row of field values",
            )
        })?;
    let (owner, config) = p
        .commit(|m| {
            let mut s = m.subsystems.get(subsystem).ok_or_else(|| ApiError::entity_not_found(subsystem))?.clone();
            let t = table(&s, subsystem, &name)?.clone();
            let mut set = s.values.get(&name).cloned().unwrap_or_default();
            for (k, v) in row {
                let f = t.fields.iter().find(|f| f.field.name == k).ok_or_else(|| {
                    ApiError::bad_request(format!("configuration table '{name}' has no field '{}'", printable(&k)))
                })?;
                let fd: FieldDef = serde_json::to_value(&f.field)
                    .ok()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .ok_or_else(|| ApiError::internal("bad field definition", &std::io::Error::other(k.clone())))?;
                let v = fd.check(&format!("field '{k}'"), v, m)?;
                if let Some(n) = v.as_f64() {
                    let (lo, hi) = (f.min.unwrap_or(f64::NEG_INFINITY), f.max.unwrap_or(f64::INFINITY));
                    if n < lo || n > hi {
                        let range = |x: f64| if x.is_finite() { x.to_string() } else { String::new() };
                        return Err(ApiError::unprocessable(format!(
                            "field '{k}' of configuration table '{name}' must be in the range {}..{}, got {n}",
                            range(lo),
                            range(hi)
                        )));
                    }
                }
                set.insert(k, v);
            }
            s.values.insert(name.clone(), set);
            let owner = s.owner.clone();
            let config = s.config();
            let w = vec![
                put_entity(EntityKind::Subsystem, subsystem, &s),
                ctx.audit(Category::Entity, EntityKind::Subsystem, subsystem, format!("configuration table {name} changed")),
            ];
            Ok((w, (owner, config)))
        })
        .await?;
    // The owning extension learns of the change; a failure is logged, the values stay set.
    if let Some(ext) = owner.and_then(|o| {
        p.extensions()
            .and_then(|x| x.instance_of(&o).map(|i| (x.deadline(), i)))
    }) {
        let (deadline, instance) = ext;
        if let Err(e) = instance.call(Request::Configure { config }, deadline).await {
            tracing::warn!(extension = instance.extension(), subsystem, error = %e, "extension did not accept its new configuration");
        }
    }
    Ok(InfoTable::empty())
}
