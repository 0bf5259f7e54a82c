//! One open control channel: `hello`/`welcome`, binding the Things, answering the platform,
//! pings and the idle timeout, and the close on shutdown. Session orders are handed to
//! [`Sessions`]; their answers come back through a queue the loop drains, so a slow endpoint
//! check never holds up the channel.

use crate::config::AgentConfig;
use crate::session::Sessions;
use crate::transport::Channel;
use anyhow::{anyhow, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thingport_protocol::control::{
    self, codes, encode, requests, AgentMessage, ErrorInfo, PlatformMessage,
};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, error, info, trace, warn};

/// How soon a bind refused as `UNAVAILABLE` (the platform could not check now) is tried again,
/// at most.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);
/// Answers of session orders waiting to be sent.
const REPLY_QUEUE: usize = 64;

/// How a connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// Shutdown was requested and the channel was closed.
    Shutdown,
    /// The connection was lost or given up; `welcomed_for` is how long it was up after
    /// `welcome` (`None` when no welcome came).
    Lost {
        error: anyhow::Error,
        welcomed_for: Option<Duration>,
    },
}

/// Where one configured Thing stands on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindState {
    /// `bind` `id` was sent, no answer yet.
    Pending(u64),
    Bound,
    /// Refused or lost: send `bind` again at this instant.
    RetryAt(Instant),
    /// Not bound again on this connection: another agent took it (`REPLACED`), or the
    /// connection binds all it may (`TOO_MANY_THINGS`).
    Parked,
}

/// What woke the connection loop.
enum Event {
    Shutdown,
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    PingDue,
    Idle,
    RetryDue,
    /// A late answer (to a session order) to send.
    Reply(AgentMessage),
}

struct Connection<'a> {
    config: &'a AgentConfig,
    sessions: &'a Sessions,
    ws: Channel,
    /// Where session tasks send their answers; per connection, so an answer never reaches a
    /// later connection (request ids are per connection).
    replies: mpsc::Sender<AgentMessage>,
    replies_rx: mpsc::Receiver<AgentMessage>,
    states: Vec<BindState>,
    next_id: u64,
    last_received: Instant,
}

/// Serves the channel until it is lost or `shutdown` resolves.
pub async fn serve<F>(
    ws: Channel,
    config: &AgentConfig,
    sessions: &Sessions,
    shutdown: &mut Pin<&mut F>,
) -> Outcome
where
    F: Future<Output = ()>,
{
    let (replies, replies_rx) = mpsc::channel(REPLY_QUEUE);
    let mut conn = Connection {
        config,
        sessions,
        ws,
        replies,
        replies_rx,
        states: vec![BindState::RetryAt(Instant::now()); config.things.len()],
        next_id: 1,
        last_received: Instant::now(),
    };
    let welcome = match conn.hello(shutdown).await {
        Ok(Some(ping_interval)) => ping_interval,
        Ok(None) => return Outcome::Shutdown,
        Err(error) => {
            return Outcome::Lost {
                error,
                welcomed_for: None,
            }
        }
    };
    let welcomed_at = Instant::now();
    match conn.run(welcome, shutdown).await {
        Ok(()) => Outcome::Shutdown,
        Err(error) => Outcome::Lost {
            error,
            welcomed_for: Some(welcomed_at.elapsed()),
        },
    }
}

impl Connection<'_> {
    /// Sends `hello` and waits for `welcome`; returns the ping interval, or `None` on shutdown.
    async fn hello<F: Future<Output = ()>>(
        &mut self,
        shutdown: &mut Pin<&mut F>,
    ) -> anyhow::Result<Option<Duration>> {
        self.send(&AgentMessage::Hello {
            agent: crate::AGENT_NAME_VERSION.into(),
        })
        .await?;
        let deadline = Instant::now() + self.config.welcome_timeout;
        loop {
            let frame = tokio::select! {
                _ = shutdown.as_mut() => {
                    self.close().await;
                    return Ok(None);
                }
                frame = self.ws.next() => frame,
                _ = sleep_until(deadline) => {
                    return Err(anyhow!(
                        "no welcome from the platform within {:?}",
                        self.config.welcome_timeout
                    ));
                }
            };
            match self.frame(frame).await? {
                Some(PlatformMessage::Welcome {
                    server,
                    max_things,
                    ping_interval_ms,
                }) => {
                    info!(%server, max_things, ping_interval_ms, "connected to the platform");
                    if self.config.things.len() > max_things as usize {
                        warn!(
                            max_things,
                            things = self.config.things.len(),
                            "more Things than this connection may bind; the platform will refuse the rest"
                        );
                    }
                    let ms = if ping_interval_ms == 0 {
                        control::PING_INTERVAL_MS
                    } else {
                        ping_interval_ms.clamp(100, 60_000)
                    };
                    return Ok(Some(Duration::from_millis(ms)));
                }
                Some(PlatformMessage::Error { code, message }) => {
                    warn!(%code, %message, "the platform reported an error before welcome");
                }
                Some(other) => debug!(?other, "ignoring a message before welcome"),
                None => {}
            }
        }
    }

    /// The connected loop, after `welcome`. `Ok` means shutdown.
    async fn run<F: Future<Output = ()>>(
        &mut self,
        ping_every: Duration,
        shutdown: &mut Pin<&mut F>,
    ) -> anyhow::Result<()> {
        self.retry_due_binds().await?;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let idle_at = self.last_received + self.config.idle_timeout;
            let retry_at = self.next_retry();
            let event = tokio::select! {
                _ = shutdown.as_mut() => Event::Shutdown,
                frame = self.ws.next() => Event::Frame(frame),
                _ = ping.tick() => Event::PingDue,
                _ = sleep_until(idle_at) => Event::Idle,
                _ = sleep_until(retry_at.unwrap_or(idle_at)), if retry_at.is_some() => Event::RetryDue,
                Some(reply) = self.replies_rx.recv() => Event::Reply(reply),
            };
            match event {
                Event::Shutdown => {
                    self.close().await;
                    return Ok(());
                }
                Event::Frame(frame) => {
                    if let Some(message) = self.frame(frame).await? {
                        self.on_message(message).await?;
                    }
                }
                Event::PingDue => {
                    trace!("ping");
                    self.send_frame(Message::Ping(Default::default())).await?;
                }
                Event::Idle => {
                    return Err(anyhow!(
                        "nothing received from the platform for {:?}; the link is dead",
                        self.config.idle_timeout
                    ));
                }
                Event::RetryDue => self.retry_due_binds().await?,
                Event::Reply(reply) => self.send(&reply).await?,
            }
        }
    }

    /// Handles one frame (or the end of the stream); returns the decoded platform message of a
    /// text frame. Malformed messages are logged and skipped.
    async fn frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> anyhow::Result<Option<PlatformMessage>> {
        let message = match frame {
            None => return Err(anyhow!("the platform closed the connection")),
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("the connection failed")),
            Some(Ok(message)) => message,
        };
        self.last_received = Instant::now();
        match message {
            Message::Text(text) => match PlatformMessage::decode(&text) {
                Ok(message) => return Ok(Some(message)),
                Err(error) => warn!(%error, "ignoring a malformed message from the platform"),
            },
            Message::Binary(data) => {
                warn!(
                    bytes = data.len(),
                    "ignoring a binary frame (thingport.v1 sends text frames only)"
                );
            }
            Message::Ping(_) => {
                // The pong is queued by tungstenite; flush it now rather than with the next write.
                tokio::time::timeout(self.config.write_timeout, self.ws.flush())
                    .await
                    .map_err(|_| anyhow!("the platform does not read (pong not sent)"))?
                    .context("cannot send a pong")?;
            }
            Message::Pong(_) => trace!("pong"),
            Message::Close(frame) => {
                // Let tungstenite send its close reply, then give up on this connection.
                let _ = tokio::time::timeout(self.config.close_timeout, self.ws.flush()).await;
                return Err(match frame {
                    Some(f) => anyhow!(
                        "the platform closed the connection (code {}: {})",
                        u16::from(f.code),
                        if f.reason.is_empty() {
                            "no reason"
                        } else {
                            f.reason.as_str()
                        }
                    ),
                    None => anyhow!("the platform closed the connection"),
                });
            }
            Message::Frame(_) => {}
        }
        Ok(None)
    }

    async fn on_message(&mut self, message: PlatformMessage) -> anyhow::Result<()> {
        match message {
            PlatformMessage::Welcome { .. } => debug!("ignoring a second welcome"),
            PlatformMessage::Bound { id, thing } => match self.pending(id, &thing) {
                Some(i) => {
                    self.states[i] = BindState::Bound;
                    info!(%thing, "bound Thing {thing}");
                }
                None => debug!(id, %thing, "ignoring bound for a bind this agent did not send"),
            },
            PlatformMessage::BindRefused {
                id,
                thing,
                code,
                reason,
            } => match self.pending(id, &thing) {
                Some(i) if code == codes::TOO_MANY_THINGS => {
                    // Retrying cannot help until this connection unbinds something.
                    self.states[i] = BindState::Parked;
                    error!(%thing, %code, %reason, "the platform refused to bind Thing {thing}; not retried on this connection");
                }
                Some(i) => {
                    let retry_in = if code == codes::UNAVAILABLE {
                        self.config.bind_retry_interval.min(UNAVAILABLE_RETRY)
                    } else {
                        self.config.bind_retry_interval
                    };
                    self.states[i] = BindState::RetryAt(Instant::now() + retry_in);
                    error!(%thing, %code, %reason, ?retry_in, "the platform refused to bind Thing {thing}");
                }
                None => {
                    debug!(id, %thing, "ignoring bindRefused for a bind this agent did not send")
                }
            },
            PlatformMessage::Unbound {
                thing,
                code,
                reason,
                ..
            } => {
                let Some(i) = self.config.things.iter().position(|t| *t == thing) else {
                    debug!(%thing, "ignoring unbound for a Thing this agent does not serve");
                    return Ok(());
                };
                if code == codes::REPLACED {
                    self.states[i] = BindState::Parked;
                    warn!(%thing, %code, "Thing {thing} is now served by another agent: {reason}");
                } else {
                    let retry_in = self.config.bind_retry_interval;
                    self.states[i] = BindState::RetryAt(Instant::now() + retry_in);
                    warn!(%thing, %code, %reason, ?retry_in, "Thing {thing} was unbound; binding it again later");
                }
            }
            PlatformMessage::Request {
                id,
                thing,
                name,
                body,
            } => {
                if name == requests::START_SESSION && self.is_bound(&thing) {
                    debug!(id, %thing, %name, "request");
                    match self.sessions.order(&thing, id, &body, self.replies.clone()) {
                        Ok(()) => {} // answered once checked
                        Err(error) => {
                            self.send(&AgentMessage::Response {
                                id,
                                result: None,
                                error: Some(error),
                            })
                            .await?;
                        }
                    }
                    return Ok(());
                }
                let answer = self.answer(&thing, &name);
                debug!(id, %thing, %name, ok = answer.is_ok(), "request");
                let (result, error) = match answer {
                    Ok(result) => (Some(result), None),
                    Err(error) => (None, Some(error)),
                };
                self.send(&AgentMessage::Response { id, result, error })
                    .await?;
            }
            PlatformMessage::Message { thing, name, body } if name == requests::END_SESSION => {
                self.sessions.end(&thing, &body);
            }
            PlatformMessage::Message { thing, name, body } => {
                debug!(%thing, %name, %body, "message from the platform");
            }
            PlatformMessage::Error { code, message } => {
                warn!(%code, %message, "the platform reported an error");
            }
        }
        Ok(())
    }

    /// The answer to a request `name` for `thing`.
    fn answer(&self, thing: &str, name: &str) -> Result<serde_json::Value, ErrorInfo> {
        if !self.is_bound(thing) {
            return Err(ErrorInfo::new(
                codes::NOT_BOUND,
                format!("Thing {thing:?} is not bound on this connection"),
            ));
        }
        match name {
            requests::PING => {
                let time = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                Ok(serde_json::json!({ "agent": crate::AGENT_NAME_VERSION, "time": time }))
            }
            other => Err(ErrorInfo::new(
                codes::UNKNOWN_REQUEST,
                format!("this agent does not know the request {other:?}"),
            )),
        }
    }

    /// Whether `thing` is bound on this connection.
    fn is_bound(&self, thing: &str) -> bool {
        self.config
            .things
            .iter()
            .zip(&self.states)
            .any(|(t, s)| t == thing && *s == BindState::Bound)
    }

    /// The index of the Thing whose pending bind has `id`.
    fn pending(&self, id: u64, thing: &str) -> Option<usize> {
        self.states
            .iter()
            .zip(&self.config.things)
            .position(|(s, t)| *s == BindState::Pending(id) && t == thing)
    }

    fn next_retry(&self) -> Option<Instant> {
        self.states
            .iter()
            .filter_map(|s| match s {
                BindState::RetryAt(at) => Some(*at),
                _ => None,
            })
            .min()
    }

    /// Sends `bind` for every Thing whose retry time has come (all of them right after welcome).
    async fn retry_due_binds(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        for i in 0..self.states.len() {
            if matches!(self.states[i], BindState::RetryAt(at) if at <= now) {
                let id = self.next_id;
                self.next_id += 1;
                self.states[i] = BindState::Pending(id);
                let thing = self.config.things[i].clone();
                debug!(id, %thing, "bind");
                self.send(&AgentMessage::Bind { id, thing }).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, message: &AgentMessage) -> anyhow::Result<()> {
        self.send_frame(Message::text(encode(message))).await
    }

    async fn send_frame(&mut self, frame: Message) -> anyhow::Result<()> {
        tokio::time::timeout(self.config.write_timeout, self.ws.send(frame))
            .await
            .map_err(|_| {
                anyhow!(
                    "the platform has not read for {:?}; giving up on the connection",
                    self.config.write_timeout
                )
            })?
            .context("cannot send to the platform")
    }

    /// Sends close 1000 and waits (at most `close_timeout`) for the platform's reply.
    async fn close(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "agent shutting down".into(),
        };
        let closing = async {
            self.ws.close(Some(frame)).await?;
            // tungstenite ends the stream once the close handshake is complete.
            while let Some(message) = self.ws.next().await {
                message?;
            }
            Ok::<(), tokio_tungstenite::tungstenite::Error>(())
        };
        match tokio::time::timeout(self.config.close_timeout, closing).await {
            Ok(Ok(())) => debug!("connection closed"),
            Ok(Err(e)) => debug!(error = %e, "error while closing the connection"),
            Err(_) => debug!("the platform did not answer the close in time"),
        }
    }
}
