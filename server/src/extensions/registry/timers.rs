//! Host-owned timers of extension instances: they belong to one library load.

use super::*;

/// Live timers: (library load, timer name) → (package, task id, task).
pub(super) type TimerMap =
    std::collections::HashMap<(u64, String), (String, u64, tokio::task::AbortHandle)>;

/// Identifies timer tasks, so a finishing one-shot removes only its own entry.
static NEXT_TIMER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a timer's firing goes.
enum TimerTarget {
    Ready(Arc<Instance>),
    /// Not published yet: hold the firing.
    Wait,
    /// Refused, replaced, deleted or disabled: the timer ends.
    Gone,
}

/// Most timers one extension may have at once.
const MAX_TIMERS: usize = 1_000;
/// Shortest timer period.
const MIN_PERIOD_MS: u64 = 10;
/// Longest timer delay or period (30 days).
const MAX_DELAY_MS: u64 = 30 * 24 * 3600 * 1000;

impl Extensions {
    /// Schedules (or replaces) a timer of one library load: `Request::Timer` after `delay_ms`,
    /// then every `period_ms`. Timers belong to that load's instance: they wait while it is not
    /// published yet, and end when it is refused, replaced by an upgrade, deleted or disabled.
    pub fn schedule_timer(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        package: &str,
        load: u64,
        name: &str,
        delay_ms: u64,
        period_ms: Option<u64>,
    ) -> Result<(), ErrorBody> {
        let bad = |m: String| ErrorBody {
            error: m,
            kind: ErrorKind::BadRequest,
        };
        if name.is_empty() || name.len() > 128 {
            return Err(bad("a timer name must be 1 to 128 bytes".into()));
        }
        if delay_ms > MAX_DELAY_MS
            || period_ms.is_some_and(|p| !(MIN_PERIOD_MS..=MAX_DELAY_MS).contains(&p))
        {
            return Err(bad(format!("timer '{name}': delay must be at most {MAX_DELAY_MS} ms and a period {MIN_PERIOD_MS}..{MAX_DELAY_MS} ms")));
        }
        if matches!(self.timer_target(load), TimerTarget::Gone) {
            return Err(ErrorBody {
                error: format!("extension {package} is no longer running"),
                kind: ErrorKind::Unavailable,
            });
        }
        let key = (load, name.to_string());
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        if !timers.contains_key(&key)
            && timers.keys().filter(|(l, _)| *l == load).count() >= MAX_TIMERS
        {
            return Err(ErrorBody {
                error: format!("extension {package} has {MAX_TIMERS} timers already"),
                kind: ErrorKind::Unavailable,
            });
        }
        let me = Arc::downgrade(self);
        let id = NEXT_TIMER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (pkg, timer) = (package.to_string(), name.to_string());
        let task = runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            loop {
                let Some(ext) = me.upgrade() else { return };
                match ext.timer_target(load) {
                    TimerTarget::Gone => break,
                    TimerTarget::Wait => {
                        drop(ext);
                        tokio::time::sleep(Duration::from_millis(MIN_PERIOD_MS)).await;
                        continue;
                    }
                    TimerTarget::Ready(instance) => {
                        let request = Request::Timer { name: timer.clone() };
                        if let Err(e) = instance.call(request, ext.deadline).await {
                            tracing::warn!(extension = %pkg, timer = %timer, error = %e, "extension timer callback failed");
                        }
                    }
                }
                drop(ext);
                match period_ms {
                    Some(p) => tokio::time::sleep(Duration::from_millis(p)).await,
                    None => break,
                }
            }
            if let Some(ext) = me.upgrade() {
                let mut timers = ext.timers.lock().unwrap_or_else(|p| p.into_inner());
                if timers.get(&(load, timer.clone())).is_some_and(|(_, t, _)| *t == id) {
                    timers.remove(&(load, timer));
                }
            }
        });
        if let Some((_, _, old)) =
            timers.insert(key, (package.to_string(), id, task.abort_handle()))
        {
            old.abort();
        }
        Ok(())
    }

    fn timer_target(&self, load: u64) -> TimerTarget {
        let installed = self.installed.read().unwrap_or_else(|p| p.into_inner());
        let published = installed
            .values()
            .filter_map(|i| i.runtime.as_ref().ok())
            .find(|rt| rt.instance.load_id() == load)
            .map(|rt| rt.instance.clone());
        drop(installed);
        match published {
            Some(i) if i.poisoned().is_none() => TimerTarget::Ready(i),
            Some(_) => TimerTarget::Gone,
            None if self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&load) =>
            {
                TimerTarget::Wait
            }
            None => TimerTarget::Gone,
        }
    }

    /// Cancels a timer of one library load, if it exists.
    pub fn cancel_timer(&self, load: u64, name: &str) {
        if let Some((_, _, t)) = self
            .timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(load, name.to_string()))
        {
            t.abort();
        }
    }

    /// Ends every timer of a library load.
    pub(super) fn cancel_timers_of(&self, load: u64) {
        self.timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _), (_, _, t)| {
                if *l == load {
                    t.abort();
                }
                *l != load
            });
    }

    /// A load that will not be published (refused, failed): forget it and end its timers.
    pub(super) fn abandon(&self, load: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&load);
        self.cancel_timers_of(load);
    }

    /// A load that is now published: its timers may fire.
    pub(super) fn published(&self, load: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&load);
    }
}
