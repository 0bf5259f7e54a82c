//! A `thingport-server` that can be stopped with SIGTERM and started again on the same address and
//! the same data directory, as `thingport-bench control` needs for its restart measurement (the
//! agents reconnect to the address they know). The other subcommands use
//! [`crate::server::ServerProcess`], which always takes a fresh port and a fresh directory.
//!
//! The server's stderr goes to `server.log` in the temporary directory (appended over both runs);
//! the moment its stdout says `listening on ADDR` is taken by a reader thread as the line arrives,
//! so that the restart is timed from the instant the new server accepts connections. Dropping the
//! value kills the process, then removes the directory.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the server may take to print `listening on ADDR` (it loads every Thing first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the exit of a stopping server is checked.
const EXIT_POLL: Duration = Duration::from_millis(5);
/// Lines of the server's stderr shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// A server process on a fixed data directory.
#[derive(Debug)]
pub struct RestartableServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub binary: PathBuf,
    admin_password: String,
    log_filter: String,
    log_path: PathBuf,
    db_dir: PathBuf,
    // Declared last: dropped after `Drop::drop` has killed the child.
    _root: tempfile::TempDir,
}

/// One start: when the process was spawned and when it said it was listening.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub spawned_at: Instant,
    pub listening_at: Instant,
}

impl Started {
    pub fn took(&self) -> Duration {
        self.listening_at.duration_since(self.spawned_at)
    }
}

impl RestartableServer {
    /// Starts `binary` on 127.0.0.1:0 with a fresh data directory.
    pub fn start(binary: &Path, admin_password: &str, log_filter: &str) -> Result<(Self, Started)> {
        let root = tempfile::Builder::new()
            .prefix("thingport-bench-control-")
            .tempdir_in(std::env::temp_dir())
            .context("cannot create a temporary data directory")?;
        let mut server = RestartableServer {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary: binary.to_path_buf(),
            admin_password: admin_password.to_string(),
            log_filter: log_filter.to_string(),
            log_path: root.path().join("server.log"),
            db_dir: root.path().join("data"),
            _root: root,
        };
        let started = server.spawn(server.addr)?;
        Ok((server, started))
    }

    /// Starts the server again (after [`RestartableServer::terminate`]) on the same address and
    /// data directory.
    pub fn start_again(&mut self) -> Result<Started> {
        if self.child.is_some() {
            bail!("the server is still running");
        }
        self.spawn(self.addr)
    }

    fn spawn(&mut self, listen: SocketAddr) -> Result<Started> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("cannot open the server log file")?;
        let spawned_at = Instant::now();
        let mut child = Command::new(&self.binary)
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--log", &self.log_filter, "--data-dir"])
            .arg(&self.db_dir)
            // Through the environment, not argv: flags show in `ps`.
            .env("THINGPORT_ADMIN_PASSWORD", &self.admin_password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        // Reads stdout until the server exits, so that it never blocks on a full pipe; stamps the
        // `listening on` line the moment it arrives.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if let Some(a) = line.trim().strip_prefix("listening on ") {
                            let _ = tx.send((a.to_string(), Instant::now()));
                            break;
                        }
                    }
                }
            }
            let mut sink = [0u8; 4096];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
        let deadline = spawned_at + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "{} exited with {status} before listening; its log ends with:\n{}",
                    self.binary.display(),
                    self.log_tail()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} did not print `listening on ADDR` within {START_TIMEOUT:?}; its log ends with:\n{}",
                    self.binary.display(),
                    self.log_tail()
                );
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok((a, listening_at)) => {
                    self.addr = a
                        .parse()
                        .with_context(|| format!("server printed an unparsable address {a:?}"))?;
                    if listen.port() != 0 && self.addr != listen {
                        bail!("the server listens on {} instead of {listen}", self.addr);
                    }
                    return Ok(Started {
                        spawned_at,
                        listening_at,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting; the check at the top reports it.
                    std::thread::sleep(EXIT_POLL);
                }
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits (at most `timeout`, then kills it) for the process to exit.
    /// Returns the time from just before the signal to the exit, and the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(Duration, ExitStatus)> {
        let pid = self.pid().context("the server is not running")?;
        let sent_at = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("cannot run `kill -TERM`")?;
        if !kill.success() {
            bail!("`kill -TERM {pid}` failed: {kill}");
        }
        let deadline = sent_at + timeout;
        loop {
            let child = self.child.as_mut().context("the server is not running")?;
            if let Some(status) = child.try_wait()? {
                let took = sent_at.elapsed();
                self.child = None;
                return Ok((took, status));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                bail!(
                    "the server did not exit within {timeout:?} of SIGTERM (killed); its log ends with:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// Fails when the server is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the server is not running");
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!(
                "the server exited with {status} during the benchmark; its log ends with:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Everything the server wrote to stderr so far, over both runs.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the server's stderr.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for RestartableServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
