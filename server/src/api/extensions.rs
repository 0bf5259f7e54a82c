//! `POST /Thingworx/ExtensionPackageUploader?purpose=import`: extension package import.

use super::auth::Caller;
use super::AppState;
use crate::error::ApiError;
use crate::extensions::registry::ImportOutcome;
use crate::model::basetype::{BaseType, FieldDef};
use crate::model::infotable::InfoTable;
use crate::platform::Ctx;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;

/// The multipart field `file` of an upload (the package's bytes).
pub async fn file_field(form: &mut Multipart) -> Result<Vec<u8>, ApiError> {
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                return field
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(multipart_error)
            }
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        }
    }
    Err(ApiError::bad_request(
        "multipart field 'file' (the extension package) is missing",
    ))
}

/// Imports a package (or a zip of packages) as `ctx`: administrators only, the one path of the
/// API's uploader and the web console.
pub async fn import(s: &AppState, ctx: &Ctx, file: Vec<u8>) -> Result<ImportOutcome, ApiError> {
    if !ctx.who.admin {
        return Err(ApiError::not_authorized(
            "Import",
            "ExtensionPackageUploader",
            "PlatformSubsystem",
        ));
    }
    let Some(ext) = s.platform.extensions() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the extension system is not running",
        ));
    };
    // Its own task: dropping this handler (request timeout, client gone) must not cancel an import
    // between its database commit and the registry update.
    let (ext, platform, who) = (ext.clone(), s.platform.clone(), ctx.clone());
    let task = tokio::spawn(async move { ext.import(&platform, &who, file).await });
    match task.await {
        Ok(result) => result,
        Err(e) => Err(ApiError::internal("the import task failed", &e)),
    }
}

/// Imports the multipart field `file` (a package, or a zip of packages). Administrators only.
/// 200 with the report when imported (or unchanged), 406 with the report when refused.
pub async fn upload(
    State(s): State<AppState>,
    Caller(ctx): Caller,
    Query(q): Query<HashMap<String, String>>,
    mut form: Multipart,
) -> Response {
    if !ctx.who.admin {
        return ApiError::not_authorized("Import", "ExtensionPackageUploader", "PlatformSubsystem")
            .into_response();
    }
    if q.get("purpose").map(String::as_str) != Some("import") {
        return ApiError::bad_request("query parameter 'purpose' must be 'import'").into_response();
    }
    let file = match file_field(&mut form).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let outcome = match import(&s, &ctx, file).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let mut table = InfoTable::new(&[
        FieldDef::new("name", BaseType::String),
        FieldDef::new("version", BaseType::String),
        FieldDef::new("extensionReportStatus", BaseType::Integer),
        FieldDef::new("reportMessage", BaseType::String),
    ]);
    for row in &outcome.rows {
        table.push(serde_json::to_value(row).unwrap_or_default());
    }
    if outcome.refused {
        let first = outcome
            .rows
            .iter()
            .find(|r| r.is_failure())
            .map(|r| r.report_message.clone())
            .unwrap_or_default();
        let body = serde_json::json!({"error": format!("extension import refused: {first}"), "report": table});
        return (StatusCode::NOT_ACCEPTABLE, Json(body)).into_response();
    }
    (StatusCode::OK, Json(table)).into_response()
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "extension package too large: see --max-upload-bytes".to_string()
    } else {
        format!("malformed multipart upload: {}", e.body_text())
    };
    ApiError::new(status, msg)
}
