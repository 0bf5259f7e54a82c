//! The load generator: a pool of keep-alive connections, each a task that sends one request at a
//! time until the phase ends (by count or by time, and always within a hard time cap), timing each
//! request and checking that it was answered `200`.

use crate::http::{snippet, Body, Conn};
use anyhow::{bail, Result};
use hyper::{Request, StatusCode};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds the next request (called once per request; may give each one a unique name).
pub type MakeRequest = Arc<dyn Fn() -> Request<Body> + Send + Sync>;

/// Failures after which a connection task gives up (the run is failed anyway).
const MAX_ERRORS_PER_CONN: u64 = 100;
/// Error answers kept verbatim for the report.
const MAX_ERROR_SAMPLES: usize = 5;
/// Upper bound on the requests of one phase, whatever its stop rule.
const MAX_REQUESTS_PER_PHASE: u64 = 20_000_000;

/// When a phase ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many requests in total over all connections.
    Count(u64),
    /// When this much time has passed (requests in flight complete).
    For(Duration),
}

/// Figures of one measured phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunStats {
    pub connections: usize,
    /// Requests answered `200`.
    pub ok: u64,
    /// Requests answered otherwise, or not answered.
    pub errors: u64,
    pub elapsed_s: f64,
    /// `ok / elapsed_s`.
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// The phase hit its hard time cap before its stop rule.
    pub capped: bool,
    pub error_samples: Vec<String>,
}

/// Connections to one server, reused across phases.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    conns: Vec<Option<Conn>>,
}

struct TaskResult {
    conn: Option<Conn>,
    latencies_ns: Vec<u64>,
    errors: u64,
    samples: Vec<String>,
    capped: bool,
}

impl Pool {
    /// Opens `n` connections (not timed).
    pub async fn connect(addr: SocketAddr, n: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(Some(Conn::connect(addr).await?));
        }
        Ok(Self { addr, conns })
    }

    /// Runs one phase on every connection at once; `cap` bounds it in time whatever `stop` says.
    pub async fn phase(
        &mut self,
        make: &MakeRequest,
        stop: Stop,
        cap: Duration,
    ) -> Result<RunStats> {
        let started = Instant::now();
        let hard_deadline = started + cap;
        let deadline = match stop {
            Stop::For(d) => started + d.min(cap),
            Stop::Count(_) => hard_deadline,
        };
        let budget = match stop {
            Stop::Count(n) => n.min(MAX_REQUESTS_PER_PHASE),
            Stop::For(_) => MAX_REQUESTS_PER_PHASE,
        };
        let issued = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::with_capacity(self.conns.len());
        for slot in self.conns.iter_mut() {
            let conn = slot.take();
            let make = make.clone();
            let issued = issued.clone();
            let addr = self.addr;
            handles.push(tokio::spawn(async move {
                drive(conn, addr, make, issued, budget, deadline, hard_deadline).await
            }));
        }
        let mut latencies = Vec::new();
        let mut stats = RunStats {
            connections: self.conns.len(),
            ..RunStats::default()
        };
        for (slot, h) in self.conns.iter_mut().zip(handles) {
            let r = match h.await {
                Ok(r) => r,
                Err(e) => bail!("a load task failed: {e}"),
            };
            *slot = r.conn;
            latencies.extend(r.latencies_ns);
            stats.errors += r.errors;
            stats.capped |= r.capped;
            for s in r.samples {
                if stats.error_samples.len() < MAX_ERROR_SAMPLES {
                    stats.error_samples.push(s);
                }
            }
        }
        stats.elapsed_s = started.elapsed().as_secs_f64();
        stats.ok = latencies.len() as u64;
        stats.per_second = stats.ok as f64 / stats.elapsed_s.max(1e-9);
        if !latencies.is_empty() {
            latencies.sort_unstable();
            let us = |ns: u64| ns as f64 / 1000.0;
            stats.p50_us = us(percentile(&latencies, 0.50));
            stats.p99_us = us(percentile(&latencies, 0.99));
            stats.max_us = us(*latencies.last().unwrap_or(&0));
            stats.mean_us = us(latencies.iter().sum::<u64>() / latencies.len() as u64);
        }
        Ok(stats)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn note(r: &mut TaskResult, msg: String) {
    r.errors += 1;
    if r.samples.len() < MAX_ERROR_SAMPLES {
        r.samples.push(msg);
    }
}

/// One connection's loop: one request in flight, until the budget or the deadline is used up.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut conn: Option<Conn>,
    addr: SocketAddr,
    make: MakeRequest,
    issued: Arc<AtomicU64>,
    budget: u64,
    deadline: Instant,
    hard_deadline: Instant,
) -> TaskResult {
    let mut r = TaskResult {
        conn: None,
        latencies_ns: Vec::with_capacity(4096),
        errors: 0,
        samples: Vec::new(),
        capped: false,
    };
    while r.errors < MAX_ERRORS_PER_CONN {
        let now = Instant::now();
        if now >= deadline {
            r.capped = now >= hard_deadline && issued.load(Ordering::Relaxed) < budget;
            break;
        }
        if issued.fetch_add(1, Ordering::Relaxed) >= budget {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    note(&mut r, format!("reconnect failed: {e:#}"));
                    break;
                }
            },
        };
        let req = make();
        let t0 = Instant::now();
        let answer = c.send(req).await;
        let dt = t0.elapsed();
        match answer {
            Ok((StatusCode::OK, _)) => r.latencies_ns.push(dt.as_nanos() as u64),
            Ok((status, body)) => note(&mut r, format!("{status}: {}", snippet(&body))),
            Err(e) => {
                note(&mut r, format!("{e:#}"));
                conn = None;
            }
        }
    }
    r.conn = conn;
    r
}
