//! The listener and the life of a connection: accept (deep backlog, `TCP_NODELAY`), optional TLS,
//! the WebSocket upgrade with admission, attach, then [`crate::side::run`]; and the graceful
//! shutdown that drains live sessions.

use crate::config::{ConfigError, RelayConfig};
use crate::table::{Ends, Session, Table};
use crate::upgrade::{self, Admission};
use crate::{role_name, EndCause, EventKind, Keys, LiveSession, Role, SessionEvent, MAX_MESSAGE};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn, Instrument as _};

/// Pending connections the kernel queues before `accept` (a burst must not be dropped).
const BACKLOG: u32 = 4096;

/// Bytes of frames gathered before a send while more are queued.
const WRITE_BUFFER: usize = 128 * 1024;

/// Binds a listening socket with a deep accept backlog (4,096).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Where the relay stands; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayPhase {
    Running,
    /// Shutting down: nothing new is admitted, lone sides are closed, paired sessions go on for
    /// the drain period.
    Draining,
    /// Every side is being closed with 1001.
    Closing,
}

/// The tunnel relay of one GAS. Create it with [`Relay::new`], run it with [`Relay::serve`].
pub struct Relay {
    pub(crate) keys: Arc<dyn Keys>,
    pub(crate) config: RelayConfig,
    tls: Option<TlsAcceptor>,
    table: Mutex<Table>,
    events: broadcast::Sender<SessionEvent>,
    pub(crate) state: watch::Sender<RelayPhase>,
    /// Notified when the table becomes empty (the drain waits on it).
    emptied: Notify,
    /// Where browser consoles get their session's credentials (the platform); without it,
    /// consoles are refused.
    claims: std::sync::OnceLock<Arc<dyn crate::console::Claims>>,
}

/// What an upgrade became.
enum Upgraded<S> {
    /// A tunnel side, admitted by its credential.
    Tunnel(WebSocketStream<S>, Admission),
    /// A browser console; its ticket is its first message.
    Console(WebSocketStream<S>),
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.keys.name())
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay for the GAS that `keys` describes; `tls` makes it serve `wss` only.
    pub fn new(
        keys: Arc<dyn Keys>,
        config: RelayConfig,
        tls: Option<TlsAcceptor>,
    ) -> Result<Arc<Relay>, ConfigError> {
        config.validate()?;
        let (events, _) = broadcast::channel(config.event_buffer);
        Ok(Arc::new(Relay {
            keys,
            config,
            tls,
            table: Mutex::new(Table::default()),
            events,
            state: watch::Sender::new(RelayPhase::Running),
            emptied: Notify::new(),
            claims: std::sync::OnceLock::new(),
        }))
    }

    /// Lets browser consoles claim their sessions' credentials through `claims` (set once).
    pub fn set_claims(&self, claims: Arc<dyn crate::console::Claims>) {
        let _ = self.claims.set(claims);
    }

    pub(crate) fn claims(&self) -> Option<&Arc<dyn crate::console::Claims>> {
        self.claims.get()
    }

    /// Session events from now on. A listener that falls more than `event_buffer` events behind
    /// loses the oldest (`RecvError::Lagged`); with no listener, events are dropped.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// Sessions with both sides attached, now.
    pub fn sessions(&self) -> usize {
        self.table().started()
    }

    /// Sessions with one side waiting for the other (or an upgrade in progress), now.
    pub fn waiting(&self) -> usize {
        self.table().waiting()
    }

    /// The sessions in progress (paired, or waiting for a side), at most `max`, with their
    /// `DATA` byte counts so far (for heartbeats). Takes the table lock once; the frame path
    /// does not contend for it.
    pub fn live_sessions(&self, max: usize) -> Vec<LiveSession> {
        self.table().live(max)
    }

    /// Ends the session `id` because the platform ended it: both sides get a close frame 1000
    /// "the platform ended the session", and the `Ended` event carries
    /// [`EndCause::EndedByPlatform`]. False if no such session is in progress (unknown, or
    /// already ending for another cause).
    pub fn end_session(&self, id: &str) -> bool {
        // Found and ended under one lock: a session in the table has not ended yet.
        let empty = {
            let mut table = self.table();
            let Some(session) = table.find(id) else {
                return false;
            };
            table.end(&session, EndCause::EndedByPlatform)
        };
        if empty {
            self.emptied.notify_one();
        }
        info!(session = %id, "session ended by the platform");
        true
    }

    /// Serves tunnels on `listener` until `shutdown` resolves; then stops accepting, closes lone
    /// sides, lets paired sessions go on for [`RelayConfig::drain`], closes the rest with 1001
    /// "GAS shutting down", and returns when every connection is gone. Call it once.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        // Each connection task holds a clone of `alive`; `all_done` ends with the last one.
        let (alive, mut all_done) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        info!(
            addr = ?listener.local_addr().ok(),
            gas = self.keys.name(),
            tls = self.tls.is_some(),
            "serving tunnels"
        );
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(error) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let relay = self.clone();
            let alive = alive.clone();
            tokio::spawn(
                async move {
                    relay.connection(tcp).await;
                    drop(alive);
                }
                .instrument(tracing::info_span!("connection", %peer)),
            );
        }
        drop(listener);

        self.table().closing = true;
        self.state.send_replace(RelayPhase::Draining);
        info!(
            sessions = self.sessions(),
            drain = ?self.config.drain,
            "shutting down: draining sessions"
        );
        let deadline = Instant::now() + self.config.drain;
        while !self.table().is_empty() {
            tokio::select! {
                () = self.emptied.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.state.send_replace(RelayPhase::Closing);
        drop(alive);
        let _ = all_done.recv().await;
        info!("shut down");
    }

    /// One accepted connection, until it is closed.
    async fn connection(self: Arc<Self>, tcp: TcpStream) {
        let deadline = Instant::now() + self.config.handshake_timeout;
        match self.tls.clone() {
            None => self.upgrade_and_run(tcp, deadline).await,
            Some(acceptor) => {
                let mut state = self.state.subscribe();
                let accepted = tokio::select! {
                    r = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => r,
                    _ = state.wait_for(|p| *p == RelayPhase::Closing) => return,
                };
                match accepted {
                    Ok(Ok(tls)) => self.upgrade_and_run(tls, deadline).await,
                    Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
                    Err(_) => debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn upgrade_and_run<S>(self: &Arc<Self>, stream: S, deadline: Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut state = self.state.subscribe();
        let upgraded = tokio::select! {
            u = self.upgrade(stream, deadline) => u,
            _ = state.wait_for(|p| *p == RelayPhase::Closing) => None,
        };
        let (ws, admission) = match upgraded {
            None => return,
            Some(Upgraded::Tunnel(ws, admission)) => (ws, admission),
            Some(Upgraded::Console(ws)) => {
                crate::console::serve(self, ws).await;
                return;
            }
        };
        self.run_side(ws, admission).await;
    }

    /// Attaches an admitted side and serves it until its session ends.
    pub(crate) async fn run_side<S>(
        self: &Arc<Self>,
        mut ws: WebSocketStream<S>,
        mut admission: Admission,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let role = admission.role;
        let session = admission.session.clone();
        let span = tracing::info_span!("side", session = %session.id, role = role_name(role));
        let Some(ends) = self.attach(&mut admission) else {
            // The session ended (its lone side gave up waiting) while this upgrade completed.
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: "the session already ended".into(),
            };
            let _ = tokio::time::timeout(self.config.close_timeout, ws.close(Some(close))).await;
            return;
        };
        let wait_until = admission.wait_until;
        drop(admission);
        crate::side::run(self, ws, session, role, ends, wait_until)
            .instrument(span)
            .await;
    }

    /// The WebSocket handshake, with admission inside it (consoles are admitted after it, by
    /// their first message).
    async fn upgrade<S>(self: &Arc<Self>, stream: S, deadline: Instant) -> Option<Upgraded<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut admitted = None;
        let mut console = false;
        // The signature is tungstenite's (`Callback`).
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, response: Response| match if req.uri().path()
            == thingport_protocol::tunnel::CONSOLE_PATH
        {
            upgrade::check_console(self, req).map(|()| None)
        } else {
            upgrade::admit(self, req).map(Some)
        } {
            Ok(Some(admission)) => {
                admitted = Some(admission);
                Ok(upgrade::accept_response(
                    response,
                    thingport_protocol::tunnel::SUBPROTOCOL_V1,
                ))
            }
            Ok(None) => {
                console = true;
                Ok(upgrade::accept_response(
                    response,
                    crate::console::frame::SUBPROTOCOL,
                ))
            }
            Err(refusal) => {
                debug!(
                    status = refusal.status.as_u16(),
                    reason = %refusal.message,
                    "upgrade refused"
                );
                Err(refusal.response())
            }
        };
        let handshake = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(self.ws_config()),
        );
        let result = tokio::time::timeout_at(deadline, handshake).await;
        match result {
            Ok(Ok(ws)) if console => Some(Upgraded::Console(ws)),
            // `admitted` is always set when a tunnel handshake succeeded.
            Ok(Ok(ws)) => admitted.take().map(|a| Upgraded::Tunnel(ws, a)),
            Ok(Err(error)) => {
                debug!(%error, "upgrade failed");
                None
            }
            Err(_) => {
                debug!("upgrade timed out");
                None
            }
        }
    }

    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.config.read_buffer_size)
            // The writer feeds everything queued and flushes once: a burst is one send.
            .write_buffer_size(WRITE_BUFFER)
            // The buffer holds at most that plus the frame being written and a control frame;
            // this only bounds a misbehaving case.
            .max_write_buffer_size(WRITE_BUFFER + 4 * MAX_MESSAGE)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, session: &Arc<str>, kind: EventKind) {
        let _ = self.events.send(SessionEvent {
            session: session.clone(),
            kind,
        });
    }

    /// Gives back the reservation of an upgrade that failed.
    pub(crate) fn release(&self, session: &Arc<Session>, role: Role, ends: Ends) {
        if self.table().release(session, role, ends) {
            self.emptied.notify_one();
        }
    }

    /// Attaches an admitted side: its queue ends, or `None` if its session already ended.
    fn attach(&self, admission: &mut Admission) -> Option<Ends> {
        let mut table = self.table();
        let paired = table.attach(&admission.session, admission.role).ok()?;
        let ends = admission.take_ends();
        // Emitted under the table lock, so the events of a session keep their order.
        let id = &admission.session.id;
        self.emit(id, EventKind::SideAttached(admission.role));
        if paired {
            self.emit(id, EventKind::Started);
            info!(session = %id, "session started");
        } else {
            debug!(session = %id, role = role_name(admission.role), "side waiting");
        }
        ends
    }

    /// Ends a session (the first cause wins).
    pub(crate) fn end(&self, session: &Arc<Session>, cause: EndCause) {
        if self.table().end(session, cause) {
            self.emptied.notify_one();
        }
    }

    /// Ends a session whose second side did not come; false if it came after all.
    pub(crate) fn give_up(&self, session: &Arc<Session>) -> bool {
        match self.table().give_up(session) {
            None => false,
            Some(empty) => {
                if empty {
                    self.emptied.notify_one();
                }
                true
            }
        }
    }

    /// A side's task is done; the last one reports the session's end.
    pub(crate) fn side_done(&self, session: &Session, role: Role, data_bytes: u64) {
        if let Some(event) = session.side_done(role, data_bytes) {
            if let EventKind::Ended {
                cause,
                bytes_up,
                bytes_down,
                duration_ms,
            } = &event.kind
            {
                info!(
                    session = %event.session,
                    cause = %cause,
                    bytes_up,
                    bytes_down,
                    duration_ms,
                    "session ended"
                );
            }
            let _ = self.events.send(event);
        }
    }
}
