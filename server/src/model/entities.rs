//! The entity types the host stores: their persisted form is their serde form.

use super::basetype::FieldDef;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// The kinds of entity, each with its REST collection name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityKind {
    Thing,
    ThingTemplate,
    ThingShape,
    DataShape,
    User,
    Group,
    Organization,
    ApplicationKey,
    Subsystem,
    /// Service holders such as `EntityServices`.
    Resource,
    /// A whole collection (`Things`, `Users`, ...) as the target of collection permissions.
    Collection,
}

impl EntityKind {
    /// Kinds that are stored as rows of the `entities` table.
    pub const STORED: [EntityKind; 9] = [
        EntityKind::ThingShape,
        EntityKind::DataShape,
        EntityKind::ThingTemplate,
        EntityKind::Thing,
        EntityKind::User,
        EntityKind::Group,
        EntityKind::Organization,
        EntityKind::ApplicationKey,
        EntityKind::Subsystem,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Thing => "Thing",
            EntityKind::ThingTemplate => "ThingTemplate",
            EntityKind::ThingShape => "ThingShape",
            EntityKind::DataShape => "DataShape",
            EntityKind::User => "User",
            EntityKind::Group => "Group",
            EntityKind::Organization => "Organization",
            EntityKind::ApplicationKey => "ApplicationKey",
            EntityKind::Subsystem => "Subsystem",
            EntityKind::Resource => "Resource",
            EntityKind::Collection => "Collection",
        }
    }

    /// The REST collection (`/Thingworx/{collection}`) of this kind.
    pub fn collection(self) -> &'static str {
        match self {
            EntityKind::Thing => "Things",
            EntityKind::ThingTemplate => "ThingTemplates",
            EntityKind::ThingShape => "ThingShapes",
            EntityKind::DataShape => "DataShapes",
            EntityKind::User => "Users",
            EntityKind::Group => "Groups",
            EntityKind::Organization => "Organizations",
            EntityKind::ApplicationKey => "ApplicationKeys",
            EntityKind::Subsystem => "Subsystems",
            EntityKind::Resource => "Resources",
            EntityKind::Collection => "Collections",
        }
    }

    pub fn from_collection(s: &str) -> Option<EntityKind> {
        [
            EntityKind::Thing,
            EntityKind::ThingTemplate,
            EntityKind::ThingShape,
            EntityKind::DataShape,
            EntityKind::User,
            EntityKind::Group,
            EntityKind::Organization,
            EntityKind::ApplicationKey,
            EntityKind::Subsystem,
            EntityKind::Resource,
            EntityKind::Collection,
        ]
        .into_iter()
        .find(|k| k.collection() == s)
    }

    pub fn parse(s: &str) -> Option<EntityKind> {
        EntityKind::STORED.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user or a group, as a member or as the principal of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    #[serde(rename = "type")]
    pub kind: PrincipalKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PrincipalKind {
    User,
    Group,
}

impl PrincipalKind {
    pub fn parse(s: &str) -> Option<PrincipalKind> {
        match s {
            "User" => Some(PrincipalKind::User),
            "Group" => Some(PrincipalKind::Group),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "User",
            PrincipalKind::Group => "Group",
        }
    }
    pub fn entity_kind(self) -> EntityKind {
        match self {
            PrincipalKind::User => EntityKind::User,
            PrincipalKind::Group => EntityKind::Group,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingShape {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub properties: Vec<FieldDef>,
    /// The extension package that defined it; `None` for the host and users.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingTemplate {
    #[serde(default)]
    pub description: String,
    pub base: Option<String>,
    #[serde(default)]
    pub shapes: Vec<String>,
    #[serde(default)]
    pub properties: Vec<FieldDef>,
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thing {
    #[serde(default)]
    pub description: String,
    pub template: String,
    #[serde(default)]
    pub shapes: Vec<String>,
    /// Properties defined on this Thing itself, beyond its template and shapes.
    #[serde(default)]
    pub properties: Vec<FieldDef>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub enabled: bool,
    #[serde(default)]
    pub owner: Option<String>,
    /// Current property values (persisted in `property_values`, not in the entity row).
    #[serde(skip)]
    pub values: HashMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataShape {
    #[serde(default)]
    pub description: String,
    pub fields: Vec<FieldDef>,
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub description: String,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
    pub enabled: bool,
}

/// A User Group or an Organization: a named set of members.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberSet {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub members: BTreeSet<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppKey {
    #[serde(default)]
    pub description: String,
    pub user: String,
    /// Hex SHA-256 of the key value; the value itself is never stored.
    pub key_hash: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subsystem {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: Option<String>,
    /// Declared configuration tables (fields with types, defaults and ranges).
    #[serde(default)]
    pub configuration: Vec<thingport_sdk::protocol::ConfigTableDef>,
    /// Values set with `SetConfigurationTable`: table → field → value (unset fields use defaults).
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Map<String, Value>>,
}

impl Subsystem {
    /// One table's current values, defaults filled in.
    pub fn table_values(&self, table: &str) -> Option<serde_json::Map<String, Value>> {
        let def = self.configuration.iter().find(|t| t.name == table)?;
        let set = self.values.get(table);
        Some(
            def.fields
                .iter()
                .map(|f| {
                    let v = set
                        .and_then(|s| s.get(&f.field.name))
                        .cloned()
                        .or_else(|| f.field.default_value.clone())
                        .unwrap_or(Value::Null);
                    (f.field.name.clone(), v)
                })
                .collect(),
        )
    }

    /// Every table's current values: `{"<table>": {"<field>": value}}`, as extensions receive it.
    pub fn config(&self) -> Value {
        let m: serde_json::Map<String, Value> = self
            .configuration
            .iter()
            .filter_map(|t| Some((t.name.clone(), Value::Object(self.table_values(&t.name)?))))
            .collect();
        Value::Object(m)
    }
}
