//! Flow control of browser consoles: `cat` of a 100 MiB file in an SSH console whose "browser"
//! (a WebSocket client playing it) pauses and stops reading leaves the GAS's memory bounded (the
//! device's output backs up into the tunnel's credit window and the SSH server's socket), and
//! every byte arrives once the browser reads again.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use thingport_e2e::clients::{running, user_name};
use thingport_e2e::consoles::{call, sshd, T};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// Resident memory of a process, in bytes (`VmRSS` of /proc/PID/status).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_browser_holds_a_100_mib_cat_back_without_growing_the_gas() {
    let dir = tempfile::tempdir().unwrap();
    let server = sshd(
        dir.path(),
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
    )
    .await;
    let r = running("ssh", "SSH", server.addr.port()).await;
    let made = call(
        &r,
        "GenerateEndpointKeyPair",
        json!({"endpoint": "ssh", "username": user_name()}),
    )
    .await;
    std::fs::write(
        dir.path().join("authorized_keys"),
        format!("{}\n", made["publicKey"].as_str().unwrap()),
    )
    .unwrap();
    let host_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
    call(
        &r,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "hostKey": host_key.trim()}),
    )
    .await;
    // 100 MiB of text (no terminal control sequences), made once.
    let big = dir.path().join("big.txt");
    {
        let line = format!("{}\n", "0123456789abcdef".repeat(4));
        let mut text = String::with_capacity(MIB as usize);
        while text.len() + line.len() <= MIB as usize {
            text.push_str(&line);
        }
        let mut f = std::fs::File::create(&big).unwrap();
        for _ in 0..100 {
            std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        }
    }
    let size = std::fs::metadata(&big).unwrap().len();

    let started = r
        .site
        .admin
        .call(
            "Things",
            "gw-1",
            "StartConsoleSession",
            json!({"remoteEndpoint": "ssh"}),
        )
        .await
        .ok();
    let row = started.rows()[0].clone();
    let mut request = row["consoleUrl"]
        .as_str()
        .unwrap()
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "thingport-console.v1".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(
        json!({"ticket": row["ticket"], "cols": 120, "rows": 40}).to_string(),
    ))
    .await
    .unwrap();
    let ready = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.to_text().unwrap().contains("\"ready\""), "{ready:?}");

    let gas = r.gas.proc.pid();
    let idle = rss(gas);
    // Start the flood, then stop reading: pause, and let the socket fill.
    ws.send(Message::binary(format!(
        "stty -echo; cat {}; echo; echo FLOOD-$((40+2))\r",
        big.display()
    )))
    .await
    .unwrap();
    ws.send(Message::text(r#"{"type":"pause"}"#)).await.unwrap();
    // While paused and not read, the GAS stays near idle: sample it for 3 s.
    let mut peak = idle;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        peak = peak.max(rss(gas));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = peak.saturating_sub(idle);
    eprintln!(
        "GAS RSS idle {} MiB, peak while paused {} MiB",
        idle / MIB,
        peak / MIB
    );
    assert!(
        grown < 32 * MIB,
        "the GAS grew by {} MiB while the browser did not read a 100 MiB cat",
        grown / MIB
    );

    // Resume: everything arrives, and the GAS stays bounded while it flows.
    ws.send(Message::text(r#"{"type":"resume"}"#))
        .await
        .unwrap();
    let mut received = 0u64;
    let mut tail = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "only {received} bytes in 120 s");
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("output keeps coming")
            .expect("the console stays open")
            .unwrap();
        if let Message::Binary(b) = m {
            received += b.len() as u64;
            tail.extend_from_slice(&b);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
            peak = peak.max(rss(gas));
            if String::from_utf8_lossy(&tail).contains("FLOOD-42") {
                break;
            }
        }
    }
    assert!(received >= size, "{received} < {size}");
    assert!(
        peak.saturating_sub(idle) < 48 * MIB,
        "the GAS grew by {} MiB relaying 100 MiB",
        peak.saturating_sub(idle) / MIB
    );
    ws.close(None).await.unwrap();
}
