//! `StartSession` calls per second: `--start-rate-connections` operator connections (keep-alive,
//! Basic auth, as `thingport connect` calls it) each call `StartSession {"remoteEndpoint":
//! "echo"}` and then `EndSession` of that session, one pair after the other, until
//! `--start-rate-calls` pairs are done or the phase's time cap passes. Each `StartSession` takes
//! the platform's permission checks, writes the session record and returns once the real agent
//! accepted the order (after reading the device's `endpoints` with its own key). Any call not
//! answered `200` fails the run: a session that cannot be started is something that does not work.

use super::report::{Latency, StartRate};
use super::session::Operator;
use anyhow::{Context, Result};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pairs per connection before the clock starts.
const WARMUP_PAIRS: usize = 2;

/// One `StartSession` + `EndSession`; answers their times.
async fn pair(op: &mut Operator) -> Result<(Duration, Duration)> {
    op.ready().await?;
    let t0 = Instant::now();
    let v = op
        .call("StartSession", json!({"remoteEndpoint": "echo"}))
        .await?;
    let start = t0.elapsed();
    let id = v["rows"][0]["sessionId"]
        .as_str()
        .with_context(|| format!("StartSession answered no sessionId: {v}"))?
        .to_string();
    let t1 = Instant::now();
    op.call("EndSession", json!({"sessionId": id}))
        .await
        .with_context(|| format!("EndSession {id}"))?;
    Ok((start, t1.elapsed()))
}

/// Runs the phase; `pids` are the server, the GAS and the agent (for their CPU per pair).
pub async fn measure(
    server: SocketAddr,
    password: &str,
    connections: usize,
    calls: usize,
    cap: Duration,
    pids: [u32; 3],
) -> Result<StartRate> {
    let mut ops = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut op = Operator::new(server, password)?;
        for _ in 0..WARMUP_PAIRS {
            pair(&mut op).await.context("a warm-up StartSession")?;
        }
        ops.push(op);
    }
    let cpu = || pids.map(|p| crate::probe::cpu_seconds(Some(p)));
    let before = cpu();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + cap;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut op in ops {
        let next = next.clone();
        set.spawn(async move {
            let mut times = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < calls && Instant::now() < deadline {
                times.push(pair(&mut op).await?);
            }
            anyhow::Ok(times)
        });
    }
    let mut times = Vec::with_capacity(calls);
    while let Some(r) = set.join_next().await {
        times.extend(r.context("a StartSession task panicked")??);
    }
    let seconds = t.elapsed().as_secs_f64();
    let after = cpu();
    let n = times.len();
    let per = |i: usize| (after[i] - before[i]) * 1e3 / n.max(1) as f64;
    let starts: Vec<Duration> = times.iter().map(|t| t.0).collect();
    let ends: Vec<Duration> = times.iter().map(|t| t.1).collect();
    Ok(StartRate {
        connections,
        calls: n,
        seconds,
        per_second: n as f64 / seconds.max(1e-9),
        start: Latency::of_us(&starts),
        end: Latency::of_us(&ends),
        server_cpu_ms: per(0),
        gas_cpu_ms: per(1),
        agent_cpu_ms: per(2),
        capped: n < calls,
    })
}
