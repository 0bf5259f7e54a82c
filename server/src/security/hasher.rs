//! A small, dedicated pool for password hashing.
//!
//! One argon2id hash takes ~19 MiB and ~20 ms of a core. Run on arbitrary blocking threads, a
//! flood of failed logins (no credentials needed) grows memory without bound: each thread's
//! allocator arena keeps its 19 MiB. A fixed pool bounds the memory to `threads × 19 MiB` and the
//! CPU to `threads` cores, and a bounded queue turns overload into a quick `503` instead of an
//! ever-growing backlog.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool is saturated or stopped; the caller should answer "busy, retry".
#[derive(Debug, thiserror::Error)]
#[error("too many password checks in progress: retry in a moment")]
pub struct Busy;

#[derive(Debug)]
pub struct Hasher {
    tx: SyncSender<Job>,
}

impl Hasher {
    /// Starts `threads` hashing threads with room for `queue` waiting jobs.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Hasher> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("thingport-argon2-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, not while running it.
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job();
                })?;
        }
        Ok(Hasher { tx })
    }

    /// A pool sized for this machine: one thread per core, at most 4.
    pub fn for_this_machine() -> std::io::Result<Hasher> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Hasher::new(cores.min(4), 64)
    }

    /// Runs `f` on the pool and waits for its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Busy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.tx.try_send(job) {
            Ok(()) => rx.await.map_err(|_| Busy),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let h = Hasher::new(1, 1).unwrap();
        assert_eq!(h.run(|| 2 + 2).await.unwrap(), 4);
        // Block the only thread, fill the one queue slot, then the next job is refused at once.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocked = h.run(move || {
            started_tx.send(()).unwrap();
            release_rx.recv().ok()
        });
        tokio::pin!(blocked);
        assert!(futures_poll_once(&mut blocked).await.is_none());
        started_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let queued = h.run(|| 1);
        tokio::pin!(queued);
        assert!(futures_poll_once(&mut queued).await.is_none());
        assert!(h.run(|| 2).await.is_err());
        release_tx.send(()).unwrap();
        assert!(blocked.await.is_ok());
        assert_eq!(queued.await.unwrap(), 1);
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
