//! `GET /Thingworx/WS` (and paths under it): the WebSocket upgrade for extensions' routes.
//!
//! The caller authenticates like any API caller, but only with an `appKey` header or HTTP Basic:
//! a browser's session cookie is refused here, so a web page cannot open a control channel with
//! a logged-in user's cookie. The first of the offered subprotocols that a loaded extension
//! serves on the path is chosen; none is a 400 naming the supported ones.

use super::auth::Caller;
use super::AppState;
use crate::error::ApiError;
use crate::extensions::connections::{MAX_CONNECTIONS, READ_BUFFER};
use crate::extensions::registry::RouteRefusal;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub async fn upgrade(State(s): State<AppState>, mut parts: Parts) -> Response {
    let path = parts.uri.path().to_string();
    let Some(ext) = s.platform.extensions().cloned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the extension system is not running",
        )
        .into_response();
    };
    if ext.connections().closing() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
        .into_response();
    }
    if ext.connections().count() >= MAX_CONNECTIONS {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the server holds {MAX_CONNECTIONS} WebSocket connections, its limit: try again later"),
        )
        .into_response();
    }
    // Devices send no Origin; a browser always does. Refusing it stops a web page from opening a
    // control channel with credentials the browser holds (cached Basic credentials included).
    if parts.headers.contains_key(header::ORIGIN) {
        return ApiError::forbidden(
            "cross-origin WebSocket upgrades are refused: the control channel is for devices, which send no Origin header",
        )
        .into_response();
    }
    if !parts.headers.contains_key("appkey") && !parts.headers.contains_key(header::AUTHORIZATION) {
        return ApiError::unauthorized(
            "authentication required: send an appKey header (or HTTP Basic credentials) with the WebSocket upgrade",
        )
        .into_response();
    }
    let caller = match Caller::from_request_parts(&mut parts, &s).await {
        Ok(c) => c.0,
        Err(r) => return r,
    };
    let offered: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .take(16)
        .collect();
    let offered_refs: Vec<&str> = offered.iter().map(String::as_str).collect();
    let target = match ext.route(&path, &offered_refs) {
        Ok(t) => t,
        Err(RouteRefusal::NoRoute) => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no extension serves WebSocket connections on {path}: is ConnectionServicesExtension imported?"),
            )
            .into_response()
        }
        Err(RouteRefusal::Subprotocols(supported)) => {
            return ApiError::bad_request(format!(
                "no supported WebSocket subprotocol offered: send Sec-WebSocket-Protocol with one of {}",
                supported.join(", ")
            ))
            .into_response()
        }
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::bad_request(format!(
                "not a valid WebSocket upgrade: {}",
                rejection.body_text()
            ))
            .into_response()
        }
    };
    let Ok(protocol) = HeaderValue::from_str(&target.subprotocol) else {
        return ApiError::bad_request("invalid subprotocol").into_response();
    };
    let max = target.route.max_message_bytes as usize;
    let principal = thingport_sdk::protocol::Caller {
        name: caller.who.name.clone(),
        admin: caller.who.admin,
        source_ip: caller.source_ip.clone(),
    };
    let hub = ext.connections().clone();
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max);
    upgrade.set_selected_protocol(protocol);
    upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| hub.serve(socket, target, principal))
}
