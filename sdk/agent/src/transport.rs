//! Opening the control channel: TCP (directly or to the proxy), HTTP CONNECT through the
//! proxy, TLS, then the WebSocket upgrade with the `appKey` header and the `thingport.v1`
//! subprotocol.

use crate::config::AgentConfig;
use crate::url::PlatformUrl;
use anyhow::Context as _;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::sync::Arc;
use thingport_protocol::control;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, error::ProtocolError};
use tokio_tungstenite::WebSocketStream;

/// Any byte stream the WebSocket can run over (plain TCP or TLS, maybe through a proxy).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open control channel.
pub type Channel = WebSocketStream<Box<dyn Io>>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The platform answered the upgrade with an HTTP error (e.g. 401 for an unknown or
    /// expired key): the platform's or the operator's business; retried with backoff.
    #[error("the platform refused the connection with HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    /// The network, the proxy, TLS or the handshake failed; retried with backoff.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The WebSocket limits of the control channel.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        // Every send is flushed at once; the buffer bound keeps a stuck peer from growing it.
        .write_buffer_size(0)
        .max_write_buffer_size(4 * control::MAX_MESSAGE_BYTES)
        .max_message_size(Some(control::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(control::MAX_MESSAGE_BYTES))
}

/// What to open: the URL, the headers of the upgrade, the subprotocol to insist on.
pub struct Upgrade<'a> {
    pub url: &'a PlatformUrl,
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub subprotocol: &'static str,
    pub ws_config: WebSocketConfig,
}

/// Opens the control channel; `tls` is the client configuration for `https://` platforms.
pub async fn connect(
    config: &AgentConfig,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Channel, ConnectError> {
    let key = HeaderValue::from_str(config.app_key.expose())
        .map_err(|_| anyhow::anyhow!("the application key is not a valid header value"))?;
    open(
        config,
        tls,
        Upgrade {
            url: &config.url,
            headers: vec![(control::APP_KEY_HEADER, key)],
            subprotocol: control::SUBPROTOCOL_V1,
            ws_config: websocket_config(),
        },
    )
    .await
}

/// Opens a WebSocket the way the control channel is opened (through the proxy, over TLS for
/// `https://`, with the connect and handshake timeouts): the control channel, or a GAS tunnel.
pub async fn open(
    config: &AgentConfig,
    tls: Option<&Arc<ClientConfig>>,
    up: Upgrade<'_>,
) -> Result<Channel, ConnectError> {
    let url = up.url;
    let tcp = dial(config, url).await?;
    tokio::time::timeout(config.handshake_timeout, async {
        let io = secure(config, tcp, tls, url).await?;
        handshake(io, up).await
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the handshake with {} did not finish within {:?}",
            url.authority(),
            config.handshake_timeout
        )
    })?
}

/// Connects by TCP to `url`'s host, or to the proxy when one is configured (within the
/// connect timeout), with `TCP_NODELAY`.
pub async fn dial(config: &AgentConfig, url: &PlatformUrl) -> anyhow::Result<TcpStream> {
    let (dial_host, dial_port, what) = match &config.proxy {
        Some(p) => (p.host.as_str(), p.port, format!("proxy {p}")),
        None => (url.host.as_str(), url.port, url.authority()),
    };
    let tcp = tokio::time::timeout(
        config.connect_timeout,
        TcpStream::connect((dial_host, dial_port)),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "connecting to {what} timed out after {:?}",
            config.connect_timeout
        )
    })?
    .with_context(|| format!("cannot connect to {what}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Turns a connection from [`dial`] into a byte stream to `url`'s host: `CONNECT` through the
/// proxy when one is configured, then TLS for `https://`. No timeout of its own.
pub async fn secure(
    config: &AgentConfig,
    mut tcp: TcpStream,
    tls: Option<&Arc<ClientConfig>>,
    url: &PlatformUrl,
) -> anyhow::Result<Box<dyn Io>> {
    if let Some(proxy) = &config.proxy {
        crate::proxy::connect(&mut tcp, proxy, &url.authority()).await?;
    }
    if !url.tls {
        return Ok(Box::new(tcp));
    }
    let tls = tls.context("no TLS configuration for an https:// URL")?;
    let name = ServerName::try_from(url.host.clone())
        .with_context(|| format!("{:?} is not a valid TLS server name", url.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {} failed", url.authority()))?;
    Ok(Box::new(stream))
}

async fn handshake(io: Box<dyn Io>, up: Upgrade<'_>) -> Result<Channel, ConnectError> {
    let url = up.url;
    let mut request = url
        .ws_url()
        .into_client_request()
        .context("cannot build the WebSocket request")?;
    let headers = request.headers_mut();
    for (name, value) in up.headers {
        headers.insert(name, value);
    }
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(up.subprotocol),
    );
    headers.insert(
        "User-Agent",
        HeaderValue::from_static(crate::AGENT_NAME_VERSION),
    );

    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, io, Some(up.ws_config))
            .await
            .map_err(upgrade_error)?;
    let selected = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if selected != Some(up.subprotocol) {
        return Err(anyhow::anyhow!(
            "{} selected the subprotocol {selected:?}, not {}",
            url.authority(),
            up.subprotocol
        )
        .into());
    }
    Ok(ws)
}

fn upgrade_error(e: tungstenite::Error) -> ConnectError {
    use tungstenite::error::SubProtocolError;
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            ConnectError::Rejected {
                status: status.as_u16(),
                message: server_message(body)
                    .or_else(|| status.canonical_reason().map(str::to_string))
                    .unwrap_or_else(|| "no reason given".into()),
            }
        }
        tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => anyhow::anyhow!(
            "the platform accepted the WebSocket without selecting the subprotocol {} \
             (is --url a Thingport platform?)",
            control::SUBPROTOCOL_V1
        )
        .into(),
        other => anyhow::Error::new(other)
            .context("the WebSocket upgrade failed")
            .into(),
    }
}

/// The platform's explanation in an error body: the `error` (or `message`) field of a JSON
/// object, else the text itself; shortened, on one line.
pub(crate) fn server_message(body: &[u8]) -> Option<String> {
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
                .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string))
        });
    let message = from_json.unwrap_or_else(|| text.to_string());
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    Some(one_line)
}

#[cfg(test)]
mod tests {
    use super::server_message;

    #[test]
    fn server_messages_come_from_json_or_text() {
        assert_eq!(
            server_message(br#"{"error":"unknown or expired application key"}"#).as_deref(),
            Some("unknown or expired application key")
        );
        assert_eq!(
            server_message(b"  missing subprotocol\r\n").as_deref(),
            Some("missing subprotocol")
        );
        assert_eq!(server_message(b""), None);
        assert_eq!(server_message(&[b'x'; 1000]).map(|m| m.len()), Some(300));
    }
}
