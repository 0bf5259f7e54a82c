//! Global Access Servers: every GAS Thing the viewer may see (enabled, connected, healthy,
//! sessions and capacity, version, last registration), with Enable / Disable for remote sessions
//! (RAE's `EnableForRemoteSessions` / `DisableForRemoteSessions`, as the viewer).

use super::session::Viewer;
use super::view::{self, datetime, fragment_error, page_html, Frame};
use crate::api::AppState;
use crate::model::entities::EntityKind;
use crate::security::RunPerm;
use crate::services;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Value};

/// One GAS as listed.
#[derive(Debug)]
pub struct ServerRow {
    pub name: String,
    pub enabled: bool,
    pub connected: bool,
    pub healthy: bool,
    pub sessions: i64,
    pub capacity: i64,
    pub version: String,
    pub registered: String,
    pub address: String,
    pub readable: bool,
    pub may_switch: bool,
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    frame: Frame,
    rows: Vec<ServerRow>,
}

#[derive(Template)]
#[template(path = "_server_row_partial.html")]
struct ServerRowPartial {
    r: ServerRow,
    error: String,
}

fn row(s: &AppState, v: &Viewer, name: &str) -> Option<ServerRow> {
    let m = s.platform.model();
    let who = &v.ctx.who;
    if !m.is_visible(who, EntityKind::Thing, name) {
        return None;
    }
    let t = m.things.get(name)?;
    let readable = view::may_run(&m, who, name, RunPerm::PropertyRead, "*");
    let get = |p: &str| t.values.get(p).cloned().unwrap_or(Value::Null);
    let text = |p: &str| get(p).as_str().unwrap_or("").to_string();
    Some(ServerRow {
        name: name.to_string(),
        enabled: get("enabledForRemoteSessions") == json!(true),
        connected: get("isConnected") == json!(true),
        healthy: get("healthy") == json!(true),
        sessions: get("currentNumberOfSessions").as_i64().unwrap_or(0),
        capacity: get("capacity").as_i64().unwrap_or(0),
        version: text("version"),
        registered: datetime(get("latestRegistrationDate").as_i64()),
        address: text("externalHostName"),
        readable,
        may_switch: view::may_invoke(&m, who, name, "EnableForRemoteSessions")
            && view::may_invoke(&m, who, name, "DisableForRemoteSessions"),
    })
}

/// `GET /servers`.
pub async fn page(State(s): State<AppState>, v: Viewer) -> Response {
    let names: Vec<String> = {
        let m = s.platform.model();
        m.names(EntityKind::Thing)
            .into_iter()
            .filter(|n| m.template_derives_from(&m.things[*n].template, "GASModel"))
            .filter(|n| m.is_visible(&v.ctx.who, EntityKind::Thing, n))
            .map(String::from)
            .collect()
    };
    let rows = names.iter().filter_map(|n| row(&s, &v, n)).collect();
    page_html(&ServersPage {
        frame: Frame::new(&v, "Global Access Servers", "servers"),
        rows,
    })
}

#[derive(Deserialize)]
pub struct EnableForm {
    server: String,
    enabled: String,
}

/// `POST /servers/enable` (`enabled` true or false): answers the server's row.
pub async fn enable(State(s): State<AppState>, v: Viewer, Form(f): Form<EnableForm>) -> Response {
    let service = if f.enabled == "true" {
        "EnableForRemoteSessions"
    } else {
        "DisableForRemoteSessions"
    };
    let result = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &f.server,
        service,
        json!({}),
    )
    .await;
    let (status, error) = match result {
        Ok(_) => (axum::http::StatusCode::OK, String::new()),
        Err(e) => (e.status, e.message),
    };
    match row(&s, &v, &f.server) {
        Some(r) => view::with_status(status, page_html(&ServerRowPartial { r, error })),
        None => fragment_error(&crate::error::ApiError::entity_not_found(&f.server)),
    }
}
