//! Services: typed definitions, parameter validation, and dispatch by name.
//!
//! A call names an entity and a service. [`invoke`] checks visibility, finds the definition,
//! checks the permission the definition asks for (run-time `ServiceInvoke` on the service, or a
//! design-time permission), validates and normalises the parameters against the typed inputs,
//! and only then runs the implementation. Extensions will register definitions here too.

mod audit;
mod defs;
mod entities;
mod members;
mod permissions;
pub mod things;

use crate::error::{ApiError, ApiResult};
use crate::model::basetype::{BaseType, FieldDef, ShapeLookup};
use crate::model::entities::EntityKind;
use crate::model::infotable::InfoTable;
use crate::model::names::printable;
use crate::platform::{Ctx, Platform};
use crate::security::{DesignPerm, RunPerm};
pub use defs::services_for;
use serde_json::{Map, Value};

/// What a caller needs before a service runs (beyond seeing the entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Run-time `ServiceInvoke` on the service's name.
    RunTime,
    /// A design-time permission on the entity.
    Design(DesignPerm),
    /// The implementation checks what it needs (e.g. `Create` on a collection).
    Custom,
}

/// A service's typed signature.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: &'static str,
    pub description: &'static str,
    pub inputs: Vec<FieldDef>,
    pub result: FieldDef,
    pub access: Access,
}

impl ServiceDef {
    pub fn new(name: &'static str, access: Access, description: &'static str) -> Self {
        Self {
            name,
            description,
            inputs: Vec::new(),
            result: FieldDef::new("result", BaseType::Nothing),
            access,
        }
    }
    pub fn input(mut self, f: FieldDef) -> Self {
        self.inputs.push(f);
        self
    }
    pub fn returns(mut self, t: BaseType) -> Self {
        self.result = FieldDef::new("result", t);
        self
    }

    /// JSON metadata of the service (for GetMetadata and OpenAPI).
    pub fn metadata(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "parameterDefinitions": self.inputs,
            "resultType": self.result,
        })
    }
}

/// Validated, normalised parameters.
#[derive(Debug, Default)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Checks a JSON body against a service's inputs.
    pub fn validate(def: &ServiceDef, body: Value, shapes: &dyn ShapeLookup) -> ApiResult<Params> {
        let mut given = match body {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => {
                return Err(ApiError::bad_request(
                    "request body must be a JSON object of parameters",
                ))
            }
        };
        if let Some(k) = given
            .keys()
            .find(|k| !def.inputs.iter().any(|f| &f.name == *k))
        {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{}' for service '{}'",
                printable(k),
                def.name
            )));
        }
        let mut out = Map::new();
        for f in &def.inputs {
            let v = given.remove(&f.name).unwrap_or(Value::Null);
            let v = if v.is_null() {
                f.default_value.clone().unwrap_or(Value::Null)
            } else {
                v
            };
            if v.is_null() {
                if f.required {
                    return Err(ApiError::bad_request(format!(
                        "missing required parameter '{}' ({})",
                        f.name, f.base_type
                    )));
                }
                continue;
            }
            let v = f.check(&format!("parameter '{}'", f.name), v, shapes)?;
            out.insert(f.name.clone(), v);
        }
        Ok(Params(out))
    }

    pub fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    /// A string parameter; required ones are present after validation.
    pub fn str(&self, k: &str) -> &str {
        self.get(k).and_then(Value::as_str).unwrap_or("")
    }
    pub fn opt_str(&self, k: &str) -> Option<&str> {
        self.get(k).and_then(Value::as_str)
    }
    pub fn bool(&self, k: &str) -> Option<bool> {
        self.get(k).and_then(Value::as_bool)
    }
    pub fn i64(&self, k: &str) -> Option<i64> {
        self.get(k).and_then(Value::as_i64)
    }
}

/// Finds a service on an entity or answers 404 naming it.
pub fn find(kind: EntityKind, entity: &str, service: &str) -> ApiResult<&'static ServiceDef> {
    services_for(kind, entity)
        .find(|d| d.name == service)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!(
                    "Service Not Found : [{}] in [{}]",
                    printable(service),
                    printable(entity)
                ),
            )
        })
}

/// Invokes a service on an entity for a caller: the one entry point of every service call.
pub async fn invoke(
    p: &Platform,
    ctx: &Ctx,
    kind: EntityKind,
    entity: &str,
    service: &str,
    body: Value,
) -> ApiResult<InfoTable> {
    let (def, params) = {
        let m = p.model();
        m.check_visible(&ctx.who, kind, entity)?;
        let def = find(kind, entity, service)?;
        match def.access {
            Access::RunTime => {
                m.check_runtime(&ctx.who, kind, entity, RunPerm::ServiceInvoke, def.name)?
            }
            Access::Design(perm) => m.check_design(&ctx.who, kind, entity, perm)?,
            Access::Custom => {}
        }
        if kind == EntityKind::Thing
            && def.access == Access::RunTime
            && !things::RUNS_WHEN_DISABLED.contains(&def.name)
            && m.things.get(entity).is_some_and(|t| !t.enabled)
        {
            return Err(ApiError::conflict(format!(
                "Thing '{entity}' is disabled: enable it with EnableThing"
            )));
        }
        (def, Params::validate(def, body, &*m)?)
    };
    tracing::debug!(entity, service = def.name, principal = %ctx.who.name, "service call");
    let n = def.name;
    if n.contains("Permission") {
        permissions::run(p, ctx, kind, entity, def, params).await
    } else if n.ends_with("PropertyDefinition") {
        things::run_definition(p, ctx, kind, entity, def, params).await
    } else {
        match kind {
            EntityKind::Thing => things::run(p, ctx, entity, def, params).await,
            EntityKind::Resource => entities::run(p, ctx, def, params).await,
            EntityKind::Subsystem => audit::run(p, params).await,
            _ => members::run(p, ctx, kind, entity, def, params).await,
        }
    }
}

/// Checks a password against the policy (used for the bootstrap administrator too).
pub fn check_admin_password(pw: &str) -> ApiResult<()> {
    members::check_password("admin-password", pw)
}
