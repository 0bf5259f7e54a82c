//! The REST client of the platform's `GASRemoteAccessProvider` ([`thingport_protocol::gas`]):
//! one `POST` per call with the application key, a timeout on each, answers read up to a bound.
//! The key goes in a header marked sensitive and is never logged.

use super::config::{GasConfig, PlatformTls, PlatformUrl};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use thingport_protocol::gas::{
    ClaimConsoleSession, ConsoleClaim, Heartbeat, HeartbeatReply, RegisterServer, Registration,
    SessionReports, CLAIM_CONSOLE_SESSION, HEARTBEAT, REGISTER_SERVER, REPORT_SESSION_EVENTS,
};

/// The largest answer read from the platform (a heartbeat reply may list many sessions).
const MAX_ANSWER: usize = 4 << 20;

/// `thingport-gas/<version>`, the `User-Agent`.
const USER_AGENT: &str = concat!("thingport-gas/", env!("CARGO_PKG_VERSION"));

/// Why a call to the platform failed. Every one is worth retrying later, except that
/// [`CallError::UnknownRegistration`] asks for a new registration first.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The network: DNS, connect, TLS, a reset (the platform is down or unreachable).
    #[error("failed to reach the platform")]
    Unreachable(#[source] reqwest::Error),
    #[error("the platform did not answer within {0:?}")]
    Timeout(Duration),
    /// 404 to a heartbeat or a report: the platform restarted or the GAS Thing was deleted.
    #[error("the platform does not know this registration: {0}")]
    UnknownRegistration(String),
    /// Any other non-2xx answer, with the platform's `error` message.
    #[error("the platform refused {service} with {status}: {message}")]
    Refused {
        service: &'static str,
        status: u16,
        message: String,
    },
    #[error("the platform's answer to {service} is not valid: {why}")]
    BadAnswer { service: &'static str, why: String },
}

impl CallError {
    /// What the operator can do about it, when we can tell.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            CallError::Refused { status: 401, .. } | CallError::Refused { status: 403, .. } => {
                Some(
                    "check --app-key: the key must exist, be enabled and its user may call \
                 GASRemoteAccessProvider",
                )
            }
            CallError::Refused { status: 409, .. } => {
                Some("the platform refused another GAS (maxServers of GASRemoteAccessProvider)")
            }
            CallError::Refused {
                status: 404,
                service: REGISTER_SERVER,
                ..
            } => Some("is the RemoteAccessExtension installed on the platform?"),
            _ => None,
        }
    }
}

/// The error and its sources, `a: b: c`, for a log line.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// The platform's REST API, as this GAS calls it.
#[derive(Debug, Clone)]
pub struct Platform {
    http: reqwest::Client,
    url: PlatformUrl,
    timeout: Duration,
}

impl Platform {
    /// A client for `config.url` with `config.app_key` (TLS per `config.platform_tls`).
    pub fn new(config: &GasConfig) -> anyhow::Result<Platform> {
        use anyhow::Context as _;
        let mut key = HeaderValue::from_str(config.app_key.expose())
            .context("--app-key cannot be sent in an HTTP header")?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("appKey", key);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let timeout = config.timing.request_timeout;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(client_tls(&config.platform_tls)?)
            .default_headers(headers)
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("failed to build the platform's HTTP client")?;
        Ok(Platform {
            http,
            url: config.url.clone(),
            timeout,
        })
    }

    /// `RegisterServer`.
    pub async fn register(&self, params: &RegisterServer) -> Result<Registration, CallError> {
        let body = self.post(REGISTER_SERVER, params).await?;
        result(REGISTER_SERVER, &body)?.ok_or_else(|| CallError::BadAnswer {
            service: REGISTER_SERVER,
            why: "no result".into(),
        })
    }

    /// `Heartbeat` (an answer without a result ends nothing).
    pub async fn heartbeat(&self, params: &Heartbeat) -> Result<HeartbeatReply, CallError> {
        let body = self.post(HEARTBEAT, params).await?;
        Ok(result(HEARTBEAT, &body)?.unwrap_or_default())
    }

    /// `ReportSessionEvents` (its answer is not read).
    pub async fn report(&self, params: &SessionReports) -> Result<(), CallError> {
        self.post(REPORT_SESSION_EVENTS, params).await.map(drop)
    }

    /// `ClaimConsoleSession`: the endpoint's protocol and credentials for a console session.
    pub async fn claim_console(
        &self,
        params: &ClaimConsoleSession,
    ) -> Result<ConsoleClaim, CallError> {
        let body = self.post(CLAIM_CONSOLE_SESSION, params).await?;
        result(CLAIM_CONSOLE_SESSION, &body)?.ok_or_else(|| CallError::BadAnswer {
            service: CLAIM_CONSOLE_SESSION,
            why: "no result".into(),
        })
    }

    /// One call: the answer's body on 2xx.
    async fn post(
        &self,
        service: &'static str,
        params: &impl Serialize,
    ) -> Result<Vec<u8>, CallError> {
        let body = serde_json::to_vec(params).map_err(|e| CallError::BadAnswer {
            service,
            why: format!("the request could not be encoded: {e}"),
        })?;
        let net = |e: reqwest::Error| {
            if e.is_timeout() {
                CallError::Timeout(self.timeout)
            } else {
                CallError::Unreachable(e.without_url())
            }
        };
        let mut response = self
            .http
            .post(self.url.service(service))
            .body(body)
            .send()
            .await
            .map_err(net)?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(net)? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(CallError::BadAnswer {
                    service,
                    why: format!("larger than {MAX_ANSWER} bytes"),
                });
            }
            answer.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(answer);
        }
        let message = error_message(status, &answer);
        if status == StatusCode::NOT_FOUND && service != REGISTER_SERVER {
            return Err(CallError::UnknownRegistration(message));
        }
        Err(CallError::Refused {
            service,
            status: status.as_u16(),
            message,
        })
    }
}

/// The `error` of a `{"error": "..."}` body, else the start of the body, else the status.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return clip(e);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no reason given")
            .into()
    } else {
        clip(text)
    }
}

/// At most 300 characters of platform text for a log line, control characters replaced.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(300).is_some() {
        out.push('…');
    }
    out
}

/// The `result` of the first row of the InfoTable answer; `None` without rows or with a null
/// result. A bare object (no `rows`) is taken as the result itself, and a result that is a JSON
/// string holding JSON is decoded.
fn result<T: DeserializeOwned>(service: &'static str, body: &[u8]) -> Result<Option<T>, CallError> {
    let bad = |why: String| CallError::BadAnswer { service, why };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    if let Some(rows) = value.get_mut("rows") {
        let Some(row) = rows.as_array_mut().and_then(|r| r.first_mut()) else {
            return Ok(None);
        };
        value = row
            .get_mut("result")
            .map(serde_json::Value::take)
            .unwrap_or_default();
    }
    if let serde_json::Value::String(text) = &value {
        value = serde_json::from_str(text).map_err(|e| bad(format!("result: {e}")))?;
    }
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| bad(format!("result: {e}")))
}

/// The rustls configuration for an `https://` platform (`thingport-tls`: ring, the webpki roots
/// plus `--ca-file`, and with `--insecure` a verifier that accepts any certificate).
fn client_tls(options: &PlatformTls) -> anyhow::Result<ClientConfig> {
    Ok(thingport_tls::client_config(
        &options.extra_roots,
        options.insecure,
    )?)
}

/// Reads every certificate of a PEM file (`--ca-file`) and checks each is a usable root.
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, super::ConfigError> {
    thingport_tls::load_ca_file(path).map_err(super::ConfigError::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_from_the_first_row() {
        let body = br#"{"dataShape":{"fieldDefinitions":{}},"rows":[{"result":{"end":["a"]}}]}"#;
        let r: HeartbeatReply = result(HEARTBEAT, body).unwrap().unwrap();
        assert_eq!(r.end, ["a"]);
        let none: Option<HeartbeatReply> = result(HEARTBEAT, br#"{"rows":[]}"#).unwrap();
        assert!(none.is_none());
        let none: Option<HeartbeatReply> = result(HEARTBEAT, b"").unwrap();
        assert!(none.is_none());
        // A JSON field delivered as a string, and a bare result.
        let r: HeartbeatReply = result(HEARTBEAT, br#"{"rows":[{"result":"{\"end\":[\"b\"]}"}]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.end, ["b"]);
        let r: HeartbeatReply = result(HEARTBEAT, br#"{"end":["c"]}"#).unwrap().unwrap();
        assert_eq!(r.end, ["c"]);
        assert!(result::<Registration>(REGISTER_SERVER, b"<html>").is_err());
        assert!(
            result::<Registration>(REGISTER_SERVER, br#"{"rows":[{"result":{"x":1}}]}"#).is_err()
        );
    }

    #[test]
    fn error_messages_are_the_platforms_and_short() {
        assert_eq!(
            error_message(StatusCode::FORBIDDEN, br#"{"error":"bad key"}"#),
            "bad key"
        );
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
        let long = "x\n".repeat(400);
        let m = error_message(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes());
        assert!(m.chars().count() <= 301 && !m.contains('\n'));
    }

    #[test]
    fn hints_name_the_likely_fix() {
        let refused = |status, service| CallError::Refused {
            service,
            status,
            message: String::new(),
        };
        assert!(refused(403, REGISTER_SERVER)
            .hint()
            .unwrap()
            .contains("--app-key"));
        assert!(refused(409, REGISTER_SERVER)
            .hint()
            .unwrap()
            .contains("maxServers"));
        assert!(refused(404, REGISTER_SERVER)
            .hint()
            .unwrap()
            .contains("RemoteAccessExtension"));
        assert!(refused(500, HEARTBEAT).hint().is_none());
    }
}
