//! The stream multiplexer of Thingport tunnels (`thingport-tunnel.v1`, see
//! `thingport_protocol::tunnel`): many TCP connections of one session over one WebSocket, each
//! with its own credit-based flow control, so a stalled connection never stalls its siblings.
//!
//! Both ends run a [`Mux`] over their WebSocket to the GAS:
//! - the Remote Access Client ([`Role::Client`]) calls [`Mux::carry`] for each local connection: it
//!   opens a stream (`OPEN`), waits for `OPENED`, then pumps bytes both ways;
//! - the agent ([`Role::Agent`]) answers each `OPEN` by dialling the session's endpoint with its
//!   dialler, answers `OPENED` or `OPEN_FAILED`, then pumps.
//!
//! Per stream: one task, a 64 KiB read into a fresh frame buffer (the header is written in front
//! of the payload, so a frame is built without copying the payload), `DATA` only while the peer
//! has granted credit, `CREDIT` after each write to the local socket. One writer task owns the
//! WebSocket's sink; the reader dispatches frames to streams. Locks guard only map updates.

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use thingport_protocol::tunnel::{
    credit_frame, header, reason_frame, write_frame, Frame, Kind, HEADER_LEN, INITIAL_WINDOW,
    MAX_DATA,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

/// How long an `OPEN` may wait for `OPENED`.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for the WebSocket writer.
const WRITE_QUEUE: usize = 64;

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

/// Why carrying a connection failed.
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
}

/// Send credit of one stream: bytes the peer has allowed us to send.
struct Credit {
    avail: AtomicU32,
    notify: Notify,
}

impl Credit {
    fn new() -> Credit {
        Credit {
            avail: AtomicU32::new(INITIAL_WINDOW),
            notify: Notify::new(),
        }
    }
    fn grant(&self, n: u32) {
        self.avail.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_one();
    }
    /// Takes up to `max` bytes of credit, waiting until there is some.
    async fn take(&self, max: u32) -> u32 {
        loop {
            let notified = self.notify.notified();
            let cur = self.avail.load(Ordering::Acquire);
            if cur > 0 {
                let n = cur.min(max);
                if self
                    .avail
                    .compare_exchange(cur, cur - n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return n;
                }
                continue;
            }
            notified.await;
        }
    }
    fn give_back(&self, n: u32) {
        if n > 0 {
            self.grant(n);
        }
    }
}

/// What the reader knows of a stream.
struct Entry {
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

struct Shared {
    streams: Mutex<HashMap<u32, Entry>>,
    next_stream: AtomicU32,
    out: mpsc::Sender<Message>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        lock(&self.streams).remove(&stream);
    }
}

/// One side of a session's tunnel.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

impl Mux {
    /// Runs the multiplexer over `ws` (a connected WebSocket). Returns the handle and a future
    /// that ends when the WebSocket does (run it in a task; every stream ends with it).
    pub fn start<S>(ws: S, role: Role) -> (Mux, impl Future<Output = Result<(), TunnelError>>)
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
                while let Some(m) = out_rx.recv().await {
                    sink.send(m).await.map_err(|_| TunnelError::Closed)?;
                }
                let _ = sink.close().await;
                Ok::<(), TunnelError>(())
            };
            let reader = async {
                while let Some(m) = source.next().await {
                    let m = m.map_err(|_| TunnelError::Closed)?;
                    if let Message::Binary(bytes) = m {
                        dispatch(&shared, &role, bytes).await;
                    } else if let Message::Close(_) = m {
                        break;
                    }
                }
                Ok::<(), TunnelError>(())
            };
            let r = tokio::select! {
                r = writer => r,
                r = reader => r,
            };
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

    /// Client side: carries one local connection through the tunnel until both directions end.
    pub async fn carry(&self, local: TcpStream) -> Result<(), TunnelError> {
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
        pump(&self.shared, stream, local).await
    }
}

/// Routes one frame from the peer.
async fn dispatch(shared: &Arc<Shared>, role: &Role, bytes: Bytes) {
    let frame = match Frame::parse(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "invalid tunnel frame ignored");
            return;
        }
    };
    let id = frame.stream;
    match frame.kind {
        Kind::Data => {
            let len = frame.payload.len() as u32;
            let violation = {
                let streams = lock(&shared.streams);
                match streams.get(&id) {
                    Some(Entry {
                        inbound: Some(tx),
                        queued,
                        ..
                    }) => {
                        if queued.fetch_add(len, Ordering::AcqRel) + len > INITIAL_WINDOW {
                            true
                        } else {
                            // The payload is a view of the received message: no copy.
                            let _ = tx.send(bytes.slice(HEADER_LEN..));
                            false
                        }
                    }
                    _ => false, // a stream we no longer know: late data, dropped
                }
            };
            if violation {
                reset(shared, id, "the peer sent more than its window").await;
            }
        }
        Kind::Credit => {
            if let Some(e) = lock(&shared.streams).get(&id) {
                e.credit.grant(frame.credit());
            }
        }
        Kind::Fin => {
            if let Some(e) = lock(&shared.streams).get_mut(&id) {
                e.inbound = None;
            }
        }
        Kind::Reset => {
            if let Some(mut e) = lock(&shared.streams).remove(&id) {
                e.cancel.notify_one();
                if let Some(o) = e.opened.take() {
                    let _ = o.send(Err(frame.reason()));
                }
            }
        }
        Kind::Opened | Kind::OpenFailed => {
            let opened = lock(&shared.streams)
                .get_mut(&id)
                .and_then(|e| e.opened.take());
            if let Some(o) = opened {
                let _ = o.send(if frame.kind == Kind::Opened {
                    Ok(())
                } else {
                    Err(frame.reason())
                });
            }
        }
        Kind::Open => {
            let Role::Agent { dial } = role else {
                return; // only the agent accepts streams
            };
            if lock(&shared.streams).contains_key(&id) {
                return reset(shared, id, "stream already open").await;
            }
            let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicU32::new(0));
            let credit = Arc::new(Credit::new());
            let cancel = Arc::new(Notify::new());
            lock(&shared.streams).insert(
                id,
                Entry {
                    inbound: Some(inbound_tx),
                    queued: queued.clone(),
                    credit: credit.clone(),
                    opened: None,
                    cancel: cancel.clone(),
                },
            );
            let (shared2, dial) = (shared.clone(), dial.clone());
            tokio::spawn(async move {
                let local = match dial().await {
                    Ok(s) => s,
                    Err(e) => {
                        shared2.forget(id);
                        let _ = shared2
                            .send(reason_frame(Kind::OpenFailed, id, &e.to_string()))
                            .await;
                        return;
                    }
                };
                let mut ok = Vec::with_capacity(HEADER_LEN);
                write_frame(&mut ok, Kind::Opened, id, &[]);
                if shared2.send(ok).await.is_err() {
                    return;
                }
                let stream = StreamState {
                    id,
                    inbound: inbound_rx,
                    queued,
                    credit,
                    cancel,
                };
                if let Err(e) = pump(&shared2, stream, local).await {
                    tracing::debug!(stream = id, error = %e, "stream ended with an error");
                }
            });
        }
    }
}

async fn reset(shared: &Arc<Shared>, id: u32, why: &str) {
    if let Some(e) = lock(&shared.streams).remove(&id) {
        e.cancel.notify_one();
    }
    let _ = shared.send(reason_frame(Kind::Reset, id, why)).await;
}

/// A stream's half of the state, owned by its pump.
struct StreamState {
    id: u32,
    inbound: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicU32>,
    credit: Arc<Credit>,
    cancel: Arc<Notify>,
}

/// Moves bytes between a local socket and a stream until both directions are done (or the
/// stream is reset, or the tunnel closes).
async fn pump(shared: &Arc<Shared>, st: StreamState, local: TcpStream) -> Result<(), TunnelError> {
    let StreamState {
        id,
        mut inbound,
        queued,
        credit,
        cancel,
    } = st;
    let _ = local.set_nodelay(true);
    let (mut rd, mut wr) = local.into_split();
    let upstream = async {
        loop {
            let allowed = credit.take(MAX_DATA as u32).await as usize;
            // The header first, then the payload read straight behind it (no zero-filling, no
            // copy): the buffer becomes the message.
            let mut frame = Vec::with_capacity(HEADER_LEN + allowed);
            frame.extend_from_slice(&header(Kind::Data, id));
            let n = (&mut rd).take(allowed as u64).read_buf(&mut frame).await?;
            credit.give_back((allowed - n) as u32);
            if n == 0 {
                let mut fin = Vec::with_capacity(HEADER_LEN);
                write_frame(&mut fin, Kind::Fin, id, &[]);
                return shared.send(fin).await;
            }
            shared.send(frame).await?;
        }
    };
    let downstream = async {
        while let Some(payload) = inbound.recv().await {
            wr.write_all(&payload).await?;
            let n = payload.len() as u32;
            queued.fetch_sub(n, Ordering::AcqRel);
            shared
                .out
                .send(Message::Binary(Bytes::copy_from_slice(&credit_frame(
                    id, n,
                ))))
                .await
                .map_err(|_| TunnelError::Closed)?;
        }
        // FIN from the peer: half-close the local socket.
        wr.shutdown().await?;
        Ok::<(), TunnelError>(())
    };
    let r = tokio::select! {
        r = async { tokio::try_join!(upstream, downstream).map(drop) } => r,
        _ = cancel.notified() => return Err(TunnelError::Reset("reset by the peer or the tunnel closed".into())),
    };
    shared.forget(id);
    if let Err(e) = &r {
        let _ = shared
            .send(reason_frame(Kind::Reset, id, &e.to_string()))
            .await;
    }
    r
}
