//! The test harness: an in-process fake platform (tokio-tungstenite server side, optionally
//! behind TLS, that also answers the REST read of a Thing's `endpoints` property) that records
//! what the agent does, an agent runner that captures its logs, and waits on conditions with
//! deadlines.

use crate::rest::{self, Answer, Prefixed};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thingport_agent::{AgentConfig, AppKey};
use thingport_protocol::control::{self, codes, encode, AgentMessage, PlatformMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::instrument::WithSubscriber;

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(15);
pub const APP_KEY: &str = "test-app-key-0123456789";

/// What the fake platform does; change it while it runs with [`FakePlatform::behaviour`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub app_key: String,
    /// Answer this many upcoming upgrades with 401 and a JSON error body.
    pub reject_401: usize,
    /// Refuse this many upcoming binds of each Thing, with `refuse_code`.
    pub refuse_binds: HashMap<String, usize>,
    pub refuse_code: String,
    pub send_welcome: bool,
    pub ping_interval_ms: u64,
    /// The value of each Thing's `endpoints` property (an InfoTable), for
    /// `GET /Thingworx/Things/{t}/Properties/endpoints`; a Thing not here answers 404.
    pub endpoints: HashMap<String, serde_json::Value>,
    /// Answer property reads with this status and `{"error": message}` instead.
    pub endpoints_error: Option<(u16, String)>,
    /// Never answer property reads (the connection stays open).
    pub endpoints_hang: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            app_key: APP_KEY.into(),
            reject_401: 0,
            refuse_binds: HashMap::new(),
            refuse_code: codes::DISABLED.into(),
            send_welcome: true,
            ping_interval_ms: control::PING_INTERVAL_MS,
            endpoints: HashMap::new(),
            endpoints_error: None,
            endpoints_hang: false,
        }
    }
}

/// What the fake platform saw, in order. `conn` numbers connections from 1.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Upgrade {
        conn: usize,
        status: u16,
        app_key: Option<String>,
        protocols: Option<String>,
    },
    TlsFailed {
        conn: usize,
        error: String,
    },
    Connected {
        conn: usize,
    },
    Received {
        conn: usize,
        message: AgentMessage,
    },
    Malformed {
        conn: usize,
        text: String,
    },
    Ping {
        conn: usize,
    },
    Pong {
        conn: usize,
    },
    Closed {
        conn: usize,
        code: Option<u16>,
        reason: String,
    },
    Ended {
        conn: usize,
    },
    /// A plain HTTP request (not an upgrade) and the status it was answered with.
    Http {
        method: String,
        path: String,
        app_key: Option<String>,
        accept: Option<String>,
        status: u16,
    },
}

/// The `endpoints` property value with these `(name, host, port)` rows.
pub fn endpoints(rows: &[(&str, &str, u16)]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|(name, host, port)| {
            serde_json::json!({"name": name, "protocol": "TCP", "host": host, "port": port})
        })
        .collect();
    serde_json::json!({"dataShape": {"fieldDefinitions": {}}, "rows": rows})
}

/// Something the test makes the platform do on one connection.
#[derive(Debug)]
pub enum Cmd {
    Send(PlatformMessage),
    SendText(String),
    Ping,
    /// Send a close frame with this code and reason.
    Close(u16, String),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stop reading and writing, but keep the connection open.
    Freeze,
}

struct Shared {
    events: Mutex<Vec<Event>>,
    version: watch::Sender<u64>,
    behaviour: Mutex<Behaviour>,
    commands: Mutex<HashMap<usize, mpsc::Sender<Cmd>>>,
}

impl Shared {
    fn push(&self, event: Event) {
        self.events.lock().unwrap().push(event);
        self.version.send_modify(|v| *v += 1);
    }
}

pub struct FakePlatform {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePlatform {
    pub async fn start(behaviour: Behaviour) -> FakePlatform {
        Self::start_with(behaviour, None).await
    }

    pub async fn start_tls(
        behaviour: Behaviour,
        tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> FakePlatform {
        Self::start_with(behaviour, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> FakePlatform {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            events: Mutex::new(Vec::new()),
            version: watch::channel(0).0,
            behaviour: Mutex::new(behaviour),
            commands: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            let mut next = 0;
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                next += 1;
                let (conn, shared, tls) = (next, s.clone(), tls.clone());
                conns.spawn(async move {
                    match tls {
                        None => serve(tcp, conn, &shared).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => serve(stream, conn, &shared).await,
                            Err(e) => shared.push(Event::TlsFailed {
                                conn,
                                error: e.to_string(),
                            }),
                        },
                    }
                });
            }
        });
        FakePlatform { addr, shared, task }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn behaviour(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.shared.behaviour.lock().unwrap());
    }

    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Sends a command to connection `conn`.
    pub async fn send(&self, conn: usize, cmd: Cmd) {
        let tx = self.shared.commands.lock().unwrap().get(&conn).cloned();
        tx.expect("no such connection").send(cmd).await.unwrap();
    }

    /// Waits until `f` finds something in the events, or fails the test after [`DEADLINE`].
    pub async fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&[Event]) -> Option<T>) -> T {
        let mut rx = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(t) = f(&self.shared.events.lock().unwrap()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!("timed out waiting for {what}; events: {:#?}", self.events());
            }
        }
    }

    /// Waits for the `n`th (1-based) connection that completed the upgrade.
    pub async fn connected(&self, n: usize) -> usize {
        self.wait_for(&format!("connection #{n}"), |events| {
            events
                .iter()
                .filter_map(|e| match e {
                    Event::Connected { conn } => Some(*conn),
                    _ => None,
                })
                .nth(n - 1)
        })
        .await
    }

    /// Waits until the agent sent `bind` for `thing` on `conn` `count` times; returns the ids.
    pub async fn binds(&self, conn: usize, thing: &str, count: usize) -> Vec<u64> {
        self.wait_for(
            &format!("{count} bind(s) of {thing} on #{conn}"),
            |events| {
                let ids: Vec<u64> = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Received {
                            conn: c,
                            message: AgentMessage::Bind { id, thing: t },
                        } if *c == conn && t == thing => Some(*id),
                        _ => None,
                    })
                    .collect();
                (ids.len() >= count).then_some(ids)
            },
        )
        .await
    }

    /// The plain HTTP requests the platform answered.
    pub fn http_requests(&self) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| matches!(e, Event::Http { .. }))
            .collect()
    }

    /// Waits for the response to request `id` on `conn`.
    pub async fn response(&self, conn: usize, id: u64) -> AgentMessage {
        self.wait_for(&format!("response {id} on #{conn}"), |events| {
            events.iter().find_map(|e| match e {
                Event::Received {
                    conn: c,
                    message: m @ AgentMessage::Response { id: i, .. },
                } if *c == conn && *i == id => Some(m.clone()),
                _ => None,
            })
        })
        .await
    }
}

/// Reads a request head; a WebSocket upgrade goes on to the control channel, anything else is
/// answered as a REST call ([`crate::rest`]).
async fn serve<S>(mut stream: S, conn: usize, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.contains("upgrade: websocket") {
        let stream = Prefixed {
            head,
            at: 0,
            inner: stream,
        };
        return serve_ws(stream, conn, shared).await;
    }
    let behaviour = shared.behaviour.lock().unwrap().clone();
    match rest::answer(&head, &behaviour) {
        Answer::Hang(event) => {
            shared.push(event);
            std::future::pending::<()>().await;
        }
        Answer::Respond(event, response) => {
            shared.push(event);
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
        }
    }
}

// The handshake callback's error type is tungstenite's `ErrorResponse`, large by its nature.
#[allow(clippy::result_large_err)]
async fn serve_ws<S>(stream: S, conn: usize, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let mut upgrade = None;
    let reject = behaviour.reject_401 > 0;
    if reject {
        shared.behaviour.lock().unwrap().reject_401 -= 1;
    }
    let callback = |request: &Request, mut response: Response| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let app_key = header(control::APP_KEY_HEADER);
        let protocols = header("Sec-WebSocket-Protocol");
        let offered = protocols
            .as_deref()
            .is_some_and(|p| p.split(',').any(|p| p.trim() == control::SUBPROTOCOL_V1));
        let status = if reject || app_key.as_deref() != Some(behaviour.app_key.as_str()) {
            401
        } else if !offered {
            400
        } else {
            101
        };
        upgrade = Some(Event::Upgrade {
            conn,
            status,
            app_key,
            protocols,
        });
        let body = match status {
            401 => r#"{"error":"unknown or expired application key"}"#,
            400 => r#"{"error":"offer the subprotocol thingport.v1"}"#,
            _ => {
                response.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(control::SUBPROTOCOL_V1),
                );
                return Ok(response);
            }
        };
        let mut error = ErrorResponse::new(Some(body.to_string()));
        *error.status_mut() = StatusCode::from_u16(status).unwrap();
        Err(error)
    };
    let accepted = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    if let Some(event) = upgrade {
        shared.push(event);
    }
    let Ok(mut ws) = accepted else { return };
    let (tx, mut rx) = mpsc::channel(16);
    shared.commands.lock().unwrap().insert(conn, tx);
    shared.push(Event::Connected { conn });
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { break };
                match frame {
                    Message::Text(text) => match AgentMessage::decode(&text) {
                        Ok(message) => {
                            shared.push(Event::Received { conn, message: message.clone() });
                            if let Some(answer) = answer(shared, message) {
                                if ws.send(Message::text(encode(&answer))).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(_) => shared.push(Event::Malformed { conn, text: text.to_string() }),
                    },
                    Message::Ping(_) => shared.push(Event::Ping { conn }),
                    Message::Pong(_) => shared.push(Event::Pong { conn }),
                    Message::Close(frame) => shared.push(Event::Closed {
                        conn,
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    }),
                    _ => {}
                }
            }
            cmd = rx.recv() => {
                let sent = match cmd {
                    Some(Cmd::Send(m)) => ws.send(Message::text(encode(&m))).await,
                    Some(Cmd::SendText(t)) => ws.send(Message::text(t)).await,
                    Some(Cmd::Ping) => ws.send(Message::Ping(Default::default())).await,
                    Some(Cmd::Close(code, reason)) => {
                        ws.close(Some(CloseFrame { code: code.into(), reason: reason.into() })).await
                    }
                    Some(Cmd::Drop) | None => break,
                    Some(Cmd::Freeze) => {
                        // Hold the connection open without reading until the platform stops.
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
        }
    }
    shared.commands.lock().unwrap().remove(&conn);
    shared.push(Event::Ended { conn });
}

fn answer(shared: &Shared, message: AgentMessage) -> Option<PlatformMessage> {
    let mut behaviour = shared.behaviour.lock().unwrap();
    match message {
        AgentMessage::Hello { .. } if behaviour.send_welcome => Some(PlatformMessage::Welcome {
            server: "fake-platform/0".into(),
            max_things: 10,
            ping_interval_ms: behaviour.ping_interval_ms,
        }),
        AgentMessage::Bind { id, thing } => match behaviour.refuse_binds.get_mut(&thing) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Some(PlatformMessage::BindRefused {
                    id,
                    reason: format!("Thing '{thing}' is disabled"),
                    thing,
                    code: behaviour.refuse_code.clone(),
                })
            }
            _ => Some(PlatformMessage::Bound { id, thing }),
        },
        _ => None,
    }
}

/// The agent's captured log output (all levels from debug up, no colours).
#[derive(Clone, Default)]
pub struct Logs {
    text: Arc<Mutex<String>>,
    version: Arc<watch::Sender<u64>>,
}

impl Logs {
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits until the logs contain every one of `needles` on one line; returns that line.
    pub async fn wait_for_line(&self, needles: &[&str]) -> String {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let found = self
                .text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string);
            if let Some(line) = found {
                return line;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out waiting for a log line with {needles:?}; logs:\n{}",
                    self.text()
                );
            }
        }
    }

    /// How many lines contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }
}

struct LogWriter(Logs);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .text
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        self.0.version.send_modify(|v| *v += 1);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running agent (the library's `run`), with its logs captured.
pub struct Agent {
    pub logs: Logs,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Agent {
    pub fn start(config: AgentConfig) -> Agent {
        let logs = Logs::default();
        let writer_logs = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || LogWriter(writer_logs.clone()))
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(thingport_agent::run(config, shutdown).with_subscriber(subscriber));
        Agent {
            logs,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Requests shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the agent did not stop in time")
            .expect("the agent task panicked")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if std::thread::panicking() {
            eprintln!("--- agent logs ---\n{}", self.logs.text());
        }
    }
}

/// A configuration for `url` with fast retries, for tests.
pub fn config(url: &str, things: &[&str]) -> AgentConfig {
    let mut c =
        AgentConfig::new(url, AppKey::new(APP_KEY).unwrap(), things.iter().copied()).unwrap();
    c.min_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(100);
    c
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
