//! Attaching the client side of a session to its Global Access Server: TCP, TLS for `https://`
//! GAS URLs, then the WebSocket upgrade on [`tunnel::PATH`] with `Authorization: Bearer
//! <credential>` and the `thingport-tunnel.v1` subprotocol.
//!
//! A small equivalent of the agent's transport rather than a dependency on the agent: the agent's
//! `open` is tied to its configuration (application key, Things, proxy, backoff) and speaks of
//! "the platform" in its errors; this needs only a URL, a credential and the TLS configuration
//! the REST calls already use.

use anyhow::Context as _;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use thingport_protocol::tunnel;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, error::ProtocolError};
use tokio_tungstenite::WebSocketStream;

/// TCP connect timeout to the GAS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshake and WebSocket upgrade together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Any byte stream the WebSocket runs over (TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An attached tunnel WebSocket.
pub type Tunnel = WebSocketStream<Box<dyn Io>>;

/// Where the tunnel goes: derived from the session's `gasUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GasUrl {
    pub tls: bool,
    /// The host, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
}

impl GasUrl {
    /// Parses `http(s)://host[:port][/path]`; the tunnel path replaces the path (as the agent
    /// does, so both sides reach the same place).
    pub fn parse(text: &str) -> anyhow::Result<GasUrl> {
        let url = reqwest::Url::parse(text)
            .with_context(|| format!("the session's GAS URL {text:?} is not a URL"))?;
        let tls = match url.scheme() {
            "https" | "wss" => true,
            "http" | "ws" => false,
            other => anyhow::bail!("the session's GAS URL {text:?} has the scheme {other:?}"),
        };
        let host = url
            .host_str()
            .with_context(|| format!("the session's GAS URL {text:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        Ok(GasUrl { tls, host, port })
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The tunnel's WebSocket URL.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority(), tunnel::PATH)
    }
}

/// The WebSocket limits of a tunnel (the multiplexer's): frames up to [`tunnel::MAX_FRAME`],
/// queued frames sent together.
fn websocket_config() -> WebSocketConfig {
    thingport_tunnel::websocket_config()
}

/// Opens the client side's tunnel WebSocket to `gas` with `credential`.
pub async fn attach(
    gas: &GasUrl,
    credential: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Tunnel> {
    let what = gas.authority();
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((gas.host.as_str(), gas.port)),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!("connecting to the GAS {what} timed out after {CONNECT_TIMEOUT:?}")
    })?
    .with_context(|| format!("cannot connect to the GAS {what}"))?;
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(gas, tcp, credential, tls))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the handshake with the GAS {what} did not finish within {HANDSHAKE_TIMEOUT:?}"
            )
        })?
}

async fn handshake(
    gas: &GasUrl,
    tcp: TcpStream,
    credential: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Tunnel> {
    let what = gas.authority();
    let io: Box<dyn Io> = if gas.tls {
        let tls = tls.context("no TLS configuration for an https:// GAS")?;
        let name = ServerName::try_from(gas.host.clone())
            .with_context(|| format!("{:?} is not a valid TLS server name", gas.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with the GAS {what} failed"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut request = gas
        .ws_url()
        .into_client_request()
        .context("cannot build the tunnel request")?;
    let bearer = HeaderValue::from_str(&format!("Bearer {credential}"))
        .map_err(|_| anyhow::anyhow!("the session's credential is not a valid header value"))?;
    let headers = request.headers_mut();
    headers.insert("Authorization", bearer);
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
    );
    headers.insert(
        "User-Agent",
        HeaderValue::from_static(concat!("thingport/", env!("CARGO_PKG_VERSION"))),
    );
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, io, Some(websocket_config()))
            .await
            .map_err(|e| upgrade_error(&what, e))?;
    let selected = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if selected != Some(tunnel::SUBPROTOCOL_V1) {
        anyhow::bail!(
            "the GAS {what} selected the subprotocol {selected:?}, not {}",
            tunnel::SUBPROTOCOL_V1
        );
    }
    Ok(ws)
}

fn upgrade_error(what: &str, e: tungstenite::Error) -> anyhow::Error {
    use tungstenite::error::SubProtocolError;
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            let message = server_message(body)
                .or_else(|| status.canonical_reason().map(str::to_owned))
                .unwrap_or_else(|| "no reason given".into());
            anyhow::anyhow!(
                "the GAS {what} refused the tunnel with HTTP {}: {message}",
                status.as_u16()
            )
        }
        tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => anyhow::anyhow!(
            "{what} accepted the WebSocket without selecting the subprotocol {} (is the session's \
             gasUrl a Thingport GAS?)",
            tunnel::SUBPROTOCOL_V1
        ),
        other => anyhow::Error::new(other)
            .context(format!("the WebSocket upgrade with the GAS {what} failed")),
    }
}

/// The explanation in an error body: its JSON `error` (or `message`) field, else the text;
/// on one line, at most 300 characters.
fn server_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let from_json = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            ["error", "message"]
                .iter()
                .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_owned))
        });
    let message = from_json.unwrap_or_else(|| text.to_owned());
    Some(
        message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gas_urls_become_tunnel_urls() {
        let g = GasUrl::parse("https://gas.example:8443/").unwrap();
        assert_eq!(g.ws_url(), "wss://gas.example:8443/tunnel");
        let g = GasUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((g.tls, g.port), (false, 9000));
        assert_eq!(g.ws_url(), "ws://127.0.0.1:9000/tunnel");
        let g = GasUrl::parse("https://[::1]").unwrap();
        assert_eq!((g.host.as_str(), g.port), ("::1", 443));
        assert_eq!(g.ws_url(), "wss://[::1]:443/tunnel");
        assert!(GasUrl::parse("ftp://x").is_err());
        assert!(GasUrl::parse("not a url").is_err());
    }

    #[test]
    fn refusal_bodies_are_read() {
        assert_eq!(
            server_message(br#"{"error":"credential expired"}"#).as_deref(),
            Some("credential expired")
        );
        assert_eq!(server_message(b"  \n"), None);
    }
}
