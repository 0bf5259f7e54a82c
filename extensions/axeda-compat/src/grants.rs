//! `GrantRemoteAccessPermissionsGASForThing` / `...ForTemplate`: give a user group exactly what a
//! remote-access user needs on a device, and nothing more.
//!
//! What a user needs for remote sessions (SPEC §2, RAE's `StartSession`, and what the Remote
//! Access Client calls):
//!
//! | permission | on a Thing | on a template (for its Things) |
//! |---|---|---|
//! | visibility for the organization | `AddVisibilityPermission` | `AddInstanceVisibilityPermission` |
//! | design-time `Read` (the group) | on the Thing | on each Thing it has now: design-time grants are not inherited |
//! | `PropertyRead` on `endpoints` | run-time, on the Thing | run-time on the template: instance permissions |
//! | `ServiceInvoke` on each of [`SESSION_SERVICES`] | run-time, on the Thing | run-time on the template |
//!
//! The steps: refuse callers who are not administrators (the grants run as the system, so this
//! service must not hand out more than its caller could grant directly); check the inputs (the
//! organization, group and Thing or template exist: 404 naming which; the target implements
//! `RemoteAccessible`: 422); read what is already granted, refusing (409, nothing changed) when
//! the group is explicitly denied one of the permissions, since an Allow next to it would not
//! take effect; add what is missing, visibility last, so nothing becomes visible before it
//! works; and write one `SECURITY` audit entry naming who granted what to whom. Calling it again
//! adds nothing. Each grant is one host service call (`AddRunTimePermission`, ...), audited by
//! the host too.

use crate::{AXEDA_BASE_MODEL, AXEDA_GATEWAY_MODEL, AXEDA_STANDALONE_MODEL};
use crate::{AXEDA_REMOTE_ACCESSIBLE, GRANT_FOR_TEMPLATE, GRANT_FOR_THING, REMOTE_ACCESSIBLE};
use serde_json::json;
use thingport_sdk::protocol::{Caller, ErrorKind, ThingInfo};
use thingport_sdk::{Error, Host, Value};

/// The services of `RemoteAccessible` a remote-access user calls (the Remote Access Client:
/// `StartSession`, `GetSession` while connected, `EndSession`; listings for a console).
pub const SESSION_SERVICES: [&str; 5] = [
    "StartSession",
    "EndSession",
    "GetSession",
    "GetSessions",
    "GetRemoteAccessibleEndpoints",
];
/// The property `StartSession` checks `PropertyRead` on.
pub const ENDPOINTS: &str = "endpoints";
/// The audit category of permission changes (the host's own grants use it too).
pub const AUDIT: &str = "SECURITY";
/// Templates known to implement `RemoteAccessible` (this package's and RAE's), so a template
/// deriving from one of them does too.
const REMOTE_ACCESSIBLE_TEMPLATES: [&str; 4] = [
    AXEDA_BASE_MODEL,
    AXEDA_GATEWAY_MODEL,
    AXEDA_STANDALONE_MODEL,
    "RemoteAccessibleThing",
];

/// The host's built-in templates: they implement no shape.
const BUILT_IN_TEMPLATES: [&str; 2] = ["GenericThing", "RemoteThing"];

/// What the permissions are granted on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Thing(&'a str),
    /// Every Thing of the template (and of templates derived from it).
    Template(&'a str),
}

impl Target<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Target::Thing(_) => "Things",
            Target::Template(_) => "ThingTemplates",
        }
    }
    fn entity_type(&self) -> &'static str {
        match self {
            Target::Thing(_) => "Thing",
            Target::Template(_) => "ThingTemplate",
        }
    }
    fn name(&self) -> &str {
        match self {
            Target::Thing(n) | Target::Template(n) => n,
        }
    }
    fn service(&self) -> &'static str {
        match self {
            Target::Thing(_) => GRANT_FOR_THING,
            Target::Template(_) => GRANT_FOR_TEMPLATE,
        }
    }
    fn parameter(&self) -> &'static str {
        match self {
            Target::Thing(_) => "thingName",
            Target::Template(_) => "templateName",
        }
    }
}

/// One grant service call's inputs.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub organization: &'a str,
    pub group: &'a str,
    pub target: Target<'a>,
}

/// One permission the group needs, on one entity.
#[derive(Debug, Clone, PartialEq)]
enum Need {
    /// `AddVisibilityPermission` on a Thing, or `AddInstanceVisibilityPermission` on a template.
    Visibility { kind: &'static str, entity: String },
    /// Design-time `Read` on a Thing.
    Read { thing: String },
    /// A run-time permission on a Thing or (for its instances) on a template.
    RunTime {
        kind: &'static str,
        entity: String,
        perm: &'static str,
        resource: &'static str,
    },
}

fn entity_label(kind: &str, entity: &str) -> String {
    match kind {
        "ThingTemplates" => format!("ThingTemplate '{entity}'"),
        _ => format!("Thing '{entity}'"),
    }
}

impl Need {
    fn describe(&self, organization: &str) -> String {
        match self {
            Need::Visibility { kind, entity } if *kind == "ThingTemplates" => {
                format!("instance visibility of ThingTemplate '{entity}' for organization '{organization}'")
            }
            Need::Visibility { kind, entity } => format!(
                "visibility of {} for organization '{organization}'",
                entity_label(kind, entity)
            ),
            Need::Read { thing } => format!("design-time Read on Thing '{thing}'"),
            Need::RunTime {
                kind,
                entity,
                perm,
                resource,
            } => format!("{perm} on {resource} in {}", entity_label(kind, entity)),
        }
    }

    fn apply(&self, host: &Host, organization: &str, group: &str) -> Result<(), Error> {
        match self {
            Need::Visibility { kind, entity } => {
                let service = if *kind == "ThingTemplates" {
                    "AddInstanceVisibilityPermission"
                } else {
                    "AddVisibilityPermission"
                };
                host.invoke(kind, entity, service, json!({"organization": organization}))?;
            }
            Need::Read { thing } => {
                host.invoke(
                    "Things",
                    thing,
                    "AddDesignTimePermission",
                    json!({"type": "Read", "principal": group, "principalType": "Group",
                           "allow": true}),
                )?;
            }
            Need::RunTime {
                kind,
                entity,
                perm,
                resource,
            } => {
                host.invoke(
                    kind,
                    entity,
                    "AddRunTimePermission",
                    json!({"type": perm, "resource": resource, "principal": group,
                           "principalType": "Group", "allow": true}),
                )?;
            }
        }
        Ok(())
    }
}

/// Grants what `request.group` needs for remote sessions on `request.target`; see the module.
pub fn grant(host: &Host, caller: &Caller, request: Request<'_>) -> Result<Value, Error> {
    let Request {
        organization,
        group,
        target,
    } = request;
    if !caller.admin {
        return Err(Error::forbidden(format!(
            "{} is for administrators only: it grants permissions as the system, and user '{}' is not an administrator",
            target.service(),
            caller.name
        )));
    }
    for (parameter, value) in [
        ("organization", organization),
        ("userGroup", group),
        (target.parameter(), target.name()),
    ] {
        if value.is_empty() {
            return Err(Error::bad_request(format!(
                "parameter '{parameter}' must not be empty"
            )));
        }
    }
    exists(host, "Organizations", organization, "organization")?;
    exists(host, "Groups", group, "user group")?;
    let needs = match target {
        Target::Thing(thing) => {
            let info = host.describe_thing(thing).map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::not_found(format!("Thing '{thing}' does not exist")),
                _ => e,
            })?;
            check_thing(&info)?;
            needs(target, &[thing.to_string()])
        }
        Target::Template(template) => {
            exists(host, "ThingTemplates", template, "ThingTemplate")?;
            let things = host.things_of_template(template)?;
            check_template(host, template, &things)?;
            needs(target, &things)
        }
    };

    // Decide everything before changing anything: a denial refuses the whole request.
    let mut acls = Acls::default();
    let mut missing = Vec::new();
    let mut held = Vec::new();
    for need in needs {
        if acls.holds(host, &need, organization, group)? {
            held.push(need);
        } else {
            missing.push(need);
        }
    }
    // Visibility last: nothing becomes visible to the organization before it works.
    missing.sort_by_key(|n| matches!(n, Need::Visibility { .. }));

    let mut granted = Vec::new();
    let mut failure = None;
    for need in missing {
        match need.apply(host, organization, group) {
            Ok(()) => granted.push(need.describe(organization)),
            Err(e) => {
                failure = Some(e.context(format!(
                    "granting {} failed; run {} again to finish",
                    need.describe(organization),
                    target.service()
                )));
                break;
            }
        }
    }
    let held: Vec<String> = held.iter().map(|n| n.describe(organization)).collect();
    let list = |v: &[String]| {
        if v.is_empty() {
            "nothing".to_string()
        } else {
            v.join("; ")
        }
    };
    let message = format!(
        "remote access for user group '{group}' (organization '{organization}') on {} '{}' by {}{}: granted {}; already held {}",
        target.entity_type(),
        target.name(),
        caller.name,
        if failure.is_some() { " (failed part way)" } else { "" },
        list(&granted),
        list(&held)
    );
    let entity = format!("{}:{}", target.entity_type(), target.name());
    if let Err(e) = host.audit(AUDIT, &entity, &message) {
        // Every grant above was also audited by the host, as the system.
        host.error(format!(
            "could not write the audit entry '{message}': {}",
            e.message()
        ));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(json!({
        "entityType": target.entity_type(),
        "entity": target.name(),
        "organization": organization,
        "userGroup": group,
        "granted": granted,
        "alreadyHeld": held,
    }))
}

/// What `target` needs, in grant order; `things` are the Things needing design-time Read.
fn needs(target: Target<'_>, things: &[String]) -> Vec<Need> {
    let kind = target.kind();
    let entity = target.name().to_string();
    let mut v: Vec<Need> = std::iter::once(("PropertyRead", ENDPOINTS))
        .chain(SESSION_SERVICES.iter().map(|s| ("ServiceInvoke", *s)))
        .map(|(perm, resource)| Need::RunTime {
            kind,
            entity: entity.clone(),
            perm,
            resource,
        })
        .collect();
    v.extend(things.iter().map(|t| Need::Read { thing: t.clone() }));
    v.push(Need::Visibility { kind, entity });
    v
}

/// `404` naming the entity unless it exists (asked as the system, which sees everything).
fn exists(host: &Host, kind: &str, name: &str, what: &str) -> Result<(), Error> {
    match host.invoke(kind, name, "GetVisibilityPermissionsAsJSON", json!({})) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(Error::not_found(format!("{what} '{name}' does not exist")))
        }
        Err(e) => Err(e),
    }
}

fn remote_accessible(info: &ThingInfo) -> bool {
    info.shapes.iter().any(|s| s == REMOTE_ACCESSIBLE)
        || info
            .templates
            .iter()
            .any(|t| REMOTE_ACCESSIBLE_TEMPLATES.contains(&t.as_str()))
}

fn check_thing(info: &ThingInfo) -> Result<(), Error> {
    if remote_accessible(info) {
        return Ok(());
    }
    let mut message = format!(
        "Thing '{}' (template {}) does not implement {REMOTE_ACCESSIBLE}, so it has no remote sessions: use a Thing of an Axeda model or of RemoteAccessibleThing",
        info.name, info.template
    );
    if info.shapes.iter().any(|s| s == AXEDA_REMOTE_ACCESSIBLE) {
        message.push_str(&format!(
            " ({AXEDA_REMOTE_ACCESSIBLE} is replaced by GASRemoteAccessible and has no session services)"
        ));
    }
    Err(Error::unprocessable(message))
}

/// Whether a template implements `RemoteAccessible`. The host tells an extension the shapes of a
/// Thing, not of a template, so: a known template (or a built-in one, which implements nothing);
/// or a Thing of exactly this template (a Thing's shapes are its templates': the API gives
/// Things no shapes of their own); or one whose chain reaches a known template from here.
fn check_template(host: &Host, template: &str, things: &[String]) -> Result<(), Error> {
    if REMOTE_ACCESSIBLE_TEMPLATES.contains(&template) {
        return Ok(());
    }
    let does_not = || {
        Error::unprocessable(format!(
            "ThingTemplate '{template}' does not implement {REMOTE_ACCESSIBLE} (nor derives from {}), so its Things have no remote sessions",
            REMOTE_ACCESSIBLE_TEMPLATES.join(", ")
        ))
    };
    if BUILT_IN_TEMPLATES.contains(&template) {
        return Err(does_not());
    }
    for thing in things {
        let info = host.describe_thing(thing)?;
        if info.template == template {
            if info.shapes.iter().any(|s| s == REMOTE_ACCESSIBLE) {
                return Ok(());
            }
            return Err(does_not());
        }
        let mut from_here = info.templates.iter().skip_while(|t| *t != template);
        if from_here.any(|t| REMOTE_ACCESSIBLE_TEMPLATES.contains(&t.as_str())) {
            return Ok(());
        }
    }
    Err(Error::unprocessable(format!(
        "ThingTemplate '{template}' does not derive from {}, and whether it implements {REMOTE_ACCESSIBLE} can only be checked on a Thing of exactly this template: create its Things, then grant",
        REMOTE_ACCESSIBLE_TEMPLATES.join(", ")
    )))
}

/// The permission lists read so far, per entity (each read once per request).
#[derive(Default)]
struct Acls {
    read: std::collections::HashMap<(String, String, &'static str), Value>,
}

impl Acls {
    /// The `result` of a `Get...PermissionsAsJSON` service.
    fn get(
        &mut self,
        host: &Host,
        kind: &str,
        entity: &str,
        service: &'static str,
    ) -> Result<&Value, Error> {
        let key = (kind.to_string(), entity.to_string(), service);
        if !self.read.contains_key(&key) {
            let table = host.invoke(kind, entity, service, json!({}))?;
            let value = table.result().cloned().unwrap_or(Value::Null);
            self.read.insert(key.clone(), value);
        }
        Ok(&self.read[&key])
    }

    /// Whether the group (or organization) already holds `need`; `409` when the group is
    /// explicitly denied it (an Allow beside a Deny would not take effect).
    fn holds(
        &mut self,
        host: &Host,
        need: &Need,
        organization: &str,
        group: &str,
    ) -> Result<bool, Error> {
        match need {
            Need::Visibility { kind, entity } => {
                let field = if *kind == "ThingTemplates" {
                    "instancePermissions"
                } else {
                    "permissions"
                };
                let v = self.get(host, kind, entity, "GetVisibilityPermissionsAsJSON")?;
                Ok(v[field]
                    .as_array()
                    .is_some_and(|orgs| orgs.iter().any(|o| o == organization)))
            }
            Need::Read { thing } => {
                let v = self.get(host, "Things", thing, "GetDesignTimePermissionsAsJSON")?;
                let grants = group_grants(v, group, "Read", None);
                decide(grants, || {
                    format!("user group '{group}' is explicitly denied design-time Read on Thing '{thing}'")
                })
            }
            Need::RunTime {
                kind,
                entity,
                perm,
                resource,
            } => {
                let v = self.get(host, kind, entity, "GetRunTimePermissionsAsJSON")?;
                let grants = group_grants(v, group, perm, Some(resource));
                decide(grants, || {
                    format!(
                        "user group '{group}' is explicitly denied {perm} on {resource} in {}",
                        entity_label(kind, entity)
                    )
                })
            }
        }
    }
}

/// The `allow` flags of the group's own grants of `perm` (on `resource` or `*`, for run time).
fn group_grants(list: &Value, group: &str, perm: &str, resource: Option<&str>) -> Vec<bool> {
    let Some(grants) = list["permissions"].as_array() else {
        return Vec::new();
    };
    grants
        .iter()
        .filter(|g| {
            g["perm"] == perm
                && g["principal"]["type"] == "Group"
                && g["principal"]["name"] == group
                && resource.is_none_or(|r| g["resource"] == r || g["resource"] == "*")
        })
        .map(|g| g["allow"].as_bool().unwrap_or(true))
        .collect()
}

fn decide(allows: Vec<bool>, denied: impl FnOnce() -> String) -> Result<bool, Error> {
    if allows.iter().any(|a| !a) {
        return Err(Error::conflict(format!(
            "{}: remove the denial first (nothing was granted)",
            denied()
        )));
    }
    Ok(!allows.is_empty())
}
