//! The agent's validated configuration, and the small parsers behind its flags (durations,
//! `HOST:PORT` endpoints). The command line is in [`crate::cli`]; it builds an [`AgentConfig`].

use crate::proxy::ProxyConfig;
use crate::url::PlatformUrl;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::time::Duration;
use thingport_protocol::control;

/// The default of `--max-sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// The largest `--max-sessions` accepted.
pub const MAX_MAX_SESSIONS: usize = 10_000;

/// A configuration the agent cannot run with. The message names the flag and what to change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// The application key: shown as `<redacted>` by `Debug` and `Display` so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey(String);

impl AppKey {
    /// Wraps a key; refuses an empty one or one that cannot travel in an HTTP header.
    pub fn new(key: impl Into<String>) -> Result<Self, ConfigError> {
        let key = key.into();
        if key.trim().is_empty() {
            return Err(ConfigError::new("--app-key is empty"));
        }
        if key.len() > 4096 || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(ConfigError::new(
                "--app-key must be at most 4096 printable ASCII characters without spaces",
            ));
        }
        Ok(AppKey(key))
    }

    /// The key itself, for the `appKey` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A `HOST:PORT` the agent may tunnel to (`--allow`). `host` is a DNS name or an IP address,
/// without the brackets of an IPv6 literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Trust settings for `https://` platforms.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Certificates trusted in addition to the bundled webpki roots (`--ca-file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Skip certificate verification entirely (`--insecure`; development only).
    pub insecure: bool,
}

/// Everything [`crate::run`] needs. Build it with [`AgentConfig::new`] and adjust the public
/// fields, or from the command line with [`crate::cli::Args::into_config`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The platform, from `--url`.
    pub url: PlatformUrl,
    pub app_key: AppKey,
    /// The Things to bind, in order, without duplicates.
    pub things: Vec<String>,
    /// Endpoints remote sessions may reach (`--allow`). Empty: the endpoints the platform defines
    /// for the ordering Thing (its `endpoints` property, read before each session).
    pub allow: Vec<Endpoint>,
    /// Refuse every remote session (`--disable-remote-access`).
    pub disable_remote_access: bool,
    /// The most remote sessions that may run at once (`--max-sessions`); more are denied.
    pub max_sessions: usize,
    /// How long reading a Thing's `endpoints` property from the platform may take.
    pub endpoints_timeout: Duration,
    pub tls: TlsOptions,
    /// The HTTP CONNECT proxy to reach the platform through, if any.
    pub proxy: Option<ProxyConfig>,
    /// The first reconnect delay (before jitter).
    pub min_backoff: Duration,
    /// The largest reconnect delay (before jitter).
    pub max_backoff: Duration,
    /// How long a connection must stay up after `welcome` for the backoff to start again at
    /// `min_backoff`.
    pub stable_after: Duration,
    /// How long after a refusal (or a `GONE` unbind) a bind is tried again on the same connection.
    pub bind_retry_interval: Duration,
    /// TCP connect timeout (to the platform or the proxy).
    pub connect_timeout: Duration,
    /// Time allowed for the proxy CONNECT, the TLS handshake and the WebSocket upgrade together.
    pub handshake_timeout: Duration,
    /// Time allowed between `hello` and `welcome`.
    pub welcome_timeout: Duration,
    /// A connection that received nothing at all for this long is dropped.
    pub idle_timeout: Duration,
    /// How long a single write may block before the connection is considered dead.
    pub write_timeout: Duration,
    /// How long shutdown waits for the platform to answer the close frame.
    pub close_timeout: Duration,
}

impl AgentConfig {
    /// A configuration with the documented defaults for everything but the platform URL, the key
    /// and the Things.
    pub fn new(
        url: &str,
        app_key: AppKey,
        things: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, ConfigError> {
        let config = AgentConfig {
            url: PlatformUrl::parse(url)?,
            app_key,
            things: things.into_iter().map(Into::into).collect(),
            allow: Vec::new(),
            disable_remote_access: false,
            max_sessions: DEFAULT_MAX_SESSIONS,
            endpoints_timeout: Duration::from_secs(5),
            tls: TlsOptions::default(),
            proxy: None,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
            stable_after: Duration::from_secs(10),
            bind_retry_interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            welcome_timeout: Duration::from_millis(control::HELLO_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(control::IDLE_TIMEOUT_MS),
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between fields that their types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.things.is_empty() {
            return Err(ConfigError::new("give at least one --thing NAME to bind"));
        }
        let mut seen = std::collections::HashSet::new();
        for thing in &self.things {
            validate_thing_name(thing)?;
            if !seen.insert(thing.as_str()) {
                return Err(ConfigError::new(format!(
                    "--thing {thing:?} is given twice"
                )));
            }
        }
        if !(1..=MAX_MAX_SESSIONS).contains(&self.max_sessions) {
            return Err(ConfigError::new(format!(
                "--max-sessions must be from 1 to {MAX_MAX_SESSIONS}, got {}",
                self.max_sessions
            )));
        }
        if self.min_backoff.is_zero() {
            return Err(ConfigError::new("--min-backoff must be greater than 0"));
        }
        if self.min_backoff > self.max_backoff {
            return Err(ConfigError::new(format!(
                "--min-backoff ({:?}) must not exceed --max-backoff ({:?})",
                self.min_backoff, self.max_backoff
            )));
        }
        if self.max_backoff > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("--max-backoff must be at most 24h"));
        }
        Ok(())
    }
}

fn validate_thing_name(name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::new("--thing must not be empty"));
    }
    if name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ConfigError::new(format!(
            "--thing {name:?}: a Thing name is at most 255 bytes without control characters"
        )));
    }
    Ok(())
}

/// Parses a duration: an integer followed by `ms`, `s`, `m` or `h`; a bare integer is seconds.
/// Examples: `500ms`, `2s`, `1m`, `15`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: use a whole number with ms, s, m or h (e.g. 500ms, 2s, 1m)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large a duration"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use ms, s, m or h (e.g. 500ms, 2s, 1m)"
            ))
        }
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large a duration"))
}

/// Parses `HOST:PORT`: a DNS name, an IPv4 address or a bracketed IPv6 address (`[::1]:22`),
/// and a port from 1 to 65535.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let (host, port) = split_host_port(text)
        .ok_or_else(|| format!("{text:?} is not HOST:PORT (write IPv6 addresses as [::1]:22)"))?;
    let port = parse_port(port).ok_or_else(|| {
        format!("{text:?}: the port must be a number from 1 to 65535, got {port:?}")
    })?;
    validate_host(host).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(Endpoint {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Splits `host:port` or `[v6]:port` into the host (brackets removed) and the port text.
pub(crate) fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        Some((host, port))
    } else {
        let (host, port) = text.rsplit_once(':')?;
        if host.contains(':') {
            return None; // an unbracketed IPv6 address
        }
        Some((host, port))
    }
}

pub(crate) fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Checks a host (brackets already removed): an IP address or a DNS name of letters, digits,
/// `-`, `_` and dots.
pub(crate) fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a valid host name or IP address"))
    }
}

#[cfg(test)]
mod tests;
