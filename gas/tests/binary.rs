//! The real `thingport-gas` binary: the `listening on` line, a SIGTERM drain that ends live
//! sessions `SHUTDOWN`, reports them and exits 0, and bad command lines that exit 2 with one
//! clear line.

mod common;
mod platform;

use common::{closed, frame, open, recv, send, session_id, GAS};
use platform::{FakePlatform, APP_KEY, DEADLINE};
use std::process::{Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};
use thingport_gas::Role;
use thingport_protocol::gas::{end_causes, SessionReport};
use thingport_protocol::tunnel::{self, Grant, Kind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const BIN: &str = env!("CARGO_BIN_EXE_thingport-gas");

/// The binary with a clean environment (no `THINGPORT_*` of the caller).
fn gas() -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().kill_on_drop(true);
    c
}

/// Runs the binary to its end with these arguments.
async fn run(args: &[&str]) -> Output {
    let child = gas().args(args).stdin(Stdio::null()).output();
    tokio::time::timeout(DEADLINE, child)
        .await
        .expect("the binary exits in time")
        .expect("the binary runs")
}

fn token(key: &[u8], session: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let grant = Grant {
        session: session.into(),
        role,
        gas: GAS.into(),
        exp: now + 60_000,
        nonce: session_id("nonce"),
    };
    tunnel::sign(&grant, key)
}

/// Reads the first stdout line, which must be `listening on ADDR`.
async fn listening(child: &mut Child) -> String {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    tokio::time::timeout(DEADLINE, reader.read_line(&mut line))
        .await
        .expect("`listening on` in time")
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not a `listening on` line: {line:?}"))
        .to_string()
}

#[tokio::test]
async fn sigterm_drains_reports_shutdown_and_exits_0() {
    let fake = FakePlatform::start().await;
    let mut child = gas()
        .args(["--listen", "127.0.0.1:0", "--drain", "1s", "--log", "debug"])
        // The rest from the environment, as a service manager would pass it.
        .env("THINGPORT_URL", fake.url())
        .env("THINGPORT_APP_KEY", APP_KEY)
        .env("THINGPORT_NAME", GAS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn thingport-gas");
    // stderr is read all along, so that the child never blocks on a full pipe.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let addr = listening(&mut child).await;
    let url = format!("ws://{addr}{}", tunnel::PATH);
    fake.until("registered", |r| !r.registrations.is_empty())
        .await;
    assert_eq!(
        fake.with(|r| r.registrations[0].public_url.clone()),
        format!("http://{addr}")
    );
    let key = fake.key().unwrap();
    let session = session_id("drained");
    let mut client = open(&url, Some(&token(&key, &session, Role::Client)), true)
        .await
        .unwrap();
    let mut agent = open(&url, Some(&token(&key, &session, Role::Agent)), true)
        .await
        .unwrap();
    send(&mut client, frame(Kind::Data, 1, b"before")).await;
    assert_eq!(recv(&mut agent).await, frame(Kind::Data, 1, b"before"));

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());

    // Draining: the platform hears `healthy: false` at once, the session still flows.
    fake.until("an unhealthy heartbeat with the live session", |r| {
        r.heartbeats
            .iter()
            .any(|h| !h.healthy && h.sessions.iter().any(|s| s.session == session))
    })
    .await;
    send(&mut agent, frame(Kind::Data, 1, b"during")).await;
    assert_eq!(recv(&mut client).await, frame(Kind::Data, 1, b"during"));

    // After the drain period both sides are closed, and the end is reported.
    for ws in [&mut client, &mut agent] {
        let f = closed(ws).await;
        assert_eq!(f.code, CloseCode::Away);
        assert_eq!(f.reason.as_str(), "GAS shutting down");
    }
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    let stderr = stderr_task.await.unwrap();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    match fake.ended(&session).await {
        SessionReport::Ended {
            cause,
            bytes_up,
            bytes_down,
            ..
        } => {
            assert_eq!(cause, end_causes::SHUTDOWN);
            assert_eq!((bytes_up, bytes_down), (6, 6));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        stderr.contains("registered as gas-test (enabled: true)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(APP_KEY),
        "the app key was logged:\n{stderr}"
    );
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .await
        .unwrap();
    assert_eq!(rest, "", "stdout carries only the `listening on` line");
}

#[tokio::test]
async fn bad_command_lines_exit_2_with_one_clear_line() {
    let base = ["--url=http://127.0.0.1:1", "--app-key=k", "--name=g"];
    for (args, needle) in [
        (&[][..], "--url"),
        (&["--name=a b"], "not a valid Thing name"),
        (&["--name=-x"], "not a valid Thing name"),
        (&["--url=ftp://p"], "http:// or https://"),
        (
            &["--public-url=ftp://g"],
            "http://, https://, ws:// or wss://",
        ),
        (&["--listen=0.0.0.0:0"], "--public-url is required"),
        (&["--capacity=0"], "capacity"),
        (
            &["--tls-cert=/nonexistent.pem", "--tls-key=/nonexistent.key"],
            "--tls-cert",
        ),
        (&["--log-format=xml"], "xml"),
        (&["--log=a=b=c"], "--log"),
        (&["--unknown"], "--unknown"),
    ] {
        // The case's flags replace the base ones; no flags at all: nothing of the base.
        let flag = |a: &str| a.split('=').next().unwrap_or("").to_string();
        let mut argv: Vec<&str> = base
            .iter()
            .filter(|b| !args.is_empty() && !args.iter().any(|a| flag(a) == flag(b)))
            .copied()
            .collect();
        argv.extend_from_slice(args);
        let out = run(&argv).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{argv:?}: {stderr}");
        assert!(stderr.starts_with("thingport-gas: "), "{argv:?}: {stderr}");
        assert!(stderr.contains(needle), "{argv:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{argv:?}");
    }
    let out = run(&["--url=http://127.0.0.1:1", "--app-key=k"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
    let help = run(&["--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--public-url", "--tls-cert", "--capacity", "THINGPORT_URL"] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test]
async fn a_taken_listen_address_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&[
        "--url=http://127.0.0.1:1",
        "--app-key=k",
        "--name=g",
        "--listen",
        &addr,
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed to listen on"), "{stderr}");
}
