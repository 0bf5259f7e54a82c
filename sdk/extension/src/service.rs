//! Typed service declarations: a [`ServiceDecl`] (and data shape fields) built from Rust types
//! through their `schemars` JSON schema, so the declared signature and the code cannot drift.
//!
//! Mapping of a JSON schema to a [`BaseType`]:
//!
//! | schema | base type |
//! |---|---|
//! | `string` (format `date-time`: `DATETIME`, `uuid`: `GUID`) | `STRING` |
//! | `integer` of format `int8`/`int16`/`int32`/`uint8`/`uint16` | `INTEGER` |
//! | any other `integer` (`i64`, `u32`, `u64`, …) | `LONG` |
//! | `number` | `NUMBER` |
//! | `boolean` | `BOOLEAN` |
//! | `null` (`()`) | `NOTHING` |
//! | `object`, `array`, anything else (`serde_json::Value`, nested structs, enums with data) | `JSON` |
//!
//! `Option<T>` maps like `T` and is not required; a field is required when the schema lists it in
//! `required` (not an `Option`, no `#[serde(default)]`). A field's doc comment becomes its
//! description, a `#[serde(default = ...)]` value its default. Two extension keywords override
//! the mapping: `#[schemars(extend("x-thingport-base-type" = "THINGNAME"))]` sets the base type,
//! `#[schemars(extend("x-thingport-data-shape" = "RemoteEndpoint"))]` the data shape (for an
//! `INFOTABLE`). Fields come in alphabetical order (the order of `serde_json`'s maps).

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::protocol::{BaseType, DataShapeDef, Field, ServiceDecl};

/// Overrides the base type of a field: `#[schemars(extend("x-thingport-base-type" = "THINGNAME"))]`.
pub const BASE_TYPE_KEYWORD: &str = "x-thingport-base-type";
/// Sets the data shape of a field: `#[schemars(extend("x-thingport-data-shape" = "RemoteEndpoint"))]`.
pub const DATA_SHAPE_KEYWORD: &str = "x-thingport-data-shape";

/// Declares a service whose inputs are the fields of `I` and whose result is `O`.
///
/// - `I` is a struct with named fields (each becomes an input) or `()` for no inputs.
/// - `O` is `()` for no result, a struct whose only field is named `result` (that field is the
///   result, with its doc comment as description), or any other type, which becomes a field
///   `result` of its base type (a struct with several fields is `JSON`).
///
/// ```
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use thingport_sdk::protocol::BaseType;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct AddInput {
///     /// The first term.
///     a: f64,
///     b: f64,
/// }
///
/// let add = thingport_sdk::service::<AddInput, f64>("Add", "adds two numbers");
/// assert_eq!(add.inputs.len(), 2);
/// assert!(add.inputs[0].required);
/// assert_eq!(add.inputs[0].description, "The first term.");
/// assert_eq!(add.result.unwrap().base_type, BaseType::Number);
/// ```
///
/// # Panics
/// When `I` is neither `()` nor a struct with named fields: a declaration bug, caught the first
/// time the manifest is built (in the extension's own tests).
pub fn service<I: JsonSchema, O: JsonSchema>(name: &str, description: &str) -> ServiceDecl {
    ServiceDecl {
        name: name.into(),
        description: description.into(),
        inputs: input_fields::<I>(name),
        result: result_field::<O>(),
    }
}

/// The fields of a struct `T`, mapped as for service inputs: for a template's properties or a
/// data shape.
///
/// # Panics
/// When `T` is not a struct with named fields.
pub fn fields_of<T: JsonSchema>() -> Vec<Field> {
    input_fields::<T>(&T::schema_name())
}

/// A data shape whose fields are those of the struct `T`.
pub fn data_shape<T: JsonSchema>(name: &str, description: &str) -> DataShapeDef {
    DataShapeDef {
        name: name.into(),
        description: description.into(),
        fields: fields_of::<T>(),
    }
}

/// The schema of `T` with nested types inlined (no `$ref` to resolve, except for recursive types).
fn schema_of<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

fn input_fields<T: JsonSchema>(what: &str) -> Vec<Field> {
    let schema = schema_of::<T>();
    if schema_types(&schema) == ["null"] {
        return Vec::new();
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        panic!(
            "{what}: the input type {} must be a struct with named fields or ()",
            T::schema_name()
        );
    };
    let required = required_names(&schema);
    properties
        .iter()
        .map(|(name, property)| {
            let mut field = field_from_schema(name, property);
            field.required = required.contains(&name.as_str());
            field
        })
        .collect()
}

fn result_field<T: JsonSchema>() -> Option<Field> {
    let schema = schema_of::<T>();
    if schema_types(&schema) == ["null"] {
        return None;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        if properties.len() == 1 {
            if let Some(result) = properties.get("result") {
                return Some(field_from_schema("result", result));
            }
        }
    }
    Some(field_from_schema("result", &schema))
}

fn required_names(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn field_from_schema(name: &str, schema: &Value) -> Field {
    let mut field = Field::new(name, base_type(schema));
    if let Some(description) = schema.get("description").and_then(Value::as_str) {
        field.description = description.into();
    }
    if let Some(shape) = schema.get(DATA_SHAPE_KEYWORD).and_then(Value::as_str) {
        field.data_shape = Some(shape.into());
    }
    if let Some(default) = schema.get("default") {
        field.default_value = Some(default.clone());
    }
    field
}

/// The base type a JSON schema maps to (see the module's table).
pub fn base_type(schema: &Value) -> BaseType {
    if let Some(forced) = schema.get(BASE_TYPE_KEYWORD) {
        if let Ok(base_type) = serde_json::from_value(forced.clone()) {
            return base_type;
        }
    }
    // `Option<T>` of a complex `T`: `anyOf: [T, {"type": "null"}]`.
    if let Some(alternatives) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
        let non_null: Vec<&Value> = alternatives
            .as_array()
            .into_iter()
            .flatten()
            .filter(|alternative| schema_types(alternative) != ["null"])
            .collect();
        return match non_null.as_slice() {
            [only] => base_type(only),
            _ => BaseType::Json,
        };
    }
    let types = schema_types(schema);
    let types: Vec<&str> = match types.as_slice() {
        [only] => vec![only],
        // `Option<T>` of a simple `T`: `"type": ["string", "null"]`.
        many => many.iter().copied().filter(|t| *t != "null").collect(),
    };
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    match (types.as_slice(), format) {
        (["string"], "date-time") => BaseType::Datetime,
        (["string"], "uuid") => BaseType::Guid,
        (["string"], _) => BaseType::String,
        (["integer"], "int8" | "int16" | "int32" | "uint8" | "uint16") => BaseType::Integer,
        (["integer"], _) => BaseType::Long,
        (["number"], _) => BaseType::Number,
        (["boolean"], _) => BaseType::Boolean,
        (["null"], _) => BaseType::Nothing,
        _ => BaseType::Json,
    }
}

/// The `type` keyword as a list (`"string"` → `["string"]`); empty when absent.
fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
