//! Remote sessions: a `startSession` order from the platform makes the agent connect to a Global
//! Access Server with the order's credential and carry the session's TCP connections to the
//! endpoint, one dial per tunnelled connection (`thingport_tunnel`, role `Agent`); an
//! `endSession` message closes that tunnel and every connection it carries.
//!
//! The agent dials only what it may, checked in this order, each refusal answered
//! `SESSION_DENIED`: nothing when `--disable-remote-access` is set; with `--allow`, exactly those
//! endpoints; without it, the endpoints the platform defines for the ordering Thing (its
//! `endpoints` property, read with the agent's key before each session, see
//! [`crate::endpoints`]); and at most `--max-sessions` sessions at once. Sessions live on their
//! own: a control channel that reconnects does not end them; shutting the agent down does.
//!
//! Not here: the multiplexer (`thingport_tunnel`) and the control channel ([`crate::connection`]
//! hands orders in and sends the answers).

mod closer;
mod registry;

pub use registry::{Registry, ReserveError};

use crate::config::{validate_host, AgentConfig, Endpoint};
use crate::endpoints;
use crate::transport::{self, Upgrade};
use crate::url::PlatformUrl;
use closer::{Closable, Closed};
use rustls::ClientConfig;
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use thingport_protocol::control::{codes, AgentMessage, ErrorInfo};
use thingport_protocol::tunnel;
use thingport_tunnel::{Dial, Mux, Role};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing::instrument::WithSubscriber as _;
use tracing::{debug, info, warn, Instrument as _};

/// How long one dial of the endpoint may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The close reason of a tunnel the platform ended (`endSession`).
pub const ENDED_BY_PLATFORM: &str = "ended by the platform";
/// The close reason of tunnels when the agent stops.
pub const SHUTTING_DOWN: &str = "agent shutting down";
/// How many of a Thing's endpoints a denial lists.
const LISTED: usize = 8;

/// The body of a `startSession` request (its `Debug` leaves the credential out).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOrder {
    pub session: String,
    /// The GAS's public URL (`http(s)://host:port`); the tunnel path is added.
    pub gas_url: String,
    /// The agent side's credential for this session on that GAS.
    pub credential: String,
    pub endpoint: OrderEndpoint,
}

impl std::fmt::Debug for SessionOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOrder")
            .field("session", &self.session)
            .field("gas_url", &self.gas_url)
            .field("credential", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderEndpoint {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub name: String,
}

impl OrderEndpoint {
    /// `host:port` (IPv6 in brackets).
    pub fn address(&self) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Checks an order against what the agent knows without asking anyone: remote access enabled,
/// a well-formed order, and the `--allow` list when one is given. `Ok` is what to start once
/// the rest (the Thing's endpoints, the cap) is checked.
pub fn accept(
    config: &AgentConfig,
    body: &Value,
) -> Result<(SessionOrder, PlatformUrl), ErrorInfo> {
    if config.disable_remote_access {
        return Err(ErrorInfo::new(
            codes::SESSION_DENIED,
            "remote access is disabled on this agent (--disable-remote-access)",
        ));
    }
    let mut order: SessionOrder = serde_json::from_value(body.clone()).map_err(|e| {
        ErrorInfo::new(
            codes::FAILED,
            format!("not a valid startSession order: {e}"),
        )
    })?;
    if order.session.is_empty() || order.session.len() > tunnel::MAX_ID_LEN {
        return Err(ErrorInfo::new(
            codes::FAILED,
            "the order's session id is empty or too long",
        ));
    }
    let host = order.endpoint.host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_ascii_lowercase();
    if validate_host(&host).is_err() || order.endpoint.port == 0 {
        return Err(ErrorInfo::new(
            codes::FAILED,
            "the order's endpoint is not a valid host and port",
        ));
    }
    order.endpoint.host = host;
    let wanted = order.endpoint.address();
    if !config.allow.is_empty() && !config.allow.contains(&wanted) {
        return Err(ErrorInfo::new(
            codes::SESSION_DENIED,
            format!("endpoint {wanted} is not in this agent's --allow list"),
        ));
    }
    let mut url = PlatformUrl::parse(&order.gas_url).map_err(|e| {
        ErrorInfo::new(
            codes::FAILED,
            format!("the order's GAS URL is not usable: {e}"),
        )
    })?;
    url.path = tunnel::PATH.into();
    if order.credential.len() > tunnel::MAX_CREDENTIAL
        || HeaderValue::from_str(&format!("Bearer {}", order.credential)).is_err()
    {
        return Err(ErrorInfo::new(
            codes::FAILED,
            "the order's credential is malformed",
        ));
    }
    Ok((order, url))
}

/// The agent's remote sessions: takes orders, ends sessions, stops them all at shutdown. Clones
/// share the same sessions.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    config: AgentConfig,
    tls: Arc<ClientConfig>,
    registry: Registry,
}

/// How a session ended, for the log.
enum Ended {
    /// The agent closed the tunnel (for `endSession`, or shutdown) with this reason.
    Stopped(String),
    ByGas {
        code: u16,
        reason: String,
    },
    Lost(String),
    Unreachable(String),
}

impl Sessions {
    /// Sessions for `config`; `tls` is the client configuration for `https://` platforms and
    /// GASes.
    pub fn new(config: AgentConfig, tls: Arc<ClientConfig>) -> Sessions {
        let registry = Registry::new(config.max_sessions);
        Sessions {
            inner: Arc::new(Inner {
                config,
                tls,
                registry,
            }),
        }
    }

    /// Sessions live now (being checked, attaching or running).
    pub fn live(&self) -> usize {
        self.inner.registry.len()
    }

    /// Takes a `startSession` order (request `request` for `thing`). `Err` is the answer to send
    /// now; `Ok` means the answer will be sent through `replies` once the order is checked, and
    /// the session then runs in its own task.
    pub(crate) fn order(
        &self,
        thing: &str,
        request: u64,
        body: &Value,
        replies: mpsc::Sender<AgentMessage>,
    ) -> Result<(), ErrorInfo> {
        let config = &self.inner.config;
        let denied = |e: ErrorInfo| {
            let session = body.get("session").and_then(Value::as_str).unwrap_or("?");
            warn!(%session, %thing, code = %e.code, reason = %e.message, "remote session denied");
            e
        };
        let (order, url) = accept(config, body).map_err(denied)?;
        let (ticket, stop) = match self.inner.registry.reserve(&order.session) {
            Ok(slot) => slot,
            Err(ReserveError::TooMany { max }) => {
                return Err(denied(ErrorInfo::new(
                    codes::SESSION_DENIED,
                    format!("too many sessions: this agent already runs {max} (--max-sessions)"),
                )))
            }
            Err(ReserveError::Duplicate) => {
                return Err(denied(ErrorInfo::new(
                    codes::FAILED,
                    format!("session {} is already running on this agent", order.session),
                )))
            }
        };
        // A root span: sessions outlive the control connection that ordered them.
        let span = tracing::info_span!(parent: None, "session", session = %order.session, %thing);
        let this = self.clone();
        let thing = thing.to_string();
        tokio::spawn(
            async move {
                this.run(thing, request, order, url, stop, replies).await;
                drop(ticket); // the session leaves the registry
                debug!(live = this.live(), "session slot released");
            }
            .instrument(span)
            // The task logs where the agent logs (the caller's subscriber, not only the global).
            .with_current_subscriber(),
        );
        Ok(())
    }

    /// Handles `endSession` for `thing`: closes that session's tunnel; unknown ids are ignored.
    pub(crate) fn end(&self, thing: &str, body: &Value) {
        let Some(session) = body.get("session").and_then(Value::as_str) else {
            warn!(%thing, %body, "ignoring an endSession without a session id");
            return;
        };
        if self.inner.registry.stop(session, ENDED_BY_PLATFORM) {
            info!(%session, %thing, "the platform ended the session; closing its tunnel");
        } else {
            debug!(%session, %thing, "ignoring endSession for a session this agent does not run");
        }
    }

    /// Ends every session (close reason "agent shutting down") and waits for their tunnels to
    /// close, at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let told = self.inner.registry.stop_all(SHUTTING_DOWN);
        if told == 0 && self.inner.registry.is_empty() {
            return;
        }
        info!(sessions = told, "ending the remote sessions");
        if !self.inner.registry.wait_empty(timeout).await {
            warn!(
                sessions = self.live(),
                "some remote sessions did not end within {timeout:?}"
            );
        }
    }

    /// One session: the endpoint check, the answer, then the tunnel until it ends.
    async fn run(
        &self,
        thing: String,
        request: u64,
        order: SessionOrder,
        url: PlatformUrl,
        mut stop: oneshot::Receiver<String>,
        replies: mpsc::Sender<AgentMessage>,
    ) {
        let endpoint = order.endpoint.address();
        let verdict = if self.inner.config.allow.is_empty() {
            tokio::select! {
                reason = &mut stop => Err(ErrorInfo::new(
                    codes::FAILED,
                    format!(
                        "the session was ended before it started ({})",
                        reason.unwrap_or_else(|_| SHUTTING_DOWN.into())
                    ),
                )),
                verdict = self.verify(&thing, &endpoint) => verdict,
            }
        } else {
            Ok("it is on the --allow list".to_string())
        };
        let (result, error) = match verdict {
            Ok(why) => {
                info!(
                    %endpoint,
                    name = %order.endpoint.name,
                    gas = %url.authority(),
                    "remote session accepted: {why}"
                );
                (Some(serde_json::json!({ "accepted": true })), None)
            }
            Err(e) => {
                warn!(%endpoint, code = %e.code, reason = %e.message, "remote session denied");
                (None, Some(e))
            }
        };
        let accepted = error.is_none();
        let answer = AgentMessage::Response {
            id: request,
            result,
            error,
        };
        if replies.send(answer).await.is_err() {
            if accepted {
                warn!("the control channel was lost before the answer could be sent; the session is not started");
            }
            return;
        }
        if !accepted {
            return;
        }
        match self.tunnel(&order, &url, stop).await {
            Ended::Stopped(reason) if reason == ENDED_BY_PLATFORM => {
                info!(by = "platform", "remote session ended by the platform")
            }
            Ended::Stopped(reason) => info!(by = "agent", "remote session ended: {reason}"),
            Ended::ByGas { code, reason } => {
                info!(by = "gas", code, %reason, "remote session ended by the GAS: {reason}")
            }
            Ended::Lost(error) => warn!(by = "network", %error, "remote session lost: {error}"),
            Ended::Unreachable(error) => {
                warn!(gas = %url.authority(), %error, "remote session failed: cannot attach to the GAS")
            }
        }
    }

    /// Whether `endpoint` is among the endpoints the platform defines for `thing`; `Ok` says why
    /// it is allowed, `Err` is the denial.
    async fn verify(&self, thing: &str, endpoint: &Endpoint) -> Result<String, ErrorInfo> {
        let defined = endpoints::read(&self.inner.config, &self.inner.tls, thing)
            .await
            .map_err(|e| {
                ErrorInfo::new(
                    codes::SESSION_DENIED,
                    format!("the endpoints of Thing {thing} could not be verified: {e}"),
                )
            })?;
        if let Some(d) = defined
            .iter()
            .find(|d| d.matches(&endpoint.host, endpoint.port))
        {
            return Ok(format!("it is endpoint {d} of Thing {thing}"));
        }
        let known = if defined.is_empty() {
            "it defines none".to_string()
        } else {
            let mut list: Vec<String> =
                defined.iter().take(LISTED).map(|d| d.to_string()).collect();
            if defined.len() > LISTED {
                list.push(format!("and {} more", defined.len() - LISTED));
            }
            format!("it defines {}", list.join(", "))
        };
        Err(ErrorInfo::new(
            codes::SESSION_DENIED,
            format!("endpoint {endpoint} is not among the endpoints of Thing {thing} ({known})"),
        ))
    }

    /// Attaches to the GAS and carries the session until the tunnel ends or `stop` fires.
    async fn tunnel(
        &self,
        order: &SessionOrder,
        url: &PlatformUrl,
        mut stop: oneshot::Receiver<String>,
    ) -> Ended {
        let config = &self.inner.config;
        let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", order.credential)) else {
            return Ended::Unreachable("the credential is not a valid header value".into());
        };
        // The tunnel's own settings (frames batched until the multiplexer flushes).
        let ws_config = thingport_tunnel::websocket_config();
        let upgrade = Upgrade {
            url,
            headers: vec![("Authorization", bearer)],
            subprotocol: tunnel::SUBPROTOCOL_V1,
            ws_config,
        };
        let ws = tokio::select! {
            reason = &mut stop => return Ended::Stopped(reason.unwrap_or_else(|_| SHUTTING_DOWN.into())),
            ws = transport::open(config, Some(&self.inner.tls), upgrade) => match ws {
                Ok(ws) => ws,
                Err(e) => return Ended::Unreachable(format!("{:#}", anyhow::Error::from(e))),
            },
        };
        let endpoint = order.endpoint.address();
        info!(
            gas = %url.authority(),
            %endpoint,
            name = %order.endpoint.name,
            "remote session attached to the GAS"
        );
        let ws = Closable::new(ws, stop, config.close_timeout);
        let record = ws.record();
        let (_mux, done) = Mux::start(
            ws,
            Role::Agent {
                dial: dialler(order.session.clone(), endpoint),
            },
        );
        let result = done.await;
        let closed = record.lock().unwrap_or_else(PoisonError::into_inner).take();
        match (closed, result) {
            (Some(Closed::ByAgent(reason)), _) => Ended::Stopped(reason),
            (Some(Closed::ByGas { code, reason }), _) => Ended::ByGas { code, reason },
            (None, Ok(_)) => Ended::Lost("the GAS ended the connection without a close".into()),
            (None, Err(e)) => Ended::Lost(e.to_string()),
        }
    }
}

/// Dials `endpoint` for each tunnelled connection of `session`, logging failures (in the
/// session's span, with the caller's subscriber: the multiplexer runs dials in its own tasks).
fn dialler(session: String, endpoint: Endpoint) -> Dial {
    let span = tracing::Span::current();
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    Arc::new(move || {
        let (session, endpoint) = (session.clone(), endpoint.clone());
        let (span, dispatch) = (span.clone(), dispatch.clone());
        let dial = async move {
            let connect = TcpStream::connect((endpoint.host.as_str(), endpoint.port));
            let result = match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {endpoint} timed out after {DIAL_TIMEOUT:?}"),
                )),
            };
            match &result {
                Ok(_) => debug!(%session, %endpoint, "connected to the endpoint"),
                Err(error) => warn!(%session, %endpoint, %error, "cannot connect to the endpoint"),
            }
            result
        };
        Box::pin(dial.instrument(span).with_subscriber(dispatch))
    })
}

#[cfg(test)]
mod tests;
