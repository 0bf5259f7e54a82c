//! `thingport up`, the built binary, for real: on a fresh data directory and port 0 it prints
//! `demo ready` with the platform's URL and the Administrator's password; `thingport connect
//! demo-gateway echo --stdio` (the built binary, with those credentials) carries bytes to the
//! demo's echo service and back; a second `up` on the same data directory is refused while the
//! first runs; SIGTERM stops it with exit 0; a second `up` on the same data directory then
//! works again with the same password. Bad flags exit 2; a taken port, missing extension
//! libraries and a locked data directory exit 1 naming the problem.
//!
//! The extension libraries must sit next to the binary (`target/debug`): run `cargo build
//! --workspace` first, as the README's test command does.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `up` may take to be ready (a debug build packs and loads three libraries).
const READY_WITHIN: Duration = Duration::from_secs(120);
/// How long any other expectation may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_thingport")
}

/// The built `thingport` with none of the caller's THINGPORT_* settings or proxies.
fn thingport(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("THINGPORT_") || key.to_ascii_lowercase().ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Panics, naming the command to run, unless the extension libraries were built next to the
/// binary.
fn require_libraries() {
    let dir = Path::new(binary()).parent().unwrap();
    for lib in ["connection_services", "remote_access"] {
        let path = dir.join(format!(
            "{}{lib}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        assert!(
            path.is_file(),
            "{} is missing: run `cargo build --workspace` first",
            path.display()
        );
    }
}

/// A running `thingport up`: its stdout lines as they come, its stderr collected; killed when
/// dropped.
struct Up {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

/// What `demo ready` announced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ready {
    url: String,
    password: String,
}

impl Up {
    fn start(data_dir: &Path) -> Up {
        let mut child = thingport(&[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn thingport up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Up {
            child: Some(child),
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reads stdout until `demo ready`; answers the `url:` and `password:` it printed.
    fn wait_ready(&mut self) -> Ready {
        let deadline = Instant::now() + READY_WITHIN;
        let (mut url, mut password) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!(
                    "no `demo ready` within {READY_WITHIN:?} ({e}); stderr:\n{}",
                    self.stderr()
                ),
            };
            let line = line.trim();
            if let Some(v) = line.strip_prefix("url:") {
                url = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("password:") {
                password = Some(v.trim().to_owned());
            } else if line == "demo ready" {
                return Ready {
                    url: url.expect("a `url:` line before `demo ready`"),
                    password: password.expect("a `password:` line before `demo ready`"),
                };
            }
        }
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit status.
    fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        wait_exit(&mut child, DEADLINE, || self.stderr())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration, log: impl Fn() -> String) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {within:?}; stderr:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command that is expected to end by itself: its status, stdout and stderr.
fn output_within(mut cmd: Command, within: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let status = wait_exit(&mut child, within, String::new);
    let (o, e) = rx.recv_timeout(DEADLINE).expect("the output");
    (status, o, e)
}

/// `thingport connect demo-gateway echo --stdio` with the demo's credentials: sends `data`,
/// closes stdin, and answers what came back on stdout.
fn echo_through_the_demo(ready: &Ready, data: &[u8]) -> Vec<u8> {
    let mut child = thingport(&["connect", "demo-gateway", "echo", "--stdio"])
        .env("THINGPORT_URL", &ready.url)
        .env("THINGPORT_USER", "Administrator")
        .env("THINGPORT_PASSWORD", &ready.password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent = data.to_vec();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&sent).unwrap();
        // Dropped: EOF half-closes the connection; the echo comes back, then FIN.
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut back = Vec::new();
        let _ = stdout.read_to_end(&mut back);
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        let _ = tx.send((back, log));
    });
    let status = wait_exit(&mut child, DEADLINE, String::new);
    writer.join().unwrap();
    let (back, log) = rx.recv_timeout(DEADLINE).expect("connect's output");
    assert!(status.success(), "connect failed ({status:?}): {log}");
    back
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    (dir, data)
}

#[test]
fn up_serves_the_demo_stops_on_sigterm_and_starts_again_on_the_same_data_dir() {
    require_libraries();
    let (_tmp, data) = data_dir();

    let mut up = Up::start(&data);
    let ready = up.wait_ready();
    assert!(ready.url.starts_with("http://127.0.0.1:"), "{ready:?}");
    assert!(!ready.url.ends_with(":0"), "{ready:?}");
    assert!(ready.password.len() >= 16, "{ready:?}");
    let stored = std::fs::read_to_string(data.join("demo-admin-password")).unwrap();
    assert_eq!(stored.trim(), ready.password);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("demo-admin-password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let log = up.stderr();
    for expected in [
        "imported ConnectionServicesExtension",
        "imported RemoteAccessExtension",
        "demo-gateway connected",
    ] {
        assert!(log.contains(expected), "{expected:?} not in:\n{log}");
    }

    let data_bytes: Vec<u8> = (0..256 * 1024 + 3).map(|i| (i % 251) as u8).collect();
    let back = echo_through_the_demo(&ready, &data_bytes);
    assert_eq!(back.len(), data_bytes.len());
    assert!(back == data_bytes, "the echo came back byte for byte");

    // The data directory is the running demo's.
    let mut cmd = thingport(&[
        "up",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    cmd.env("THINGPORT_LOG", "off");
    let (status, _, err) = output_within(cmd, DEADLINE);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("locked by a running server"), "{err}");

    let status = up.signal("-TERM");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", up.stderr());
    assert!(up.stderr().contains("stopped"), "{}", up.stderr());

    // Again, on the same data directory: the same password, nothing imported twice.
    let mut again = Up::start(&data);
    let second = again.wait_ready();
    assert_eq!(second.password, ready.password);
    let log = again.stderr();
    for name in ["ConnectionServicesExtension", "RemoteAccessExtension"] {
        assert!(log.contains(&format!("{name} ")), "{log}");
        assert!(!log.contains(&format!("imported {name}")), "{log}");
    }
    assert!(log.contains("already installed"), "{log}");
    assert_eq!(
        echo_through_the_demo(&second, b"second run\n"),
        b"second run\n"
    );
    let status = again.signal("-INT");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", again.stderr());
}

#[test]
fn bad_flags_exit_2_and_help_explains_the_demo() {
    for args in [
        &["up", "--bogus"][..],
        &["up", "--listen", "not-an-address"],
        &["up", "extra-argument"],
    ] {
        let (status, _, err) = output_within(thingport(args), DEADLINE);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    }
    let (status, out, _) = output_within(thingport(&["up", "--help"]), DEADLINE);
    assert!(status.success());
    for expected in [
        "--listen",
        "--data-dir",
        "--extensions-dir",
        "demo-admin-password",
        "demo ready",
        "cargo build --release --workspace",
        "SIGTERM",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
}

#[test]
fn a_taken_port_and_missing_libraries_are_named() {
    let (_tmp, data) = data_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, _, err) = output_within(
        thingport(&[
            "up",
            "--listen",
            &addr,
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        DEADLINE,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("port is taken"), "{err}");
    assert!(err.contains(&addr), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let mut cmd = thingport(&[
        "up",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    cmd.env("THINGPORT_EXTENSIONS_DIR", empty.path());
    let (status, _, err) = output_within(cmd, DEADLINE);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("extension library missing"), "{err}");
    assert!(err.contains("libconnection_services"), "{err}");
    assert!(err.contains("cargo build --release --workspace"), "{err}");
}
