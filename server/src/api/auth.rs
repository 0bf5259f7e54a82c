//! Authentication of API requests: application keys, HTTP Basic, and browser sessions with the
//! XSRF header rule for cookie-authenticated writes.

use super::AppState;
use crate::audit::Category;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::model::names::printable;
use crate::platform::{Ctx, Platform};
use crate::security::Principal;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::net::SocketAddr;
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "thingport_session";
pub const XSRF_HEADER: &str = "x-xsrf-token";
pub const XSRF_VALUE: &str = "TWX-XSRF-TOKEN-VALUE";
/// Sent by the web console's periodic refreshes: the request does not postpone the session's
/// idle expiry.
pub const REFRESH_HEADER: &str = "x-thingport-refresh";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Ctx);

/// The peer address, inserted by the connection handler.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

fn peer_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The value of the session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// Decodes `Authorization: Basic ...` into user and password.
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ApiError>> {
    let v = headers.get(header::AUTHORIZATION)?;
    let bad = || {
        ApiError::unauthorized(
            "malformed Authorization header: expected Basic base64(user:password)",
        )
    };
    let v = match v.to_str() {
        Ok(v) => v,
        Err(_) => return Some(Err(bad())),
    };
    let Some(b64) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    else {
        return Some(Err(ApiError::unauthorized(
            "unsupported Authorization scheme: use Basic or an appKey header",
        )));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(match decoded.as_deref().and_then(|s| s.split_once(':')) {
        Some((u, p))
            if !u.is_empty()
                && u.len() <= 256
                && p.len() <= crate::security::secrets::MAX_PASSWORD_LEN =>
        {
            Ok((u.to_string(), p.to_string()))
        }
        _ => Err(bad()),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let p = &state.platform;
        let source_ip = peer_ip(parts);
        let failed = |who: &str, why: &str| {
            let w = crate::store::Write::Audit {
                principal: who.to_string(),
                category: Category::Authentication,
                entity: format!("{}:{}", EntityKind::User, who),
                message: format!("authentication failed: {why}"),
                source_ip: source_ip.clone(),
            };
            async move { p.audit(w).await }
        };
        if let Some(key) = parts.headers.get("appkey") {
            let key = key.to_str().unwrap_or_default();
            return match p.authenticate_key(key) {
                Ok(who) => Ok(Caller(Ctx { who, source_ip })),
                Err(e) => {
                    failed("anonymous", &e.message).await;
                    Err(e.into_response())
                }
            };
        }
        if let Some(creds) = basic_credentials(&parts.headers) {
            let (user, password) = creds.map_err(IntoResponse::into_response)?;
            return match p.authenticate_password(&user, &password).await {
                Ok(who) => Ok(Caller(Ctx { who, source_ip })),
                Err(e) => {
                    failed(&printable(&user), "wrong user name or password").await;
                    Err(with_challenge(e))
                }
            };
        }
        if let Some(who) = cookie_principal(p, &parts.method, &parts.headers) {
            return match who {
                Ok(who) => Ok(Caller(Ctx { who, source_ip })),
                Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(with_challenge(e)),
                Err(e) => Err(e.into_response()),
            };
        }
        Err(with_challenge(ApiError::unauthorized(
            "authentication required: send an appKey header or HTTP Basic credentials",
        )))
    }
}

/// The one rule for cookie-authenticated requests, shared by the API and the web console: `None`
/// without a session cookie; the session's user; `401` for an expired or unknown session; `403`
/// for a state-changing request without `X-XSRF-TOKEN: TWX-XSRF-TOKEN-VALUE`.
pub fn cookie_principal(
    p: &Platform,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<Arc<Principal>, ApiError>> {
    let token = session_cookie(headers)?;
    // The console's periodic refreshes do not count as use (the idle expiry still comes).
    let touch = !headers.contains_key(REFRESH_HEADER);
    let Some(who) = p.session_user_touching(token, touch) else {
        return Some(Err(ApiError::unauthorized(
            "session expired or unknown: sign in again",
        )));
    };
    if !is_safe(method) && !has_xsrf_header(headers) {
        return Some(Err(ApiError::forbidden(format!(
            "cookie-authenticated requests that change state must send the header X-XSRF-TOKEN: {XSRF_VALUE}"
        ))));
    }
    Some(Ok(who))
}

/// GET, HEAD and OPTIONS change nothing.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request carries the XSRF header with its one accepted value.
pub fn has_xsrf_header(headers: &HeaderMap) -> bool {
    headers.get(XSRF_HEADER).map(HeaderValue::as_bytes) == Some(XSRF_VALUE.as_bytes())
}

/// The `Set-Cookie` value that opens a browser session (`Secure` under TLS).
pub fn session_set_cookie(token: &str, max_age: std::time::Duration, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn session_clear_cookie(tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

fn with_challenge(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Thingport\", charset=\"UTF-8\""),
    );
    r
}

/// `POST /Thingworx/Login`: authenticates with Basic credentials and opens a browser session.
pub async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    parts: Parts,
) -> Response {
    let source_ip = peer_ip(&parts);
    let Some(creds) = basic_credentials(&parts.headers) else {
        return with_challenge(ApiError::unauthorized("log in with HTTP Basic credentials"));
    };
    let (user, password) = match creds {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let presented = session_cookie(&parts.headers);
    match sign_in(&state.platform, presented, &user, &password, source_ip, "").await {
        Ok((who, token)) => {
            let cookie = session_set_cookie(
                &token,
                state.platform.sessions().limits().absolute,
                state.tls,
            );
            let mut r = (
                StatusCode::OK,
                axum::Json(serde_json::json!({"user": who.name})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => with_challenge(e),
    }
}

/// The one sign-in path of `POST /Thingworx/Login` and the web console: checks the password
/// (on the bounded hashing pool), closes a session presented with it (no fixation), opens a
/// fresh one and audits it; a failure is audited too. `via` is appended to the audit text
/// (e.g. " (web console)"). Answers the user and the new session's id.
pub async fn sign_in(
    p: &Platform,
    presented: Option<&str>,
    user: &str,
    password: &str,
    source_ip: String,
    via: &str,
) -> Result<(Arc<Principal>, String), ApiError> {
    match p.authenticate_password(user, password).await {
        Ok(who) => {
            if let Some(old) = presented {
                p.close_session(old);
            }
            let token = p.open_session(&who.name);
            let ctx = Ctx {
                who: who.clone(),
                source_ip,
            };
            p.audit(ctx.audit(
                Category::Authentication,
                EntityKind::User,
                &who.name,
                format!("browser session opened{via}"),
            ))
            .await;
            Ok((who, token))
        }
        Err(e) => {
            let why = if e.status == StatusCode::UNAUTHORIZED {
                "wrong user name or password".to_string()
            } else {
                e.message.clone()
            };
            p.audit(crate::store::Write::Audit {
                principal: printable(user),
                category: Category::Authentication,
                entity: format!("User:{}", printable(user)),
                message: format!("authentication failed: {why}{via}"),
                source_ip,
            })
            .await;
            Err(e)
        }
    }
}

/// `POST /Thingworx/Logout`: ends the browser session.
pub async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = session_cookie(&headers) {
        state.platform.close_session(token);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session_clear_cookie(state.tls)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xsrf_header_must_carry_its_one_value() {
        let mut h = HeaderMap::new();
        assert!(!has_xsrf_header(&h));
        h.insert(
            XSRF_HEADER,
            HeaderValue::from_static("twx-xsrf-token-value"),
        );
        assert!(!has_xsrf_header(&h), "the value is compared exactly");
        h.insert(XSRF_HEADER, HeaderValue::from_static(XSRF_VALUE));
        assert!(has_xsrf_header(&h));
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(is_safe(&m));
        }
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!is_safe(&m), "{m} changes state");
        }
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_under_tls() {
        let c = session_set_cookie("abc", std::time::Duration::from_secs(60), false);
        assert_eq!(
            c,
            "thingport_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(
            session_set_cookie("abc", std::time::Duration::from_secs(60), true)
                .ends_with("; Secure")
        );
        assert!(session_clear_cookie(true).contains("Max-Age=0"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; thingport_session=tok; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("tok"));
    }
}
