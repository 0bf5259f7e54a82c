//! The site a tunnel benchmark runs against, as the end-to-end tests set it up
//! (`tests/src/remote.rs`), built from release artefacts and returning errors instead of
//! panicking: the server with CSE and RAE imported, the GAS's user and key, the device user and
//! key, the operator, device `gw-1` (`RemoteAccessibleThing`) with its endpoints, and the real
//! `thingport-gas`, `thingport-agent` and `thingport connect` as child processes. Every child is
//! killed when its handle is dropped, so also when the benchmark fails half-way or is interrupted.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The device the sessions go to.
pub const DEVICE: &str = "gw-1";
pub const GAS_NAME: &str = "gas-1";
pub const OPERATOR: &str = "operator";
const GAS_USER: &str = "gas-service";
const DEVICE_USER: &str = "device";
/// How long a child may take to print `listening on ADDR`, and the platform to see a child
/// connected.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 30;
/// Proxy variables a child must not inherit: everything here is on loopback.
const PROXY_VARS: [&str; 5] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "THINGPORT_URL",
];

/// A child process with its stderr in a log file and its stdout read for `listening on ADDR`;
/// killed when dropped.
pub struct ChildProc {
    pub name: String,
    child: Child,
    log: PathBuf,
    pub addr: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl ChildProc {
    /// Spawns `binary args` with `envs`; when `listens`, waits (bounded) for `listening on ADDR`.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        listens: bool,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("thingport-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let log = dir.path().join("stderr.log");
        let file = std::fs::File::create(&log).context("cannot create a log file")?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel::<String>();
        // Reads stdout until the child exits, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(a.trim().to_string());
                }
            }
        });
        let mut p = ChildProc {
            name: name.to_string(),
            child,
            log,
            addr: None,
            _dir: dir,
        };
        if listens {
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                p.check_alive()?;
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!(
                        "{name} did not print `listening on ADDR` within {START_TIMEOUT:?}; its log ends with:\n{}",
                        p.log_tail()
                    );
                }
                match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                    Ok(a) => {
                        p.addr = Some(a.parse().with_context(|| {
                            format!("{name} printed an unparsable address {a:?}")
                        })?);
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                }
            }
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> Result<SocketAddr> {
        self.addr
            .with_context(|| format!("{} has no listening address", self.name))
    }

    /// Fails when the child is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}; its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The soft limit of open files of the running child (`/proc/PID/limits`), if readable.
    pub fn open_files_limit(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let soft = line["Max open files".len()..].split_whitespace().next()?;
        if soft == "unlimited" {
            return Some(u64::MAX);
        }
        soft.parse().ok()
    }

    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// REST calls of the setup (not measured), through `reqwest`, each answered `200` or an error.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

impl Api {
    pub fn new(addr: SocketAddr, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(Api {
            http,
            base: format!("http://{addr}"),
            user: user.into(),
            password: password.into(),
        })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<Value> {
        let what = format!("{method} {path} {body}");
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .header("Accept", "application/json");
        if method != reqwest::Method::GET {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| what.clone())?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| what.clone())?;
        if !status.is_success() {
            bail!(
                "setup: {what} answered {status}: {}",
                crate::http::snippet(text.as_bytes())
            );
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.send(reqwest::Method::POST, path, &body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value> {
        self.send(reqwest::Method::PUT, path, &body).await
    }

    /// A service of `Things/{thing}`.
    pub async fn thing_service(&self, thing: &str, service: &str, body: Value) -> Result<Value> {
        self.post(
            &format!("/Thingworx/Things/{thing}/Services/{service}"),
            body,
        )
        .await
    }

    async fn entity_service(&self, service: &str, body: Value) -> Result<Value> {
        self.post(
            &format!("/Thingworx/Resources/EntityServices/Services/{service}"),
            body,
        )
        .await
    }

    async fn app_key(&self, name: &str, user: &str) -> Result<String> {
        let v = self
            .entity_service("CreateApplicationKey", json!({"name": name, "user": user}))
            .await?;
        Ok(v["rows"][0]["keyId"]
            .as_str()
            .with_context(|| format!("CreateApplicationKey answered no rows[0].keyId: {v}"))?
            .to_string())
    }

    async fn grant_runtime(&self, thing: &str, perm: &str, user: &str) -> Result<()> {
        self.thing_service(
            thing,
            "AddRunTimePermission",
            json!({"type": perm, "resource": "*", "principal": user, "principalType": "User", "allow": true}),
        )
        .await
        .map(drop)
    }

    async fn is_connected(&self, thing: &str) -> Result<bool> {
        let v = self
            .send(
                reqwest::Method::GET,
                &format!("/Thingworx/Things/{thing}/Properties/isConnected"),
                &Value::Null,
            )
            .await?;
        Ok(v["rows"][0]["isConnected"] == json!(true))
    }

    /// Waits (bounded) until `thing.isConnected` reads true; fails with `child`'s log otherwise.
    pub async fn wait_connected(&self, thing: &str, child: &mut ChildProc) -> Result<f64> {
        let t = Instant::now();
        loop {
            child.check_alive()?;
            // Not found yet (a GAS's Thing appears at its registration) reads as not connected.
            if self.is_connected(thing).await.unwrap_or(false) {
                return Ok(t.elapsed().as_secs_f64());
            }
            if t.elapsed() > START_TIMEOUT {
                bail!(
                    "{thing}.isConnected is not true {START_TIMEOUT:?} after {} started; its log ends with:\n{}",
                    child.name,
                    child.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keys and passwords the children run with.
pub struct Credentials {
    pub gas_key: String,
    pub device_key: String,
    pub operator_password: String,
}

/// Everything of the site but the children, as `Administrator` (CSE and RAE already imported):
/// users, keys, grants, the device and its `endpoints` (name, address).
pub async fn create(admin: &Api, endpoints: &[(&str, SocketAddr)]) -> Result<Credentials> {
    let secret = |what: &str| format!("Bench-{what}-{}-Pw-0123456789", std::process::id());
    let provider = "GASRemoteAccessProvider";
    admin
        .entity_service(
            "CreateUser",
            json!({"name": GAS_USER, "password": secret("gas")}),
        )
        .await?;
    admin
        .thing_service(
            provider,
            "AddVisibilityPermission",
            json!({"organization": "Everyone"}),
        )
        .await?;
    admin
        .grant_runtime(provider, "ServiceInvoke", GAS_USER)
        .await?;
    let gas_key = admin.app_key("gas-key", GAS_USER).await?;
    admin
        .entity_service(
            "CreateUser",
            json!({"name": DEVICE_USER, "password": secret("device")}),
        )
        .await?;
    let device_key = admin.app_key("device-key", DEVICE_USER).await?;
    let operator_password = secret("operator");
    admin
        .entity_service(
            "CreateUser",
            json!({"name": OPERATOR, "password": operator_password}),
        )
        .await?;
    admin
        .entity_service(
            "CreateThing",
            json!({"name": DEVICE, "thingTemplateName": "RemoteAccessibleThing"}),
        )
        .await?;
    admin
        .thing_service(
            DEVICE,
            "AddVisibilityPermission",
            json!({"organization": "Everyone"}),
        )
        .await?;
    for (perm, user) in [
        ("PropertyWrite", DEVICE_USER),
        ("PropertyRead", DEVICE_USER),
        ("PropertyRead", OPERATOR),
        ("ServiceInvoke", OPERATOR),
    ] {
        admin.grant_runtime(DEVICE, perm, user).await?;
    }
    admin
        .thing_service(
            DEVICE,
            "AddDesignTimePermission",
            json!({"type": "Read", "principal": OPERATOR, "principalType": "User", "allow": true}),
        )
        .await?;
    let rows: Vec<Value> = endpoints
        .iter()
        .map(|(n, a)| json!({"name": n, "protocol": "TCP", "host": a.ip().to_string(), "port": a.port()}))
        .collect();
    admin
        .send(
            reqwest::Method::PUT,
            &format!("/Thingworx/Things/{DEVICE}/Properties/endpoints"),
            &json!({"endpoints": {"rows": rows}}),
        )
        .await?;
    Ok(Credentials {
        gas_key,
        device_key,
        operator_password,
    })
}
