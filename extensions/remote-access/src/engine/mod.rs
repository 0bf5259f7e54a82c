//! The session engine: registered GASes, live sessions, and every transition between the states
//! of SPEC §5, each persisted as an extension record (with its `REMOTE_ACCESS` audit entry for
//! creation and termination).
//!
//! One file per concern, as `docs/architecture.md` draws them: this module holds the state and
//! the helpers they share; [`gas`](self::gas) the GAS registry, heartbeats, reports and the
//! selector; [`sessions`](self::sessions) a session's life (start, attach, end, listings);
//! [`credentials`](self::credentials) the per-side tunnel credentials; [`sweep`](self::sweep)
//! recovery at start and the periodic sweep.
//!
//! Locking: one `Mutex<State>` guards the in-memory maps; it is never held across a host call
//! (host calls may take milliseconds, `SendMessage` up to 5 s). A transition is decided under the
//! lock (the session leaves `live` exactly once, so a session terminates exactly once however
//! many paths race for it), then written.

mod credentials;
mod gas;
mod sessions;
mod sweep;

use crate::model::KIND_CONSOLE;
use crate::model::{now_ms, Cause, RemoteEndpoint, RemoteSession, StartedSession, Status};
use crate::model::{BY_DEVICE, SESSIONS};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use thingport_protocol::control::{codes, requests};
use thingport_protocol::gas::{self as proto, Heartbeat, SessionReport};
use thingport_protocol::tunnel::{self, Grant, Role};
use thingport_sdk::protocol::{Caller, ErrorKind};
use thingport_sdk::{Error, Host, Value};

pub const GAS_MODEL: &str = "GASModel";
pub const AUDIT: &str = "REMOTE_ACCESS";
/// How long the credentials of a session are good for.
pub const GRANT_LIFETIME_MS: i64 = 60_000;
/// Sessions left open by a previous run end `SERVER_LOST` unless their GAS reports them within.
pub const RECOVERY_GRACE_MS: i64 = 60_000;
/// The most sessions live at once (all GASes together).
pub const MAX_LIVE: usize = 100_000;
/// Write-order stripes (see [`Engine::stripe`]).
const STRIPES: usize = 64;
/// The most sessions one GAS may declare it carries (a heartbeat lists them all).
pub const MAX_CAPACITY: u32 = 5_000;
/// The records of GAS owners (key: the GAS name): the user whose key registered it first.
const GAS_OWNERS: &str = "gas-owners";
/// How long `StartSession` waits for the agent to accept the order.
const ORDER_TIMEOUT_MS: i64 = 8_000;

/// The validated `RemoteAccessSubsystem` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub max_duration_ms: i64,
    pub inactive_ms: i64,
    pub max_returned: usize,
}

impl Settings {
    pub fn from_config(config: &Value) -> Settings {
        let get = |field: &str, default: i64, min: i64, max: i64| {
            config
                .pointer(&format!("/Settings/{field}"))
                .and_then(Value::as_f64)
                .map(|v| (v as i64).clamp(min, max))
                .unwrap_or(default)
        };
        Settings {
            max_duration_ms: get("maxSessionDurationHours", 24, 1, 240) * 3_600_000,
            inactive_ms: get("inactiveSessionTimeoutMinutes", 15, 1, 60) * 60_000,
            max_returned: get("maxSessionsReturned", 500, 1, 10_000) as usize,
        }
    }
}

/// A registered GAS, in memory only (its key is never written anywhere).
struct Gas {
    registration: String,
    key: Vec<u8>,
    public_url: String,
    capacity: u32,
    last_heard_ms: i64,
    healthy: bool,
    /// What `isConnected` was last written as.
    connected_written: bool,
    /// STARTED sessions a heartbeat did not list, and how many heartbeats in a row.
    missing: HashMap<String, u8>,
    /// Sessions the platform ended, for the next heartbeat reply.
    end_orders: Vec<String>,
}

/// A session that is not TERMINATED.
struct Live {
    record: RemoteSession,
    /// When the credentials expire: a session not STARTED by then (plus a margin) ends
    /// `NOT_STARTED`.
    grant_expires_ms: i64,
    /// Loaded from the records at start: ends `SERVER_LOST` unless its GAS lists it in time.
    recovered_ms: Option<i64>,
    /// A console session whose GAS already claimed its credentials (answered once).
    console_claimed: bool,
}

#[derive(Default)]
struct State {
    gases: HashMap<String, Gas>,
    live: HashMap<String, Live>,
}

pub struct Engine {
    host: Host,
    state: Mutex<State>,
    /// Per-session write order: a transition is decided and written under its session's stripe,
    /// so a late non-terminal write can never land after the session's termination.
    stripes: Vec<Mutex<()>>,
    settings: Mutex<Settings>,
    rng: SystemRandom,
}

/// What the sweep decided, applied after the lock is released.
type Endings = Vec<(String, Cause, String)>;

impl Engine {
    pub fn new(host: Host, settings: Settings) -> Engine {
        Engine {
            host,
            state: Mutex::new(State::default()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            settings: Mutex::new(settings),
            rng: SystemRandom::new(),
        }
    }

    /// The write-order lock of one session (lock order: stripe, then state).
    fn stripe(&self, id: &str) -> MutexGuard<'_, ()> {
        let mut h: usize = 0;
        for b in id.bytes() {
            h = h.wrapping_mul(31).wrapping_add(b as usize);
        }
        self.stripes[h % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the live record of `id` as it is now, unless the session has ended meanwhile.
    fn persist_live(&self, id: &str) {
        let _order = self.stripe(id);
        let record = self.state().live.get(id).map(|l| l.record.clone());
        if let Some(record) = record {
            self.persist(&record, None);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_settings(&self, settings: Settings) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = settings;
    }

    fn random_hex(&self, bytes: usize) -> Result<String, Error> {
        let mut buf = vec![0u8; bytes];
        self.rng
            .fill(&mut buf)
            .map_err(|_| Error::internal("the system random generator failed"))?;
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Thing name rules of the host (checked here to answer a clear 422 before any host call).
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::unprocessable(format!(
            "invalid GAS name '{}': letters, digits and _ - . @ : only, starting with a letter, digit or _, at most 128",
            clip(name)
        )))
    }
}

/// At most 200 bytes of untrusted text, for messages and records.
pub fn clip(text: &str) -> &str {
    if text.len() <= 200 {
        return text;
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn props(pairs: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Rows of sessions as the `RemoteSession` InfoTable.
pub fn table<T: serde::Serialize>(rows: &[T]) -> Value {
    json!({"rows": rows})
}
