//! The console's static files, embedded in the binary.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console.js"),
    ),
    (
        "console-session.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console-session.js"),
    ),
    (
        "console-term.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console-term.js"),
    ),
    (
        "console-vnc.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/console-vnc.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../static/icon.svg"),
    ),
];

/// `GET /static/{file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    let Some((_, kind, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut r = (*bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Revalidated each time (the files change with the binary); no data in them.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
