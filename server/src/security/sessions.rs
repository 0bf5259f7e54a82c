//! Browser sessions: the web console's sign-in and `POST /Thingworx/Login`.
//!
//! A session id is 256 random bits shown once to the browser (in an `HttpOnly` cookie); the store
//! keeps only its SHA-256, so a memory dump does not hand out live sessions. A session expires when
//! it has not been used for [`SessionLimits::idle`] or when it is older than
//! [`SessionLimits::absolute`], whichever comes first. The store is bounded: beyond
//! [`SessionLimits::max_sessions`] the least recently used session is closed. A session carries no
//! rights of its own: callers re-resolve the user on every request. Each session also keeps a tag
//! of the credential it was opened with (see `Platform::session_user`): a password change, or a
//! user deleted and created again under the same name, ends the sessions opened before.

use super::secrets;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long sessions live and how many are kept.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Closed after this long without a request.
    pub idle: Duration,
    /// Closed this long after sign-in, however busy.
    pub absolute: Duration,
    /// The most sessions kept; the least recently used goes first.
    pub max_sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(8 * 3600),
            max_sessions: 10_000,
        }
    }
}

#[derive(Debug)]
struct Entry {
    user: String,
    /// What the caller bound the session to (a digest of the user's password hash).
    tag: String,
    created: Instant,
    last_used: Instant,
}

/// The live browser sessions (see the module documentation).
#[derive(Debug)]
pub struct Sessions {
    limits: SessionLimits,
    by_digest: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Sessions {
            limits,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_used) < self.limits.idle
            && now.saturating_duration_since(e.created) < self.limits.absolute
    }

    /// Opens a session for `user`, bound to `tag`, and returns its id (the only time it exists
    /// in clear).
    pub fn open(&self, user: &str, tag: &str) -> String {
        self.open_at(user, tag, Instant::now())
    }

    fn open_at(&self, user: &str, tag: &str, now: Instant) -> String {
        let id = secrets::random_token();
        let mut s = self.lock();
        if s.len() >= self.limits.max_sessions {
            s.retain(|_, e| self.live(e, now));
        }
        while s.len() >= self.limits.max_sessions.max(1) {
            let oldest = s
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => s.remove(&k),
                None => break,
            };
        }
        s.insert(
            secrets::sha256_hex(id.as_bytes()),
            Entry {
                user: user.to_string(),
                tag: tag.to_string(),
                created: now,
                last_used: now,
            },
        );
        id
    }

    /// The user and tag of a live session; `None` (and the session closed) when it expired or
    /// never existed. `touch` marks it used (a request of the user's); a page's own periodic
    /// refresh passes false, so an unattended console still reaches its idle expiry.
    pub fn user(&self, id: &str, touch: bool) -> Option<(String, String)> {
        self.user_at(id, touch, Instant::now())
    }

    fn user_at(&self, id: &str, touch: bool, now: Instant) -> Option<(String, String)> {
        if id.is_empty() || id.len() > 128 {
            return None;
        }
        let digest = secrets::sha256_hex(id.as_bytes());
        let mut s = self.lock();
        let live = s.get(&digest).map(|e| self.live(e, now))?;
        if !live {
            s.remove(&digest);
            return None;
        }
        let e = s.get_mut(&digest)?;
        if touch {
            e.last_used = now;
        }
        Some((e.user.clone(), e.tag.clone()))
    }

    /// Closes a session (sign-out, or a new sign-in presenting it).
    pub fn close(&self, id: &str) {
        self.lock().remove(&secrets::sha256_hex(id.as_bytes()));
    }

    /// Closes every session of `user` (the user was deleted or disabled, or its password changed).
    pub fn close_user(&self, user: &str) {
        self.lock().retain(|_, e| e.user != user);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> SessionLimits {
        SessionLimits {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(600),
            max_sessions: max,
        }
    }

    #[test]
    fn a_session_names_its_user_until_closed() {
        let s = Sessions::new(limits(10));
        let id = s.open("alice", "t");
        assert_eq!(id.len(), 64, "256 random bits, hex");
        assert_eq!(s.user(&id, true).map(|u| u.0).as_deref(), Some("alice"));
        s.close(&id);
        assert_eq!(s.user(&id, true), None);
    }

    #[test]
    fn each_sign_in_gets_a_fresh_id_and_only_digests_are_kept() {
        let s = Sessions::new(limits(10));
        let a = s.open("alice", "t");
        let b = s.open("alice", "t");
        assert_ne!(a, b);
        let map = s.lock();
        assert!(!map.contains_key(&a), "the clear id is never stored");
        assert!(map.contains_key(&secrets::sha256_hex(a.as_bytes())));
    }

    #[test]
    fn unknown_forged_and_oversized_ids_are_refused() {
        let s = Sessions::new(limits(10));
        s.open("alice", "t");
        assert_eq!(s.user("", true), None);
        assert_eq!(s.user(&"0".repeat(64), true), None);
        assert_eq!(s.user(&"a".repeat(10_000), true), None);
    }

    #[test]
    fn idle_expiry_is_pushed_back_by_use() {
        let s = Sessions::new(limits(10));
        let t0 = Instant::now();
        let id = s.open_at("alice", "t", t0);
        assert!(s.user_at(&id, true, t0 + Duration::from_secs(50)).is_some());
        // 100 s after sign-in but 50 s after the last use: still live.
        assert!(s
            .user_at(&id, true, t0 + Duration::from_secs(100))
            .is_some());
        // 61 s idle: expired, and removed.
        assert_eq!(s.user_at(&id, true, t0 + Duration::from_secs(161)), None);
        assert!(s.is_empty());
    }

    #[test]
    fn absolute_expiry_holds_however_busy() {
        let s = Sessions::new(limits(10));
        let t0 = Instant::now();
        let id = s.open_at("alice", "t", t0);
        let mut t = t0;
        while t + Duration::from_secs(30) < t0 + Duration::from_secs(600) {
            t += Duration::from_secs(30);
            assert!(s.user_at(&id, true, t).is_some(), "used every 30 s");
        }
        assert_eq!(s.user_at(&id, true, t0 + Duration::from_secs(600)), None);
    }

    #[test]
    fn the_least_recently_used_goes_first_when_full() {
        let s = Sessions::new(limits(3));
        let t0 = Instant::now();
        let a = s.open_at("a", "t", t0);
        let b = s.open_at("b", "t", t0 + Duration::from_secs(1));
        let c = s.open_at("c", "t", t0 + Duration::from_secs(2));
        assert!(s.user_at(&a, true, t0 + Duration::from_secs(3)).is_some());
        let d = s.open_at("d", "t", t0 + Duration::from_secs(4));
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.user_at(&b, true, t0 + Duration::from_secs(5)),
            None,
            "b was idlest"
        );
        for id in [&a, &c, &d] {
            assert!(s.user_at(id, true, t0 + Duration::from_secs(5)).is_some());
        }
    }

    #[test]
    fn refreshes_do_not_postpone_the_idle_expiry() {
        let s = Sessions::new(limits(10));
        let t0 = Instant::now();
        let id = s.open_at("alice", "t", t0);
        for i in 1..=5 {
            let at = t0 + Duration::from_secs(10 * i);
            assert!(s.user_at(&id, false, at).is_some(), "a refresh at {i}0 s");
        }
        assert_eq!(s.user_at(&id, false, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn the_tag_is_answered_for_the_caller_to_check() {
        let s = Sessions::new(limits(10));
        let id = s.open("alice", "hash-1");
        assert_eq!(s.user(&id, true), Some(("alice".into(), "hash-1".into())));
    }

    #[test]
    fn closing_a_user_closes_all_its_sessions() {
        let s = Sessions::new(limits(10));
        let a1 = s.open("alice", "t");
        let a2 = s.open("alice", "t");
        let b = s.open("bob", "t");
        s.close_user("alice");
        assert_eq!(s.user(&a1, true), None);
        assert_eq!(s.user(&a2, true), None);
        assert_eq!(s.user(&b, true).map(|u| u.0).as_deref(), Some("bob"));
    }
}
