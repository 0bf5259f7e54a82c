//! Where the time goes: CPU time of the server and of this process (from `/proc`), the server's
//! resident memory, and the server's own request-latency histogram (from `/metrics`), sampled
//! before and after each measured phase.

use crate::http::{Conn, Prepared};
use anyhow::{Context, Result};
use serde::Serialize;
use std::net::SocketAddr;

/// Clock ticks per second of `/proc/PID/stat` CPU times (`getconf CLK_TCK`; 100 on Linux).
const CLK_TCK: f64 = 100.0;
/// The server's histogram of request handling time (metric family name, without suffix).
const LATENCY_METRIC: &str = "thingport_http_request_duration_seconds";

/// Memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        vm_rss_kib: field("VmRSS:"),
        vm_hwm_kib: field("VmHWM:"),
    })
}

/// User + system CPU seconds of process `pid` (all threads), or of this process for `None`.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // The command name (field 2) may contain spaces; fields after its closing ')' are plain.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is index 0, so utime (field 14) is index 11 and stime (15) index 12.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / CLK_TCK
}

/// The server's cumulative request-latency histogram.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    pub count: f64,
    pub sum_s: f64,
    /// (upper bound in seconds, cumulative count), ascending.
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    fn parse(text: &str) -> Histogram {
        let mut h = Histogram::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(LATENCY_METRIC) else {
                continue;
            };
            let value = |s: &str| s.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if rest.starts_with("_count") {
                h.count = value(rest).unwrap_or(0.0);
            } else if rest.starts_with("_sum") {
                h.sum_s = value(rest).unwrap_or(0.0);
            } else if let Some(b) = rest.strip_prefix("_bucket{le=\"") {
                let le = b.split('"').next().unwrap_or("");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                if let Some(v) = value(b) {
                    h.buckets.push((le, v));
                }
            }
        }
        h
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Histogram) -> ServerTime {
        let n = self.count - before.count;
        let mut t = ServerTime {
            requests: n as u64,
            mean_us: if n > 0.0 {
                (self.sum_s - before.sum_s) / n * 1e6
            } else {
                0.0
            },
            p50_le_us: None,
            p99_le_us: None,
        };
        let upper = |q: f64| {
            self.buckets
                .iter()
                .zip(
                    before
                        .buckets
                        .iter()
                        .map(|b| b.1)
                        .chain(std::iter::repeat(0.0)),
                )
                .find(|((_, c), b)| n > 0.0 && (c - b) >= q * n)
                .map(|((le, _), _)| *le * 1e6)
                .filter(|v| v.is_finite())
        };
        t.p50_le_us = upper(0.5);
        t.p99_le_us = upper(0.99);
        t
    }
}

/// The server's own measure of a phase: time from request received to answer produced, without
/// HTTP parsing, socket I/O and scheduling delays.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerTime {
    pub requests: u64,
    pub mean_us: f64,
    /// Upper bound of the histogram bucket holding the median (None: beyond the largest bound).
    pub p50_le_us: Option<f64>,
    pub p99_le_us: Option<f64>,
}

/// A snapshot taken before or after a phase.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub server_cpu_s: f64,
    pub bench_cpu_s: f64,
    pub histogram: Histogram,
}

/// Takes snapshots through its own connection to `/metrics`.
#[derive(Debug)]
pub struct Prober {
    pid: u32,
    addr: SocketAddr,
    conn: Option<Conn>,
    metrics: Prepared,
}

impl Prober {
    pub fn new(pid: u32, addr: SocketAddr, metrics: Prepared) -> Self {
        Self {
            pid,
            addr,
            conn: None,
            metrics,
        }
    }

    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        // The server closes a keep-alive connection that stays idle longer than its header read
        // timeout (10 s), which a long phase exceeds: reconnect then, once.
        let mut answer = None;
        for _ in 0..2 {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => self.conn.insert(Conn::connect(self.addr).await?),
            };
            match conn.send(self.metrics.request()).await {
                Ok(a) => {
                    answer = Some(a);
                    break;
                }
                Err(_) => self.conn = None,
            }
        }
        let (status, body) = match answer {
            Some(a) => a,
            None => anyhow::bail!("GET /metrics failed twice"),
        };
        anyhow::ensure!(
            status == hyper::StatusCode::OK,
            "GET /metrics answered {status}"
        );
        Ok(Snapshot {
            server_cpu_s: cpu_seconds(Some(self.pid)),
            bench_cpu_s: cpu_seconds(None),
            histogram: Histogram::parse(&String::from_utf8_lossy(&body)),
        })
    }
}

/// CPU and server time spent per request between two snapshots.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cost {
    pub server_cpu_us_per_request: f64,
    pub bench_cpu_us_per_request: f64,
    pub server_time: ServerTime,
}

pub fn cost(before: &Snapshot, after: &Snapshot, requests: u64) -> Cost {
    let per = |s: f64| {
        if requests > 0 {
            s * 1e6 / requests as f64
        } else {
            0.0
        }
    };
    Cost {
        server_cpu_us_per_request: per(after.server_cpu_s - before.server_cpu_s),
        bench_cpu_us_per_request: per(after.bench_cpu_s - before.bench_cpu_s),
        server_time: after.histogram.since(&before.histogram),
    }
}
