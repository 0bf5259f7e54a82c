//! The audit log (`AuditSubsystem.QueryAuditHistory`, as the viewer): filters by category,
//! entity, principal and time range, newest first, paged by id.

use super::session::{encode_query, Viewer};
use super::view::{self, datetime, page_html, Frame};
use crate::api::AppState;
use crate::audit::Category;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::services;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Entries per page.
const PAGE: i64 = 50;

/// One entry as shown.
#[derive(Debug)]
pub struct AuditRow {
    pub id: i64,
    pub time: String,
    pub principal: String,
    pub category: String,
    pub entity: String,
    pub message: String,
    pub source_ip: String,
}

/// Runs `QueryAuditHistory` with `params` as the viewer.
pub async fn query(s: &AppState, v: &Viewer, params: Value) -> Result<Vec<AuditRow>, ApiError> {
    let t = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Subsystem,
        "AuditSubsystem",
        "QueryAuditHistory",
        params,
    )
    .await?;
    Ok(t.rows
        .iter()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            AuditRow {
                id: r.get("id").and_then(Value::as_i64).unwrap_or(0),
                time: datetime(r.get("timestamp").and_then(Value::as_i64)),
                principal: text("principal"),
                category: text("category"),
                entity: text("entity"),
                message: text("message"),
                source_ip: text("sourceIp"),
            }
        })
        .collect())
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    category: String,
    #[serde(default)]
    entity: String,
    #[serde(default)]
    principal: String,
    /// `YYYY-MM-DDTHH:MM` (a datetime-local input, UTC) or RFC 3339.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Entries older than this id (the next page).
    before: Option<String>,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    filters: Filters,
    categories: Vec<&'static str>,
    rows: Vec<AuditRow>,
    error: String,
    next: String,
}

/// A `datetime-local` value (taken as UTC) or RFC 3339, as the service's DATETIME string.
fn datetime_param(name: &str, v: &str) -> Result<Option<Value>, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let rfc3339 = if v.len() == 16 {
        format!("{v}:00Z")
    } else if v.len() == 19 {
        format!("{v}Z")
    } else {
        v.to_string()
    };
    if time::OffsetDateTime::parse(&rfc3339, &time::format_description::well_known::Rfc3339)
        .is_err()
    {
        return Err(ApiError::bad_request(format!(
            "{name}: '{}' is not a date and time (YYYY-MM-DDTHH:MM, UTC)",
            crate::model::names::printable(&v.chars().take(40).collect::<String>())
        )));
    }
    Ok(Some(json!(rfc3339)))
}

fn params(f: &Filters) -> Result<Value, ApiError> {
    let mut p = Map::new();
    p.insert("limit".into(), json!(PAGE));
    for (k, v) in [
        ("category", &f.category),
        ("entity", &f.entity),
        ("principal", &f.principal),
    ] {
        if !v.trim().is_empty() {
            p.insert(k.into(), json!(v.trim()));
        }
    }
    if let Some(v) = datetime_param("since", &f.since)? {
        p.insert("since".into(), v);
    }
    if let Some(v) = datetime_param("until", &f.until)? {
        p.insert("until".into(), v);
    }
    if let Some(b) = f.before.as_deref().filter(|b| !b.is_empty()) {
        let id = b
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("before: an audit entry id (a number)"))?;
        p.insert("beforeId".into(), json!(id));
    }
    Ok(Value::Object(p))
}

/// `GET /audit?category=&entity=&principal=&since=&until=&before=`.
pub async fn page(State(s): State<AppState>, v: Viewer, Query(f): Query<Filters>) -> Response {
    let (rows, error) = match params(&f) {
        Ok(p) => match query(&s, &v, p).await {
            Ok(rows) => (rows, String::new()),
            Err(e) => (Vec::new(), e.message),
        },
        Err(e) => (Vec::new(), e.message),
    };
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == PAGE => format!(
            "/audit?category={}&entity={}&principal={}&since={}&until={}&before={}",
            encode_query(&f.category),
            encode_query(&f.entity),
            encode_query(&f.principal),
            encode_query(&f.since),
            encode_query(&f.until),
            last.id
        ),
        _ => String::new(),
    };
    if v.xhr && !error.is_empty() {
        return view::fragment_error(&ApiError::bad_request(error));
    }
    page_html(&AuditPage {
        frame: Frame::new(&v, "Audit", "audit"),
        filters: f,
        categories: Category::ALL.iter().map(|c| c.as_str()).collect(),
        rows,
        error,
        next,
    })
}
