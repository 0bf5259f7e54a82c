//! The admin calls of the ThingWorx-compatible REST API (SPEC §3) that the CLI makes; the remote
//! access calls are in [`crate::remote`].
//!
//! Every call (a `POST`, or a `GET` of a collection) goes with `Accept: application/json`, the credentials (`appKey` header or
//! HTTP Basic) and `X-XSRF-TOKEN` (harmless with those credentials, and what ThingWorx's own
//! uploader expects). An answer other than 2xx becomes an [`ApiError`] carrying the status and
//! the server's `error` message; the import refusal (406) keeps its report rows.

use anyhow::Context as _;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The XSRF header value ThingWorx clients send.
const XSRF_TOKEN: &str = "TWX-XSRF-TOKEN-VALUE";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An upload may carry a large package to a busy server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A secret (password, application key, tunnel credential) whose `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (the server answers 401 to the admin calls).
    None,
    /// `appKey: <key>` header.
    AppKey(Secret),
    /// HTTP Basic with a user's password.
    Basic { user: String, password: Secret },
}

/// An answer other than 2xx.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ApiError {
    /// What was asked, e.g. `GetExtensionPackageList`.
    pub call: String,
    pub status: u16,
    /// The body's `error` field, else the start of its text.
    pub message: String,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// What to do about it, when the client can tell (e.g. ` (pass --app-key, ...)`).
    pub hint: &'static str,
}

impl ApiError {
    fn describe(&self) -> String {
        format!(
            "{} failed: the server answered {}: {}{}",
            self.call, self.status, self.message, self.hint
        )
    }
}

/// What an import answered: the report rows, and the refusal when the server refused it.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub report: Value,
    pub refused: Option<ApiError>,
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Connection {
    base: String,
    auth: Auth,
    http: reqwest::Client,
}

impl Connection {
    /// A client for the server at `url` (e.g. `http://127.0.0.1:8080`); `https://` servers are
    /// verified against the webpki roots.
    pub fn new(url: &str, auth: Auth) -> anyhow::Result<Self> {
        Self::with_tls(url, auth, None)
    }

    /// A client whose `https://` connections use `tls` (see [`crate::tls::client_config`]);
    /// `None` builds the default configuration when the URL needs one.
    pub fn with_tls(
        url: &str,
        auth: Auth,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed =
            reqwest::Url::parse(&base).with_context(|| format!("invalid --url {url:?}"))?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => match tls {
                Some(tls) => Some(tls),
                None => Some(crate::tls::client_config(&Default::default())?),
            },
            other => anyhow::bail!("invalid --url {url:?}: unsupported scheme {other:?}"),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert("X-XSRF-TOKEN", HeaderValue::from_static(XSRF_TOKEN));
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls((*tls).clone());
        }
        let http = builder
            .build()
            .context("failed to set up the HTTP client")?;
        Ok(Self { base, auth, http })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.post(format!("{}{path}", self.base)))
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.get(format!("{}{path}", self.base)))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::AppKey(key) => request.header("appKey", key.0.as_str()),
            Auth::Basic { user, password } => request.basic_auth(user, Some(&password.0)),
        }
    }

    /// Sends an extension administration call.
    async fn send(&self, call: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        self.send_with(call, request, |status, _| match status {
            403 => " (extension administration needs a member of Administrators)",
            _ => "",
        })
        .await
    }

    /// Sends a call; an answer other than 2xx becomes an [`ApiError`] whose hint is `hint(status,
    /// message)` (a 401 without credentials always hints at the credential flags).
    pub(crate) async fn send_with(
        &self,
        call: &str,
        request: reqwest::RequestBuilder,
        hint: impl Fn(u16, &str) -> &'static str,
    ) -> anyhow::Result<Value> {
        tracing::debug!(call, base = %self.base, "request");
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "{call} failed: cannot reach {}: {}",
                self.base,
                transport_cause(&e)
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{call} failed: the answer could not be read"))?;
        tracing::debug!(call, status = status.as_u16(), "answer");
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = match body.get("error").and_then(Value::as_str) {
            Some(error) => error.to_owned(),
            None => {
                let first = text.lines().next().unwrap_or("").trim();
                let first: String = first.chars().take(200).collect();
                if first.is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    first
                }
            }
        };
        let hint = match (status.as_u16(), &self.auth) {
            (401, Auth::None) => " (pass --app-key, or --user and --password)",
            (status, _) => hint(status, &message),
        };
        Err(ApiError {
            call: call.to_owned(),
            status: status.as_u16(),
            message,
            body,
            hint,
        }
        .into())
    }

    /// `POST /Thingworx/ExtensionPackageUploader?purpose=import` with `file` as the multipart
    /// field `file`. A refusal (406) is an [`ImportOutcome`] with its report; other failures are
    /// errors.
    pub async fn import(&self, file: &Path) -> anyhow::Result<ImportOutcome> {
        const CALL: &str = "ExtensionPackageUploader";
        let bytes = tokio::fs::read(file)
            .await
            .with_context(|| format!("failed to read {}", file.display()))?;
        let name = file.file_name().map_or_else(
            || "package.zip".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("application/zip")
            .context("failed to build the upload")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let request = self
            .post("/Thingworx/ExtensionPackageUploader?purpose=import")
            .multipart(form);
        match self.send(CALL, request).await {
            Ok(report) => Ok(ImportOutcome {
                report,
                refused: None,
            }),
            Err(e) => match e.downcast::<ApiError>() {
                Ok(refusal) if refusal.status == 406 => Ok(ImportOutcome {
                    report: report_of(&refusal.body),
                    refused: Some(refusal),
                }),
                Ok(other) => Err(other.into()),
                Err(other) => Err(other),
            },
        }
    }

    /// `GetExtensionPackageList`: the installed packages, an InfoTable.
    pub async fn list(&self) -> anyhow::Result<Value> {
        const CALL: &str = "GetExtensionPackageList";
        let request = self
            .post("/Thingworx/Subsystems/PlatformSubsystem/Services/GetExtensionPackageList")
            .json(&json!({}));
        self.send(CALL, request).await
    }

    /// `DeleteExtensionPackage {packageName}`.
    pub async fn delete(&self, package: &str) -> anyhow::Result<Value> {
        const CALL: &str = "DeleteExtensionPackage";
        let request = self
            .post("/Thingworx/Subsystems/PlatformSubsystem/Services/DeleteExtensionPackage")
            .json(&json!({ "packageName": package }));
        self.send(CALL, request).await
    }
}

/// The innermost cause of a transport error (`Connection refused (os error 111)`), which says
/// more than reqwest's own layers of context.
fn transport_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the request timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The report inside a refusal's body: its `report` (an InfoTable or rows) or its own `rows`.
fn report_of(body: &Value) -> Value {
    match body.get("report") {
        Some(report) => report.clone(),
        None => json!({ "rows": body.get("rows").cloned().unwrap_or_else(|| json!([])) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        let auth = Auth::Basic {
            user: "Administrator".into(),
            password: Secret("hunter2-secret".into()),
        };
        let shown = format!("{auth:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Administrator"));
    }

    #[test]
    fn urls_are_checked() {
        assert!(Connection::new("http://127.0.0.1:8080/", Auth::None).is_ok());
        assert!(Connection::new("https://example.invalid", Auth::None).is_ok());
        assert!(Connection::new("not a url", Auth::None).is_err());
        assert!(Connection::new("ftp://x", Auth::None).is_err());
    }

    #[test]
    fn refusal_reports_are_found_in_either_shape() {
        let rows = json!([{"name": "A", "extensionReportStatus": 1}]);
        let nested = report_of(&json!({"error": "e", "report": {"rows": rows}}));
        assert_eq!(
            crate::table::rows(&nested),
            rows.as_array().unwrap().clone()
        );
        let flat = report_of(&json!({"error": "e", "rows": rows}));
        assert_eq!(crate::table::rows(&flat), rows.as_array().unwrap().clone());
        assert!(crate::table::rows(&report_of(&json!({"error": "e"}))).is_empty());
    }

    #[test]
    fn errors_name_the_call_the_status_and_the_message() {
        let e = ApiError {
            call: "DeleteExtensionPackage".into(),
            status: 409,
            message: "Extension B depends on A".into(),
            body: Value::Null,
            hint: "",
        };
        assert_eq!(
            e.to_string(),
            "DeleteExtensionPackage failed: the server answered 409: Extension B depends on A"
        );
    }
}
