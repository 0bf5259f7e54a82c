//! The stream multiplexer of Thingport tunnels (`thingport-tunnel.v1`, see
//! `thingport_protocol::tunnel`): many TCP connections of one session over one WebSocket, each
//! with its own credit-based flow control, so a stalled connection never stalls its siblings.
//!
//! Both ends run a [`Mux`] over their WebSocket to the GAS:
//! - the Remote Access Client ([`Role::Client`]) calls [`Mux::carry`] for each local connection
//!   (or [`Mux::carry_split`] / [`Mux::carry_io`] for any other byte stream, e.g. stdin and
//!   stdout): it opens a stream (`OPEN`), waits for `OPENED`, then pumps bytes both ways;
//! - the agent ([`Role::Agent`]) answers each `OPEN` by dialling the session's endpoint with its
//!   dialler, answers `OPENED` or `OPEN_FAILED`, then pumps.
//!
//! Per stream: one task, a 64 KiB read into a fresh frame buffer (the header is written in front
//! of the payload, so a frame is built without copying the payload), `DATA` only while the peer
//! has granted credit, `CREDIT` once a quarter window was written to the local socket. One
//! writer task owns the WebSocket's sink and sends what is queued together; the reader
//! dispatches frames to streams. Locks guard only map updates.
//!
//! Not here: opening the WebSocket (TLS, proxies, credentials) and what a session means to the
//! platform; the caller does those and hands over a connected WebSocket.

mod dispatch;
mod stream;

use dispatch::dispatch;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use stream::{pump, Credit, StreamState};
use thingport_protocol::tunnel::{reason_frame, write_frame, Kind, HEADER_LEN, MAX_FRAME};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

/// The most streams open at once in one session; the agent answers `OPEN_FAILED` beyond.
pub const MAX_STREAMS: usize = 16_384;
/// How long an `OPEN` may wait for `OPENED`.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for the WebSocket writer.
const WRITE_QUEUE: usize = 64;
/// How long the end of the tunnel waits to send the last close frame.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// The longest reason a close frame holds (a control frame's 125 bytes less the code).
const MAX_CLOSE_REASON: usize = 123;

/// The WebSocket settings of a tunnel, for both ends: frames up to [`MAX_FRAME`]; frames are
/// gathered in a write buffer and sent together when the multiplexer flushes (it flushes
/// whenever its queue is empty, so nothing waits); reads of up to 64 KiB.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 4 * MAX_FRAME)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME))
}

/// Bytes of frames gathered before a send when more are queued.
const WRITE_BUFFER: usize = 128 * 1024;

/// Which end of the session this is.
#[derive(Clone)]
pub enum Role {
    /// Opens streams for local connections.
    Client,
    /// Accepts streams and dials the endpoint for each with `dial`.
    Agent { dial: Dial },
}

/// The agent's dialler: a new TCP connection to the session's endpoint.
pub type Dial =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> + Send + Sync>;

/// How the multiplexer runs; [`Options::default`] is what [`Mux::start`] uses.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// End the tunnel when the peer sent nothing at all (no frame, no ping) for this long. The
    /// GAS pings every side well within a minute, so a silent WebSocket means a lost peer
    /// (e.g. a GAS whose machine died without closing its connections). `None`: wait forever.
    pub idle_timeout: Option<Duration>,
}

/// How the tunnel's WebSocket ended when no error ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code the peer sent (1000 normal, 1001 going away, 1008 policy, ...).
    pub code: u16,
    /// The peer's reason, e.g. `the agent side was lost`.
    pub reason: String,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "close code {}", self.code)
        } else {
            write!(f, "{} (close code {})", self.reason, self.code)
        }
    }
}

/// Why carrying a connection (or the tunnel) failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the agent could not open the connection: {0}")]
    OpenFailed(String),
    #[error("the agent did not answer the open within {0:?}")]
    OpenTimeout(Duration),
    #[error("the tunnel is closed")]
    Closed,
    #[error("the stream was reset: {0}")]
    Reset(String),
    #[error("local socket: {0}")]
    Io(#[from] io::Error),
    /// Reading from or writing to the tunnel's WebSocket failed (the network, or the peer broke
    /// the WebSocket protocol).
    #[error("the tunnel's WebSocket failed")]
    WebSocket(#[source] tungstenite::Error),
    /// [`Options::idle_timeout`] passed without a message from the peer.
    #[error("nothing was received on the tunnel for {0:?}")]
    Idle(Duration),
}

/// What the reader knows of a stream.
pub(crate) struct Entry {
    /// Inbound payloads for the local socket; dropped on `FIN`.
    inbound: Option<mpsc::UnboundedSender<Bytes>>,
    /// Inbound bytes not yet written to the local socket (bounded by the window we granted).
    queued: Arc<AtomicU32>,
    credit: Arc<Credit>,
    /// Completes the client's pending open.
    opened: Option<oneshot::Sender<Result<(), String>>>,
    /// Ends the stream's pump (a `RESET`, or the tunnel closing).
    cancel: Arc<Notify>,
}

pub(crate) struct Shared {
    streams: Mutex<HashMap<u32, Entry>>,
    next_stream: AtomicU32,
    out: mpsc::Sender<Message>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TunnelError> {
        self.out
            .send(Message::Binary(Bytes::from(frame)))
            .await
            .map_err(|_| TunnelError::Closed)
    }
    fn forget(&self, stream: u32) {
        self.remove(stream);
    }
    /// Removes a stream. When that leaves the session without streams after a load that grew the
    /// table's capacity to [`RELEASE_AFTER`] or more (some 230+ streams open at once), the table is
    /// shrunk and the process's free memory is given back to the system (see [`release_memory`]).
    pub(crate) fn remove(&self, stream: u32) -> Option<Entry> {
        let mut streams = lock(&self.streams);
        let entry = streams.remove(&stream);
        if entry.is_some() && streams.is_empty() && streams.capacity() >= RELEASE_AFTER {
            *streams = HashMap::new();
            drop(streams);
            tokio::task::spawn_blocking(release_memory);
        }
        entry
    }
}

/// The stream-table capacity from which, once every stream has closed, memory is given back.
const RELEASE_AFTER: usize = 256;

/// Gives the allocator's free memory back to the system. glibc keeps freed memory in per-thread
/// arenas that a multi-threaded process fragments, so without this a relay that carried 10,000
/// connections would keep their ~100 MiB after they closed; `malloc_trim` returns the free
/// pages of every arena. It takes the arenas' locks for a moment, so it runs on a blocking
/// thread, and only after a large load (see [`Shared::remove`]).
#[allow(unsafe_code)]
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes a plain
    // integer and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One side of a session's tunnel.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

impl Mux {
    /// Runs the multiplexer over `ws` (a connected WebSocket) with the default [`Options`].
    /// Returns the handle and a future that ends when the WebSocket does (run it in a task; every
    /// stream ends with it): `Ok(Some(..))` with the peer's close frame, `Ok(None)` when the
    /// WebSocket ended without one, `Err` when it failed.
    pub fn start<S>(
        ws: S,
        role: Role,
    ) -> (
        Mux,
        impl Future<Output = Result<Option<Closed>, TunnelError>>,
    )
    where
        S: Stream<Item = Result<Message, tungstenite::Error>>
            + Sink<Message, Error = tungstenite::Error>
            + Send
            + Unpin
            + 'static,
    {
        Mux::start_with(ws, role, Options::default())
    }

    /// [`Mux::start`] with explicit [`Options`].
    pub fn start_with<S>(
        ws: S,
        role: Role,
        options: Options,
    ) -> (
        Mux,
        impl Future<Output = Result<Option<Closed>, TunnelError>>,
    )
    where
        S: Stream<Item = Result<Message, tungstenite::Error>>
            + Sink<Message, Error = tungstenite::Error>
            + Send
            + Unpin
            + 'static,
    {
        let (out, mut out_rx) = mpsc::channel::<Message>(WRITE_QUEUE);
        let shared = Arc::new(Shared {
            streams: Mutex::new(HashMap::new()),
            next_stream: AtomicU32::new(1),
            out,
        });
        let mux = Mux {
            shared: shared.clone(),
        };
        let (mut sink, mut source) = ws.split();
        let run = async move {
            let writer = async {
                // Everything queued is written together and flushed once: with a WebSocket
                // write buffer ([`websocket_config`]) a burst of frames is one send.
                while let Some(m) = out_rx.recv().await {
                    sink.feed(m).await.map_err(TunnelError::WebSocket)?;
                    while let Ok(m) = out_rx.try_recv() {
                        sink.feed(m).await.map_err(TunnelError::WebSocket)?;
                    }
                    sink.flush().await.map_err(TunnelError::WebSocket)?;
                }
                let _ = sink.close().await;
                Ok::<Option<Closed>, TunnelError>(None)
            };
            let reader = async {
                // The idle deadline is one timer, re-armed lazily when it fires (not a timer per
                // message).
                let idle = options.idle_timeout;
                let mut last = Instant::now();
                let silence = tokio::time::sleep(idle.unwrap_or_default());
                tokio::pin!(silence);
                loop {
                    let next = tokio::select! {
                        biased;
                        next = source.next() => next,
                        () = &mut silence, if idle.is_some() => {
                            let idle = idle.unwrap_or_default();
                            let quiet_until = last + idle;
                            if Instant::now() >= quiet_until {
                                return Err(TunnelError::Idle(idle));
                            }
                            silence.as_mut().reset(quiet_until);
                            continue;
                        }
                    };
                    if idle.is_some() {
                        last = Instant::now();
                    }
                    let Some(m) = next else {
                        return Ok(None);
                    };
                    match m.map_err(TunnelError::WebSocket)? {
                        Message::Binary(bytes) => dispatch(&shared, &role, bytes).await,
                        Message::Close(frame) => {
                            return Ok(frame.map(|f| Closed {
                                code: u16::from(f.code),
                                reason: f.reason.as_str().to_owned(),
                            }))
                        }
                        _ => {} // pings are answered by the WebSocket itself
                    }
                }
            };
            let r = tokio::select! {
                r = writer => r,
                r = reader => r,
            };
            // Complete the closing handshake (the answer to the peer's close frame, or ours),
            // bounded: a peer that stopped reading does not hold the end of the tunnel.
            let _ = tokio::time::timeout(CLOSE_FLUSH, sink.close()).await;
            // Every stream ends with the tunnel.
            let streams: Vec<Entry> = lock(&shared.streams).drain().map(|(_, e)| e).collect();
            for mut e in streams {
                e.cancel.notify_one();
                if let Some(o) = e.opened.take() {
                    let _ = o.send(Err("the tunnel closed".into()));
                }
            }
            r
        };
        (mux, run)
    }

    /// Closes the tunnel's WebSocket normally (code 1000 with `reason`, cut to what a close frame
    /// holds). The run future ends when the peer answers the close; every stream ends with it.
    pub async fn close(&self, reason: &str) -> Result<(), TunnelError> {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: reason[..end].into(),
        };
        self.shared
            .out
            .send(Message::Close(Some(frame)))
            .await
            .map_err(|_| TunnelError::Closed)
    }

    /// Client side: carries one local TCP connection through the tunnel until both directions
    /// end (`TCP_NODELAY` is set on it).
    pub async fn carry(&self, local: TcpStream) -> Result<(), TunnelError> {
        let _ = local.set_nodelay(true);
        let (rd, wr) = local.into_split();
        self.carry_split(rd, wr).await
    }

    /// Client side: carries any byte stream (e.g. a Unix socket or a TLS stream), split into its
    /// halves with `tokio::io::split`.
    pub async fn carry_io<S>(&self, io: S) -> Result<(), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (rd, wr) = tokio::io::split(io);
        self.carry_split(rd, wr).await
    }

    /// Client side: carries a connection given as a read half and a write half (e.g. stdin and
    /// stdout). The end of `rd` half-closes the stream (`FIN`); the peer's `FIN` shuts `wr` down.
    /// Returns when both directions ended.
    pub async fn carry_split<R, W>(&self, rd: R, wr: W) -> Result<(), TunnelError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let (opened_tx, opened_rx) = oneshot::channel();
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU32::new(0));
        let credit = Arc::new(Credit::new());
        let cancel = Arc::new(Notify::new());
        lock(&self.shared.streams).insert(
            id,
            Entry {
                inbound: Some(inbound_tx),
                queued: queued.clone(),
                credit: credit.clone(),
                opened: Some(opened_tx),
                cancel: cancel.clone(),
            },
        );
        let mut open = Vec::with_capacity(HEADER_LEN);
        write_frame(&mut open, Kind::Open, id, &[]);
        if let Err(e) = self.shared.send(open).await {
            self.shared.forget(id);
            return Err(e);
        }
        let answer = tokio::time::timeout(OPEN_TIMEOUT, opened_rx).await;
        match answer {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => {
                self.shared.forget(id);
                return Err(TunnelError::OpenFailed(reason));
            }
            Ok(Err(_)) => {
                self.shared.forget(id);
                return Err(TunnelError::Closed);
            }
            Err(_) => {
                self.shared.forget(id);
                let _ = self
                    .shared
                    .send(reason_frame(Kind::Reset, id, "open timed out"))
                    .await;
                return Err(TunnelError::OpenTimeout(OPEN_TIMEOUT));
            }
        }
        let stream = StreamState {
            id,
            inbound: inbound_rx,
            queued,
            credit,
            cancel,
        };
        pump(&self.shared, stream, rd, wr).await
    }
}
