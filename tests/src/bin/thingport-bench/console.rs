//! `thingport-bench console`: browser consoles (SPEC §11) against `thingport connect`, side by
//! side in one run, with the real release binaries on loopback.
//!
//! The tool starts `thingport-server` with CSE and RAE, the site of the tunnel benchmark
//! ([`crate::tunnel::site`]), `thingport-gas` and `thingport-agent` for `gw-1`, whose endpoints
//! are two targets of its own ([`wire`]): `telnet` (protocol TELNET), an echo server, and `vnc`
//! (protocol VNC), a fake RFB 3.8 server that answers every FramebufferUpdateRequest with a full
//! 1920×1080 Raw update of 32-bit pixels (8,294,400 bytes of pixels). It starts one
//! `thingport connect gw-1 <endpoint> --local 127.0.0.1:0` per endpoint, and one console per
//! endpoint: `StartConsoleSession` as the operator, then a WebSocket client playing the browser
//! (subprotocol, ticket first, `ready`, binary messages).
//!
//! 1. **Keystroke echo**: one byte written, its echo read, one at a time, through the console
//!    (browser → GAS's Telnet client → agent → echo server and back) and through `thingport
//!    connect` (client → RAC → GAS → agent → echo server), in alternating blocks of 100.
//!    Target: p50(console) − p50(connect) ≤ 1 ms.
//! 2. **VNC full update**: after the client side of the RFB 3.8 handshake (the GAS's security
//!    None toward the browser; the plain handshake with the server through `connect`), full
//!    non-incremental updates requested one after another, console and connect alternating, each
//!    checked byte for byte. Target: console updates/s ÷ connect updates/s ≥ 1.0.
//!
//! The CPU seconds of the GAS, the agent and the RAC during each path's updates are recorded
//! beside them (where the time goes). Targets are reported PASS / MISS, not enforced; the tool
//! fails only when something does not work.

mod report;
mod wire;

use crate::probe;
use crate::report::Machine;
use crate::server::ServerProcess;
use crate::tunnel::site::{self, Api, ChildProc, DEVICE, GAS_NAME, OPERATOR};
use crate::tunnel::Artefacts;
use crate::Outcome;
use anyhow::{ensure, Context, Result};
use clap::Args;
use report::{
    print, updates_of, verdict, ConsoleReport, Keystrokes, Latency, PathUpdates, Vnc,
    KEYSTROKE_P50_MARGIN_US, VNC_RATIO_TARGET,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wire::{Console, Stream, Target, Tcp};

/// Keystrokes per block; console and connect blocks alternate.
const BLOCK: usize = 100;
/// Keystrokes per path before the measured ones, not counted.
const WARMUP_KEYS: usize = 50;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// A smoke run (200 keystrokes, 5 updates per path): checks that everything works, not for
    /// the record.
    #[arg(long)]
    pub quick: bool,

    /// Keystrokes echoed per path [default: 2000, --quick: 200].
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub keystrokes: Option<u64>,

    /// Full-screen VNC updates per path [default: 30, --quick: 5].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub updates: Option<u64>,

    /// Also write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// The --log filter of the GAS, the agent and the RACs [default: their own default, info].
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

/// The running site, declared in the order it is dropped (killed): clients first.
struct Site {
    rac_telnet: ChildProc,
    rac_vnc: ChildProc,
    agent: ChildProc,
    gas: ChildProc,
    server: ServerProcess,
    operator: Api,
}

impl Site {
    fn check_alive(&mut self) -> Result<()> {
        self.server.check_alive()?;
        self.gas.check_alive()?;
        self.agent.check_alive()?;
        self.rac_telnet.check_alive()?;
        self.rac_vnc.check_alive()
    }

    /// A console on `endpoint`: `StartConsoleSession` as the operator, and its WebSocket
    /// opened up to `ready`.
    async fn console(&self, endpoint: &str) -> Result<Console> {
        let v = self
            .operator
            .thing_service(
                DEVICE,
                "StartConsoleSession",
                json!({"remoteEndpoint": endpoint}),
            )
            .await?;
        let row = &v["rows"][0];
        let field = |name: &str| -> Result<String> {
            row[name]
                .as_str()
                .map(String::from)
                .with_context(|| format!("StartConsoleSession answered no {name}: {v}"))
        };
        let (url, ticket) = (field("consoleUrl")?, field("ticket")?);
        let console = blocking(move || Console::open(&url, &ticket)).await?;
        ensure!(
            console.ready["protocol"]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case(endpoint)),
            "the {endpoint} console is ready as {}",
            console.ready
        );
        Ok(console)
    }
}

/// Runs `f` on a thread of its own (the clients use blocking sockets).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("console-measure".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await.context("a measurement thread panicked")?
}

async fn start_site(
    art: &Artefacts,
    args: &ConsoleArgs,
    telnet: SocketAddr,
    vnc: SocketAddr,
) -> Result<Site> {
    let admin_password = format!("bench-admin-{}-Pw-0123456789", std::process::id());
    let server = ServerProcess::start(&art.server, &admin_password, &args.server_log)?;
    let addr = server.addr;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let cse = thingport_e2e::packages::connection_services_package_of(&read(&art.cse)?);
    crate::control::import_package(addr, &admin_password, "CSE", cse).await?;
    let rae = thingport_e2e::packages::remote_access_package_of(&read(&art.rae)?);
    crate::control::import_package(addr, &admin_password, "RAE", rae).await?;
    let admin = Api::new(addr, "Administrator", &admin_password)?;
    let creds = site::create(&admin, &[("telnet", telnet), ("vnc", vnc)]).await?;
    // The site declares its endpoints TCP; consoles need their protocols.
    let rows: Vec<Value> = [("telnet", "TELNET", telnet), ("vnc", "VNC", vnc)]
        .iter()
        .map(|(n, p, a)| json!({"name": n, "protocol": p, "host": a.ip().to_string(), "port": a.port()}))
        .collect();
    admin
        .put(
            &format!("/Thingworx/Things/{DEVICE}/Properties/endpoints"),
            json!({"endpoints": {"rows": rows}}),
        )
        .await?;
    let url = format!("http://{addr}");
    let log: Vec<&str> = match &args.child_log {
        Some(f) => vec!["--log", f.as_str()],
        None => vec![],
    };

    let mut gas_args = vec!["--url", url.as_str(), "--name", GAS_NAME];
    gas_args.extend(["--listen", "127.0.0.1:0"]);
    gas_args.extend(&log);
    let key = [("THINGPORT_APP_KEY", creds.gas_key.as_str())];
    let mut gas = ChildProc::spawn("thingport-gas", &art.gas, &gas_args, &key, true)?;
    admin.wait_connected(GAS_NAME, &mut gas).await?;
    admin
        .thing_service(GAS_NAME, "EnableForRemoteSessions", json!({}))
        .await?;

    let mut agent_args = vec!["--url", url.as_str(), "--thing", DEVICE];
    agent_args.extend(&log);
    let key = [("THINGPORT_APP_KEY", creds.device_key.as_str())];
    let mut agent = ChildProc::spawn("thingport-agent", &art.agent, &agent_args, &key, false)?;
    admin.wait_connected(DEVICE, &mut agent).await?;

    let env = [
        ("THINGPORT_URL", url.as_str()),
        ("THINGPORT_USER", OPERATOR),
        ("THINGPORT_PASSWORD", creds.operator_password.as_str()),
    ];
    let rac = |endpoint: &str| {
        let mut a = vec!["connect", DEVICE, endpoint, "--local", "127.0.0.1:0"];
        a.extend(&log);
        let name = format!("thingport connect ({endpoint})");
        ChildProc::spawn(&name, &art.rac, &a, &env, true)
    };
    Ok(Site {
        rac_telnet: rac("telnet")?,
        rac_vnc: rac("vnc")?,
        agent,
        gas,
        server,
        operator: Api::new(addr, OPERATOR, &creds.operator_password)?,
    })
}

/// The paths measured, in this order: the console, `thingport connect`, and the client straight
/// to the target (the baseline).
const PATHS: usize = 3;

/// The keystroke echo on every path, in alternating blocks after a warm-up of each.
fn measure_keystrokes(
    mut paths: [Box<dyn Stream + Send>; PATHS],
    n: usize,
    cap: Duration,
) -> Result<[Vec<Duration>; PATHS]> {
    let started = Instant::now();
    let mut out: [Vec<Duration>; PATHS] = Default::default();
    let mut key = 0usize;
    // Printable, never IAC (0xff) or CR (which Telnet pads with a NUL).
    let mut next = || {
        key += 1;
        b'a' + (key % 26) as u8
    };
    for s in paths.iter_mut() {
        wire::settle(s.as_mut())?;
        for _ in 0..WARMUP_KEYS {
            wire::keystroke(s.as_mut(), next())?;
        }
    }
    while out[0].len() < n {
        for (s, times) in paths.iter_mut().zip(out.iter_mut()) {
            for _ in 0..BLOCK.min(n - times.len()) {
                let k = next();
                let t = Instant::now();
                wire::keystroke(s.as_mut(), k)?;
                times.push(t.elapsed());
            }
        }
        ensure!(
            started.elapsed() < cap,
            "the keystrokes took over {cap:?} ({} of {n} done): far too slow",
            out[0].len()
        );
    }
    Ok(out)
}

/// Full-screen updates on every path, alternating one by one, after the handshakes and one
/// update of each not counted. `pids`: the GAS, the agent and the `vnc` RAC.
fn measure_updates(
    mut paths: [Box<dyn Stream + Send>; PATHS],
    k: usize,
    cap: Duration,
    pids: [u32; 3],
) -> Result<[PathUpdates; PATHS]> {
    let mut buf = vec![0u8; wire::UPDATE_BYTES];
    for s in paths.iter_mut() {
        wire::rfb_handshake(s.as_mut())?;
        wire::full_update(s.as_mut(), &mut buf)?;
    }
    let cpu = || {
        [
            probe::cpu_seconds(Some(pids[0])),
            probe::cpu_seconds(Some(pids[1])),
            probe::cpu_seconds(Some(pids[2])),
            probe::cpu_seconds(None),
        ]
    };
    let mut out: [PathUpdates; PATHS] = Default::default();
    let started = Instant::now();
    for _ in 0..k {
        for (s, (times, spent)) in paths.iter_mut().zip(out.iter_mut()) {
            let before = cpu();
            let t = Instant::now();
            wire::full_update(s.as_mut(), &mut buf)?;
            times.push(t.elapsed());
            let after = cpu();
            for (j, c) in spent.iter_mut().enumerate() {
                *c += after[j] - before[j];
            }
        }
        ensure!(
            started.elapsed() < cap,
            "the updates took over {cap:?}: far too slow"
        );
    }
    // A process off a path is idle during its updates: its CPU is not the path's cost. The
    // console has no RAC; the direct path has neither GAS nor agent nor RAC.
    out[0].1[2] = 0.0;
    out[2].1[..3].fill(0.0);
    Ok(out)
}

pub async fn run(args: ConsoleArgs) -> Result<Outcome> {
    let started = Instant::now();
    let keys = args
        .keystrokes
        .unwrap_or(if args.quick { 200 } else { 2_000 }) as usize;
    let updates = args.updates.unwrap_or(if args.quick { 5 } else { 30 }) as usize;
    let cap = Duration::from_secs(if args.quick { 60 } else { 300 });
    let art = Artefacts::locate(args.bin_dir.as_deref())?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this thingport-bench is a debug build; its clients are slow. Use --release."
        );
    }
    let echo = Target::echo()?;
    let rfb = Target::rfb()?;
    let mut site = start_site(&art, &args, echo.addr, rfb.addr).await?;
    eprintln!(
        "  site up in {:.1} s: server {}, GAS {} (pid {}), agent pid {}, RAC telnet {} (pid {}), RAC vnc {} (pid {})",
        started.elapsed().as_secs_f64(),
        site.server.addr,
        site.gas.addr()?,
        site.gas.pid(),
        site.agent.pid(),
        site.rac_telnet.addr()?,
        site.rac_telnet.pid(),
        site.rac_vnc.addr()?,
        site.rac_vnc.pid(),
    );

    let paths: [Box<dyn Stream + Send>; PATHS] = [
        Box::new(site.console("telnet").await?),
        Box::new(Tcp::connect(site.rac_telnet.addr()?)?),
        Box::new(Tcp::connect(echo.addr)?),
    ];
    let measured = blocking(move || measure_keystrokes(paths, keys, cap)).await;
    let [kc, kd, kx] = blame(&mut site, measured)?;
    let (kc, kd, kx) = (Latency::of(&kc), Latency::of(&kd), Latency::of(&kx));
    let diff = kc.p50_us - kd.p50_us;
    let keystrokes = Keystrokes {
        console: kc,
        connect: kd,
        direct: kx,
        p50_difference_us: diff,
        target_us: KEYSTROKE_P50_MARGIN_US,
        verdict: verdict(diff <= KEYSTROKE_P50_MARGIN_US),
    };
    eprintln!(
        "  keystroke echo: console p50 {:.0} µs p99 {:.0} µs, connect p50 {:.0} µs p99 {:.0} µs ({} each)",
        kc.p50_us, kc.p99_us, kd.p50_us, kd.p99_us, kc.samples
    );

    let paths: [Box<dyn Stream + Send>; PATHS] = [
        Box::new(site.console("vnc").await?),
        Box::new(Tcp::connect(site.rac_vnc.addr()?)?),
        Box::new(Tcp::connect(rfb.addr)?),
    ];
    let pids = [site.gas.pid(), site.agent.pid(), site.rac_vnc.pid()];
    let measured = blocking(move || measure_updates(paths, updates, cap, pids)).await;
    let [uc, ud, ux] = blame(&mut site, measured)?;
    let (uc, ud, ux) = (updates_of(&uc), updates_of(&ud), updates_of(&ux));
    let ratio = uc.updates_per_s / ud.updates_per_s;
    let ratio_at_p50 = ud.per_update.p50_us / uc.per_update.p50_us;
    eprintln!(
        "  VNC 1920×1080 update: console {:.1}/s ({:.0} MiB/s), connect {:.1}/s ({:.0} MiB/s) ({} each)",
        uc.updates_per_s, uc.mib_per_s, ud.updates_per_s, ud.mib_per_s, uc.updates
    );
    let vnc = Vnc {
        width: wire::WIDTH,
        height: wire::HEIGHT,
        bytes_per_update: wire::UPDATE_BYTES,
        console: uc,
        connect: ud,
        direct: ux,
        ratio,
        ratio_at_p50,
        target_ratio: VNC_RATIO_TARGET,
        verdict: verdict(ratio >= VNC_RATIO_TARGET),
    };
    let report = ConsoleReport {
        tool: "thingport-bench console",
        version: env!("CARGO_PKG_VERSION"),
        mode: if args.quick { "quick" } else { "full" },
        machine: Machine::probe(),
        keystrokes,
        vnc,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    print(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(Outcome { requests_failed: 0 })
}

/// A failed phase's error, with the reason when a child died; a phase that succeeded still
/// fails when a child died during it.
fn blame<T>(site: &mut Site, r: Result<T>) -> Result<T> {
    match (r, site.check_alive()) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(dead)) => Err(dead),
        (Err(e), Err(dead)) => Err(anyhow::anyhow!("{e:#}, because {dead:#}")),
    }
}
