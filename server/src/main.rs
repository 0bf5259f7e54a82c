//! `thingport-server`: parses flags, sets up logging, runs the platform until SIGINT/SIGTERM.

use clap::{CommandFactory, FromArgMatches};
use std::io::IsTerminal;
use thingport_server::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let matches = Config::command().get_matches();
    let config = match Config::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if config.demo {
        return demo(&config, &matches);
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("thingport-server: failed to start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Handlers are installed before the server says it is listening, so a SIGTERM sent
        // right after that line is a graceful shutdown, not the default kill.
        let shutdown = shutdown_signal()?;
        thingport_server::run(config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thingport-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--demo`: replaces this process with `thingport-demo` (beside this executable), passing the
/// flags that apply to it; any other flag given is refused, naming it.
fn demo(config: &Config, matches: &clap::ArgMatches) -> std::process::ExitCode {
    use clap::parser::ValueSource;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let applies = ["listen", "data_dir", "log", "demo"];
    let command = Config::command();
    if let Some(other) = command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .find(|id| !applies.contains(id) && given(id))
    {
        eprintln!(
            "thingport-server: --{} does not apply to --demo (the demo takes --listen, --data-dir and --log)",
            other.replace('_', "-")
        );
        return std::process::ExitCode::from(2);
    }
    let mut args: Vec<std::ffi::OsString> =
        vec!["--listen".into(), config.listen.to_string().into()];
    if given("data_dir") {
        args.push("--data-dir".into());
        args.push(config.data_dir.clone().into());
    }
    if given("log") {
        args.push("--log".into());
        args.push(config.log.clone().into());
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("thingport-demo")))
        .filter(|p| p.is_file());
    let Some(binary) = binary else {
        eprintln!(
            "thingport-server: --demo needs thingport-demo beside this executable: it ships with \
             the workspace (cargo build --release --workspace)"
        );
        return std::process::ExitCode::FAILURE;
    };
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&binary).args(&args).exec();
    eprintln!("thingport-server: cannot run {}: {err}", binary.display());
    std::process::ExitCode::FAILURE
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
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
    })
}
