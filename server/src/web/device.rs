//! A device's page and its Remote access tab: facts, the remote access switch, the endpoints
//! (add, edit, remove, with inline validation), Connect (a session and the exact client lines to
//! attach to it), the device's sessions (refreshed in place, with End) and its audit entries.
//!
//! Every read and write goes through the functions the REST API calls, as the viewer.

use super::endpoints::{self, Endpoint, EndpointForm};
use super::session::{encode_query, Viewer};
use super::sessions::{session_rows, SessionRow};
use super::view::{self, datetime, fragment_error, page_html, with_status, Frame};
use crate::api::AppState;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::security::RunPerm;
use crate::services::{self, things};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// How many audit entries the tab shows.
const AUDIT_ROWS: i64 = 20;

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    frame: Frame,
    facts: Facts,
    switch: SwitchPanel,
    endpoints: EndpointsPanel,
    sessions: SessionsPanel,
    audit: AuditPanel,
}

struct Facts {
    thing: String,
    description: String,
    template: String,
    tags: Vec<String>,
    connected: Option<bool>,
    last_connection: String,
    remote_accessible: bool,
    may_manage_access: bool,
    access_link: String,
}

#[derive(Template)]
#[template(path = "_switch_partial.html")]
pub struct SwitchPanel {
    thing: String,
    /// `None` when the viewer may not read it.
    on: Option<bool>,
    may_change: bool,
    error: String,
}

#[derive(Template)]
#[template(path = "_endpoints_partial.html")]
pub struct EndpointsPanel {
    thing: String,
    rows: Vec<EndpointRow>,
    may_edit: bool,
    may_connect: bool,
    /// The viewer may start browser consoles (`StartConsoleSession`).
    may_console: bool,
    pub(crate) error: String,
    pub(crate) notice: String,
    form: EndpointForm,
    protocols: [&'static str; 5],
    authentications: [(&'static str, &'static str); 4],
}

/// An endpoint as listed, with its edit form's values (what was typed, after a refused edit).
pub struct EndpointRow {
    e: Endpoint,
    edit: EndpointForm,
    /// The edit form is shown open (it was refused).
    open: bool,
    /// The endpoint speaks a protocol the browser console has (VNC, SSH, TELNET).
    pub console: bool,
    /// Its stored credentials, when the viewer may edit them.
    pub creds: Option<super::credentials::Stored>,
    /// The credentials editor is shown open (it was just used).
    pub creds_open: bool,
}

impl EndpointRow {
    pub fn name(&self) -> &str {
        &self.e.name
    }
}

impl EndpointsPanel {
    /// Opens the credentials editor of `endpoint`.
    pub fn open_credentials(&mut self, endpoint: &str) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.e.name == endpoint) {
            r.creds_open = true;
        }
    }

    pub fn rows_is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl EndpointRow {
    fn new(e: Endpoint) -> Self {
        let edit = EndpointForm {
            original: e.name.clone(),
            name: e.name.clone(),
            protocol: e.protocol.clone(),
            host: e.host.clone(),
            port: e.port.clone(),
            description: e.description.clone(),
        };
        let console =
            super::console::CONSOLE_PROTOCOLS.contains(&e.protocol.to_ascii_uppercase().as_str());
        EndpointRow {
            e,
            edit,
            open: false,
            console,
            creds: None,
            creds_open: false,
        }
    }
}

#[derive(Template)]
#[template(path = "_device_sessions_partial.html")]
pub struct SessionsPanel {
    rows: Vec<SessionRow>,
    error: String,
}

pub struct AuditPanel {
    rows: Vec<super::audit::AuditRow>,
    error: String,
}

#[derive(Template)]
#[template(path = "_connect_partial.html")]
struct ConnectResult {
    thing: String,
    endpoint: String,
    session_id: String,
    status: String,
    expires: String,
    commands: Vec<(String, String, String)>,
    may_end: bool,
    /// Whether the viewer may attach to the session (`AttachSession`); else the lines start
    /// sessions of their own.
    may_attach: bool,
}

fn thing_path(thing: &str) -> String {
    encode_query(thing)
}

fn ensure_visible(s: &AppState, v: &Viewer, thing: &str) -> Result<(), ApiError> {
    s.platform
        .model()
        .check_visible(&v.ctx.who, EntityKind::Thing, thing)
}

/// The device's endpoints as the viewer may read them.
fn read_endpoints(s: &AppState, v: &Viewer, thing: &str) -> Result<Vec<Endpoint>, ApiError> {
    let t = things::read_property(&s.platform, &v.ctx.who, thing, "endpoints")?;
    let value = t
        .rows
        .first()
        .and_then(|r| r.get("endpoints"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(endpoints::from_value(&value))
}

pub(crate) async fn endpoints_panel(s: &AppState, v: &Viewer, thing: &str) -> EndpointsPanel {
    let (may_edit, may_connect, may_console) = {
        let m = s.platform.model();
        let who = &v.ctx.who;
        (
            view::may_run(&m, who, thing, RunPerm::PropertyWrite, "endpoints"),
            view::may_connect(&m, who, thing),
            view::may_invoke(&m, who, thing, "StartConsoleSession"),
        )
    };
    let (mut rows, error) = match read_endpoints(s, v, thing) {
        Ok(rows) => (
            rows.into_iter().map(EndpointRow::new).collect::<Vec<_>>(),
            String::new(),
        ),
        Err(e) => (Vec::new(), e.message),
    };
    if may_edit {
        super::credentials::load(s, v, thing, &mut rows).await;
    }
    EndpointsPanel {
        thing: thing.to_string(),
        rows,
        may_edit,
        may_connect,
        may_console,
        error,
        notice: String::new(),
        form: EndpointForm::default(),
        protocols: endpoints::PROTOCOLS,
        authentications: super::credentials::AUTHENTICATIONS,
    }
}

fn switch_panel(s: &AppState, v: &Viewer, thing: &str) -> SwitchPanel {
    let m = s.platform.model();
    let who = &v.ctx.who;
    let property = crate::web::REMOTE_ACCESS_ENABLED;
    let readable = view::may_run(&m, who, thing, RunPerm::PropertyRead, property);
    let on = readable.then(|| {
        m.things.get(thing).and_then(|t| t.values.get(property)) != Some(&Value::Bool(false))
    });
    SwitchPanel {
        thing: thing.to_string(),
        on,
        may_change: view::may_run(&m, who, thing, RunPerm::PropertyWrite, property),
        error: String::new(),
    }
}

async fn sessions_panel(s: &AppState, v: &Viewer, thing: &str) -> SessionsPanel {
    let (rows, error) = match services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        thing,
        "GetSessions",
        json!({}),
    )
    .await
    {
        Ok(t) => (session_rows(s, v, &t.rows), String::new()),
        Err(e) => (Vec::new(), e.message),
    };
    SessionsPanel { rows, error }
}

async fn audit_panel(s: &AppState, v: &Viewer, thing: &str) -> AuditPanel {
    match super::audit::query(s, v, json!({"entity": thing, "limit": AUDIT_ROWS})).await {
        Ok(rows) => AuditPanel {
            rows,
            error: String::new(),
        },
        Err(e) => AuditPanel {
            rows: Vec::new(),
            error: e.message,
        },
    }
}

/// `GET /devices/{thing}`.
pub async fn page(State(s): State<AppState>, v: Viewer, Path(thing): Path<String>) -> Response {
    if let Err(e) = ensure_visible(&s, &v, &thing) {
        return view::error(&v, &e);
    }
    let facts = {
        let m = s.platform.model();
        let who = &v.ctx.who;
        // Checked again under this lock: the Thing may have been deleted since.
        let Some(t) = m
            .things
            .get(&thing)
            .filter(|_| m.is_visible(who, EntityKind::Thing, &thing))
        else {
            drop(m);
            return view::error(&v, &ApiError::entity_not_found(&thing));
        };
        let readable = |p: &str| view::may_run(&m, who, &thing, RunPerm::PropertyRead, p);
        Facts {
            thing: thing.clone(),
            description: t.description.clone(),
            template: t.template.clone(),
            tags: t.tags.clone(),
            connected: readable("isConnected")
                .then(|| t.values.get("isConnected") == Some(&Value::Bool(true))),
            last_connection: if readable("lastConnection") {
                datetime(t.values.get("lastConnection").and_then(Value::as_i64))
            } else {
                String::new()
            },
            remote_accessible: m.thing_property(t, "endpoints").is_some(),
            may_manage_access: m
                .check_design(
                    who,
                    EntityKind::Thing,
                    &thing,
                    crate::security::DesignPerm::Read,
                )
                .is_ok(),
            access_link: format!("/access?kind=Thing&name={}", thing_path(&thing)),
        }
    };
    let page = DevicePage {
        frame: Frame::new(&v, thing.clone(), "devices"),
        switch: switch_panel(&s, &v, &thing),
        endpoints: endpoints_panel(&s, &v, &thing).await,
        sessions: sessions_panel(&s, &v, &thing).await,
        audit: audit_panel(&s, &v, &thing).await,
        facts,
    };
    page_html(&page)
}

/// `GET /devices/{thing}/sessions`: the sessions panel alone (it refreshes itself).
pub async fn sessions(State(s): State<AppState>, v: Viewer, Path(thing): Path<String>) -> Response {
    if let Err(e) = ensure_visible(&s, &v, &thing) {
        return fragment_error(&e);
    }
    page_html(&sessions_panel(&s, &v, &thing).await)
}

/// Writes the endpoints through the API's property path and answers the panel (with `notice`),
/// or the panel with the service's error and the submitted values kept.
async fn write_endpoints(
    s: &AppState,
    v: &Viewer,
    thing: &str,
    rows: Vec<Endpoint>,
    form: EndpointForm,
    notice: String,
) -> Response {
    let mut values = Map::new();
    values.insert("endpoints".into(), endpoints::to_value(&rows));
    let result = things::write_properties(&s.platform, &v.ctx, thing, values).await;
    let mut panel = endpoints_panel(s, v, thing).await;
    match result {
        Ok(_) => {
            panel.notice = notice;
            page_html(&panel)
        }
        Err(e) => {
            panel.error = e.message.clone();
            panel.form = form;
            with_status(e.status, page_html(&panel))
        }
    }
}

async fn invalid(
    s: &AppState,
    v: &Viewer,
    thing: &str,
    form: EndpointForm,
    error: String,
) -> Response {
    let mut panel = endpoints_panel(s, v, thing).await;
    panel.error = error;
    panel.form = form;
    with_status(StatusCode::UNPROCESSABLE_ENTITY, page_html(&panel))
}

/// `POST /devices/{thing}/endpoints`: adds an endpoint.
pub async fn add_endpoint(
    State(s): State<AppState>,
    v: Viewer,
    Path(thing): Path<String>,
    Form(form): Form<EndpointForm>,
) -> Response {
    let mut rows = match read_endpoints(&s, &v, &thing) {
        Ok(rows) => rows,
        Err(e) => return fragment_error(&e),
    };
    let endpoint = match endpoints::validate(&form, &rows, None) {
        Ok(e) => e,
        Err(why) => return invalid(&s, &v, &thing, form, why).await,
    };
    let notice = format!("endpoint {} added", endpoint.name);
    rows.push(endpoint);
    write_endpoints(&s, &v, &thing, rows, form, notice).await
}

/// `POST /devices/{thing}/endpoints/edit` (`original` names the endpoint being changed).
pub async fn edit_endpoint(
    State(s): State<AppState>,
    v: Viewer,
    Path(thing): Path<String>,
    Form(form): Form<EndpointForm>,
) -> Response {
    let mut rows = match read_endpoints(&s, &v, &thing) {
        Ok(rows) => rows,
        Err(e) => return fragment_error(&e),
    };
    let original = form.original.clone();
    let Some(at) = rows.iter().position(|r| r.name == original) else {
        return invalid(
            &s,
            &v,
            &thing,
            EndpointForm::default(),
            format!("Thing '{thing}' has no endpoint '{original}' (any more)"),
        )
        .await;
    };
    let endpoint = match endpoints::validate(&form, &rows, Some(&original)) {
        Ok(e) => e,
        Err(why) => {
            let mut panel = endpoints_panel(&s, &v, &thing).await;
            panel.error = why;
            if let Some(row) = panel.rows.iter_mut().find(|r| r.e.name == original) {
                row.edit = form;
                row.open = true;
            }
            return with_status(StatusCode::UNPROCESSABLE_ENTITY, page_html(&panel));
        }
    };
    let notice = format!("endpoint {} saved", endpoint.name);
    rows[at] = endpoint;
    write_endpoints(&s, &v, &thing, rows, EndpointForm::default(), notice).await
}

#[derive(Deserialize)]
pub struct NameForm {
    name: String,
}

/// `POST /devices/{thing}/endpoints/remove`.
pub async fn remove_endpoint(
    State(s): State<AppState>,
    v: Viewer,
    Path(thing): Path<String>,
    Form(form): Form<NameForm>,
) -> Response {
    let mut rows = match read_endpoints(&s, &v, &thing) {
        Ok(rows) => rows,
        Err(e) => return fragment_error(&e),
    };
    let before = rows.len();
    rows.retain(|r| r.name != form.name);
    if rows.len() == before {
        return invalid(
            &s,
            &v,
            &thing,
            EndpointForm::default(),
            format!("Thing '{thing}' has no endpoint '{}' (any more)", form.name),
        )
        .await;
    }
    let notice = format!("endpoint {} removed", form.name);
    write_endpoints(&s, &v, &thing, rows, EndpointForm::default(), notice).await
}

#[derive(Deserialize)]
pub struct SwitchForm {
    enabled: String,
}

/// `POST /devices/{thing}/switch`: the device's remote access switch (`remoteAccessEnabled`).
pub async fn switch(
    State(s): State<AppState>,
    v: Viewer,
    Path(thing): Path<String>,
    Form(form): Form<SwitchForm>,
) -> Response {
    if let Err(e) = ensure_visible(&s, &v, &thing) {
        return fragment_error(&e);
    }
    let on = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return fragment_error(&ApiError::bad_request(format!(
                "enabled must be true or false, not '{}'",
                crate::model::names::printable(other)
            )))
        }
    };
    let mut values = Map::new();
    values.insert(crate::web::REMOTE_ACCESS_ENABLED.into(), Value::Bool(on));
    let result = things::write_properties(&s.platform, &v.ctx, &thing, values).await;
    let mut panel = switch_panel(&s, &v, &thing);
    match result {
        Ok(_) => page_html(&panel),
        Err(e) => {
            panel.error = e.message.clone();
            with_status(e.status, page_html(&panel))
        }
    }
}

#[derive(Deserialize)]
pub struct ConnectForm {
    endpoint: String,
}

/// The origin the browser used, for the client lines (`--url`).
fn origin(s: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:8080");
    format!("{}://{host}", if s.tls { "https" } else { "http" })
}

/// A shell word, quoted when it holds anything but safe characters.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=%+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `POST /devices/{thing}/connect`: starts a session (`StartSession`, as the viewer) and shows
/// the lines that attach the Remote Access Client to it.
pub async fn connect(
    State(s): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    Path(thing): Path<String>,
    Form(form): Form<ConnectForm>,
) -> Response {
    let started = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &thing,
        "StartSession",
        json!({"remoteEndpoint": form.endpoint}),
    )
    .await;
    let row = match started {
        Ok(t) => t
            .rows
            .into_iter()
            .next()
            .map(Value::Object)
            .unwrap_or(Value::Null),
        Err(e) => return fragment_error(&e),
    };
    let text = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let id = text("sessionId");
    let protocol = read_endpoints(&s, &v, &thing)
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.name == form.endpoint))
        .map(|e| e.protocol)
        .unwrap_or_default();
    let (may_end, may_attach) = {
        let m = s.platform.model();
        (
            view::may_invoke(&m, &v.ctx.who, &thing, "EndSession"),
            view::may_invoke(&m, &v.ctx.who, &thing, "AttachSession"),
        )
    };
    let mut base = format!(
        "thingport --url {} connect {} {}",
        shell_quote(&origin(&s, &headers)),
        shell_quote(&thing),
        shell_quote(&form.endpoint)
    );
    if may_attach {
        base.push_str(&format!(" --session {id}"));
    }
    let mut commands = vec![(
        "cmd-local".to_string(),
        "Listen on a local port (then point your client at the address it prints)".to_string(),
        format!("{base} --local 127.0.0.1:0"),
    )];
    if protocol.eq_ignore_ascii_case("SSH") {
        commands.push((
            "cmd-ssh".to_string(),
            "Or straight through OpenSSH".to_string(),
            format!(
                "ssh -o {} USER@{}",
                shell_quote(&format!("ProxyCommand={base} --stdio")),
                shell_quote(&thing)
            ),
        ));
    }
    page_html(&ConnectResult {
        thing: thing.clone(),
        endpoint: form.endpoint,
        session_id: id,
        status: text("status"),
        expires: datetime(row.get("credentialExpires").and_then(Value::as_i64)),
        commands,
        may_end,
        may_attach,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_quote("gw-1"), "gw-1");
        assert_eq!(
            shell_quote("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shell_quote("my gateway"), "'my gateway'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote(""), "''");
    }
}
