//! The operator web console (SPEC §10), served at `/` on the API's listener.
//!
//! Server-rendered pages: askama templates (`server/templates/`) compiled into the binary, and a
//! few embedded static files (`server/static/`). Every handler acts as the signed-in user through
//! the same service functions as the REST API, so a page shows and does exactly what the API
//! would allow that user. It is not an API: scripts use `/Thingworx`.

mod access;
mod admin;
mod audit;
mod console;
mod credentials;
mod device;
mod devices;
mod endpoints;
mod login;
mod servers;
mod session;
mod sessions;
mod statics;
mod view;

use crate::api::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use session::Viewer;
pub use view::{page_html, ErrorPage};

/// The device's own remote access switch (RAE's `RemoteAccessible` property).
pub const REMOTE_ACCESS_ENABLED: &str = "remoteAccessEnabled";

/// The console's Content-Security-Policy: nothing inline, nothing from elsewhere, no framing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's extension package import, which takes bodies up to `--max-upload-bytes` like
/// the API's uploader.
pub const UPLOAD_PATH: &str = "/admin/extensions";

/// The console's routes (the API's middleware bounds and counts them too).
pub fn router(max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/static/{file}", get(statics::file))
        .route("/static/vendor/{*path}", get(statics::vendor))
        .route("/devices", get(devices::page))
        .route("/devices/rows", get(devices::rows))
        .route("/devices/{thing}", get(device::page))
        .route("/devices/{thing}/endpoints", post(device::add_endpoint))
        .route(
            "/devices/{thing}/endpoints/edit",
            post(device::edit_endpoint),
        )
        .route(
            "/devices/{thing}/endpoints/remove",
            post(device::remove_endpoint),
        )
        .route("/devices/{thing}/connect", post(device::connect))
        .route(
            "/devices/{thing}/endpoints/credentials",
            post(credentials::save),
        )
        .route(
            "/devices/{thing}/endpoints/keypair",
            post(credentials::keypair),
        )
        .route("/devices/{thing}/console/{endpoint}", get(console::page))
        .route(
            "/devices/{thing}/console/{endpoint}/start",
            post(console::start),
        )
        .route(
            "/devices/{thing}/console/{endpoint}/trust",
            post(console::trust),
        )
        .route(
            "/devices/{thing}/console/{endpoint}/session",
            get(console::session),
        )
        .route("/devices/{thing}/sessions", get(device::sessions))
        .route("/devices/{thing}/switch", post(device::switch))
        .route("/sessions", get(sessions::page))
        .route("/sessions/end", post(sessions::end))
        .route("/servers", get(servers::page))
        .route("/servers/enable", post(servers::enable))
        .route("/access", get(access::page))
        .route("/access/grant", post(access::grant))
        .route("/access/revoke", post(access::revoke))
        .route("/access/switch", post(access::switch))
        .route("/audit", get(audit::page))
        .route("/admin", get(admin::page))
        .route("/admin/users", post(admin::create_user))
        .route("/admin/groups", post(admin::create_group))
        .route("/admin/groups/members", post(admin::members))
        .route("/admin/keys", post(admin::create_key))
        .route("/admin/keys/delete", post(admin::delete_key))
        .route(
            UPLOAD_PATH,
            post(admin::import_extension)
                .layer(axum::extract::DefaultBodyLimit::max(max_upload_bytes)),
        )
        .route("/admin/extensions/delete", post(admin::delete_extension))
        .layer(axum::middleware::from_fn(security_headers))
}

/// `/`: the device list (or the sign-in page, by way of the list's redirect).
async fn root() -> axum::response::Redirect {
    axum::response::Redirect::to("/devices")
}

/// Headers on every console answer: the CSP, no framing, no sniffing, no caching of data.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    // A page may narrow or widen `connect-src` (the console page names the GASes); the rest
    // of the policy is the same everywhere.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
