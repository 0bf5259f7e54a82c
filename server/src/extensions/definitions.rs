//! What an extension's manifest contributes, in the host's terms: the entities it defines (owned
//! by its package) and the services it implements.

use crate::model::basetype::{BaseType, FieldDef};
use crate::model::entities::*;
use crate::model::Model;
use crate::platform::{put_acl, put_entity};
use crate::security::{Acl, EVERYONE};
use crate::services::{Access, ServiceDef};
use crate::store::Write;
use thingport_sdk::protocol::{Definitions, ServiceDecl};

/// Where an extension service applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Template,
    Shape,
    Thing,
    Subsystem,
}

/// One service an extension implements, with its host-side definition.
#[derive(Debug)]
pub struct ExtService {
    pub target: Target,
    pub target_name: String,
    pub def: &'static ServiceDef,
}

fn leak(s: &str) -> &'static str {
    // Extension libraries are never unloaded; neither are the few strings naming their services.
    Box::leak(s.to_string().into_boxed_str())
}

pub fn field(f: &thingport_sdk::protocol::Field) -> FieldDef {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_else(|| FieldDef::new(&f.name, BaseType::Json))
}

fn service_def(d: &ServiceDecl) -> &'static ServiceDef {
    let mut def = ServiceDef::new(leak(&d.name), Access::RunTime, leak(&d.description));
    def.handler = crate::services::Handler::Extension;
    def.inputs = d.inputs.iter().map(field).collect();
    def.result = d
        .result
        .as_ref()
        .map(field)
        .unwrap_or_else(|| FieldDef::new("result", BaseType::Nothing));
    def.result.name = "result".into();
    Box::leak(Box::new(def))
}

pub fn index_services(defs: &Definitions) -> Vec<ExtService> {
    let mut out = Vec::new();
    let mut add = |target, name: &str, decls: &[ServiceDecl]| {
        for d in decls {
            out.push(ExtService {
                target,
                target_name: name.to_string(),
                def: service_def(d),
            });
        }
    };
    for t in &defs.thing_templates {
        add(Target::Template, &t.name, &t.services);
    }
    for s in &defs.thing_shapes {
        add(Target::Shape, &s.name, &s.services);
    }
    for t in &defs.things {
        add(Target::Thing, &t.name, &t.services);
    }
    for s in &defs.subsystems {
        add(Target::Subsystem, &s.name, &s.services);
    }
    for t in &defs.template_services {
        add(Target::Template, &t.template, &t.services);
    }
    out
}

/// The prefix every extension WebSocket route lives under.
pub const ROUTE_PREFIX: &str = "/Thingworx/WS";

/// Checks what a manifest asks of the host beyond entities: its routes (under `/Thingworx/WS`,
/// with subprotocols and sane limits) and the templates it adds services to (they must exist or
/// be defined by the package itself).
pub fn check_extras(m: &Model, defs: &Definitions) -> Result<(), String> {
    for r in &defs.routes {
        let under = r.path == ROUTE_PREFIX
            || (r.path.starts_with(ROUTE_PREFIX)
                && r.path[ROUTE_PREFIX.len()..].starts_with('/')
                && r.path.len() <= 200
                && r.path[ROUTE_PREFIX.len() + 1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)));
        if !under {
            return Err(format!(
                "route '{}' must be {ROUTE_PREFIX} or a path under it",
                crate::model::names::printable(&r.path)
            ));
        }
        if r.subprotocols.is_empty()
            || r.subprotocols.iter().any(|p| {
                p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_graphic() && c != ',')
            })
        {
            return Err(format!(
                "route '{}' needs one or more subprotocols (printable ASCII tokens)",
                r.path
            ));
        }
        if !(16..=16 * 1024 * 1024).contains(&r.max_message_bytes) {
            return Err(format!(
                "route '{}': maxMessageBytes must be between 16 and 16777216",
                r.path
            ));
        }
        for (what, ms) in [
            ("helloTimeoutMs", r.hello_timeout_ms),
            ("pingIntervalMs", r.ping_interval_ms),
            ("idleTimeoutMs", r.idle_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return Err(format!(
                    "route '{}': {what} must be between 100 and 3600000",
                    r.path
                ));
            }
        }
    }
    for t in &defs.template_services {
        let own = defs.thing_templates.iter().any(|d| d.name == t.template);
        if !own && !m.templates.contains_key(&t.template) {
            return Err(format!(
                "templateServices names ThingTemplate '{}', which does not exist",
                crate::model::names::printable(&t.template)
            ));
        }
    }
    Ok(())
}

/// The entities a package defines, as (kind, name).
pub fn defined_entities(defs: &Definitions) -> Vec<(EntityKind, String)> {
    let mut v = Vec::new();
    v.extend(
        defs.data_shapes
            .iter()
            .map(|d| (EntityKind::DataShape, d.name.clone())),
    );
    v.extend(
        defs.thing_shapes
            .iter()
            .map(|d| (EntityKind::ThingShape, d.name.clone())),
    );
    v.extend(
        defs.thing_templates
            .iter()
            .map(|d| (EntityKind::ThingTemplate, d.name.clone())),
    );
    v.extend(
        defs.things
            .iter()
            .map(|d| (EntityKind::Thing, d.name.clone())),
    );
    v.extend(
        defs.subsystems
            .iter()
            .map(|d| (EntityKind::Subsystem, d.name.clone())),
    );
    v
}

pub fn owner_of(m: &Model, kind: EntityKind, name: &str) -> Option<Option<String>> {
    Some(match kind {
        EntityKind::DataShape => m.data_shapes.get(name)?.owner.clone(),
        EntityKind::ThingShape => m.shapes.get(name)?.owner.clone(),
        EntityKind::ThingTemplate => m.templates.get(name)?.owner.clone(),
        EntityKind::Thing => m.things.get(name)?.owner.clone(),
        EntityKind::Subsystem => m.subsystems.get(name)?.owner.clone(),
        _ => return None,
    })
}

/// The writes that (re)define a package's entities, owned by it; refuses names owned by others.
pub fn entity_writes(m: &Model, package: &str, defs: &Definitions) -> Result<Vec<Write>, String> {
    check_extras(m, defs)?;
    for (kind, name) in defined_entities(defs) {
        if let Some(owner) = owner_of(m, kind, &name) {
            if owner.as_deref() != Some(package) {
                let by = owner
                    .map(|o| format!("extension {o}"))
                    .unwrap_or_else(|| "the platform".into());
                return Err(format!("{kind} '{name}' is already defined by {by}"));
            }
        }
        crate::model::names::validate(kind.as_str(), &name).map_err(|e| e.message)?;
    }
    let owner = Some(package.to_string());
    let visible = Acl {
        visibility: [EVERYONE.to_string()].into(),
        ..Acl::default()
    };
    let mut w = Vec::new();
    for d in &defs.data_shapes {
        let e = DataShape {
            description: d.description.clone(),
            fields: d.fields.iter().map(field).collect(),
            owner: owner.clone(),
        };
        w.push(put_entity(EntityKind::DataShape, &d.name, &e));
        if !m.exists(EntityKind::DataShape, &d.name) {
            // Only for new entities: an upgrade keeps the grants an administrator made.
            w.push(put_acl(EntityKind::DataShape, &d.name, &visible));
        }
    }
    for d in &defs.thing_shapes {
        let e = ThingShape {
            description: d.description.clone(),
            properties: d.properties.iter().map(field).collect(),
            owner: owner.clone(),
        };
        w.push(put_entity(EntityKind::ThingShape, &d.name, &e));
        if !m.exists(EntityKind::ThingShape, &d.name) {
            // Only for new entities: an upgrade keeps the grants an administrator made.
            w.push(put_acl(EntityKind::ThingShape, &d.name, &visible));
        }
    }
    for d in &defs.thing_templates {
        let e = ThingTemplate {
            description: d.description.clone(),
            base: Some(d.base.clone().unwrap_or_else(|| "GenericThing".into())),
            shapes: d.shapes.clone(),
            properties: d.properties.iter().map(field).collect(),
            owner: owner.clone(),
        };
        w.push(put_entity(EntityKind::ThingTemplate, &d.name, &e));
        if !m.exists(EntityKind::ThingTemplate, &d.name) {
            // Only for new entities: an upgrade keeps the grants an administrator made.
            w.push(put_acl(EntityKind::ThingTemplate, &d.name, &visible));
        }
    }
    for d in &defs.things {
        let mut e = m.things.get(&d.name).cloned().unwrap_or(Thing {
            description: String::new(),
            template: d.template.clone(),
            shapes: vec![],
            properties: vec![],
            tags: vec![],
            enabled: true,
            owner: None,
            values: Default::default(),
        });
        e.description = d.description.clone();
        e.template = d.template.clone();
        e.owner = owner.clone();
        w.push(put_entity(EntityKind::Thing, &d.name, &e));
    }
    for d in &defs.subsystems {
        let e = Subsystem {
            description: d.description.clone(),
            owner: owner.clone(),
            configuration: d.configuration.clone(),
            // An upgrade keeps the values an administrator set.
            values: m
                .subsystems
                .get(&d.name)
                .map(|x| x.values.clone())
                .unwrap_or_default(),
        };
        w.push(put_entity(EntityKind::Subsystem, &d.name, &e));
        if !m.exists(EntityKind::Subsystem, &d.name) {
            // Only for new entities: an upgrade keeps the grants an administrator made.
            w.push(put_acl(EntityKind::Subsystem, &d.name, &visible));
        }
    }
    Ok(w)
}
