//! Starting the real `thingport-server` on port 0 with a throw-away data directory, and killing it
//! again (on drop, so also when the benchmark fails half-way).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the server may take to print `listening on ADDR`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the server's stderr shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// The server binary to benchmark: `explicit`, else `thingport-server` in the same target profile
/// directory as this executable (`target/release/` for `target/release/thingport-bench`).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    let name = format!("thingport-server{}", std::env::consts::EXE_SUFFIX);
    locate_artefact(
        explicit,
        "--server-bin",
        &name,
        "cargo build --release --workspace --bins",
    )
}

/// A build artefact: `explicit` (given with `flag`) if set, else `file_name` next to this
/// executable (the same profile directory); the error says how to build it.
pub fn locate_artefact(
    explicit: Option<&Path>,
    flag: &str,
    file_name: &str,
    build: &str,
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("{flag} {} is not a file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe
        .parent()
        .context("this executable has no parent directory")?;
    let p = dir.join(file_name);
    if !p.is_file() {
        bail!(
            "{} does not exist: build it with `{build}`, or pass {flag}",
            p.display()
        );
    }
    Ok(p)
}

/// `<prefix><stem><suffix>` of a shared library on this platform (`libfoo.so`).
pub fn library_file(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A running server. Dropping it kills the process, then removes its data directory.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub binary: PathBuf,
    log_path: PathBuf,
    // Declared last: dropped after `Drop::drop` has killed the child.
    _data: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `binary` on 127.0.0.1:0 and waits (bounded) for its `listening on` line.
    pub fn start(binary: &Path, admin_password: &str, log_filter: &str) -> Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("thingport-bench-")
            .tempdir_in(std::env::temp_dir())
            .context("cannot create a temporary data directory")?;
        let log_path = data.path().join("server.log");
        let log = std::fs::File::create(&log_path).context("cannot create the server log file")?;
        let db_dir = data.path().join("data");
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--log", log_filter, "--data-dir"])
            .arg(&db_dir)
            // Through the environment, not argv: flags show in `ps`.
            .env("THINGPORT_ADMIN_PASSWORD", admin_password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Reads stdout until the server exits, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut sent = false;
            while !sent {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if let Some(a) = line.trim().strip_prefix("listening on ") {
                            let _ = tx.send(a.to_string());
                            sent = true;
                        }
                    }
                }
            }
            let mut sink = [0u8; 4096];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary: binary.to_path_buf(),
            log_path,
            _data: data,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited with {status} before listening; its log ends with:\n{}",
                    binary.display(),
                    server.log_tail()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} did not print `listening on ADDR` within {START_TIMEOUT:?}; its log ends with:\n{}",
                    binary.display(),
                    server.log_tail()
                );
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(a) => {
                    server.addr = a
                        .parse()
                        .with_context(|| format!("server printed an unparsable address {a:?}"))?;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the exit check at the top of the loop reports it.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the server is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the server exited with {status} during the benchmark; its log ends with:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the server's stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Lines the server logged at WARN or above (with `--log warn`, every line).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log_path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
