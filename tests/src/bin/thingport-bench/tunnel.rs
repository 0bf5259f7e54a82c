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
//! 5. `StartSession` → first echoed byte through a new session, in this process ([`session`]).
//!
//! Targets (`../shared/BENCHMARKS.md`) are reported PASS / MISS, not enforced: the machine is
//! noisy. The tool fails (exit 1) only when something does not work: a child that does not
//! start or dies, a byte that comes back wrong or short, a session that does not start.

mod report;
mod session;
mod site;
mod targets;

use crate::probe;
use crate::report::Machine;
use crate::server::{self, ServerProcess};
use crate::Outcome;
use anyhow::{Context, Result};
use clap::Args;
use report::{Bulk, Cpu, Latency, Report, Settings};
use serde_json::json;
use site::{Api, ChildProc, DEVICE, GAS_NAME, OPERATOR};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use targets::{Echo, TargetServer};

const MIB: u64 = 1024 * 1024;
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

/// The release artefacts the benchmark runs.
struct Artefacts {
    server: PathBuf,
    gas: PathBuf,
    agent: PathBuf,
    rac: PathBuf,
    cse: PathBuf,
    rae: PathBuf,
}

impl Artefacts {
    fn locate(dir: Option<&Path>) -> Result<Self> {
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
    agent: ChildProc,
    gas: ChildProc,
    server: ServerProcess,
    operator_password: String,
}

impl Running {
    /// Fails when a child is no longer running, naming the most likely root cause first (a RAC
    /// exits when its GAS or agent goes).
    fn check_alive(&mut self) -> Result<()> {
        self.server.check_alive()?;
        self.gas.check_alive()?;
        self.agent.check_alive()?;
        self.rac_echo.check_alive()?;
        self.rac_bulk.check_alive()
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
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this thingport-bench is a debug build; its clients are slow. Use --release."
        );
    }
    let echo = TargetServer::echo()?;
    let bulk = TargetServer::bulk()?;
    let mut site = start_site(&art, &st, echo.addr, bulk.addr).await?;
    let rac_echo = site.rac_echo.addr()?;
    let rac_bulk = site.rac_bulk.addr()?;
    eprintln!(
        "  site up in {:.1} s: server {} (pid {}), GAS {} (pid {}), agent pid {}, RAC echo {rac_echo} (pid {}), RAC bulk {rac_bulk} (pid {})",
        started.elapsed().as_secs_f64(),
        site.server.addr,
        site.server.pid(),
        site.gas.addr()?,
        site.gas.pid(),
        site.agent.pid(),
        site.rac_echo.pid(),
        site.rac_bulk.pid(),
    );

    // A first pass through every path, not counted: checks that it works and warms it up.
    let (warm, cap) = (st.bulk_bytes.min(32 * MIB), st.cap());
    for addr in [bulk.addr, rac_bulk] {
        blocking(move || targets::bulk_transfer(addr, warm, true, cap)).await?;
        blocking(move || targets::bulk_transfer(addr, warm, false, cap)).await?;
    }

    let bulk_runs = measure_bulk(&mut site, &st, bulk.addr, rac_bulk).await;
    let bulk_runs = site.blame(bulk_runs).await?;
    let rtt = measure_rtt(&st, echo.addr, rac_echo).await;
    let (rtt_direct, rtt_tunnel, rtt_capped) = site.blame(rtt).await?;
    let conn = measure_connect(&st, echo.addr, rac_echo).await;
    let (conn_direct, conn_tunnel, conn_capped) = site.blame(conn).await?;
    let sessions = measure_sessions(&st, &mut site).await;
    let sessions = site.blame(sessions).await?;

    let report = Report::new(
        st,
        Machine::probe(),
        bulk_runs,
        [rtt_direct, rtt_tunnel],
        rtt_capped,
        [conn_direct, conn_tunnel],
        conn_capped,
        sessions,
        [
            ("server", site.server.log_lines()),
            ("gas", site.gas.log_lines()),
            ("agent", site.agent.log_lines()),
            ("rac echo", site.rac_echo.log_lines()),
            ("rac bulk", site.rac_bulk.log_lines()),
        ],
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

async fn start_site(
    art: &Artefacts,
    st: &Settings,
    echo: std::net::SocketAddr,
    bulk: std::net::SocketAddr,
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
    let creds = site::create(&admin, echo, bulk).await?;
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
    Ok(Running {
        rac_echo,
        rac_bulk,
        agent,
        gas,
        server,
        operator_password: creds.operator_password,
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
        "  round trips: {} direct, {} tunnel{}",
        d.len(),
        t.len(),
        capped_note(capped)
    );
    Ok((Latency::of_us(&d), Latency::of_us(&t), capped))
}

/// New connections to first echoed byte, direct and tunnel alternating.
async fn measure_connect(
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
        "  new connections: {} direct, {} tunnel{}",
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
