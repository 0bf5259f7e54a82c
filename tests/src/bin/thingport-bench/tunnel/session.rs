//! `StartSession` → first echoed byte through a new session, done in this process the way
//! `thingport connect` does it (`sdk/client/src/connect.rs` and `connect/attach.rs`), so that
//! the time of starting a process is not in the figure:
//!
//! 1. `POST /Thingworx/Things/gw-1/Services/StartSession {"remoteEndpoint": "echo"}` as the
//!    operator (Basic auth) on a keep-alive HTTP/1.1 connection opened before the clock starts;
//!    the answer's row carries `sessionId`, `gasUrl` and the client `credential`;
//! 2. a new TCP connection to the GAS and the WebSocket upgrade on `gasUrl` + `/tunnel` with
//!    `Authorization: Bearer <credential>` and subprotocol `thingport-tunnel.v1` (the RAC's
//!    WebSocket limits);
//! 3. `thingport_tunnel::Mux::start(ws, Role::Client)`, one stream carried (`Mux::carry_io` over
//!    an in-memory duplex pipe standing for the local socket), one byte written into it, and
//!    the clock stops when that byte comes back from the echo server behind the agent.
//!
//! Then, untimed for the figure but recorded: `EndSession` as the operator, and the tunnel's end.

use crate::http::{snippet, Auth, Conn, Target};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thingport_protocol::tunnel;
use thingport_tunnel::{Mux, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Longest one session (start, attach, first byte) may take before it counts as failed.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the tunnel may take to end after `EndSession`.
const END_WAIT: Duration = Duration::from_secs(5);

/// The phases of one session, each from the end of the previous one.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionTimes {
    /// `StartSession` sent → its answer read.
    pub start_call: Duration,
    /// TCP connect + WebSocket upgrade with the GAS.
    pub attach: Duration,
    /// The stream opened (`OPEN` → `OPENED`) and one byte there and back.
    pub first_byte: Duration,
    /// The sum of the three: the figure.
    pub total: Duration,
    /// `EndSession` sent → answered (not part of the figure).
    pub end_call: Duration,
}

/// The operator's REST connection.
pub struct Operator {
    addr: SocketAddr,
    target: Target,
    conn: Option<Conn>,
    used: Instant,
}

impl Operator {
    pub fn new(addr: SocketAddr, password: &str) -> Result<Self> {
        Ok(Operator {
            addr,
            target: Target::new(
                addr,
                &Auth::Basic {
                    user: super::site::OPERATOR.into(),
                    password: password.into(),
                },
            )?,
            conn: None,
            used: Instant::now(),
        })
    }

    /// A connection that the server has not closed for idleness (it does after 10 s): opened
    /// before any clock starts.
    pub async fn ready(&mut self) -> Result<()> {
        if self.conn.is_none() || self.used.elapsed() > Duration::from_secs(5) {
            self.conn = Some(Conn::connect(self.addr).await?);
        }
        Ok(())
    }

    pub async fn call(&mut self, service: &str, body: Value) -> Result<Value> {
        let path = format!(
            "/Thingworx/Things/{}/Services/{service}",
            super::site::DEVICE
        );
        let req = self.target.prepare(&path, Some(&body))?;
        let conn = self.conn.as_mut().context("no connection")?;
        let r = conn.send(req.request()).await;
        self.used = Instant::now();
        let (status, bytes) = match r {
            Ok(a) => a,
            Err(e) => {
                self.conn = None;
                return Err(e.context(format!("{service}: no answer")));
            }
        };
        if status != hyper::StatusCode::OK {
            bail!("{service} answered {status}: {}", snippet(&bytes));
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{service}: answer is not JSON: {}", snippet(&bytes)))
    }
}

/// `ws://host:port/tunnel` of a `gasUrl` (`http://host:port`; the path is replaced, as the RAC does).
fn tunnel_url(gas_url: &str) -> Result<String> {
    let rest = gas_url.strip_prefix("http://").with_context(|| {
        format!("gasUrl {gas_url:?} is not http:// (this benchmark runs plain WebSocket)")
    })?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(format!("ws://{authority}{}", tunnel::PATH))
}

/// One session: start, attach, one byte through, end. Fails when any step fails or the byte
/// comes back changed.
pub async fn one(op: &mut Operator, byte: u8) -> Result<SessionTimes> {
    op.ready().await?;
    let mut t = SessionTimes::default();
    let t0 = Instant::now();
    let started = tokio::time::timeout(SESSION_TIMEOUT, start_and_echo(op, byte, &mut t)).await;
    let (id, mux, run, carry, mut local) = match started {
        Ok(r) => r?,
        Err(_) => bail!("a session did not carry its first byte within {SESSION_TIMEOUT:?}"),
    };
    t.total = t0.elapsed();
    let t4 = Instant::now();
    let ended = op.call("EndSession", json!({"sessionId": id})).await;
    t.end_call = t4.elapsed();
    ended.with_context(|| format!("EndSession {id}"))?;
    let _ = local.shutdown().await;
    drop(local);
    let _ = mux.close("benchmark session done").await;
    let _ = tokio::time::timeout(END_WAIT, run).await;
    carry.abort();
    Ok(t)
}

type Started = (
    String,
    Mux,
    tokio::task::JoinHandle<
        Result<Option<thingport_tunnel::Closed>, thingport_tunnel::TunnelError>,
    >,
    tokio::task::JoinHandle<()>,
    tokio::io::DuplexStream,
);

async fn start_and_echo(op: &mut Operator, byte: u8, t: &mut SessionTimes) -> Result<Started> {
    let t0 = Instant::now();
    let v = op
        .call("StartSession", json!({"remoteEndpoint": "echo"}))
        .await?;
    t.start_call = t0.elapsed();
    let row = &v["rows"][0];
    let (Some(id), Some(gas_url), Some(credential)) = (
        row["sessionId"].as_str(),
        row["gasUrl"].as_str(),
        row["credential"].as_str(),
    ) else {
        bail!(
            "StartSession answered no sessionId, gasUrl or credential: {}",
            snippet(v.to_string().as_bytes())
        );
    };
    let t1 = Instant::now();
    let url = tunnel_url(gas_url)?;
    let authority = url["ws://".len()..].split('/').next().unwrap_or_default();
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to the GAS {authority}"))?;
    tcp.set_nodelay(true)?;
    let mut request = url.as_str().into_client_request()?;
    let h = request.headers_mut();
    h.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {credential}"))?,
    );
    h.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(tunnel::MAX_FRAME))
        .max_frame_size(Some(tunnel::MAX_FRAME));
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .with_context(|| format!("session {id}: the WebSocket upgrade with the GAS failed"))?;
    ensure!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            == Some(tunnel::SUBPROTOCOL_V1),
        "session {id}: the GAS did not select {}",
        tunnel::SUBPROTOCOL_V1
    );
    t.attach = t1.elapsed();
    let t2 = Instant::now();
    let (mux, run) = Mux::start(ws, Role::Client);
    let run = tokio::spawn(run);
    let (mut local, far) = tokio::io::duplex(64 * 1024);
    let carrier = mux.clone();
    let carry = tokio::spawn(async move {
        let _ = carrier.carry_io(far).await;
    });
    local.write_all(&[byte]).await?;
    let mut back = [0u8; 1];
    local
        .read_exact(&mut back)
        .await
        .with_context(|| format!("session {id}: reading the echoed byte"))?;
    t.first_byte = t2.elapsed();
    ensure!(
        back[0] == byte,
        "session {id}: the echoed byte came back changed"
    );
    Ok((id.to_string(), mux, run, carry, local))
}
