//! The setup of every remote-session test: a server with CSE and RAE imported, an operator who may
//! start sessions, devices (`RemoteAccessibleThing`) with endpoints, and the real `thingport-gas`,
//! `thingport-agent` and `thingport` (RAC) binaries as child processes.

use crate::fleet::{Fleet, DEVICE_USER};
use crate::packages::{remote_access_package, upload};
use crate::wait::{wait_until, wait_until_blocking};

use crate::{Client, ServerOptions};
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The operator's user name (may start sessions on every device of a [`Site`]).
pub const OPERATOR: &str = "operator";
/// The GAS's user name (may call `GASRemoteAccessProvider`'s services).
pub const GAS_USER: &str = "gas-service";

/// A binary of the workspace next to the running test's profile directory (built by
/// `cargo build --workspace`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile directory");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

pub struct Site {
    pub fleet: Fleet,
    /// An administrator client.
    pub admin: Client,
    /// The operator (Basic auth), with visibility, Read, PropertyRead and ServiceInvoke on the
    /// devices.
    pub operator: Client,
    pub operator_password: String,
    /// The application key of [`GAS_USER`].
    pub gas_key: String,
}

impl Site {
    pub async fn start(devices: &[&str]) -> Site {
        Self::start_with(ServerOptions::default(), devices).await
    }

    pub async fn start_with(opts: ServerOptions, devices: &[&str]) -> Site {
        let fleet = Fleet::start_with(opts, &[]).await;
        let admin = fleet.admin.clone();
        let r = upload(&admin, remote_access_package()).await.ok();
        assert_eq!(r.rows()[0]["extensionReportStatus"], json!(0), "{}", r.text);
        admin.create_user(GAS_USER, "Gas-Password-1").await.ok();
        let provider = "GASRemoteAccessProvider";
        admin
            .grant_visibility("Things", provider, "Everyone")
            .await
            .ok();
        admin
            .grant_runtime(
                "Things",
                provider,
                "ServiceInvoke",
                "*",
                GAS_USER,
                "User",
                true,
            )
            .await
            .ok();
        let gas_key = admin.new_app_key("gas-key", GAS_USER).await;
        let operator_password = crate::unique_secret("OperatorPw");
        admin.create_user(OPERATOR, &operator_password).await.ok();
        let operator = admin.with_basic(OPERATOR, &operator_password);
        let site = Site {
            fleet,
            admin,
            operator,
            operator_password,
            gas_key,
        };
        for d in devices {
            site.add_device(d).await;
        }
        site
    }

    pub fn url(&self) -> String {
        self.fleet.url()
    }

    /// A `RemoteAccessibleThing` the device user may bind (and read the endpoints of), on which the
    /// operator holds the four permissions StartSession checks.
    pub async fn add_device(&self, thing: &str) {
        let a = &self.admin;
        a.create_thing(thing, "RemoteAccessibleThing").await.ok();
        a.grant_visibility("Things", thing, "Everyone").await.ok();
        for (perm, user) in [
            ("PropertyWrite", DEVICE_USER),
            ("PropertyRead", DEVICE_USER),
            ("PropertyRead", OPERATOR),
            ("ServiceInvoke", OPERATOR),
        ] {
            a.grant_runtime("Things", thing, perm, "*", user, "User", true)
                .await
                .ok();
        }
        a.grant_design("Things", thing, "Read", OPERATOR, "User", true)
            .await
            .ok();
    }

    /// Sets a device's endpoints: `(name, protocol, host, port)` rows.
    pub async fn set_endpoints(&self, thing: &str, rows: &[(&str, &str, &str, u16)]) {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(n, p, h, port)| json!({"name": n, "protocol": p, "host": h, "port": port}))
            .collect();
        self.admin
            .put(
                &format!("/Thingworx/Things/{thing}/Properties/endpoints"),
                &json!({"endpoints": {"rows": rows}}),
            )
            .await
            .ok();
    }

    /// Starts `thingport-gas NAME` against this site with the GAS key; waits until it
    /// registered (its Thing exists and is connected).
    pub async fn start_gas(&self, name: &str, extra: &[&str]) -> Gas {
        let gas = Gas::start(&self.url(), &self.gas_key, name, extra);
        self.wait_gas_connected(name, true, Duration::from_secs(20))
            .await;
        gas
    }

    pub async fn wait_gas_connected(&self, name: &str, want: bool, within: Duration) {
        wait_until(
            within,
            &format!("GAS {name} isConnected == {want}"),
            || async {
                let r = self.admin.get_property(name, "isConnected").await;
                r.status == 200 && r.row()["isConnected"] == json!(want)
            },
        )
        .await;
    }

    /// `EnableForRemoteSessions` on a GAS Thing, as the administrator.
    pub async fn enable(&self, gas: &str) {
        self.admin
            .call("Things", gas, "EnableForRemoteSessions", json!({}))
            .await
            .ok();
    }

    /// `StartSession` as the operator.
    pub async fn start_session(&self, thing: &str, endpoint: &str) -> crate::Resp {
        self.operator
            .call(
                "Things",
                thing,
                "StartSession",
                json!({"remoteEndpoint": endpoint}),
            )
            .await
    }

    /// The session's row (`GetSession` as the administrator).
    pub async fn session(&self, thing: &str, id: &str) -> Value {
        self.admin
            .call("Things", thing, "GetSession", json!({"sessionId": id}))
            .await
            .ok()
            .row()
            .clone()
    }

    /// Waits until the session is TERMINATED; answers its row.
    pub async fn wait_terminated(&self, thing: &str, id: &str, within: Duration) -> Value {
        self.wait_status(thing, id, "TERMINATED", within).await
    }

    pub async fn wait_status(
        &self,
        thing: &str,
        id: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let row = self.session(thing, id).await;
            if row["status"] == json!(status) {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} is not {status} within {within:?}: {row}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The REMOTE_ACCESS audit messages.
    pub async fn remote_access_audit(&self) -> Vec<String> {
        let r = self
            .admin
            .audit_log("category=REMOTE_ACCESS&limit=1000")
            .await
            .ok();
        r.column("message")
    }
}

/// A child process of the workspace with its stderr in a log file and its stdout read for
/// `listening on ADDR`; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
    /// Lines of stdout after the `listening on` line.
    pub stdout: Option<mpsc::Receiver<String>>,
    pub addr: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Spawns `binary args` with `envs`; when `listens`, waits (20 s) for `listening on ADDR`.
    pub fn spawn(binary: &str, args: &[&str], envs: &[(&str, &str)], listens: bool) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{binary}-"))
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("stderr.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(workspace_binary(binary));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "THINGPORT_URL",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child: Some(child),
            log,
            stdout: Some(rx),
            addr: None,
            _dir: dir,
        };
        if listens {
            let rx = p.stdout.as_ref().expect("stdout");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        if let Some(a) = line.trim().strip_prefix("listening on ") {
                            p.addr = Some(a.trim().parse().expect("listening address"));
                            break;
                        }
                    }
                    Err(_) => panic!(
                        "{binary} did not print `listening on ADDR`; log:\n{}",
                        p.log()
                    ),
                }
            }
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, within: Duration) {
        wait_until_blocking(within, &format!("log contains {needle:?}"), || {
            self.log().contains(needle)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. `-TERM`, `-INT`) and waits up to `within` for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([signal, &c.id().to_string()])
            .status();
        self.wait_child(c.id(), &mut c, within)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        self.wait_child(c.id(), &mut c, within)
    }

    fn wait_child(&self, pid: u32, c: &mut Child, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "process {pid} did not exit within {within:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running `thingport-gas`.
pub struct Gas {
    pub proc: Proc,
    pub name: String,
}

impl Gas {
    /// `thingport-gas --url URL --name NAME --listen 127.0.0.1:0 EXTRA` with the key in the
    /// environment.
    pub fn start(url: &str, key: &str, name: &str, extra: &[&str]) -> Gas {
        let mut args = vec!["--url", url, "--name", name];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend(extra);
        let proc = Proc::spawn("thingport-gas", &args, &[("THINGPORT_APP_KEY", key)], true);
        Gas {
            proc,
            name: name.to_string(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proc.addr.expect("listening")
    }
}

/// `thingport connect THING ENDPOINT --local 127.0.0.1:0` as the operator; waits for its
/// `listening on` line.
pub fn connect_local(site: &Site, thing: &str, endpoint: &str) -> Proc {
    let env = rac_env(site);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proc::spawn(
        "thingport",
        &["connect", thing, endpoint, "--local", "127.0.0.1:0"],
        &env,
        true,
    )
}

/// The environment the RAC runs with: the site's URL and the operator's credentials.
pub fn rac_env(site: &Site) -> Vec<(&'static str, String)> {
    vec![
        ("THINGPORT_URL", site.url()),
        ("THINGPORT_USER", OPERATOR.to_string()),
        ("THINGPORT_PASSWORD", site.operator_password.clone()),
    ]
}
