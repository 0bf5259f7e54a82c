//! Waiting on conditions under a deadline, and small helpers for unique values.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `cond` every 50 ms until it returns `true`; panics naming `what` once `timeout` has passed.
///
/// Closures that need a client capture a reference and move it into the future:
/// `let c = &client; wait_until(t, "key expired", || async move { c.get("/x").await.status == 401 })`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Blocking variant of [`wait_until`], for conditions on processes and files.
pub fn wait_until_blocking(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Milliseconds since the Unix epoch, the wire form of DATETIME.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock before 1970");
    i64::try_from(since.as_millis()).expect("time fits i64")
}

/// A value unique to this process and call, usable as a password: `{prefix}-{pid}-{n}-{nanos}-Zq9`.
/// Long and distinctive so that finding it in a log or a response cannot be a coincidence.
pub fn unique_secret(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:09}-Zq9", std::process::id())
}
