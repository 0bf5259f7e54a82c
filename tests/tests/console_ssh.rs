//! SSH browser consoles end to end (SPEC §11): a real headless Chromium opens the console page of
//! the web console, which starts a `console` session; the GAS logs in to a **real** server from
//! Debian with the credentials stored (encrypted) in the platform and relays it to noVNC or
//! xterm.js. Servers run in inetd mode behind 127.0.0.1:0 listeners
//! (`thingport_e2e::clients::Inetd`): OpenSSH's `sshd`, TigerVNC's `Xvnc`, inetutils' `telnetd`.
//!
//! What a user sees is saved as PNGs (`target/screenshots/console-*.png`, shown in
//! docs/web-console.md).

use serde_json::json;
use thingport_e2e::browser::Browser;
use thingport_e2e::clients::running;
use thingport_e2e::consoles::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_console_with_a_generated_key_pins_the_host_key_on_first_use_and_follows_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let server = sshd(
        dir.path(),
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
    )
    .await;
    let r = running("ssh", "SSH", server.addr.port()).await;
    let user = thingport_e2e::clients::user_name();

    // The platform generates the key pair; only its public half leaves it.
    let made = call(
        &r,
        "GenerateEndpointKeyPair",
        json!({"endpoint": "ssh", "username": user}),
    )
    .await;
    let public = made["publicKey"].as_str().expect("publicKey").to_string();
    assert!(public.starts_with("ssh-ed25519 "), "{made}");
    assert_eq!(made["authentication"], "privateKey");
    assert_eq!(made["privateKeySet"], true);
    assert!(!made.to_string().contains("PRIVATE KEY"), "{made}");
    std::fs::write(dir.path().join("authorized_keys"), format!("{public}\n")).unwrap();

    let b = Browser::start(&r.site.url()).await;
    b.sign_in("Administrator", r.site.fleet.server.admin_password())
        .await;

    // The device page offers the console for the SSH endpoint.
    b.goto("/devices/gw-1").await;
    b.wait_text("#endpoints", "Open console", T).await;

    // No host key pinned yet: the console refuses, shows the presented fingerprint, and the
    // administrator (who may edit the endpoint) can trust it.
    b.goto("/devices/gw-1/console/ssh").await;
    let state = console_state(&b, "failed").await;
    let want = fingerprint(&dir.path().join("host_key.pub"));
    assert_eq!(state["hostKey"]["fingerprint"], json!(want), "{state}");
    b.wait_text("#hostkey", &want, T).await;
    b.shot("console-ssh-1-host-key").await;
    let refused = newest_session(&r).await;
    assert_eq!(refused["kind"], "console", "{refused}");
    let refused = r
        .site
        .wait_terminated("gw-1", refused["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(refused["terminationCause"], "HOST_KEY_UNKNOWN", "{refused}");

    b.click("#hostkey [data-action=trust]").await;
    console_state(&b, "connected").await;
    let pinned = call(&r, "GetEndpointCredentials", json!({"endpoint": "ssh"})).await;
    assert_eq!(pinned["hostKeyFingerprint"], json!(want), "{pinned}");

    // A command typed in the terminal runs on the device; its output comes back.
    type_keys(&b, "echo console-$((6*7))\r").await;
    wait_terminal(&b, "console-42").await;

    // The PTY follows the browser's size.
    type_keys(&b, "stty size\r").await;
    let before = wait_terminal(&b, "stty size\n").await;
    b.resize(1000, 700).await;
    type_keys(&b, "clear; echo rows-cols $(stty size)\r").await;
    let after = wait_terminal(&b, "rows-cols ").await;
    let size_line = |text: &str| {
        text.lines()
            .rev()
            .find(|l| l.starts_with("rows-cols "))
            .map(str::to_string)
    };
    let first = before
        .lines()
        .skip_while(|l| !l.contains("stty size"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let now = size_line(&after).expect("a size line");
    assert_ne!(
        now.trim_start_matches("rows-cols "),
        first.trim(),
        "the PTY size did not change with the window: before {first:?}, after {now:?}"
    );
    b.shot("console-ssh-2-terminal").await;

    // Leaving the page ends the session (the browser closed its console: USER_SHUTDOWN).
    let live = newest_session(&r).await;
    assert_eq!(live["status"], "STARTED", "{live}");
    b.goto("/devices").await;
    let ended = r
        .site
        .wait_terminated("gw-1", live["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(ended["terminationCause"], "USER_SHUTDOWN", "{ended}");

    // The audit trail: the key generated, the host key pinned, the credentials released to the
    // GAS for each console.
    let audit = r.site.remote_access_audit().await.join("\n");
    for needle in [
        "a new Ed25519 key pair generated",
        "host key pinned SHA256:",
        "released to GAS gas-1 for the browser console",
    ] {
        assert!(audit.contains(needle), "{needle} not in:\n{audit}");
    }
    b.close().await;
}
