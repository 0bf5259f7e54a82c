//! The session table: which roles of which sessions are reserved or attached, the queues between
//! the two sides, and the nonces already used. Everything here runs under the relay's table lock
//! (a `std::sync::Mutex`, never held across an await); the frame path never touches it.

use crate::{index, other, EndCause, EventKind, Role, SessionEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Bytes;

/// Nonces remembered at most (each until its grant expires); beyond that, upgrades are refused
/// with 503 until old ones expire. A grant lives 60 s, so this is ~17,000 attaches a second.
const MAX_NONCES: usize = 1 << 20;

/// Where a session stands, as its sides watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Waiting,
    Paired,
    Ended,
}

/// One side's ends of the two queues of a session: what it reads goes to `to_peer`, what it
/// writes comes from `from_peer`.
#[derive(Debug)]
pub(crate) struct Ends {
    pub to_peer: mpsc::Sender<Bytes>,
    pub from_peer: mpsc::Receiver<Bytes>,
}

/// A session, shared by its sides' tasks.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: Arc<str>,
    pub phase: watch::Sender<Phase>,
    /// `DATA` payload bytes read so far from each side (client: up, agent: down), for
    /// heartbeats. Each has one writer (its side's reader, a relaxed store per `DATA` frame, no
    /// lock); readers may see a slightly old value.
    pub live: [AtomicU64; 2],
    inner: Mutex<Inner>,
}

/// A live session as [`crate::Relay::live_sessions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub session: Arc<str>,
    /// Client-to-agent `DATA` bytes so far.
    pub bytes_up: u64,
    /// Agent-to-client `DATA` bytes so far.
    pub bytes_down: u64,
    /// Both sides attached.
    pub paired: bool,
}

#[derive(Debug, Default)]
struct Inner {
    cause: Option<EndCause>,
    /// Sides attached and not yet done.
    alive: u8,
    /// `DATA` payload bytes read from each side (client: up, agent: down).
    bytes: [u64; 2],
    started: Option<Instant>,
}

impl Session {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What ended the session, once it ended.
    pub fn cause(&self) -> Option<EndCause> {
        self.inner().cause.clone()
    }

    /// A side's task is finished: adds its byte count; the last one out gets the `Ended` event.
    pub fn side_done(&self, role: Role, data_bytes: u64) -> Option<SessionEvent> {
        let mut inner = self.inner();
        inner.bytes[index(role)] += data_bytes;
        inner.alive = inner.alive.saturating_sub(1);
        if inner.alive > 0 {
            return None;
        }
        Some(SessionEvent {
            session: self.id.clone(),
            kind: EventKind::Ended {
                cause: inner.cause.clone().unwrap_or(EndCause::Lost(role)),
                bytes_up: inner.bytes[0],
                bytes_down: inner.bytes[1],
                duration_ms: inner.started.map_or(0, |t| {
                    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
                }),
            },
        })
    }
}

enum Slot {
    /// Nobody holds the role: the queue ends wait for it.
    Free(Ends),
    /// An upgrade with a valid credential for the role is completing.
    Reserved,
    /// The role's side is attached.
    Live,
}

struct Entry {
    session: Arc<Session>,
    slots: [Slot; 2],
}

/// Why a valid credential cannot be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    Replayed,
    RoleTaken,
    TooManyNonces,
    Closing,
    /// A new session beyond `max_sessions`.
    Full,
}

/// What [`Table::reserve`] allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Messages queued each way between the sides of a new session.
    pub queue: usize,
    /// Sessions (paired or not) at most in the table.
    pub max_sessions: usize,
}

/// Sessions with at least one side reserved or attached, and not ended.
#[derive(Default)]
pub(crate) struct Table {
    sessions: HashMap<Arc<str>, Entry>,
    nonces: Nonces,
    /// Set at shutdown: nothing new is admitted.
    pub closing: bool,
    started: usize,
}

impl Table {
    /// Sessions whose both sides are attached.
    pub fn started(&self) -> usize {
        self.started
    }

    /// Sessions waiting for a side.
    pub fn waiting(&self) -> usize {
        self.sessions.len() - self.started
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session `id`, if it is in the table (not ended).
    pub fn find(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.get(id).map(|e| e.session.clone())
    }

    /// At most `max` sessions of the table with their byte counts so far.
    pub fn live(&self, max: usize) -> Vec<LiveSession> {
        self.sessions
            .values()
            .take(max)
            .map(|e| LiveSession {
                session: e.session.id.clone(),
                bytes_up: e.session.live[0].load(Ordering::Relaxed),
                bytes_down: e.session.live[1].load(Ordering::Relaxed),
                paired: e.session.inner().started.is_some(),
            })
            .collect()
    }

    /// Consumes the nonce of a verified credential and reserves its role of its session (creating
    /// the session and its two queues if it is new, unless `limits.max_sessions` are live).
    pub fn reserve(
        &mut self,
        session: &str,
        role: Role,
        nonce: &str,
        exp_ms: i64,
        now_ms: i64,
        limits: Limits,
    ) -> Result<(Arc<Session>, Ends), ReserveError> {
        if self.closing {
            return Err(ReserveError::Closing);
        }
        // Before the nonce is used up: a refused credential may be retried.
        if self.sessions.len() >= limits.max_sessions && !self.sessions.contains_key(session) {
            return Err(ReserveError::Full);
        }
        self.nonces.consume(nonce, exp_ms, now_ms)?;
        let queue = limits.queue;
        let entry = match self.sessions.get_mut(session) {
            Some(e) => e,
            None => {
                let id: Arc<str> = Arc::from(session);
                let (up_tx, up_rx) = mpsc::channel(queue);
                let (down_tx, down_rx) = mpsc::channel(queue);
                let entry = Entry {
                    session: Arc::new(Session {
                        id: id.clone(),
                        phase: watch::Sender::new(Phase::Waiting),
                        live: [AtomicU64::new(0), AtomicU64::new(0)],
                        inner: Mutex::new(Inner::default()),
                    }),
                    slots: [
                        Slot::Free(Ends {
                            to_peer: up_tx,
                            from_peer: down_rx,
                        }),
                        Slot::Free(Ends {
                            to_peer: down_tx,
                            from_peer: up_rx,
                        }),
                    ],
                };
                self.sessions.entry(id).or_insert(entry)
            }
        };
        let slot = &mut entry.slots[index(role)];
        match std::mem::replace(slot, Slot::Reserved) {
            Slot::Free(ends) => Ok((entry.session.clone(), ends)),
            taken => {
                *slot = taken;
                Err(ReserveError::RoleTaken)
            }
        }
    }

    /// Gives a reservation back (its upgrade failed). Returns whether the table is now empty.
    pub fn release(&mut self, session: &Arc<Session>, role: Role, ends: Ends) -> bool {
        if let Some(entry) = self.sessions.get_mut(&session.id) {
            if Arc::ptr_eq(&entry.session, session) {
                entry.slots[index(role)] = Slot::Free(ends);
                if matches!(entry.slots[index(other(role))], Slot::Free(_)) {
                    self.sessions.remove(&session.id);
                }
            }
        }
        self.sessions.is_empty()
    }

    /// Turns a reservation into an attached side. `Ok(true)` when the session is now paired;
    /// `Err` when it ended while the upgrade completed.
    pub fn attach(&mut self, session: &Arc<Session>, role: Role) -> Result<bool, ()> {
        let entry = match self.sessions.get_mut(&session.id) {
            Some(e) if Arc::ptr_eq(&e.session, session) => e,
            _ => return Err(()),
        };
        entry.slots[index(role)] = Slot::Live;
        let paired = matches!(entry.slots[index(other(role))], Slot::Live);
        let mut inner = session.inner();
        inner.alive += 1;
        if paired {
            inner.started = Some(Instant::now());
            self.started += 1;
            session.phase.send_replace(Phase::Paired);
        }
        Ok(paired)
    }

    /// Ends a session that is still waiting for its second side (`NotPaired`); `None` if it
    /// paired meanwhile (the check and the end are one step under the table lock). Otherwise,
    /// whether the table is now empty.
    pub fn give_up(&mut self, session: &Arc<Session>) -> Option<bool> {
        if session.inner().started.is_some() {
            return None;
        }
        Some(self.end(session, EndCause::NotPaired))
    }

    /// Ends a session, unless it already ended (the first cause wins): records the cause, takes
    /// the session out of the table (its ids may be used afresh), and tells its sides. Returns
    /// whether the table is now empty.
    pub fn end(&mut self, session: &Arc<Session>, cause: EndCause) -> bool {
        let mut inner = session.inner();
        if inner.cause.is_none() {
            inner.cause = Some(cause);
            if inner.started.is_some() {
                self.started -= 1;
            }
            if let Some(e) = self.sessions.get(&session.id) {
                if Arc::ptr_eq(&e.session, session) {
                    self.sessions.remove(&session.id);
                }
            }
            session.phase.send_replace(Phase::Ended);
        }
        self.sessions.is_empty()
    }
}

/// The nonces of credentials already admitted, each kept until its grant expires (after that,
/// [`thingport_protocol::tunnel::verify`] refuses the credential anyway).
#[derive(Default)]
struct Nonces {
    until: HashMap<Box<str>, i64>,
    /// Prune expired entries when the map reaches this size (doubling keeps it amortised O(1)).
    prune_at: usize,
}

impl Nonces {
    fn consume(&mut self, nonce: &str, exp_ms: i64, now_ms: i64) -> Result<(), ReserveError> {
        if self.until.len() >= self.prune_at {
            self.until.retain(|_, exp| *exp > now_ms);
            self.prune_at = (self.until.len() * 2).max(1024);
        }
        match self.until.get(nonce) {
            Some(exp) if *exp > now_ms => Err(ReserveError::Replayed),
            _ if self.until.len() >= MAX_NONCES => Err(ReserveError::TooManyNonces),
            _ => {
                self.until.insert(nonce.into(), exp_ms);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_until_expiry_and_pruned() {
        let mut n = Nonces::default();
        assert_eq!(n.consume("a", 2_000, 1_000), Ok(()));
        assert_eq!(n.consume("a", 2_000, 1_500), Err(ReserveError::Replayed));
        // Expired entries no longer count (verify refuses such credentials anyway) ...
        assert_eq!(n.consume("a", 9_000, 2_000), Ok(()));
        // ... and are pruned once the map grows.
        for i in 0..1_023 {
            n.consume(&format!("n{i}"), 3_000, 2_500).unwrap();
        }
        n.consume("late", 10_000, 5_000).unwrap();
        assert!(n.until.len() <= 2, "{} left", n.until.len());
    }

    const L: Limits = Limits {
        queue: 8,
        max_sessions: usize::MAX,
    };

    #[test]
    fn sessions_beyond_the_limit_are_refused_but_their_second_side_is_not() {
        let mut t = Table::default();
        let one = Limits {
            queue: 8,
            max_sessions: 1,
        };
        let (s, _ends) = t.reserve("a", Role::Client, "1", 9, 0, one).unwrap();
        assert_eq!(
            t.reserve("b", Role::Client, "2", 9, 0, one).err(),
            Some(ReserveError::Full)
        );
        // The refused credential's nonce was not used up.
        assert!(t.reserve("a", Role::Agent, "2", 9, 0, one).is_ok());
        assert_eq!(t.attach(&s, Role::Client), Ok(false));
        s.live[0].store(7, Ordering::Relaxed);
        let live = t.live(10);
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].bytes_up, live[0].paired), (7, false));
        assert!(t.find("a").is_some() && t.find("b").is_none());
        assert!(t.live(0).is_empty());
    }

    #[test]
    fn roles_are_reserved_once_and_sessions_pair_and_end() {
        let mut t = Table::default();
        let (s, ends) = t.reserve("s", Role::Client, "1", 9, 0, L).unwrap();
        assert_eq!(
            t.reserve("s", Role::Client, "2", 9, 0, L).err(),
            Some(ReserveError::RoleTaken)
        );
        // A failed upgrade gives the role back; the session goes with its last reservation.
        assert!(t.release(&s, Role::Client, ends));
        let (s, _ends) = t.reserve("s", Role::Client, "3", 9, 0, L).unwrap();
        assert_eq!(t.attach(&s, Role::Client), Ok(false));
        let (s2, _agent) = t.reserve("s", Role::Agent, "4", 9, 0, L).unwrap();
        assert!(Arc::ptr_eq(&s, &s2));
        assert_eq!(t.attach(&s, Role::Agent), Ok(true));
        assert_eq!((t.started(), t.waiting()), (1, 0));
        assert_eq!(*s.phase.borrow(), Phase::Paired);
        assert!(t.end(&s, EndCause::Closed(Role::Agent)));
        assert!(t.end(&s, EndCause::Shutdown));
        assert_eq!(s.cause(), Some(EndCause::Closed(Role::Agent)));
        assert_eq!(t.started(), 0);
        assert_eq!(s.side_done(Role::Client, 10), None);
        let ended = s.side_done(Role::Agent, 20).unwrap();
        assert!(matches!(
            ended.kind,
            EventKind::Ended {
                bytes_up: 10,
                bytes_down: 20,
                ..
            }
        ));
        t.closing = true;
        assert_eq!(
            t.reserve("x", Role::Client, "5", 9, 0, L).err(),
            Some(ReserveError::Closing)
        );
    }
}
