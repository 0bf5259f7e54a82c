//! Browser consoles (SPEC §11): the GAS is the **client side** of a console session, as guacd
//! or Teleport's proxy are. A browser opens `wss://<gas>/console` (subprotocol
//! [`frame::SUBPROTOCOL`]) and sends its ticket as the first message; the GAS then
//!
//! 1. admits the ticket like a tunnel credential, but signed with the console key (so a ticket
//!    is no raw tunnel and a tunnel credential opens no console), single use;
//! 2. attaches itself as the session's client side: an in-memory WebSocket into the relay
//!    ([`Relay::run_side`]), with the tunnel multiplexer on the other end, so the session's
//!    states, byte counts, timeouts and reports are those of every session;
//! 3. claims the endpoint's protocol and credentials from the platform ([`Claims`]), once;
//! 4. opens one stream to the endpoint and speaks its protocol: the VNC security handshake
//!    ([`rfb`], the browser is offered security type None and never sees the password), an SSH
//!    client ([`ssh`], host key pinned) or Telnet negotiation ([`telnet`]);
//! 5. relays: RFB bytes unchanged in binary messages (noVNC), or terminal bytes in binary
//!    messages with control messages (resize, pause, resume) in text.
//!
//! Credentials stay in this task's memory for the handshake only and are never forwarded. A
//! failure ends the session with a `CONSOLE_*` cause the platform records, and tells the browser
//! why ([`frame::ServerMessage`]). Flow control: a browser that stops reading (or says `pause`)
//! stops this task reading the endpoint, which backs up into the stream's tunnel credit.

pub(crate) mod frame;
pub(crate) mod rfb;
pub(crate) mod ssh;
pub(crate) mod telnet;

use crate::relay::Relay;
use crate::table::Session;
use crate::upgrade::{self, Signer};
use crate::EndCause;
use frame::{Control, ServerMessage, Size};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thingport_protocol::gas::{end_causes, ConsoleClaim};
use thingport_tunnel::{Mux, TunnelError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WsRole};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, Instrument as _};
use zeroize::Zeroizing;

/// Where a console gets its session's protocol and credentials: the platform's
/// `ClaimConsoleSession`, under this GAS's registration.
pub trait Claims: Send + Sync + 'static {
    fn claim<'a>(
        &'a self,
        session: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<ConsoleClaim, String>> + Send + 'a>>;
}

/// How long a browser has to send its ticket after the upgrade.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the claim and the endpoint's handshake (RFB security, SSH key exchange and
/// authentication) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// WebSocket pings to the browser, so idle proxies (often cutting at 60 s or 300 s) keep it.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A browser from which nothing (not even a pong) arrived for this long is gone (as a tunnel
/// side that falls silent).
const BROWSER_SILENT: Duration = Duration::from_secs(60);
/// How long one message to the browser may take to be written; longer, the browser is gone.
const BROWSER_WRITE: Duration = Duration::from_secs(30);
/// Keyboard input waiting for the endpoint, at most (beyond, the browser's messages wait).
const MAX_PENDING_INPUT: usize = 1024 * 1024;
/// In-memory pipes: the console's tunnel WebSocket and the endpoint stream.
const PIPE: usize = 256 * 1024;
/// The most bytes read from the endpoint for one browser message.
const CHUNK: usize = 128 * 1024;

/// WebSocket close codes the browser sees (4000-4999 are the application's).
const CLOSE_BAD_MESSAGE: u16 = 4400;
const CLOSE_TICKET: u16 = 4401;
const CLOSE_FAILED: u16 = 4500;

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Source<S> = SplitStream<WebSocketStream<S>>;

/// Why a console ended early: the session's end cause, and what the browser is told.
struct Failure {
    /// One of the `CONSOLE_*` end causes.
    cause: &'static str,
    message: ServerMessage,
    detail: String,
}

impl Failure {
    fn new(cause: &'static str, code: &str, detail: impl Into<String>) -> Failure {
        let detail = detail.into();
        Failure {
            cause,
            message: ServerMessage::Error {
                code: code.to_string(),
                message: detail.clone(),
            },
            detail,
        }
    }
}

/// How a console that ran ended.
enum End {
    /// The browser closed or went away.
    Browser,
    /// The endpoint (or the session) ended: this is what the browser is told.
    Endpoint(String),
    /// The same for a VNC console, whose browser takes nothing but RFB bytes after `ready`:
    /// the reason goes in the close frame only.
    Screen(String),
    /// The browser broke the console protocol.
    BadMessage(String),
}

/// Serves one browser console connection, from its ticket to its close.
pub(crate) async fn serve<S>(relay: &Arc<Relay>, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let text = match tokio::time::timeout(HELLO_TIMEOUT, first_text(&mut source)).await {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(_) => {
            let why = "no ticket within 10 s: the console's first message carries its ticket";
            refuse(&mut sink, CLOSE_TICKET, "TICKET_REQUIRED", why).await;
            return;
        }
    };
    let hello = match frame::parse_hello(&text) {
        Ok(h) => h,
        Err(e) => {
            refuse(&mut sink, CLOSE_BAD_MESSAGE, "BAD_MESSAGE", &e.to_string()).await;
            return;
        }
    };
    let admission = match upgrade::admit_grant(relay, &hello.ticket, Signer::Console) {
        Ok(a) => a,
        Err(refusal) => {
            debug!(reason = %refusal.message, "console ticket refused");
            refuse(&mut sink, CLOSE_TICKET, "TICKET_REFUSED", &refusal.message).await;
            return;
        }
    };
    drop(hello.ticket);
    let session = admission.session.clone();
    let span = tracing::info_span!("console", session = %session.id);
    async move {
        // Our client side of the session: an in-memory WebSocket into the relay, served like
        // any attached side, and the multiplexer on our end of it.
        let (near, far) = tokio::io::duplex(PIPE);
        let relay_end =
            WebSocketStream::from_raw_socket(far, WsRole::Server, Some(relay.ws_config())).await;
        let side = tokio::spawn({
            let relay = relay.clone();
            async move { relay.run_side(relay_end, admission).await }.in_current_span()
        });
        let ours = WebSocketStream::from_raw_socket(
            near,
            WsRole::Client,
            Some(thingport_tunnel::websocket_config()),
        )
        .await;
        let (mux, driver) = Mux::start(ours, thingport_tunnel::Role::Client);
        let driver = tokio::spawn(driver.in_current_span());

        let outcome = run(relay, &session, &mux, hello.size, &mut sink, &mut source).await;
        match outcome {
            Ok(End::Browser) => info!("console closed by the browser"),
            Ok(End::Endpoint(reason)) => {
                info!(%reason, "console ended");
                let reason_copy = reason.clone();
                let _ = send(&mut sink, &ServerMessage::Closed { reason }).await;
                close(&mut sink, 1000, &clip_reason(&reason_copy)).await;
            }
            Ok(End::Screen(reason)) => {
                info!(%reason, "console ended");
                close(&mut sink, 1000, &clip_reason(&reason)).await;
            }
            Ok(End::BadMessage(why)) => {
                relay.end(
                    &session,
                    EndCause::Console(end_causes::CONSOLE_FAILED, why.clone()),
                );
                let _ = send(
                    &mut sink,
                    &ServerMessage::Error {
                        code: "BAD_MESSAGE".into(),
                        message: why,
                    },
                )
                .await;
                close(&mut sink, CLOSE_BAD_MESSAGE, "bad console message").await;
            }
            Err(failure) => {
                info!(cause = failure.cause, detail = %failure.detail, "console failed");
                // The first cause wins: recorded before our side closes the tunnel.
                relay.end(&session, EndCause::Console(failure.cause, failure.detail));
                let _ = send(&mut sink, &failure.message).await;
                close(&mut sink, CLOSE_FAILED, "the console failed").await;
            }
        }
        // Closing our side ends the session (the client closed: USER_SHUTDOWN) unless a
        // console cause or the platform ended it first.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            mux.close("the browser console closed"),
        )
        .await;
        drop(mux);
        // Both end with the tunnel; never left behind if something is stuck.
        let (driver_abort, side_abort) = (driver.abort_handle(), side.abort_handle());
        if tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .is_err()
        {
            driver_abort.abort();
        }
        if tokio::time::timeout(Duration::from_secs(5), side)
            .await
            .is_err()
        {
            side_abort.abort();
        }
    }
    .instrument(span)
    .await;
}

/// The browser's first message, as text; `None` when it closed or sent something else (the
/// close is then answered).
async fn first_text<S>(source: &mut Source<S>) -> Option<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match source.next().await? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Binary(_)) => return Some(String::new()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

async fn send<S>(sink: &mut Sink<S>, message: &ServerMessage) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    to_browser(sink, Message::text(message.to_json())).await
}

/// One message to the browser, within [`BROWSER_WRITE`] (a browser that stops reading does not
/// hold the console forever).
async fn to_browser<S>(sink: &mut Sink<S>, message: Message) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(BROWSER_WRITE, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The browser's liveness: when something last arrived from it.
struct Heard(tokio::time::Instant);

impl Heard {
    fn now() -> Heard {
        Heard(tokio::time::Instant::now())
    }
    fn touch(&mut self) {
        self.0 = tokio::time::Instant::now();
    }
    /// Notes that `m` arrived and hands it on.
    fn touched<T>(&mut self, m: T) -> T {
        self.touch();
        m
    }
    fn silent(&self) -> bool {
        self.0.elapsed() > BROWSER_SILENT
    }
}

/// What a terminal's browser asked for, queued for the endpoint's writer.
enum Input {
    Data(Bytes),
    Resize(Size),
}

async fn close<S>(sink: &mut Sink<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// Tells the browser why it was refused before a session was attached, and closes.
async fn refuse<S>(sink: &mut Sink<S>, close_code: u16, code: &str, why: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = send(
        sink,
        &ServerMessage::Error {
            code: code.into(),
            message: why.into(),
        },
    )
    .await;
    close(sink, close_code, "console refused").await;
}

/// Claims the session, opens the endpoint stream and runs the protocol until the end.
async fn run<S>(
    relay: &Arc<Relay>,
    session: &Arc<Session>,
    mux: &Mux,
    size: Size,
    sink: &mut Sink<S>,
    source: &mut Source<S>,
) -> Result<End, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let claims = relay.claims().ok_or_else(|| {
        Failure::new(
            end_causes::CONSOLE_FAILED,
            "CONSOLE_UNAVAILABLE",
            "this GAS serves no consoles (it is not connected to a platform)",
        )
    })?;
    let claim = match tokio::time::timeout(HANDSHAKE_TIMEOUT, claims.claim(&session.id)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(Failure::new(
                end_causes::CONSOLE_FAILED,
                "CLAIM_FAILED",
                format!("the platform did not hand over the console: {e}"),
            ))
        }
        Err(_) => {
            return Err(Failure::new(
                end_causes::CONSOLE_FAILED,
                "CLAIM_FAILED",
                "the platform did not answer the console's claim in time",
            ))
        }
    };
    let (endpoint, far) = tokio::io::duplex(PIPE);
    let mut carry = tokio::spawn({
        let mux = mux.clone();
        async move { mux.carry_io(far).await }.in_current_span()
    });
    let ready = ServerMessage::Ready {
        protocol: claim.protocol.clone(),
        session: session.id.to_string(),
        endpoint: claim.endpoint.clone(),
    };
    let result = match claim.protocol.as_str() {
        "VNC" => vnc(claim, endpoint, &ready, sink, source).await,
        "SSH" => ssh(claim, endpoint, size, &ready, sink, source).await,
        "TELNET" => telnet(endpoint, size, &ready, sink, source).await,
        other => Err(Failure::new(
            end_causes::CONSOLE_FAILED,
            "UNSUPPORTED",
            format!("the endpoint's protocol {other} has no browser console"),
        )),
    };
    let outcome = match result {
        // A failure while the stream did not even open: say that instead.
        Err(f) => Err(unreachable(&mut carry).await.unwrap_or(f)),
        // The endpoint "closed" because the stream never opened (a Telnet console says `ready`
        // before the first byte): a failure, recorded as such.
        Ok(End::Endpoint(reason)) => match unreachable(&mut carry).await {
            Some(f) => Err(f),
            None => Ok(End::Endpoint(ended_because(session).unwrap_or(reason))),
        },
        Ok(End::Screen(reason)) => Ok(End::Screen(ended_because(session).unwrap_or(reason))),
        Ok(end) => Ok(end),
    };
    carry.abort();
    outcome
}

/// A close frame's reason holds at most 123 bytes.
fn clip_reason(reason: &str) -> String {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Why the endpoint stream failed to open, if it did.
async fn unreachable(carry: &mut JoinHandle<Result<(), TunnelError>>) -> Option<Failure> {
    let result = tokio::time::timeout(Duration::from_secs(1), carry).await;
    match result {
        Ok(Ok(Err(TunnelError::OpenFailed(why)))) => Some(Failure::new(
            end_causes::CONSOLE_UNREACHABLE,
            "ENDPOINT_UNREACHABLE",
            format!("the device's agent could not reach the endpoint: {why}"),
        )),
        Ok(Ok(Err(TunnelError::OpenTimeout(t)))) => Some(Failure::new(
            end_causes::CONSOLE_UNREACHABLE,
            "ENDPOINT_UNREACHABLE",
            format!("the device's agent did not open the endpoint within {t:?}"),
        )),
        _ => None,
    }
}

/// What ended the session, when something other than the endpoint did.
fn ended_because(session: &Session) -> Option<String> {
    match session.cause()? {
        EndCause::EndedByPlatform => Some(
            "the session was ended by the platform (EndSession, inactivity or the maximum duration)"
                .into(),
        ),
        EndCause::Shutdown => Some("the Global Access Server is shutting down".into()),
        EndCause::Closed(crate::Role::Agent)
        | EndCause::Lost(crate::Role::Agent)
        | EndCause::Silent(crate::Role::Agent)
        | EndCause::Protocol(crate::Role::Agent, _) => {
            Some("the device's agent left the session".into())
        }
        EndCause::NotPaired => Some("the device's agent never joined the session".into()),
        _ => None,
    }
}

fn take(s: &mut Option<String>) -> Option<Zeroizing<String>> {
    s.take().map(Zeroizing::new)
}

/// VNC: the security handshake with the server (the stored password), None toward the browser,
/// then RFB bytes both ways unchanged.
async fn vnc<S>(
    mut claim: ConsoleClaim,
    mut endpoint: DuplexStream,
    ready: &ServerMessage,
    sink: &mut Sink<S>,
    source: &mut Source<S>,
) -> Result<End, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let password = take(&mut claim.password);
    drop(claim);
    let handshake =
        rfb::authenticate_upstream(&mut endpoint, password.as_ref().map(|p| p.as_bytes()));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(_version)) => {}
        Ok(Err(e)) => {
            let cause = match e {
                rfb::RfbError::AuthFailed(_) => end_causes::CONSOLE_AUTH_FAILED,
                _ => end_causes::CONSOLE_FAILED,
            };
            return Err(Failure::new(cause, e.code(), e.to_string()));
        }
        Err(_) => {
            return Err(Failure::new(
                end_causes::CONSOLE_FAILED,
                "VNC_TIMEOUT",
                "the VNC server did not complete its handshake in time",
            ))
        }
    }
    drop(password);
    send(sink, ready).await.map_err(|()| {
        Failure::new(
            end_causes::CONSOLE_FAILED,
            "BROWSER_GONE",
            "the browser left",
        )
    })?;
    let end = vnc_relay(endpoint, sink, source).await;
    Ok(match end {
        End::Endpoint(reason) => End::Screen(reason),
        other => other,
    })
}

/// The browser leg of a VNC console. Its handshake (RFB toward the browser, security type None)
/// runs over a pipe so that it is the same byte-stream code as any ([`rfb::serve_downstream`]);
/// the browser's later bytes (input events, update requests: little) keep that way to the
/// endpoint. Screen updates, the bulk, go from the endpoint stream straight into binary messages:
/// read into a buffer that becomes the message without a copy.
async fn vnc_relay<S>(endpoint: DuplexStream, sink: &mut Sink<S>, source: &mut Source<S>) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut from_endpoint, mut to_endpoint) = tokio::io::split(endpoint);
    let (mut browser, pipe) = tokio::io::duplex(PIPE);
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(pipe);
    // The browser's bytes: the downstream handshake, then on to the endpoint. Our handshake
    // answers come back through the pipe; the endpoint says nothing before the browser's
    // ClientInit, which follows our last answer, so the two sources never interleave.
    let upstream = async {
        rfb::serve_downstream(&mut browser)
            .await
            .map_err(|e| format!("the browser's VNC handshake failed: {e}"))?;
        tokio::io::copy(&mut browser, &mut to_endpoint)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    let downstream = async {
        let mut handshake_out = vec![0u8; 256];
        let mut screen = bytes::BytesMut::with_capacity(CHUNK);
        let mut heard = Heard::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                m = source.next() => match heard.touched(m) {
                    Some(Ok(Message::Binary(b))) => {
                        if pipe_wr.write_all(&b).await.is_err() {
                            return End::Endpoint("the VNC connection closed".into());
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        return End::BadMessage("a VNC console takes binary messages only".into());
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Browser,
                    Some(Ok(_)) => {}
                },
                // Our side of the browser's handshake.
                n = pipe_rd.read(&mut handshake_out) => match n {
                    Ok(0) | Err(_) => return End::Endpoint("the VNC connection closed".into()),
                    Ok(n) => {
                        let out = Bytes::copy_from_slice(&handshake_out[..n]);
                        if to_browser(sink, Message::Binary(out)).await.is_err() {
                            return End::Browser;
                        }
                    }
                },
                n = from_endpoint.read_buf(&mut screen) => match n {
                    Ok(0) | Err(_) => {
                        return End::Endpoint("the VNC server closed the connection".into())
                    }
                    Ok(_) => {
                        // The buffer becomes the message; its allocation comes back to `screen`
                        // once the message is written, when `reserve` finds it unshared.
                        let out = screen.split().freeze();
                        if to_browser(sink, Message::Binary(out)).await.is_err() {
                            return End::Browser;
                        }
                        screen.reserve(CHUNK);
                    }
                },
                _ = ping.tick() => {
                    if heard.silent()
                        || to_browser(sink, Message::Ping(Bytes::new())).await.is_err()
                    {
                        return End::Browser;
                    }
                }
            }
        }
    };
    tokio::select! {
        end = downstream => end,
        r = upstream => match r {
            Ok(()) => End::Endpoint("the VNC server closed the connection".into()),
            Err(e) => End::Endpoint(format!("the VNC connection ended: {e}")),
        },
    }
}

/// A control message from a terminal's browser, or why it is refused.
fn control(text: &str) -> Result<Control, End> {
    frame::parse_control(text).map_err(|e| End::BadMessage(e.to_string()))
}

/// SSH: the GAS's client logs in with the stored credentials (host key pinned) and opens a
/// shell on a PTY of the browser's size.
async fn ssh<S>(
    mut claim: ConsoleClaim,
    endpoint: DuplexStream,
    size: Size,
    ready: &ServerMessage,
    sink: &mut Sink<S>,
    source: &mut Source<S>,
) -> Result<End, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let uses_key = claim.authentication == "privateKey";
    let creds = ssh::Credentials {
        username: claim.username.take().unwrap_or_default(),
        password: if uses_key {
            None
        } else {
            take(&mut claim.password)
        },
        private_key: if uses_key {
            take(&mut claim.private_key)
        } else {
            None
        },
        passphrase: take(&mut claim.passphrase),
        host_key: claim.host_key.take(),
    };
    drop(claim);
    let ssh_size = ssh::Size {
        cols: size.cols,
        rows: size.rows,
    };
    let connected =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, ssh::connect(endpoint, &creds, ssh_size)).await;
    drop(creds);
    let shell = match connected {
        Ok(Ok(shell)) => shell,
        Ok(Err(e)) => return Err(ssh_failure(e)),
        Err(_) => {
            return Err(Failure::new(
                end_causes::CONSOLE_FAILED,
                "SSH_TIMEOUT",
                "the SSH server did not complete the login in time",
            ))
        }
    };
    send(sink, ready).await.map_err(|()| {
        Failure::new(
            end_causes::CONSOLE_FAILED,
            "BROWSER_GONE",
            "the browser left",
        )
    })?;
    let (mut output, mut input) = shell.split();
    // Input goes to the SSH channel from a task of its own, so this loop never waits on the
    // endpoint: russh stops reading its transport while output is not taken, so a write awaited
    // here while paused could wait forever. Typing also resumes output (as XON would).
    let (to_shell, mut for_shell) = tokio::sync::mpsc::channel::<Input>(64);
    let writer = tokio::spawn(
        async move {
            while let Some(i) = for_shell.recv().await {
                let done = match i {
                    Input::Data(b) => input.write(&b).await,
                    Input::Resize(s) => {
                        input
                            .resize(ssh::Size {
                                cols: s.cols,
                                rows: s.rows,
                            })
                            .await
                    }
                };
                if done.is_err() {
                    break;
                }
            }
            drop(for_shell);
            let _ = tokio::time::timeout(Duration::from_secs(2), input.close()).await;
        }
        .in_current_span(),
    );
    let mut pending: std::collections::VecDeque<Input> = Default::default();
    let mut pending_bytes = 0usize;
    let mut paused = false;
    let mut heard = Heard::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let end = loop {
        tokio::select! {
            m = source.next(), if pending_bytes < MAX_PENDING_INPUT => {
                heard.touch();
                match m {
                    Some(Ok(Message::Binary(b))) => {
                        pending_bytes += b.len();
                        pending.push_back(Input::Data(b));
                        paused = false;
                    }
                    Some(Ok(Message::Text(t))) => match control(t.as_str()) {
                        Ok(Control::Resize(s)) => {
                            pending.push_back(Input::Resize(s));
                            paused = false;
                        }
                        Ok(Control::Pause) => paused = true,
                        Ok(Control::Resume) => paused = false,
                        Err(end) => break end,
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Browser,
                    Some(Ok(_)) => {}
                }
            },
            permit = to_shell.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(i) = pending.pop_front() {
                        if let Input::Data(b) = &i {
                            pending_bytes -= b.len();
                        }
                        permit.send(i);
                    }
                }
                Err(_) => break End::Endpoint("the SSH connection closed".into()),
            },
            out = output.next(), if !paused => match out {
                Some(ssh::Output::Data(d)) => {
                    if to_browser(sink, Message::Binary(Bytes::from(d))).await.is_err() {
                        break End::Browser;
                    }
                }
                Some(ssh::Output::Exit(status)) => {
                    let _ = send(sink, &ServerMessage::Exit { status }).await;
                }
                Some(ssh::Output::ExitSignal(signal)) => {
                    break End::Endpoint(format!("the shell was killed by signal {signal}"));
                }
                None => break End::Endpoint("the SSH session ended".into()),
            },
            _ = ping.tick() => {
                if heard.silent() || to_browser(sink, Message::Ping(Bytes::new())).await.is_err() {
                    break End::Browser;
                }
            }
        }
    };
    drop(to_shell);
    drop(output);
    if tokio::time::timeout(Duration::from_secs(3), writer)
        .await
        .is_err()
    {
        debug!("the SSH input writer did not finish");
    }
    Ok(end)
}

fn ssh_failure(e: ssh::SshError) -> Failure {
    use ssh::SshError as E;
    let detail = e.to_string();
    match e {
        E::HostKeyUnknown { presented } => Failure {
            cause: end_causes::CONSOLE_HOST_KEY_UNKNOWN,
            message: ServerMessage::HostKey {
                code: "HOST_KEY_UNKNOWN".into(),
                fingerprint: presented.fingerprint.clone(),
                key: presented.openssh,
                expected: None,
            },
            detail: format!("the SSH server presented {}", presented.fingerprint),
        },
        E::HostKeyMismatch {
            presented,
            expected_fingerprint,
        } => Failure {
            cause: end_causes::CONSOLE_HOST_KEY_MISMATCH,
            message: ServerMessage::HostKey {
                code: "HOST_KEY_MISMATCH".into(),
                fingerprint: presented.fingerprint.clone(),
                key: presented.openssh,
                expected: Some(expected_fingerprint.clone()),
            },
            detail: format!(
                "the SSH server presented {}, the pinned key is {expected_fingerprint}",
                presented.fingerprint
            ),
        },
        E::AuthFailed(_) => Failure::new(end_causes::CONSOLE_AUTH_FAILED, e.code(), detail),
        _ => Failure::new(end_causes::CONSOLE_FAILED, e.code(), detail),
    }
}

/// Telnet: option negotiation (ECHO, SGA, NAWS, TTYPE) and IAC escaping both ways.
async fn telnet<S>(
    endpoint: DuplexStream,
    size: Size,
    ready: &ServerMessage,
    sink: &mut Sink<S>,
    source: &mut Source<S>,
) -> Result<End, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(endpoint);
    let mut t = telnet::Telnet::new(size);
    let mut to_server = Vec::new();
    let mut to_terminal = Vec::new();
    t.start(&mut to_server);
    let gone = |_| {
        Failure::new(
            end_causes::CONSOLE_FAILED,
            "TELNET",
            "the Telnet connection closed",
        )
    };
    wr.write_all(&to_server).await.map_err(gone)?;
    to_server.clear();
    send(sink, ready).await.map_err(|()| {
        Failure::new(
            end_causes::CONSOLE_FAILED,
            "BROWSER_GONE",
            "the browser left",
        )
    })?;
    // Bytes for the server go through a writer task of their own, so a server that stops reading
    // never stops this loop reading it (each would wait for the other).
    let (to_server_tx, mut to_server_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(
        async move {
            while let Some(bytes) = to_server_rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    let mut pending: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut pending_bytes = 0usize;
    let mut buf = vec![0u8; CHUNK];
    let mut paused = false;
    let mut heard = Heard::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let end = loop {
        tokio::select! {
            m = source.next(), if pending_bytes < MAX_PENDING_INPUT => {
                heard.touch();
                match m {
                    Some(Ok(Message::Binary(b))) => t.send(&b, &mut to_server),
                    Some(Ok(Message::Text(text))) => match control(text.as_str()) {
                        Ok(Control::Resize(s)) => t.resize(s, &mut to_server),
                        Ok(Control::Pause) => paused = true,
                        Ok(Control::Resume) => paused = false,
                        Err(end) => break end,
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::Browser,
                    Some(Ok(_)) => {}
                }
            },
            permit = to_server_tx.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(bytes) = pending.pop_front() {
                        pending_bytes -= bytes.len();
                        permit.send(bytes);
                    }
                }
                Err(_) => break End::Endpoint("the Telnet server closed the connection".into()),
            },
            n = rd.read(&mut buf), if !paused => match n {
                Ok(0) | Err(_) => break End::Endpoint("the Telnet server closed the connection".into()),
                Ok(n) => {
                    t.receive(&buf[..n], &mut to_terminal, &mut to_server);
                    if !to_terminal.is_empty() {
                        let out = Bytes::from(std::mem::take(&mut to_terminal));
                        if to_browser(sink, Message::Binary(out)).await.is_err() {
                            break End::Browser;
                        }
                    }
                }
            },
            _ = ping.tick() => {
                if heard.silent() || to_browser(sink, Message::Ping(Bytes::new())).await.is_err() {
                    break End::Browser;
                }
            }
        }
        if !to_server.is_empty() {
            pending_bytes += to_server.len();
            pending.push_back(std::mem::take(&mut to_server));
        }
    };
    drop(to_server_tx);
    writer.abort();
    Ok(end)
}
