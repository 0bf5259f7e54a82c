//! The entity model held in memory: shapes, templates, Things, data shapes, users, groups,
//! organizations, application keys, subsystems and their ACLs.
//!
//! The [`Model`] is the read side of the platform: every request is answered from it under a
//! short read lock. Writes are persisted first (see [`crate::platform`]) and applied to the model
//! only once the database has acknowledged them.

pub mod basetype;
pub mod entities;
pub mod infotable;
pub mod names;

use crate::security::Acl;
use basetype::{FieldDef, ShapeLookup};
use entities::*;
use std::collections::{HashMap, HashSet};

/// Deepest template inheritance chain followed (guards against corrupted data).
const MAX_TEMPLATE_DEPTH: usize = 32;

#[derive(Debug, Default)]
pub struct Model {
    pub shapes: HashMap<String, ThingShape>,
    pub data_shapes: HashMap<String, DataShape>,
    pub templates: HashMap<String, ThingTemplate>,
    pub things: HashMap<String, Thing>,
    pub users: HashMap<String, User>,
    pub groups: HashMap<String, MemberSet>,
    pub orgs: HashMap<String, MemberSet>,
    pub app_keys: HashMap<String, AppKey>,
    /// Key hash (hex) to key name.
    pub key_index: HashMap<String, String>,
    pub subsystems: HashMap<String, Subsystem>,
    /// Grants per entity; collections use [`EntityKind::Collection`] with the collection name.
    pub acl: HashMap<(EntityKind, String), Acl>,
    /// Service holders under `/Thingworx/Resources`.
    pub resources: Vec<String>,
}

impl ShapeLookup for Model {
    fn data_shape_fields(&self, name: &str) -> Option<&[FieldDef]> {
        self.data_shapes.get(name).map(|d| d.fields.as_slice())
    }
}

impl Model {
    pub fn exists(&self, kind: EntityKind, name: &str) -> bool {
        match kind {
            EntityKind::Thing => self.things.contains_key(name),
            EntityKind::ThingTemplate => self.templates.contains_key(name),
            EntityKind::ThingShape => self.shapes.contains_key(name),
            EntityKind::DataShape => self.data_shapes.contains_key(name),
            EntityKind::User => self.users.contains_key(name),
            EntityKind::Group => self.groups.contains_key(name),
            EntityKind::Organization => self.orgs.contains_key(name),
            EntityKind::ApplicationKey => self.app_keys.contains_key(name),
            EntityKind::Subsystem => self.subsystems.contains_key(name),
            EntityKind::Resource => self.resources.iter().any(|r| r == name),
            EntityKind::Collection => {
                EntityKind::from_collection(name).is_some_and(|k| k != EntityKind::Collection)
            }
        }
    }

    /// Names of every entity of `kind`, sorted.
    pub fn names(&self, kind: EntityKind) -> Vec<&str> {
        let mut v: Vec<&str> = match kind {
            EntityKind::Thing => self.things.keys().map(String::as_str).collect(),
            EntityKind::ThingTemplate => self.templates.keys().map(String::as_str).collect(),
            EntityKind::ThingShape => self.shapes.keys().map(String::as_str).collect(),
            EntityKind::DataShape => self.data_shapes.keys().map(String::as_str).collect(),
            EntityKind::User => self.users.keys().map(String::as_str).collect(),
            EntityKind::Group => self.groups.keys().map(String::as_str).collect(),
            EntityKind::Organization => self.orgs.keys().map(String::as_str).collect(),
            EntityKind::ApplicationKey => self.app_keys.keys().map(String::as_str).collect(),
            EntityKind::Subsystem => self.subsystems.keys().map(String::as_str).collect(),
            EntityKind::Resource => self.resources.iter().map(String::as_str).collect(),
            EntityKind::Collection => Vec::new(),
        };
        v.sort_unstable();
        v
    }

    pub fn description(&self, kind: EntityKind, name: &str) -> &str {
        match kind {
            EntityKind::Thing => self.things.get(name).map(|e| e.description.as_str()),
            EntityKind::ThingTemplate => self.templates.get(name).map(|e| e.description.as_str()),
            EntityKind::ThingShape => self.shapes.get(name).map(|e| e.description.as_str()),
            EntityKind::DataShape => self.data_shapes.get(name).map(|e| e.description.as_str()),
            EntityKind::User => self.users.get(name).map(|e| e.description.as_str()),
            EntityKind::Group => self.groups.get(name).map(|e| e.description.as_str()),
            EntityKind::Organization => self.orgs.get(name).map(|e| e.description.as_str()),
            EntityKind::ApplicationKey => self.app_keys.get(name).map(|e| e.description.as_str()),
            EntityKind::Subsystem => self.subsystems.get(name).map(|e| e.description.as_str()),
            _ => None,
        }
        .unwrap_or("")
    }

    /// The persisted JSON body of an entity.
    pub fn body(&self, kind: EntityKind, name: &str) -> Option<serde_json::Value> {
        let v = match kind {
            EntityKind::Thing => serde_json::to_value(self.things.get(name)?),
            EntityKind::ThingTemplate => serde_json::to_value(self.templates.get(name)?),
            EntityKind::ThingShape => serde_json::to_value(self.shapes.get(name)?),
            EntityKind::DataShape => serde_json::to_value(self.data_shapes.get(name)?),
            EntityKind::User => serde_json::to_value(self.users.get(name)?),
            EntityKind::Group => serde_json::to_value(self.groups.get(name)?),
            EntityKind::Organization => serde_json::to_value(self.orgs.get(name)?),
            EntityKind::ApplicationKey => serde_json::to_value(self.app_keys.get(name)?),
            EntityKind::Subsystem => serde_json::to_value(self.subsystems.get(name)?),
            _ => return None,
        };
        v.ok()
    }

    /// Inserts an entity from its persisted body (used at load and when applying writes).
    pub fn put_body(
        &mut self,
        kind: EntityKind,
        name: &str,
        body: serde_json::Value,
    ) -> Result<(), serde_json::Error> {
        let n = name.to_string();
        match kind {
            EntityKind::Thing => {
                let mut t: Thing = serde_json::from_value(body)?;
                if let Some(old) = self.things.remove(name) {
                    t.values = old.values;
                }
                self.things.insert(n, t);
            }
            EntityKind::ThingTemplate => {
                self.templates.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::ThingShape => {
                self.shapes.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::DataShape => {
                self.data_shapes.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::User => {
                self.users.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::Group => {
                self.groups.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::Organization => {
                self.orgs.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::ApplicationKey => {
                let k: AppKey = serde_json::from_value(body)?;
                self.key_index.insert(k.key_hash.clone(), n.clone());
                self.app_keys.insert(n, k);
            }
            EntityKind::Subsystem => {
                self.subsystems.insert(n, serde_json::from_value(body)?);
            }
            EntityKind::Resource | EntityKind::Collection => {}
        }
        Ok(())
    }

    pub fn remove(&mut self, kind: EntityKind, name: &str) {
        match kind {
            EntityKind::Thing => drop(self.things.remove(name)),
            EntityKind::ThingTemplate => drop(self.templates.remove(name)),
            EntityKind::ThingShape => drop(self.shapes.remove(name)),
            EntityKind::DataShape => drop(self.data_shapes.remove(name)),
            EntityKind::User => drop(self.users.remove(name)),
            EntityKind::Group => drop(self.groups.remove(name)),
            EntityKind::Organization => drop(self.orgs.remove(name)),
            EntityKind::ApplicationKey => {
                if let Some(k) = self.app_keys.remove(name) {
                    self.key_index.remove(&k.key_hash);
                }
            }
            EntityKind::Subsystem => drop(self.subsystems.remove(name)),
            EntityKind::Resource | EntityKind::Collection => {}
        }
        self.acl.remove(&(kind, name.to_string()));
    }

    /// The template, its base, its base's base... (nearest first).
    pub fn template_chain<'a>(&'a self, template: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut cur = Some(template);
        while let Some(t) = cur {
            if out.len() >= MAX_TEMPLATE_DEPTH || out.contains(&t) {
                break;
            }
            out.push(t);
            cur = self.templates.get(t).and_then(|tt| tt.base.as_deref());
        }
        out
    }

    /// Whether `template` is `ancestor` or derives from it.
    pub fn template_derives_from(&self, template: &str, ancestor: &str) -> bool {
        self.template_chain(template).contains(&ancestor)
    }

    /// Every property definition of a Thing: its own, its shapes', its template chain's and
    /// their shapes'. The first definition of a name wins.
    pub fn thing_properties<'a>(&'a self, thing: &'a Thing) -> Vec<&'a FieldDef> {
        let shape_defs = |names: &'a [String]| {
            names
                .iter()
                .filter_map(|s| self.shapes.get(s))
                .flat_map(|s| s.properties.iter())
        };
        let inherited = self
            .template_chain(&thing.template)
            .into_iter()
            .filter_map(|t| self.templates.get(t))
            .flat_map(move |tt| tt.properties.iter().chain(shape_defs(&tt.shapes)));
        let mut seen = HashSet::new();
        thing
            .properties
            .iter()
            .chain(shape_defs(&thing.shapes))
            .chain(inherited)
            .filter(|d| seen.insert(d.name.as_str()))
            .collect()
    }

    /// One property definition of a Thing.
    pub fn thing_property<'a>(&'a self, thing: &'a Thing, name: &str) -> Option<&'a FieldDef> {
        self.thing_properties(thing)
            .into_iter()
            .find(|d| d.name == name)
    }

    /// A Thing's current value of a property: the written value, else the default, else null.
    pub fn property_value(thing: &Thing, def: &FieldDef) -> serde_json::Value {
        thing
            .values
            .get(&def.name)
            .cloned()
            .or_else(|| def.default_value.clone())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Property definitions visible on a template (its own, its shapes', inherited).
    pub fn template_properties(&self, template: &str) -> Vec<&FieldDef> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for t in self.template_chain(template) {
            let Some(tt) = self.templates.get(t) else {
                continue;
            };
            let shape_defs = tt
                .shapes
                .iter()
                .filter_map(|s| self.shapes.get(s))
                .flat_map(|s| s.properties.iter());
            for d in tt.properties.iter().chain(shape_defs) {
                if names.insert(d.name.as_str()) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// The groups `member` belongs to, directly or through other groups.
    pub fn groups_of(&self, member: &Member) -> HashSet<String> {
        let mut found: HashSet<String> = HashSet::new();
        let mut frontier = vec![member.clone()];
        while let Some(m) = frontier.pop() {
            for (g, set) in &self.groups {
                if set.members.contains(&m) && found.insert(g.clone()) {
                    frontier.push(Member {
                        kind: PrincipalKind::Group,
                        name: g.clone(),
                    });
                }
            }
        }
        found
    }
}
