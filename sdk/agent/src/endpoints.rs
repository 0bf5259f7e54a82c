//! The default allow-list of remote sessions: the endpoints the platform defines for a Thing, read
//! from its `endpoints` property with the agent's own application key
//! (`GET {url}/Thingworx/Things/{thing}/Properties/endpoints`), through the same proxy and TLS
//! settings as the control channel. One HTTP/1.1 request per session order, on its own
//! connection; the answer is bounded ([`MAX_BODY`]) and the whole read by
//! [`AgentConfig::endpoints_timeout`].
//!
//! Not here: the decision itself ([`crate::session`] compares the order's endpoint with what
//! this returns).

use crate::config::AgentConfig;
use crate::transport;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use thingport_protocol::control;

/// The largest answer the agent reads (bytes of body).
pub const MAX_BODY: usize = 1024 * 1024;

/// One row of a Thing's `endpoints` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defined {
    pub name: String,
    /// As the platform holds it (compared without IPv6 brackets, ignoring case).
    pub host: String,
    pub port: u16,
}

impl Defined {
    /// Whether this is the endpoint `host:port` (the host compared case-insensitively, IPv6
    /// brackets ignored).
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port == port && bare(&self.host).eq_ignore_ascii_case(bare(host))
    }
}

impl std::fmt::Display for Defined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = bare(&self.host);
        let shown = if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        };
        if self.name.is_empty() {
            f.write_str(&shown)
        } else {
            write!(f, "{} {shown}", self.name)
        }
    }
}

fn bare(host: &str) -> &str {
    host.trim()
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host.trim())
}

/// Why the endpoints could not be read. Each says what to check; all are worth a retry only after
/// the cause is fixed (or, for the network ones, later).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The platform answered with an HTTP error; `message` is its `error` text.
    #[error("the platform answered HTTP {status}: {message}{}", hint(.status))]
    Status { status: u16, message: String },
    #[error("no answer from the platform within {0:?}")]
    Timeout(Duration),
    /// The connection, the proxy, TLS or HTTP failed.
    #[error("{0}")]
    Transport(String),
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the answer is not the property's InfoTable: {0}")]
    Malformed(String),
}

fn hint(status: &u16) -> &'static str {
    match status {
        401 => " (the agent's application key is unknown or expired)",
        403 => " (the key's user lacks PropertyRead on endpoints)",
        404 => " (is the Thing remote accessible, with an endpoints property?)",
        _ => "",
    }
}

/// The path of `thing`'s `endpoints` property on the platform of `config`.
pub fn path(config: &AgentConfig, thing: &str) -> String {
    config.url.rest_path(&format!(
        "/Things/{}/Properties/endpoints",
        percent_encode(thing)
    ))
}

/// Reads the endpoints the platform defines for `thing`.
pub async fn read(
    config: &AgentConfig,
    tls: &Arc<ClientConfig>,
    thing: &str,
) -> Result<Vec<Defined>, ReadError> {
    let timeout = config.endpoints_timeout;
    let body = tokio::time::timeout(timeout, fetch(config, tls, thing))
        .await
        .map_err(|_| ReadError::Timeout(timeout))??;
    parse(&body).map_err(ReadError::Malformed)
}

async fn fetch(
    config: &AgentConfig,
    tls: &Arc<ClientConfig>,
    thing: &str,
) -> Result<Bytes, ReadError> {
    let failed = |e: anyhow::Error| ReadError::Transport(format!("{e:#}"));
    let url = &config.url;
    let tcp = transport::dial(config, url).await.map_err(failed)?;
    let io = transport::secure(config, tcp, Some(tls), url)
        .await
        .map_err(failed)?;
    let key = HeaderValue::from_str(config.app_key.expose()).map_err(|_| {
        ReadError::Transport("the application key is not a valid header value".into())
    })?;
    let host = HeaderValue::from_str(&url.authority())
        .map_err(|_| ReadError::Transport("the platform's host is not a valid header".into()))?;
    let request = Request::get(path(config, thing))
        .header(HOST, host)
        .header(control::APP_KEY_HEADER, key)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, crate::AGENT_NAME_VERSION)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ReadError::Transport(format!("cannot build the request: {e}")))?;
    let http = |e: hyper::Error| ReadError::Transport(format!("HTTP exchange failed: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ReadError::TooLarge
                } else {
                    ReadError::Transport(format!("reading the answer failed: {e}"))
                }
            })?
            .to_bytes();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ReadError::Status {
                status,
                message: transport::server_message(&body).unwrap_or_else(|| "no reason".into()),
            })
        }
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = &mut exchange => result,
        ended = &mut conn => match ended {
            // The connection finished its work; the answer is complete or about to be.
            Ok(()) => exchange.await,
            Err(e) => Err(http(e)),
        },
    }
}

/// Parses a property read of `endpoints`: `{"rows": [{"endpoints": <InfoTable or null>}]}` where
/// the InfoTable is `{"rows": [{"name", "protocol", "host", "port", ...}], "dataShape": ...}`.
/// Rows without a usable host and port are skipped; a missing or null value is no endpoints.
pub fn parse(body: &[u8]) -> Result<Vec<Defined>, String> {
    let table: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let outer = table
        .get("rows")
        .and_then(Value::as_array)
        .ok_or("no rows")?;
    let value = outer
        .first()
        .and_then(|row| row.get("endpoints"))
        .unwrap_or(&Value::Null);
    let rows = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(_) => match value.get("rows") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(rows) => rows.as_array().ok_or("endpoints.rows is not an array")?,
        },
        Value::Array(rows) => rows,
        _ => return Err("endpoints is not an InfoTable".into()),
    };
    Ok(rows.iter().filter_map(row).collect())
}

fn row(row: &Value) -> Option<Defined> {
    let host = row.get("host")?.as_str()?.trim();
    let port = match row.get("port")? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    if host.is_empty() {
        return None;
    }
    Some(Defined {
        name: row
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        host: host.to_string(),
        port,
    })
}

/// Percent-encodes everything but the unreserved characters of RFC 3986, for a path segment.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value) -> Result<Vec<Defined>, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn reads_the_rows_of_the_property_infotable() {
        let got = parsed(json!({"dataShape": {}, "rows": [{"endpoints": {
        "dataShape": {"fieldDefinitions": {}},
        "rows": [
            {"name": "ssh", "protocol": "SSH", "host": "Gateway.LAN", "port": 22},
            {"name": "vnc", "host": "[fd00::5]", "port": "5900"},
            {"name": "bad-port", "host": "h", "port": 70000},
            {"name": "no-host", "port": 1},
            {"name": "zero", "host": "h", "port": 0}
        ]}}]}))
        .unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].matches("gateway.lan", 22));
        assert!(!got[0].matches("gateway.lan", 23));
        assert!(got[1].matches("FD00::5", 5900));
        assert_eq!(got[0].to_string(), "ssh Gateway.LAN:22");
        assert_eq!(got[1].to_string(), "vnc [fd00::5]:5900");
    }

    #[test]
    fn an_unset_property_is_no_endpoints() {
        for v in [
            json!({"rows": [{"endpoints": null}]}),
            json!({"rows": [{}]}),
            json!({"rows": []}),
            json!({"rows": [{"endpoints": {"dataShape": {}}}]}),
        ] {
            assert_eq!(parsed(v.clone()), Ok(vec![]), "{v}");
        }
    }

    #[test]
    fn malformed_answers_are_named() {
        assert!(parse(b"<html>").unwrap_err().contains("not JSON"));
        assert!(parsed(json!({"error": "x"}))
            .unwrap_err()
            .contains("no rows"));
        assert!(parsed(json!({"rows": [{"endpoints": 5}]}))
            .unwrap_err()
            .contains("not an InfoTable"));
    }

    #[test]
    fn thing_names_are_escaped_in_the_path() {
        let config = crate::AgentConfig::new(
            "https://p.example/tp",
            crate::AppKey::new("k").unwrap(),
            ["a b/ü"],
        )
        .unwrap();
        assert_eq!(
            path(&config, "a b/ü"),
            "/tp/Thingworx/Things/a%20b%2F%C3%BC/Properties/endpoints"
        );
    }
}
