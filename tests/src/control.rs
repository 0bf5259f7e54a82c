//! A raw control-channel client (`thingport.v1` over WebSocket) for tests that must send what a
//! real agent never would: malformed or oversized frames, binds out of order, silence.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use thingport_protocol::control::{self, encode, AgentMessage, PlatformMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`ControlClient::recv`] waits for a message.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ControlClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// What an upgrade that failed answered.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// What came instead of a message.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame: status and reason.
    Closed(u16, String),
    /// The socket ended without a close frame.
    Dropped,
    /// Nothing within the timeout.
    Silent,
}

impl ControlClient {
    /// Opens a WebSocket to `/Thingworx/WS` with `appKey: key` (when given) and the subprotocols.
    pub async fn connect_with(
        addr: SocketAddr,
        key: Option<&str>,
        subprotocols: &[&str],
    ) -> Result<ControlClient, Refused> {
        Self::connect_with_headers(addr, key, subprotocols, &[]).await
    }

    /// As [`ControlClient::connect_with`], with extra request headers (a cookie, an Origin).
    pub async fn connect_with_headers(
        addr: SocketAddr,
        key: Option<&str>,
        subprotocols: &[&str],
        headers: &[(&'static str, &str)],
    ) -> Result<ControlClient, Refused> {
        let url = format!("ws://{addr}{}", control::PATH);
        let mut req = url.into_client_request().expect("request");
        for (name, value) in headers {
            req.headers_mut()
                .insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        if let Some(key) = key {
            req.headers_mut().insert(
                control::APP_KEY_HEADER,
                HeaderValue::from_str(key).expect("key header"),
            );
        }
        if !subprotocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&subprotocols.join(", ")).expect("protocol header"),
            );
        }
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(16 << 20);
        config.max_frame_size = Some(16 << 20);
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(req, Some(config), true),
        )
        .await
        .expect("the upgrade did not finish within 10 s");
        match connected {
            Ok((ws, _)) => Ok(ControlClient { ws, next_id: 1 }),
            Err(WsError::Http(resp)) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    /// Connects with `thingport.v1`, says hello and checks the welcome.
    pub async fn greeted(addr: SocketAddr, key: &str) -> ControlClient {
        let mut c = Self::connect_with(addr, Some(key), &[control::SUBPROTOCOL_V1])
            .await
            .unwrap_or_else(|r| panic!("upgrade refused: {} {}", r.status, r.body));
        c.send(&AgentMessage::Hello {
            agent: "e2e-raw/1".into(),
        })
        .await;
        match c.recv().await {
            Ok(PlatformMessage::Welcome { .. }) => c,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, m: &AgentMessage) {
        self.send_raw(Message::Text(encode(m).into())).await
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Binds `thing` and returns the platform's answer.
    pub async fn bind(&mut self, thing: &str) -> PlatformMessage {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&AgentMessage::Bind {
            id,
            thing: thing.into(),
        })
        .await;
        self.recv().await.expect("an answer to bind")
    }

    /// The next protocol message (pings are answered by tungstenite and skipped).
    pub async fn recv(&mut self) -> Result<PlatformMessage, Ended> {
        self.recv_within(RECV_TIMEOUT).await
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> Result<PlatformMessage, Ended> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            match next {
                Err(_) => return Err(Ended::Silent),
                Ok(None) | Ok(Some(Err(_))) => return Err(Ended::Dropped),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Ok(PlatformMessage::decode(&t).expect("a valid platform message"))
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Err(f
                        .map(|f| Ended::Closed(f.code.into(), f.reason.to_string()))
                        .unwrap_or(Ended::Dropped))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
