//! The extension-call threads: where [`super::Instance::call`] runs extension code.
//!
//! The ABI promises extensions a blocking thread, never an async worker. Handing each call to
//! tokio's `spawn_blocking` costs two cross-thread wake-ups and two sleeps per call (about 15 µs
//! on this project's 2-core machines, most of the call's cost; see docs/benchmarks.md), and a
//! burst of concurrent calls grows that pool to hundreds of threads. These threads instead:
//!
//! - live as long as the process, one per core (at most [`MAX_THREADS`]);
//! - after a call, spin for [`SPIN`] looking for the next one before they sleep, so a call that
//!   follows closely wakes nobody;
//! - take a call only when a thread is free for it: a caller reserves a free thread before it
//!   queues the call, and when none is free (slow extensions, or nested calls from an `invoke`
//!   host call, which wait for the call they made) the call goes to `spawn_blocking` as before,
//!   so a stuck extension never delays the others and a nested call cannot deadlock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a thread looks for the next call before it sleeps.
const SPIN: Duration = Duration::from_micros(50);
/// The most threads, whatever the core count.
const MAX_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    /// Jobs in `queue` (read without the lock while spinning).
    queued: AtomicUsize,
    /// Threads free to take a job, minus the jobs that reserved one.
    free: AtomicUsize,
    /// Threads asleep on `wake`.
    sleeping: AtomicUsize,
    wake: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, MAX_THREADS);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            free: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            wake: Condvar::new(),
        }));
        for i in 0..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("thingport-ext-{i}"))
                .spawn(move || pool.work());
            match spawned {
                Ok(_) => {
                    pool.free.fetch_add(1, Ordering::AcqRel);
                }
                // Calls then all take the `spawn_blocking` path.
                Err(e) => tracing::warn!(error = %e, "could not start an extension-call thread"),
            }
        }
        pool
    })
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work(&self) {
        loop {
            let job = self.spin().unwrap_or_else(|| self.sleep());
            // A panic in a job is caught inside it (see `run`); the thread lives on.
            job();
            self.free.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn take(&self) -> Option<Job> {
        let job = self.lock().pop_front();
        if job.is_some() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        job
    }

    fn spin(&self) -> Option<Job> {
        let until = Instant::now() + SPIN;
        loop {
            if self.queued.load(Ordering::Acquire) > 0 {
                if let Some(job) = self.take() {
                    return Some(job);
                }
            }
            if Instant::now() >= until {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    fn sleep(&self) -> Job {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.pop_front() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                return job;
            }
            self.sleeping.fetch_add(1, Ordering::AcqRel);
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            self.sleeping.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Queues `job` if a thread is free for it, else hands it back.
    fn offer(&self, job: Job) -> Result<(), Job> {
        let reserved = self
            .free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !reserved {
            return Err(job);
        }
        {
            let mut queue = self.lock();
            queue.push_back(job);
            self.queued.fetch_add(1, Ordering::AcqRel);
        }
        if self.sleeping.load(Ordering::Acquire) > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// Runs `f` on an extension-call thread (or, when none is free, on tokio's blocking pool) and
/// answers its result; `Err` only if `f` panicked.
pub(super) async fn run<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.map_err(|p| panic_text(p.as_ref())));
    });
    if let Err(job) = pool().offer(job) {
        // Needs a runtime, which every caller of this async fn has.
        drop(tokio::task::spawn_blocking(job));
    }
    rx.await
        .unwrap_or_else(|_| Err("the call's thread ended without an answer".into()))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn runs_calls_and_reports_panics() {
        assert_eq!(run(|| 40 + 2).await, Ok(42));
        let e = run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(e.contains("boom"), "{e}");
        // The threads survive a panic.
        assert_eq!(run(|| 7).await, Ok(7));
    }

    /// More calls than threads, each waiting for all the others to start: only possible when
    /// the calls beyond the pool's threads go elsewhere (here: nested calls would deadlock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_the_free_threads_do_not_wait_for_them() {
        let n = MAX_THREADS * 3;
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let b = barrier.clone();
                tokio::spawn(run(move || {
                    b.wait();
                    i
                }))
            })
            .collect();
        let deadline = Duration::from_secs(10);
        for (i, c) in calls.into_iter().enumerate() {
            let r = tokio::time::timeout(deadline, c).await.expect("deadlocked");
            assert_eq!(r.unwrap(), Ok(i));
        }
    }
}
