//! HTTP CONNECT proxies: the `--proxy` URL, the `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`
//! environment, and the CONNECT exchange itself.

use crate::config::{parse_port, split_host_port, validate_host, ConfigError};
use crate::url::PlatformUrl;
use base64::Engine as _;
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest CONNECT answer head the agent reads.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// An `http://[user:pass@]host[:port]` proxy. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Host without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// User and password for Basic `Proxy-Authorization`, percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl fmt::Display for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl ProxyConfig {
    /// Parses a proxy URL; `source` names where it came from (`--proxy`, `HTTPS_PROXY`) for
    /// the error message. Only `http://` proxies are supported; the port defaults to 80.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        // Never echo the URL: it may hold a password.
        let bad = |why: &str| ConfigError::new(format!("{source}: {why}"));
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "only http:// proxies (HTTP CONNECT) are supported, not {scheme}://"
                )))
            }
            None => return Err(bad("must be a URL like http://[user:pass@]host:port")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(bad("must be http://[user:pass@]host[:port] without a path"));
        }
        let (userinfo, authority) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
                let pass =
                    percent_decode(pass).ok_or_else(|| bad("bad %-escape in the password"))?;
                Some((user, pass))
            }
        };
        let (host, port) = if authority.starts_with('[') && authority.ends_with(']') {
            (&authority[1..authority.len() - 1], 80)
        } else if authority.starts_with('[') || authority.matches(':').count() == 1 {
            let (host, port) =
                split_host_port(authority).ok_or_else(|| bad("the host and port are not valid"))?;
            (
                host,
                parse_port(port).ok_or_else(|| bad("the port must be 1 to 65535"))?,
            )
        } else if authority.contains(':') {
            return Err(bad("write an IPv6 proxy address in brackets"));
        } else {
            (authority, 80)
        };
        validate_host(host).map_err(|e| bad(&e))?;
        Ok(ProxyConfig {
            host: host.to_ascii_lowercase(),
            port,
            credentials,
        })
    }
}

/// Chooses the proxy for `platform`: `--proxy` when given; otherwise `HTTPS_PROXY` /
/// `https_proxy` for an https platform or `HTTP_PROXY` / `http_proxy` for an http one, unless
/// `NO_PROXY` / `no_proxy` matches the platform host. `env` reads a variable (the process
/// environment in the binary, a map in tests); empty values count as unset.
pub fn resolve(
    flag: Option<&str>,
    platform: &PlatformUrl,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProxyConfig>, ConfigError> {
    if let Some(flag) = flag.filter(|f| !f.trim().is_empty()) {
        return ProxyConfig::parse(flag.trim(), "--proxy").map(Some);
    }
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let names: [&str; 2] = if platform.tls {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    let Some((name, value)) = names.iter().find_map(|n| get(n).map(|v| (*n, v))) else {
        return Ok(None);
    };
    let no_proxy = get("NO_PROXY")
        .or_else(|| get("no_proxy"))
        .unwrap_or_default();
    if no_proxy_matches(&no_proxy, &platform.host) {
        return Ok(None);
    }
    ProxyConfig::parse(value.trim(), name).map(Some)
}

/// Whether a `NO_PROXY` list exempts `host`: entries are comma-separated; `*` matches every
/// host; otherwise an entry matches the host itself and its subdomains (`example.com` and
/// `.example.com` both match `example.com` and `a.example.com`). A `:port` on an entry and the
/// brackets of IPv6 addresses are ignored; the comparison ignores case.
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = match split_host_port(entry) {
            Some((h, p)) if parse_port(p).is_some() => h,
            _ => entry,
        };
        let entry = entry
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_start_matches('*')
            .trim_start_matches('.')
            .to_ascii_lowercase();
        !entry.is_empty()
            && (host == entry
                || (host.ends_with(&entry) && host[..host.len() - entry.len()].ends_with('.')))
    })
}

/// Asks the proxy on `stream` to open a tunnel to `target` (`host:port`, IPv6 in brackets).
/// On success the stream carries the tunnel; a non-200 answer is an error naming its status line.
pub async fn connect<S>(stream: &mut S, proxy: &ProxyConfig, target: &str) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str(concat!(
        "User-Agent: thingport-agent/",
        env!("CARGO_PKG_VERSION"),
        "\r\n\r\n"
    ));
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    // Read the answer head byte by byte so no byte of the tunnel is consumed.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            anyhow::bail!(
                "proxy {proxy} sent an answer head longer than {MAX_RESPONSE_HEAD} bytes"
            );
        }
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            anyhow::bail!("proxy {proxy} closed the connection before answering CONNECT");
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("").trim();
    let mut parts = status_line.split_whitespace();
    let version_ok = parts.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let code = parts.next();
    if version_ok && code == Some("200") {
        Ok(())
    } else if version_ok && code == Some("407") {
        anyhow::bail!(
            "proxy {proxy} refused CONNECT to {target}: {status_line} (check the user and password in the proxy URL)"
        )
    } else {
        anyhow::bail!("proxy {proxy} refused CONNECT to {target}: {status_line}")
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
