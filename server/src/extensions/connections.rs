//! WebSocket connections the host serves for extensions (ABI 1.2).
//!
//! An extension declares routes (`RouteDef`: a path under `/Thingworx/WS`, subprotocols, limits).
//! The host authenticates the upgrade, picks the extension serving the path and subprotocol, and
//! owns the socket: it answers and sends pings, closes silent links, enforces the message size,
//! and turns the socket's life into calls on the extension: `connectionOpen`, one
//! `connectionMessage` per text message (in order, one at a time per connection), and
//! `connectionClosed`. The extension talks back with the host calls `connectionSend` (never
//! blocks: a bounded queue per connection) and `connectionClose`.
//!
//! Per connection the host keeps one task, a 4 KiB read buffer, a send queue of at most
//! [`SEND_QUEUE`] messages and three timers; no lock is held across an await, and the registry
//! lock is held only to insert, look up or remove an entry.

use super::host::Instance;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thingport_sdk::protocol::{Caller, ErrorBody, ErrorKind, Request, RouteDef};
use tokio::sync::{mpsc, watch, Notify};

/// Messages an extension may queue on one connection before `connectionSend` fails.
pub const SEND_QUEUE: usize = 256;
/// The read buffer of each WebSocket (tungstenite allocates it up front).
pub const READ_BUFFER: usize = 4 * 1024;
/// The longest close reason sent (RFC 6455 allows 123 bytes).
const MAX_REASON: usize = 120;
/// How long a closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one write may wait for the peer to read: past it the peer is treated as gone (a
/// peer that stops reading must not stall its connection's timers, closes and shutdown).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; upgrades beyond it are answered 503.
pub const MAX_CONNECTIONS: usize = 100_000;

/// Where a connection is served: the extension's instance and its library load.
#[derive(Clone)]
pub struct Target {
    pub package: String,
    pub load: u64,
    pub instance: Arc<Instance>,
    pub route: RouteDef,
    pub subprotocol: String,
    /// The deadline of each extension call.
    pub deadline: Duration,
}

struct Live {
    load: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    close: Arc<CloseSignal>,
}

/// Asks one connection's task to close (outside the send queue, so it works when the queue is full).
#[derive(Default)]
struct CloseSignal {
    notify: Notify,
    why: Mutex<Option<(u16, String)>>,
}

impl CloseSignal {
    fn fire(&self, code: u16, reason: &str) {
        let mut why = self.why.lock().unwrap_or_else(|p| p.into_inner());
        if why.is_none() {
            *why = Some((code, reason.to_string()));
        }
        drop(why);
        self.notify.notify_one();
    }
    fn take(&self) -> (u16, String) {
        self.why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or((1000, String::new()))
    }
}

/// The live connections of every extension.
pub struct Connections {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Live>>,
    shutdown: watch::Sender<bool>,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.count())
            .finish()
    }
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            open: Default::default(),
        }
    }
}

fn unavailable(message: String) -> ErrorBody {
    ErrorBody {
        error: message,
        kind: ErrorKind::Unavailable,
    }
}

/// Cuts a close reason to what fits in a close frame, on a character boundary.
fn short(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

impl Connections {
    /// The gauge `thingport_websocket_connections` counts.
    pub fn gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.open.clone()
    }

    /// Open connections.
    pub fn count(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Queues `text` on connection `id` of library load `load` (`connectionSend`).
    pub fn send(&self, load: u64, id: u64, text: String) -> Result<(), ErrorBody> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = live.get(&id).filter(|c| c.load == load) else {
            return Err(unavailable(format!("connection {id} is closed")));
        };
        c.tx.try_send(Utf8Bytes::from(text)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => unavailable(format!(
                "connection {id} is not reading: its send queue of {SEND_QUEUE} messages is full"
            )),
            mpsc::error::TrySendError::Closed(_) => {
                unavailable(format!("connection {id} is closed"))
            }
        })
    }

    /// Closes connection `id` of library load `load` (`connectionClose`); no error if it is gone.
    pub fn close(&self, load: u64, id: u64, code: u16, reason: &str) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = live.get(&id).filter(|c| c.load == load) {
            c.close.fire(code, reason);
        }
    }

    /// Closes every connection of a library load (its package was deleted, upgraded or disabled):
    /// status 1012 "service restart", so agents reconnect to whatever serves the route now.
    pub fn close_load(&self, load: u64, reason: &str) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for c in live.values().filter(|c| c.load == load) {
            c.close.fire(1012, reason);
        }
    }

    /// Starts closing every connection with status 1001 ("going away"); new upgrades are refused.
    pub fn begin_shutdown(&self) {
        // `send_replace`: the value must stick even when no connection is subscribed yet.
        self.shutdown.send_replace(true);
    }

    /// Closes every connection with status 1001 ("going away") and waits up to `timeout` for
    /// them to finish.
    pub async fn shutdown(&self, timeout: Duration) {
        self.begin_shutdown();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server is shutting down (new connections are refused).
    pub fn closing(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs one upgraded connection to its end.
    pub async fn serve(self: Arc<Self>, socket: WebSocket, target: Target, principal: Caller) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(SEND_QUEUE);
        let close = Arc::new(CloseSignal::default());
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Live {
                load: target.load,
                tx,
                close: close.clone(),
            },
        );
        self.open.inc();
        let _guard = Registered { hub: &self, id };
        let (ext, route) = (target.package.as_str(), target.route.path.as_str());
        let peer = principal.source_ip.clone();
        let user = principal.name.clone();
        let (mut sink, mut stream) = socket.split();
        let opened = target
            .instance
            .call(
                Request::ConnectionOpen {
                    connection: id,
                    route: route.to_string(),
                    subprotocol: target.subprotocol.clone(),
                    principal,
                },
                target.deadline,
            )
            .await;
        if let Err(e) = opened {
            tracing::info!(extension = ext, connection = id, %peer, %user, error = %e, "connection refused by the extension");
            let frame = close_frame(1008, &e.to_string());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(frame)).await;
            return;
        }
        tracing::debug!(extension = ext, connection = id, %peer, %user, route, "connection opened");

        let ping_every = Duration::from_millis(target.route.ping_interval_ms.max(100));
        let idle_after = Duration::from_millis(target.route.idle_timeout_ms.max(200));
        let hello_within = Duration::from_millis(target.route.hello_timeout_ms.max(100));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle = tokio::time::sleep(idle_after);
        let hello = tokio::time::sleep(hello_within);
        tokio::pin!(idle, hello);
        let mut heard = false;
        let mut shutdown = self.shutdown.subscribe();
        // (status sent to the peer, if any; the reason the extension is told)
        let (frame, reason): (Option<(u16, String)>, String) = loop {
            // Biased: a close request first, then the send queue, and only then the next
            // incoming message, so a peer that floods without reading is slowed by its own
            // backlog (TCP back-pressure) instead of overflowing the queue.
            tokio::select! {
                biased;
                _ = close.notify.notified() => {
                    let (code, why) = close.take();
                    break (Some((code, why.clone())), format!("closed by the extension: {why}"));
                }
                _ = async { shutdown.wait_for(|s| *s).await.map(drop) } => {
                    break (Some((1001, "server shutting down".into())), "the server is shutting down".into());
                }
                out = rx.recv() => {
                    let Some(text) = out else { continue };
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break (None, format!("sending failed: {e}")),
                        Err(_) => break (None, format!("the peer read nothing for {} s", SEND_TIMEOUT.as_secs())),
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break (None, format!("sending a ping failed: {e}")),
                        Err(_) => break (None, format!("the peer read nothing for {} s", SEND_TIMEOUT.as_secs())),
                    }
                }
                _ = &mut idle => {
                    // A dead link answers nothing: no close handshake to wait for.
                    break (None,
                        format!("nothing received for {} ms: the link is dead", idle_after.as_millis()));
                }
                _ = &mut hello, if !heard => {
                    break (Some((1008, format!("no message within {} ms", hello_within.as_millis()))),
                        format!("no message within {} ms of opening", hello_within.as_millis()));
                }
                incoming = stream.next() => {
                    let message = match incoming {
                        None => break (None, "the peer went away".into()),
                        Some(Err(e)) => {
                            let too_big = e.to_string().contains("too long") || e.to_string().contains("Space limit");
                            if too_big {
                                break (Some((1009, format!("message larger than {} bytes", target.route.max_message_bytes))),
                                    format!("the peer sent a message larger than {} bytes", target.route.max_message_bytes));
                            }
                            break (None, format!("receive failed: {e}"));
                        }
                        Some(Ok(m)) => m,
                    };
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_after);
                    match message {
                        Message::Text(text) => {
                            heard = true;
                            let r = target.instance.call(
                                Request::ConnectionMessage { connection: id, text: text.as_str().to_string() },
                                target.deadline,
                            ).await;
                            if let Err(e) = r {
                                tracing::warn!(extension = ext, connection = id, error = %e, "the extension failed to handle a message");
                                if target.instance.poisoned().is_some() {
                                    break (Some((1011, "the extension serving this route failed".into())),
                                        "the extension was disabled after a panic".into());
                                }
                            }
                        }
                        Message::Binary(_) => {
                            break (Some((1003, "binary messages are not supported on this route".into())),
                                "the peer sent a binary message".into());
                        }
                        Message::Close(frame) => {
                            let why = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                            break (None, format!("the peer closed the connection {why}").trim_end().to_string());
                        }
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        };
        if let Some((code, why)) = frame {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                // What the extension queued before the close goes out first.
                while let Ok(text) = rx.try_recv() {
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                let _ = sink.send(close_frame(code, &why)).await;
                // Wait briefly for the peer's close, for a clean handshake.
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        // Sends fail from now on; the entry stays until the extension has heard of the close, so
        // a shutdown waits for every `connectionClosed` before the store closes.
        drop(rx);
        tracing::debug!(extension = ext, connection = id, %peer, reason, "connection closed");
        let r = target
            .instance
            .call(
                Request::ConnectionClosed {
                    connection: id,
                    reason,
                },
                target.deadline,
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(extension = ext, connection = id, error = %e, "connectionClosed failed");
        }
        drop(_guard);
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: short(reason).into(),
    }))
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Registered<'a> {
    hub: &'a Connections,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let removed = self
            .hub
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if removed.is_some() {
            self.hub.open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn close_reasons_are_cut_on_character_boundaries() {
        let long = "é".repeat(100);
        let cut = short(&long);
        assert!(cut.len() <= 120);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(short("bye"), "bye");
    }
}
