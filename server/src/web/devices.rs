//! The device list: the Things the viewer may see that connect through an agent (templates
//! derived from `RemoteThing`, GASes excepted: they have their own page), with connected state
//! kept current by polling the rows fragment, search by name and server-side paging.

use super::session::{encode_query, encode_segment, Viewer};
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
use std::collections::HashMap;

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

/// Whether `name` contains `needle` (already lower-case), ignoring case.
fn contains_ignoring_case(name: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if name.is_ascii() {
        let (h, n) = (name.as_bytes(), needle.as_bytes());
        h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        name.to_lowercase().contains(needle)
    }
}

/// The devices `who` may see whose name contains `q` (case-insensitive), page `page`.
pub fn list(m: &Model, who: &Principal, q: &str, page: usize) -> DeviceList {
    let q: String = q.trim().chars().take(MAX_QUERY).collect();
    let needle = q.to_lowercase();
    let mut device_template: HashMap<&str, bool> = HashMap::new();
    let mut visible = m.thing_visibility(who);
    let mut matching: Vec<&str> = m
        .things
        .iter()
        .filter(|(name, _)| contains_ignoring_case(name, &needle))
        .filter(|(_, t)| {
            *device_template
                .entry(t.template.as_str())
                .or_insert_with(|| is_device(m, &t.template))
        })
        .filter(|(name, t)| visible(name, t))
        .map(|(name, _)| name.as_str())
        .collect();
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    // The page's names in order, without sorting all of them: partition around the page's
    // first and last positions, then sort the page alone (linear in the matching names).
    let start = (page - 1) * PAGE_SIZE;
    let end = (start + PAGE_SIZE).min(total);
    if start > 0 && start < total {
        matching.select_nth_unstable(start);
    }
    let tail = &mut matching[start.min(total)..];
    if end - start < tail.len() && end > start {
        tail.select_nth_unstable(end - start);
    }
    tail[..end.saturating_sub(start)].sort_unstable();
    let rows = matching[start.min(total)..end]
        .iter()
        .map(|name| {
            let t = &m.things[*name];
            let value = |p: &str| readable(m, who, name, p).then(|| t.values.get(p));
            let switchable = m
                .thing_property(t, crate::web::REMOTE_ACCESS_ENABLED)
                .is_some();
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
                remote_access: value(crate::web::REMOTE_ACCESS_ENABLED)
                    .filter(|_| switchable)
                    .map(|v| v != Some(&Value::Bool(false))),
                link: format!("/devices/{}", encode_segment(name)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::entities::{Member, MemberSet, PrincipalKind, Thing, ThingTemplate, User};
    use crate::security::Acl;

    fn template(base: Option<&str>) -> ThingTemplate {
        ThingTemplate {
            description: String::new(),
            base: base.map(String::from),
            shapes: vec![],
            properties: vec![],
            owner: None,
        }
    }

    fn thing(template: &str, description: &str) -> Thing {
        Thing {
            description: description.into(),
            template: template.into(),
            shapes: vec![],
            properties: vec![],
            tags: vec![],
            enabled: true,
            owner: None,
            values: Default::default(),
        }
    }

    /// 10,000 devices, 10 GASes, 10 plain Things; `viewer` sees the devices with an even
    /// number through their own grant, and every `Line` device through its template.
    fn model() -> Model {
        let mut m = Model::default();
        m.templates.insert("GenericThing".into(), template(None));
        m.templates
            .insert("RemoteThing".into(), template(Some("GenericThing")));
        m.templates
            .insert("Line".into(), template(Some("RemoteThing")));
        m.templates
            .insert("GASModel".into(), template(Some("RemoteThing")));
        m.users.insert(
            "viewer".into(),
            User {
                description: String::new(),
                password_hash: String::new(),
                enabled: true,
            },
        );
        let mut org = MemberSet::default();
        org.members.insert(Member {
            kind: PrincipalKind::User,
            name: "viewer".into(),
        });
        m.orgs.insert("Plant".into(), org);
        let plant = || Acl {
            visibility: ["Plant".to_string()].into(),
            ..Default::default()
        };
        for i in 0..10_000 {
            let name = format!("dev-{i:05}");
            let tpl = if i % 10 == 9 { "Line" } else { "RemoteThing" };
            m.things.insert(name.clone(), thing(tpl, "a device"));
            if i % 2 == 0 {
                m.acl.insert((EntityKind::Thing, name), plant());
            }
        }
        m.acl.insert(
            (EntityKind::ThingTemplate, "Line".into()),
            Acl {
                instance_visibility: ["Plant".to_string()].into(),
                ..Default::default()
            },
        );
        for i in 0..10 {
            m.things.insert(format!("gas-{i}"), thing("GASModel", ""));
            m.things
                .insert(format!("plain-{i}"), thing("GenericThing", ""));
        }
        m
    }

    #[test]
    fn pages_hold_the_visible_devices_in_name_order() {
        let m = model();
        let admin = Principal {
            admin: true,
            ..m.principal("viewer")
        };
        let l = list(&m, &admin, "", 1);
        assert_eq!(l.total, 10_000, "GASes and plain Things are not devices");
        assert_eq!(l.pages, 200);
        assert_eq!(l.rows.len(), PAGE_SIZE);
        assert_eq!(l.rows[0].name, "dev-00000");
        let last = list(&m, &admin, "", 200);
        assert_eq!(last.rows.last().unwrap().name, "dev-09999");
        // Out-of-range pages are clamped, not errors.
        assert_eq!(list(&m, &admin, "", 0).page, 1);
        assert_eq!(list(&m, &admin, "", 1_000_000).page, 200);

        let viewer = m.principal("viewer");
        let l = list(&m, &viewer, "", 1);
        // Even numbers (5,000) plus the odd ones of Line (i % 10 == 9: 1,000).
        assert_eq!(l.total, 6_000);
        assert!(l.rows.iter().all(|r| {
            let n: usize = r.name[4..].parse().unwrap();
            n.is_multiple_of(2) || n % 10 == 9
        }));
        for i in 0..l.rows.len().saturating_sub(1) {
            assert!(l.rows[i].name < l.rows[i + 1].name);
        }
        // What the viewer may not read is not shown.
        assert!(l.rows.iter().all(|r| r.connected.is_none()));
    }

    #[test]
    fn search_ignores_case_and_is_bounded() {
        let m = model();
        let viewer = m.principal("viewer");
        let l = list(&m, &viewer, "  DEV-0001  ", 1);
        assert_eq!(l.q, "DEV-0001");
        assert_eq!(
            l.total,
            6,
            "dev-00010..19: the evens and dev-00019: {:?}",
            l.rows.iter().map(|r| &r.name).collect::<Vec<_>>()
        );
        let long = "x".repeat(10_000);
        let l = list(&m, &viewer, &long, 1);
        assert_eq!(l.q.len(), MAX_QUERY);
        assert_eq!(l.total, 0);
    }

    #[test]
    fn listing_ten_thousand_things_is_quick() {
        // Not a benchmark (thingport-bench web is): a guard against an accidental quadratic.
        let m = model();
        let viewer = m.principal("viewer");
        let started = std::time::Instant::now();
        for page in 1..=20 {
            let _ = list(&m, &viewer, "", page);
        }
        let each = started.elapsed() / 20;
        assert!(
            each < std::time::Duration::from_millis(200),
            "{each:?} per page"
        );
    }

    #[test]
    fn hostile_names_and_descriptions_render_as_text() {
        let mut m = model();
        let evil = "<img src=x onerror=alert(1)>\"'&";
        m.things
            .insert("<script>x</script>".into(), thing("RemoteThing", evil));
        let admin = Principal {
            admin: true,
            ..m.principal("viewer")
        };
        let l = list(&m, &admin, "<script>", 1);
        assert_eq!(l.total, 1);
        let html = DeviceRows { list: l }.render().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&#60;script&#62;x&#60;/script&#62;") || html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("href=\"/devices/%3Cscript%3Ex%3C%2Fscript%3E\""),
            "{html}"
        );
    }
}
