//! The `thingport-gas` server around the relay: binds the listener, registers with the platform
//! and heartbeats ([`registration`]), reports session events ([`reports`]), and on shutdown
//! drains: heartbeats `healthy: false`, takes no new sessions, lets live ones run for the drain
//! period, ends the rest (`SHUTDOWN`), and flushes the last reports within a bounded wait.

mod backoff;
pub mod config;
pub mod platform;
mod registration;
mod reports;

pub use config::{AppKey, ConfigError, GasConfig, PlatformTls, PlatformUrl, Timing};

use crate::{KeyCell, Relay};
use anyhow::Context as _;
use platform::Platform;
use registration::{Registrar, Shared};
use reports::{Queue, Sender};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use thingport_protocol::gas::RegisterServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// `thingport-gas <version>`, as registration reports it.
pub const VERSION: &str = concat!("thingport-gas ", env!("CARGO_PKG_VERSION"));

/// Binds, prints `listening on <addr>` on stdout, and runs the server until `shutdown`
/// resolves and the drain is over (see [`Server::run`]).
pub async fn run(config: GasConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    // The one line scripts wait for (SPEC §7).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", server.local_addr());
    let _ = out.flush();
    drop(out);
    server.run(shutdown).await
}

/// A GAS with its listener bound, not yet serving.
pub struct Server {
    config: GasConfig,
    listener: TcpListener,
    addr: SocketAddr,
    relay: Arc<Relay>,
    keys: Arc<KeyCell>,
    platform: Platform,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.config.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config` and binds its listen address (port 0 picks a free port). Call it
    /// within a tokio runtime.
    pub async fn bind(config: GasConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let mut relay_config = config.relay.clone();
        relay_config.max_sessions = usize::try_from(config.capacity).unwrap_or(usize::MAX);
        let keys = Arc::new(KeyCell::new(config.name.clone()));
        let relay = Relay::new(keys.clone(), relay_config, config.tls.clone())?;
        let platform = Platform::new(&config)?;
        let listener = crate::bind(config.listen)
            .with_context(|| format!("failed to listen on {}", config.listen))?;
        let addr = listener
            .local_addr()
            .context("failed to read the bound address")?;
        Ok(Server {
            config,
            listener,
            addr,
            relay,
            keys,
            platform,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay (its events, live sessions).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Serves until `shutdown` resolves, then drains and returns. Platform errors are logged
    /// and retried, never returned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            config,
            listener,
            addr,
            relay,
            keys,
            platform,
        } = self;
        if config.platform_tls.insecure && config.url.tls() {
            warn!(
                "--insecure: the platform's TLS certificate is NOT verified; anyone on the path \
                 can impersonate the platform, read the application key and the signing keys. \
                 Use this for development only."
            );
        }
        let params = RegisterServer {
            name: config.name.clone(),
            public_url: config.public_url_for(addr),
            version: VERSION.into(),
            capacity: config.capacity,
        };
        info!(
            name = %config.name,
            %addr,
            public_url = %params.public_url,
            tls = config.tls.is_some(),
            capacity = config.capacity,
            platform = %config.url,
            "{VERSION} starting"
        );

        let shared = Arc::new(Shared {
            keys,
            registered: watch::Sender::new(None),
        });
        relay.set_claims(Arc::new(Claimer {
            platform: platform.clone(),
            name: config.name.clone(),
            shared: shared.clone(),
        }));
        let (draining, draining_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let (finish, finish_rx) = watch::channel(false);
        let (collected, collected_rx) = watch::channel(false);
        let timing = &config.timing;

        let queue = Arc::new(Queue::new(timing.report_queue));
        // Subscribed before the relay serves, so no event is missed.
        let events = relay.events();
        let collector = tokio::spawn({
            let queue = queue.clone();
            async move {
                reports::collect(events, queue, finish_rx).await;
                collected.send_replace(true);
            }
        });
        let sender = tokio::spawn(
            Sender {
                platform: platform.clone(),
                name: config.name.clone(),
                queue: queue.clone(),
                shared: shared.clone(),
                collector_done: collected_rx,
                min_backoff: timing.min_backoff,
                max_backoff: timing.max_backoff,
            }
            .run(),
        );
        let registrar = tokio::spawn(
            Registrar {
                platform,
                params,
                relay: relay.clone(),
                shared,
                draining: draining_rx,
                stop: stop_rx,
                min_backoff: timing.min_backoff,
                max_backoff: timing.max_backoff,
            }
            .run(),
        );

        relay
            .clone()
            .serve(listener, async {
                shutdown.await;
                info!(
                    sessions = relay.sessions(),
                    drain = ?config.relay.drain,
                    "shutting down: no new sessions, draining the live ones"
                );
                draining.send_replace(true);
            })
            .await;

        // Every session has ended and its events are in the broadcast: deliver them.
        finish.send_replace(true);
        let _ = collector.await;
        let abort = sender.abort_handle();
        match tokio::time::timeout(timing.flush_timeout, sender).await {
            Ok(_) => info!("session reports flushed"),
            Err(_) => {
                abort.abort();
                warn!(
                    undelivered = queue.len(),
                    "gave up delivering the last session reports after {:?}", timing.flush_timeout
                );
            }
        }
        stop.send_replace(true);
        let _ = registrar.await;
        info!("stopped");
        Ok(())
    }
}

/// Browser consoles claim their sessions' credentials from the platform, under the current
/// registration.
struct Claimer {
    platform: Platform,
    name: String,
    shared: Arc<Shared>,
}

impl crate::console::Claims for Claimer {
    fn claim<'a>(
        &'a self,
        session: &'a str,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<thingport_protocol::gas::ConsoleClaim, String>> + Send + 'a>,
    > {
        Box::pin(async move {
            let registration = self
                .shared
                .registered
                .borrow()
                .as_ref()
                .map(|r| r.id.clone())
                .ok_or_else(|| "this GAS is not registered with the platform".to_string())?;
            let params = thingport_protocol::gas::ClaimConsoleSession {
                name: self.name.clone(),
                registration,
                session: session.to_string(),
            };
            self.platform
                .claim_console(&params)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
