//! The platform URL (`--url http(s)://host[:port][/prefix]`) and the control channel's
//! WebSocket URL derived from it.

use crate::config::{parse_port, split_host_port, validate_host, ConfigError};
use std::fmt;
use thingport_protocol::control;

/// A parsed `http://` or `https://` platform URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformUrl {
    /// `https://`: the control channel uses TLS.
    pub tls: bool,
    /// The host, without the brackets of an IPv6 literal, lowercased.
    pub host: String,
    pub port: u16,
    /// The path of the control channel: [`control::PATH`] under the URL's path prefix.
    pub path: String,
}

impl PlatformUrl {
    /// Parses the platform URL. The path is a prefix the platform is served under (e.g. behind
    /// a reverse proxy): `https://h/` and `https://h` give `/Thingworx/WS`, `https://h/tp` gives
    /// `/tp/Thingworx/WS`; a URL that already ends in `/Thingworx` or `/Thingworx/WS` (as
    /// ThingWorx users often write it) is not doubled.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::new(format!("--url {text:?}: {why}"));
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(text, "http://") {
            (false, rest)
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(bad(&format!(
                "the scheme must be http:// or https:// (the platform's address), not {scheme}://; \
                 the agent derives the WebSocket URL itself"
            )));
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "must not contain user information; pass the key with --app-key",
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if authority.starts_with('[') || authority.matches(':').count() == 1 {
            match split_host_port(authority) {
                Some((host, port)) => (
                    host,
                    parse_port(port).ok_or_else(|| bad("the port must be 1 to 65535"))?,
                ),
                None if authority.starts_with('[') && authority.ends_with(']') => {
                    let host = &authority[1..authority.len() - 1];
                    host.parse::<std::net::Ipv6Addr>()
                        .map_err(|_| bad("the bracketed host is not an IPv6 address"))?;
                    (host, default_port)
                }
                None => return Err(bad("the host and port are not valid")),
            }
        } else if authority.contains(':') {
            return Err(bad(
                "write an IPv6 address in brackets, e.g. https://[::1]:8443",
            ));
        } else {
            (authority, default_port)
        };
        validate_host(host).map_err(|e| bad(&e))?;
        Ok(PlatformUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path: control_path(path),
        })
    }

    /// `host:port` with IPv6 hosts in brackets, as in a `Host` header or a CONNECT request.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The path of a REST resource of the platform, `rest` following `…/Thingworx` (e.g.
    /// `/Things/gw-1/Properties/endpoints` gives `/tp/Thingworx/Things/gw-1/Properties/endpoints`
    /// for the prefix `/tp`).
    pub fn rest_path(&self, rest: &str) -> String {
        let suffix = control::PATH.rsplit_once('/').map_or("", |(_, last)| last);
        let base = self
            .path
            .strip_suffix(suffix)
            .and_then(|p| p.strip_suffix('/'))
            .unwrap_or(&self.path);
        format!("{base}{rest}")
    }

    /// The WebSocket URL of the control channel: `ws(s)://host:port/…/Thingworx/WS`.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }
}

impl fmt::Display for PlatformUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn control_path(prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    // "/Thingworx/WS" = "/Thingworx" + "/WS".
    let (base, last) = control::PATH
        .rsplit_once('/')
        .unwrap_or((control::PATH, ""));
    if prefix.ends_with(control::PATH) {
        prefix.to_string()
    } else if prefix.ends_with(base) {
        format!("{prefix}/{last}")
    } else {
        format!("{prefix}{}", control::PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(url: &str) -> String {
        PlatformUrl::parse(url).unwrap().ws_url()
    }

    #[test]
    fn maps_http_to_ws_and_https_to_wss() {
        assert_eq!(ws("http://example.com"), "ws://example.com:80/Thingworx/WS");
        assert_eq!(
            ws("https://example.com/"),
            "wss://example.com:443/Thingworx/WS"
        );
        assert_eq!(
            ws("HTTP://Example.COM:8080"),
            "ws://example.com:8080/Thingworx/WS"
        );
        assert_eq!(
            ws("https://127.0.0.1:8443"),
            "wss://127.0.0.1:8443/Thingworx/WS"
        );
        assert_eq!(ws("https://[::1]:8443/"), "wss://[::1]:8443/Thingworx/WS");
        assert_eq!(ws("http://[::1]"), "ws://[::1]:80/Thingworx/WS");
    }

    #[test]
    fn keeps_a_path_prefix_without_doubling_thingworx() {
        assert_eq!(ws("https://h/tp"), "wss://h:443/tp/Thingworx/WS");
        assert_eq!(ws("https://h/Thingworx"), "wss://h:443/Thingworx/WS");
        assert_eq!(ws("https://h/Thingworx/"), "wss://h:443/Thingworx/WS");
        assert_eq!(ws("https://h/Thingworx/WS"), "wss://h:443/Thingworx/WS");
        assert_eq!(ws("https://h/tp/Thingworx"), "wss://h:443/tp/Thingworx/WS");
    }

    #[test]
    fn rest_paths_follow_the_prefix() {
        let rest = |url: &str| {
            PlatformUrl::parse(url)
                .unwrap()
                .rest_path("/Things/t/Properties/endpoints")
        };
        assert_eq!(rest("http://h"), "/Thingworx/Things/t/Properties/endpoints");
        assert_eq!(
            rest("https://h/tp/Thingworx/WS"),
            "/tp/Thingworx/Things/t/Properties/endpoints"
        );
    }

    #[test]
    fn refuses_other_schemes_and_bad_authorities() {
        for (url, needle) in [
            ("ws://h", "http:// or https://"),
            ("wss://h", "http:// or https://"),
            ("ftp://h", "http:// or https://"),
            ("h:8080", "must start with"),
            ("https://", "host is empty"),
            ("https://h:0", "port"),
            ("https://h:99999", "port"),
            ("https://h:x", "port"),
            ("https://::1", "brackets"),
            ("https://[zz]:1", "not valid"),
            ("https://u:p@h", "user information"),
            ("https://h/?a=b", "query"),
            ("https://bad host", "not a valid host"),
        ] {
            let err = PlatformUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn display_never_shows_more_than_scheme_and_authority() {
        let u = PlatformUrl::parse("https://[::1]:8443/x").unwrap();
        assert_eq!(u.to_string(), "https://[::1]:8443");
        assert_eq!(u.host, "::1");
    }
}
