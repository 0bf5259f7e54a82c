//! Access: who may connect to a device, or to every Thing of a template; grant or revoke the
//! whole remote-access set to a user or group in one action (as the Axeda grant services do), and
//! the remote access switches of templates and tags.
//!
//! The set (SPEC §2): visibility through an organization, design-time `Read`, run-time
//! `PropertyRead` and `ServiceInvoke` on the session services. Each grant is the host's own
//! permission service called as the viewer, so only someone who may change the entity's
//! permissions can grant, and each is audited by the host. The inputs are checked before the
//! first grant, so a refusal changes nothing.

use super::session::Viewer;
use super::view::{self, page_html, Frame};
use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::model::entities::{EntityKind, PrincipalKind};
use crate::model::names::printable;
use crate::security::{DesignGrant, DesignPerm, RunGrant};
use crate::services;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

/// The services of `RemoteAccessible` a remote-access user calls.
pub const SESSION_SERVICES: [&str; 6] = [
    "StartSession",
    "EndSession",
    "GetSession",
    "GetSessions",
    "GetRemoteAccessibleEndpoints",
    "AttachSession",
];
/// The most Things of a template the grant gives design-time Read on, one by one.
const MAX_TEMPLATE_THINGS: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
pub struct Target {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

/// What the page is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thing,
    Template,
}

impl Kind {
    fn parse(s: &str) -> ApiResult<Kind> {
        match s {
            "" | "Thing" => Ok(Kind::Thing),
            "ThingTemplate" => Ok(Kind::Template),
            other => Err(ApiError::bad_request(format!(
                "kind must be Thing or ThingTemplate, not '{}'",
                printable(other)
            ))),
        }
    }
    fn entity(self) -> EntityKind {
        match self {
            Kind::Thing => EntityKind::Thing,
            Kind::Template => EntityKind::ThingTemplate,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::Thing => "Thing",
            Kind::Template => "ThingTemplate",
        }
    }
}

/// One grant as listed.
#[derive(Debug)]
pub struct GrantRow {
    pub principal: String,
    pub principal_type: String,
    pub permission: String,
    pub resource: String,
    pub allow: bool,
}

#[derive(Debug)]
pub struct SwitchRow {
    pub scope: String,
    pub name: String,
    pub changed_by: String,
}

/// What the access page shows (whole, or as the fragment a write answers).
struct Access {
    kind: String,
    name: String,
    templates: Vec<String>,
    orgs: Vec<String>,
    grants: Vec<GrantRow>,
    visibility: Vec<String>,
    error: String,
    may_grant: bool,
    template_off: bool,
    switches: Vec<SwitchRow>,
    switch_error: String,
    may_switch: bool,
    notice: String,
}

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    frame: Frame,
    a: Access,
}

#[derive(Template)]
#[template(path = "_access_partial.html")]
struct AccessPartial {
    a: Access,
}

async fn call(
    s: &AppState,
    v: &Viewer,
    kind: EntityKind,
    name: &str,
    service: &str,
    params: Value,
) -> ApiResult<Value> {
    let t = services::invoke(&s.platform, &v.ctx, kind, name, service, params).await?;
    Ok(t.rows
        .into_iter()
        .next()
        .and_then(|r| r.get("result").cloned())
        .unwrap_or(Value::Null))
}

async fn grants(
    s: &AppState,
    v: &Viewer,
    kind: Kind,
    name: &str,
) -> ApiResult<(Vec<GrantRow>, Vec<String>)> {
    let e = kind.entity();
    let design = call(s, v, e, name, "GetDesignTimePermissionsAsJSON", json!({})).await?;
    let runtime = call(s, v, e, name, "GetRunTimePermissionsAsJSON", json!({})).await?;
    let visible = call(s, v, e, name, "GetVisibilityPermissionsAsJSON", json!({})).await?;
    let mut rows = Vec::new();
    let design: Vec<DesignGrant> =
        serde_json::from_value(design["permissions"].clone()).unwrap_or_default();
    for g in design {
        rows.push(GrantRow {
            principal: g.principal.name,
            principal_type: format!("{:?}", g.principal.kind),
            permission: g.perm.as_str().into(),
            resource: "(design time)".into(),
            allow: g.allow,
        });
    }
    let runtime: Vec<RunGrant> =
        serde_json::from_value(runtime["permissions"].clone()).unwrap_or_default();
    for g in runtime {
        rows.push(GrantRow {
            principal: g.principal.name,
            principal_type: format!("{:?}", g.principal.kind),
            permission: g.perm.as_str().into(),
            resource: g.resource,
            allow: g.allow,
        });
    }
    rows.sort_by(|a, b| {
        (&a.principal, &a.permission, &a.resource).cmp(&(&b.principal, &b.permission, &b.resource))
    });
    let field = if kind == Kind::Template {
        "instancePermissions"
    } else {
        "permissions"
    };
    let visibility = visible[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str().map(String::from))
        .collect();
    Ok((rows, visibility))
}

async fn switches(s: &AppState, v: &Viewer) -> ApiResult<Vec<SwitchRow>> {
    let t = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "RemoteAccessSubsystem",
        "GetRemoteAccessSwitches",
        json!({}),
    )
    .await?;
    let value = t
        .rows
        .first()
        .and_then(|r| r.get("result"))
        .cloned()
        .unwrap_or(Value::Null);
    let rows = value
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(rows
        .iter()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            SwitchRow {
                scope: text("scope"),
                name: text("name"),
                changed_by: text("changedBy"),
            }
        })
        .collect())
}

async fn render(
    s: &AppState,
    v: &Viewer,
    t: Target,
    notice: String,
    error: Option<String>,
) -> Response {
    let kind = match Kind::parse(&t.kind) {
        Ok(k) => k,
        Err(e) => return view::error(v, &e),
    };
    let name = t.name.trim().to_string();
    let (templates, orgs, may_grant, may_switch) = {
        let m = s.platform.model();
        let who = &v.ctx.who;
        let templates = m
            .names(EntityKind::ThingTemplate)
            .into_iter()
            .filter(|n| m.is_visible(who, EntityKind::ThingTemplate, n))
            .map(String::from)
            .collect();
        let orgs = m
            .names(EntityKind::Organization)
            .into_iter()
            .filter(|n| m.is_visible(who, EntityKind::Organization, n))
            .map(String::from)
            .collect();
        let may_grant = !name.is_empty()
            && m.check_design(who, kind.entity(), &name, DesignPerm::Update)
                .is_ok();
        let may_switch = m.subsystems.contains_key("RemoteAccessSubsystem")
            && m.check_runtime(
                who,
                EntityKind::Subsystem,
                "RemoteAccessSubsystem",
                crate::security::RunPerm::ServiceInvoke,
                "SetRemoteAccessSwitch",
            )
            .is_ok();
        (templates, orgs, may_grant, may_switch)
    };
    let (grants, visibility, mut page_error) = if name.is_empty() {
        (Vec::new(), Vec::new(), String::new())
    } else {
        match grants(s, v, kind, &name).await {
            Ok((g, vis)) => (g, vis, String::new()),
            Err(e) => (Vec::new(), Vec::new(), e.message),
        }
    };
    if let Some(e) = error {
        page_error = e;
    }
    let (switches, switch_error) = match switches(s, v).await {
        Ok(rows) => (rows, String::new()),
        Err(e) => (Vec::new(), e.message),
    };
    let template_off = kind == Kind::Template
        && switches
            .iter()
            .any(|w| w.scope == "template" && w.name == name);
    let a = Access {
        kind: kind.label().into(),
        name,
        templates,
        orgs,
        grants,
        visibility,
        error: page_error,
        may_grant,
        template_off,
        switches,
        switch_error,
        may_switch,
        notice,
    };
    if v.xhr {
        page_html(&AccessPartial { a })
    } else {
        page_html(&AccessPage {
            frame: Frame::new(v, "Access", "access"),
            a,
        })
    }
}

/// `GET /access?kind=Thing|ThingTemplate&name=`.
pub async fn page(State(s): State<AppState>, v: Viewer, Query(t): Query<Target>) -> Response {
    render(&s, &v, t, String::new(), None).await
}

#[derive(Debug, Deserialize)]
pub struct GrantForm {
    kind: String,
    name: String,
    principal: String,
    #[serde(rename = "principalType")]
    principal_type: String,
    #[serde(default)]
    organization: String,
}

/// Checks a grant form before anything is written: the caller may change the permissions of
/// the entity (and, for a template, of each of its Things), the principal and the organization
/// exist.
fn check(s: &AppState, v: &Viewer, f: &GrantForm) -> ApiResult<(Kind, PrincipalKind)> {
    let kind = Kind::parse(&f.kind)?;
    let pk = PrincipalKind::parse(&f.principal_type)
        .ok_or_else(|| ApiError::bad_request("principal type must be User or Group"))?;
    let m = s.platform.model();
    m.check_design(&v.ctx.who, kind.entity(), &f.name, DesignPerm::Update)?;
    let principal = f.principal.trim();
    if principal.is_empty() || !m.exists(pk.entity_kind(), principal) {
        return Err(ApiError::entity_not_found(principal));
    }
    let org = f.organization.trim();
    if !org.is_empty() && !m.orgs.contains_key(org) {
        return Err(ApiError::entity_not_found(org));
    }
    drop(m);
    if kind == Kind::Template {
        let things = template_things(s, v, &f.name);
        let m = s.platform.model();
        for thing in things {
            m.check_design(&v.ctx.who, EntityKind::Thing, &thing, DesignPerm::Update)?;
        }
    }
    Ok((kind, pk))
}

/// The Things of a template (and of templates derived from it) the viewer may see.
fn template_things(s: &AppState, v: &Viewer, template: &str) -> Vec<String> {
    let m = s.platform.model();
    m.names(EntityKind::Thing)
        .into_iter()
        .filter(|n| m.template_derives_from(&m.things[*n].template, template))
        .filter(|n| m.is_visible(&v.ctx.who, EntityKind::Thing, n))
        .take(MAX_TEMPLATE_THINGS)
        .map(String::from)
        .collect()
}

/// The parameters of an Add (with `allow: true`) or a Delete (without) permission service.
fn grant_params(mut params: Value, adding: bool) -> Value {
    if adding {
        params["allow"] = Value::Bool(true);
    }
    params
}

async fn apply(s: &AppState, v: &Viewer, f: &GrantForm, adding: bool) -> ApiResult<String> {
    let (kind, pk) = check(s, v, f)?;
    let e = kind.entity();
    let principal = f.principal.trim();
    let ptype = format!("{pk:?}");
    let read_on: Vec<String> = match kind {
        Kind::Thing => vec![f.name.clone()],
        Kind::Template => template_things(s, v, &f.name),
    };
    let (design_service, run_service) = if adding {
        ("AddDesignTimePermission", "AddRunTimePermission")
    } else {
        ("DeleteDesignTimePermission", "DeleteRunTimePermission")
    };
    // Revoking takes away this set's Allows only: an explicit Deny stays (deleting it could
    // let an Allow inherited from a template apply).
    let allowed = |grants: &[GrantRow], perm: &str, resource: &str| {
        grants.iter().any(|g| {
            g.allow
                && g.principal == principal
                && g.principal_type == ptype
                && g.permission == perm
                && (resource.is_empty() || g.resource == resource)
        })
    };
    for thing in &read_on {
        if !adding {
            let (current, _) = grants(s, v, Kind::Thing, thing).await?;
            if !allowed(&current, "Read", "") {
                continue;
            }
        }
        call(
            s,
            v,
            EntityKind::Thing,
            thing,
            design_service,
            grant_params(
                json!({"type": "Read", "principal": principal, "principalType": ptype}),
                adding,
            ),
        )
        .await?;
    }
    let mut runtime = vec![("PropertyRead", "*")];
    runtime.extend(SESSION_SERVICES.iter().map(|s| ("ServiceInvoke", *s)));
    let current = if adding {
        Vec::new()
    } else {
        grants(s, v, kind, &f.name).await?.0
    };
    for (perm, resource) in runtime {
        if !adding && !allowed(&current, perm, resource) {
            continue;
        }
        let params = json!({"type": perm, "resource": resource, "principal": principal, "principalType": ptype});
        call(s, v, e, &f.name, run_service, grant_params(params, adding)).await?;
    }
    let org = f.organization.trim();
    if adding && !org.is_empty() {
        let service = match kind {
            Kind::Thing => "AddVisibilityPermission",
            Kind::Template => "AddInstanceVisibilityPermission",
        };
        call(s, v, e, &f.name, service, json!({"organization": org})).await?;
    }
    Ok(if adding {
        format!(
            "{ptype} {principal} may now connect to {} {}{}",
            kind.label(),
            f.name,
            if org.is_empty() {
                String::new()
            } else {
                format!(" (visible to organization {org})")
            }
        )
    } else {
        format!(
            "remote access revoked for {ptype} {principal} on {} {} (the set's Allows; a Deny stays, and an organization's visibility is shared and stays)",
            kind.label(),
            f.name
        )
    })
}

async fn grant_or_revoke(s: AppState, v: Viewer, f: GrantForm, adding: bool) -> Response {
    let target = Target {
        kind: f.kind.clone(),
        name: f.name.clone(),
    };
    match apply(&s, &v, &f, adding).await {
        Ok(notice) => render(&s, &v, target, notice, None).await,
        Err(e) => view::with_status(
            e.status,
            render(&s, &v, target, String::new(), Some(e.message)).await,
        ),
    }
}

/// `POST /access/grant`.
pub async fn grant(State(s): State<AppState>, v: Viewer, Form(f): Form<GrantForm>) -> Response {
    grant_or_revoke(s, v, f, true).await
}

/// `POST /access/revoke`.
pub async fn revoke(State(s): State<AppState>, v: Viewer, Form(f): Form<GrantForm>) -> Response {
    grant_or_revoke(s, v, f, false).await
}

#[derive(Debug, Deserialize)]
pub struct SwitchForm {
    scope: String,
    name: String,
    enabled: String,
    /// The page to show afterwards (`kind` and `name` of the access page).
    #[serde(default)]
    back_kind: String,
    #[serde(default)]
    back_name: String,
}

/// `POST /access/switch`: a template's or tag's remote access switch (RAE's
/// `SetRemoteAccessSwitch`, as the viewer).
pub async fn switch(State(s): State<AppState>, v: Viewer, Form(f): Form<SwitchForm>) -> Response {
    let result = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "RemoteAccessSubsystem",
        "SetRemoteAccessSwitch",
        json!({"scope": f.scope, "name": f.name, "enabled": f.enabled == "true"}),
    )
    .await;
    let target = Target {
        kind: f.back_kind,
        name: f.back_name,
    };
    match result {
        Ok(_) => {
            let notice = format!(
                "remote access switched {} for {} {}",
                if f.enabled == "true" { "on" } else { "off" },
                f.scope,
                f.name.trim()
            );
            render(&s, &v, target, notice, None).await
        }
        Err(e) => view::with_status(
            e.status,
            render(&s, &v, target, String::new(), Some(e.message)).await,
        ),
    }
}
