//! The REST API (ThingWorx-compatible) over the platform.
//!
//! [`router`] builds the axum `Router` and, from the same route table, the OpenAPI document
//! served at `/Thingworx/openapi.json`. Middleware bounds every request in size and time,
//! turns a panic into a JSON 500, and counts requests for `/metrics`.

pub mod auth;
mod body;
pub mod extensions;
mod handlers;
mod openapi;
mod websocket;

use crate::error::ApiError;
use crate::metrics::{Metrics, RequestLabels};
use crate::platform::Platform;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub platform: Arc<Platform>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    pub request_timeout: Duration,
    pub tls: bool,
    openapi: Arc<serde_json::Value>,
}

impl AppState {
    pub fn new(
        platform: Arc<Platform>,
        max_body_bytes: usize,
        max_upload_bytes: usize,
        request_timeout: Duration,
        tls: bool,
    ) -> Self {
        Self {
            platform,
            metrics: Arc::new(Metrics::default()),
            max_body_bytes,
            max_upload_bytes,
            request_timeout,
            tls,
            openapi: Arc::new(openapi::document()),
        }
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/Thingworx/openapi.json", get(openapi_json))
        .route("/Thingworx/Login", post(auth::login))
        .route("/Thingworx/Logout", post(auth::logout))
        .route("/Thingworx/AuditLog", get(handlers::audit_log))
        .route(
            UPLOAD_PATH,
            post(extensions::upload)
                .layer(axum::extract::DefaultBodyLimit::max(state.max_upload_bytes)),
        )
        .route("/Thingworx/WS", get(websocket::upgrade))
        .route("/Thingworx/WS/{*rest}", get(websocket::upgrade))
        .route("/Thingworx/{collection}", get(handlers::list))
        .route("/Thingworx/{collection}/{name}", get(handlers::entity))
        .route(
            "/Thingworx/{collection}/{name}/Services/{service}",
            post(handlers::invoke),
        )
        .route(
            "/Thingworx/Things/{thing}/Properties",
            get(handlers::properties),
        )
        .route(
            "/Thingworx/Things/{thing}/Properties/{property}",
            get(handlers::property).put(handlers::put_property),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::web::router(state.max_upload_bytes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    api.layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

/// The extension package upload route, which takes larger bodies (`--max-upload-bytes`).
const UPLOAD_PATH: &str = "/Thingworx/ExtensionPackageUploader";

/// Bounds each request in size (by `Content-Length`, before reading) and time, and counts it.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path = req.uri().path().to_string();
    let limit = if path == UPLOAD_PATH || path == crate::web::UPLOAD_PATH {
        s.max_upload_bytes
    } else {
        s.max_body_bytes
    };
    let resp = if declared.is_some_and(|n| n > limit as u64) {
        body::too_large(limit).into_response()
    } else {
        match tokio::time::timeout(s.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(%path, timeout = ?s.request_timeout, "request timed out");
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request timed out after {:?}", s.request_timeout),
                )
                .into_response()
            }
        }
    };
    let elapsed = started.elapsed();
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ?elapsed, "request");
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    s.metrics.latency.observe(elapsed.as_secs_f64());
    resp
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(
        "request handler panicked",
        &std::io::Error::other(msg.to_string()),
    )
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such API route: see /Thingworx/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: see /Thingworx/openapi.json",
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let (things, users) = {
        let m = s.platform.model();
        (m.things.len() as i64, m.users.len() as i64)
    };
    let text = s.metrics.render(&[
        ("things", "Things in the model", things),
        ("users", "users in the model", users),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi_json(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json((*s.openapi).clone())
}
