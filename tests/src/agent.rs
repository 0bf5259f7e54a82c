//! Runs the real `thingport-agent` binary against a test server and watches its log.

use crate::wait::wait_until_blocking;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `thingport-agent` next to the running test's profile directory (built by
/// `cargo build --workspace`), or `THINGPORT_AGENT_BIN`.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("THINGPORT_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile directory");
    let path = profile_dir.join("thingport-agent");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A running agent process; killed when dropped.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `thingport-agent --url URL --app-key KEY --thing T... EXTRA...` with fast backoff
    /// (`--min-backoff 200ms --max-backoff 2s`) unless `extra` sets them; logs go to a file.
    pub fn start(url: &str, key: &str, things: &[&str], extra: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("thingport-agent-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("agent.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let mut cmd = Command::new(agent_binary());
        cmd.args(["--url", url]);
        for t in things {
            cmd.args(["--thing", t]);
        }
        if !extra.iter().any(|a| a.starts_with("--min-backoff")) {
            cmd.args(["--min-backoff", "200ms"]);
        }
        if !extra.iter().any(|a| a.starts_with("--max-backoff")) {
            cmd.args(["--max-backoff", "2s"]);
        }
        cmd.args(extra)
            .env("THINGPORT_APP_KEY", key)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        let child = cmd.spawn().expect("spawn thingport-agent");
        Agent {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        wait_until_blocking(within, &format!("agent log contains {needle:?}"), || {
            self.log().contains(needle)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and the exit status (panics if it does not exit within 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("agent running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "agent did not exit within 10 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}
