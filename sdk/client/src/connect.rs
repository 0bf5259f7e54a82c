//! `thingport connect`: the Remote Access Client. Starts a session on a Thing's endpoint
//! (`StartSession`), attaches the client side to the session's Global Access Server with the
//! credential it got ([`attach`]), then carries local connections through the tunnel with the
//! stream multiplexer (`thingport_tunnel`, role `Client`): every connection to a local listener
//! (`--local`), or the one connection on stdin/stdout (`--stdio`, for ssh's `ProxyCommand`).
//!
//! The session lives while the command runs. Ctrl-C, SIGTERM or SIGHUP (ssh ends its proxy
//! command with SIGHUP) end it: `EndSession`, a normal close of the tunnel, exit 0. A tunnel
//! that closes on its own (the GAS went away, the agent side ended) is reported with its close
//! reason, then the platform is asked (`GetSession`, every 2 s for up to 60 s) how the session
//! ended, and the command fails with `session ended: <cause>`.
//!
//! Not here: the platform's side of sessions (RAE) and the GAS; this is a client of both.

pub mod attach;

use crate::api::Connection;
use crate::remote::{RemoteSession, TERMINATED};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thingport_tunnel::{Closed, Mux, Options, Role, TunnelError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument as _};

/// How long `EndSession` may take when the user ends the session.
const END_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the tunnel may take to answer our close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often and how long the platform is asked how a lost session ended.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
const POLL_FOR: Duration = Duration::from_secs(60);
/// A tunnel silent for this long is lost (the GAS pings every 20 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Where the session's connections come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// A local listener (`--local ADDR:PORT`, port 0 allowed): each connection is a stream.
    Listen(String),
    /// One connection on stdin/stdout (`--stdio`).
    Stdio,
}

/// What `thingport connect` was asked.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub thing: String,
    pub endpoint: String,
    /// Attach to this existing session (`AttachSession`) instead of starting one.
    pub session: Option<String>,
    pub local: Local,
    /// The TLS configuration for a `https://` GAS (the one the REST calls use).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

type TunnelTask = JoinHandle<Result<Option<Closed>, TunnelError>>;

/// Runs a session until the user ends it (`Ok`) or it ends on its own or fails (`Err`).
pub async fn run(conn: &Connection, opts: &ConnectOptions) -> anyhow::Result<()> {
    // Registered before anything else, so a signal is never lost to the default action.
    let mut signals = Signals::new()?;
    let session = match &opts.session {
        None => conn.start_session(&opts.thing, &opts.endpoint).await?,
        Some(id) => {
            let s = conn.attach_session(&opts.thing, id).await?;
            if s.remote_endpoint
                .as_deref()
                .is_some_and(|e| e != opts.endpoint)
            {
                anyhow::bail!(
                    "session {id} is for endpoint '{}', not '{}'",
                    s.remote_endpoint.as_deref().unwrap_or_default(),
                    opts.endpoint
                );
            }
            s
        }
    };
    let id = session
        .session_id
        .clone()
        .context("StartSession failed: the server's answer has no sessionId")?;
    let span = tracing::info_span!("session", session_id = %id, thing = %opts.thing);
    let live = Live {
        conn,
        thing: &opts.thing,
        id: &id,
    };
    live.attached(opts, &session, &mut signals)
        .instrument(span)
        .await
}

impl Live<'_> {
    /// Attaches the started session and carries its connections.
    async fn attached(
        &self,
        opts: &ConnectOptions,
        session: &RemoteSession,
        signals: &mut Signals,
    ) -> anyhow::Result<()> {
        let live = self;
        let id = self.id;
        let (gas, credential) = match (&session.gas_url, &session.credential) {
            (Some(url), Some(credential)) => match attach::GasUrl::parse(url) {
                Ok(gas) => (gas, credential.0.clone()),
                Err(e) => return Err(live.abandon(e).await),
            },
            _ => {
                let e = anyhow::anyhow!(
                    "StartSession failed: the server's answer has no gasUrl or credential"
                );
                return Err(live.abandon(e).await);
            }
        };
        info!(gas = %gas.authority(), "attaching to the GAS");
        let ws = tokio::select! {
            ws = attach::attach(&gas, &credential, opts.tls.as_ref()) => match ws {
                Ok(ws) => ws,
                Err(e) => return Err(live.abandon(e).await),
            },
            signal = signals.recv() => {
                info!(signal, "ending the session before it was attached");
                live.end().await;
                return Ok(());
            }
        };
        let options = Options {
            idle_timeout: Some(IDLE_TIMEOUT),
        };
        let (mux, tunnel) = Mux::start_with(ws, Role::Client, options);
        let mut tunnel: TunnelTask = tokio::spawn(tunnel);
        match &opts.local {
            Local::Listen(addr) => {
                let listener = match listen(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let e = anyhow::Error::new(e).context(format!("cannot listen on {addr}"));
                        return Err(live.abandon(e).await);
                    }
                };
                let bound = listener
                    .local_addr()
                    .context("the listener has no address")?;
                {
                    // Not println!: a closed stdout must not panic the session away.
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "listening on {bound}");
                    let _ = out.flush();
                }
                eprintln!(
                    "session {id} to {}/{} started; {}",
                    opts.thing,
                    opts.endpoint,
                    usage_hint(&opts.endpoint, session.protocol.as_deref(), bound)
                );
                tokio::select! {
                    signal = signals.recv() => live.user_end(signal, &mux, tunnel).await,
                    r = &mut tunnel => live.lost(r, signals).await,
                    () = accept_loop(listener, mux.clone()) => Ok(()),
                }
            }
            Local::Stdio => {
                let carry = mux.carry_split(tokio::io::stdin(), tokio::io::stdout());
                tokio::select! {
                    signal = signals.recv() => live.user_end(signal, &mux, tunnel).await,
                    r = &mut tunnel => live.lost(r, signals).await,
                    r = carry => match r {
                        Ok(()) => live.user_end("the connection ended", &mux, tunnel).await,
                        Err(e) => {
                            // The stream ends with the tunnel: then the tunnel's end says more.
                            match tokio::time::timeout(Duration::from_secs(1), &mut tunnel).await {
                                Ok(r) => live.lost(r, signals).await,
                                Err(_) => {
                                    let _ = live.user_end("the connection failed", &mux, tunnel).await;
                                    Err(anyhow::Error::new(e).context("the connection through the tunnel failed"))
                                }
                            }
                        }
                    },
                }
            }
        }
    }
}

/// Accepts local connections forever, each carried as its own stream.
/// The local listener, with a deep accept queue (4,096; tokio's default is 128): a client that
/// opens many connections at once (a VNC viewer, a load test) must not see SYNs dropped and
/// retried after a second.
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(4096)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

async fn accept_loop(listener: TcpListener, mux: Mux) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let mux = mux.clone();
                tokio::spawn(async move {
                    info!(%peer, "local connection");
                    match mux.carry(socket).await {
                        Ok(()) => info!(%peer, "local connection done"),
                        Err(e) => warn!(%peer, error = %e, "connection through the tunnel failed"),
                    }
                });
            }
            Err(e) => {
                // E.g. out of file descriptors: wait a moment rather than spin.
                warn!(error = %e, "accepting a local connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A started session.
struct Live<'a> {
    conn: &'a Connection,
    thing: &'a str,
    id: &'a str,
}

impl Live<'_> {
    /// `EndSession`, bounded; a failure is a warning (the GAS ends a session whose client side
    /// closed anyway).
    async fn end(&self) {
        match tokio::time::timeout(
            END_TIMEOUT,
            self.conn.end_thing_session(self.thing, self.id),
        )
        .await
        {
            Ok(Ok(())) => info!("session ended"),
            Ok(Err(e)) => eprintln!(
                "thingport: warning: could not end session {}: {e:#}",
                self.id
            ),
            Err(_) => eprintln!(
                "thingport: warning: could not end session {}: EndSession took longer than \
                 {END_TIMEOUT:?}",
                self.id
            ),
        }
    }

    /// Ends a session that could not be used, and returns the error that stopped it.
    async fn abandon(&self, e: anyhow::Error) -> anyhow::Error {
        self.end().await;
        e.context(format!("session {} could not be attached", self.id))
    }

    /// The user (or the end of the `--stdio` connection) ends the session.
    async fn user_end(&self, why: &str, mux: &Mux, tunnel: TunnelTask) -> anyhow::Result<()> {
        info!(why, "ending the session");
        self.end().await;
        let _ = mux.close("the user ended the session").await;
        if tokio::time::timeout(CLOSE_TIMEOUT, tunnel).await.is_err() {
            info!("the GAS did not answer the close in time");
        }
        Ok(())
    }

    /// The tunnel ended on its own: report why, then ask the platform how the session ended.
    async fn lost(
        &self,
        ended: Result<Result<Option<Closed>, TunnelError>, tokio::task::JoinError>,
        signals: &mut Signals,
    ) -> anyhow::Result<()> {
        let why = match ended {
            Ok(Ok(Some(closed))) => format!("the GAS closed it: {closed}"),
            Ok(Ok(None)) => "the GAS closed the connection".to_owned(),
            Ok(Err(e)) => tunnel_failure(&e),
            Err(e) => format!("the tunnel task failed: {e}"),
        };
        eprintln!(
            "thingport: the tunnel of session {} closed ({why}); asking the platform how the \
             session ended",
            self.id
        );
        tokio::select! {
            r = self.poll_end() => r,
            _ = signals.recv() => Err(anyhow::anyhow!("the tunnel closed: {why}")),
        }
    }

    /// `GetSession` every [`POLL_INTERVAL`] until the session is `TERMINATED` (at most
    /// [`POLL_FOR`]); always an error: the session is over.
    async fn poll_end(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + POLL_FOR;
        loop {
            let last = match self.conn.get_session(self.thing, self.id).await {
                Ok(RemoteSession {
                    status: Some(status),
                    termination_cause,
                    ..
                }) if status == TERMINATED => {
                    let cause = termination_cause.unwrap_or_else(|| "no cause given".into());
                    anyhow::bail!("session ended: {cause}");
                }
                Ok(s) => format!("status {}", s.status.as_deref().unwrap_or("unknown")),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() + POLL_INTERVAL > deadline {
                anyhow::bail!(
                    "the tunnel of session {} closed, and after {POLL_FOR:?} the platform still \
                     does not report it ended (last: {last})",
                    self.id
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Why the tunnel failed, in the user's words (tungstenite's own texts repeat themselves).
fn tunnel_failure(e: &TunnelError) -> String {
    use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
    match e {
        TunnelError::WebSocket(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        | TunnelError::WebSocket(WsError::ConnectionClosed) => {
            "the connection to the GAS was cut without a close frame".to_owned()
        }
        TunnelError::WebSocket(WsError::Io(io)) => {
            format!("the connection to the GAS failed: {io}")
        }
        TunnelError::WebSocket(other) => format!("the tunnel's WebSocket failed: {other}"),
        TunnelError::Idle(d) => format!("nothing was received from the GAS for {d:?}"),
        other => other.to_string(),
    }
}

/// What to type to use the tunnel, by the endpoint's protocol (or its name).
pub fn usage_hint(endpoint: &str, protocol: Option<&str>, bound: SocketAddr) -> String {
    let kind = protocol.unwrap_or(endpoint).to_ascii_lowercase();
    let port = bound.port();
    let host = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    if kind.contains("ssh") {
        format!("connect with: ssh -p {port} <user>@{host}")
    } else if kind.contains("vnc") {
        format!("point your VNC viewer at {host}::{port}")
    } else if kind.contains("https") {
        format!("open https://{host}:{port}/")
    } else if kind.contains("http") {
        format!("open http://{host}:{port}/")
    } else if kind.contains("telnet") {
        format!("connect with: telnet {host} {port}")
    } else {
        format!("connect your client to {bound}")
    }
}

/// Ctrl-C, SIGTERM and SIGHUP, registered at creation (a signal that arrives before
/// [`Signals::recv`] is polled is kept, not lost).
struct Signals {
    #[cfg(unix)]
    streams: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams = Vec::new();
        for (kind, name) in [
            (SignalKind::interrupt(), "interrupt"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            let s = signal(kind).with_context(|| format!("cannot handle {name}"))?;
            streams.push((s, name));
        }
        Ok(Signals { streams })
    }

    #[cfg(not(unix))]
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the first signal and names it.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        let waits = self.streams.iter_mut().map(|(s, name)| {
            let name: &'static str = name;
            Box::pin(async move {
                s.recv().await;
                name
            })
        });
        futures_util::future::select_all(waits).await.0
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "interrupt"
    }
}

#[cfg(test)]
mod tests {
    use super::usage_hint;

    #[test]
    fn hints_follow_the_protocol_then_the_name() {
        let a = "127.0.0.1:2222".parse().unwrap();
        assert_eq!(
            usage_hint("ssh", None, a),
            "connect with: ssh -p 2222 <user>@127.0.0.1"
        );
        assert!(usage_hint("console", Some("VNC"), a).contains("127.0.0.1::2222"));
        assert!(usage_hint("web", Some("HTTP"), a).contains("http://127.0.0.1:2222/"));
        assert_eq!(
            usage_hint("db", Some("TCP"), a),
            "connect your client to 127.0.0.1:2222"
        );
        let any = "0.0.0.0:22".parse().unwrap();
        assert!(usage_hint("ssh", None, any).ends_with("@127.0.0.1"));
    }
}
