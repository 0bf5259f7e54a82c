//! The browser consoles' page (SPEC §11): a VNC screen (noVNC) or a terminal (xterm.js) for one
//! endpoint, in the browser, with no client installed.
//!
//! The page only starts the session (`StartConsoleSession`, as the viewer, through the same
//! service path as the REST API) and hands the browser the GAS's console URL and a single-use
//! ticket; the browser then talks to the GAS directly, which is the session's client side. The
//! credentials never reach this page: the GAS claims them from the platform. The page's CSP
//! lets scripts connect to the registered GASes' origins, and nowhere else.

use super::session::encode_segment;
use super::view::{self, page_html, Frame};
use super::Viewer;
use crate::api::AppState;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::security::RunPerm;
use crate::services;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{json, Value};

/// The template of registered GAS Things (RemoteAccessExtension's).
const GAS_TEMPLATE: &str = "GASModel";

/// The protocols a browser console speaks.
pub const CONSOLE_PROTOCOLS: [&str; 3] = ["VNC", "SSH", "TELNET"];

#[derive(Template)]
#[template(path = "console.html")]
struct ConsolePage {
    frame: Frame,
    thing: String,
    endpoint: String,
    protocol: String,
    device_link: String,
    start_path: String,
    trust_path: String,
    /// The viewer may pin a host key the console shows (PropertyWrite on `endpoints`).
    may_trust: bool,
}

/// The protocol of a Thing's endpoint, as the viewer may read it.
fn endpoint_protocol(
    s: &AppState,
    v: &Viewer,
    thing: &str,
    endpoint: &str,
) -> Result<String, ApiError> {
    let t = services::things::read_properties(&s.platform, &v.ctx.who, thing)?;
    let rows = t
        .rows
        .into_iter()
        .next()
        .and_then(|mut r| r.remove("endpoints"))
        .and_then(|e| e.get("rows").cloned())
        .and_then(|r| r.as_array().cloned())
        .unwrap_or_default();
    let row = rows
        .iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(endpoint))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Thing '{thing}' has no endpoint '{endpoint}'"),
            )
        })?;
    let protocol = row
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase();
    if !CONSOLE_PROTOCOLS.contains(&protocol.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "endpoint '{endpoint}' is {}: browser consoles speak VNC, SSH and TELNET",
                if protocol.is_empty() {
                    "of no protocol"
                } else {
                    &protocol
                }
            ),
        ));
    }
    Ok(protocol)
}

/// The WebSocket origins of the registered GASes (`ws://` and `wss://host[:port]`), for the
/// page's CSP.
/// Only well-formed host names and ports are taken: nothing from a GAS's registration can add
/// another directive.
fn gas_origins(s: &AppState) -> Vec<String> {
    let m = s.platform.model();
    let mut out: Vec<String> = m
        .things
        .values()
        // Only the Things of the GAS template: anyone may give a Thing of their own a property
        // of that name.
        .filter(|t| t.template == GAS_TEMPLATE)
        .filter_map(|t| t.values.get("externalHostName").and_then(Value::as_str))
        // The GAS Thing keeps `host[:port]` of its public URL, not the scheme: both are allowed.
        .flat_map(|host| [format!("ws://{host}"), format!("wss://{host}")])
        .filter_map(|url| ws_origin(&url))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `http://h:p/x` → `ws://h:p` (and `https`/`wss` → `wss`), or `None` when it is not a plain URL.
fn ws_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let ok = !authority.is_empty()
        && authority.len() <= 260
        && !authority.contains('@')
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    ok.then(|| format!("{scheme}://{authority}"))
}

/// `GET /devices/{thing}/console/{endpoint}`: the console page (it starts its session itself).
pub async fn page(
    State(s): State<AppState>,
    v: Viewer,
    Path((thing, endpoint)): Path<(String, String)>,
) -> Response {
    let protocol = match endpoint_protocol(&s, &v, &thing, &endpoint) {
        Ok(p) => p,
        Err(e) => return view::error(&v, &e),
    };
    let may_trust = {
        let m = s.platform.model();
        if !view::may_invoke(&m, &v.ctx.who, &thing, "StartConsoleSession") {
            drop(m);
            return view::error(
                &v,
                &ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("Not authorized for ServiceInvoke on StartConsoleSession in {thing}"),
                ),
            );
        }
        view::may_run(&m, &v.ctx.who, &thing, RunPerm::PropertyWrite, "endpoints")
            && view::may_invoke(&m, &v.ctx.who, &thing, "SetEndpointCredentials")
    };
    let base = format!(
        "/devices/{}/console/{}",
        encode_segment(&thing),
        encode_segment(&endpoint)
    );
    let page_protocol = protocol.clone();
    let page = ConsolePage {
        frame: Frame::new(&v, format!("{endpoint} on {thing}"), "devices"),
        device_link: format!("/devices/{}", encode_segment(&thing)),
        start_path: format!("{base}/start"),
        trust_path: format!("{base}/trust"),
        thing,
        endpoint,
        protocol,
        may_trust,
    };
    let mut r = page_html(&page);
    let mut connect = String::from("'self'");
    for o in gas_origins(&s) {
        connect.push(' ');
        connect.push_str(&o);
    }
    let mut csp = super::CSP.replace("connect-src 'self'", &format!("connect-src {connect}"));
    if page_protocol != "VNC" {
        // xterm.js sizes and themes the terminal with <style> elements it creates; scripts
        // stay 'self' only.
        csp = csp.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'");
    }
    if let Ok(value) = HeaderValue::from_str(&csp) {
        r.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    r
}

fn json_error(e: &ApiError) -> Response {
    (e.status, Json(json!({"error": e.message}))).into_response()
}

/// `POST /devices/{thing}/console/{endpoint}/start`: `StartConsoleSession` as the viewer; the
/// answer is what the page's script needs (the GAS's console URL and the ticket), as JSON.
pub async fn start(
    State(s): State<AppState>,
    v: Viewer,
    Path((thing, endpoint)): Path<(String, String)>,
) -> Response {
    let started = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &thing,
        "StartConsoleSession",
        json!({"remoteEndpoint": endpoint}),
    )
    .await;
    let row = match started {
        Ok(t) => t
            .rows
            .into_iter()
            .next()
            .map(Value::Object)
            .unwrap_or(Value::Null),
        Err(e) => return json_error(&e),
    };
    let field = |k: &str| row.get(k).cloned().unwrap_or(Value::Null);
    Json(json!({
        "session": field("sessionId"),
        "consoleUrl": field("consoleUrl"),
        "ticket": field("ticket"),
        "protocol": field("protocol"),
        "expires": field("credentialExpires"),
    }))
    .into_response()
}

#[derive(Deserialize)]
pub struct SessionQuery {
    id: String,
}

/// `GET /devices/{thing}/console/{endpoint}/session?id=ID`: the session's state and termination
/// cause as the platform recorded them (`GetSession` as the viewer), for the page's end message.
pub async fn session(
    State(s): State<AppState>,
    v: Viewer,
    Path((thing, _endpoint)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<SessionQuery>,
) -> Response {
    let got = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &thing,
        "GetSession",
        json!({"sessionId": q.id}),
    )
    .await;
    match got {
        Ok(t) => {
            let row = t
                .rows
                .into_iter()
                .next()
                .map(Value::Object)
                .unwrap_or(Value::Null);
            let field = |k: &str| row.get(k).cloned().unwrap_or(Value::Null);
            Json(json!({
                "status": field("status"),
                "terminationCause": field("terminationCause"),
                "detail": field("detail"),
            }))
            .into_response()
        }
        Err(e) => json_error(&e),
    }
}

#[derive(Deserialize)]
pub struct TrustForm {
    #[serde(rename = "hostKey")]
    host_key: String,
}

/// `POST /devices/{thing}/console/{endpoint}/trust`: pins the host key the console showed
/// (`SetEndpointCredentials` as the viewer: only someone who may edit the endpoint).
pub async fn trust(
    State(s): State<AppState>,
    v: Viewer,
    Path((thing, endpoint)): Path<(String, String)>,
    Form(form): Form<TrustForm>,
) -> Response {
    let set = services::invoke(
        &s.platform,
        &v.ctx,
        EntityKind::Thing,
        &thing,
        "SetEndpointCredentials",
        json!({"endpoint": endpoint, "hostKey": form.host_key}),
    )
    .await;
    match set {
        Ok(t) => {
            let view = t
                .rows
                .into_iter()
                .next()
                .and_then(|mut r| r.remove("result"))
                .unwrap_or(Value::Null);
            Json(json!({"hostKeyFingerprint": view.get("hostKeyFingerprint")})).into_response()
        }
        Err(e) => json_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gas_origins_are_plain_websocket_origins() {
        assert_eq!(
            ws_origin("http://127.0.0.1:9000/x").as_deref(),
            Some("ws://127.0.0.1:9000")
        );
        assert_eq!(
            ws_origin("https://gas.example").as_deref(),
            Some("wss://gas.example")
        );
        assert_eq!(
            ws_origin("wss://[::1]:443").as_deref(),
            Some("wss://[::1]:443")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://a b",
            "http://x;script-src *",
            "http://u@h",
            "javascript:alert(1)",
        ] {
            assert_eq!(ws_origin(bad), None, "{bad}");
        }
    }
}
