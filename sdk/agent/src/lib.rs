//! The Thingport device agent: keeps one control channel (`thingport.v1` over WebSocket, see
//! [`thingport_protocol::control`]) from a gateway to the platform open, binds the configured
//! Things on it, and answers the platform's requests. It reconnects forever with backoff and
//! jitter, through an HTTP CONNECT proxy and over TLS when configured.
//!
//! It also serves remote sessions ([`session`]): on the platform's order it attaches to a Global
//! Access Server and carries the session's TCP connections to an endpoint it may reach
//! (`--allow`, or by default the endpoints the platform defines for the Thing, see
//! [`endpoints`]), until the platform, the GAS or the agent ends the session.
//!
//! [`run`] is the whole agent; the `thingport-agent` binary parses the command line
//! ([`cli::Args`]), sets up logging and signals, and calls it, as the tests do. Not here: the
//! tunnel multiplexer (`thingport_tunnel`) and the wire formats (`thingport_protocol`).

pub mod backoff;
pub mod cli;
pub mod config;
mod connection;
pub mod endpoints;
pub mod proxy;
pub mod session;
pub mod tls;
pub mod transport;
pub mod url;

pub use config::{AgentConfig, AppKey, ConfigError, Endpoint, TlsOptions};
pub use proxy::ProxyConfig;
pub use url::PlatformUrl;

use backoff::Backoff;
use connection::Outcome;
use std::future::Future;
use std::time::Duration;
use tracing::{error, info, warn, Instrument as _};
use transport::ConnectError;

/// `thingport-agent/<version>`: the name the agent gives in `hello`, in ping answers and as
/// its `User-Agent`.
pub const AGENT_NAME_VERSION: &str = concat!("thingport-agent/", env!("CARGO_PKG_VERSION"));

/// Runs the agent until `shutdown` resolves: connects, binds, serves, and reconnects with
/// backoff whenever the connection fails or is lost. Network and platform errors are logged
/// and retried, never returned; an error means the configuration is unusable. At shutdown the
/// remote sessions are ended too (their tunnels closed, "agent shutting down").
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    // One client configuration for the platform (https://) and for GASes (which may use TLS
    // even when the platform does not).
    let tls = tls::client_config(&config.tls)?;
    let sessions = session::Sessions::new(config.clone(), tls.clone());
    serve(&config, &tls, &sessions, shutdown).await;
    sessions
        .shutdown(config.close_timeout + Duration::from_secs(1))
        .await;
    info!("shut down");
    Ok(())
}

/// The connect / serve / back off loop, until `shutdown` resolves.
async fn serve(
    config: &AgentConfig,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    sessions: &session::Sessions,
    shutdown: impl Future<Output = ()>,
) {
    if config.tls.insecure {
        warn!(
            "--insecure: TLS certificates are NOT verified; anyone on the path can impersonate \
             the platform and read the application key. Use this for development only."
        );
    }
    info!(
        url = %config.url,
        things = ?config.things,
        proxy = %config.proxy.as_ref().map_or_else(|| "none".into(), ToString::to_string),
        "{AGENT_NAME_VERSION} starting"
    );

    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(config.min_backoff, config.max_backoff);
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let span = tracing::info_span!("connection", attempt, url = %config.url);
        let outcome = async {
            let connected = tokio::select! {
                _ = shutdown.as_mut() => return Outcome::Shutdown,
                connected = transport::connect(config, Some(tls)) => connected,
            };
            match connected {
                Ok(ws) => connection::serve(ws, config, sessions, &mut shutdown).await,
                Err(error) => Outcome::Lost {
                    error: error.into(),
                    welcomed_for: None,
                },
            }
        }
        .instrument(span.clone())
        .await;

        let (error, welcomed_for) = match outcome {
            Outcome::Shutdown => return,
            Outcome::Lost {
                error,
                welcomed_for,
            } => (error, welcomed_for),
        };
        if welcomed_for.is_some_and(|up| up >= config.stable_after) {
            backoff.reset();
        }
        let delay = backoff.next_delay(&mut rand::thread_rng());
        let retry_in = Duration::from_millis(delay.as_millis() as u64);
        span.in_scope(|| match error.downcast_ref::<ConnectError>() {
            Some(ConnectError::Rejected { status, message }) => {
                error!(status, %message, ?retry_in, "the platform refused the connection");
            }
            _ if welcomed_for.is_some() => {
                warn!(error = %format!("{error:#}"), ?retry_in, "connection lost");
            }
            _ => warn!(error = %format!("{error:#}"), ?retry_in, "connection failed"),
        });
        tokio::select! {
            _ = shutdown.as_mut() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
