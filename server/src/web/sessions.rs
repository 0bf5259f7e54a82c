//! Sessions: live and recent sessions of every device the viewer may see
//! (`RemoteAccessSubsystem.GetSessions`), filtered by device, user and status, with End.

use super::session::{encode_query, encode_segment, Viewer};
use super::view::{self, datetime, fragment_error, page_html, Frame};
use crate::api::AppState;
use crate::model::entities::EntityKind;
use crate::services;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The statuses a filter may name.
pub const STATUSES: [&str; 4] = ["INITIALIZING", "CREATED", "STARTED", "TERMINATED"];
/// The most rows the page asks for.
const LIMIT: i64 = 200;

/// One session as listed.
#[derive(Debug)]
pub struct SessionRow {
    pub id: String,
    pub short_id: String,
    pub device: String,
    pub device_link: String,
    pub endpoint: String,
    pub user: String,
    pub status: String,
    pub cause: String,
    pub created: String,
    pub ended: String,
    pub bytes: String,
    pub server: String,
    pub live: bool,
    pub may_end: bool,
}

/// Rows of a `RemoteSession` InfoTable, with what the viewer may do to each.
pub fn session_rows(s: &AppState, v: &Viewer, rows: &[Map<String, Value>]) -> Vec<SessionRow> {
    let m = s.platform.model();
    rows.iter()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let id = text("sessionId");
            let device = text("agentDevice");
            let status = text("status");
            let live = !status.is_empty() && status != "TERMINATED";
            SessionRow {
                short_id: id.chars().take(12).collect(),
                device_link: format!("/devices/{}", encode_segment(&device)),
                endpoint: text("remoteEndpoint"),
                user: text("createdBy"),
                cause: text("terminationCause"),
                created: datetime(r.get("createdTime").and_then(Value::as_i64)),
                ended: datetime(r.get("endTime").and_then(Value::as_i64)),
                bytes: r
                    .get("bytesTransferred")
                    .and_then(Value::as_i64)
                    .map(human_bytes)
                    .unwrap_or_default(),
                server: text("remoteServer"),
                may_end: live && view::may_invoke(&m, &v.ctx.who, &device, "EndSession"),
                live,
                status,
                device,
                id,
            }
        })
        .collect()
}

fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 1024.0 {
        format!("{n} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", n / 1024.0 / 1024.0 / 1024.0)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    device: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    status: String,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    frame: Frame,
    filters: Filters,
    statuses: [&'static str; 4],
    rows: Vec<SessionRow>,
    error: String,
    poll_url: String,
}

#[derive(Template)]
#[template(path = "_sessions_rows_partial.html")]
struct SessionsRows {
    rows: Vec<SessionRow>,
    error: String,
}

async fn find(s: &AppState, v: &Viewer, f: &Filters) -> (Vec<SessionRow>, String) {
    let mut params = Map::new();
    params.insert("limit".into(), json!(LIMIT));
    for (k, value) in [
        ("thingName", &f.device),
        ("createdBy", &f.user),
        ("status", &f.status),
    ] {
        if !value.trim().is_empty() {
            params.insert(k.into(), json!(value.trim()));
        }
    }
    match services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "RemoteAccessSubsystem",
        "GetSessions",
        Value::Object(params),
    )
    .await
    {
        Ok(t) => (session_rows(s, v, &t.rows), String::new()),
        Err(e) => (Vec::new(), e.message),
    }
}

/// `GET /sessions?device=&user=&status=`.
pub async fn page(State(s): State<AppState>, v: Viewer, Query(f): Query<Filters>) -> Response {
    let (rows, error) = find(&s, &v, &f).await;
    if v.xhr {
        return page_html(&SessionsRows { rows, error });
    }
    let poll_url = format!(
        "/sessions?device={}&user={}&status={}",
        encode_query(&f.device),
        encode_query(&f.user),
        encode_query(&f.status)
    );
    page_html(&SessionsPage {
        frame: Frame::new(&v, "Sessions", "sessions"),
        filters: f,
        statuses: STATUSES,
        rows,
        error,
        poll_url,
    })
}

#[derive(Deserialize)]
pub struct EndForm {
    session: String,
}

#[derive(Template)]
#[template(path = "_ended_partial.html")]
struct Ended {
    status: String,
    cause: String,
}

/// `POST /sessions/end`: `RemoteAccessSubsystem.EndSession`, as the viewer.
pub async fn end(State(s): State<AppState>, v: Viewer, Form(f): Form<EndForm>) -> Response {
    match services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "RemoteAccessSubsystem",
        "EndSession",
        json!({"sessionId": f.session}),
    )
    .await
    {
        Ok(t) => {
            let row = t
                .rows
                .first()
                .cloned()
                .map(Value::Object)
                .unwrap_or(Value::Null);
            let text = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            page_html(&Ended {
                status: text("status"),
                cause: text("terminationCause"),
            })
        }
        Err(e) => fragment_error(&e),
    }
}
