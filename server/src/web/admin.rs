//! Administration (administrators): users, groups and their members, application keys (the
//! value shown once, at creation), extension packages (list, import with its report, delete with
//! the refusal's reason). Every action is the REST API's service, called as the viewer: a
//! non-administrator's forged request is refused by the service itself.

use super::session::Viewer;
use super::view::{self, page_html, Frame};
use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::model::entities::EntityKind;
use crate::services;
use askama::Template;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct UserRow {
    pub name: String,
    pub enabled: bool,
    pub groups: String,
}

#[derive(Debug)]
pub struct GroupRow {
    pub name: String,
    pub members: String,
}

#[derive(Debug)]
pub struct KeyRow {
    pub name: String,
    pub user: String,
    pub expires: String,
}

#[derive(Debug)]
pub struct PackageRow {
    pub name: String,
    pub version: String,
    pub status: String,
    pub message: String,
}

/// The administration page's content.
struct Admin {
    users: Vec<UserRow>,
    groups: Vec<GroupRow>,
    keys: Vec<KeyRow>,
    packages: Vec<PackageRow>,
    packages_error: String,
    notice: String,
    error: String,
    /// A new application key's value: shown once.
    secret: String,
    report: Vec<PackageRow>,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    frame: Frame,
    a: Admin,
}

#[derive(Template)]
#[template(path = "_admin_partial.html")]
struct AdminPartial {
    a: Admin,
}

/// A signed-in administrator: what every administration request needs first. Anyone else is
/// refused before anything is done or shown (the page's data, every user, group and key, is for
/// administrators only, whatever a service would have answered).
pub struct Administrator(pub Viewer);

impl axum::extract::FromRequestParts<AppState> for Administrator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let v = Viewer::from_request_parts(parts, state).await?;
        match require_admin(&v) {
            Ok(()) => Ok(Administrator(v)),
            Err(e) => Err(view::error(&v, &e)),
        }
    }
}

fn require_admin(v: &Viewer) -> ApiResult<()> {
    if v.ctx.who.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Not authorized: administration is for members of Administrators",
        ))
    }
}

async fn content(s: &AppState, v: &Viewer) -> Admin {
    let (users, groups, keys) = {
        let m = s.platform.model();
        let users = m
            .names(EntityKind::User)
            .into_iter()
            .map(|n| {
                let mut groups: Vec<String> = m.principal(n).groups.into_iter().collect();
                groups.sort();
                UserRow {
                    name: n.to_string(),
                    enabled: m.users[n].enabled,
                    groups: groups.join(", "),
                }
            })
            .collect();
        let groups = m
            .names(EntityKind::Group)
            .into_iter()
            .map(|n| GroupRow {
                name: n.to_string(),
                members: m.groups[n]
                    .members
                    .iter()
                    .map(|mb| format!("{} ({:?})", mb.name, mb.kind))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect();
        let keys = m
            .names(EntityKind::ApplicationKey)
            .into_iter()
            .map(|n| {
                let k = &m.app_keys[n];
                KeyRow {
                    name: n.to_string(),
                    user: k.user.clone(),
                    expires: view::datetime(k.expires_at),
                }
            })
            .collect();
        (users, groups, keys)
    };
    let (packages, packages_error) = match services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "PlatformSubsystem",
        "GetExtensionPackageList",
        json!({}),
    )
    .await
    {
        Ok(t) => (
            t.rows
                .iter()
                .map(|r| {
                    let text = |k: &str| match r.get(k) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    PackageRow {
                        name: text("name"),
                        version: text("packageVersion"),
                        status: text("status"),
                        message: text("description"),
                    }
                })
                .collect(),
            String::new(),
        ),
        Err(e) => (Vec::new(), e.message),
    };
    Admin {
        users,
        groups,
        keys,
        packages,
        packages_error,
        notice: String::new(),
        error: String::new(),
        secret: String::new(),
        report: Vec::new(),
    }
}

/// `GET /admin`.
pub async fn page(State(s): State<AppState>, Administrator(v): Administrator) -> Response {
    let a = content(&s, &v).await;
    page_html(&AdminPage {
        frame: Frame::new(&v, "Administration", "admin"),
        a,
    })
}

/// Answers the section after an action: a notice, or the service's error with its status.
async fn after(s: &AppState, v: &Viewer, result: ApiResult<String>) -> Response {
    let mut a = content(s, v).await;
    match result {
        Ok(notice) => {
            a.notice = notice;
            page_html(&AdminPartial { a })
        }
        Err(e) => {
            a.error = e.message.clone();
            view::with_status(e.status, page_html(&AdminPartial { a }))
        }
    }
}

async fn entity_service(
    s: &AppState,
    v: &Viewer,
    service: &str,
    params: Value,
) -> ApiResult<Value> {
    let t = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Resource,
        "EntityServices",
        service,
        params,
    )
    .await?;
    Ok(t.rows
        .into_iter()
        .next()
        .map(Value::Object)
        .unwrap_or(Value::Null))
}

#[derive(Deserialize)]
pub struct UserForm {
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    action: String,
}

/// `POST /admin/users`: creates a user (`CreateUser`), or deletes one (`action=delete`).
pub async fn create_user(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    Form(f): Form<UserForm>,
) -> Response {
    let name = f.name.trim().to_string();
    let result = if f.action == "delete" {
        entity_service(&s, &v, "DeleteUser", json!({"name": name}))
            .await
            .map(|_| format!("user {name} deleted"))
    } else {
        entity_service(
            &s,
            &v,
            "CreateUser",
            json!({"name": name, "password": f.password}),
        )
        .await
        .map(|_| format!("user {name} created"))
    };
    after(&s, &v, result).await
}

#[derive(Deserialize)]
pub struct GroupForm {
    name: String,
}

/// `POST /admin/groups`: `CreateGroup`.
pub async fn create_group(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    Form(f): Form<GroupForm>,
) -> Response {
    let name = f.name.trim().to_string();
    let result = entity_service(&s, &v, "CreateGroup", json!({"name": name}))
        .await
        .map(|_| format!("group {name} created"));
    after(&s, &v, result).await
}

#[derive(Deserialize)]
pub struct MemberForm {
    group: String,
    member: String,
    #[serde(rename = "type")]
    kind: String,
    action: String,
}

/// `POST /admin/groups/members`: `AddMember` or `RemoveMember` on the group.
pub async fn members(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    Form(f): Form<MemberForm>,
) -> Response {
    let (service, verb) = if f.action == "remove" {
        ("RemoveMember", "removed from")
    } else {
        ("AddMember", "added to")
    };
    let member = f.member.trim().to_string();
    let result = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Group,
        f.group.trim(),
        service,
        json!({"member": member, "type": f.kind}),
    )
    .await
    .map(|_| format!("{} {member} {verb} {}", f.kind, f.group.trim()));
    after(&s, &v, result).await
}

#[derive(Deserialize)]
pub struct KeyForm {
    name: String,
    user: String,
    #[serde(default)]
    expires: String,
}

/// `POST /admin/keys`: `CreateApplicationKey`; the value is shown this once.
pub async fn create_key(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    Form(f): Form<KeyForm>,
) -> Response {
    let name = f.name.trim().to_string();
    let mut params = json!({"name": name, "user": f.user.trim()});
    let expires = f.expires.trim();
    if !expires.is_empty() {
        params["expirationDate"] = json!(if expires.len() == 16 {
            format!("{expires}:00Z")
        } else {
            expires.to_string()
        });
    }
    let created = entity_service(&s, &v, "CreateApplicationKey", params).await;
    let mut a = content(&s, &v).await;
    match created {
        Ok(row) => {
            let value = row
                .get("result")
                .and_then(|t| t.get("rows"))
                .and_then(|r| r.get(0))
                .and_then(|r| r.get("keyId"))
                .or_else(|| row.get("keyId"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            a.notice = format!(
                "application key {name} created: copy its value now, it is not shown again"
            );
            a.secret = value;
            page_html(&AdminPartial { a })
        }
        Err(e) => {
            a.error = e.message.clone();
            view::with_status(e.status, page_html(&AdminPartial { a }))
        }
    }
}

/// `POST /admin/keys/delete`: `DeleteApplicationKey`.
pub async fn delete_key(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    Form(f): Form<GroupForm>,
) -> Response {
    let name = f.name.trim().to_string();
    let result = entity_service(&s, &v, "DeleteApplicationKey", json!({"name": name}))
        .await
        .map(|_| format!("application key {name} deleted"));
    after(&s, &v, result).await
}

/// `POST /admin/extensions` (multipart `file`): the uploader's import, with its report.
pub async fn import_extension(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    mut form: Multipart,
) -> Response {
    let file = match crate::api::extensions::file_field(&mut form).await {
        Ok(f) => f,
        Err(e) => return after(&s, &v, Err(e)).await,
    };
    let outcome = crate::api::extensions::import(&s, &v.ctx, file).await;
    let mut a = content(&s, &v).await;
    match outcome {
        Ok(o) => {
            a.report = o
                .rows
                .iter()
                .map(|r| PackageRow {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    status: format!("{:?}", r.extension_report_status),
                    message: r.report_message.clone(),
                })
                .collect();
            if o.refused {
                a.error = "extension import refused: nothing was changed (see the report)".into();
                view::with_status(StatusCode::NOT_ACCEPTABLE, page_html(&AdminPartial { a }))
            } else {
                a.notice = "extension import finished (see the report)".into();
                page_html(&AdminPartial { a })
            }
        }
        Err(e) => {
            a.error = e.message.clone();
            view::with_status(e.status, page_html(&AdminPartial { a }))
        }
    }
}

#[derive(Deserialize)]
pub struct PackageForm {
    name: String,
}

/// `POST /admin/extensions/delete`: `DeleteExtensionPackage` (409 with its reason while in use).
pub async fn delete_extension(
    State(s): State<AppState>,
    Administrator(v): Administrator,
    Form(f): Form<PackageForm>,
) -> Response {
    let result = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "PlatformSubsystem",
        "DeleteExtensionPackage",
        json!({"packageName": f.name}),
    )
    .await
    .map(|_| format!("extension package {} deleted", f.name));
    after(&s, &v, result).await
}
