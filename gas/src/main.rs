//! `thingport-gas`: parses flags, sets up logging, runs the GAS until SIGINT/SIGTERM.
//! Exit codes: 0 after a signal (and the drain), 2 for a bad configuration, 1 for any other
//! failure (e.g. the listen address is taken).

use clap::Parser as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use thingport_gas::cli::{Args, LogFormat};
use tracing_subscriber::EnvFilter;

/// The exit code for a configuration the GAS cannot run with (as clap uses for bad flags).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, -V
        Err(e) => {
            eprintln!(
                "thingport-gas: {} (see --help)",
                one_line(&e.render().to_string())
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = match EnvFilter::try_new(&args.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "thingport-gas: --log {:?} is not a valid filter: {e}",
                args.log
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("thingport-gas: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("thingport-gas: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Installed before the listener is bound, so a SIGTERM at any time is a drain.
        let shutdown = shutdown_signal()?;
        thingport_gas::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thingport-gas: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut int =
        signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    let mut term =
        signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}

/// clap's error text as one line: the paragraph before the first blank line, without the
/// `error: ` prefix.
fn one_line(rendered: &str) -> String {
    let paragraph = rendered.split("\n\n").next().unwrap_or(rendered);
    let joined = paragraph
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}
