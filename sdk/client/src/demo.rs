//! `thingport up`: runs `thingport-demo`, the one-command demo, which ships beside `thingport`
//! (the demo runs the whole platform; the client does not carry it). The demo replaces this
//! process (`exec`), so Ctrl-C and SIGTERM reach it directly and its exit status is ours.

use anyhow::Context as _;
use std::ffi::OsString;
use std::path::PathBuf;

/// The demo's binary name.
pub const DEMO_BINARY: &str = "thingport-demo";

/// Where `thingport-demo` is: beside this executable, else on `PATH`.
pub fn locate() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(DEMO_BINARY)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(DEMO_BINARY))
                .find(|p| p.is_file())
        })
    })
}

/// Replaces this process with `thingport-demo ARGS...`; returns only on failure.
pub fn exec(args: Vec<OsString>) -> anyhow::Result<()> {
    let Some(binary) = locate() else {
        anyhow::bail!(
            "{DEMO_BINARY} is not installed beside thingport nor on PATH: it ships with the \
             workspace (cargo build --release --workspace builds target/release/{DEMO_BINARY})"
        );
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let err = std::process::Command::new(&binary).args(&args).exec();
        Err(err).with_context(|| format!("cannot run {}", binary.display()))
    }
    #[cfg(not(unix))]
    {
        let status = std::process::Command::new(&binary)
            .args(&args)
            .status()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
