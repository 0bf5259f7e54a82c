//! Services: typed definitions, parameter validation, and dispatch by name.
//!
//! A call names an entity and a service. [`invoke`] checks visibility, finds the definition,
//! checks the permission the definition asks for (run-time `ServiceInvoke` on the service, or a
//! design-time permission), validates and normalises the parameters against the typed inputs,
//! and only then runs the implementation. Extensions will register definitions here too.

mod audit;
mod config;
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

/// The implementation that runs a service: every definition names its own, so a new service
/// cannot be routed by accident (by a substring of its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Not given one: answered as an internal error (a test keeps every host list routed).
    Unrouted,
    /// Generic Thing services (`things::run`).
    Thing,
    /// `AddPropertyDefinition` / `RemovePropertyDefinition` on Things and templates.
    PropertyDefinition,
    /// Visibility, design-time and run-time permission services.
    Permissions,
    /// `Get` / `SetConfigurationTable` on subsystems.
    Configuration,
    /// `Resources/EntityServices`: create and delete entities.
    EntityServices,
    /// Group and organization membership, user passwords.
    Membership,
    /// `AuditSubsystem.QueryAuditHistory`.
    Audit,
    /// `PlatformSubsystem`: extension packages.
    ExtensionPackages,
    /// Implemented by an extension package (called through the extension host).
    Extension,
}

/// A service's typed signature.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: &'static str,
    pub description: &'static str,
    pub inputs: Vec<FieldDef>,
    pub result: FieldDef,
    pub access: Access,
    pub handler: Handler,
}

impl ServiceDef {
    pub fn new(name: &'static str, access: Access, description: &'static str) -> Self {
        Self {
            name,
            description,
            inputs: Vec::new(),
            result: FieldDef::new("result", BaseType::Nothing),
            access,
            handler: Handler::Unrouted,
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
    let (def, params, extension) = {
        let m = p.model();
        m.check_visible(&ctx.who, kind, entity)?;
        // Host services first, then the services extensions implement on this entity.
        let (def, extension) = match find(kind, entity, service) {
            Ok(def) => (def, None),
            Err(not_found) => match p
                .extensions()
                .and_then(|x| x.find_service(&m, kind, entity, service))
            {
                Some((def, instance)) => (def, Some(instance)),
                None => return Err(not_found),
            },
        };
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
        (def, Params::validate(def, body, &*m)?, extension)
    };
    tracing::debug!(entity, service = def.name, principal = %ctx.who.name, "service call");
    if let Some(instance) = extension {
        return call_extension(p, ctx, kind, entity, def, params, instance).await;
    }
    match def.handler {
        Handler::Permissions => permissions::run(p, ctx, kind, entity, def, params).await,
        Handler::Configuration => config::run(p, ctx, entity, def, params).await,
        Handler::PropertyDefinition => {
            things::run_definition(p, ctx, kind, entity, def, params).await
        }
        Handler::Thing => things::run(p, ctx, entity, def, params).await,
        Handler::EntityServices => entities::run(p, ctx, def, params).await,
        Handler::ExtensionPackages => extension_packages(p, ctx, def, params).await,
        Handler::Audit => audit::run(p, params).await,
        Handler::Membership => members::run(p, ctx, kind, entity, def, params).await,
        Handler::Extension | Handler::Unrouted => Err(ApiError::internal(
            "a service has no implementation",
            &std::io::Error::other(format!("{} on {kind} {entity}", def.name)),
        )),
    }
}

/// `PlatformSubsystem.GetExtensionPackageList` and `DeleteExtensionPackage`: administrators only.
async fn extension_packages(
    p: &Platform,
    ctx: &Ctx,
    def: &ServiceDef,
    params: Params,
) -> ApiResult<InfoTable> {
    if !ctx.who.admin {
        return Err(ApiError::not_authorized(
            "ServiceInvoke",
            def.name,
            "PlatformSubsystem",
        ));
    }
    let Some(ext) = p.extensions() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the extension system is not running",
        ));
    };
    if def.name == "DeleteExtensionPackage" {
        ext.delete(p, ctx, params.str("packageName")).await?;
        return Ok(InfoTable::empty());
    }
    let mut t = InfoTable::new(&[
        FieldDef::new("name", BaseType::String),
        FieldDef::new("packageVersion", BaseType::String),
        FieldDef::new("vendor", BaseType::String),
        FieldDef::new("description", BaseType::String),
        FieldDef::new("dependsOn", BaseType::String),
        FieldDef::new("sha256", BaseType::String),
        FieldDef::new("status", BaseType::String),
    ]);
    for (md, sha, status) in ext.list() {
        let deps: Vec<String> = md
            .depends_on
            .iter()
            .map(|d| format!("{}:{}", d.name, d.version))
            .collect();
        t.push(serde_json::json!({
            "name": md.name, "packageVersion": md.version.to_string(), "vendor": md.vendor,
            "description": md.description, "dependsOn": deps.join(","), "sha256": sha, "status": status,
        }));
    }
    Ok(t)
}

/// Calls an extension's implementation of a service with validated parameters.
async fn call_extension(
    p: &Platform,
    ctx: &Ctx,
    kind: EntityKind,
    entity: &str,
    def: &ServiceDef,
    params: Params,
    instance: std::sync::Arc<crate::extensions::host::Instance>,
) -> ApiResult<InfoTable> {
    let request = thingport_sdk::protocol::Request::Invoke {
        entity_kind: kind.collection().to_string(),
        entity: entity.to_string(),
        service: def.name.to_string(),
        params: Value::Object(params.0),
        caller: thingport_sdk::protocol::Caller {
            name: ctx.who.name.clone(),
            admin: ctx.who.admin,
            source_ip: ctx.source_ip.clone(),
        },
    };
    let deadline = p
        .extensions()
        .map(|x| x.deadline())
        .unwrap_or(std::time::Duration::from_secs(10));
    let value = instance.call(request, deadline).await.map_err(|e| {
        tracing::warn!(extension = instance.extension(), service = def.name, error = %e, "extension service failed");
        e.to_api_error()
    })?;
    Ok(match def.result.base_type {
        BaseType::Nothing => InfoTable::empty(),
        BaseType::Infotable => extension_table(p, def, value),
        t => InfoTable::scalar(t, value),
    })
}

/// An extension service declared with an INFOTABLE result answers the table itself (ThingWorx
/// semantics), with the declared data shape's fields; `rows` that are not objects are dropped.
fn extension_table(p: &Platform, def: &ServiceDef, value: Value) -> InfoTable {
    let fields = def
        .result
        .data_shape
        .as_deref()
        .and_then(|ds| p.model().data_shapes.get(ds).map(|d| d.fields.clone()))
        .unwrap_or_default();
    let mut table = InfoTable::new(&fields);
    if let Value::Object(mut obj) = value {
        if let Some(Value::Array(rows)) = obj.remove("rows") {
            rows.into_iter().for_each(|row| table.push(row));
        }
    }
    table
}

/// What uses an entity (for 409 answers): `Kind name` labels.
pub fn entities_in_use(m: &crate::model::Model, kind: EntityKind, name: &str) -> Vec<String> {
    entities::users_of(m, kind, name)
}

/// Refuses to change an entity an extension owns through the generic services.
pub fn refuse_if_owned(m: &crate::model::Model, kind: EntityKind, name: &str) -> ApiResult<()> {
    match crate::extensions::definitions::owner_of(m, kind, name).flatten() {
        Some(pkg) => Err(ApiError::conflict(format!(
            "{kind} '{name}' belongs to extension package {pkg}: it changes with the package (import a new version, or delete the package)"
        ))),
        None => Ok(()),
    }
}

/// Checks a password against the policy (used for the bootstrap administrator too).
pub fn check_admin_password(pw: &str) -> ApiResult<()> {
    members::check_password("admin-password", pw)
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    #[test]
    fn every_host_service_names_its_implementation() {
        for d in defs::all_host_services() {
            assert_ne!(d.handler, Handler::Unrouted, "{} has no handler", d.name);
            assert_ne!(d.handler, Handler::Extension, "{} is the host's", d.name);
            // What the old name-based routing did, kept as a cross-check.
            if d.name.contains("Permission") {
                assert_eq!(d.handler, Handler::Permissions, "{}", d.name);
            }
            if d.name.ends_with("ConfigurationTable") {
                assert_eq!(d.handler, Handler::Configuration, "{}", d.name);
            }
        }
    }
}
