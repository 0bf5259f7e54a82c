//! Registration and heartbeats: registers this GAS (retrying with backoff, never giving up),
//! installs the signing key the platform issued, then heartbeats with its health and live
//! sessions and ends the sessions the platform ended. An answer "unknown registration" (404, to
//! a heartbeat or a report) clears the key and starts over.

use super::backoff::Backoff;
use super::platform::{chain, CallError, Platform};
use crate::{KeyCell, Relay};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use thingport_protocol::gas::{
    self, Heartbeat, RegisterServer, Registration, MAX_HEARTBEAT_SESSIONS, SILENT_AFTER_MS,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The shortest heartbeat interval taken from the platform.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// The longest: half the time after which the platform deems a GAS gone.
const MAX_HEARTBEAT: Duration = Duration::from_millis(SILENT_AFTER_MS / 2);

/// A registration the platform accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Passed back in every heartbeat and report.
    pub id: String,
    pub enabled: bool,
    pub heartbeat_interval: Duration,
}

/// The registration state shared by the heartbeat loop and the report sender.
#[derive(Debug)]
pub struct Shared {
    pub keys: Arc<KeyCell>,
    pub registered: watch::Sender<Option<Arc<Registered>>>,
}

impl Shared {
    /// The platform answered "unknown registration" for `lost`: forget it and its key (new
    /// upgrades get 503 until the next registration). A newer registration is kept.
    pub fn lost(&self, lost: &Registered) {
        let forgot = self.registered.send_if_modified(|current| match current {
            Some(c) if c.id == lost.id => {
                *current = None;
                true
            }
            _ => false,
        });
        if forgot {
            self.keys.clear();
        }
    }
}

/// The registration task.
pub struct Registrar {
    pub platform: Platform,
    pub params: RegisterServer,
    pub relay: Arc<Relay>,
    pub shared: Arc<Shared>,
    /// True once the GAS is draining: heartbeats say `healthy: false` from then on.
    pub draining: watch::Receiver<bool>,
    /// True when the task must return.
    pub stop: watch::Receiver<bool>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// How the heartbeats of one registration ended.
enum Ended {
    Lost,
    Stop,
}

impl Registrar {
    /// Registers, heartbeats, and registers again when the registration is lost, until `stop`.
    pub async fn run(mut self) {
        loop {
            let Some(registered) = self.register().await else {
                return;
            };
            match self.heartbeats(&registered).await {
                Ended::Lost => continue,
                Ended::Stop => return,
            }
        }
    }

    /// Registers with backoff; `None` when stopped first.
    async fn register(&mut self) -> Option<Arc<Registered>> {
        let mut backoff = Backoff::new(self.min_backoff, self.max_backoff);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let answer = tokio::select! {
                a = self.platform.register(&self.params) => a,
                _ = self.stop.wait_for(|s| *s) => return None,
            };
            let error = match answer.and_then(|r| self.install(r)) {
                Ok(registered) => return Some(registered),
                Err(e) => e,
            };
            let delay = backoff.next_delay();
            match error.hint() {
                Some(hint) => warn!(
                    attempt,
                    error = %chain(&error),
                    hint,
                    retry_in = ?delay,
                    "failed to register with the platform"
                ),
                None => warn!(
                    attempt,
                    error = %chain(&error),
                    retry_in = ?delay,
                    "failed to register with the platform"
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Checks a registration, installs its key and publishes it.
    fn install(&self, r: Registration) -> Result<Arc<Registered>, CallError> {
        let bad = |why: &str| CallError::BadAnswer {
            service: gas::REGISTER_SERVER,
            why: why.into(),
        };
        let key = URL_SAFE_NO_PAD
            .decode(r.key.trim())
            .map_err(|_| bad("the key is not base64url"))?;
        if key.len() != 32 {
            return Err(bad("the key is not 32 bytes"));
        }
        if r.registration.is_empty() || r.registration.len() > 1024 {
            return Err(bad("the registration id is empty or too long"));
        }
        let asked = Duration::from_millis(r.heartbeat_interval_ms);
        let heartbeat_interval = asked.clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
        if heartbeat_interval != asked {
            warn!(
                asked = ?asked,
                using = ?heartbeat_interval,
                "the platform's heartbeat interval is out of range"
            );
        }
        let registered = Arc::new(Registered {
            id: r.registration,
            enabled: r.enabled,
            heartbeat_interval,
        });
        self.shared.keys.set(&key);
        self.shared
            .registered
            .send_replace(Some(registered.clone()));
        info!(
            name = %self.params.name,
            public_url = %self.params.public_url,
            "registered as {} (enabled: {})",
            self.params.name,
            r.enabled
        );
        if !r.enabled {
            info!(
                "this GAS gets no sessions until an administrator runs EnableForRemoteSessions \
                 on its Thing {}",
                self.params.name
            );
        }
        Ok(registered)
    }

    /// Heartbeats for `registered` until it is lost or the task is stopped. The first one goes
    /// at once (the platform learns the live sessions after a re-registration), the next every
    /// interval, and one more as soon as the GAS starts draining.
    async fn heartbeats(&mut self, registered: &Registered) -> Ended {
        let mut tick = tokio::time::interval(registered.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut current = self.shared.registered.subscribe();
        let mut draining_open = true;
        let mut failures = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = self.draining.changed(), if draining_open => {
                    draining_open = changed.is_ok();
                }
                // The report sender saw a 404 for this registration.
                _ = current.wait_for(|c| c.as_ref().is_none_or(|c| c.id != registered.id)) => {
                    return Ended::Lost;
                }
                _ = self.stop.wait_for(|s| *s) => return Ended::Stop,
            }
            let healthy = !*self.draining.borrow();
            let sessions = self
                .relay
                .live_sessions(MAX_HEARTBEAT_SESSIONS)
                .into_iter()
                .map(|s| gas::LiveSession {
                    session: s.session.to_string(),
                    bytes_up: s.bytes_up,
                    bytes_down: s.bytes_down,
                    paired: s.paired,
                })
                .collect();
            let beat = Heartbeat {
                name: self.params.name.clone(),
                registration: registered.id.clone(),
                healthy,
                sessions,
            };
            let answer = tokio::select! {
                a = self.platform.heartbeat(&beat) => a,
                _ = self.stop.wait_for(|s| *s) => return Ended::Stop,
            };
            match answer {
                Ok(reply) => {
                    if failures > 0 {
                        info!(failures, "heartbeats reach the platform again");
                        failures = 0;
                    }
                    for id in reply.end.iter().take(MAX_HEARTBEAT_SESSIONS) {
                        if !self.relay.end_session(id) {
                            debug!(session = %id, "the platform ended a session not in progress here");
                        }
                    }
                }
                Err(CallError::UnknownRegistration(message)) => {
                    warn!(
                        %message,
                        "the platform does not know this registration; registering again"
                    );
                    self.shared.lost(registered);
                    return Ended::Lost;
                }
                Err(error) => {
                    failures += 1;
                    warn!(failures, healthy, error = %chain(&error), "heartbeat failed");
                }
            }
        }
    }
}
