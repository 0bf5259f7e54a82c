//! The error a client sees, split from the internal error that caused it.
//!
//! Client-facing text is built deliberately (it names the parameter, the entity, the permission);
//! internal failures (storage, I/O) are logged once with their full chain and answered with a
//! generic message and a request-scoped id, so no SQL text, path or secret reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering};

/// An error answered to an API client: a status and a message that is safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

static INTERNAL_ERRORS: AtomicU64 = AtomicU64::new(0);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// `404 Entity Not Found : [name]`, also used for what the caller may not see.
    pub fn entity_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "Entity Not Found : [{}]",
                crate::model::names::printable(name)
            ),
        )
    }
    /// `403 Not authorized for {perm} on {resource} in {entity}`.
    pub fn not_authorized(perm: &str, resource: &str, entity: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            format!(
                "Not authorized for {perm} on {} in {}",
                crate::model::names::printable(resource),
                crate::model::names::printable(entity)
            ),
        )
    }

    /// Logs an internal failure with its whole chain and returns the generic client error.
    pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        let id = INTERNAL_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut chain = err.to_string();
        let mut src = err.source();
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            src = s.source();
        }
        tracing::error!(error_id = id, error = %chain, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error (see server log, error id {id})"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal("storage failure", &e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
