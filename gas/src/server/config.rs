//! The validated configuration of the `thingport-gas` server: where the platform is and how to
//! talk to it, the GAS's name, where to listen, and the relay's tunables. The command line
//! ([`crate::cli`]) builds one; tests build one with [`GasConfig::new`] and shorten its timings.

use crate::RelayConfig;
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use thingport_protocol::gas::PROVIDER;
use tokio_rustls::TlsAcceptor;

/// A configuration the GAS cannot run with. The message names the flag and what to change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// The application key the GAS calls the platform with: `Debug` and `Display` show
/// `<redacted>`, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey(String);

impl AppKey {
    /// Wraps a key; refuses an empty one or one that cannot travel in an HTTP header.
    pub fn new(key: impl Into<String>) -> Result<Self, ConfigError> {
        let key = key.into();
        if key.is_empty() {
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

/// The platform's base URL (`http(s)://host[:port][/prefix]`, without a trailing `/` or
/// `/Thingworx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformUrl {
    base: String,
    tls: bool,
}

impl PlatformUrl {
    /// Parses `--url`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let url = web_url("--url", text, "http:// or https://")?;
        let mut base = url.as_str().trim_end_matches('/').to_string();
        if let Some(stripped) = base.strip_suffix("/Thingworx") {
            base = stripped.to_string();
        }
        Ok(PlatformUrl {
            base,
            tls: url.scheme() == "https",
        })
    }

    /// Where the service `service` of the provider Thing is called.
    pub fn service(&self, service: &str) -> String {
        format!(
            "{}/Thingworx/Things/{PROVIDER}/Services/{service}",
            self.base
        )
    }

    /// Whether the platform is reached over TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for PlatformUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// A GAS address as `http(s)://`: `ws://` and `wss://` mean the same place (a GAS serves
/// WebSockets, so that is what an operator often types), and the platform and clients expect the
/// `http(s)` form.
fn as_web_scheme(text: &str) -> String {
    let t = text.trim();
    let lower = t.get(..6).map(str::to_ascii_lowercase).unwrap_or_default();
    if lower.starts_with("wss://") {
        format!("https://{}", &t[6..])
    } else if lower.starts_with("ws://") {
        format!("http://{}", &t[5..])
    } else {
        t.to_string()
    }
}

/// An `http://` or `https://` URL with a host, and no credentials, query or fragment.
fn web_url(flag: &str, text: &str, schemes: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim())
        .map_err(|e| ConfigError::new(format!("{flag} {text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(format!(
            "{flag} {text:?} must start with {schemes}"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(format!("{flag} {text:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(format!(
            "{flag} must not carry credentials (user:password@)"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(format!(
            "{flag} {text:?} must not have a query or fragment"
        )));
    }
    Ok(url)
}

/// Trust settings for an `https://` platform.
#[derive(Debug, Clone, Default)]
pub struct PlatformTls {
    /// Certificates trusted in addition to the bundled webpki roots (`--ca-file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Accept any certificate (`--insecure`, development only).
    pub insecure: bool,
}

/// How the GAS paces its conversation with the platform.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The longest one call to the platform may take (connect, send, answer).
    pub request_timeout: Duration,
    /// The first delay before registering again after a failure; it doubles up to
    /// `max_backoff` (each wait a random pick between half and all of it).
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// At shutdown, how long the last session reports may take to reach the platform.
    pub flush_timeout: Duration,
    /// Session reports kept while the platform cannot take them; beyond that the oldest are
    /// dropped (with a warning).
    pub report_queue: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
            flush_timeout: Duration::from_secs(5),
            report_queue: 10_000,
        }
    }
}

/// Everything [`crate::run`] needs.
#[derive(Clone)]
pub struct GasConfig {
    /// The platform (`--url`).
    pub url: PlatformUrl,
    pub app_key: AppKey,
    /// The GAS Thing's name (`--name`), also the name credentials must carry.
    pub name: String,
    /// Where tunnels are served (`--listen`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where clients and agents reach this GAS (`--public-url`); `None`: derived from the bound
    /// address (`http(s)://ADDR`).
    pub public_url: Option<String>,
    /// Serve `wss` with this (`--tls-cert`, `--tls-key`).
    pub tls: Option<TlsAcceptor>,
    /// Trust for the platform's certificate (`--ca-file`, `--insecure`).
    pub platform_tls: PlatformTls,
    /// The most concurrent sessions (`--capacity`): reported at registration and enforced.
    pub capacity: u32,
    /// The relay's tunables (`--drain` sets `relay.drain`).
    pub relay: RelayConfig,
    pub timing: Timing,
}

impl fmt::Debug for GasConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GasConfig")
            .field("url", &self.url)
            .field("app_key", &self.app_key)
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("tls", &self.tls.is_some())
            .field("platform_tls", &self.platform_tls)
            .field("capacity", &self.capacity)
            .field("relay", &self.relay)
            .field("timing", &self.timing)
            .finish()
    }
}

/// The default `--listen`: loopback only; a GAS that others reach sets `--listen 0.0.0.0:8443`
/// and `--public-url`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The default `--capacity`.
pub const DEFAULT_CAPACITY: u32 = 1000;

impl GasConfig {
    /// A configuration with the defaults: listen on [`DEFAULT_LISTEN`], no TLS, capacity
    /// [`DEFAULT_CAPACITY`].
    pub fn new(url: &str, app_key: AppKey, name: &str) -> Result<Self, ConfigError> {
        let config = GasConfig {
            url: PlatformUrl::parse(url)?,
            app_key,
            name: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            tls: None,
            platform_tls: PlatformTls::default(),
            capacity: DEFAULT_CAPACITY,
            relay: RelayConfig::default(),
            timing: Timing::default(),
        };
        check_name(&config.name)?;
        Ok(config)
    }

    /// Checks the values together: the name, the public URL against the listen address and
    /// TLS, the capacity, the relay's tunables.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name(&self.name)?;
        if self.capacity == 0 {
            return Err(ConfigError::new("--capacity must be at least 1"));
        }
        match &self.public_url {
            Some(url) => {
                let parsed = web_url(
                    "--public-url",
                    &as_web_scheme(url),
                    "http://, https://, ws:// or wss://",
                )?;
                if self.tls.is_some() && parsed.scheme() == "http" {
                    return Err(ConfigError::new(
                        "--public-url is http:// but this GAS serves TLS (--tls-cert): use https://",
                    ));
                }
            }
            None if self.listen.ip().is_unspecified() => {
                return Err(ConfigError::new(format!(
                    "--public-url is required when --listen is a wildcard address ({}): clients \
                     and agents need an address they can reach",
                    self.listen.ip()
                )));
            }
            None => {}
        }
        let t = &self.timing;
        if t.request_timeout.is_zero() || t.min_backoff.is_zero() || t.report_queue == 0 {
            return Err(ConfigError::new(
                "the request timeout, the backoff and the report queue must be greater than 0",
            ));
        }
        self.relay
            .validate()
            .map_err(|e| ConfigError::new(format!("invalid relay settings: {e}")))
    }

    /// The public URL: `--public-url` without a trailing `/`, or `http(s)://<bound address>`.
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => as_web_scheme(url).trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{bound}")
            }
        }
    }
}

/// Checks a GAS name as the platform checks Thing names: `[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,127}`.
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.@:-".contains(c));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(ConfigError::new(format!(
            "--name {name:?} is not a valid Thing name: 1 to 128 characters of letters, digits \
             and _ . @ : -, starting with a letter, a digit or _"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AppKey {
        AppKey::new("k-1").unwrap()
    }

    #[test]
    fn platform_urls_keep_their_prefix_and_refuse_the_rest() {
        let u = PlatformUrl::parse("https://p.example:8443/tp/Thingworx/").unwrap();
        assert_eq!(
            u.service("Heartbeat"),
            "https://p.example:8443/tp/Thingworx/Things/GASRemoteAccessProvider/Services/Heartbeat"
        );
        assert!(u.tls());
        let u = PlatformUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8080");
        for (bad, needle) in [
            ("ws://h", "http:// or https://"),
            ("h:80", "http:// or https://"),
            ("nonsense", "not a URL"),
            ("http://u:p@h", "credentials"),
            ("http://h/?q=1", "query"),
        ] {
            let err = PlatformUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn names_follow_thing_names() {
        for ok in ["gas-1", "_g", "a.b@c:d-e_f", &"x".repeat(128)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_urls_are_derived_or_checked() {
        let mut c = GasConfig::new("http://p", key(), "g").unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        let bound = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(c.public_url_for(bound), "http://127.0.0.1:9000");
        c.listen = "0.0.0.0:8443".parse().unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("wildcard"));
        c.public_url = Some("https://gas.example/".into());
        c.validate().unwrap();
        assert_eq!(c.public_url_for(bound), "https://gas.example");
        // ws:// and wss:// mean the same address (SPEC §7).
        c.public_url = Some("wss://gas.example:8443/".into());
        c.validate().unwrap();
        assert_eq!(c.public_url_for(bound), "https://gas.example:8443");
        c.public_url = Some("WS://10.0.0.1:8080".into());
        c.validate().unwrap();
        assert_eq!(c.public_url_for(bound), "http://10.0.0.1:8080");
        c.public_url = Some("ftp://gas".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must start with http://, https://, ws:// or wss://"));
        c.public_url = Some("ws://".into());
        assert!(c.validate().is_err());
        c.public_url = None;
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.capacity = 0;
        assert!(c.validate().unwrap_err().to_string().contains("--capacity"));
    }

    #[test]
    fn app_keys_are_redacted_and_checked() {
        let k = AppKey::new("secret-key").unwrap();
        assert!(!format!("{k:?} {k}").contains("secret"));
        assert!(AppKey::new("").is_err());
        assert!(AppKey::new("a b").is_err());
        let c = GasConfig::new("http://p", k, "g").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
