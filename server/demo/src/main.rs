//! `thingport-demo`: the one-command demo as a binary of its own, so that the laptop client
//! (`thingport`) does not carry the platform. `thingport up` and `thingport-server --demo` run it
//! (found next to their own executable), passing their arguments through.

use clap::Parser;
use std::io::IsTerminal as _;
use std::process::ExitCode;

/// Runs the whole platform as a demo, in this one process, until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "thingport up", bin_name = "thingport up", version, long_about = thingport_demo::LONG_ABOUT)]
struct Cli {
    #[command(flatten)]
    args: thingport_demo::UpArgs,

    /// Log filter of the components (tracing's EnvFilter syntax, e.g. info or thingport_gas=debug).
    #[arg(
        long,
        default_value = "warn",
        env = "THINGPORT_LOG",
        value_name = "FILTER"
    )]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    match thingport_demo::run(cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thingport up: {e:#}");
            ExitCode::FAILURE
        }
    }
}
