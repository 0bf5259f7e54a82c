//! `thingport connect`, the built binary, against a fake platform (StartSession, EndSession,
//! GetSession on 127.0.0.1:0), a real GAS relay (`thingport_gas`) and an in-process agent side
//! (the tunnel multiplexer, role `Agent`, dialling a local echo server): `--local` carries eight
//! concurrent connections byte-exact and SIGTERM ends the session; `--stdio` carries a
//! connection on stdin/stdout; each StartSession refusal is one line and exit 1; a killed relay
//! ends in `session ended: SERVER_LOST` from polling GetSession.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thingport_gas::{KeyCell, Relay, RelayConfig};
use thingport_protocol::tunnel::{self, Grant, Role as Side};
use thingport_tunnel::{Dial, Mux, Role};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const KEY: &[u8] = b"a-client-test-key-of-32-bytes-ok";
const GAS_NAME: &str = "gas-1";
/// How long any one expectation may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A real relay in its own runtime, so that it can be killed: every task and socket of it
/// dropped at once, without a close frame.
struct Gas {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Gas {
    fn start() -> Gas {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let keys = Arc::new(KeyCell::new(GAS_NAME));
        keys.set(KEY);
        let relay = Relay::new(keys, RelayConfig::default(), None).unwrap();
        let listener = {
            let _in = runtime.enter();
            thingport_gas::bind("127.0.0.1:0".parse().unwrap()).unwrap()
        };
        let addr = listener.local_addr().unwrap();
        runtime.spawn(relay.serve(listener, std::future::pending()));
        Gas {
            addr,
            runtime: Some(runtime),
        }
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Gas {
    fn drop(&mut self) {
        self.kill();
    }
}

fn credential(session: &str, role: Side) -> String {
    tunnel::sign(
        &Grant {
            session: session.into(),
            role,
            gas: GAS_NAME.into(),
            exp: now_ms() + 60_000,
            nonce: format!("{session}-{role:?}"),
        },
        KEY,
    )
}

/// The platform's side of the test: what it was asked.
struct Platform {
    gas: SocketAddr,
    echo: SocketAddr,
    next: AtomicU32,
    ended: Mutex<Vec<String>>,
    ended_notify: Notify,
    get_calls: AtomicU32,
}

impl Platform {
    async fn start(gas: SocketAddr) -> (Arc<Platform>, String) {
        let platform = Arc::new(Platform {
            gas,
            echo: echo_server().await,
            next: AtomicU32::new(1),
            ended: Mutex::new(Vec::new()),
            ended_notify: Notify::new(),
            get_calls: AtomicU32::new(0),
        });
        let app = Router::new()
            .route(
                "/Thingworx/Things/{thing}/Services/{service}",
                post(service),
            )
            .with_state(platform.clone());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (platform, url)
    }

    /// Waits (with a deadline) until EndSession was called for `session`.
    async fn wait_ended(&self, session: &str) {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let notified = self.ended_notify.notified();
                if self.ended.lock().unwrap().iter().any(|s| s == session) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("EndSession {session} was never called"));
    }
}

fn session_row(id: &str, status: &str, cause: Option<&str>) -> Value {
    json!({"sessionId": id, "agentDevice": "gw-1", "remoteEndpoint": "echo",
           "remoteServer": GAS_NAME, "createdBy": "Administrator", "createdTime": now_ms(),
           "startTime": null, "endTime": null, "lastActivityTime": now_ms(), "status": status,
           "terminationCause": cause, "bytesTransferred": 0, "userIP": "127.0.0.1",
           "agentIP": "127.0.0.1"})
}

fn refuse(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message })))
}

async fn service(
    State(p): State<Arc<Platform>>,
    Path((thing, service)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if headers.get("appKey").and_then(|v| v.to_str().ok()) != Some("test-key") {
        return refuse(StatusCode::UNAUTHORIZED, "no credentials");
    }
    match (thing.as_str(), service.as_str()) {
        ("no-servers", "StartSession") => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "NO_SERVERS: no Global Access Server can take the session",
        ),
        ("denied", "StartSession") => refuse(
            StatusCode::FORBIDDEN,
            "SESSION_DENIED: remote access is disabled on this agent",
        ),
        ("offline", "StartSession") => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "DEVICE_OFFLINE: Thing offline is not connected",
        ),
        ("forbidden", "StartSession") => refuse(
            StatusCode::FORBIDDEN,
            "not permitted to run StartSession on Thing forbidden",
        ),
        ("missing", "StartSession") => {
            refuse(StatusCode::NOT_FOUND, "Thing 'missing' does not exist")
        }
        ("gw-1", "StartSession") => {
            if body["remoteEndpoint"] != "echo" {
                return refuse(StatusCode::NOT_FOUND, "no such endpoint");
            }
            let id = format!("s-{}", p.next.fetch_add(1, Ordering::Relaxed));
            attach_agent(p.gas, p.echo, &id);
            let mut row = session_row(&id, "CREATED", None);
            row["gasUrl"] = json!(format!("http://{}", p.gas));
            row["credential"] = json!(credential(&id, Side::Client));
            row["credentialExpires"] = json!(now_ms() + 60_000);
            let table = json!({"dataShape": {"fieldDefinitions": {}}, "rows": [row]});
            (StatusCode::OK, Json(table))
        }
        ("gw-1", "EndSession") => {
            let id = body["sessionId"].as_str().unwrap_or_default().to_owned();
            p.ended.lock().unwrap().push(id);
            p.ended_notify.notify_waiters();
            (StatusCode::OK, Json(json!({})))
        }
        ("gw-1", "GetSession") => {
            let id = body["sessionId"].as_str().unwrap_or_default();
            // The platform learns of the loss a little later than the client: one poll first.
            let row = if p.get_calls.fetch_add(1, Ordering::Relaxed) == 0 {
                session_row(id, "STARTED", None)
            } else {
                session_row(id, "TERMINATED", Some("SERVER_LOST"))
            };
            (StatusCode::OK, Json(json!({ "rows": [row] })))
        }
        _ => refuse(StatusCode::NOT_FOUND, "unexpected call"),
    }
}

/// The agent's side of session `id`: attaches to the GAS and dials `echo` per stream.
fn attach_agent(gas: SocketAddr, echo: SocketAddr, id: &str) {
    let bearer = format!("Bearer {}", credential(id, Side::Agent));
    tokio::spawn(async move {
        let mut req = format!("ws://{gas}{}", tunnel::PATH)
            .into_client_request()
            .unwrap();
        let headers = req.headers_mut();
        headers.insert("Authorization", HeaderValue::from_str(&bearer).unwrap());
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(tunnel::SUBPROTOCOL_V1),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let dial: Dial = Arc::new(move || Box::pin(TcpStream::connect(echo)));
        let (_mux, run) = Mux::start(ws, Role::Agent { dial });
        let _ = run.await;
    });
}

fn thingport(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thingport"));
    for (k, _) in std::env::vars() {
        if k.starts_with("THINGPORT_") {
            c.env_remove(k);
        }
    }
    c.args(["--url", url, "--app-key", "test-key"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Reads the `listening on ADDR` line.
async fn listening(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("listening within the deadline")
        .unwrap()
        .expect("a line on stdout");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    addr.parse().unwrap()
}

async fn round_trip(local: SocketAddr, i: usize) -> bool {
    let data: Vec<u8> = (0..256 * 1024 + i * 131)
        .map(|b| (b * 7 + i) as u8)
        .collect();
    let s = TcpStream::connect(local).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back == data
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("thingport exits within the deadline")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_carries_eight_connections_and_sigterm_ends_the_session() {
    let gas = Gas::start();
    let (platform, url) = Platform::start(gas.addr).await;
    let mut child = thingport(&url, &["connect", "gw-1", "echo", "--local", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let local = listening(&mut child).await;
    let results = futures_util::stream::iter(0..8)
        .map(|i| round_trip(local, i))
        .buffer_unordered(8)
        .collect::<Vec<bool>>();
    let results = tokio::time::timeout(DEADLINE, results)
        .await
        .expect("8 connections within the deadline");
    assert!(results.iter().all(|ok| *ok), "{results:?}");

    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    platform.wait_ended("s-1").await;
    let status = wait_exit(&mut child).await;
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await;
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains(&format!("connect your client to {local}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_carries_one_connection_then_ends_the_session() {
    let gas = Gas::start();
    let (platform, url) = Platform::start(gas.addr).await;
    let mut child = thingport(&url, &["connect", "gw-1", "echo", "--stdio"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let data: Vec<u8> = (0..1024 * 1024 + 17).map(|b| (b % 251) as u8).collect();
    let mut stdin = child.stdin.take().unwrap();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&sent).await.unwrap();
        drop(stdin); // EOF: the stream is half-closed, the echo comes back, then FIN
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, stdout.read_to_end(&mut back))
        .await
        .expect("the echo within the deadline")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "stdout holds exactly the tunnelled bytes");
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "{status:?}");
    platform.wait_ended("s-1").await;
}

#[tokio::test]
async fn each_start_session_refusal_is_one_line_and_exit_1() {
    let (_platform, url) = Platform::start("127.0.0.1:9".parse().unwrap()).await;
    for (thing, cause, hint) in [
        ("no-servers", "NO_SERVERS", "EnableForRemoteSessions"),
        ("denied", "SESSION_DENIED", "--allow"),
        ("offline", "DEVICE_OFFLINE", "thingport-agent"),
        ("forbidden", "not permitted", "GrantRemoteAccessPermissions"),
        ("missing", "does not exist", "thingport things"),
    ] {
        let out = thingport(&url, &["connect", thing, "ssh"])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{thing}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{thing}: {stderr}");
        assert!(
            stderr.starts_with("thingport: StartSession failed"),
            "{stderr}"
        );
        assert!(
            stderr.contains(cause) && stderr.contains(hint),
            "{thing}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{thing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_ends_in_the_platforms_cause() {
    let mut gas = Gas::start();
    let (platform, url) = Platform::start(gas.addr).await;
    let mut child = thingport(&url, &["connect", "gw-1", "echo"])
        .spawn()
        .unwrap();
    let local = listening(&mut child).await;
    assert!(
        round_trip(local, 1).await,
        "the tunnel works before the kill"
    );
    gas.kill();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("session ended: SERVER_LOST");
            seen.push(line);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `session ended` line: {seen:?}"));
    assert!(
        seen.iter()
            .any(|l| l.contains("tunnel of session s-1 closed")),
        "{seen:?}"
    );
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(1));
    assert!(platform.get_calls.load(Ordering::Relaxed) >= 2);
    assert!(platform.ended.lock().unwrap().is_empty());
}
