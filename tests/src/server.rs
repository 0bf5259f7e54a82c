//! Starting, restarting, stopping and killing the real `thingport-server` binary.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Auth, Client};
use crate::wait::unique_secret;

/// How long a server may take to print `listening on ADDR`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Secrets handed to or received from the server; none may appear in a log line or an error answer.
#[derive(Clone, Debug, Default)]
pub struct Secrets(Arc<Mutex<Vec<String>>>);

impl Secrets {
    /// Remembers `secret`; values shorter than 8 bytes are ignored (they would match by chance).
    pub fn add(&self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.len() >= 8 {
            self.0.lock().unwrap().push(secret);
        }
    }

    /// The first known secret contained in `text`, if any.
    pub fn found_in(&self, text: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|s| text.contains(s.as_str()))
            .cloned()
    }
}

/// Command-line options of one server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub admin_password: String,
    pub max_body_bytes: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub log_json: bool,
    pub extra_args: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            admin_password: unique_secret("AdminPw"),
            max_body_bytes: None,
            request_timeout_secs: None,
            log_json: false,
            extra_args: Vec::new(),
        }
    }
}

/// Path of the `thingport-server` binary: `THINGPORT_SERVER_BIN`, else next to the running test
/// executable's profile directory, else `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`.
pub fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("THINGPORT_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "THINGPORT_SERVER_BIN={} is not a file",
            p.display()
        );
        return p;
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // <target>/<profile>/deps/<test-binary>
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("thingport-server"));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join("thingport-server"));
    }
    candidates.push(workspace_root().join("target/debug/thingport-server"));
    match candidates.iter().find(|c| c.is_file()) {
        Some(found) => {
            warn_if_stale(found);
            found.clone()
        }
        None => panic!(
            "thingport-server binary not found (looked at {candidates:?}); \
             run `cargo build --workspace` first, or set THINGPORT_SERVER_BIN"
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Prints a warning when a source file of the server is newer than the binary under test.
fn warn_if_stale(binary: &Path) {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let mut stack = vec![workspace_root().join("server/src")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > built)
            {
                eprintln!(
                    "warning: {} is newer than {}; run `cargo build --workspace`",
                    path.display(),
                    binary.display()
                );
                return;
            }
        }
    }
}

/// A running (or stopped) server with its own temporary directory:
/// `<root>/data` is the `--data-dir`, `<root>/server.log` receives its stderr (all runs appended).
pub struct Server {
    opts: ServerOptions,
    root: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    base: Arc<Mutex<String>>,
    secrets: Secrets,
    http: reqwest::Client,
    /// Set by [`Server::restart_on_same_port`]: listen here instead of port 0.
    fixed_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts a server with default options; see [`Server::start`].
    pub fn default_started() -> Self {
        Self::start(ServerOptions::default())
    }

    /// Spawns the binary on `127.0.0.1:0` with a fresh data directory and waits for `listening on ADDR`.
    pub fn start(opts: ServerOptions) -> Self {
        let root = tempfile::Builder::new()
            .prefix("thingport-e2e-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir(root.path().join("data")).expect("create data dir");
        let secrets = Secrets::default();
        secrets.add(opts.admin_password.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client");
        let mut server = Self {
            opts,
            root,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: Arc::new(Mutex::new(String::new())),
            secrets,
            http,
            fixed_addr: None,
        };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` of the current run.
    pub fn base_url(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    pub fn admin_password(&self) -> &str {
        &self.opts.admin_password
    }

    /// The options used from the next (re)start on.
    pub fn options_mut(&mut self) -> &mut ServerOptions {
        &mut self.opts
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command-line arguments of this server (without the binary).
    pub fn args(&self) -> Vec<String> {
        let listen = match self.fixed_addr {
            Some(addr) => addr.to_string(),
            None => "127.0.0.1:0".to_string(),
        };
        let mut args = vec![
            "--listen".to_string(),
            listen,
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
            "--admin-password".to_string(),
            self.opts.admin_password.clone(),
        ];
        if self.opts.log_json {
            args.extend(["--log-format".to_string(), "json".to_string()]);
        }
        if let Some(n) = self.opts.max_body_bytes {
            args.extend(["--max-body-bytes".to_string(), n.to_string()]);
        }
        if let Some(n) = self.opts.request_timeout_secs {
            args.extend(["--request-timeout".to_string(), n.to_string()]);
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let mut cmd = Command::new(server_binary());
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        remove_thingport_env(&mut cmd);
        let mut child = cmd.spawn().expect("spawn thingport-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        // Keeps draining stdout for the whole life of the process so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.trim().strip_prefix("listening on ") {
                        let addr: SocketAddr = addr.trim().parse().unwrap_or_else(|e| {
                            panic!("cannot parse address in stdout line {line:?}: {e}")
                        });
                        self.addr = addr;
                        *self.base.lock().unwrap() = format!("http://{addr}");
                        return;
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill9();
                    panic!(
                        "thingport-server did not print `listening on ADDR` within {START_TIMEOUT:?}; \
                         stdout so far: {seen:?}\nlog:\n{}",
                        self.log_tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!(
                        "thingport-server closed stdout before `listening on ADDR` (exit {status:?}); \
                         stdout: {seen:?}\nlog:\n{}",
                        self.log_tail()
                    );
                }
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; kills it if it has not.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap. Nothing acknowledged may be lost by this.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to [`STOP_TIMEOUT`] for the exit; panics (after killing it) if it hangs.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().expect("server is not running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match self.wait_exit(STOP_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "thingport-server did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                self.log_tail()
            ),
        }
    }

    /// Stops the server gracefully (if it runs) and starts it again on the same data directory.
    /// Clients made from this server follow it to its new port.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }

    /// Stops the server gracefully and starts it again on the same data directory and the same
    /// address (agents reconnect to the address they know).
    pub fn restart_on_same_port(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.fixed_addr = Some(self.addr);
        // Pooled keep-alive connections point at the old process: start with a fresh pool
        // (clients made before the restart keep theirs; make new ones).
        self.http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client");
        self.spawn();
    }

    /// Starts the server again after [`Server::kill9`] or [`Server::terminate`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the server wrote to stderr so far, over all runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics if the log holds a known secret (admin password, a user password, an application key).
    pub fn assert_no_secrets_in_log(&self) {
        if let Some(secret) = self.secrets.found_in(&self.log()) {
            panic!(
                "server log {} contains the secret {secret:?}",
                self.log_path().display()
            );
        }
    }

    fn client(&self, auth: Auth) -> Client {
        Client::new(
            self.http.clone(),
            self.base.clone(),
            auth,
            self.secrets.clone(),
        )
    }

    /// Basic auth as `Administrator`.
    pub fn admin(&self) -> Client {
        self.client(Auth::Basic {
            user: "Administrator".into(),
            password: self.opts.admin_password.clone(),
        })
    }

    pub fn anonymous(&self) -> Client {
        self.client(Auth::Anonymous)
    }

    pub fn with_basic(&self, user: &str, password: &str) -> Client {
        self.client(Auth::Basic {
            user: user.into(),
            password: password.into(),
        })
    }

    pub fn with_app_key(&self, key: &str) -> Client {
        self.client(Auth::AppKey(key.into()))
    }

    /// A client that sends `Cookie: thingport_session=<session>` (see [`Client::login`]).
    pub fn with_session(&self, session: &str) -> Client {
        self.client(Auth::Session {
            cookie: session.into(),
            xsrf: false,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            self.assert_no_secrets_in_log();
        }
    }
}

/// Result of [`run_binary`].
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the server binary with `args` to completion; panics (after killing it) if it is still running
/// after `timeout`.
pub fn run_binary(args: &[&str], timeout: Duration) -> Finished {
    let mut cmd = Command::new(server_binary());
    remove_thingport_env(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn thingport-server");
    let out = read_all_in_thread(child.stdout.take().expect("piped stdout"));
    let err = read_all_in_thread(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "thingport-server {args:?} still running after {timeout:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The server reads `THINGPORT_*` variables as flags; the tests' own environment must not leak in.
fn remove_thingport_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("THINGPORT_") {
            cmd.env_remove(key);
        }
    }
}

fn read_all_in_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
