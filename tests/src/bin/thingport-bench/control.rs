//! `thingport-bench control`: one server holding the control channels of a fleet of devices
//! (10,000 by default), and the same fleet coming back after a server restart.
//!
//! The real release server is started on port 0 with a fresh data directory. As `Administrator`
//! the benchmark imports the real `ConnectionServicesExtension` package (built from
//! `target/release/libconnection_services.so`, as `thingport ext pack` makes it), creates the
//! device user `bench-device` with an application key, grants it through the template
//! `RemoteThing` (instance visibility to `Everyone`, and run-time `PropertyWrite` on
//! `isConnected` and `lastConnection` for its instances: two grants for the whole fleet, no
//! per-Thing grant), and creates one `RemoteThing` per agent over several connections at once.
//!
//! Then [`crate::fleet`] starts one simulated agent per Thing in this process (`hello`, `bind`,
//! then keep reading), and the benchmark measures:
//!
//! * the time until every agent is bound, and each agent's time to `bound`;
//! * the server's resident memory (`VmRSS`) with no agent connected and with all of them bound
//!   (and `isConnected` written), hence the memory per connected device;
//! * that the platform sees them: `ConnectionServicesSubsystem.GetConnectedThings` lists every
//!   Thing, a sample of `isConnected` properties turns true, and `Ping` on a sample of Things
//!   goes to the agents and back;
//! * the restart: SIGTERM with every channel open (time to exit), then the server is started
//!   again on the same address and data directory and the agents, reconnecting with backoff,
//!   must all be bound again: the time from the new server's `listening on` line to the last
//!   `bound`, and the platform's view again.
//!
//! Targets (`../shared/BENCHMARKS.md`): 10,000 channels on one server, at most 64 KiB of server
//! memory each, and all back within 60 s of a restart. They are reported (PASS / MISS), not
//! enforced; the tool fails (exit 1) only when a phase does not complete within its time cap,
//! when the platform's view is wrong, or when an agent meets a failure that retrying cannot fix
//! (a refused bind or key).

use crate::fleet::{Counters, Fleet, FleetConfig};
use crate::http::{snippet, Auth, Body, Conn, Target};
use crate::probe;
use crate::report::Machine;
use crate::restartable::{RestartableServer, Started};
use crate::server;
use crate::Outcome;
use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use clap::Args;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Target: server memory per connected device, in KiB.
pub const MEMORY_TARGET_KIB: f64 = 64.0;
/// Target: seconds from the restarted server listening to every agent bound again.
pub const RESTART_TARGET_S: f64 = 60.0;
/// Target: control channels one server holds.
pub const AGENTS_TARGET: usize = 10_000;

/// The device user every agent authenticates as (through its application key).
pub const USER: &str = "bench-device";
const KEY_NAME: &str = "bench-device-key";
const TEMPLATE: &str = "RemoteThing";
/// Agent `i` binds Thing `bench-device-0000i`.
const THING_PREFIX: &str = "bench-device-";
const SUBSYSTEM: &str = "ConnectionServicesSubsystem";
const ENTITY_SERVICES: &str = "/Thingworx/Resources/EntityServices/Services";
const UPLOAD_PATH: &str = "/Thingworx/ExtensionPackageUploader?purpose=import";
/// How long the server may take to exit after SIGTERM.
const STOP_CAP: Duration = Duration::from_secs(60);
/// How long the agents may take to notice that the stopped server closed their connections.
const CLOSE_NOTICE_CAP: Duration = Duration::from_secs(30);
/// Things whose `isConnected` is read, and on which `Ping` is called, after each connect phase.
const SAMPLE: usize = 5;
/// How often resident memory is sampled while waiting for it to settle.
const SETTLE_EVERY: Duration = Duration::from_millis(250);
/// Consecutive samples within [`SETTLE_BAND_KIB`] that count as settled.
const SETTLE_SAMPLES: usize = 5;
const SETTLE_BAND_KIB: u64 = 256;
/// File descriptors kept free besides the sockets of the agents.
const SPARE_FDS: u64 = 512;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The `thingport-server` binary [default: thingport-server next to this executable].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// The ConnectionServicesExtension library to package and import [default:
    /// libconnection_services.so next to this executable, i.e. target/release/ for
    /// target/release/thingport-bench].
    #[arg(long, value_name = "PATH")]
    pub cse_library: Option<PathBuf>,

    /// 500 agents instead of 10,000: done in well under a minute (a smoke run, not for the record).
    #[arg(long)]
    pub quick: bool,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Simulated agents, one control channel and one Thing each [default: 10000, --quick: 500].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub agents: Option<u64>,

    /// Initial connections in flight at once (reconnections after the restart are not gated).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connect_concurrency: u64,

    /// Agents connect from 127.0.0.1 ... 127.0.0.N (spreads them over N ephemeral-port ranges).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub source_addresses: u8,

    /// HTTP connections that create the Things concurrently.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub setup_connections: u64,

    /// First reconnect backoff ceiling of an agent, in ms (doubles per failure, full jitter).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub backoff_initial_ms: u64,

    /// Largest reconnect backoff ceiling of an agent, in ms.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub backoff_cap_ms: u64,

    /// Seconds every channel is held open, idle, after all are bound (longer than the idle
    /// timeout, so that pings must keep them alive) [default: 30, --quick: 2].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub hold: Option<u64>,

    /// Worker threads of the agents' runtime (1: one current-thread runtime, the leanest; the
    /// server shares the machine's cores with it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub client_threads: u64,

    /// The server's --log filter (its log goes to a file in its temporary data directory).
    #[arg(long, default_value = "warn")]
    pub server_log: String,

    /// Copy the server's log (both runs) to this file at the end, before the temporary data
    /// directory is removed.
    #[arg(long, value_name = "FILE")]
    pub save_server_log: Option<PathBuf>,
}

/// Counts and limits of one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub mode: &'static str,
    pub agents: usize,
    pub connect_concurrency: usize,
    pub source_addresses: u8,
    pub setup_connections: usize,
    pub backoff_initial_ms: u64,
    pub backoff_cap_ms: u64,
    /// Seconds all channels are held open and idle before the memory is read.
    pub hold_seconds: u64,
    /// Limit of one agent's attempt (connect, upgrade, hello, bind).
    pub attempt_timeout_seconds: f64,
    /// Hard time cap of any one phase.
    pub phase_cap_seconds: f64,
    /// Longest wait for resident memory to settle before it is read anyway.
    pub settle_cap_seconds: f64,
    pub client_threads: u64,
    pub server_log: String,
}

impl Settings {
    fn from_args(a: &ControlArgs) -> Self {
        let q = a.quick;
        Settings {
            mode: if q { "quick" } else { "full" },
            agents: a.agents.unwrap_or(if q { 500 } else { 10_000 }) as usize,
            connect_concurrency: a.connect_concurrency as usize,
            source_addresses: a.source_addresses,
            setup_connections: a.setup_connections as usize,
            backoff_initial_ms: a.backoff_initial_ms,
            backoff_cap_ms: a.backoff_cap_ms.max(a.backoff_initial_ms),
            hold_seconds: a.hold.unwrap_or(if q { 2 } else { 30 }),
            attempt_timeout_seconds: 15.0,
            phase_cap_seconds: if q { 30.0 } else { 120.0 },
            settle_cap_seconds: if q { 2.0 } else { 10.0 },
            client_threads: a.client_threads,
            server_log: a.server_log.clone(),
        }
    }

    fn cap(&self) -> Duration {
        Duration::from_secs_f64(self.phase_cap_seconds)
    }
}

/// The open-files limit of this process (the server, a child, inherits it).
#[derive(Clone, Debug, Serialize)]
pub struct FileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// How long the agents took to reach `bound`, from the start of a phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    pub agents: usize,
    /// The last agent's `bound`.
    pub all_seconds: f64,
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// The fleet's attempts, failures and reasons during the phase.
    pub counters: Counters,
    /// CPU time of the server and of this process (the agents) during the phase, per `bound`.
    pub server_cpu_us_per_bind: f64,
    pub bench_cpu_us_per_bind: f64,
}

impl Spread {
    fn of(times: &[Duration], counters: Counters, cpu: (f64, f64)) -> Spread {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            if times.is_empty() {
                return 0.0;
            }
            let i = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
            ms(times[i])
        };
        Spread {
            agents: times.len(),
            all_seconds: times.last().map(|d| d.as_secs_f64()).unwrap_or(0.0),
            first_ms: times.first().map(|d| ms(*d)).unwrap_or(0.0),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            server_cpu_us_per_bind: cpu.0 * 1e6 / counters.binds.max(1) as f64,
            bench_cpu_us_per_bind: cpu.1 * 1e6 / counters.binds.max(1) as f64,
            counters,
        }
    }
}

/// What the platform says about the fleet, through its API.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlatformView {
    /// Rows of `GetConnectedThings` naming one of the benchmark's Things and its user.
    pub connected_things: usize,
    /// How long that call took (as `Administrator`, one row per bound Thing).
    pub get_connected_ms: f64,
    /// Seconds from every agent bound to every sampled `isConnected` reading true.
    pub mirror_seconds: f64,
    pub is_connected_sampled: usize,
    /// `Ping` on sampled Things: the server's `roundTripMs` (platform → agent → platform).
    pub ping_round_trip_ms: Vec<f64>,
    /// The same calls seen from the REST client.
    pub ping_call_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryPoint {
    pub when: String,
    pub pid: u32,
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
    pub threads: u64,
    /// Whether resident memory had settled (when the point waited for it).
    pub settled: Option<bool>,
}

/// The server's stop with every channel open, and its restart.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    /// SIGTERM → the process exited.
    pub stop_seconds: f64,
    pub exit_status: String,
    /// SIGTERM → every agent had seen its connection end.
    pub all_closed_seconds: f64,
    /// The new process spawned → `listening on`.
    pub start_seconds: f64,
    /// From the new server's `listening on` line.
    pub back: Spread,
    pub platform: PlatformView,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub figure: String,
    pub target: String,
    pub measured: String,
    pub verdict: &'static str,
}

/// Everything `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub unix_time: u64,
    pub total_seconds: f64,
    pub machine: Machine,
    pub server_binary: String,
    pub cse_library: String,
    pub settings: Settings,
    pub open_files: FileLimit,
    pub cse_import_seconds: f64,
    pub things_created: usize,
    pub things_seconds: f64,
    pub connect: Spread,
    pub platform: PlatformView,
    /// Between the connect phase and the restart (the hold included): connections lost, pings
    /// answered.
    pub steady: Counters,
    /// CPU used while every channel was held open and idle, in % of one core.
    pub hold_server_cpu_percent: f64,
    pub hold_bench_cpu_percent: f64,
    pub restart: Restart,
    pub memory: Vec<MemoryPoint>,
    /// (all bound, settled − no agent, settled) ÷ agents.
    pub server_kib_per_connection: f64,
    /// This process (the agents): the same difference ÷ agents.
    pub bench_kib_per_connection: f64,
    pub targets: Vec<TargetCheck>,
    /// Lines the server logged at the --server-log level (warn by default), over both runs.
    pub server_log_lines: usize,
    /// Its distinct messages (without the timestamp), with their counts.
    pub server_log_messages: Vec<(String, usize)>,
    pub fatal_errors: u64,
}

/// Runs the whole control-channel benchmark.
pub async fn run(args: ControlArgs) -> Result<Outcome> {
    let st = Settings::from_args(&args);
    let started = Instant::now();
    let n = st.agents;
    let open_files = raise_open_files_limit()?;
    let needed = n as u64 + SPARE_FDS;
    ensure!(
        open_files.soft >= needed,
        "{n} agents need about {needed} open files in this process and in the server, but the limit is {} (hard {}): raise it (`ulimit -n`) or use fewer --agents",
        open_files.soft,
        open_files.hard
    );
    let binary = server::locate(args.server_bin.as_deref())?;
    let cse_library = server::locate_artefact(
        args.cse_library.as_deref(),
        "--cse-library",
        &server::library_file("connection_services"),
        "cargo build --release -p connection-services",
    )?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this thingport-bench is a debug build; its agents are slow. Use --release."
        );
    }
    let admin_password = format!(
        "bench-admin-{}-{}",
        std::process::id(),
        started.elapsed().as_nanos()
    );
    let (srv, first) = RestartableServer::start(&binary, &admin_password, &st.server_log)?;
    let addr = srv.addr;
    let pid = srv.pid().context("the server is not running")?;
    eprintln!(
        "server {} (pid {pid}) listening on {addr} after {:.2} s; {n} agents, open files limit {} (was {})",
        binary.display(),
        first.took().as_secs_f64(),
        open_files.soft,
        open_files.soft_before
    );
    let mut memory = vec![point("just started", pid, None)?];
    let admin = Target::new(
        addr,
        &Auth::Basic {
            user: "Administrator".into(),
            password: admin_password.clone(),
        },
    )?;
    let mut api = Api::new(addr, admin.clone());

    // Setup: the extension, the device user and its key, the grants, the Things.
    let t = Instant::now();
    import_cse(addr, &admin_password, &cse_library).await?;
    let cse_import_seconds = t.elapsed().as_secs_f64();
    let key = device_user(&mut api).await?;
    let things: Arc<Vec<String>> = Arc::new((0..n).map(thing_name).collect());
    let t = Instant::now();
    create_things(addr, &admin, &things, st.setup_connections, t + st.cap()).await?;
    let things_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "  setup: CSE imported in {cse_import_seconds:.2} s; {n} Things created in {things_seconds:.1} s ({:.0}/s)",
        n as f64 / things_seconds
    );
    let (idle, settled) = settle(pid, &st).await?;
    memory.push(point_of(
        &format!("no agent: CSE + {n} Things, settled"),
        pid,
        idle,
        Some(settled),
    )?);
    let bench_idle = probe::memory(std::process::id())?.vm_rss_kib;

    // Connect: every agent binds its Thing.
    let t0 = Instant::now();
    let cpu0 = cpu(pid);
    let fleet = Fleet::start(FleetConfig {
        server: addr,
        app_key: key,
        things: things.clone(),
        source_addresses: st.source_addresses,
        connect_concurrency: st.connect_concurrency,
        backoff_initial: Duration::from_millis(st.backoff_initial_ms),
        backoff_cap: Duration::from_millis(st.backoff_cap_ms),
        attempt_timeout: Duration::from_secs_f64(st.attempt_timeout_seconds),
    });
    fleet
        .wait_until("connect: every agent bound", t0 + st.cap(), |b| b == n)
        .await?;
    let connect = Spread::of(
        &fleet.bound_since(t0),
        fleet.counters(),
        cpu_since(pid, cpu0),
    );
    memory.push(point(
        &format!("{n} agents bound, at the last bind"),
        pid,
        None,
    )?);
    eprintln!(
        "  connect: {n} agents bound in {:.2} s (p50 {:.0} ms, p99 {:.0} ms per agent; {} attempts, {} failed)",
        connect.all_seconds,
        connect.p50_ms,
        connect.p99_ms,
        connect.counters.attempts,
        connect.counters.failed_attempts
    );
    let mut platform = PlatformView {
        mirror_seconds: wait_mirror(&mut api, &things, Instant::now() + st.cap()).await?,
        ..Default::default()
    };
    // Hold: every channel open and idle, only pings, for longer than the idle timeout. This is
    // a measured duration, not a wait for something to happen.
    let hold = Duration::from_secs(st.hold_seconds);
    let cpu_hold = cpu(pid);
    tokio::time::sleep(hold).await;
    let (hold_server_cpu, hold_bench_cpu) = cpu_since(pid, cpu_hold);
    let held = |c: f64| {
        if hold.is_zero() {
            0.0
        } else {
            c * 100.0 / hold.as_secs_f64()
        }
    };
    let (hold_server_cpu_percent, hold_bench_cpu_percent) =
        (held(hold_server_cpu), held(hold_bench_cpu));
    fleet
        .wait_until(
            "hold: every agent still (or again) bound",
            Instant::now() + st.cap(),
            |b| b == n,
        )
        .await?;
    eprintln!(
        "  hold: {n} channels open and idle for {} s: server CPU {hold_server_cpu_percent:.1}% of a core, agents {hold_bench_cpu_percent:.1}%; {} connections lost",
        st.hold_seconds,
        fleet.counters().since(&connect.counters).lost
    );
    let (bound_rss, settled) = settle(pid, &st).await?;
    memory.push(point_of(
        &format!(
            "{n} agents bound, isConnected written, held {} s, settled",
            st.hold_seconds
        ),
        pid,
        bound_rss,
        Some(settled),
    )?);
    let bench_bound = probe::memory(std::process::id())?.vm_rss_kib;
    platform.is_connected_sampled = SAMPLE.min(n);
    (platform.connected_things, platform.get_connected_ms) = connected_things(&mut api).await?;
    ensure!(
        platform.connected_things == n,
        "GetConnectedThings lists {} of the {n} bound Things",
        platform.connected_things
    );
    (platform.ping_round_trip_ms, platform.ping_call_ms) = ping_sample(&mut api, &things).await?;
    memory.push(point("after GetConnectedThings and Ping", pid, None)?);
    let kib_per = |with: u64, without: u64| (with as f64 - without as f64) / n as f64;
    let server_kib_per_connection = kib_per(bound_rss.vm_rss_kib, idle.vm_rss_kib);
    eprintln!(
        "  platform: GetConnectedThings lists {}; isConnected true {:.2} s after the last bind; Ping round trip {:.2} ms; server memory {:.1} KiB per connection",
        platform.connected_things,
        platform.mirror_seconds,
        median(&platform.ping_round_trip_ms),
        server_kib_per_connection
    );
    ensure!(
        fleet.bound() == n,
        "only {} of {n} agents are still bound before the restart",
        fleet.bound()
    );
    let steady = fleet.counters().since(&connect.counters);

    // Restart: SIGTERM with every channel open, start again on the same address and directory.
    let before = fleet.counters();
    let mut srv = srv;
    let t_term = Instant::now();
    let bench_cpu_term = probe::cpu_seconds(None);
    let (s, stopped) = tokio::task::spawn_blocking(move || {
        let r = srv.terminate(STOP_CAP);
        (srv, r)
    })
    .await
    .context("the stopping thread failed")?;
    srv = s;
    let (stop_took, exit_status) = stopped?;
    fleet
        .wait_until(
            "stop: every agent saw its connection end",
            t_term + CLOSE_NOTICE_CAP,
            |b| b == 0,
        )
        .await?;
    let all_closed_seconds = t_term.elapsed().as_secs_f64();
    eprintln!(
        "  stop: the server exited {:.2} s after SIGTERM ({exit_status}) with {n} channels open",
        stop_took.as_secs_f64()
    );
    let (s, again) = tokio::task::spawn_blocking(move || {
        let r = srv.start_again();
        (srv, r)
    })
    .await
    .context("the starting thread failed")?;
    srv = s;
    let second: Started = again?;
    let pid2 = srv.pid().context("the restarted server is not running")?;
    let at_listen = probe::memory(pid2)?;
    // The new server's CPU from `listening on` (read just after it), the agents' since SIGTERM
    // (their refused attempts included).
    let cpu_restart = (probe::cpu_seconds(Some(pid2)), bench_cpu_term);
    memory.push(point_of(
        "restarted: at `listening on`",
        pid2,
        at_listen,
        None,
    )?);
    fleet
        .wait_until(
            "restart: every agent bound again",
            second.listening_at + st.cap(),
            |b| b == n,
        )
        .await?;
    let back = Spread::of(
        &fleet.bound_since(second.listening_at),
        fleet.counters().since(&before),
        cpu_since(pid2, cpu_restart),
    );
    ensure!(
        back.agents == n,
        "only {} agents bound after the restarted server listened",
        back.agents
    );
    eprintln!(
        "  restart: server up {:.2} s after spawning; {n} agents bound again {:.2} s after `listening on` (p50 {:.0} ms, p99 {:.0} ms; {} attempts, {} failed)",
        second.took().as_secs_f64(),
        back.all_seconds,
        back.p50_ms,
        back.p99_ms,
        back.counters.attempts,
        back.counters.failed_attempts
    );
    let mut platform2 = PlatformView {
        mirror_seconds: wait_mirror(&mut api, &things, Instant::now() + st.cap()).await?,
        is_connected_sampled: SAMPLE.min(n),
        ..Default::default()
    };
    let (bound2, settled2) = settle(pid2, &st).await?;
    memory.push(point_of(
        &format!("restarted: {n} agents bound again, settled"),
        pid2,
        bound2,
        Some(settled2),
    )?);
    (platform2.connected_things, platform2.get_connected_ms) = connected_things(&mut api).await?;
    ensure!(
        platform2.connected_things == n,
        "after the restart GetConnectedThings lists {} of the {n} bound Things",
        platform2.connected_things
    );
    (platform2.ping_round_trip_ms, platform2.ping_call_ms) = ping_sample(&mut api, &things).await?;
    srv.check_alive()?;
    let fatal_errors = fleet.counters().fatal;
    fleet.stop(Duration::from_secs(30)).await?;

    let log = srv.log_text();
    if let Some(path) = &args.save_server_log {
        std::fs::write(path, &log).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote the server log to {}", path.display());
    }
    let restart = Restart {
        stop_seconds: stop_took.as_secs_f64(),
        exit_status: exit_status.to_string(),
        all_closed_seconds,
        start_seconds: second.took().as_secs_f64(),
        back,
        platform: platform2,
    };
    let mut report = Report {
        tool: "thingport-bench control",
        version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        total_seconds: started.elapsed().as_secs_f64(),
        machine: Machine::probe(),
        server_binary: binary.display().to_string(),
        cse_library: cse_library.display().to_string(),
        settings: st.clone(),
        open_files,
        cse_import_seconds,
        things_created: n,
        things_seconds,
        connect,
        platform,
        steady,
        hold_server_cpu_percent,
        hold_bench_cpu_percent,
        restart,
        memory,
        server_kib_per_connection,
        bench_kib_per_connection: kib_per(bench_bound, bench_idle),
        targets: Vec::new(),
        server_log_lines: log.lines().count(),
        server_log_messages: log_messages(&log),
        fatal_errors,
    };
    report.targets = targets(&report);
    print(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(Outcome {
        requests_failed: fatal_errors,
    })
}

fn thing_name(i: usize) -> String {
    format!("{THING_PREFIX}{i:05}")
}

/// Raises this process's soft limit of open files to its hard limit (the server, started later
/// as a child, inherits it).
#[allow(unsafe_code)]
fn raise_open_files_limit() -> Result<FileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let soft_before = lim.rlim_cur;
    // An unlimited hard limit is not a valid soft limit for open files: stop at 1,048,576.
    let want = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
        lim.rlim_cur = want;
    }
    Ok(FileLimit {
        soft_before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Uploads the package as `Administrator` and checks that it imported.
async fn import_cse(addr: SocketAddr, admin_password: &str, library: &Path) -> Result<()> {
    let lib =
        std::fs::read(library).with_context(|| format!("cannot read {}", library.display()))?;
    let package = thingport_e2e::packages::connection_services_package_of(&lib);
    import_package(addr, admin_password, "CSE", package).await
}

/// Uploads an extension package (`what` names it in errors) as `Administrator`, as a browser
/// would (multipart field `file`), and checks that it imported.
pub(crate) async fn import_package(
    addr: SocketAddr,
    admin_password: &str,
    what: &str,
    package: Vec<u8>,
) -> Result<()> {
    let boundary = "thingport-bench-boundary-5c2e";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"package.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&package);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req: Request<Body> = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = UPLOAD_PATH.parse()?;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("Administrator:{admin_password}"));
    let h = req.headers_mut();
    h.insert(HOST, HeaderValue::from_str(&addr.to_string())?);
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {basic}"))?,
    );
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))?,
    );
    let mut conn = Conn::connect(addr).await?;
    let (status, answer) = conn
        .send(req)
        .await
        .with_context(|| format!("setup: importing {what}"))?;
    ensure!(
        status == StatusCode::OK,
        "setup: importing {what} answered {status}: {}",
        snippet(&answer)
    );
    let v: Value = serde_json::from_slice(&answer)
        .with_context(|| format!("setup: the import answered {}", snippet(&answer)))?;
    ensure!(
        v["rows"][0]["extensionReportStatus"] == json!(0),
        "setup: {what} was not imported: {}",
        snippet(&answer)
    );
    Ok(())
}

/// Creates the device user and its application key, and grants it the fleet through the
/// template: instance visibility to `Everyone` (the user's organization) and run-time
/// `PropertyWrite` on the two properties a bind checks. Returns the key.
async fn device_user(api: &mut Api) -> Result<String> {
    let password = format!("bench-{}-Pw-0123456789", std::process::id());
    let template = format!("/Thingworx/ThingTemplates/{TEMPLATE}/Services");
    let mut steps: Vec<(String, Value)> = vec![
        (
            format!("{ENTITY_SERVICES}/CreateUser"),
            json!({"name": USER, "password": password}),
        ),
        (
            format!("{template}/AddInstanceVisibilityPermission"),
            json!({"organization": "Everyone"}),
        ),
    ];
    for property in ["isConnected", "lastConnection"] {
        steps.push((
            format!("{template}/AddRunTimePermission"),
            json!({"type": "PropertyWrite", "resource": property, "principal": USER,
                   "principalType": "User", "allow": true}),
        ));
    }
    for (path, body) in &steps {
        api.call(path, Some(body), &format!("setup: POST {path} {body}"))
            .await?;
    }
    let key = api
        .call(
            &format!("{ENTITY_SERVICES}/CreateApplicationKey"),
            Some(&json!({"name": KEY_NAME, "user": USER})),
            "setup: CreateApplicationKey",
        )
        .await?;
    Ok(key["rows"][0]["keyId"]
        .as_str()
        .with_context(|| format!("CreateApplicationKey answered no rows[0].keyId: {key}"))?
        .to_string())
}

/// Creates every Thing, over `connections` HTTP connections at once.
async fn create_things(
    addr: SocketAddr,
    admin: &Target,
    things: &Arc<Vec<String>>,
    connections: usize,
    deadline: Instant,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..connections.min(things.len()) {
        let things = things.clone();
        let mut api = Api::new(addr, admin.clone());
        tasks.spawn(async move {
            for name in things.iter().skip(k).step_by(connections) {
                api.call(
                    &format!("{ENTITY_SERVICES}/CreateThing"),
                    Some(&json!({"name": name, "thingTemplateName": TEMPLATE})),
                    &format!("setup: CreateThing {name}"),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    let all = async {
        while let Some(r) = tasks.join_next().await {
            r.context("a setup task failed")??;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), all).await {
        Ok(r) => r,
        Err(_) => bail!(
            "setup: creating {} Things did not finish within the phase's time cap",
            things.len()
        ),
    }
}

/// The Things whose `isConnected` is read and on which `Ping` is called: spread over the fleet.
fn sample(things: &[String]) -> Vec<&str> {
    let n = things.len();
    let k = SAMPLE.min(n);
    (0..k)
        .map(|i| things[if k > 1 { i * (n - 1) / (k - 1) } else { 0 }].as_str())
        .collect()
}

/// Waits until every sampled Thing's `isConnected` reads true (the extension writes the mirror
/// in batches every 250 ms); returns the seconds it took.
async fn wait_mirror(api: &mut Api, things: &[String], deadline: Instant) -> Result<f64> {
    let t = Instant::now();
    for thing in sample(things) {
        let path = format!("/Thingworx/Things/{thing}/Properties/isConnected");
        loop {
            let v = api
                .call(&path, None, &format!("read {thing}.isConnected"))
                .await?;
            if v["rows"][0]["isConnected"] == json!(true) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{thing}.isConnected is still {v} at the end of the phase's time cap, though its agent is bound");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Rows of `GetConnectedThings` that name one of the benchmark's Things and its user, and the
/// time the call took in ms.
async fn connected_things(api: &mut Api) -> Result<(usize, f64)> {
    let t = Instant::now();
    let v = api
        .call(
            &format!("/Thingworx/Subsystems/{SUBSYSTEM}/Services/GetConnectedThings"),
            Some(&json!({})),
            "GetConnectedThings",
        )
        .await?;
    let rows = v["rows"][0]["result"].as_array().with_context(|| {
        format!(
            "GetConnectedThings answered no rows[0].result array: {}",
            snippet(v.to_string().as_bytes())
        )
    })?;
    let took = t.elapsed().as_secs_f64() * 1e3;
    let n = rows
        .iter()
        .filter(|r| {
            r["user"] == json!(USER)
                && r["thing"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(THING_PREFIX))
        })
        .count();
    Ok((n, took))
}

/// `Ping` on the sampled Things: (the server's round trip, the REST call's time), in ms.
async fn ping_sample(api: &mut Api, things: &[String]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut rtt, mut call) = (Vec::new(), Vec::new());
    for thing in sample(things) {
        let t = Instant::now();
        let v = api
            .call(
                &format!("/Thingworx/Things/{thing}/Services/Ping"),
                Some(&json!({})),
                &format!("Ping {thing}"),
            )
            .await?;
        call.push(t.elapsed().as_secs_f64() * 1e3);
        rtt.push(
            v["rows"][0]["result"]["roundTripMs"]
                .as_f64()
                .with_context(|| format!("Ping {thing} answered no roundTripMs: {v}"))?,
        );
    }
    Ok((rtt, call))
}

/// Sequential API calls on one keep-alive connection, reconnecting when the server closed it
/// (it closes connections idle for 10 s, and the restart closes them all).
struct Api {
    addr: SocketAddr,
    target: Target,
    conn: Option<Conn>,
}

impl Api {
    fn new(addr: SocketAddr, target: Target) -> Self {
        Api {
            addr,
            target,
            conn: None,
        }
    }

    /// A `GET` (no body) or a JSON `POST` that must be answered `200` with JSON.
    async fn call(&mut self, path: &str, body: Option<&Value>, what: &str) -> Result<Value> {
        let req = self.target.prepare(path, body)?;
        let mut answer = None;
        for _ in 0..2 {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => self.conn.insert(Conn::connect(self.addr).await?),
            };
            match conn.send(req.request()).await {
                Ok(a) => {
                    answer = Some(a);
                    break;
                }
                Err(_) => self.conn = None,
            }
        }
        let Some((status, bytes)) = answer else {
            bail!("{what}: no answer on two connections");
        };
        if status != StatusCode::OK {
            bail!("{what}: expected 200, got {status}: {}", snippet(&bytes));
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: answer is not JSON: {}", snippet(&bytes)))
    }
}

/// CPU seconds so far of the server and of this process.
fn cpu(pid: u32) -> (f64, f64) {
    (probe::cpu_seconds(Some(pid)), probe::cpu_seconds(None))
}

/// CPU seconds of the server and of this process since `before`.
fn cpu_since(pid: u32, before: (f64, f64)) -> (f64, f64) {
    let (s, b) = cpu(pid);
    (s - before.0, b - before.1)
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn point(when: &str, pid: u32, settled: Option<bool>) -> Result<MemoryPoint> {
    point_of(when, pid, probe::memory(pid)?, settled)
}

fn point_of(when: &str, pid: u32, m: probe::Memory, settled: Option<bool>) -> Result<MemoryPoint> {
    Ok(MemoryPoint {
        when: when.to_string(),
        pid,
        vm_rss_kib: m.vm_rss_kib,
        vm_hwm_kib: m.vm_hwm_kib,
        threads: threads(pid),
        settled,
    })
}

/// Resident memory once it stops moving: [`SETTLE_SAMPLES`] samples in a row within
/// [`SETTLE_BAND_KIB`], or the last sample at the settle cap (then `false`).
async fn settle(pid: u32, st: &Settings) -> Result<(probe::Memory, bool)> {
    let deadline = Instant::now() + Duration::from_secs_f64(st.settle_cap_seconds);
    let mut recent: Vec<u64> = Vec::new();
    loop {
        let m = probe::memory(pid)?;
        recent.push(m.vm_rss_kib);
        if recent.len() > SETTLE_SAMPLES {
            recent.remove(0);
        }
        let band = recent.iter().max().unwrap_or(&0) - recent.iter().min().unwrap_or(&0);
        if recent.len() == SETTLE_SAMPLES && band <= SETTLE_BAND_KIB {
            return Ok((m, true));
        }
        if Instant::now() >= deadline {
            return Ok((m, false));
        }
        tokio::time::sleep(SETTLE_EVERY).await;
    }
}

fn median(v: &[f64]) -> f64 {
    crate::platform::median(v.to_vec())
}

/// The server log's distinct messages (the part after the level), most frequent first.
fn log_messages(log: &str) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in log.lines() {
        let msg = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
            .iter()
            .find_map(|lvl| line.find(lvl).map(|i| line[i..].to_string()))
            .unwrap_or_else(|| line.to_string());
        // Connection ids and counts vary from line to line: group the lines by their words.
        let key: String = msg
            .split_whitespace()
            .map(|w| {
                if w.chars().any(|c| c.is_ascii_digit()) {
                    "N"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        *counts.entry(key).or_insert(0) += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.truncate(10);
    v
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

fn targets(r: &Report) -> Vec<TargetCheck> {
    let n = r.settings.agents;
    let quick = if n < AGENTS_TARGET {
        format!(" ({n} agents: not for the record)")
    } else {
        String::new()
    };
    vec![
        TargetCheck {
            figure: format!("control channels held by one server{quick}"),
            target: thousands(AGENTS_TARGET as f64),
            measured: format!(
                "{} bound, {} listed by GetConnectedThings",
                thousands(r.connect.agents as f64),
                thousands(r.platform.connected_things as f64)
            ),
            verdict: if n < AGENTS_TARGET {
                "–"
            } else {
                verdict(r.platform.connected_things == n)
            },
        },
        TargetCheck {
            figure: format!("server memory per connected device{quick}"),
            target: format!("≤ {MEMORY_TARGET_KIB} KiB"),
            measured: format!("{:.1} KiB", r.server_kib_per_connection),
            verdict: verdict(r.server_kib_per_connection <= MEMORY_TARGET_KIB),
        },
        TargetCheck {
            figure: format!("restart: `listening on` → every agent bound again{quick}"),
            target: format!("< {RESTART_TARGET_S} s"),
            measured: format!("{:.2} s", r.restart.back.all_seconds),
            verdict: verdict(r.restart.back.all_seconds < RESTART_TARGET_S),
        },
    ]
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn reasons(c: &Counters) -> String {
    if c.reasons.is_empty() {
        return "–".into();
    }
    c.reasons
        .iter()
        .map(|(k, v)| format!("{k} × {}", thousands(*v as f64)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The results tables (Markdown, for `docs/benchmarks.md`), on stdout.
pub fn print(r: &Report) {
    let st = &r.settings;
    let n = thousands(st.agents as f64);
    println!();
    println!(
        "thingport-bench control ({} mode, {n} agents, {} initial connects in flight, from {} source addresses) on {} CPU(s), {}",
        st.mode, st.connect_concurrency, st.source_addresses, r.machine.cpus, r.machine.cpu_model
    );
    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| setup: CSE import; {n} RemoteThings created over {} connections | {:.2} s; {:.1} s ({}/s) |",
        st.setup_connections,
        r.cse_import_seconds,
        r.things_seconds,
        thousands(st.agents as f64 / r.things_seconds)
    );
    let spread = |s: &Spread| {
        format!(
            "{:.2} s (agents bound by: first {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms; CPU per bind: server {:.0} µs, agents {:.0} µs)",
            s.all_seconds, s.first_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.server_cpu_us_per_bind, s.bench_cpu_us_per_bind
        )
    };
    println!(
        "| connect + hello + bind, all {n} agents | {} |",
        spread(&r.connect)
    );
    println!(
        "| attempts / failed, connect phase | {} / {} |",
        thousands(r.connect.counters.attempts as f64),
        thousands(r.connect.counters.failed_attempts as f64)
    );
    let view = |p: &PlatformView| {
        format!(
            "GetConnectedThings lists {} (call: {:.0} ms); {} sampled isConnected true {:.2} s after the last bind; Ping round trip p50 {:.2} ms (REST call {:.2} ms)",
            thousands(p.connected_things as f64),
            p.get_connected_ms,
            p.is_connected_sampled,
            p.mirror_seconds,
            median(&p.ping_round_trip_ms),
            median(&p.ping_call_ms)
        )
    };
    println!("| platform's view | {} |", view(&r.platform));
    println!(
        "| server memory per connection (all bound − no agent) ÷ {n} | {:.1} KiB |",
        r.server_kib_per_connection
    );
    println!(
        "| bench (agents') memory per connection | {:.1} KiB |",
        r.bench_kib_per_connection
    );
    println!(
        "| hold: all {n} channels open and idle for {} s | server CPU {:.1}% of a core, agents {:.1}%; {} connections lost |",
        st.hold_seconds, r.hold_server_cpu_percent, r.hold_bench_cpu_percent, r.steady.lost
    );
    let rs = &r.restart;
    println!(
        "| stop: SIGTERM → server exited, {n} channels open | {:.2} s ({}); every agent saw its close after {:.2} s |",
        rs.stop_seconds, rs.exit_status, rs.all_closed_seconds
    );
    println!(
        "| restart: spawn → `listening on` | {:.2} s |",
        rs.start_seconds
    );
    println!(
        "| restart: `listening on` → all {n} agents bound again | {} |",
        spread(&rs.back)
    );
    println!(
        "| attempts / failed, SIGTERM → all bound again | {} / {} |",
        thousands(rs.back.counters.attempts as f64),
        thousands(rs.back.counters.failed_attempts as f64)
    );
    println!(
        "| platform's view after the restart | {} |",
        view(&rs.platform)
    );
    println!();
    println!("| target | measured | verdict |");
    println!("|---|--:|---|");
    for t in &r.targets {
        println!(
            "| {}: {} | {} | {} |",
            t.figure, t.target, t.measured, t.verdict
        );
    }
    println!();
    println!("| server memory | VmRSS MiB | VmHWM MiB | threads |");
    println!("|---|--:|--:|--:|");
    for m in &r.memory {
        let settled = match m.settled {
            Some(false) => " (not settled)",
            _ => "",
        };
        println!(
            "| {}{settled} | {:.1} | {:.1} | {} |",
            m.when,
            m.vm_rss_kib as f64 / 1024.0,
            m.vm_hwm_kib as f64 / 1024.0,
            m.threads
        );
    }
    println!();
    println!("why attempts failed or connections ended:");
    println!("- connect phase: {}", reasons(&r.connect.counters));
    println!("- steady: {}", reasons(&r.steady));
    println!("- stop and restart: {}", reasons(&r.restart.back.counters));
    println!();
    println!(
        "server log lines at the --server-log level ({}): {}",
        st.server_log, r.server_log_lines
    );
    for (msg, count) in &r.server_log_messages {
        println!("  {count} × {msg}");
    }
    println!(
        "fatal agent errors: {}; total {:.0} s",
        r.fatal_errors, r.total_seconds
    );
}
