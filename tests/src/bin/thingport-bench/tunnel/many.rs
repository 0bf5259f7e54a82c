//! Many connections: a burst of connections opened all at once through one session (and against
//! the target directly), thousands of tunnelled connections held open at the same time with the
//! relays' memory per connection, and the relays' memory after they are closed.
//!
//! The clients are Tokio tasks of this process; the target is [`super::targets::ManyEcho`].
//! Every connection writes one byte and must read it back unchanged; a connection that fails
//! (refused, reset, timed out, wrong byte) is counted, not fatal: "100% succeed" is a target.

use super::report::{Burst, Latency};
use anyhow::{ensure, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Longest one connection may take to echo its byte.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Errors kept verbatim per phase.
const ERROR_SAMPLES: usize = 5;

/// Connects to `addr`, writes `byte` and reads it back: answers the open connection and the time
/// since `since`.
async fn open_one(addr: SocketAddr, byte: u8, since: Instant) -> Result<(TcpStream, Duration)> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        s.write_all(&[byte]).await.context("write")?;
        let mut back = [0u8; 1];
        s.read_exact(&mut back).await.context("read")?;
        ensure!(back[0] == byte, "the echoed byte came back changed");
        Ok((s, since.elapsed()))
    };
    match tokio::time::timeout(OPEN_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("no echo within {OPEN_TIMEOUT:?}"),
    }
}

fn keep_error(errors: &mut Vec<String>, e: &anyhow::Error) {
    if errors.len() < ERROR_SAMPLES {
        errors.push(format!("{e:#}"));
    }
}

/// Counts of one burst, before they are pooled into a [`Burst`].
#[derive(Default)]
pub struct BurstRun {
    pub attempted: usize,
    pub times: Vec<Duration>,
    pub errors: Vec<String>,
    pub failed: usize,
    /// The kernel's `TcpExt` counters over the burst: SYNs retransmitted (a connection waited
    /// for the 1 s retransmission), and listen queue overflows and drops.
    pub syn_retrans: u64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

/// `TcpExt: TCPSynRetrans ListenOverflows ListenDrops` of this network namespace
/// (`/proc/net/netstat`; every process on it counts).
fn tcp_counters() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return [0; 3];
    };
    let pairs: Vec<(&str, u64)> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .map(|(n, v)| (n, v.parse().unwrap_or(0)))
        .collect();
    let get = |name: &str| pairs.iter().find(|p| p.0 == name).map_or(0, |p| p.1);
    [
        get("TCPSynRetrans"),
        get("ListenOverflows"),
        get("ListenDrops"),
    ]
}

/// `n` connections to `addr` started at once (every task waits at a barrier, the clock starts
/// when all are released); each time is from the release to its first echoed byte. All stay open
/// until the last one finished, then all are closed.
pub async fn burst(addr: SocketAddr, n: usize) -> BurstRun {
    let counters = tcp_counters();
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut set = JoinSet::new();
    for i in 0..n {
        let (barrier, start) = (barrier.clone(), start.clone());
        set.spawn(async move {
            barrier.wait().await;
            let since = *start.get_or_init(Instant::now);
            open_one(addr, i as u8, since).await
        });
    }
    // The first task released starts the clock for all.
    barrier.wait().await;
    let mut run = BurstRun {
        attempted: n,
        ..BurstRun::default()
    };
    let mut open = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((s, t))) => {
                run.times.push(t);
                open.push(s);
            }
            Ok(Err(e)) => {
                run.failed += 1;
                keep_error(&mut run.errors, &e);
            }
            Err(e) => {
                run.failed += 1;
                keep_error(&mut run.errors, &anyhow::Error::new(e));
            }
        }
    }
    let after = tcp_counters();
    run.syn_retrans = after[0].saturating_sub(counters[0]);
    run.listen_overflows = after[1].saturating_sub(counters[1]);
    run.listen_drops = after[2].saturating_sub(counters[2]);
    drop(open);
    run
}

/// Pools the bursts of one path.
pub fn pool(path: &str, runs: &[BurstRun]) -> Burst {
    let times: Vec<Duration> = runs.iter().flat_map(|r| r.times.iter().copied()).collect();
    Burst {
        path: path.to_string(),
        bursts: runs.len(),
        attempted: runs.iter().map(|r| r.attempted).sum(),
        succeeded: times.len(),
        over_1s: times
            .iter()
            .filter(|t| **t > Duration::from_secs(1))
            .count(),
        latency: Latency::of_us(&times),
        syn_retrans: runs.iter().map(|r| r.syn_retrans).sum(),
        listen_overflows: runs.iter().map(|r| r.listen_overflows).sum(),
        listen_drops: runs.iter().map(|r| r.listen_drops).sum(),
        errors: runs
            .iter()
            .flat_map(|r| r.errors.clone())
            .take(ERROR_SAMPLES)
            .collect(),
    }
}

/// Connections held open.
pub struct Held {
    pub open: Vec<TcpStream>,
    pub failed: usize,
    pub errors: Vec<String>,
    pub seconds: f64,
}

/// Opens `n` connections, connection `i` to `addrs[i % addrs.len()]`, at most `in_flight`
/// opening at a time, each echoing one byte; stops opening at `deadline`.
pub async fn open_many(
    addrs: &[SocketAddr],
    n: usize,
    in_flight: usize,
    deadline: Instant,
) -> Held {
    let t = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut set = JoinSet::new();
    for i in 0..n {
        let addr = addrs[i % addrs.len()];
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            if Instant::now() > deadline {
                anyhow::bail!("not opened: the phase's time cap passed");
            }
            open_one(addr, i as u8, Instant::now())
                .await
                .map(|(s, _)| s)
        });
    }
    let mut held = Held {
        open: Vec::with_capacity(n),
        failed: 0,
        errors: Vec::new(),
        seconds: 0.0,
    };
    while let Some(r) = set.join_next().await {
        match r.map_err(anyhow::Error::new).and_then(|r| r) {
            Ok(s) => held.open.push(s),
            Err(e) => {
                held.failed += 1;
                keep_error(&mut held.errors, &e);
            }
        }
    }
    held.seconds = t.elapsed().as_secs_f64();
    held
}

/// Every held connection echoes one more byte (at most `in_flight` at a time, none started after
/// `deadline`): answers how many did; the connections stay open.
pub async fn echo_again(held: &mut Held, in_flight: usize, deadline: Instant) -> usize {
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut set = JoinSet::new();
    for (i, mut s) in std::mem::take(&mut held.open).into_iter().enumerate() {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if Instant::now() > deadline {
                return (s, false);
            }
            let byte = (i as u8) ^ 0x5a;
            let fut = async {
                s.write_all(&[byte]).await?;
                let mut back = [0u8; 1];
                s.read_exact(&mut back).await?;
                anyhow::Ok(back[0] == byte)
            };
            let ok = matches!(tokio::time::timeout(OPEN_TIMEOUT, fut).await, Ok(Ok(true)));
            (s, ok)
        });
    }
    let mut echoed = 0;
    while let Some(r) = set.join_next().await {
        if let Ok((s, ok)) = r {
            echoed += usize::from(ok);
            held.open.push(s);
        }
    }
    echoed
}

/// The soft and hard limits of open files of this process.
#[allow(unsafe_code)]
fn nofile() -> Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    Ok(lim)
}

#[allow(unsafe_code)]
fn set_nofile(lim: libc::rlimit) -> bool {
    // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// Raises this process's limit of open files to at least `want` where it may (the hard limit too
/// when privileged, up to `fs.nr_open`), else to its hard limit; children started afterwards
/// inherit it. Answers (soft before, soft now).
pub fn raise_open_files(want: u64) -> Result<(u64, u64)> {
    let lim = nofile()?;
    let before = lim.rlim_cur;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let want = want.min(nr_open);
    if lim.rlim_cur >= want {
        return Ok((before, before));
    }
    if lim.rlim_max < want
        && set_nofile(libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        })
    {
        return Ok((before, want));
    }
    let soft = want.min(lim.rlim_max);
    if set_nofile(libc::rlimit {
        rlim_cur: soft,
        rlim_max: lim.rlim_max,
    }) {
        return Ok((before, soft));
    }
    Ok((before, before))
}
