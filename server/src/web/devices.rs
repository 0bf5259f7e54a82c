//! The device list: the Things the viewer may see that connect through an agent (templates
//! derived from `RemoteThing`, GASes excepted: they have their own page), with connected state
//! kept current by polling the rows fragment, search by name and server-side paging.

use super::session::{encode_query, Viewer};
use super::view::{datetime, page_html, Frame};
use crate::api::AppState;
use crate::model::entities::EntityKind;
use crate::model::Model;
use crate::security::{Principal, RunPerm};
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

/// Rows per page.
pub const PAGE_SIZE: usize = 50;
/// The longest search text taken.
const MAX_QUERY: usize = 200;

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    page: Option<String>,
}

/// One row of the list.
#[derive(Debug)]
pub struct DeviceRow {
    pub name: String,
    pub description: String,
    pub template: String,
    pub tags: Vec<String>,
    /// `None` when the viewer may not read it.
    pub connected: Option<bool>,
    pub last_connection: String,
    pub remote_access: Option<bool>,
    pub link: String,
}

/// A page of the list.
#[derive(Debug)]
pub struct DeviceList {
    pub q: String,
    pub rows: Vec<DeviceRow>,
    /// Matching devices in all pages.
    pub total: usize,
    /// 1-based.
    pub page: usize,
    pub pages: usize,
    pub poll_url: String,
}

impl DeviceList {
    pub fn link(&self, page: usize) -> String {
        format!("/devices?q={}&page={page}", encode_query(&self.q))
    }
}

/// Whether a Thing is a device: its template derives from `RemoteThing`, and it is not a GAS.
fn is_device(m: &Model, template: &str) -> bool {
    m.template_derives_from(template, "RemoteThing")
        && !m.template_derives_from(template, "GASModel")
}

fn readable(m: &Model, who: &Principal, thing: &str, property: &str) -> bool {
    who.admin
        || m.runtime_allowed(
            who,
            EntityKind::Thing,
            thing,
            RunPerm::PropertyRead,
            property,
        )
}

/// The devices `who` may see whose name contains `q` (case-insensitive), page `page`.
pub fn list(m: &Model, who: &Principal, q: &str, page: usize) -> DeviceList {
    let q: String = q.trim().chars().take(MAX_QUERY).collect();
    let needle = q.to_lowercase();
    let matching: Vec<&str> = m
        .names(EntityKind::Thing)
        .into_iter()
        .filter(|name| needle.is_empty() || name.to_lowercase().contains(&needle))
        .filter(|name| is_device(m, &m.things[*name].template))
        .filter(|name| m.is_visible(who, EntityKind::Thing, name))
        .collect();
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let rows = matching
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|name| {
            let t = &m.things[*name];
            let value = |p: &str| readable(m, who, name, p).then(|| t.values.get(p));
            DeviceRow {
                name: name.to_string(),
                description: t.description.clone(),
                template: t.template.clone(),
                tags: t.tags.clone(),
                connected: value("isConnected").map(|v| v == Some(&Value::Bool(true))),
                last_connection: value("lastConnection")
                    .flatten()
                    .map(|v| datetime(v.as_i64()))
                    .unwrap_or_default(),
                remote_access: value("remoteAccessEnabled").map(|v| v != Some(&Value::Bool(false))),
                link: format!("/devices/{}", encode_query(name)),
            }
        })
        .collect();
    DeviceList {
        poll_url: format!("/devices/rows?q={}&page={page}", encode_query(&q)),
        q,
        rows,
        total,
        page,
        pages,
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    frame: Frame,
    list: DeviceList,
}

#[derive(Template)]
#[template(path = "_devices_rows_partial.html")]
struct DeviceRows {
    list: DeviceList,
}

fn page_number(q: &ListQuery) -> usize {
    q.page
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
}

/// `GET /devices?q=&page=`.
pub async fn page(State(s): State<AppState>, v: Viewer, Query(q): Query<ListQuery>) -> Response {
    let list = list(&s.platform.model(), &v.ctx.who, &q.q, page_number(&q));
    page_html(&DevicesPage {
        frame: Frame::new(&v, "Devices", "devices"),
        list,
    })
}

/// `GET /devices/rows?q=&page=`: the rows alone (the list refreshes itself with it).
pub async fn rows(State(s): State<AppState>, v: Viewer, Query(q): Query<ListQuery>) -> Response {
    let list = list(&s.platform.model(), &v.ctx.who, &q.q, page_number(&q));
    page_html(&DeviceRows { list })
}
