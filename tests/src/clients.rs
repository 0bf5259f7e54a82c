//! Real servers and clients from Debian packages (OpenSSH, TigerVNC's `Xvnc`, `vncsnapshot`,
//! inetutils' `telnetd` and `telnet`) in front of and behind a Thingport session.
//!
//! Servers run the way inetd runs them: [`Inetd`] binds 127.0.0.1:0 and hands each accepted
//! connection, as stdin and stdout, to a fresh server process (`sshd -i`, `Xvnc -inetd`,
//! `telnetd`), so no port is fixed and none can be taken by another test. Clients that talk to a
//! terminal are driven through pipes by [`Interactive`], with every read under a deadline.

use crate::fleet::wait_connected;
use crate::remote::{Gas, Proc, Site};
use crate::Agent;
use serde_json::json;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of the program `name`, searched on `PATH` and in the `sbin` directories; panics
/// naming the Debian `package` that provides it when it is missing.
pub fn require(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is missing: install the Debian package {package} \
                 (`apt-get install {package}`; .ci/run does)"
            )
        })
}

/// The name of the user running the tests (the one `ssh` logs in as).
pub fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(out.stdout)
        .expect("utf-8 user name")
        .trim()
        .to_string()
}

/// A listener on 127.0.0.1:0 that starts `program args` for each accepted connection, with the
/// socket as the child's stdin and stdout and the child's stderr in a log file. Dropping it stops
/// accepting and ends the children still running (SIGTERM, then SIGKILL after 3 s).
pub struct Inetd {
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    children: Arc<Mutex<Vec<Child>>>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Inetd {
    pub async fn start(program: &Path, args: &[OsString]) -> Inetd {
        let dir = tempfile::Builder::new()
            .prefix("thingport-inetd-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("stderr.log");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let children = Arc::new(Mutex::new(Vec::new()));
        let (program, args) = (program.to_path_buf(), args.to_vec());
        let (kids, log_path) = (children.clone(), log.clone());
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let socket = socket.into_std().expect("std socket");
                socket.set_nonblocking(false).expect("blocking socket");
                let stdin: OwnedFd = socket.into();
                let stdout = stdin.try_clone().expect("dup socket");
                let stderr = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .expect("inetd log");
                let spawned = Command::new(&program)
                    .args(&args)
                    .stdin(Stdio::from(stdin))
                    .stdout(Stdio::from(stdout))
                    .stderr(Stdio::from(stderr))
                    .spawn();
                match spawned {
                    Ok(child) => kids.lock().expect("children").push(child),
                    Err(e) => {
                        let line = format!("inetd: spawn {}: {e}\n", program.display());
                        let _ = OpenOptions::new()
                            .append(true)
                            .open(&log_path)
                            .and_then(|mut f| f.write_all(line.as_bytes()));
                    }
                }
            }
        });
        Inetd {
            addr,
            accept,
            children,
            log,
            _dir: dir,
        }
    }

    /// How many server processes were started (one per accepted connection).
    pub fn spawned(&self) -> usize {
        self.children.lock().expect("children").len()
    }

    /// The servers' stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until every server process started so far has exited by itself.
    pub fn wait_all_exited(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let running = self
                .children
                .lock()
                .expect("children")
                .iter_mut()
                .map(|c| matches!(c.try_wait(), Ok(None)))
                .filter(|running| *running)
                .count();
            if running == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{running} server process(es) still running after {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        self.accept.abort();
        let mut children = self
            .children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for c in children.iter_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                // SIGTERM first, so that Xvnc removes its lock file and socket.
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in children.iter_mut() {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A site whose device `gw-1` has the one endpoint `name` (`protocol`, 127.0.0.1:`port`), with
/// GAS `gas-1` running and enabled and the device's agent connected.
pub struct Running {
    pub site: Site,
    pub gas: Gas,
    pub agent: Agent,
}

pub async fn running(name: &str, protocol: &str, port: u16) -> Running {
    let site = Site::start(&["gw-1"]).await;
    site.set_endpoints("gw-1", &[(name, protocol, "127.0.0.1", port)])
        .await;
    let gas = site.start_gas("gas-1", &[]).await;
    site.enable("gas-1").await;
    let agent = Agent::start(&site.url(), &site.fleet.key, &["gw-1"], &[]);
    wait_connected(&site.admin, "gw-1", true, Duration::from_secs(15)).await;
    Running { site, gas, agent }
}

impl Running {
    /// The one session of `gw-1`; panics when there is not exactly one.
    pub async fn only_session(&self) -> String {
        let r = self
            .site
            .admin
            .call("Things", "gw-1", "GetSessions", json!({}))
            .await
            .ok();
        assert_eq!(r.rows().len(), 1, "one session: {}", r.text);
        r.rows()[0]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string()
    }

    /// Ends the RAC with Ctrl-C (SIGINT): it exits 0, the session is TERMINATED with cause
    /// USER_SHUTDOWN, and its record counts at least `min_bytes`.
    pub async fn end_session(&self, rac: &mut Proc, id: &str, min_bytes: u64) {
        let status = rac.signal_and_wait("-INT", Duration::from_secs(15));
        assert!(status.success(), "{status:?}; log:\n{}", rac.log());
        let ended = self
            .site
            .wait_terminated("gw-1", id, Duration::from_secs(15))
            .await;
        assert_eq!(ended["terminationCause"], json!("USER_SHUTDOWN"), "{ended}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let row = self.site.session("gw-1", id).await;
            if row["bytesTransferred"].as_u64().unwrap_or(0) >= min_bytes {
                return;
            }
            assert!(Instant::now() < deadline, "bytes {row} < {min_bytes}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs a client to its end within `within` (killed and a panic naming `what` past that).
pub async fn run_client(cmd: &mut tokio::process::Command, within: Duration, what: &str) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(within, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `n` pseudo-random bytes written to `path`; answers their sha256 (hex).
pub fn write_payload(path: &Path, n: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..n.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(n)
        .collect();
    std::fs::write(path, &data).expect("write payload");
    sha256_hex(&data)
}

/// The sha256 of a file's content (hex).
pub fn sha256_of_file(path: &Path) -> String {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha256_hex(&data)
}

fn sha256_hex(data: &[u8]) -> String {
    thingport_server::extensions::package::Sha256::of(data).to_string()
}

/// The `(width, height)` of a baseline or progressive JPEG (from its start-of-frame segment).
pub fn jpeg_dimensions(jpeg: &[u8]) -> Option<(u16, u16)> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        while *jpeg.get(i)? != 0xFF {
            i += 1;
        }
        while *jpeg.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *jpeg.get(i)?;
        let len = usize::from(u16::from_be_bytes([*jpeg.get(i + 1)?, *jpeg.get(i + 2)?]));
        let sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if sof {
            let h = u16::from_be_bytes([*jpeg.get(i + 4)?, *jpeg.get(i + 5)?]);
            let w = u16::from_be_bytes([*jpeg.get(i + 6)?, *jpeg.get(i + 7)?]);
            return Some((w, h));
        }
        i += 1 + len;
    }
}

/// A client driven through pipes, like a person at a terminal: what it prints (stdout and stderr
/// together) is read with deadlines, what it is sent goes to its stdin. Killed when dropped.
pub struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
    what: String,
}

impl Interactive {
    pub fn spawn(cmd: &mut Command, what: &str) -> Interactive {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for mut pipe in [stdout, stderr] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
        Interactive {
            stdin: child.stdin.take(),
            child,
            output: rx,
            seen: String::new(),
            what: what.to_string(),
        }
    }

    /// Waits until the output so far contains `needle`; answers that output.
    pub fn expect(&mut self, needle: &str, within: Duration) -> &str {
        let deadline = Instant::now() + within;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!(
                    "{} did not print {needle:?} within {within:?}; it printed:\n{}",
                    self.what, self.seen
                ),
            }
        }
        &self.seen
    }

    /// Types `line` and Enter.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.what));
    }

    /// Waits for the client to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; it printed:\n{}",
                self.what,
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
