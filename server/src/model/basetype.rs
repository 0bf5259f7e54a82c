//! Base types, field definitions and the validation of values against them.
//!
//! Every value that enters the platform (a property write, a service parameter, an InfoTable row)
//! goes through [`FieldDef::check`], which validates and normalises it (DATETIME becomes epoch
//! milliseconds, INFOTABLE gains its data shape) or names exactly what is wrong.

use crate::error::ApiError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// The base types of SPEC §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum BaseType {
    String,
    Number,
    Integer,
    Long,
    Boolean,
    Datetime,
    Json,
    Infotable,
    Thingname,
    Guid,
    /// Only as a service result: the service returns no value.
    Nothing,
}

impl BaseType {
    pub const ALL: [BaseType; 10] = [
        BaseType::String,
        BaseType::Number,
        BaseType::Integer,
        BaseType::Long,
        BaseType::Boolean,
        BaseType::Datetime,
        BaseType::Json,
        BaseType::Infotable,
        BaseType::Thingname,
        BaseType::Guid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BaseType::String => "STRING",
            BaseType::Number => "NUMBER",
            BaseType::Integer => "INTEGER",
            BaseType::Long => "LONG",
            BaseType::Boolean => "BOOLEAN",
            BaseType::Datetime => "DATETIME",
            BaseType::Json => "JSON",
            BaseType::Infotable => "INFOTABLE",
            BaseType::Thingname => "THINGNAME",
            BaseType::Guid => "GUID",
            BaseType::Nothing => "NOTHING",
        }
    }

    /// Parses a base type name as clients send it (case-insensitive).
    pub fn parse(s: &str) -> Result<BaseType, ApiError> {
        let up = s.to_ascii_uppercase();
        BaseType::ALL
            .into_iter()
            .find(|t| t.as_str() == up)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown base type '{}': expected one of STRING, NUMBER, INTEGER, LONG, BOOLEAN, DATETIME, JSON, INFOTABLE, THINGNAME, GUID",
                    super::names::printable(s)
                ))
            })
    }

    /// A JSON schema fragment for OpenAPI.
    pub fn json_schema(self) -> Value {
        match self {
            BaseType::String | BaseType::Thingname => serde_json::json!({"type": "string"}),
            BaseType::Guid => serde_json::json!({"type": "string", "format": "uuid"}),
            BaseType::Number => serde_json::json!({"type": "number"}),
            BaseType::Integer => serde_json::json!({"type": "integer", "format": "int32"}),
            BaseType::Long => serde_json::json!({"type": "integer", "format": "int64"}),
            BaseType::Boolean => serde_json::json!({"type": "boolean"}),
            BaseType::Datetime => {
                serde_json::json!({"oneOf": [{"type": "integer", "description": "milliseconds since the epoch"}, {"type": "string", "format": "date-time"}]})
            }
            BaseType::Json => serde_json::json!({}),
            BaseType::Infotable => serde_json::json!({"$ref": "#/components/schemas/InfoTable"}),
            BaseType::Nothing => serde_json::json!({"type": "null"}),
        }
    }
}

impl fmt::Display for BaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed field: a property definition, a service parameter, a data shape field or a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldDef {
    pub name: String,
    pub base_type: BaseType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// For INFOTABLE fields: the data shape rows must follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_shape: Option<String>,
    /// For service parameters: whether the caller must supply it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// For properties: the value read before any write; for parameters: the value used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<Value>,
}

/// Resolves data shape names to their fields while values are checked.
pub trait ShapeLookup {
    fn data_shape_fields(&self, name: &str) -> Option<&[FieldDef]>;
}

impl ShapeLookup for HashMap<String, Vec<FieldDef>> {
    fn data_shape_fields(&self, name: &str) -> Option<&[FieldDef]> {
        self.get(name).map(Vec::as_slice)
    }
}

/// Largest STRING value accepted, in bytes.
pub const MAX_STRING_LEN: usize = 256 * 1024;
/// Most rows accepted in one INFOTABLE value.
pub const MAX_ROWS: usize = 10_000;

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl FieldDef {
    pub fn new(name: &str, base_type: BaseType) -> Self {
        Self {
            name: name.to_string(),
            base_type,
            description: String::new(),
            data_shape: None,
            required: false,
            default_value: None,
        }
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn describe(mut self, d: &str) -> Self {
        self.description = d.to_string();
        self
    }
    pub fn shape(mut self, s: &str) -> Self {
        self.data_shape = Some(s.to_string());
        self
    }
    pub fn default(mut self, v: Value) -> Self {
        self.default_value = Some(v);
        self
    }

    /// Validates `value` against this field and returns its normalised form.
    /// `what` names the field in errors, e.g. "parameter 'name'" or "property 'p'".
    pub fn check(
        &self,
        what: &str,
        value: Value,
        shapes: &dyn ShapeLookup,
    ) -> Result<Value, ApiError> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        let t = self.base_type;
        let wrong =
            |v: &Value| ApiError::bad_request(format!("{what} must be {t}, got {}", json_kind(v)));
        match t {
            BaseType::String => match &value {
                Value::String(s) if s.len() > MAX_STRING_LEN => Err(ApiError::unprocessable(format!(
                    "{what} is longer than {MAX_STRING_LEN} bytes"
                ))),
                Value::String(_) => Ok(value),
                v => Err(wrong(v)),
            },
            BaseType::Thingname => match &value {
                Value::String(s) if s.is_empty() => Ok(value),
                Value::String(s) => {
                    super::names::validate("THINGNAME", s)
                        .map_err(|e| ApiError::bad_request(format!("{what}: {}", e.message)))?;
                    Ok(value)
                }
                v => Err(wrong(v)),
            },
            BaseType::Guid => match &value {
                Value::String(s) if is_guid(s) => Ok(value),
                Value::String(_) => Err(ApiError::bad_request(format!(
                    "{what} must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                ))),
                v => Err(wrong(v)),
            },
            BaseType::Number => match &value {
                Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(value),
                v => Err(wrong(v)),
            },
            BaseType::Integer => match value.as_i64() {
                Some(i) if i32::try_from(i).is_ok() => Ok(value),
                Some(_) => Err(ApiError::unprocessable(format!(
                    "{what} is out of the INTEGER range ({}..{})",
                    i32::MIN,
                    i32::MAX
                ))),
                None => Err(wrong(&value)),
            },
            BaseType::Long => match value.as_i64() {
                Some(_) => Ok(value),
                None => Err(wrong(&value)),
            },
            BaseType::Boolean => match value {
                Value::Bool(_) => Ok(value),
                ref v => Err(wrong(v)),
            },
            BaseType::Datetime => match &value {
                Value::Number(n) => n
                    .as_i64()
                    .map(Value::from)
                    .ok_or_else(|| wrong(&value)),
                Value::String(s) => parse_datetime(s).map(Value::from).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{what} must be DATETIME: milliseconds since the epoch or an RFC 3339 date-time"
                    ))
                }),
                v => Err(wrong(v)),
            },
            BaseType::Json => Ok(value),
            BaseType::Infotable => self.check_infotable(what, value, shapes),
            BaseType::Nothing => Ok(Value::Null),
        }
    }

    fn check_infotable(
        &self,
        what: &str,
        value: Value,
        shapes: &dyn ShapeLookup,
    ) -> Result<Value, ApiError> {
        let Value::Object(mut obj) = value else {
            return Err(ApiError::bad_request(format!(
                "{what} must be INFOTABLE: an object with \"rows\", got {}",
                json_kind(&value)
            )));
        };
        let rows = match obj.remove("rows") {
            Some(Value::Array(rows)) => rows,
            None => Vec::new(),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{what}.rows must be an array, got {}",
                    json_kind(&other)
                )))
            }
        };
        if rows.len() > MAX_ROWS {
            return Err(ApiError::unprocessable(format!(
                "{what} has more than {MAX_ROWS} rows"
            )));
        }
        let fields = match &self.data_shape {
            Some(ds) => Some(shapes.data_shape_fields(ds).ok_or_else(|| {
                ApiError::unprocessable(format!(
                    "{what} uses data shape '{ds}' which does not exist"
                ))
            })?),
            None => None,
        };
        let mut out_rows = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let Value::Object(row) = row else {
                return Err(ApiError::bad_request(format!(
                    "{what}.rows[{i}] must be an object"
                )));
            };
            let Some(fields) = fields else {
                out_rows.push(Value::Object(row));
                continue;
            };
            let mut checked = Map::new();
            for (k, v) in row {
                let Some(f) = fields.iter().find(|f| f.name == k) else {
                    return Err(ApiError::bad_request(format!(
                        "{what}.rows[{i}] has field '{}' which is not in data shape '{}'",
                        super::names::printable(&k),
                        self.data_shape.as_deref().unwrap_or_default()
                    )));
                };
                let v = f.check(&format!("{what}.rows[{i}].{k}"), v, shapes)?;
                checked.insert(k, v);
            }
            for f in fields {
                if f.required && checked.get(&f.name).is_none_or(Value::is_null) {
                    return Err(ApiError::bad_request(format!(
                        "{what}.rows[{i}] is missing required field '{}' ({})",
                        f.name, f.base_type
                    )));
                }
            }
            out_rows.push(Value::Object(checked));
        }
        let data_shape = match fields {
            Some(fields) => super::infotable::data_shape_json(fields),
            None => obj
                .remove("dataShape")
                .unwrap_or_else(|| serde_json::json!({"fieldDefinitions": {}})),
        };
        Ok(serde_json::json!({"dataShape": data_shape, "rows": out_rows}))
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Parses an RFC 3339 date-time into epoch milliseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Milliseconds since the epoch, now.
pub fn now_millis() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none() -> HashMap<String, Vec<FieldDef>> {
        HashMap::new()
    }

    #[test]
    fn integer_range_and_type() {
        let f = FieldDef::new("n", BaseType::Integer);
        assert_eq!(f.check("n", json!(5), &none()).unwrap(), json!(5));
        assert_eq!(
            f.check("n", json!(1u64 << 40), &none())
                .unwrap_err()
                .status
                .as_u16(),
            422
        );
        let e = f.check("parameter 'n'", json!("5"), &none()).unwrap_err();
        assert_eq!(e.message, "parameter 'n' must be INTEGER, got string");
        assert!(f.check("n", json!(1.5), &none()).is_err());
    }

    #[test]
    fn datetime_normalises_to_millis() {
        let f = FieldDef::new("d", BaseType::Datetime);
        assert_eq!(
            f.check("d", json!("1970-01-01T00:00:01Z"), &none())
                .unwrap(),
            json!(1000)
        );
        assert_eq!(f.check("d", json!(42), &none()).unwrap(), json!(42));
        assert!(f.check("d", json!("yesterday"), &none()).is_err());
    }

    #[test]
    fn infotable_rows_follow_their_shape() {
        let mut shapes = none();
        shapes.insert(
            "EP".into(),
            vec![
                FieldDef::new("name", BaseType::String).required(),
                FieldDef::new("port", BaseType::Integer),
            ],
        );
        let f = FieldDef::new("endpoints", BaseType::Infotable).shape("EP");
        let ok = f
            .check("e", json!({"rows": [{"name": "ssh", "port": 22}]}), &shapes)
            .unwrap();
        assert_eq!(ok["rows"][0]["port"], json!(22));
        assert!(ok["dataShape"]["fieldDefinitions"]["port"].is_object());
        assert!(f
            .check(
                "e",
                json!({"rows": [{"name": "ssh", "port": "x"}]}),
                &shapes
            )
            .is_err());
        assert!(f
            .check("e", json!({"rows": [{"port": 1}]}), &shapes)
            .is_err());
        assert!(f
            .check("e", json!({"rows": [{"name": "a", "extra": 1}]}), &shapes)
            .is_err());
        assert!(f.check("e", json!([1]), &shapes).is_err());
    }

    #[test]
    fn guid_and_thingname() {
        let g = FieldDef::new("g", BaseType::Guid);
        assert!(g
            .check("g", json!("123e4567-e89b-12d3-a456-426614174000"), &none())
            .is_ok());
        assert!(g.check("g", json!("123e4567"), &none()).is_err());
        let t = FieldDef::new("t", BaseType::Thingname);
        assert!(t.check("t", json!("../etc"), &none()).is_err());
    }
}
