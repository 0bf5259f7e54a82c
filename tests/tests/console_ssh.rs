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
use thingport_e2e::clients::{require, running};
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

    // The device page offers the console for the SSH endpoint, and its credentials editor
    // shows what is stored without the secret: the generated key's public half.
    b.goto("/devices/gw-1").await;
    b.wait_text("#endpoints", "Open console", T).await;
    b.click("details.creds summary").await;
    b.wait_text("details.creds", "authorized_keys", T).await;
    let editor = b.main_text().await;
    assert!(editor.contains(&public[..40]), "{editor}");
    assert!(!editor.contains("PRIVATE KEY-----\n"), "{editor}");
    b.eval("document.querySelector('details.creds').scrollIntoView(); return true;")
        .await;
    b.shot("console-ssh-0-credentials").await;

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
    type_keys(&b, "echo before-$(stty size | tr ' ' x)\r").await;
    let first = wait_size(&b, "before-").await;
    b.shot("console-ssh-2-terminal").await;
    b.resize(1000, 700).await;
    type_keys(&b, "echo after-$(stty size | tr ' ' x)\r").await;
    let now = wait_size(&b, "after-").await;
    assert_ne!(
        now, first,
        "the PTY size did not change with the window: before {first}, after {now}"
    );

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

/// A local account with a password, for sshd's password authentication (created once, as
/// root; the password is set afresh on every run).
fn account_with_password(user: &str, password: &str) {
    let exists = std::process::Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let out = std::process::Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", user])
            .output()
            .expect("useradd (package passwd)");
        assert!(
            out.status.success(),
            "useradd {user} (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut chpasswd = std::process::Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write as _;
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}:{password}\n").as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd {user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_console_with_a_password_refuses_a_wrong_one_and_a_changed_host_key() {
    let user = "tpconsole";
    let password = format!("pw-{}", std::process::id());
    account_with_password(user, &password);
    let dir = tempfile::tempdir().unwrap();
    let server = sshd(
        dir.path(),
        "PasswordAuthentication yes\nKbdInteractiveAuthentication no\n",
    )
    .await;
    std::fs::write(dir.path().join("authorized_keys"), "").unwrap();
    let r = running("ssh", "SSH", server.addr.port()).await;
    let host_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();

    // A wrong password, with the right host key pinned: refused, said clearly, recorded.
    call(
        &r,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "authentication": "userPassword", "username": user,
               "password": "not-the-password", "hostKey": host_key.trim()}),
    )
    .await;
    let b = Browser::start(&r.site.url()).await;
    b.sign_in("Administrator", r.site.fleet.server.admin_password())
        .await;
    b.goto("/devices/gw-1/console/ssh").await;
    let state = console_state(&b, "failed").await;
    let message = state["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused user 'tpconsole'") && message.contains("stored credentials"),
        "the page says why: {state}"
    );
    b.shot("console-ssh-3-wrong-password").await;
    let failed = newest_session(&r).await;
    let failed = r
        .site
        .wait_terminated("gw-1", failed["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(
        failed["terminationCause"], "AUTHENTICATION_FAILED",
        "{failed}"
    );

    // The right password: a shell as that user.
    call(
        &r,
        "SetEndpointCredentials",
        json!({"endpoint": "ssh", "password": password}),
    )
    .await;
    b.click("[data-action=reconnect]").await;
    console_state(&b, "connected").await;
    type_keys(&b, "echo I am $(whoami)\r").await;
    wait_terminal(&b, "I am tpconsole").await;

    // Ended from elsewhere (EndSession): the page says so, with the cause the platform recorded.
    let live = newest_session(&r).await;
    r.site
        .admin
        .call(
            "Things",
            "gw-1",
            "EndSession",
            json!({"sessionId": live["sessionId"]}),
        )
        .await
        .ok();
    // (The agent hears of it first and closes its side; the GAS says so, and the page adds the
    // cause the platform recorded.)
    console_state(&b, "ended").await;
    b.wait_text("#console-notice", "The session ended: USER_SHUTDOWN", T)
        .await;
    b.shot("console-ssh-5-ended").await;
    b.goto("/devices").await;

    // Another host key pinned than the device has: refused before any password is sent, the
    // presented fingerprint shown, the refusal audited.
    let other = dir.path().join("other_key");
    run(
        std::process::Command::new(require("ssh-keygen", "openssh-client"))
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other),
    );
    let other_public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    call(
        &r,
        "SetEndpointCredentials",
        // (a new pin takes the stored password away unless it is entered with it)
        json!({"endpoint": "ssh", "hostKey": other_public.trim(), "password": password}),
    )
    .await;
    b.goto("/devices/gw-1/console/ssh").await;
    let state = console_state(&b, "failed").await;
    let presented = fingerprint(&dir.path().join("host_key.pub"));
    assert_eq!(state["hostKey"]["code"], "HOST_KEY_MISMATCH", "{state}");
    assert_eq!(state["hostKey"]["fingerprint"], json!(presented), "{state}");
    b.wait_text("#hostkey", "the host key changed", T).await;
    b.shot("console-ssh-4-host-key-changed").await;
    let refused = newest_session(&r).await;
    let refused = r
        .site
        .wait_terminated("gw-1", refused["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(
        refused["terminationCause"], "HOST_KEY_MISMATCH",
        "{refused}"
    );
    let audit = r.site.remote_access_audit().await.join("\n");
    assert!(
        audit.contains("HOST_KEY_MISMATCH") && audit.contains(&presented),
        "the mismatch and the presented fingerprint are audited:\n{audit}"
    );
    assert!(!audit.contains(&password), "no password in the audit");
    b.close().await;
}

/// The `ROWSxCOLS` the shell printed after `marker` (waits until it is there: the typed command
/// line holds the marker too, but not followed by digits).
async fn wait_size(b: &Browser, marker: &str) -> String {
    let find = |text: &str| -> Option<String> {
        text.match_indices(marker).find_map(|(at, _)| {
            let size: String = text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == 'x')
                .collect();
            let (rows, cols) = size.split_once('x')?;
            (!rows.is_empty() && !cols.is_empty()).then_some(size)
        })
    };
    let text = b
        .wait_eval(TERMINAL_TEXT, T, |v| v.as_str().and_then(find).is_some())
        .await;
    find(text.as_str().unwrap_or_default()).unwrap_or_default()
}
