//! Fairness: a sibling connection's 64-byte round trips through the bulk server's echo mode, in
//! the same session as a bulk transfer (both through the bulk RAC's listener, so the same
//! tunnel), against the same round trips without the bulk transfer; and the same on the direct
//! path. Blocking code, run on threads of its own.

use super::report::{Fairness, Latency};
use super::targets::{self, Echo};
use super::MIB;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of each bulk transfer beside the round trips (they repeat, up and down alternating,
/// until the round trips are done).
const BULK_PIECE: u64 = 64 * MIB;

/// Round trips of one connection until `n` or `deadline`; answers them and whether the deadline
/// stopped it.
fn pings(e: &mut Echo, n: usize, deadline: Instant) -> Result<(Vec<Duration>, bool)> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        if Instant::now() > deadline {
            return Ok((v, true));
        }
        v.push(e.round_trip()?);
    }
    Ok((v, false))
}

/// One path: round trips alone, then beside bulk transfers; answers (alone, with bulk, the bulk's
/// MiB/s, capped).
fn path(addr: SocketAddr, n: usize, cap: Duration) -> Result<(Latency, Latency, f64, bool)> {
    let deadline = Instant::now() + cap;
    let mut e = Echo::connect_bulk(addr)?;
    for _ in 0..super::WARMUP {
        e.round_trip()?;
    }
    let (alone, c1) = pings(&mut e, n, deadline)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let bulk = std::thread::Builder::new()
        .name("bench-fair-bulk".into())
        .spawn(move || -> Result<(u64, Duration)> {
            let t = Instant::now();
            let (mut moved, mut up) = (0u64, true);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                targets::bulk_transfer(addr, BULK_PIECE, up, cap)?;
                moved += BULK_PIECE;
                up = !up;
            }
            Ok((moved, t.elapsed()))
        })?;
    // Lets the first transfer get going before the round trips start.
    std::thread::sleep(Duration::from_millis(30));
    let with = pings(&mut e, n, deadline);
    stop.store(true, Ordering::Relaxed);
    let moved = bulk
        .join()
        .map_err(|_| anyhow::anyhow!("the bulk thread panicked"))?
        .context("the bulk transfer beside the round trips")?;
    let (with, c2) = with?;
    let mib_s = moved.0 as f64 / MIB as f64 / moved.1.as_secs_f64().max(1e-9);
    Ok((
        Latency::of_us(&alone),
        Latency::of_us(&with),
        mib_s,
        c1 || c2,
    ))
}

/// Direct, then through the tunnel.
pub fn measure(
    direct: SocketAddr,
    tunnel: SocketAddr,
    n: usize,
    cap: Duration,
) -> Result<Fairness> {
    let (da, db, dm, c1) = path(direct, n, cap).context("fairness, direct")?;
    let (ta, tb, tm, c2) = path(tunnel, n, cap).context("fairness, tunnel")?;
    Ok(Fairness {
        direct_alone: da,
        direct_with_bulk: db,
        tunnel_alone: ta,
        tunnel_with_bulk: tb,
        direct_bulk_mib_s: dm,
        tunnel_bulk_mib_s: tm,
        capped: c1 || c2,
    })
}
