//! HTTP client for the Thingport REST API, with one helper per call the tests make often.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::Value;

use crate::server::Secrets;
use crate::FORBIDDEN_IN_ERRORS;

/// How a [`Client`] authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    AppKey(String),
    /// Browser session cookie; `xsrf` adds `X-XSRF-TOKEN: TWX-XSRF-TOKEN-VALUE`.
    Session {
        cookie: String,
        xsrf: bool,
    },
}

/// The XSRF header value of docs/api.md.
pub const XSRF_TOKEN: &str = "TWX-XSRF-TOKEN-VALUE";

/// A client bound to one server (it follows the server across restarts) and one identity.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<Mutex<String>>,
    auth: Auth,
    secrets: Secrets,
}

/// An answer: status, headers, raw text and the body parsed as JSON (`Value::Null` if it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub request: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
    secrets: Secrets,
}

impl Resp {
    /// Asserts the status; for an error status also that the body is a leak-free `{"error": "..."}`.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "{}: expected status {status}, got {} with body {}",
            self.request, self.status, self.text
        );
        if status >= 400 {
            self.check_error_body();
        }
        self
    }

    /// Asserts that the status is one of `statuses` (for answers the API doc leaves open between them).
    #[track_caller]
    pub fn expect_status_in(self, statuses: &[u16]) -> Self {
        assert!(
            statuses.contains(&self.status),
            "{}: expected a status in {statuses:?}, got {} with body {}",
            self.request,
            self.status,
            self.text
        );
        if self.status >= 400 {
            self.check_error_body();
        }
        self
    }

    /// Asserts the status and that the error message contains `needle`.
    #[track_caller]
    pub fn expect_error(self, status: u16, needle: &str) -> Self {
        let resp = self.expect(status);
        assert!(
            resp.error().contains(needle),
            "{}: error message {:?} does not contain {needle:?}",
            resp.request,
            resp.error()
        );
        resp
    }

    /// Asserts a 2xx status.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            (200..300).contains(&self.status),
            "{}: expected success, got {} with body {}",
            self.request,
            self.status,
            self.text
        );
        self
    }

    /// Asserts that an error answer is JSON with a string `error` and leaks nothing.
    #[track_caller]
    pub fn check_error_body(&self) {
        assert!(
            self.body.get("error").and_then(Value::as_str).is_some(),
            "{}: error body is not JSON with a string `error` field: {:?}",
            self.request,
            self.text
        );
        for bad in FORBIDDEN_IN_ERRORS {
            assert!(
                !self.text.contains(bad),
                "{}: error body leaks {bad:?}: {}",
                self.request,
                self.text
            );
        }
        if let Some(secret) = self.secrets.found_in(&self.text) {
            panic!(
                "{}: error body leaks the secret {secret:?}: {}",
                self.request, self.text
            );
        }
    }

    /// The `error` message ("" when there is none).
    pub fn error(&self) -> &str {
        self.body.get("error").and_then(Value::as_str).unwrap_or("")
    }

    /// The InfoTable rows; panics if the body is not an InfoTable.
    #[track_caller]
    pub fn rows(&self) -> &Vec<Value> {
        match self.body.get("rows").and_then(Value::as_array) {
            Some(rows) => rows,
            None => panic!("{}: body is not an InfoTable: {}", self.request, self.text),
        }
    }

    /// The first InfoTable row; panics if there is none.
    #[track_caller]
    pub fn row(&self) -> &Value {
        match self.rows().first() {
            Some(row) => row,
            None => panic!("{}: InfoTable has no rows: {}", self.request, self.text),
        }
    }

    /// The values of the string field `field` over all rows.
    #[track_caller]
    pub fn column(&self, field: &str) -> Vec<String> {
        self.rows()
            .iter()
            .filter_map(|r| r.get(field).and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// A response header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub(crate) fn new(
        http: reqwest::Client,
        base: Arc<Mutex<String>>,
        auth: Auth,
        secrets: Secrets,
    ) -> Self {
        Self {
            http,
            base,
            auth,
            secrets,
        }
    }

    /// The same server with another identity.
    pub fn with_auth(&self, auth: Auth) -> Self {
        Self {
            auth,
            ..self.clone()
        }
    }

    pub fn with_basic(&self, user: &str, password: &str) -> Self {
        self.with_auth(Auth::Basic {
            user: user.into(),
            password: password.into(),
        })
    }

    pub fn with_app_key(&self, key: &str) -> Self {
        self.with_auth(Auth::AppKey(key.into()))
    }

    pub fn anonymous(&self) -> Self {
        self.with_auth(Auth::Anonymous)
    }

    /// A session client; `xsrf` decides whether it sends the XSRF header.
    pub fn with_session(&self, cookie: &str, xsrf: bool) -> Self {
        self.with_auth(Auth::Session {
            cookie: cookie.into(),
            xsrf,
        })
    }

    pub fn base_url(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Sends a request with optional raw body and content type; `path` starts with `/`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Resp {
        let url = format!("{}{path}", self.base_url());
        let request = format!("{method} {path}");
        let mut req = self.http.request(method, &url);
        match &self.auth {
            Auth::Anonymous => {}
            Auth::Basic { user, password } => {
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                req = req.header("Authorization", format!("Basic {token}"));
            }
            Auth::AppKey(key) => req = req.header("appKey", key.as_str()),
            Auth::Session { cookie, xsrf } => {
                req = req.header("Cookie", format!("thingport_session={cookie}"));
                if *xsrf {
                    req = req.header("X-XSRF-TOKEN", XSRF_TOKEN);
                }
            }
        }
        req = req.header("Accept", "application/json");
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        for (k, v) in extra_headers {
            req = req.header(*k, HeaderValue::from_str(v).expect("valid header value"));
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{request}: request failed: {e:#}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{request}: reading the body failed: {e:#}"));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            request,
            status,
            headers,
            text,
            body,
            secrets: self.secrets.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serialize body");
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Some(bytes),
            &[],
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serialize body");
        self.send(
            Method::PUT,
            path,
            Some("application/json"),
            Some(bytes),
            &[],
        )
        .await
    }

    /// POST with a raw body sent as `application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Some(body.into()),
            &[],
        )
        .await
    }
}
