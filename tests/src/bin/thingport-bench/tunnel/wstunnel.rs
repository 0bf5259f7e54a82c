//! The closest peer of `../shared/BENCHMARKS.md`, in our two-hop shape (issue 17): wstunnel
//! (`../shared/peers/wstunnel`, 10.6.2) as a server in the GAS's place, a reverse (`-R`) client
//! in the agent's place and a forward (`-L`) client in the RAC's place, all on loopback, plain
//! WebSocket, started with the commands of `../shared/peers/README.md`:
//!
//! ```sh
//! wstunnel server ws://127.0.0.1:S
//! wstunnel client -R tcp://127.0.0.1:R:TARGET ws://127.0.0.1:S   # one -R per target
//! wstunnel client -L tcp://127.0.0.1:L:127.0.0.1:R ws://127.0.0.1:S  # one -L per -R
//! ```
//!
//! wstunnel cannot bind port 0 and report it, so the ports are picked free (bound on
//! `127.0.0.1:0` and released) just before it starts; when a process exits (its port was taken
//! meanwhile) or the chain does not answer within its deadline, all three are killed and started
//! again on other ports, a few times at most. Readiness is a connection, never a fixed sleep.
//!
//! It is measured with the very clients that measure Thingport ([`super::targets`]), against the
//! direct path interleaved with it: bulk (CPU of the three processes from `/proc/PID/stat` over
//! each transfer), 64-byte round trips, new connections, and the memory of the three per open
//! connection. It is not measured (skipped with a note) when the file does not exist.

use super::report::{Latency, Settings};
use super::site::ChildProc;
use super::{blocking, many, measure_connect, measure_rtt, targets, MIB};
use crate::probe;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the peer binaries live, relative to the workspace root.
pub const DEFAULT_PATH: &str = "../shared/peers/wstunnel";
/// Starts of the whole chain on fresh ports before giving up.
const ATTEMPTS: usize = 4;
/// How long one start may take until the chain echoes a byte.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Connections opened at a time for the memory figure (wstunnel's accept backlog is 128).
const OPEN_IN_FLIGHT: usize = 32;

/// The binary to run, or why there is none: `--no-wstunnel`, else `--wstunnel PATH` (which must
/// exist), else [`DEFAULT_PATH`] from the workspace root when it exists.
pub fn choose(
    explicit: Option<&Path>,
    disabled: bool,
) -> Result<std::result::Result<PathBuf, String>> {
    if disabled {
        return Ok(Err("skipped (--no-wstunnel)".into()));
    }
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--wstunnel {}: no such file", p.display());
        }
        return Ok(Ok(p.to_path_buf()));
    }
    // The workspace root: this crate's parent at build time, else three levels above this
    // executable (`<root>/target/release/thingport-bench`).
    let mut roots = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("..")];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(root) = exe.ancestors().nth(3) {
            roots.push(root.to_path_buf());
        }
    }
    Ok(roots
        .iter()
        .map(|r| r.join(DEFAULT_PATH))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("skipped: no {DEFAULT_PATH} beside the workspace (or pass --wstunnel PATH)")
        }))
}

/// `wstunnel --version`.
pub fn version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "wstunnel (version unknown)".into())
}

/// The three running wstunnel processes and the forward listeners, one per target; all killed
/// when dropped (the clients first).
pub struct Chain {
    /// The `-L` listeners, in the order of the targets given to [`Chain::start`].
    pub local: Vec<SocketAddr>,
    forward: ChildProc,
    reverse: ChildProc,
    server: ChildProc,
}

/// `n` distinct free loopback ports, released on return.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a loopback port")?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Waits (bounded) until `addr` accepts a connection, failing as soon as `child` exits.
fn wait_listening(child: &mut ChildProc, addr: SocketAddr, deadline: Instant) -> Result<()> {
    loop {
        child.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} does not listen on {addr}", child.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Chain {
    /// Starts server, reverse client and forward client for `targets` (the last must echo: the
    /// chain is ready once a byte comes back through it), retrying on other ports.
    pub fn start(bin: &Path, targets: &[SocketAddr]) -> Result<Chain> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match Self::try_start(bin, targets) {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| anyhow::anyhow!("no attempt"));
        Err(e.context(format!("wstunnel did not start ({ATTEMPTS} attempts)")))
    }

    fn try_start(bin: &Path, targets: &[SocketAddr]) -> Result<Chain> {
        let deadline = Instant::now() + START_DEADLINE;
        let ports = free_ports(1 + 2 * targets.len())?;
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let ws = format!("ws://{}", at(ports[0]));
        let log = ["--log-lvl", "INFO"];
        let spawn = |name: &str, args: Vec<String>| {
            let mut a: Vec<&str> = log.to_vec();
            a.extend(args.iter().map(String::as_str));
            ChildProc::spawn(name, bin, &a, &[("RUST_LOG", "INFO")], false)
        };
        let mut server = spawn("wstunnel server", vec!["server".into(), ws.clone()])?;
        wait_listening(&mut server, at(ports[0]), deadline)?;
        let reverse_ports = &ports[1..=targets.len()];
        let local_ports = &ports[1 + targets.len()..];
        let mut args = vec!["client".to_string()];
        for (p, t) in reverse_ports.iter().zip(targets) {
            args.extend(["-R".into(), format!("tcp://{}:{t}", at(*p))]);
        }
        args.push(ws.clone());
        let mut reverse = spawn("wstunnel client -R", args)?;
        for p in reverse_ports {
            // The server listens on a reverse port once the -R client asked for it.
            wait_listening(&mut server, at(*p), deadline)?;
            reverse.check_alive()?;
        }
        let mut args = vec!["client".to_string()];
        for (l, r) in local_ports.iter().zip(reverse_ports) {
            args.extend(["-L".into(), format!("tcp://{}:{}", at(*l), at(*r))]);
        }
        args.push(ws);
        let mut forward = spawn("wstunnel client -L", args)?;
        let local: Vec<SocketAddr> = local_ports.iter().map(|p| at(*p)).collect();
        for a in &local {
            wait_listening(&mut forward, *a, deadline)?;
        }
        let echo = *local.last().context("no target")?;
        loop {
            match targets::connect_first_byte(echo, 0x17) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("no byte came back through wstunnel"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            for c in [&mut server, &mut reverse, &mut forward] {
                c.check_alive()?;
            }
        }
        Ok(Chain {
            local,
            forward,
            reverse,
            server,
        })
    }

    fn pids(&self) -> [u32; 3] {
        [self.forward.pid(), self.server.pid(), self.reverse.pid()]
    }

    /// CPU seconds so far (utime + stime) of the three processes together.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids()
            .iter()
            .map(|p| probe::cpu_seconds(Some(*p)))
            .sum()
    }

    /// Resident memory (KiB) of the three processes together.
    pub fn rss_kib(&self) -> Result<u64> {
        self.pids()
            .iter()
            .map(|p| Ok(probe::memory(*p)?.vm_rss_kib))
            .sum()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.server.check_alive()?;
        self.reverse.check_alive()?;
        self.forward.check_alive()
    }
}

/// One bulk transfer direct and through wstunnel.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub repeat: u64,
    pub direction: &'static str,
    pub direct_mib_s: f64,
    pub wstunnel_mib_s: f64,
    /// Server + both clients.
    pub cpu_s_per_gib: f64,
}

/// Connections held open through wstunnel and the three processes' memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Held {
    pub attempted: usize,
    pub opened: usize,
    pub echoed_again: usize,
    pub idle_kib: u64,
    pub open_kib: u64,
    pub per_connection_kib: f64,
}

/// Every figure of the two-hop wstunnel path, each beside the direct path measured with it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub version: String,
    pub runs: Vec<Run>,
    /// Medians: up, down.
    pub direct_mib_s: [f64; 2],
    pub wstunnel_mib_s: [f64; 2],
    pub cpu_s_per_gib: f64,
    /// Direct, wstunnel.
    pub round_trip: [Latency; 2],
    pub new_connection: [Latency; 2],
    pub held: Held,
}

/// Counts of the wstunnel phase: those of the tunnel's, but with `--quick` at most 300 round
/// trips, 100 connections and 200 held open (a smoke run checks that it works).
fn counts(st: &Settings) -> (Settings, usize) {
    let mut s = st.clone();
    let quick = st.mode == "quick";
    if quick {
        s.round_trips = s.round_trips.min(300);
        s.connections = s.connections.min(100);
    }
    (s, st.open.min(if quick { 200 } else { 1_000 }))
}

/// Starts the chain to `bulk`, `many` (held-open connections) and `echo`, measures, stops it.
pub async fn measure(
    st: &Settings,
    bin: &Path,
    echo: SocketAddr,
    bulk: SocketAddr,
    many: SocketAddr,
) -> Result<Figures> {
    let (st, open) = counts(st);
    let b = bin.to_path_buf();
    let mut chain = blocking(move || Chain::start(&b, &[bulk, many, echo])).await?;
    let (via_bulk, via_many, via_echo) = (chain.local[0], chain.local[1], chain.local[2]);
    let r = measure_in(
        &st,
        &mut chain,
        open,
        bulk,
        echo,
        [via_bulk, via_many, via_echo],
    )
    .await;
    match (r, chain.check_alive()) {
        (Ok(f), Ok(())) => Ok(Figures {
            version: version(bin),
            ..f
        }),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(dead)) => Err(dead),
        (Err(e), Err(dead)) => Err(anyhow::anyhow!("{e:#}, because {dead:#}")),
    }
}

async fn measure_in(
    st: &Settings,
    chain: &mut Chain,
    open: usize,
    bulk: SocketAddr,
    echo: SocketAddr,
    [via, via_many, via_echo]: [SocketAddr; 3],
) -> Result<Figures> {
    let (len, cap) = (st.bulk_bytes, st.cap());
    let warm = len.min(32 * MIB);
    blocking(move || targets::bulk_transfer(via, warm, true, cap)).await?;
    blocking(move || targets::bulk_transfer(via, warm, false, cap)).await?;
    let gib = len as f64 / (1024.0 * MIB as f64);
    let mut runs = Vec::new();
    for repeat in 1..=st.side_repeat {
        for up in [true, false] {
            let d = blocking(move || targets::bulk_transfer(bulk, len, up, cap)).await?;
            let before = chain.cpu_seconds();
            let t = blocking(move || targets::bulk_transfer(via, len, up, cap)).await?;
            let cpu = (chain.cpu_seconds() - before) / gib;
            chain.check_alive()?;
            let r = Run {
                repeat,
                direction: if up { "up" } else { "down" },
                direct_mib_s: len as f64 / MIB as f64 / d.as_secs_f64(),
                wstunnel_mib_s: len as f64 / MIB as f64 / t.as_secs_f64(),
                cpu_s_per_gib: cpu,
            };
            eprintln!(
                "  wstunnel bulk {:<4} run {}  direct {:>7.0} MiB/s  wstunnel {:>7.0} MiB/s ({:>3.0}%)  CPU s/GiB {:.2}",
                r.direction,
                repeat,
                r.direct_mib_s,
                r.wstunnel_mib_s,
                100.0 * r.wstunnel_mib_s / r.direct_mib_s,
                r.cpu_s_per_gib
            );
            runs.push(r);
        }
    }
    let (rd, rw, _) = measure_rtt("wstunnel", st, echo, via_echo).await?;
    let (cd, cw, _) = measure_connect("wstunnel", st, echo, via_echo).await?;
    chain.check_alive()?;
    let held = measure_held(chain, open, via_many, st.cap()).await?;
    let med = |up: bool, f: fn(&Run) -> f64| {
        crate::platform::median(
            runs.iter()
                .filter(|r| (r.direction == "up") == up)
                .map(f)
                .collect(),
        )
    };
    Ok(Figures {
        version: String::new(),
        direct_mib_s: [
            med(true, |r| r.direct_mib_s),
            med(false, |r| r.direct_mib_s),
        ],
        wstunnel_mib_s: [
            med(true, |r| r.wstunnel_mib_s),
            med(false, |r| r.wstunnel_mib_s),
        ],
        cpu_s_per_gib: crate::platform::median(runs.iter().map(|r| r.cpu_s_per_gib).collect()),
        round_trip: [rd, rw],
        new_connection: [cd, cw],
        held,
        runs,
    })
}

/// `open` connections held open through the chain at once, and the three processes' resident
/// memory before and with all of them open.
async fn measure_held(
    chain: &mut Chain,
    open: usize,
    via: SocketAddr,
    cap: Duration,
) -> Result<Held> {
    let idle = chain.rss_kib()?;
    let mut held = many::open_many(&[via], open, OPEN_IN_FLIGHT, Instant::now() + cap).await;
    let echoed = many::echo_again(&mut held, OPEN_IN_FLIGHT, Instant::now() + cap).await;
    chain.check_alive()?;
    let open_kib = chain.rss_kib()?;
    let h = Held {
        attempted: open,
        opened: held.open.len(),
        echoed_again: echoed,
        idle_kib: idle,
        open_kib,
        per_connection_kib: (open_kib as f64 - idle as f64) / held.open.len().max(1) as f64,
    };
    eprintln!(
        "  wstunnel held open: {} of {open} in {:.1} s ({} failed{}), {echoed} echoed again; VmRSS {idle} KiB → {open_kib} KiB",
        h.opened,
        held.seconds,
        held.failed,
        held.errors.first().map(|e| format!("; first error: {e}")).unwrap_or_default()
    );
    Ok(h)
}
