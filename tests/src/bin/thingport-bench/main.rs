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
//!   direct loopback path (and `socat` when installed) measured in the same run.
//!
//! Later subcommands plug in beside these in [`Command`].
//!
//! Exit status: 0 when every measurement ran and every request was answered `200`, whether or not
//! the figures meet their targets (a MISS is reported, not fatal: the machine is noisy); 1 when the
//! tool could not run or any request failed; 2 for a usage error.

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

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    /// StartSession → first byte through RAC → GAS → agent, beside direct loopback.
    Tunnel(tunnel::TunnelArgs),
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
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })
}
