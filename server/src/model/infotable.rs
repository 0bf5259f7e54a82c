//! InfoTables: the result shape of every API call (a data shape plus rows).

use super::basetype::{BaseType, FieldDef};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

/// A result table as the REST API answers it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfoTable {
    pub data_shape: DataShapeJson,
    pub rows: Vec<Map<String, Value>>,
}

/// `{"fieldDefinitions": {name: {...}}}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataShapeJson {
    pub field_definitions: Map<String, Value>,
}

/// The `dataShape` object for a list of fields.
pub fn data_shape_json(fields: &[FieldDef]) -> Value {
    serde_json::to_value(DataShapeJson {
        field_definitions: field_map(fields),
    })
    .unwrap_or(Value::Null)
}

fn field_map(fields: &[FieldDef]) -> Map<String, Value> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut d = serde_json::json!({
                "name": f.name,
                "baseType": f.base_type.as_str(),
                "description": f.description,
                "ordinal": i,
            });
            if let Some(ds) = &f.data_shape {
                d["aspects"] = serde_json::json!({"dataShape": ds});
            }
            (f.name.clone(), d)
        })
        .collect()
}

impl InfoTable {
    pub fn new(fields: &[FieldDef]) -> Self {
        Self {
            data_shape: DataShapeJson {
                field_definitions: field_map(fields),
            },
            rows: Vec::new(),
        }
    }

    /// A table with no fields and no rows: the result of a service that returns nothing.
    pub fn empty() -> Self {
        Self::new(&[])
    }

    /// One row with field `result`: the InfoTable form of a scalar result.
    pub fn scalar(base_type: BaseType, value: Value) -> Self {
        let mut t = Self::new(&[FieldDef::new("result", base_type)]);
        let mut row = Map::new();
        row.insert("result".into(), value);
        t.rows.push(row);
        t
    }

    pub fn with_row(mut self, row: Map<String, Value>) -> Self {
        self.rows.push(row);
        self
    }

    pub fn push(&mut self, row: Value) {
        if let Value::Object(m) = row {
            self.rows.push(m);
        }
    }
}
