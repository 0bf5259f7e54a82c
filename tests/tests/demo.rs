//! `thingport-server --demo`: the same one-command demo as `thingport up` (one implementation,
//! the `thingport-demo` binary), started through the server's own flag; flags that do not apply
//! to the demo are refused by name.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thingport_e2e::server_binary;

#[test]
fn the_server_runs_the_demo_and_refuses_flags_that_do_not_apply() {
    let out = Command::new(server_binary())
        .args(["--demo", "--database-url", "sqlite:///tmp/x.db"])
        .env_remove("THINGPORT_DATABASE_URL")
        .output()
        .expect("run thingport-server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--database-url does not apply to --demo"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(server_binary())
        .args(["--demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("demo"))
        .env_remove("THINGPORT_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "demo ready") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no `demo ready` within 90 s; stdout so far:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("Open the web console: http://127.0.0.1:")),
        "{}",
        seen.join("\n")
    );
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 30 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
