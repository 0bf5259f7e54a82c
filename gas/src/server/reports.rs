//! Session reports: the relay's [`SessionEvent`]s, turned into [`SessionReport`]s and sent to the
//! platform in batches of at most [`MAX_REPORTS`] as soon as any is there.
//!
//! Two tasks, so that the relay never waits for the platform: the collector moves events from the
//! relay's broadcast into a bounded queue (the oldest reports are dropped, with a warning, when
//! the platform has been away for long), and the sender empties the queue into the platform,
//! retrying with backoff. The queue's lock is a `std` mutex, never held across an await.

use super::backoff::Backoff;
use super::platform::{chain, CallError, Platform};
use super::registration::Shared;
use crate::{role_name, EndCause, EventKind, SessionEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thingport_protocol::gas::{end_causes, SessionReport, SessionReports, MAX_REPORTS};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch, Notify};
use tracing::{debug, info, warn};

/// The report of a relay event.
pub fn report(event: &SessionEvent) -> SessionReport {
    let session = event.session.to_string();
    match &event.kind {
        EventKind::SideAttached(role) => SessionReport::Attached {
            session,
            role: role_name(*role).into(),
        },
        EventKind::Started => SessionReport::Started { session },
        EventKind::Ended {
            cause,
            bytes_up,
            bytes_down,
            duration_ms,
        } => {
            let (code, detail) = match cause {
                EndCause::Closed(_) => (end_causes::CLOSED, String::new()),
                EndCause::Lost(_) => (end_causes::LOST, String::new()),
                EndCause::Silent(_) => (end_causes::LOST, cause.to_string()),
                EndCause::Protocol(_, why) => (end_causes::PROTOCOL, why.clone()),
                EndCause::NotPaired => (end_causes::NOT_PAIRED, String::new()),
                EndCause::Shutdown => (end_causes::SHUTDOWN, String::new()),
                EndCause::EndedByPlatform => (end_causes::ENDED_BY_PLATFORM, String::new()),
                EndCause::Console(code, detail) => (*code, detail.clone()),
            };
            SessionReport::Ended {
                session,
                cause: code.into(),
                role: cause.role().map(|r| role_name(r).to_string()),
                detail,
                bytes_up: *bytes_up,
                bytes_down: *bytes_down,
                duration_ms: *duration_ms,
            }
        }
    }
}

/// The reports not yet delivered, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct Queue {
    reports: Mutex<VecDeque<SessionReport>>,
    capacity: usize,
    /// Notified when a report is added or the collector is done.
    changed: Notify,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            reports: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SessionReport>> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a report at the end; returns how many old ones were dropped to make room.
    pub fn push(&self, report: SessionReport) -> usize {
        let dropped = {
            let mut q = self.lock();
            q.push_back(report);
            let over = q.len().saturating_sub(self.capacity);
            q.drain(..over);
            over
        };
        self.changed.notify_one();
        dropped
    }

    /// Takes up to `max` of the oldest reports.
    pub fn take(&self, max: usize) -> Vec<SessionReport> {
        let mut q = self.lock();
        let n = q.len().min(max);
        q.drain(..n).collect()
    }

    /// Puts back a batch that could not be delivered, in front (the oldest still go first when
    /// the queue is over capacity).
    pub fn put_back(&self, batch: Vec<SessionReport>) -> usize {
        let mut q = self.lock();
        for r in batch.into_iter().rev() {
            q.push_front(r);
        }
        let over = q.len().saturating_sub(self.capacity);
        q.drain(..over);
        over
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Moves relay events into `queue` until `finish` turns true, then takes what is left in the
/// broadcast and returns. A lag (events lost in the broadcast) is logged, not fatal.
pub async fn collect(
    mut events: broadcast::Receiver<SessionEvent>,
    queue: Arc<Queue>,
    mut finish: watch::Receiver<bool>,
) {
    let mut dropped_total = 0u64;
    let mut note = |dropped: usize| {
        if dropped > 0 {
            dropped_total += dropped as u64;
            warn!(
                dropped,
                dropped_total, "the platform is not taking session reports: dropped the oldest"
            );
        }
    };
    loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Ok(e) => note(queue.push(report(&e))),
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "session events were lost: the reporter fell behind the relay");
                }
                Err(RecvError::Closed) => break,
            },
            _ = finish.wait_for(|f| *f) => break,
        }
    }
    // The relay is done: every event it will send is in the broadcast already.
    loop {
        match events.try_recv() {
            Ok(e) => note(queue.push(report(&e))),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                warn!(
                    missed,
                    "session events were lost: the reporter fell behind the relay"
                );
            }
            Err(_) => break,
        }
    }
    queue.changed.notify_one();
}

/// What the sender needs.
pub struct Sender {
    pub platform: Platform,
    pub name: String,
    pub queue: Arc<Queue>,
    /// The registration (reports wait for one; a 404 forgets it).
    pub shared: Arc<Shared>,
    /// Turns true when the collector returned: send what is left, then return.
    pub collector_done: watch::Receiver<bool>,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Sender {
    /// Sends the queue's reports until the collector is done and the queue is empty.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(self.min_backoff, self.max_backoff);
        let mut registration = self.shared.registered.subscribe();
        loop {
            // Wait for reports (or the end).
            loop {
                if !self.queue.is_empty() {
                    break;
                }
                if *self.collector_done.borrow() {
                    return;
                }
                tokio::select! {
                    () = self.queue.changed.notified() => {}
                    _ = self.collector_done.changed() => {}
                }
            }
            let current = match registration.wait_for(Option::is_some).await {
                Ok(r) => r.clone(),
                Err(_) => return,
            };
            let Some(registered) = current else {
                continue;
            };
            let batch = self.queue.take(MAX_REPORTS);
            let n = batch.len();
            let params = SessionReports {
                name: self.name.clone(),
                registration: registered.id.clone(),
                events: batch,
            };
            match self.platform.report(&params).await {
                Ok(()) => {
                    debug!(reports = n, "session reports delivered");
                    backoff.reset();
                }
                Err(error) => {
                    let dropped = self.queue.put_back(params.events);
                    if dropped > 0 {
                        warn!(
                            dropped,
                            "dropped the oldest session reports: the queue is full"
                        );
                    }
                    if let CallError::UnknownRegistration(_) = error {
                        info!("the platform forgot this GAS's registration; registering again");
                        self.shared.lost(&registered);
                        continue;
                    }
                    let delay = backoff.next_delay();
                    warn!(
                        error = %chain(&error),
                        queued = self.queue.len(),
                        retry_in = ?delay,
                        "failed to report session events"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        // At the end, retry at once (the flush is bounded by its own deadline).
                        _ = self.collector_done.wait_for(|d| *d) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn ended(cause: EndCause) -> SessionReport {
        report(&SessionEvent {
            session: "s".into(),
            kind: EventKind::Ended {
                cause,
                bytes_up: 1,
                bytes_down: 2,
                duration_ms: 3,
            },
        })
    }

    #[test]
    fn causes_map_to_the_protocol() {
        let cases = [
            (EndCause::Closed(Role::Client), "CLOSED", Some("client")),
            (EndCause::Lost(Role::Agent), "LOST", Some("agent")),
            (EndCause::Silent(Role::Agent), "LOST", Some("agent")),
            (
                EndCause::Protocol(Role::Client, "bad".into()),
                "PROTOCOL",
                Some("client"),
            ),
            (EndCause::NotPaired, "NOT_PAIRED", None),
            (EndCause::Shutdown, "SHUTDOWN", None),
            (EndCause::EndedByPlatform, "ENDED_BY_PLATFORM", None),
        ];
        for (cause, code, who) in cases {
            match ended(cause.clone()) {
                SessionReport::Ended {
                    cause: c,
                    role,
                    bytes_up: 1,
                    bytes_down: 2,
                    duration_ms: 3,
                    ..
                } => {
                    assert_eq!(c, code, "{cause:?}");
                    assert_eq!(role.as_deref(), who, "{cause:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        match ended(EndCause::Protocol(Role::Client, "bad".into())) {
            SessionReport::Ended { detail, .. } => assert_eq!(detail, "bad"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_queue_is_bounded_and_keeps_order() {
        let q = Queue::new(3);
        let started = |s: &str| SessionReport::Started { session: s.into() };
        for s in ["a", "b", "c"] {
            assert_eq!(q.push(started(s)), 0);
        }
        assert_eq!(q.push(started("d")), 1);
        let batch = q.take(2);
        assert_eq!(batch, [started("b"), started("c")]);
        q.push(started("e"));
        q.push(started("f"));
        // Put back in front; over capacity, the oldest go (here the batch itself).
        assert_eq!(q.put_back(batch), 2);
        assert_eq!(q.take(10), [started("d"), started("e"), started("f")]);
        q.put_back(vec![started("x")]);
        assert_eq!(q.take(1), [started("x")]);
        assert!(q.is_empty());
    }
}
