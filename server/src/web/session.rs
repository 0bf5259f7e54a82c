//! Who is looking at a page: the signed-in user of the session cookie, or a way to sign in.
//!
//! The rule is the API's own ([`crate::api::auth::cookie_principal`]): an unknown or expired
//! session is refused, and a state-changing request without the XSRF header is refused 403. A
//! page load without a session is redirected to the sign-in page (and back afterwards); a
//! request of the page's script gets the refusal as an HTML fragment to show in place.

use super::view;
use crate::api::auth::{self, Peer};
use crate::api::AppState;
use crate::platform::Ctx;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// The signed-in user of a console request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub ctx: Ctx,
    /// The request came from the page's script (it sends the XSRF header on every request):
    /// answer a fragment, not a whole page.
    pub xhr: bool,
}

/// The header the page's script sets when the answer must be followed by a full navigation.
pub const REDIRECT_HEADER: &str = "x-thingport-redirect";

/// `next` as a safe local path (no scheme, no `//host`, no backslash), or `/devices`.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/devices".to_string(),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let xhr = auth::has_xsrf_header(&parts.headers);
        let refusal = match auth::cookie_principal(&state.platform, &parts.method, &parts.headers) {
            Some(Ok(who)) => {
                let source_ip = parts
                    .extensions
                    .get::<Peer>()
                    .map(|p| p.0.ip().to_string())
                    .unwrap_or_else(|| "unknown".into());
                return Ok(Viewer {
                    ctx: Ctx { who, source_ip },
                    xhr,
                });
            }
            Some(Err(e)) => e,
            None => crate::error::ApiError::unauthorized("sign in to use the console"),
        };
        if refusal.status != StatusCode::UNAUTHORIZED {
            // The XSRF rule: answered in place, with the API's own text.
            return Err(view::fragment_error(&refusal));
        }
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/devices");
        let target = if auth::is_safe(&parts.method) && !xhr {
            here.to_string()
        } else {
            // A write or a refresh from a page whose session ended: back to that page afterwards.
            parts
                .headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
                .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
                .unwrap_or_else(|| "/devices".into())
        };
        let login = format!("/login?next={}", encode_query(&local_path(Some(&target))));
        let mut r = if xhr || !auth::is_safe(&parts.method) {
            let mut r = view::fragment_error(&refusal);
            if let Ok(v) = HeaderValue::from_str(&login) {
                r.headers_mut().insert(REDIRECT_HEADER, v);
            }
            r
        } else {
            Redirect::to(&login).into_response()
        };
        // A dead cookie is removed so the browser stops sending it.
        if auth::session_cookie(&parts.headers).is_some() {
            if let Ok(v) = HeaderValue::from_str(&auth::session_clear_cookie(state.tls)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        Err(r)
    }
}

/// Percent-encodes one path segment (`/` included), e.g. a Thing's name in `/devices/NAME`.
pub fn encode_segment(s: &str) -> String {
    encode_query(s).replace('/', "%2F")
}

/// Percent-encodes a query parameter value (everything but unreserved characters and `/`).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/devices/gw-1")), "/devices/gw-1");
        assert_eq!(
            local_path(Some("/audit?category=SECURITY")),
            "/audit?category=SECURITY"
        );
        for hostile in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "/a\r\nSet-Cookie: x=y",
        ] {
            assert_eq!(local_path(Some(hostile)), "/devices", "{hostile:?}");
        }
        assert_eq!(local_path(None), "/devices");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("/devices?q=a b&x"), "/devices%3Fq%3Da%20b%26x");
        assert_eq!(encode_query("/plain-path_1.~"), "/plain-path_1.~");
    }
}
