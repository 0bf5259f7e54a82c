//! `thingport-bench`: benchmarks that drive the real Thingport binaries from a separate process.
//!
//! Each subcommand measures one part of the system against the targets of `docs/benchmarks.md`:
//!
//! * `platform`: permission-checked REST calls (property read, service call, Thing create) on one
//!   and on many keep-alive connections, with `/healthz` as the same-run HTTP baseline.
//! * `extension`: the host → extension → host round trip of a service call into the real fixture
//!   extension library, in-process, blocking and async, against a JSON-only baseline.
//! * `control`: 10,000 device control channels (`thingport.v1` WebSockets) held by one server with
//!   the ConnectionServicesExtension: time to bind them all, server memory per connection, and
//!   the fleet coming back after a server restart.
//!
//! * `tunnel`: the remote-session tunnel (RAC → GAS → agent → target) with the real binaries:
//!   bulk throughput and its CPU cost, round trips, new connections and new sessions, bursts of
//!   connections opened at once, 10,000 held open with the relays' memory per connection and
//!   after, fairness, TLS on both legs, and `StartSession` calls per second, each beside the
//!   direct loopback path (and `socat` when installed, and the two-hop wstunnel path when
//!   `../shared/peers/wstunnel` is there) measured in the same run.
//!
//! * `console`: browser consoles (SPEC §11): keystroke echo and full 1920×1080 VNC updates
//!   through the GAS's console WebSocket, beside the same through `thingport connect`.
//!
//! * `all`: every one above in turn, the one command for every figure (full runs: about 8 minutes;
//!   `--quick`: about a minute with a release build).
//!
//! Later subcommands plug in beside these in [`Command`].
//!
//! Exit status: 0 when every measurement ran and every request was answered `200`, whether or not
//! the figures meet their targets (a MISS is reported, not fatal: the machine is noisy); 1 when the
//! tool could not run or any request failed; 2 for a usage error.

mod console;
mod control;
mod extension;
mod fleet;
mod http;
mod load;
mod platform;
mod probe;
mod report;
mod restartable;
mod server;
mod setup;
mod tunnel;
mod web;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Benchmarks for Thingport, run against real binaries on loopback.
#[derive(Debug, Parser)]
#[command(name = "thingport-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Host platform: permission-checked property reads, service calls and Thing creates per second
    /// on 1 and on N concurrent connections, with latency percentiles and server memory.
    Platform(platform::PlatformArgs),
    /// Extensions: the host → extension → host round trip of a service call into the fixture
    /// extension library (blocking and async paths, with a JSON-only baseline).
    Extension(extension::ExtensionArgs),
    /// Device control channels: 10,000 simulated agents bound to one server (connect time,
    /// server memory per connection), then a server restart (time until all are bound again).
    Control(control::ControlArgs),
    /// Remote-session tunnel: bulk throughput, CPU per GiB, round trips, new connections and
    /// StartSession → first byte through RAC → GAS → agent, beside direct loopback (and socat
    /// and the two-hop wstunnel path when present).
    Tunnel(tunnel::TunnelArgs),
    /// Web console: the device list at 10,000 Things (a page, its refresh fragment, a search) as
    /// a signed-in administrator and as a user who sees every Thing through an organization.
    Web(web::WebArgs),
    /// Browser consoles: keystroke echo and full 1920×1080 VNC updates through the GAS's console
    /// WebSocket, beside the same through `thingport connect`.
    Console(console::ConsoleArgs),
    /// Every benchmark in turn (platform, extension, control, tunnel, web, console) with their default settings:
    /// the one command for every figure of docs/benchmarks.md.
    All(AllArgs),
    /// (Internal) the echo target of `tunnel`'s many-connection phases, as a process of its own
    /// so that its sockets do not count against the tool's open-file limit.
    #[command(hide = true)]
    ManyEcho,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Platform(args) => run_async(args.client_threads as usize, platform::run(args)),
        Command::Extension(args) => extension::run(args),
        Command::Control(args) => run_async(args.client_threads as usize, control::run(args)),
        Command::Tunnel(args) => run_async(2, tunnel::run(args)),
        Command::Web(args) => run_async(1, web::run(args)),
        Command::Console(args) => run_async(1, console::run(args)),
        Command::All(args) => run_all(&args),
        Command::ManyEcho => tunnel::many_echo_main(),
    };
    match result {
        Ok(outcome) if outcome.requests_failed == 0 => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!(
                "thingport-bench: {} request(s) failed (see the errors above); the figures are not trustworthy",
                outcome.requests_failed
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("thingport-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, clap::Args)]
struct AllArgs {
    /// Smoke runs of each benchmark (each under a minute with a release build): checks that every
    /// figure is produced, not the targets
    #[arg(long)]
    quick: bool,
    /// Also write each benchmark's figures as JSON into this directory (platform.json,
    /// extension.json, control.json, tunnel.json, web.json, console.json); created if missing
    #[arg(long, value_name = "DIR")]
    json_dir: Option<PathBuf>,
}

/// One benchmark's arguments, parsed from the command line `all` builds for it.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct One<T: clap::Args> {
    #[command(flatten)]
    args: T,
}

fn args_for<T: clap::Args>(name: &str, all: &AllArgs) -> anyhow::Result<T> {
    let mut argv: Vec<OsString> = Vec::new();
    if all.quick {
        argv.push("--quick".into());
    }
    if let Some(dir) = &all.json_dir {
        argv.push("--json".into());
        argv.push(dir.join(format!("{name}.json")).into());
    }
    Ok(One::<T>::try_parse_from(argv)?.args)
}

/// `thingport-bench all`: every benchmark in turn. One that fails does not stop the others
/// (Ctrl-C does); the exit status is 1 if any failed.
fn run_all(all: &AllArgs) -> anyhow::Result<Outcome> {
    if let Some(dir) = &all.json_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let started = Instant::now();
    let (mut failed, mut requests_failed, mut took) = (Vec::new(), 0, Vec::new());
    for name in [
        "platform",
        "extension",
        "control",
        "tunnel",
        "web",
        "console",
    ] {
        let quick = if all.quick { " --quick" } else { "" };
        eprintln!("\n== thingport-bench {name}{quick}");
        let began = Instant::now();
        let result = match name {
            "platform" => args_for::<platform::PlatformArgs>(name, all)
                .and_then(|a| run_async(a.client_threads as usize, platform::run(a))),
            "extension" => args_for::<extension::ExtensionArgs>(name, all).and_then(extension::run),
            "control" => args_for::<control::ControlArgs>(name, all)
                .and_then(|a| run_async(a.client_threads as usize, control::run(a))),
            "web" => args_for::<web::WebArgs>(name, all).and_then(|a| run_async(1, web::run(a))),
            "console" => args_for::<console::ConsoleArgs>(name, all)
                .and_then(|a| run_async(1, console::run(a))),
            _ => {
                args_for::<tunnel::TunnelArgs>(name, all).and_then(|a| run_async(2, tunnel::run(a)))
            }
        };
        took.push(format!("{name} {:.0} s", began.elapsed().as_secs_f64()));
        match result {
            Ok(outcome) => requests_failed += outcome.requests_failed,
            Err(e) if e.is::<Interrupted>() => return Err(e),
            Err(e) => {
                eprintln!("thingport-bench {name}: {e:#}");
                failed.push(name);
            }
        }
    }
    eprintln!(
        "\n== thingport-bench all: {:.0} s ({})",
        started.elapsed().as_secs_f64(),
        took.join(", ")
    );
    if !failed.is_empty() {
        anyhow::bail!("these benchmarks failed: {}", failed.join(", "));
    }
    Ok(Outcome { requests_failed })
}

/// Ctrl-C ended a benchmark.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// What a finished subcommand reports back for the exit status.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests answered with something other than `200`, or not answered at all.
    pub requests_failed: u64,
}

/// Runs `fut` on a runtime with `threads` workers (1: a current-thread runtime, the leanest load
/// generator), stopping it cleanly on Ctrl-C so that the server child is still killed.
fn run_async<F>(threads: usize, fut: F) -> anyhow::Result<Outcome>
where
    F: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        tokio::select! {
            r = fut => r,
            _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
        }
    })
}
