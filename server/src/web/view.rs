//! What every page shares: the frame (title, navigation, the signed-in user and what they may
//! use), rendering, and errors shown with the API's own text.

use super::session::Viewer;
use crate::error::ApiError;
use crate::model::entities::EntityKind;
use crate::model::Model;
use crate::security::{DesignPerm, Principal, RunPerm};
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// The navigation bar's entries: (key, label, path).
pub const NAV: [(&str, &str, &str); 5] = [
    ("devices", "Devices", "/devices"),
    ("sessions", "Sessions", "/sessions"),
    ("servers", "Global Access Servers", "/servers"),
    ("access", "Access", "/access"),
    ("audit", "Audit", "/audit"),
];

/// The page frame: title, navigation, who is signed in.
#[derive(Debug, Clone)]
pub struct Frame {
    pub title: String,
    /// The navigation entry to mark current.
    pub active: &'static str,
    /// Empty on the sign-in page.
    pub user: String,
    pub admin: bool,
}

impl Frame {
    pub fn new(v: &Viewer, title: impl Into<String>, active: &'static str) -> Frame {
        Frame {
            title: title.into(),
            active,
            user: v.ctx.who.name.clone(),
            admin: v.ctx.who.admin,
        }
    }

    /// The frame of a page shown before sign-in.
    pub fn anonymous(title: impl Into<String>) -> Frame {
        Frame {
            title: title.into(),
            active: "",
            user: String::new(),
            admin: false,
        }
    }

    pub fn nav(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &NAV
    }
}

/// A whole page with an error (404 for what is missing or not visible, 403, ...).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub frame: Frame,
    pub status: u16,
    pub message: String,
}

impl ErrorPage {
    pub fn response(v: &Viewer, e: &ApiError) -> Response {
        let page = ErrorPage {
            frame: Frame::new(v, format!("{} {}", e.status.as_u16(), reason(e.status)), ""),
            status: e.status.as_u16(),
            message: e.message.clone(),
        };
        with_status(e.status, page_html(&page))
    }
}

fn reason(s: StatusCode) -> &'static str {
    s.canonical_reason().unwrap_or("Error")
}

/// An error shown in place (a fragment the page's script swaps in).
#[derive(Template)]
#[template(path = "_error_partial.html")]
pub struct ErrorFragment<'a> {
    pub message: &'a str,
}

/// Renders a template as an HTML answer (a template that fails is an internal error, logged).
pub fn page_html<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            let e = ApiError::internal("failed to render a console page", &e);
            (e.status, Html(format!("<p>{}</p>", e.message))).into_response()
        }
    }
}

pub fn with_status(status: StatusCode, mut r: Response) -> Response {
    *r.status_mut() = status;
    r
}

/// An [`ApiError`] as a fragment with its status.
pub fn fragment_error(e: &ApiError) -> Response {
    with_status(
        e.status,
        page_html(&ErrorFragment {
            message: &e.message,
        }),
    )
}

/// An error for a page load (whole page) or a script request (fragment).
pub fn error(v: &Viewer, e: &ApiError) -> Response {
    if v.xhr {
        fragment_error(e)
    } else {
        ErrorPage::response(v, e)
    }
}

/// Whether `who` may invoke `service` on a Thing (visibility included): what decides if a
/// control is offered. The service checks again when it is called.
pub fn may_invoke(m: &Model, who: &Principal, thing: &str, service: &str) -> bool {
    may_run(m, who, thing, RunPerm::ServiceInvoke, service)
}

/// Whether `who` holds a run-time permission on a Thing (visibility included).
pub fn may_run(m: &Model, who: &Principal, thing: &str, perm: RunPerm, resource: &str) -> bool {
    m.check_runtime(who, EntityKind::Thing, thing, perm, resource)
        .is_ok()
}

/// Whether `who` may start a session on a Thing: StartSession's four checks (SPEC §2).
pub fn may_connect(m: &Model, who: &Principal, thing: &str) -> bool {
    may_invoke(m, who, thing, "StartSession")
        && may_run(m, who, thing, RunPerm::PropertyRead, "endpoints")
        && m.check_design(who, EntityKind::Thing, thing, DesignPerm::Read)
            .is_ok()
}

/// Formats milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC ("" for none).
pub fn datetime(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|m| *m > 0) else {
        return String::new();
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_default()
}
