//! The live sessions of the agent: session id → a handle to stop it, and the cap on how many run
//! at once. A slot is taken when an order is accepted for checking ([`Registry::reserve`]) and
//! given back when its [`Ticket`] drops, however the session ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Why a slot could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveError {
    /// The agent already runs `max` sessions.
    TooMany { max: usize },
    /// A session with this id is already live on this agent.
    Duplicate,
}

/// The registry of live sessions; clones share it.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    live: Mutex<HashMap<String, Live>>,
    /// How many sessions are live, for [`Registry::wait_empty`].
    count: watch::Sender<usize>,
}

struct Live {
    /// Distinguishes this entry from a later one with the same id.
    generation: u64,
    /// Taken when the session is told to stop (a second stop is a no-op).
    stop: Option<oneshot::Sender<String>>,
}

/// The slot of one session; dropping it removes the session from the registry.
pub struct Ticket {
    registry: Registry,
    id: String,
    generation: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        if live.get(&self.id).map(|l| l.generation) == Some(self.generation) {
            live.remove(&self.id);
        }
        let n = live.len();
        drop(live);
        self.registry.inner.count.send_replace(n);
    }
}

impl Registry {
    /// A registry that holds at most `max` sessions.
    pub fn new(max: usize) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                max,
                live: Mutex::new(HashMap::new()),
                count: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for session `id`. The receiver yields the reason when the session is told to
    /// stop ([`Registry::stop`]).
    pub fn reserve(&self, id: &str) -> Result<(Ticket, oneshot::Receiver<String>), ReserveError> {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut live = self.lock();
        if live.contains_key(id) {
            return Err(ReserveError::Duplicate);
        }
        if live.len() >= self.inner.max {
            return Err(ReserveError::TooMany {
                max: self.inner.max,
            });
        }
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        live.insert(
            id.to_string(),
            Live {
                generation,
                stop: Some(tx),
            },
        );
        let n = live.len();
        drop(live);
        self.inner.count.send_replace(n);
        let ticket = Ticket {
            registry: self.clone(),
            id: id.to_string(),
            generation,
        };
        Ok((ticket, rx))
    }

    /// Tells session `id` to stop with `reason`. `false` when no such session is live (or it was
    /// already told).
    pub fn stop(&self, id: &str, reason: &str) -> bool {
        let stop = self.lock().get_mut(id).and_then(|l| l.stop.take());
        match stop {
            // A session whose task already ended has dropped its receiver: nothing to stop.
            Some(tx) => tx.send(reason.to_string()).is_ok(),
            None => false,
        }
    }

    /// Tells every live session to stop with `reason`; returns how many were told.
    pub fn stop_all(&self, reason: &str) -> usize {
        let senders: Vec<_> = self
            .lock()
            .values_mut()
            .filter_map(|l| l.stop.take())
            .collect();
        senders
            .into_iter()
            .filter(|tx| !tx.is_closed())
            .map(|tx| tx.send(reason.to_string()).is_ok())
            .filter(|sent| *sent)
            .count()
    }

    /// Sessions live now (including those still being checked or attaching).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no session is live, at most `timeout`; `true` if none is.
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_capped_unique_and_given_back() {
        let r = Registry::new(2);
        let (a, mut a_stop) = r.reserve("a").unwrap();
        assert_eq!(r.reserve("a").err(), Some(ReserveError::Duplicate));
        let (b, _b_stop) = r.reserve("b").unwrap();
        assert_eq!(r.reserve("c").err(), Some(ReserveError::TooMany { max: 2 }));
        assert!(r.stop("a", "ended by the platform"));
        assert!(!r.stop("a", "again"), "a second stop is a no-op");
        assert!(!r.stop("zzz", "unknown"));
        assert_eq!(a_stop.try_recv().unwrap(), "ended by the platform");
        drop(a);
        assert_eq!(r.len(), 1);
        let (_c, _c_stop) = r.reserve("c").unwrap();
        drop(b);
        assert!(!r.wait_empty(Duration::from_millis(10)).await);
        assert_eq!(r.stop_all("agent shutting down"), 1);
    }

    #[tokio::test]
    async fn an_id_is_reusable_once_its_session_ended() {
        let r = Registry::new(4);
        let (old, _) = r.reserve("s").unwrap();
        assert!(r.reserve("s").is_err());
        drop(old);
        let (_new, _) = r.reserve("s").unwrap();
        assert_eq!(r.len(), 1);
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.wait_empty(Duration::from_secs(10)).await })
        };
        drop(_new);
        assert!(waiter.await.unwrap());
        assert!(r.is_empty());
    }
}
