//! `thingport-bench tunnel`: the remote-session tunnel (RAC → GAS → agent → target) with the real
//! release binaries on loopback, each figure next to the direct loopback path (client straight to
//! the target) measured in the same run.
//!
//! The tool starts `thingport-server` (port 0, fresh data directory) and imports the real
//! `ConnectionServicesExtension` and `RemoteAccessExtension` packages (built from
//! `target/release/lib{connection_services,remote_access}.so` as `thingport ext pack` builds
//! them); it sets up the site as the end-to-end tests do ([`site`]); it runs an echo server and
//! a bulk (sink / source) server of its own ([`targets`]), the endpoints `echo` and `bulk` of
//! device `gw-1`; then it starts `thingport-gas` (registered, then `EnableForRemoteSessions`),
//! `thingport-agent` for `gw-1`, and two `thingport connect gw-1 <endpoint> --local 127.0.0.1:0`
//! (one per endpoint), each read for its `listening on ADDR` line.
//!
//! Measured, each through the RAC's listener and straight to the target:
//!
//! 1. bulk throughput on one connection, up (client → target) and down, `--bulk-mib` each way,
//!    repeated `--repeat` times, direct and tunnel alternating; every byte checked at the far end;
//! 2. CPU seconds (utime + stime from `/proc/PID/stat`) of the RAC, the GAS and the agent during
//!    each tunnelled transfer, per GiB moved (the server, the platform, is shown beside them);
//! 3. 64-byte ping-pong round trips on one open connection, direct and tunnel interleaved in
//!    blocks of 100;
//! 4. a new TCP connection to first echoed byte (connect, write 1 byte, read it back), direct and
//!    tunnel alternating; through the tunnel that is a new stream in the open session;
//! 5. `StartSession` → first echoed byte through a new session, in this process ([`session`]);
//! 6. fairness: a sibling connection's round trips in the bulk session, alone and beside bulk
//!    transfers ([`fairness`]);
//! 7. `--burst` connections opened at once through one session, and `--open` tunnelled
//!    connections held open at once over `--open-sessions` sessions with the relays' memory per
//!    connection, then their memory after all closed ([`many`]);
//! 8. `StartSession` calls per second from concurrent operator connections ([`rate`]);
//! 9. the one-hop `socat -b 131072` baseline when `socat` is installed ([`socat`]), and the
//!    two-hop wstunnel path (`../shared/peers/wstunnel`) when it is there ([`wstunnel`]), every
//!    figure side by side as a ratio to direct and to wstunnel ([`compare`]);
//! 10. TLS on both legs: bulk and round trips through a second GAS serving `wss` ([`tls`]).
//!
//! Targets (`../shared/BENCHMARKS.md`) are reported PASS / MISS, not enforced: the machine is
//! noisy. The tool fails (exit 1) only when something does not work: a child that does not
//! start or dies, a byte that comes back wrong or short, a session that does not start.

mod compare;
mod fairness;
mod many;
mod rate;
mod report;
mod session;
pub(crate) mod site;
mod socat;
mod targets;
mod tls;
mod wstunnel;

use crate::probe;
use crate::report::Machine;
use crate::server::{self, ServerProcess};
use crate::Outcome;
use anyhow::{Context, Result};
use clap::Args;
use report::{Bulk, Cpu, Latency, More, ProcMemory, Report, Settings};
use serde_json::json;
use site::{Api, ChildProc, DEVICE, GAS_NAME, OPERATOR};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use targets::{Echo, ManyEcho, TargetServer};

pub(crate) const MIB: u64 = 1024 * 1024;
/// Round trips per block; direct and tunnel blocks alternate.
const RTT_BLOCK: usize = 100;
/// Round trips and connections before each measurement that are not counted.
const WARMUP: usize = 50;

#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// A smoke run (128 MiB bulk, 1,000 round trips, 100 connections, 20 sessions): under a
    /// minute, checks that everything works, not for the record.
    #[arg(long)]
    pub quick: bool,

    /// MiB moved each way per bulk transfer [default: 1024, --quick: 128].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub bulk_mib: Option<u64>,

    /// Bulk transfers per direction and path.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub repeat: u64,

    /// 64-byte round trips per path [default: 5000, --quick: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub round_trips: Option<u64>,

    /// New connections per path [default: 500, --quick: 100].
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    pub connections: Option<u64>,

    /// Sessions started (after 2 not counted) [default: 50, --quick: 20].
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub sessions: Option<u64>,

    /// Connections opened at once per burst [default: 1000, --quick: 200].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub burst: Option<u64>,

    /// Tunnelled connections held open at the same time [default: 10000, --quick: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub open: Option<u64>,

    /// Sessions (one RAC each) the held-open connections are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub open_sessions: u64,

    /// Concurrent operator connections calling StartSession + EndSession.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=48))]
    pub start_rate_connections: u64,

    /// StartSession + EndSession pairs of the rate phase [default: 5000, --quick: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub start_rate_calls: Option<u64>,

    /// Skip the socat baseline even when socat is installed.
    #[arg(long)]
    pub no_socat: bool,

    /// The wstunnel binary of the two-hop peer baseline (issue 17) [default:
    /// ../shared/peers/wstunnel from the workspace root when it exists, else none].
    #[arg(long, value_name = "PATH", conflicts_with = "no_wstunnel")]
    pub wstunnel: Option<PathBuf>,

    /// Skip the wstunnel baseline even when the binary is there.
    #[arg(long)]
    pub no_wstunnel: bool,

    /// Skip the TLS phase.
    #[arg(long)]
    pub no_tls: bool,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// The --log filter of the GAS, the agent and the RAC [default: their own default, info].
    #[arg(long, value_name = "FILTER")]
    pub child_log: Option<String>,

    /// The server's --log filter (its log goes to a file in its temporary data directory).
    #[arg(long, default_value = "warn")]
    pub server_log: String,

    /// The directory of thingport-server, thingport-gas, thingport-agent, thingport and the
    /// extension libraries [default: the directory of this executable, e.g. target/release/].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// The release artefacts the benchmark runs (also `console`'s).
pub(crate) struct Artefacts {
    pub(crate) server: PathBuf,
    pub(crate) gas: PathBuf,
    pub(crate) agent: PathBuf,
    pub(crate) rac: PathBuf,
    pub(crate) cse: PathBuf,
    pub(crate) rae: PathBuf,
}

impl Artefacts {
    pub(crate) fn locate(dir: Option<&Path>) -> Result<Self> {
        let build = "cargo build --release --workspace";
        let find = |file: String| {
            let explicit = dir.map(|d| d.join(&file));
            server::locate_artefact(explicit.as_deref(), "--bin-dir", &file, build)
        };
        let exe = |name: &str| find(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        Ok(Artefacts {
            server: exe("thingport-server")?,
            gas: exe("thingport-gas")?,
            agent: exe("thingport-agent")?,
            rac: exe("thingport")?,
            cse: find(server::library_file("connection_services"))?,
            rae: find(server::library_file("remote_access"))?,
        })
    }
}

/// The running site: declared in the order they are dropped (killed), clients first.
struct Running {
    rac_echo: ChildProc,
    rac_bulk: ChildProc,
    /// The sessions to the `many` endpoint (bursts and held-open connections).
    rac_many: Vec<ChildProc>,
    agent: ChildProc,
    gas: ChildProc,
    server: ServerProcess,
    operator_password: String,
    admin: Api,
    url: String,
    gas_key: String,
}

impl Running {
    /// Fails when a child is no longer running, naming the most likely root cause first (a RAC
    /// exits when its GAS or agent goes).
    fn check_alive(&mut self) -> Result<()> {
        self.server.check_alive()?;
        self.gas.check_alive()?;
        self.agent.check_alive()?;
        self.rac_echo.check_alive()?;
        for r in self.rac_many.iter_mut() {
            r.check_alive()?;
        }
        self.rac_bulk.check_alive()
    }

    /// The relays of the held-open connections: the `many` RACs, the GAS, the agent.
    fn relays(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .rac_many
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("RAC {}", i + 1), r.pid()))
            .collect();
        v.push(("GAS".into(), self.gas.pid()));
        v.push(("agent".into(), self.agent.pid()));
        v
    }

    /// A failed phase's error, with the reason when a child died (the usual cause of a broken
    /// pipe); a phase that succeeded still fails when a child died during it.
    async fn blame<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            // A killed child closes its sockets a moment before it can be reaped.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        match (r, self.check_alive()) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), Ok(())) => Err(e),
            (Ok(_), Err(dead)) => Err(dead),
            (Err(e), Err(dead)) => Err(anyhow::anyhow!("{e:#}, because {dead:#}")),
        }
    }

    /// CPU seconds so far of RAC (bulk), GAS, agent, server, and this process.
    fn cpu(&self) -> [f64; 5] {
        [
            probe::cpu_seconds(Some(self.rac_bulk.pid())),
            probe::cpu_seconds(Some(self.gas.pid())),
            probe::cpu_seconds(Some(self.agent.pid())),
            probe::cpu_seconds(Some(self.server.pid())),
            probe::cpu_seconds(None),
        ]
    }
}

/// Runs `f` on a thread of its own (the measurements use blocking sockets); an interrupted
/// benchmark does not wait for it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-measure".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await.context("a measurement thread panicked")?
}

pub async fn run(args: TunnelArgs) -> Result<Outcome> {
    let st = Settings::from_args(&args);
    let started = Instant::now();
    let art = Artefacts::locate(args.bin_dir.as_deref())?;
    let ws_bin = wstunnel::choose(args.wstunnel.as_deref(), args.no_wstunnel)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this thingport-bench is a debug build; its clients are slow. Use --release."
        );
    }
    // This tool holds the client end of every held-open connection, the echo target (a child)
    // the other; the children inherit the limit.
    let (nofile_before, nofile) = many::raise_open_files(st.open as u64 + 4_096)?;
    eprintln!("  open files: soft limit {nofile_before} → {nofile} (children inherit it)");
    let certs = if args.no_tls {
        None
    } else {
        match tls::make_certs() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("  TLS phase skipped: {e:#}");
                None
            }
        }
    };
    let echo = TargetServer::echo()?;
    let bulk = TargetServer::bulk()?;
    let mut many_echo = spawn_many_echo()?;
    let many_addr = many_echo.addr()?;
    let mut site = start_site(&art, &st, &echo, &bulk, many_addr, certs.as_ref()).await?;
    let rac_echo = site.rac_echo.addr()?;
    let rac_bulk = site.rac_bulk.addr()?;
    eprintln!(
        "  site up in {:.1} s: server {} (pid {}), GAS {} (pid {}), agent pid {}, RAC echo {rac_echo} (pid {}), RAC bulk {rac_bulk} (pid {}), {} RAC(s) for many connections",
        started.elapsed().as_secs_f64(),
        site.server.addr,
        site.server.pid(),
        site.gas.addr()?,
        site.gas.pid(),
        site.agent.pid(),
        site.rac_echo.pid(),
        site.rac_bulk.pid(),
        site.rac_many.len(),
    );

    // A first pass through every path, not counted: checks that it works and warms it up.
    let (warm, cap) = (st.bulk_bytes.min(32 * MIB), st.cap());
    for addr in [bulk.addr, rac_bulk] {
        blocking(move || targets::bulk_transfer(addr, warm, true, cap)).await?;
        blocking(move || targets::bulk_transfer(addr, warm, false, cap)).await?;
    }

    let bulk_runs = measure_bulk(&mut site, &st, bulk.addr, rac_bulk).await;
    let bulk_runs = site.blame(bulk_runs).await?;
    let rtt = measure_rtt("tunnel", &st, echo.addr, rac_echo).await;
    let (rtt_direct, rtt_tunnel, rtt_capped) = site.blame(rtt).await?;
    let conn = measure_connect("tunnel", &st, echo.addr, rac_echo).await;
    let (conn_direct, conn_tunnel, conn_capped) = site.blame(conn).await?;
    // The peer right after Thingport's same figures, before the long phases.
    let mut more = More::default();
    match ws_bin {
        Err(note) => more.wstunnel_note = Some(note),
        Ok(bin) => {
            let r = wstunnel::measure(&st, &bin, echo.addr, bulk.addr, many_addr).await;
            more.wstunnel = Some(site.blame(r).await?);
        }
    }
    let sessions = measure_sessions(&st, &mut site).await;
    let sessions = site.blame(sessions).await?;

    let (n, (d, t)) = (st.fairness_round_trips, (bulk.addr, rac_bulk));
    let fair = blocking(move || fairness::measure(d, t, n, cap)).await;
    more.fairness = site.blame(fair).await?;
    eprintln!(
        "  fairness: sibling round trip p99 alone {:.0} µs, beside bulk {:.0} µs (bulk {:.0} MiB/s)",
        more.fairness.tunnel_alone.p99_us,
        more.fairness.tunnel_with_bulk.p99_us,
        more.fairness.tunnel_bulk_mib_s
    );

    let idle = relay_memory(&site)?;
    let burst = measure_burst(&st, many_addr, site.rac_many[0].addr()?).await;
    more.burst = site.blame(burst).await?;
    let target_limit = many_echo.open_files_limit().unwrap_or(u64::MAX);
    let held = measure_many(&mut site, &st, nofile, target_limit, idle).await;
    more.many = site.blame(held).await?;
    many_echo.check_alive()?;

    let rate = rate::measure(
        site.server.addr,
        &site.operator_password,
        st.start_rate_connections,
        st.start_rate_calls,
        cap,
        [site.server.pid(), site.gas.pid(), site.agent.pid()],
    )
    .await;
    more.start_rate = site.blame(rate).await?;
    eprintln!(
        "  StartSession: {} calls in {:.1} s on {} connections: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
        more.start_rate.calls,
        more.start_rate.seconds,
        more.start_rate.connections,
        more.start_rate.per_second,
        more.start_rate.start.p50_us / 1e3,
        more.start_rate.start.p99_us / 1e3
    );

    match socat::find() {
        _ if args.no_socat => more.socat_note = Some("skipped (--no-socat)".into()),
        None => {
            more.socat_note = Some("skipped: socat is not installed (apt-get install socat)".into())
        }
        Some(bin) => {
            let r = measure_socat(&st, &bin, &echo, &bulk, many_addr).await;
            more.socat = Some(site.blame(r).await?);
        }
    }

    match &certs {
        None if args.no_tls => more.tls_note = Some("skipped (--no-tls)".into()),
        None => more.tls_note = Some("skipped: no certificate (openssl failed, see above)".into()),
        Some(c) => more.tls = Some(tls::measure(&mut site, &art, &st, c).await?),
    }

    let mut logs = vec![
        ("server".to_string(), site.server.log_lines()),
        ("gas".to_string(), site.gas.log_lines()),
        ("agent".to_string(), site.agent.log_lines()),
        ("rac echo".to_string(), site.rac_echo.log_lines()),
        ("rac bulk".to_string(), site.rac_bulk.log_lines()),
    ];
    for (i, r) in site.rac_many.iter().enumerate() {
        logs.push((format!("rac many {}", i + 1), r.log_lines()));
    }
    let report = Report::new(
        st,
        Machine::probe(),
        bulk_runs,
        [rtt_direct, rtt_tunnel],
        rtt_capped,
        [conn_direct, conn_tunnel],
        conn_capped,
        sessions,
        more,
        &logs,
        started.elapsed().as_secs_f64(),
    );
    report::print(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(Outcome { requests_failed: 0 })
}

/// `thingport-bench many-echo`: runs [`ManyEcho`], prints `listening on ADDR`, and serves until
/// it is killed (or its parent dies: `PR_SET_PDEATHSIG`).
#[allow(unsafe_code)]
pub fn many_echo_main() -> Result<Outcome> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and changes only this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    many::raise_open_files(1 << 20)?;
    let server = ManyEcho::start()?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.addr)?;
        out.flush()?;
    }
    loop {
        std::thread::park();
    }
}

/// Starts `thingport-bench many-echo` (this executable) as a child.
fn spawn_many_echo() -> Result<ChildProc> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    ChildProc::spawn(
        "the many-connection echo target",
        &exe,
        &["many-echo"],
        &[],
        true,
    )
}

/// Resident memory (KiB) of each relay of the held-open connections.
fn relay_memory(site: &Running) -> Result<Vec<(String, u64)>> {
    site.relays()
        .into_iter()
        .map(|(name, pid)| Ok((name, probe::memory(pid)?.vm_rss_kib)))
        .collect()
}

/// `--burst` connections at once, direct and through the first `many` session, alternating.
async fn measure_burst(
    st: &Settings,
    direct: std::net::SocketAddr,
    tunnel: std::net::SocketAddr,
) -> Result<[report::Burst; 2]> {
    let (mut d, mut t) = (Vec::new(), Vec::new());
    for _ in 0..st.bursts {
        for (addr, runs) in [(direct, &mut d), (tunnel, &mut t)] {
            runs.push(many::burst(addr, st.burst).await);
            // Lets the closed connections go before the next burst.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let b = [many::pool("direct", &d), many::pool("tunnel", &t)];
    for b in &b {
        eprintln!(
            "  burst {}: {} of {} succeeded, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} over 1 s, {} SYN retransmits, {} listen overflows{}",
            b.path,
            b.succeeded,
            b.attempted,
            b.latency.p50_us / 1e3,
            b.latency.p99_us / 1e3,
            b.latency.max_us / 1e3,
            b.over_1s,
            b.syn_retrans,
            b.listen_overflows,
            b.errors.first().map(|e| format!("; first error: {e}")).unwrap_or_default()
        );
    }
    Ok(b)
}

/// `--open` connections held open over the `many` sessions; memory idle, with all open, and
/// after all closed (waiting, bounded, for each relay to come back within 10% of idle).
async fn measure_many(
    site: &mut Running,
    st: &Settings,
    own_limit: u64,
    target_limit: u64,
    idle: Vec<(String, u64)>,
) -> Result<report::Many> {
    let addrs: Vec<std::net::SocketAddr> = site
        .rac_many
        .iter()
        .map(ChildProc::addr)
        .collect::<Result<_>>()?;
    let k = addrs.len() as u64;
    let mut limits = vec![
        ("thingport-bench".to_string(), own_limit),
        ("echo target".to_string(), target_limit),
    ];
    let lim = |c: &ChildProc| c.open_files_limit().unwrap_or(u64::MAX);
    for (i, r) in site.rac_many.iter().enumerate() {
        limits.push((format!("RAC {}", i + 1), lim(r)));
    }
    limits.push(("GAS".into(), lim(&site.gas)));
    limits.push(("agent".into(), lim(&site.agent)));
    let rac_min = site.rac_many.iter().map(lim).min().unwrap_or(u64::MAX);
    // Headroom per process for its other descriptors (logs, the platform, the WebSockets).
    let allowed = [
        st.open as u64,
        rac_min.saturating_sub(64).saturating_mul(k),
        lim(&site.agent).saturating_sub(256),
        own_limit.saturating_sub(1_024),
        target_limit.saturating_sub(1_024),
    ]
    .into_iter()
    .min()
    .unwrap_or(0) as usize;
    let limit_note = (allowed < st.open).then(|| {
        let l: Vec<String> = limits.iter().map(|(n, l)| format!("{n} {l}")).collect();
        format!(
            "the open-file limits ({}) allow {allowed} of the {} connections asked for",
            l.join(", "),
            st.open
        )
    });
    if let Some(n) = &limit_note {
        eprintln!("  note: {n}");
    }
    let deadline = Instant::now() + st.cap();
    let mut held = many::open_many(&addrs, allowed, 256, deadline).await;
    let echoed = many::echo_again(&mut held, 256, Instant::now() + st.cap()).await;
    site.check_alive()?;
    let open = relay_memory(site)?;
    eprintln!(
        "  held open: {} of {allowed} in {:.1} s ({} failed), {echoed} echoed again; relays' VmRSS {} KiB → {} KiB",
        held.open.len(),
        held.seconds,
        held.failed,
        idle.iter().map(|p| p.1).sum::<u64>(),
        open.iter().map(|p| p.1).sum::<u64>()
    );
    let opened = held.open.len();
    let (failed, errors, open_seconds) = (held.failed, held.errors.clone(), held.seconds);
    drop(held);
    let t = Instant::now();
    let wait = Duration::from_secs_f64(st.memory_wait_seconds);
    let mut after = relay_memory(site)?;
    loop {
        let back = idle
            .iter()
            .zip(&after)
            .all(|(i, a)| a.1 as f64 <= i.1 as f64 * 1.10);
        if back || t.elapsed() > wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = relay_memory(site)?;
    }
    let processes: Vec<ProcMemory> = idle
        .iter()
        .zip(&open)
        .zip(&after)
        .map(|((i, o), a)| ProcMemory {
            name: i.0.clone(),
            idle_kib: i.1,
            open_kib: o.1,
            after_kib: a.1,
        })
        .collect();
    let grown: i64 = processes
        .iter()
        .map(|p| p.open_kib as i64 - p.idle_kib as i64)
        .sum();
    let m = report::Many {
        requested: st.open,
        attempted: allowed,
        limit_note,
        open_files_limits: limits,
        sessions: addrs.len(),
        opened,
        failed,
        echoed_again: echoed,
        open_seconds,
        errors,
        per_connection_kib: grown as f64 / opened.max(1) as f64,
        processes,
        after_wait_cap_seconds: st.memory_wait_seconds,
        after_waited_seconds: t.elapsed().as_secs_f64(),
    };
    site.check_alive()?;
    Ok(m)
}

/// The `socat -b 131072` one-hop baseline: bulk, round trip, new connection and a burst.
async fn measure_socat(
    st: &Settings,
    bin: &Path,
    echo: &TargetServer,
    bulk: &TargetServer,
    many_echo: std::net::SocketAddr,
) -> Result<report::Socat> {
    let (b, e, m) = (bin.to_path_buf(), echo.addr, many_echo);
    let bulk_addr = bulk.addr;
    let (mut s_bulk, s_echo, s_many) = blocking(move || {
        Ok((
            socat::Socat::start(&b, bulk_addr)?,
            socat::Socat::start(&b, e)?,
            socat::Socat::start(&b, m)?,
        ))
    })
    .await?;
    let (len, cap) = (st.bulk_bytes, st.cap());
    let via = s_bulk.addr;
    let warm = len.min(32 * MIB);
    blocking(move || targets::bulk_transfer(via, warm, true, cap)).await?;
    let gib = len as f64 / (1024.0 * MIB as f64);
    let mut runs = Vec::new();
    for repeat in 1..=st.side_repeat {
        for up in [true, false] {
            let d = blocking(move || targets::bulk_transfer(bulk_addr, len, up, cap)).await?;
            let before = s_bulk.cpu_seconds();
            let t = blocking(move || targets::bulk_transfer(via, len, up, cap)).await?;
            let cpu = (s_bulk.cpu_seconds() - before) / gib;
            s_bulk.check_alive()?;
            let r = report::SocatRun {
                repeat,
                direction: if up { "up" } else { "down" },
                direct_mib_s: len as f64 / MIB as f64 / d.as_secs_f64(),
                socat_mib_s: len as f64 / MIB as f64 / t.as_secs_f64(),
                socat_cpu_s_per_gib: cpu,
            };
            eprintln!(
                "  socat bulk {:<4} run {}  direct {:>7.0} MiB/s  socat {:>7.0} MiB/s ({:>3.0}%)  CPU s/GiB {:.2}",
                r.direction,
                repeat,
                r.direct_mib_s,
                r.socat_mib_s,
                100.0 * r.socat_mib_s / r.direct_mib_s,
                r.socat_cpu_s_per_gib
            );
            runs.push(r);
        }
    }
    let (rd, rs, _) = measure_rtt("socat", st, echo.addr, s_echo.addr).await?;
    let (cd, cs, _) = measure_connect("socat", st, echo.addr, s_echo.addr).await?;
    let mut bursts = Vec::new();
    for _ in 0..st.bursts {
        bursts.push(many::burst(s_many.addr, st.burst).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let burst = many::pool("socat", &bursts);
    let med = |up: bool, f: fn(&report::SocatRun) -> f64| {
        crate::platform::median(
            runs.iter()
                .filter(|r| (r.direction == "up") == up)
                .map(f)
                .collect(),
        )
    };
    Ok(report::Socat {
        version: socat::version(bin),
        direct_mib_s: [
            med(true, |r| r.direct_mib_s),
            med(false, |r| r.direct_mib_s),
        ],
        socat_mib_s: [med(true, |r| r.socat_mib_s), med(false, |r| r.socat_mib_s)],
        cpu_s_per_gib: crate::platform::median(
            runs.iter().map(|r| r.socat_cpu_s_per_gib).collect(),
        ),
        round_trip: [rd, rs],
        new_connection: [cd, cs],
        burst,
        runs,
    })
}

async fn start_site(
    art: &Artefacts,
    st: &Settings,
    echo: &TargetServer,
    bulk: &TargetServer,
    many_echo: std::net::SocketAddr,
    certs: Option<&tls::Certs>,
) -> Result<Running> {
    let admin_password = format!("bench-admin-{}-Pw-0123456789", std::process::id());
    let server = ServerProcess::start(&art.server, &admin_password, &st.server_log)?;
    let addr = server.addr;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let cse = thingport_e2e::packages::connection_services_package_of(&read(&art.cse)?);
    crate::control::import_package(addr, &admin_password, "CSE", cse).await?;
    let rae = thingport_e2e::packages::remote_access_package_of(&read(&art.rae)?);
    crate::control::import_package(addr, &admin_password, "RAE", rae).await?;
    let admin = Api::new(addr, "Administrator", &admin_password)?;
    let endpoints = [
        ("echo", echo.addr),
        ("bulk", bulk.addr),
        ("many", many_echo),
    ];
    let creds = site::create(&admin, &endpoints).await?;
    let url = format!("http://{addr}");
    let log: Vec<&str> = match &st.child_log {
        Some(f) => vec!["--log", f.as_str()],
        None => vec![],
    };

    let mut args = vec![
        "--url",
        url.as_str(),
        "--name",
        GAS_NAME,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(&log);
    let mut gas = ChildProc::spawn(
        "thingport-gas",
        &art.gas,
        &args,
        &[("THINGPORT_APP_KEY", creds.gas_key.as_str())],
        true,
    )?;
    admin.wait_connected(GAS_NAME, &mut gas).await?;
    admin
        .thing_service(GAS_NAME, "EnableForRemoteSessions", json!({}))
        .await?;

    let mut args = vec!["--url", url.as_str(), "--thing", DEVICE];
    args.extend(["--min-backoff", "200ms", "--max-backoff", "2s"]);
    let ca = certs.map(|c| c.ca.to_string_lossy().into_owned());
    if let Some(ca) = &ca {
        // For the TLS phase's GAS; the platform stays plain.
        args.extend(["--ca-file", ca.as_str()]);
    }
    args.extend(&log);
    let mut agent = ChildProc::spawn(
        "thingport-agent",
        &art.agent,
        &args,
        &[("THINGPORT_APP_KEY", creds.device_key.as_str())],
        false,
    )?;
    admin.wait_connected(DEVICE, &mut agent).await?;

    let env = [
        ("THINGPORT_URL", url.as_str()),
        ("THINGPORT_USER", OPERATOR),
        ("THINGPORT_PASSWORD", creds.operator_password.as_str()),
    ];
    let rac = |endpoint: &str| {
        let mut args = vec!["connect", DEVICE, endpoint, "--local", "127.0.0.1:0"];
        args.extend(&log);
        ChildProc::spawn(
            &format!("thingport connect ({endpoint})"),
            &art.rac,
            &args,
            &env,
            true,
        )
    };
    let rac_echo = rac("echo")?;
    let rac_bulk = rac("bulk")?;
    let rac_many = (0..st.open_sessions)
        .map(|_| rac("many"))
        .collect::<Result<Vec<_>>>()?;
    Ok(Running {
        rac_echo,
        rac_bulk,
        rac_many,
        agent,
        gas,
        server,
        operator_password: creds.operator_password,
        admin,
        gas_key: creds.gas_key,
        url,
    })
}

async fn measure_bulk(
    site: &mut Running,
    st: &Settings,
    direct: std::net::SocketAddr,
    tunnel: std::net::SocketAddr,
) -> Result<Vec<Bulk>> {
    let (len, cap) = (st.bulk_bytes, st.cap());
    let mut runs = Vec::new();
    for repeat in 1..=st.repeat {
        for up in [true, false] {
            let d = blocking(move || targets::bulk_transfer(direct, len, up, cap)).await?;
            let before = site.cpu();
            let t = blocking(move || targets::bulk_transfer(tunnel, len, up, cap)).await?;
            let after = site.cpu();
            site.check_alive()?;
            let gib = len as f64 / (1024.0 * MIB as f64);
            let per = |i: usize| (after[i] - before[i]) / gib;
            let b = Bulk {
                repeat,
                direction: if up { "up" } else { "down" },
                bytes: len,
                direct_mib_s: len as f64 / MIB as f64 / d.as_secs_f64(),
                tunnel_mib_s: len as f64 / MIB as f64 / t.as_secs_f64(),
                cpu_s_per_gib: Cpu {
                    rac: per(0),
                    gas: per(1),
                    agent: per(2),
                    server: per(3),
                    bench: per(4),
                },
            };
            report::progress(&b);
            runs.push(b);
        }
    }
    Ok(runs)
}

/// Ping-pong on one connection per path, in alternating blocks.
async fn measure_rtt(
    via: &str,
    st: &Settings,
    direct: std::net::SocketAddr,
    tunnel: std::net::SocketAddr,
) -> Result<(Latency, Latency, bool)> {
    let (n, cap) = (st.round_trips, st.cap());
    let (d, t, capped) = blocking(move || {
        let deadline = Instant::now() + cap;
        let mut conns = [Echo::connect(direct)?, Echo::connect(tunnel)?];
        for c in conns.iter_mut() {
            for _ in 0..WARMUP {
                c.round_trip()?;
            }
        }
        let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
        while samples[1].len() < n {
            if Instant::now() > deadline {
                return Ok((samples[0].clone(), samples[1].clone(), true));
            }
            for (c, s) in conns.iter_mut().zip(samples.iter_mut()) {
                for _ in 0..RTT_BLOCK.min(n - s.len()) {
                    s.push(c.round_trip()?);
                }
            }
        }
        let [a, b] = samples;
        Ok((a, b, false))
    })
    .await?;
    eprintln!(
        "  round trips: {} direct, {} {via}{}",
        d.len(),
        t.len(),
        capped_note(capped)
    );
    Ok((Latency::of_us(&d), Latency::of_us(&t), capped))
}

/// New connections to first echoed byte, direct and tunnel alternating.
async fn measure_connect(
    via: &str,
    st: &Settings,
    direct: std::net::SocketAddr,
    tunnel: std::net::SocketAddr,
) -> Result<(Latency, Latency, bool)> {
    let (n, cap) = (st.connections, st.cap());
    let (d, t, capped) = blocking(move || {
        let deadline = Instant::now() + cap;
        for i in 0..WARMUP / 5 {
            targets::connect_first_byte(direct, i as u8)?;
            targets::connect_first_byte(tunnel, i as u8)?;
        }
        let (mut d, mut t) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            if Instant::now() > deadline {
                return Ok((d, t, true));
            }
            d.push(targets::connect_first_byte(direct, i as u8)?);
            t.push(targets::connect_first_byte(tunnel, i as u8)?);
        }
        Ok((d, t, false))
    })
    .await?;
    eprintln!(
        "  new connections: {} direct, {} {via}{}",
        d.len(),
        t.len(),
        capped_note(capped)
    );
    Ok((Latency::of_us(&d), Latency::of_us(&t), capped))
}

async fn measure_sessions(st: &Settings, site: &mut Running) -> Result<report::Sessions> {
    let mut op = session::Operator::new(site.server.addr, &site.operator_password)?;
    let deadline = Instant::now() + st.cap();
    for i in 0..2u8 {
        session::one(&mut op, i)
            .await
            .context("a warm-up session")?;
    }
    let mut times = Vec::with_capacity(st.sessions);
    for i in 0..st.sessions {
        if Instant::now() > deadline {
            break;
        }
        let t = session::one(&mut op, i as u8)
            .await
            .with_context(|| format!("session {} of {}", i + 1, st.sessions))?;
        times.push(t);
    }
    site.check_alive()?;
    let s = report::Sessions::of(&times, times.len() < st.sessions);
    eprintln!(
        "  sessions: {} started and ended{}",
        times.len(),
        capped_note(s.capped)
    );
    Ok(s)
}

fn capped_note(capped: bool) -> &'static str {
    if capped {
        " (stopped at the phase's time cap)"
    } else {
        ""
    }
}
