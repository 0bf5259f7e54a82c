//! The OpenAPI 3.1 document, generated from the route table below and from every service
//! definition (each service becomes an operation whose request body is its typed inputs).

use crate::audit::AuditEntry;
use crate::model::entities::EntityKind;
use crate::model::infotable::InfoTable;
use crate::services::{services_for, ServiceDef};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// Body of every error response.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct Error {
    /// What went wrong, naming the parameter, entity or permission.
    error: String,
}

/// The HTTP routes of [`super::router`]: method, path, summary, response schema.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/healthz", "liveness", "Health"),
    ("get", "/metrics", "Prometheus text metrics", ""),
    ("get", "/Thingworx/openapi.json", "this document", ""),
    (
        "post",
        "/Thingworx/Login",
        "opens a browser session (HTTP Basic credentials); sets the thingport_session cookie",
        "",
    ),
    ("post", "/Thingworx/Logout", "ends the browser session", ""),
    (
        "get",
        "/Thingworx/AuditLog",
        "audit entries, newest first (query: category, principal, entity, since, until, limit)",
        "InfoTable",
    ),
    (
        "get",
        "/Thingworx/{collection}",
        "the entities of a collection the caller can see",
        "InfoTable",
    ),
    (
        "get",
        "/Thingworx/{collection}/{name}",
        "an entity's metadata (needs design-time Read)",
        "",
    ),
    (
        "post",
        "/Thingworx/{collection}/{name}/Services/{service}",
        "invokes a service; body: JSON object of parameters",
        "InfoTable",
    ),
    (
        "get",
        "/Thingworx/Things/{thing}/Properties",
        "every property the caller may read, as one row",
        "InfoTable",
    ),
    (
        "get",
        "/Thingworx/Things/{thing}/Properties/{property}",
        "one property value",
        "InfoTable",
    ),
    (
        "put",
        "/Thingworx/Things/{thing}/Properties/{property}",
        "writes one property: body {\"property\": value}",
        "InfoTable",
    ),
];

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

fn responses(schema: &str) -> Value {
    let ok = if schema.is_empty() {
        json!({"description": "success"})
    } else {
        json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
    };
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "200": ok,
        "400": err("invalid parameters"),
        "401": err("missing or invalid credentials"),
        "403": err("not authorized"),
        "404": err("entity not found or not visible"),
    })
}

fn service_operation(d: &ServiceDef) -> Value {
    let props: Map<String, Value> = d
        .inputs
        .iter()
        .map(|f| {
            let mut s = f.base_type.json_schema();
            if let Value::Object(o) = &mut s {
                o.insert("description".into(), f.description.clone().into());
            }
            (f.name.clone(), s)
        })
        .collect();
    let required: Vec<&str> = d
        .inputs
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name.as_str())
        .collect();
    json!({
        "summary": d.description,
        "operationId": d.name,
        "requestBody": {"required": !required.is_empty(), "content": {"application/json": {"schema": {"type": "object", "properties": props, "required": required, "additionalProperties": false}}}},
        "responses": responses("InfoTable"),
    })
}

/// Builds the document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = settings.into_generator();
    let mut schemas = Map::new();
    schemas.insert(
        "InfoTable".into(),
        generator.subschema_for::<InfoTable>().to_value(),
    );
    schemas.insert(
        "Error".into(),
        generator.subschema_for::<Error>().to_value(),
    );
    schemas.insert(
        "AuditEntry".into(),
        generator.subschema_for::<AuditEntry>().to_value(),
    );
    schemas.insert(
        "Health".into(),
        json!({"type": "object", "properties": {"status": {"type": "string"}}}),
    );
    for (k, v) in generator.take_definitions(true) {
        schemas.insert(k, v);
    }
    // A `$ref` at the top of a component would point at itself; inline the definitions instead.
    for name in ["InfoTable", "Error", "AuditEntry"] {
        if let Some(def) = schemas
            .get(name)
            .and_then(|v| v.get("$ref"))
            .and_then(Value::as_str)
        {
            let target = def.trim_start_matches("#/components/schemas/").to_string();
            if target != name {
                if let Some(body) = schemas.get(&target).cloned() {
                    schemas.insert(name.into(), body);
                }
            }
        }
    }
    let mut paths = Map::new();
    for (method, path, summary, schema) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = json!({"summary": summary, "parameters": path_params(path), "responses": responses(schema)});
    }
    let examples = [
        (EntityKind::Thing, "{thing}"),
        (EntityKind::ThingTemplate, "{template}"),
        (EntityKind::ThingShape, "{shape}"),
        (EntityKind::User, "{user}"),
        (EntityKind::Group, "{group}"),
        (EntityKind::Organization, "{organization}"),
        (EntityKind::Subsystem, "AuditSubsystem"),
        (EntityKind::Resource, "EntityServices"),
        (EntityKind::Collection, "{collection}"),
    ];
    for (kind, name) in examples {
        for d in services_for(kind, name) {
            let path = format!(
                "/Thingworx/{}/{name}/Services/{}",
                kind.collection(),
                d.name
            );
            let mut op = service_operation(d);
            op["parameters"] = Value::Array(path_params(&path));
            op["operationId"] = format!("{}_{}", kind.as_str(), d.name).into();
            paths.insert(path, json!({"post": op}));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Thingport REST API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "ThingWorx-compatible REST API of the Thingport host platform. Authenticate with an appKey header or HTTP Basic."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "appKey": {"type": "apiKey", "in": "header", "name": "appKey"},
                "basic": {"type": "http", "scheme": "basic"}
            }
        },
        "security": [{"appKey": []}, {"basic": []}],
        "paths": paths,
    })
}
