//! The session engine: registered GASes, live sessions, and every transition between the states
//! of SPEC §5, each persisted as an extension record (with its `REMOTE_ACCESS` audit entry for
//! creation and termination).
//!
//! Locking: one `Mutex<State>` guards the in-memory maps; it is never held across a host call
//! (host calls may take milliseconds, `SendMessage` up to 5 s). A transition is decided under the
//! lock (the session leaves `live` exactly once, so a session terminates exactly once however
//! many paths race for it), then written.

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

    /// At start: no GAS is known yet (they register again), and sessions a previous run left
    /// open are watched: their GAS has [`RECOVERY_GRACE_MS`] to report them.
    pub fn recover(&self) -> Result<(), Error> {
        for gas in self.host.things_of_template(GAS_MODEL)? {
            let _ = self.host.set_properties(
                &gas,
                props(&[("isConnected", json!(false)), ("healthy", json!(false))]),
            );
        }
        let now = now_ms();
        let mut after: Option<String> = None;
        let mut recovered = 0;
        loop {
            let page =
                self.host
                    .record_query(SESSIONS, "", after.as_deref().unwrap_or(""), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let mut state = self.state();
            for record in &page {
                let Ok(session) = serde_json::from_value::<RemoteSession>(record.value.clone())
                else {
                    continue;
                };
                if session.status != Status::Terminated {
                    recovered += 1;
                    state.live.insert(
                        session.session_id.clone(),
                        Live {
                            record: session,
                            grant_expires_ms: now + RECOVERY_GRACE_MS,
                            recovered_ms: Some(now),
                        },
                    );
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        if recovered > 0 {
            self.host.info(format!(
                "{recovered} session(s) were open at the last stop: they end SERVER_LOST unless their GAS reports them within {} s",
                RECOVERY_GRACE_MS / 1000
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- GAS registration

    pub fn register(&self, input: proto::RegisterServer, caller: &Caller) -> Result<Value, Error> {
        check_name(&input.name)?;
        let url = input.public_url.trim().trim_end_matches('/').to_string();
        let host_name = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .filter(|h| !h.is_empty() && url.len() <= 2048 && !url.contains(char::is_whitespace))
            .ok_or_else(|| {
                Error::unprocessable(format!(
                    "publicUrl must be an http:// or https:// URL with a host, not '{}'",
                    clip(&input.public_url)
                ))
            })?
            .to_string();
        if !(1..=MAX_CAPACITY).contains(&input.capacity) {
            return Err(Error::unprocessable(format!(
                "capacity must be between 1 and {MAX_CAPACITY}, not {}: run more GASes for more sessions",
                input.capacity
            )));
        }
        if input.version.len() > 200 {
            return Err(Error::unprocessable("version is longer than 200 bytes"));
        }
        // A GAS name belongs to the user whose key registered it first: another key cannot take
        // it over (and point its sessions elsewhere); an administrator can.
        let owner = self
            .host
            .record_get(GAS_OWNERS, &input.name)?
            .and_then(|v| v.get("user").and_then(Value::as_str).map(str::to_string));
        let exists = self.host.describe_thing(&input.name).is_ok();
        if let Some(owner) = owner.as_ref().filter(|_| exists) {
            if *owner != caller.name && !caller.admin {
                return Err(Error::forbidden(format!(
                    "GAS '{}' was registered by another user: register under another --name, or have an administrator delete its Thing",
                    input.name
                )));
            }
        }
        let created = match self.host.describe_thing(&input.name) {
            Ok(info) if info.templates.iter().any(|t| t == GAS_MODEL) => false,
            Ok(info) => {
                return Err(Error::conflict(format!(
                    "Thing '{}' exists and is a {}, not a {GAS_MODEL}: choose another --name",
                    input.name, info.template
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let max = self
                    .host
                    .get_property(crate::PROVIDER, "maxServers")
                    .ok()
                    .and_then(|v| v.as_i64())
                    .unwrap_or(50);
                let existing = self.host.things_of_template(GAS_MODEL)?.len() as i64;
                if existing >= max {
                    return Err(Error::conflict(format!(
                        "maxServers reached: {existing} GAS Things exist and {} allows {max}; delete an unused GAS Thing or raise maxServers",
                        crate::PROVIDER
                    )));
                }
                self.host.invoke(
                    "Resources",
                    "EntityServices",
                    "CreateThing",
                    json!({"name": input.name, "thingTemplateName": GAS_MODEL,
                           "description": "a Global Access Server (registered itself)"}),
                )?;
                true
            }
            Err(e) => return Err(e),
        };
        if owner.is_none() || created {
            self.host
                .record_put(GAS_OWNERS, &input.name, json!({"user": caller.name}), None)?;
        }
        let mut key = vec![0u8; 32];
        self.rng
            .fill(&mut key)
            .map_err(|_| Error::internal("the system random generator failed"))?;
        let registration = self.random_hex(16)?;
        let now = now_ms();
        let sessions = self.sessions_on(&input.name);
        let mut values = props(&[
            ("externalHostName", json!(host_name)),
            ("version", json!(input.version)),
            ("latestRegistrationDate", json!(now)),
            ("healthy", json!(true)),
            ("isConnected", json!(true)),
            ("lastConnection", json!(now)),
            ("currentNumberOfSessions", json!(sessions)),
            ("capacity", json!(input.capacity)),
        ]);
        if created {
            values.insert("enabledForRemoteSessions".into(), json!(false));
        }
        self.host.set_properties(&input.name, values)?;
        let enabled = self
            .host
            .get_property(&input.name, "enabledForRemoteSessions")
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        self.state().gases.insert(
            input.name.clone(),
            Gas {
                registration: registration.clone(),
                key: key.clone(),
                public_url: url.clone(),
                capacity: input.capacity,
                last_heard_ms: now,
                healthy: true,
                connected_written: true,
                missing: HashMap::new(),
                end_orders: Vec::new(),
            },
        );
        let _ = self.host.audit(
            AUDIT,
            &input.name,
            &format!(
                "GAS {} {} by {} from {} ({url}, capacity {}, {}){}",
                input.name,
                if created {
                    "registered for the first time"
                } else {
                    "registered again"
                },
                caller.name,
                caller.source_ip,
                input.capacity,
                clip(&input.version),
                if enabled {
                    ""
                } else {
                    "; not enabled for remote sessions: run EnableForRemoteSessions on it"
                }
            ),
        );
        self.host.info(format!(
            "GAS {} registered ({url}, enabled: {enabled})",
            input.name
        ));
        serde_json::to_value(proto::Registration {
            registration,
            key: URL_SAFE_NO_PAD.encode(&key),
            heartbeat_interval_ms: proto::HEARTBEAT_INTERVAL_MS,
            enabled,
        })
        .map_err(|e| Error::internal(e.to_string()))
    }

    /// The GAS's registration, checked; `NotFound` means "register again".
    fn check_registration(state: &State, name: &str, registration: &str) -> Result<(), Error> {
        match state.gases.get(name) {
            Some(g) if g.registration == registration => Ok(()),
            _ => Err(Error::not_found(format!(
                "unknown registration for GAS '{}': register again",
                clip(name)
            ))),
        }
    }

    pub fn heartbeat(&self, beat: Heartbeat) -> Result<Value, Error> {
        if beat.sessions.len() > proto::MAX_HEARTBEAT_SESSIONS {
            return Err(Error::unprocessable(format!(
                "a heartbeat lists at most {} sessions",
                proto::MAX_HEARTBEAT_SESSIONS
            )));
        }
        let now = now_ms();
        let mut endings: Endings = Vec::new();
        let mut started: Vec<String> = Vec::new();
        let (reply, write_connected, count) = {
            let mut state = self.state();
            Self::check_registration(&state, &beat.name, &beat.registration)?;
            let mut end = Vec::new();
            let mut listed = std::collections::HashSet::new();
            for s in &beat.sessions {
                listed.insert(s.session.as_str());
                match state.live.get_mut(&s.session) {
                    Some(live) if live.record.remote_server == beat.name => {
                        live.recovered_ms = None;
                        let bytes = s.bytes_up.saturating_add(s.bytes_down);
                        if bytes > live.record.bytes_transferred {
                            live.record.bytes_transferred = bytes;
                            live.record.last_activity_time = now;
                        }
                        if s.paired && live.record.status != Status::Started {
                            live.record.status = Status::Started;
                            live.record.start_time.get_or_insert(now);
                            started.push(s.session.clone());
                        }
                    }
                    // Ended here (or never ours): the GAS must close it.
                    _ => end.push(s.session.clone()),
                }
            }
            let name = beat.name.clone();
            let on_this: std::collections::HashSet<String> = state
                .live
                .iter()
                .filter(|(_, l)| {
                    l.record.remote_server == name && l.record.status == Status::Started
                })
                .map(|(id, _)| id.clone())
                .collect();
            let count = state
                .live
                .values()
                .filter(|l| l.record.remote_server == name)
                .count();
            let gas = state.gases.get_mut(&name).expect("checked above");
            gas.last_heard_ms = now;
            gas.healthy = beat.healthy;
            let write_connected = !gas.connected_written;
            gas.connected_written = true;
            gas.missing.retain(|id, _| on_this.contains(id));
            for id in on_this {
                if listed.contains(id.as_str()) {
                    gas.missing.remove(&id);
                } else {
                    let n = gas.missing.entry(id.clone()).or_insert(0);
                    *n += 1;
                    // Twice in a row: not a heartbeat racing the session's last report.
                    if *n >= 2 {
                        endings.push((
                            id,
                            Cause::ServerLost,
                            "the GAS no longer carries the session".into(),
                        ));
                    }
                }
            }
            end.append(&mut gas.end_orders);
            end.sort_unstable();
            end.dedup();
            (proto::HeartbeatReply { end }, write_connected, count)
        };
        for id in started {
            self.persist_live(&id);
        }
        let mut values = props(&[
            ("healthy", json!(beat.healthy)),
            ("currentNumberOfSessions", json!(count)),
        ]);
        if write_connected {
            values.insert("isConnected".into(), json!(true));
            values.insert("lastConnection".into(), json!(now));
            self.host
                .info(format!("GAS {} is connected again", beat.name));
        }
        if let Err(e) = self.host.set_properties(&beat.name, values) {
            self.host
                .warn(format!("cannot update GAS Thing {}: {e}", beat.name));
        }
        for (id, cause, detail) in endings {
            self.terminate(&id, cause, &detail, None, true);
        }
        serde_json::to_value(reply).map_err(|e| Error::internal(e.to_string()))
    }

    pub fn reports(&self, reports: proto::SessionReports) -> Result<Value, Error> {
        if reports.events.len() > proto::MAX_REPORTS {
            return Err(Error::unprocessable(format!(
                "a batch holds at most {} reports",
                proto::MAX_REPORTS
            )));
        }
        {
            let state = self.state();
            Self::check_registration(&state, &reports.name, &reports.registration)?;
        }
        for report in reports.events {
            match report {
                SessionReport::Attached { .. } => {}
                SessionReport::Started { session } => {
                    let _order = self.stripe(&session);
                    let record = {
                        let mut state = self.state();
                        match state.live.get_mut(&session) {
                            Some(l)
                                if l.record.remote_server == reports.name
                                    && l.record.status != Status::Started =>
                            {
                                l.record.status = Status::Started;
                                l.record.start_time = Some(now_ms());
                                l.record.last_activity_time = now_ms();
                                l.recovered_ms = None;
                                Some(l.record.clone())
                            }
                            _ => None,
                        }
                    };
                    if let Some(record) = record {
                        self.persist(&record, None);
                    }
                }
                SessionReport::Ended {
                    session,
                    cause,
                    role,
                    detail,
                    bytes_up,
                    bytes_down,
                    ..
                } => {
                    let ours = self
                        .state()
                        .live
                        .get(&session)
                        .is_some_and(|l| l.record.remote_server == reports.name);
                    if !ours {
                        // Already ended here (EndSession, a sweep): the GAS's count is final.
                        self.final_bytes(
                            &session,
                            &reports.name,
                            bytes_up.saturating_add(bytes_down),
                        );
                        continue;
                    }
                    let (cause, why) = map_end(&cause, role.as_deref(), &detail);
                    let bytes = bytes_up.saturating_add(bytes_down);
                    if !self.terminate(&session, cause, &why, Some(bytes), false) {
                        // Ended meanwhile by EndSession or the sweep: keep the final count.
                        self.final_bytes(&session, &reports.name, bytes);
                    }
                }
            }
        }
        Ok(Value::Null)
    }

    /// Writes the GAS's final byte count into the record of a session that already ended.
    fn final_bytes(&self, id: &str, gas: &str, bytes: u64) {
        let Ok(Some(mut record)) = self.find(id) else {
            return;
        };
        if record.status == Status::Terminated
            && record.remote_server == gas
            && bytes > record.bytes_transferred
        {
            record.bytes_transferred = bytes;
            self.persist(&record, None);
        }
    }

    // ---------------------------------------------------------------- sessions

    fn sessions_on(&self, gas: &str) -> usize {
        self.state()
            .live
            .values()
            .filter(|l| l.record.remote_server == gas)
            .count()
    }

    /// Picks the GAS for a new session: enabled, connected (heard within 30 s), healthy, under
    /// capacity; the fewest sessions first.
    pub fn select(&self) -> Option<(String, String, Vec<u8>)> {
        let now = now_ms();
        let mut candidates: Vec<(usize, String, String, Vec<u8>)> = {
            let state = self.state();
            let mut load: HashMap<&str, usize> = HashMap::new();
            for l in state.live.values() {
                *load.entry(l.record.remote_server.as_str()).or_default() += 1;
            }
            state
                .gases
                .iter()
                .filter(|(_, g)| {
                    g.healthy && now - g.last_heard_ms <= proto::SILENT_AFTER_MS as i64
                })
                .filter_map(|(name, g)| {
                    let n = load.get(name.as_str()).copied().unwrap_or(0);
                    (n < g.capacity as usize)
                        .then(|| (n, name.clone(), g.public_url.clone(), g.key.clone()))
                })
                .collect()
        };
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        candidates.into_iter().find_map(|(_, name, url, key)| {
            let enabled = self.host.describe_thing(&name).is_ok_and(|t| t.enabled)
                && self
                    .host
                    .get_property(&name, "enabledForRemoteSessions")
                    .ok()
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
            enabled.then_some((name, url, key))
        })
    }

    /// The endpoints of a Thing (its `endpoints` property's rows).
    pub fn endpoints(&self, thing: &str) -> Result<Vec<RemoteEndpoint>, Error> {
        let value = self.host.get_property(thing, "endpoints")?;
        let rows = value
            .get("rows")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_value::<RemoteEndpoint>(r).ok())
            .collect())
    }

    pub fn start(
        &self,
        thing: &str,
        endpoint_name: &str,
        caller: &Caller,
    ) -> Result<StartedSession, Error> {
        // The host checked visibility and ServiceInvoke; the rest of SPEC's four checks here.
        for (perm, resource) in [("Read", ""), ("PropertyRead", "endpoints")] {
            if !self
                .host
                .check_permission(&caller.name, "Things", thing, perm, resource)?
            {
                let what = if resource.is_empty() { "" } else { resource };
                return Err(Error::forbidden(format!(
                    "Not authorized for {perm} on {what} in {thing}"
                )));
            }
        }
        let endpoints = self.endpoints(thing)?;
        let Some(endpoint) = endpoints.iter().find(|e| e.name == endpoint_name) else {
            let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
            return Err(Error::not_found(format!(
                "Thing '{thing}' has no endpoint '{}'{}",
                clip(endpoint_name),
                if names.is_empty() {
                    " (it defines none: set its endpoints property)".to_string()
                } else {
                    format!(" (it has: {})", names.join(", "))
                }
            )));
        };
        let (host, port) = endpoint.target(thing)?;
        let now = now_ms();
        let id = format!("{:012x}{}", now.max(0), self.random_hex(10)?);
        let mut record = RemoteSession {
            session_id: id.clone(),
            agent_device: thing.to_string(),
            remote_endpoint: endpoint.name.clone(),
            remote_server: String::new(),
            created_by: caller.name.clone(),
            created_time: now,
            start_time: None,
            end_time: None,
            last_activity_time: now,
            status: Status::Initializing,
            termination_cause: None,
            bytes_transferred: 0,
            user_ip: caller.source_ip.clone(),
            agent_ip: String::new(),
            detail: None,
        };
        if self.state().live.len() >= MAX_LIVE {
            return Err(Error::unavailable(format!(
                "{MAX_LIVE} sessions are live: try again later"
            )));
        }
        let _ = self
            .host
            .record_put(BY_DEVICE, &format!("{thing}/{id}"), Value::Bool(true), None);
        if let Some(why) = crate::switches::why_disabled(&self.host, thing)? {
            self.refuse(record, Cause::RemoteAccessDisabled, &why, &host, port);
            return Err(Error::forbidden(format!("REMOTE_ACCESS_DISABLED: {why}")));
        }
        let connected = self
            .host
            .get_property(thing, "isConnected")
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if !connected {
            let why = format!("Thing '{thing}' has no agent connected");
            self.refuse(record, Cause::ErrorStartingRemoteSession, &why, &host, port);
            return Err(Error::unavailable(format!("DEVICE_OFFLINE: {why}")));
        }
        let Some((gas, gas_url, key)) = self.select() else {
            let why = "no Global Access Server is enabled, connected, healthy and under capacity";
            self.refuse(record, Cause::NoServers, why, &host, port);
            return Err(Error::unavailable(format!(
                "NO_SERVERS: {why} (an administrator runs EnableForRemoteSessions on a registered GAS Thing)"
            )));
        };
        record.remote_server = gas.clone();
        let expires = now + GRANT_LIFETIME_MS;
        let grant = |role| -> Result<String, Error> {
            Ok(tunnel::sign(
                &Grant {
                    session: id.clone(),
                    role,
                    gas: gas.clone(),
                    exp: expires,
                    nonce: self.random_hex(16)?,
                },
                &key,
            ))
        };
        let (client, agent) = (grant(Role::Client)?, grant(Role::Agent)?);
        let order = self.stripe(&id);
        self.state().live.insert(
            id.clone(),
            Live {
                record: record.clone(),
                grant_expires_ms: expires,
                recovered_ms: None,
            },
        );
        self.persist(
            &record,
            Some(format!(
                "session {id} created by {} from {}: Thing {thing}, endpoint {} ({host}:{port}), GAS {gas}",
                caller.name, caller.source_ip, endpoint.name
            )),
        );
        drop(order);
        let order = self.host.invoke(
            "Subsystems",
            "ConnectionServicesSubsystem",
            "SendMessage",
            json!({
                "thingName": thing,
                "name": requests::START_SESSION,
                "body": {"session": id, "gasUrl": gas_url, "credential": agent,
                         "endpoint": {"host": host, "port": port, "name": endpoint.name}},
                "waitForReply": true,
                "timeoutMs": ORDER_TIMEOUT_MS,
            }),
        );
        if let Err(e) = order {
            let message = e.message().to_string();
            return Err(if message.contains(codes::SESSION_DENIED) {
                let why = message
                    .split_once(&format!("{}: ", codes::SESSION_DENIED))
                    .map(|(_, m)| m.to_string())
                    .unwrap_or(message);
                self.terminate(&id, Cause::SessionDenied, &why, None, false);
                Error::forbidden(format!("SESSION_DENIED: the device's agent refused: {why}"))
            } else if e.kind() == ErrorKind::Unavailable {
                self.terminate(
                    &id,
                    Cause::ErrorStartingRemoteSession,
                    &message,
                    None,
                    false,
                );
                Error::unavailable(format!("DEVICE_OFFLINE: {message}"))
            } else {
                self.terminate(
                    &id,
                    Cause::ErrorStartingRemoteSession,
                    &message,
                    None,
                    false,
                );
                Error::unavailable(format!("ERROR_STARTING_REMOTE_SESSION: {message}"))
            });
        }
        let written = self.stripe(&id);
        let record = {
            let mut state = self.state();
            match state.live.get_mut(&id) {
                Some(l) => {
                    if l.record.status == Status::Initializing {
                        l.record.status = Status::Created;
                    }
                    Some(l.record.clone())
                }
                None => None,
            }
        };
        let Some(record) = record else {
            // Ended while the order was out (e.g. a side failed at once).
            let record = self.get(thing, &id)?;
            return Err(Error::unavailable(format!(
                "ERROR_STARTING_REMOTE_SESSION: the session ended while starting ({})",
                record
                    .termination_cause
                    .map(Cause::as_str)
                    .unwrap_or("unknown cause")
            )));
        };
        self.persist(&record, None);
        drop(written);
        Ok(StartedSession {
            session: record,
            gas_url: Some(gas_url),
            credential: Some(client),
            credential_expires: Some(expires),
        })
    }

    /// A fresh client credential for a session its creator started elsewhere (the web console's
    /// Connect): only the creator, only while the session waits for its client (CREATED), and
    /// never past the session's own credential deadline.
    pub fn attach(&self, thing: &str, id: &str, caller: &Caller) -> Result<StartedSession, Error> {
        let not_found = || {
            Error::not_found(format!(
                "Thing '{thing}' has no live session '{}'",
                clip(id)
            ))
        };
        let (record, expires, gas_url, key) = {
            let state = self.state();
            let live = state.live.get(id).ok_or_else(not_found)?;
            if live.record.agent_device != thing {
                return Err(not_found());
            }
            if live.record.created_by != caller.name {
                return Err(Error::forbidden(format!(
                    "session {} was started by another user: only they may attach to it",
                    clip(id)
                )));
            }
            if live.record.status != Status::Created {
                return Err(Error::conflict(format!(
                    "session {} is {}: only a session waiting for its client (CREATED) takes one",
                    clip(id),
                    live.record.status.as_str()
                )));
            }
            let gas = state
                .gases
                .get(&live.record.remote_server)
                .ok_or_else(|| Error::unavailable("the session's GAS is not registered"))?;
            (
                live.record.clone(),
                live.grant_expires_ms,
                gas.public_url.clone(),
                gas.key.clone(),
            )
        };
        if expires <= now_ms() {
            return Err(Error::conflict(format!(
                "session {} waited too long for its client: start a new one",
                clip(id)
            )));
        }
        let credential = tunnel::sign(
            &Grant {
                session: id.to_string(),
                role: Role::Client,
                gas: record.remote_server.clone(),
                exp: expires,
                nonce: self.random_hex(16)?,
            },
            &key,
        );
        let _ = self.host.audit(
            AUDIT,
            thing,
            &format!(
                "session {id}: a client credential issued again to {} from {} (AttachSession)",
                caller.name, caller.source_ip
            ),
        );
        Ok(StartedSession {
            session: record,
            gas_url: Some(gas_url),
            credential: Some(credential),
            credential_expires: Some(expires),
        })
    }

    /// A session refused before it had a GAS: written as TERMINATED with its audit entry.
    fn refuse(&self, mut record: RemoteSession, cause: Cause, why: &str, host: &str, port: u16) {
        let now = now_ms();
        record.status = Status::Terminated;
        record.termination_cause = Some(cause);
        record.end_time = Some(now);
        record.detail = Some(why.to_string());
        let audit = format!(
            "session {} refused ({}): {} from {} asked for Thing {}, endpoint {} ({host}:{port}): {why}",
            record.session_id,
            cause.as_str(),
            record.created_by,
            record.user_ip,
            record.agent_device,
            record.remote_endpoint
        );
        self.persist(&record, Some(audit));
    }

    /// Ends a live session with `cause` (once: later calls for the same session do nothing).
    /// `order_ends` also asks the GAS (next heartbeat) and the agent (now) to close it, for
    /// endings the platform decided; a GAS report needs neither.
    pub fn terminate(
        &self,
        id: &str,
        cause: Cause,
        detail: &str,
        bytes: Option<u64>,
        order_ends: bool,
    ) -> bool {
        let now = now_ms();
        let order = self.stripe(id);
        let record = {
            let mut state = self.state();
            let Some(live) = state.live.remove(id) else {
                return false;
            };
            let mut record = live.record;
            if order_ends {
                if let Some(gas) = state.gases.get_mut(&record.remote_server) {
                    gas.end_orders.push(id.to_string());
                    gas.missing.remove(id);
                }
            }
            record.status = Status::Terminated;
            record.termination_cause = Some(cause);
            record.end_time = Some(now);
            if let Some(b) = bytes {
                record.bytes_transferred = record.bytes_transferred.max(b);
            }
            if !detail.is_empty() {
                record.detail = Some(clip(detail).to_string());
            }
            record
        };
        let duration_s = (now - record.start_time.unwrap_or(record.created_time)).max(0) / 1000;
        self.persist(
            &record,
            Some(format!(
                "session {} terminated ({}): Thing {}, endpoint {}, GAS {}, started by {}, {} bytes, {duration_s} s{}",
                record.session_id,
                cause.as_str(),
                record.agent_device,
                record.remote_endpoint,
                if record.remote_server.is_empty() { "none" } else { &record.remote_server },
                record.created_by,
                record.bytes_transferred,
                if detail.is_empty() { String::new() } else { format!(": {}", clip(detail)) }
            )),
        );
        drop(order);
        self.host.info(format!(
            "session {id} of {} terminated: {}{}",
            record.agent_device,
            cause.as_str(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", clip(detail))
            }
        ));
        if order_ends && cause != Cause::DeviceShutdown {
            // One-way: the agent closes its side at once (the GAS also hears it at the next
            // heartbeat, in case the agent is unreachable).
            let _ = self.host.invoke(
                "Subsystems",
                "ConnectionServicesSubsystem",
                "SendMessage",
                json!({"thingName": record.agent_device, "name": requests::END_SESSION,
                       "body": {"session": id}}),
            );
        }
        true
    }

    fn persist(&self, record: &RemoteSession, audit: Option<String>) {
        let value = match serde_json::to_value(record) {
            Ok(v) => v,
            Err(e) => {
                self.host
                    .error(format!("cannot encode session {}: {e}", record.session_id));
                return;
            }
        };
        let audit = audit.map(|m| (AUDIT, record.agent_device.as_str(), m));
        let result = match &audit {
            Some((c, e, m)) => self.host.record_put(
                SESSIONS,
                &record.session_id,
                value,
                Some((c, e, m.as_str())),
            ),
            None => self
                .host
                .record_put(SESSIONS, &record.session_id, value, None),
        };
        if let Err(e) = result {
            self.host.error(format!(
                "cannot write session {} ({:?}): {e}",
                record.session_id, record.status
            ));
        }
    }

    /// A session of `thing`, live or recorded.
    pub fn get(&self, thing: &str, id: &str) -> Result<RemoteSession, Error> {
        let found = self.find(id)?;
        match found {
            Some(s) if s.agent_device == thing => Ok(s),
            _ => Err(Error::not_found(format!(
                "Thing '{thing}' has no session '{}'",
                clip(id)
            ))),
        }
    }

    /// A session by id, live or recorded.
    pub fn find(&self, id: &str) -> Result<Option<RemoteSession>, Error> {
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        if let Some(l) = self.state().live.get(id) {
            return Ok(Some(l.record.clone()));
        }
        Ok(self
            .host
            .record_get(SESSIONS, id)?
            .and_then(|v| serde_json::from_value(v).ok()))
    }

    /// Ends a session on the user's request (`EndSession`): the record afterwards.
    pub fn end(&self, thing: &str, id: &str, caller: &Caller) -> Result<RemoteSession, Error> {
        self.get(thing, id)?;
        self.terminate(
            id,
            Cause::UserShutdown,
            &format!("ended by {}", caller.name),
            None,
            true,
        );
        self.get(thing, id)
    }

    /// The sessions of a device, newest first, at most `maxSessionsReturned`.
    pub fn device_sessions(&self, thing: &str) -> Result<Vec<RemoteSession>, Error> {
        let max = self.settings().max_returned;
        let prefix = format!("{thing}/");
        let mut ids: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page =
                self.host
                    .record_query(BY_DEVICE, &prefix, after.as_deref().unwrap_or(""), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            ids.extend(page.iter().map(|r| r.key[prefix.len()..].to_string()));
            if ids.len() > max {
                ids.drain(..ids.len() - max);
            }
            if page.len() < 1000 {
                break;
            }
        }
        let mut out = Vec::new();
        for id in ids.iter().rev() {
            if let Some(s) = self.find(id)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// All sessions the filter takes, newest first, at most `limit`.
    pub fn all_sessions(
        &self,
        limit: usize,
        keep: &mut dyn FnMut(&RemoteSession) -> bool,
    ) -> Result<Vec<RemoteSession>, Error> {
        let live: HashMap<String, RemoteSession> = self
            .state()
            .live
            .iter()
            .map(|(k, l)| (k.clone(), l.record.clone()))
            .collect();
        let mut out: std::collections::VecDeque<RemoteSession> = Default::default();
        let mut after: Option<String> = None;
        loop {
            let page =
                self.host
                    .record_query(SESSIONS, "", after.as_deref().unwrap_or(""), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for r in &page {
                let s = match live.get(&r.key) {
                    Some(s) => s.clone(),
                    None => match serde_json::from_value::<RemoteSession>(r.value.clone()) {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                };
                if keep(&s) {
                    out.push_back(s);
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        Ok(out.into_iter().rev().collect())
    }

    /// The live sessions carried by a GAS.
    pub fn gas_sessions(&self, gas: &str) -> Vec<RemoteSession> {
        let mut out: Vec<RemoteSession> = self
            .state()
            .live
            .values()
            .filter(|l| l.record.remote_server == gas)
            .map(|l| l.record.clone())
            .collect();
        out.sort_by(|a, b| b.session_id.cmp(&a.session_id));
        out
    }

    pub fn gas_session_count(&self, gas: &str) -> usize {
        self.sessions_on(gas)
    }

    /// Every 5 s: GAS liveness, and the sessions that must end (lost GAS, inactivity, maximum
    /// duration, never started).
    pub fn sweep(&self) {
        let now = now_ms();
        let settings = self.settings();
        let mut endings: Endings = Vec::new();
        let mut disconnected: Vec<String> = Vec::new();
        {
            let mut state = self.state();
            let mut lost: Vec<String> = Vec::new();
            for (name, gas) in state.gases.iter_mut() {
                let silent = now - gas.last_heard_ms;
                if silent > proto::SILENT_AFTER_MS as i64 && gas.connected_written {
                    gas.connected_written = false;
                    disconnected.push(name.clone());
                }
                if silent > proto::LOST_AFTER_MS as i64 {
                    lost.push(name.clone());
                }
            }
            for (id, live) in &state.live {
                let r = &live.record;
                let ending = if lost.contains(&r.remote_server) {
                    Some((
                        Cause::ServerLost,
                        "the GAS stopped sending heartbeats".to_string(),
                    ))
                } else if live
                    .recovered_ms
                    .is_some_and(|t| now - t > RECOVERY_GRACE_MS)
                {
                    Some((
                        Cause::ServerLost,
                        "open at the platform's last stop and not reported by a GAS since".into(),
                    ))
                } else if r.status != Status::Started && now > live.grant_expires_ms + 10_000 {
                    Some((
                        Cause::NotStarted,
                        "a side did not attach before its credential expired".into(),
                    ))
                } else if now - r.last_activity_time > settings.inactive_ms {
                    Some((
                        Cause::Abandoned,
                        format!("no traffic for {} min", settings.inactive_ms / 60_000),
                    ))
                } else if now - r.created_time > settings.max_duration_ms {
                    Some((
                        Cause::MaxDuration,
                        format!("open for {} h", settings.max_duration_ms / 3_600_000),
                    ))
                } else {
                    None
                };
                if let Some((cause, detail)) = ending {
                    endings.push((id.clone(), cause, detail));
                }
            }
        }
        for name in disconnected {
            self.host.warn(format!(
                "GAS {name} sent no heartbeat for {} s: disconnected",
                proto::SILENT_AFTER_MS / 1000
            ));
            let _ = self
                .host
                .set_properties(&name, props(&[("isConnected", json!(false))]));
        }
        for (id, cause, detail) in endings {
            self.terminate(&id, cause, &detail, None, true);
        }
    }
}

/// Maps a GAS's end report to a termination cause and a detail for people.
fn map_end(cause: &str, role: Option<&str>, detail: &str) -> (Cause, String) {
    use thingport_protocol::gas::end_causes as c;
    let side = role.unwrap_or("a side");
    let (cause, what) = match (cause, role) {
        (c::NOT_PAIRED, _) => (
            Cause::NotStarted,
            "the other side never attached".to_string(),
        ),
        (c::SHUTDOWN, _) => (Cause::ServerLost, "the GAS shut down".to_string()),
        (c::CLOSED, Some("client")) => (Cause::UserShutdown, "the client closed the tunnel".into()),
        (_, Some("client")) => (
            Cause::Abandoned,
            format!("the client's tunnel {}", lower(cause)),
        ),
        (_, Some("agent")) => (
            Cause::DeviceShutdown,
            format!("the agent's tunnel {}", lower(cause)),
        ),
        (c::ENDED_BY_PLATFORM, _) => (Cause::Abandoned, "ended by the platform".to_string()),
        _ => (Cause::ServerLost, format!("{side}: {}", lower(cause))),
    };
    if detail.is_empty() {
        (cause, what)
    } else {
        (cause, format!("{what}: {}", clip(detail)))
    }
}

fn lower(cause: &str) -> &'static str {
    use thingport_protocol::gas::end_causes as c;
    match cause {
        c::CLOSED => "closed",
        c::LOST => "was lost",
        c::PROTOCOL => "broke the protocol",
        _ => "ended",
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
