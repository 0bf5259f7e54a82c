//! The relay core of the Thingport Global Access Server (GAS): accepts the WebSockets of remote
//! sessions on [`tunnel::PATH`], admits each side with its signed credential
//! ([`tunnel::verify`], the GAS name, a never-used nonce), pairs the client side and the agent
//! side of a session, and relays their binary frames unchanged (validating only the 5-byte
//! header and counting `DATA` bytes). It reports what happens as [`SessionEvent`]s.
//!
//! Around it, [`run`] is the whole `thingport-gas` server: it registers with the platform
//! ([`platform`]), heartbeats with the live sessions ([`Relay::live_sessions`]) and ends those the
//! platform ended ([`Relay::end_session`]), and reports [`Relay::events`] as session reports.
//!
//! Not here: the stream
//! multiplexer of the client and the agent (`sdk/tunnel`); any knowledge of targets (the agent
//! dials the endpoint the platform named; the GAS never learns it).
//!
//! [`Relay::serve`] runs on a listener until its shutdown future resolves; the tests drive it on
//! `127.0.0.1:0` with real WebSocket clients.

pub mod cli;
mod config;
mod console;
mod relay;
mod server;
mod side;
mod table;
pub mod tls;
mod upgrade;

pub use server::{
    platform, run, AppKey, GasConfig, PlatformTls, PlatformUrl, Server, Timing, VERSION,
};

pub use config::{ConfigError, RelayConfig};
pub use relay::{bind, Relay};
pub use table::LiveSession;

use std::sync::{Arc, RwLock};
use thingport_protocol::tunnel;
pub use thingport_protocol::tunnel::Role;

/// The signing key and name of this GAS, as registration with the platform gave them.
pub trait Keys: Send + Sync + 'static {
    /// The key credentials are signed with; `None` until the GAS is registered (every upgrade is
    /// then refused with 503, and the side should retry).
    fn key(&self) -> Option<Arc<[u8]>>;
    /// The GAS name that credentials must name.
    fn name(&self) -> &str;
}

/// A [`Keys`] whose key is set (and replaced, after a re-registration) at run time.
#[derive(Debug)]
pub struct KeyCell {
    name: String,
    key: RwLock<Option<Arc<[u8]>>>,
}

impl KeyCell {
    /// A GAS named `name` without a key yet.
    pub fn new(name: impl Into<String>) -> KeyCell {
        KeyCell {
            name: name.into(),
            key: RwLock::new(None),
        }
    }

    /// Installs the key the platform issued (credentials signed with the previous one are
    /// refused from now on).
    pub fn set(&self, key: &[u8]) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(key));
    }

    /// Forgets the key (the registration was lost): upgrades are refused with 503 until
    /// [`KeyCell::set`].
    pub fn clear(&self) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Keys for KeyCell {
    fn key(&self) -> Option<Arc<[u8]>> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Something that happened to a session, for the platform's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// The session id of the grants.
    pub session: Arc<str>,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A side completed its upgrade and was admitted.
    SideAttached(Role),
    /// Both sides are attached; frames flow.
    Started,
    /// The session is over (both sides are closed or closing). Bytes are `DATA` payload bytes:
    /// up is client to agent, down is agent to client. The duration runs from `Started` (0 if
    /// the session never started).
    Ended {
        cause: EndCause,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
    },
}

/// Why a session ended (the first thing that ended it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// That side closed its WebSocket.
    Closed(Role),
    /// That side's connection failed (reset, EOF without a close, a write error).
    Lost(Role),
    /// Nothing, not even a pong, arrived from that side for the idle timeout ("side lost").
    Silent(Role),
    /// That side broke the protocol: an invalid frame, a text message, an oversized message.
    Protocol(Role, String),
    /// The other side did not attach before the pairing timeout (or its grant's expiry).
    NotPaired,
    /// The GAS shut down.
    Shutdown,
    /// The platform ended it ([`Relay::end_session`]: `EndSession`, inactivity, maximum
    /// duration).
    EndedByPlatform,
}

impl EndCause {
    /// The side the cause lies with, if one.
    pub fn role(&self) -> Option<Role> {
        match self {
            EndCause::Closed(r) | EndCause::Lost(r) | EndCause::Silent(r) => Some(*r),
            EndCause::Protocol(r, _) => Some(*r),
            EndCause::NotPaired | EndCause::Shutdown | EndCause::EndedByPlatform => None,
        }
    }
}

impl std::fmt::Display for EndCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndCause::Closed(r) => write!(f, "{} closed", role_name(*r)),
            EndCause::Lost(r) => write!(f, "{} connection lost", role_name(*r)),
            EndCause::Silent(r) => write!(f, "side lost: nothing from the {}", role_name(*r)),
            EndCause::Protocol(r, why) => write!(f, "{} protocol error: {why}", role_name(*r)),
            EndCause::NotPaired => f.write_str("the other side did not attach"),
            EndCause::Shutdown => f.write_str("GAS shutting down"),
            EndCause::EndedByPlatform => f.write_str("ended by the platform"),
        }
    }
}

/// `client` or `agent`, as in the grants.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Client => "client",
        Role::Agent => "agent",
    }
}

/// The slot of a role in per-session pairs: client 0 (its bytes go up), agent 1.
pub(crate) fn index(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Agent => 1,
    }
}

pub(crate) fn other(role: Role) -> Role {
    match role {
        Role::Client => Role::Agent,
        Role::Agent => Role::Client,
    }
}

/// The largest message the relay takes, header included.
pub(crate) const MAX_MESSAGE: usize = tunnel::MAX_FRAME;
