//! Sign-in and sign-out.
//!
//! Sign-in is a plain form post (there is no session yet, so no XSRF header to ask for); it is
//! refused when the browser says it comes from another site (`Origin` or `Sec-Fetch-Site`), so
//! no other site can sign a visitor in. The password goes through the bounded hashing pool, and
//! failures are audited like the API's. Each sign-in gets a fresh session id.

use super::session::{local_path, Viewer, REDIRECT_HEADER};
use super::view::{page_html, with_status, Frame};
use crate::api::auth::{self, Peer};
use crate::api::AppState;
use crate::audit::Category;
use crate::model::entities::EntityKind;
use crate::model::names::printable;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    frame: Frame,
    next: String,
    user: String,
    error: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /login`: the form (or straight on, when already signed in).
pub async fn page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    if let Some(Ok(_)) = auth::cookie_principal(&s.platform, &axum::http::Method::GET, &headers) {
        return Redirect::to(&next).into_response();
    }
    page_html(&LoginPage {
        frame: Frame::anonymous("Sign in"),
        next,
        user: String::new(),
        error: String::new(),
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

/// Whether the browser says the form was posted from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        host,
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            origin.split_once("://").map(|(_, authority)| authority) != Some(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `POST /login`: checks the password and opens a session.
pub async fn submit(
    State(s): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let again = |status: StatusCode, error: &str, user: &str| {
        with_status(
            status,
            page_html(&LoginPage {
                frame: Frame::anonymous("Sign in"),
                next: next.clone(),
                user: user.to_string(),
                error: error.to_string(),
            }),
        )
    };
    if cross_site(&headers) {
        return again(
            StatusCode::FORBIDDEN,
            "sign-in refused: the form was posted from another site",
            "",
        );
    }
    let user = form.user.trim();
    if user.is_empty()
        || user.len() > 256
        || form.password.len() > crate::security::secrets::MAX_PASSWORD_LEN
    {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "enter a user name (up to 256 characters) and a password",
            "",
        );
    }
    let source_ip = peer
        .map(|Extension(p)| p.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let p = &s.platform;
    let presented = auth::session_cookie(&headers);
    match auth::sign_in(
        p,
        presented,
        user,
        &form.password,
        source_ip,
        " (web console)",
    )
    .await
    {
        Ok((_, token)) => {
            let mut r = Redirect::to(&next).into_response();
            let cookie = auth::session_set_cookie(&token, p.sessions().limits().absolute, s.tls);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => again(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
            &printable(user),
        ),
        // The hashing pool is saturated (503) or another failure: its own text.
        Err(e) => again(e.status, &e.message, &printable(user)),
    }
}

/// `POST /logout`: closes the session (the XSRF rule applies: it changes state).
pub async fn logout(State(s): State<AppState>, v: Viewer, headers: HeaderMap) -> Response {
    if let Some(token) = auth::session_cookie(&headers) {
        s.platform.close_session(token);
    }
    s.platform
        .audit(v.ctx.audit(
            Category::Authentication,
            EntityKind::User,
            &v.ctx.who.name,
            "browser session closed (web console)",
        ))
        .await;
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&auth::session_clear_cookie(s.tls)) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(REDIRECT_HEADER, HeaderValue::from_static("/login"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn sign_in_from_another_site_is_refused() {
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
        ])));
    }
}
