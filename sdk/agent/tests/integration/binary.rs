//! The `thingport-agent` binary: exit codes, --help, -V, JSON logs and SIGTERM.

use crate::common::*;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_thingport-agent");

/// The binary with a clean environment (no proxy or THINGPORT_* variables from the host).
fn agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(args);
    cmd
}

#[test]
fn bad_configuration_exits_2_with_a_one_line_reason() {
    for (args, needle) in [
        (
            &["--url", "wss://h", "--app-key", "k", "--thing", "t"][..],
            "http:// or https://",
        ),
        (
            &[
                "--url",
                "http://h",
                "--app-key",
                "k",
                "--thing",
                "t",
                "--allow",
                "h",
            ],
            "HOST:PORT",
        ),
        (
            &[
                "--url",
                "http://h",
                "--app-key",
                "k",
                "--thing",
                "t",
                "--ca-file",
                "/nonexistent.pem",
            ],
            "--ca-file",
        ),
        (
            &[
                "--url",
                "http://h",
                "--app-key",
                "k",
                "--thing",
                "t",
                "--log",
                "=[bad",
            ],
            "--log",
        ),
    ] {
        let out = agent(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("thingport-agent: ") && stderr.contains(needle),
            "{stderr}"
        );
    }
    // clap's own errors (a missing flag, an unknown one) too.
    for (args, needle) in [
        (
            &["--url", "http://h", "--app-key", "k"][..],
            "--thing <NAME>",
        ),
        (
            &[
                "--url",
                "http://h",
                "--app-key",
                "k",
                "--thing",
                "t",
                "--bogus",
            ],
            "--bogus",
        ),
        (
            &[
                "--url",
                "http://h",
                "--app-key",
                "k",
                "--thing",
                "t",
                "--min-backoff",
                "1x",
            ],
            "unknown unit",
        ),
    ] {
        let out = agent(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("thingport-agent: ") && stderr.contains(needle),
            "{stderr}"
        );
    }
    // A proxy variable with an unsupported scheme is a configuration error too.
    let out = agent(&["--url", "https://h", "--app-key", "k", "--thing", "t"])
        .env("HTTPS_PROXY", "socks5://p:1080")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTPS_PROXY"));
}

#[test]
fn help_and_version() {
    let out = agent(&["--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--url",
        "--app-key",
        "--thing",
        "--allow",
        "--proxy",
        "THINGPORT_URL",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let out = agent(&["-V"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("thingport-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn sigterm_closes_the_channel_and_exits_0_with_json_logs() {
    let platform = FakePlatform::start(Behaviour::default()).await;
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("THINGPORT_URL", platform.http_url())
        .env("THINGPORT_APP_KEY", APP_KEY)
        .env("THINGPORT_THING", "gw-1,gw-2")
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let conn = platform.connected(1).await;
    platform.binds(conn, "gw-2", 1).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the agent did not exit after SIGTERM")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    platform
        .wait_for("close 1000", |events| {
            events
                .iter()
                .any(|e| {
                    matches!(
                        e,
                        Event::Closed {
                            code: Some(1000),
                            ..
                        }
                    )
                })
                .then_some(())
        })
        .await;
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(stderr.contains("shutdown requested"), "{stderr}");
    assert!(!stderr.contains(APP_KEY));
}
