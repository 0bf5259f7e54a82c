//! Who is connected and which Things each connection serves; the protocol's state machine; the
//! requests waiting for a device's answer; and the batched mirror into `isConnected`.
//!
//! Locking: one mutex over the bindings and one over the waiting requests, each held only for
//! map updates, never across a host call (host calls may block on disk).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use thingport_protocol::control::{self, codes, encode, AgentMessage, ErrorInfo, PlatformMessage};
use thingport_sdk::protocol::{ErrorKind, PropertyUpdate};
use thingport_sdk::{Connection, Error, Host};

use crate::REMOTE_THING;

/// Requests that may wait for devices at once (each holds one of the host's blocking threads).
const MAX_WAITING: usize = 256;
/// Refused binds per minute after which a connection is closed (a hostile or broken agent).
const MAX_REFUSED_BINDS: u32 = 1_000;
/// Undecodable messages after which a connection is closed.
const MAX_MALFORMED: u32 = 20;
/// The longest agent description kept.
const MAX_AGENT_LEN: usize = 200;
/// The agent message types of thingport.v1.
const KNOWN_TYPES: [&str; 4] = ["hello", "bind", "unbind", "response"];
/// The longest Thing name considered.
const MAX_THING_NAME: usize = 200;

/// A message for a bound Thing.
#[derive(Debug, Clone)]
pub struct Egress {
    pub thing: String,
    pub name: String,
    pub body: Value,
}

struct Conn {
    user: String,
    source_ip: String,
    agent: Option<String>,
    things: BTreeSet<String>,
    /// Refused binds in the current minute (a misconfigured agent retries slowly; a hostile one
    /// is closed).
    refused: u32,
    refused_window: Instant,
    malformed: u32,
    since_ms: i64,
}

#[derive(Default)]
struct Bindings {
    conns: HashMap<u64, Conn>,
    /// Thing → the connection serving it.
    things: HashMap<String, u64>,
    /// Changes of `isConnected` not yet written: Thing → (connected, when, in ms).
    dirty: HashMap<String, (bool, i64)>,
}

struct Waiter {
    connection: u64,
    thing: String,
    answer: Mutex<Option<Result<Value, ErrorInfo>>>,
    ready: Condvar,
}

pub struct Registry {
    host: Host,
    bindings: Mutex<Bindings>,
    waiting: Mutex<HashMap<u64, Arc<Waiter>>>,
    next_request: AtomicU64,
    max_things: AtomicU32,
    /// Held while writing the mirror, so two timer ticks never write at once.
    flushing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Cuts a string to at most `max` bytes on a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Registry {
    pub fn new(host: Host, max_things: u32) -> Registry {
        Registry {
            host,
            bindings: Mutex::default(),
            waiting: Mutex::default(),
            next_request: AtomicU64::new(1),
            max_things: AtomicU32::new(max_things),
            flushing: Mutex::new(()),
        }
    }

    pub fn set_max_things(&self, n: u32) {
        self.max_things.store(n, Ordering::Relaxed);
    }

    /// Marks disconnected every `RemoteThing` that says it is connected: at start nothing is
    /// bound yet, so such a flag is left over from a crash or an earlier instance.
    pub fn reset_stale_flags(&self) -> Result<(), Error> {
        let mut updates = Vec::new();
        for thing in self.host.things_of_template(REMOTE_THING)? {
            let connected = self
                .host
                .get_property(&thing, "isConnected")
                .map(|v| v == Value::Bool(true))
                .unwrap_or(false);
            if connected {
                updates.push(thing);
            }
        }
        if updates.is_empty() {
            return Ok(());
        }
        self.host.info(format_args!(
            "marking {} Things disconnected: they were connected when the platform last stopped",
            updates.len()
        ));
        let batch = updates
            .iter()
            .map(|t| PropertyUpdate {
                thing: t.clone(),
                values: one("isConnected", Value::Bool(false)),
            })
            .collect();
        if self.host.set_properties_batch(batch).is_err() {
            // One bad Thing (disabled, say) fails the batch: write the others one by one.
            for t in updates {
                let _ = self
                    .host
                    .set_property(&t, "isConnected", Value::Bool(false));
            }
        }
        Ok(())
    }

    /// A new connection (the host authenticated its user).
    pub fn open(&self, c: &Connection) {
        lock(&self.bindings).conns.insert(
            c.id,
            Conn {
                user: c.principal.name.clone(),
                source_ip: c.principal.source_ip.clone(),
                agent: None,
                things: BTreeSet::new(),
                refused: 0,
                refused_window: Instant::now(),
                malformed: 0,
                since_ms: now_ms(),
            },
        );
    }

    /// Sends a protocol message. If it cannot be queued (the agent does not read), the agent
    /// and the platform could disagree about what is bound: the connection is closed, and the
    /// agent's reconnect binds everything again.
    fn send(&self, connection: u64, message: &PlatformMessage) {
        if let Err(e) = self.host.send(connection, encode(message)) {
            self.host.warn(format_args!(
                "connection {connection}: cannot send, closing it: {e}"
            ));
            let _ = self
                .host
                .close(connection, 1008, "the agent does not read its messages");
        }
    }

    fn protocol_error(&self, connection: u64, code: &str, message: String) {
        // A decode error can quote the peer's input: keep it short.
        let message = clip(&message, 200);
        let too_many = {
            let mut b = lock(&self.bindings);
            match b.conns.get_mut(&connection) {
                Some(c) => {
                    c.malformed += 1;
                    c.malformed >= MAX_MALFORMED
                }
                None => false,
            }
        };
        self.host
            .info(format_args!("connection {connection}: {code}: {message}"));
        self.send(
            connection,
            &PlatformMessage::Error {
                code: code.into(),
                message,
            },
        );
        if too_many {
            let _ = self.host.close(
                connection,
                1008,
                &format!("{MAX_MALFORMED} malformed messages"),
            );
        }
    }

    /// One text message from an agent.
    pub fn message(&self, connection: u64, text: &str) {
        let greeted = lock(&self.bindings)
            .conns
            .get(&connection)
            .map(|c| c.agent.is_some());
        let Some(greeted) = greeted else { return };
        let message = match AgentMessage::decode(text) {
            Ok(m) => m,
            Err(e) => {
                if !greeted {
                    self.protocol_error(connection, codes::MALFORMED, e);
                    let _ = self
                        .host
                        .close(connection, 1008, "the first message must be hello");
                    return;
                }
                // A message type from a newer agent is answered, not held against it.
                let newer = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(String::from))
                    .filter(|t| !KNOWN_TYPES.contains(&t.as_str()));
                if let Some(t) = newer {
                    return self.send(
                        connection,
                        &PlatformMessage::Error {
                            code: codes::UNSUPPORTED.into(),
                            message: format!(
                                "message type '{}' is not supported by this platform",
                                clip(&t, 64)
                            ),
                        },
                    );
                }
                return self.protocol_error(connection, codes::MALFORMED, e);
            }
        };
        match message {
            AgentMessage::Hello { agent } => {
                if greeted {
                    return self.protocol_error(
                        connection,
                        codes::MALFORMED,
                        "hello was already sent on this connection".into(),
                    );
                }
                let agent = clip(&agent, MAX_AGENT_LEN);
                if let Some(c) = lock(&self.bindings).conns.get_mut(&connection) {
                    c.agent = Some(agent);
                }
                self.send(
                    connection,
                    &PlatformMessage::Welcome {
                        server: format!(
                            "thingport ConnectionServicesExtension/{}",
                            env!("CARGO_PKG_VERSION")
                        ),
                        max_things: self.max_things.load(Ordering::Relaxed),
                        ping_interval_ms: control::PING_INTERVAL_MS,
                    },
                );
            }
            _ if !greeted => {
                self.protocol_error(
                    connection,
                    codes::MALFORMED,
                    "the first message must be hello".into(),
                );
                let _ = self
                    .host
                    .close(connection, 1008, "the first message must be hello");
            }
            AgentMessage::Bind { id, thing } => self.bind(connection, id, thing),
            AgentMessage::Unbind { id, thing } => self.unbind(connection, id, thing),
            AgentMessage::Response { id, result, error } => {
                self.answer(connection, id, result, error)
            }
        }
    }

    fn refuse(&self, connection: u64, id: u64, thing: &str, code: &str, reason: String) {
        let close = {
            let mut b = lock(&self.bindings);
            match b.conns.get_mut(&connection) {
                Some(c) => {
                    if c.refused_window.elapsed() >= Duration::from_secs(60) {
                        c.refused = 0;
                        c.refused_window = Instant::now();
                    }
                    c.refused += 1;
                    c.refused >= MAX_REFUSED_BINDS
                }
                None => false,
            }
        };
        self.host.info(format_args!(
            "connection {connection}: bind of '{}' refused ({code}): {reason}",
            clip(thing, MAX_THING_NAME)
        ));
        self.send(
            connection,
            &PlatformMessage::BindRefused {
                id,
                thing: clip(thing, MAX_THING_NAME),
                code: code.into(),
                reason,
            },
        );
        if close {
            let _ = self.host.close(
                connection,
                1008,
                &format!("{MAX_REFUSED_BINDS} refused binds within a minute"),
            );
        }
    }

    fn bind(&self, connection: u64, id: u64, thing: String) {
        let user = {
            let b = lock(&self.bindings);
            let Some(c) = b.conns.get(&connection) else {
                return;
            };
            if c.things.contains(&thing) {
                drop(b);
                return self.send(connection, &PlatformMessage::Bound { id, thing });
            }
            if c.things.len() >= self.max_things.load(Ordering::Relaxed) as usize {
                let n = c.things.len();
                drop(b);
                return self.refuse(
                    connection,
                    id,
                    &thing,
                    codes::TOO_MANY_THINGS,
                    format!("this connection already binds {n} Things, the most it may"),
                );
            }
            c.user.clone()
        };
        if thing.is_empty() || thing.len() > MAX_THING_NAME {
            return self.refuse(
                connection,
                id,
                &thing,
                codes::NOT_FOUND,
                format!("a Thing name has 1 to {MAX_THING_NAME} bytes"),
            );
        }
        // The checks run without the lock: they are host calls.
        let info = match self.host.describe_thing(&thing) {
            Ok(info) => info,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return self.refuse(
                    connection,
                    id,
                    &thing,
                    codes::NOT_FOUND,
                    format!("Thing '{thing}' does not exist or user '{user}' cannot see it"),
                )
            }
            Err(e) => {
                return self.refuse(
                    connection,
                    id,
                    &thing,
                    codes::UNAVAILABLE,
                    format!("the platform could not check Thing '{thing}': {e}"),
                )
            }
        };
        let visible = self
            .host
            .check_permission(&user, "Things", &thing, "Visible", "")
            .unwrap_or(false);
        if !visible {
            return self.refuse(
                connection,
                id,
                &thing,
                codes::NOT_FOUND,
                format!("Thing '{thing}' does not exist or user '{user}' cannot see it"),
            );
        }
        if !info.templates.iter().any(|t| t == REMOTE_THING) {
            return self.refuse(
                connection,
                id,
                &thing,
                codes::NOT_REMOTE_THING,
                format!(
                    "Thing '{thing}' has template '{}', which does not derive from {REMOTE_THING}",
                    info.template
                ),
            );
        }
        if !info.enabled {
            return self.refuse(
                connection,
                id,
                &thing,
                codes::DISABLED,
                format!("Thing '{thing}' is disabled"),
            );
        }
        let may_write = ["isConnected", "lastConnection"].iter().all(|p| {
            self.host
                .check_permission(&user, "Things", &thing, "PropertyWrite", p)
                .unwrap_or(false)
        });
        if !may_write {
            return self.refuse(
                connection,
                id,
                &thing,
                codes::FORBIDDEN,
                format!(
                    "user '{user}' (the application key's user) may not write the properties of Thing '{thing}': grant it PropertyWrite"
                ),
            );
        }
        let replaced = {
            let mut b = lock(&self.bindings);
            if !b.conns.contains_key(&connection) {
                return; // closed meanwhile
            }
            let old = b.things.insert(thing.clone(), connection);
            let old = old.filter(|o| *o != connection);
            if let Some(o) = old {
                if let Some(c) = b.conns.get_mut(&o) {
                    c.things.remove(&thing);
                }
            }
            if let Some(c) = b.conns.get_mut(&connection) {
                c.things.insert(thing.clone());
                c.refused = 0;
            }
            b.dirty.insert(thing.clone(), (true, now_ms()));
            // Queued under the lock, so no request for the Thing can overtake it.
            let bound = encode(&PlatformMessage::Bound {
                id,
                thing: thing.clone(),
            });
            let unsent = self.host.send(connection, bound).err();
            (old, unsent)
        };
        let (replaced, unsent) = replaced;
        if let Some(e) = unsent {
            // The agent would never learn of its binding: start over on a new connection.
            self.host.warn(format_args!(
                "connection {connection}: cannot send bound, closing it: {e}"
            ));
            let _ = self
                .host
                .close(connection, 1008, "the agent does not read its messages");
        }
        if let Some(old) = replaced {
            self.host.info(format_args!(
                "Thing '{thing}' is now served by connection {connection}; connection {old} was told REPLACED"
            ));
            self.send(
                old,
                &PlatformMessage::Unbound {
                    id: None,
                    thing: thing.clone(),
                    code: codes::REPLACED.into(),
                    reason: format!(
                        "another agent connection bound Thing '{thing}'; the newest connection wins"
                    ),
                },
            );
            self.fail_waiters(
                old,
                Some(&thing),
                "the Thing was bound by another connection",
            );
        } else {
            self.host
                .debug(format_args!("connection {connection}: bound '{thing}'"));
        }
    }

    fn unbind(&self, connection: u64, id: u64, thing: String) {
        let was_bound = {
            let mut b = lock(&self.bindings);
            let mine = b.things.get(&thing) == Some(&connection);
            if mine {
                b.things.remove(&thing);
                b.dirty.insert(thing.clone(), (false, now_ms()));
            }
            if let Some(c) = b.conns.get_mut(&connection) {
                c.things.remove(&thing);
            }
            mine
        };
        if was_bound {
            self.fail_waiters(connection, Some(&thing), "the agent unbound the Thing");
        }
        let reason = if was_bound {
            "unbound at the agent's request".to_string()
        } else {
            "this connection did not serve the Thing".to_string()
        };
        self.send(
            connection,
            &PlatformMessage::Unbound {
                id: Some(id),
                thing: clip(&thing, MAX_THING_NAME),
                code: codes::UNBOUND.into(),
                reason,
            },
        );
    }

    /// The connection ended: its Things are disconnected, its waiting requests fail.
    pub fn closed(&self, connection: u64, reason: &str) {
        let things = {
            let mut b = lock(&self.bindings);
            let Some(c) = b.conns.remove(&connection) else {
                return;
            };
            let at = now_ms();
            for t in &c.things {
                if b.things.get(t) == Some(&connection) {
                    b.things.remove(t);
                    b.dirty.insert(t.clone(), (false, at));
                }
            }
            c.things
        };
        if !things.is_empty() {
            self.host.info(format_args!(
                "connection {connection} closed ({reason}); disconnected: {}",
                things.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        self.fail_waiters(connection, None, "the device disconnected");
    }

    fn fail_waiters(&self, connection: u64, thing: Option<&str>, why: &str) {
        let waiters: Vec<Arc<Waiter>> = lock(&self.waiting)
            .values()
            .filter(|w| w.connection == connection && thing.is_none_or(|t| t == w.thing))
            .cloned()
            .collect();
        for w in waiters {
            lock(&w.answer).get_or_insert(Err(ErrorInfo::new(codes::UNAVAILABLE, why)));
            w.ready.notify_all();
        }
    }

    fn answer(&self, connection: u64, id: u64, result: Option<Value>, error: Option<ErrorInfo>) {
        let waiter = lock(&self.waiting).get(&id).cloned();
        // An answer only counts from the connection the request went to.
        let Some(w) = waiter.filter(|w| w.connection == connection) else {
            return self.host.debug(format_args!(
                "connection {connection}: response {id} matches no waiting request (late or unknown)"
            ));
        };
        let answer = match (result, error) {
            (_, Some(e)) => Err(e),
            (Some(v), None) => Ok(v),
            (None, None) => Ok(Value::Null),
        };
        lock(&w.answer).get_or_insert(answer);
        w.ready.notify_all();
    }

    fn serving(&self, thing: &str) -> Result<u64, Error> {
        lock(&self.bindings)
            .things
            .get(thing)
            .copied()
            .ok_or_else(|| not_connected(thing))
    }

    /// Sends a one-way message to a bound Thing.
    pub fn notify(&self, e: Egress) -> Result<(), Error> {
        let connection = self.serving(&e.thing)?;
        let text = fits(encode(&PlatformMessage::Message {
            thing: e.thing.clone(),
            name: e.name,
            body: e.body,
        }))?;
        self.host
            .send(connection, text)
            .map_err(|err| Error::unavailable(format!("cannot reach Thing '{}': {err}", e.thing)))
    }

    /// Sends a request to a bound Thing and waits for its answer until `timeout`.
    pub fn request(&self, e: Egress, timeout: Duration) -> Result<Value, Error> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let text = fits(encode(&PlatformMessage::Request {
            id,
            thing: e.thing.clone(),
            name: e.name.clone(),
            body: e.body,
        }))?;
        // Resolve the connection, register the waiter and queue the request under the bindings
        // lock: a rebind or unbind cannot slip in between and strand the waiter.
        let bindings = lock(&self.bindings);
        let connection = bindings
            .things
            .get(&e.thing)
            .copied()
            .ok_or_else(|| not_connected(&e.thing))?;
        let waiter = Arc::new(Waiter {
            connection,
            thing: e.thing.clone(),
            answer: Mutex::new(None),
            ready: Condvar::new(),
        });
        {
            let mut waiting = lock(&self.waiting);
            if waiting.len() >= MAX_WAITING {
                return Err(Error::unavailable(format!(
                    "{MAX_WAITING} requests are already waiting for devices: try again"
                )));
            }
            waiting.insert(id, waiter.clone());
        }
        let _cleanup = Forget { registry: self, id };
        self.host.send(connection, text).map_err(|err| {
            Error::unavailable(format!("cannot reach Thing '{}': {err}", e.thing))
        })?;
        drop(bindings);
        let answer = lock(&waiter.answer);
        let (mut answer, timed_out) = waiter
            .ready
            .wait_timeout_while(answer, timeout, |a| a.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        if timed_out.timed_out() && answer.is_none() {
            return Err(Error::unavailable(format!(
                "Thing '{}' did not answer '{}' within {} ms",
                e.thing,
                e.name,
                timeout.as_millis()
            )));
        }
        match answer.take() {
            Some(Ok(v)) => Ok(v),
            Some(Err(info)) if info.code == codes::UNAVAILABLE => Err(Error::unavailable(format!(
                "Thing '{}': {}",
                e.thing, info.message
            ))),
            Some(Err(info)) => Err(Error::unprocessable(format!(
                "the agent of Thing '{}' answered '{}' with {}: {}",
                e.thing, e.name, info.code, info.message
            ))),
            None => Err(Error::internal("no answer recorded")),
        }
    }

    /// `Ping` on a Thing: a `ping` request to its agent, timed.
    pub fn ping(&self, thing: &str) -> Result<Value, Error> {
        let started = Instant::now();
        let agent_answer = self.request(
            Egress {
                thing: thing.into(),
                name: control::requests::PING.into(),
                body: json!({}),
            },
            Duration::from_millis(control::DEFAULT_REQUEST_TIMEOUT_MS),
        )?;
        let rtt = started.elapsed().as_secs_f64() * 1000.0;
        Ok(json!({
            "thing": thing,
            "agent": agent_answer.get("agent").cloned().unwrap_or(Value::Null),
            "agentTime": agent_answer.get("time").cloned().unwrap_or(Value::Null),
            "roundTripMs": (rtt * 1000.0).round() / 1000.0,
        }))
    }

    /// The bound Things and their connections.
    pub fn connected_things(&self) -> Value {
        let b = lock(&self.bindings);
        let mut rows: Vec<Value> = b
            .things
            .iter()
            .filter_map(|(thing, conn)| {
                let c = b.conns.get(conn)?;
                Some(json!({
                    "thing": thing, "connection": conn, "user": c.user,
                    "agent": c.agent, "sourceIp": c.source_ip, "since": c.since_ms,
                }))
            })
            .collect();
        rows.sort_by(|a, b| a["thing"].as_str().cmp(&b["thing"].as_str()));
        Value::Array(rows)
    }

    /// Writes the pending `isConnected` / `lastConnection` changes in one transaction. A Thing
    /// that cannot be written any more (deleted or disabled while bound) is unbound with `GONE`.
    pub fn flush(&self) {
        let Ok(_one_at_a_time) = self.flushing.try_lock() else {
            return;
        };
        self.write_dirty();
    }

    /// The last flush at shutdown: waits for a flush in progress, then writes the rest.
    pub fn flush_final(&self) {
        let _one_at_a_time = lock(&self.flushing);
        self.write_dirty();
    }

    fn write_dirty(&self) {
        let dirty = std::mem::take(&mut lock(&self.bindings).dirty);
        if dirty.is_empty() {
            return;
        }
        let updates: Vec<PropertyUpdate> = dirty
            .iter()
            .map(|(thing, (connected, at))| {
                let mut values = one("isConnected", Value::Bool(*connected));
                if *connected {
                    values.insert("lastConnection".into(), json!(at));
                }
                PropertyUpdate {
                    thing: thing.clone(),
                    values,
                }
            })
            .collect();
        let n = updates.len();
        let e = match self.host.set_properties_batch(updates.clone()) {
            Ok(()) => {
                return self
                    .host
                    .trace(format_args!("wrote the connection state of {n} Things"))
            }
            Err(e) => e,
        };
        if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Internal) {
            // Storage trouble, not one bad Thing: writing them one by one would fail the same way.
            return self.host.warn(format_args!(
                "could not write the connection state of {n} Things: {e}"
            ));
        }
        // One Thing (deleted or disabled meanwhile) failed the batch: write the others one by one.
        for u in updates {
            match self.host.set_properties(&u.thing, u.values) {
                Ok(()) => {}
                // Deleted (404) or disabled (409): the Thing cannot be served any more.
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
                    self.gone(&u.thing, &e)
                }
                Err(e) => self.host.warn(format_args!(
                    "could not write the connection state of Thing '{}': {e}",
                    u.thing
                )),
            }
        }
    }

    /// Re-checks every bound Thing: one deleted, disabled or no longer a `RemoteThing` is
    /// unbound with `GONE` (its agent retries later). The checks are in-memory host calls.
    pub fn verify(&self) {
        let bound: Vec<String> = lock(&self.bindings).things.keys().cloned().collect();
        for thing in bound {
            let why = match self.host.describe_thing(&thing) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Some(format!("Thing '{thing}' was deleted"))
                }
                Err(_) => None,
                Ok(info) if !info.enabled => Some(format!("Thing '{thing}' was disabled")),
                Ok(info) if !info.templates.iter().any(|t| t == REMOTE_THING) => Some(format!(
                    "Thing '{thing}' no longer derives from {REMOTE_THING}"
                )),
                Ok(_) => None,
            };
            if let Some(why) = why {
                self.gone(&thing, &Error::not_found(why));
            }
        }
    }

    /// A bound Thing that can no longer be written is no longer served.
    fn gone(&self, thing: &str, e: &Error) {
        let connection = {
            let mut b = lock(&self.bindings);
            let Some(c) = b.things.remove(thing) else {
                return;
            };
            if let Some(conn) = b.conns.get_mut(&c) {
                conn.things.remove(thing);
            }
            c
        };
        self.host.info(format_args!(
            "Thing '{thing}' can no longer be served ({e}): unbinding it from connection {connection}"
        ));
        self.send(
            connection,
            &PlatformMessage::Unbound {
                id: None,
                thing: thing.into(),
                code: codes::GONE.into(),
                reason: format!("Thing '{thing}' changed on the platform: {}", e.message()),
            },
        );
        self.fail_waiters(connection, Some(thing), "the Thing is no longer served");
    }
}

/// Removes a request from the waiting set however the wait ends.
struct Forget<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.registry.waiting).remove(&self.id);
    }
}

fn not_connected(thing: &str) -> Error {
    Error::unavailable(format!(
        "Thing '{thing}' is not connected: no agent has bound it"
    ))
}

/// Refuses a message the agent would not accept (over [`control::MAX_MESSAGE_BYTES`]).
fn fits(text: String) -> Result<String, Error> {
    if text.len() > control::MAX_MESSAGE_BYTES {
        return Err(Error::bad_request(format!(
            "the message is {} bytes; the control channel carries at most {} bytes per message",
            text.len(),
            control::MAX_MESSAGE_BYTES
        )));
    }
    Ok(text)
}

fn one(k: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(k.into(), v);
    m
}
