//! Telnet browser consoles end to end (SPEC §11): a real headless Chromium opens the console page
//! of a TELNET endpoint; the GAS negotiates with a **real** inetutils `telnetd` (ECHO, SGA,
//! NAWS, TTYPE) and relays its terminal to xterm.js. The banner appears, typed lines reach the
//! program on the device, the pty follows the browser's size (NAWS), and leaving the page ends
//! the session.
//!
//! `telnetd -h -E script` runs per connection behind a 127.0.0.1:0 listener
//! (`thingport_e2e::clients::Inetd`); the script stands in for `login`. Screenshot:
//! `target/screenshots/console-telnet.png`.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use thingport_e2e::browser::Browser;
use thingport_e2e::clients::running;
use thingport_e2e::consoles::*;

/// A banner, then (at most 50 times) a prompt, a line read and the pty's size as `stty` sees it.
const SCRIPT: &str = "#!/bin/sh\n\
    echo 'Thingport test device gw-1 (Telnet)'\n\
    n=0\n\
    while [ $n -lt 50 ]; do\n\
    \tprintf 'Thingport login: '\n\
    \tIFS= read -r line || exit 0\n\
    \techo \"size-$line: $(stty size)\"\n\
    \tn=$((n + 1))\n\
    done\n";

/// The terminal's size as xterm.js has it: `[rows, cols]`.
const TERM_SIZE: &str = "const t = window.thingportConsole && window.thingportConsole.term; \
    return t ? [t.rows, t.cols] : null;";

/// The `ROWS COLS` the script printed for the line `tag`.
fn size_for(text: &str, tag: &str) -> Option<String> {
    let prefix = format!("size-{tag}: ");
    text.lines().find_map(|l| {
        l.trim_end()
            .strip_prefix(prefix.as_str())
            .map(str::to_string)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnet_console_shows_the_banner_runs_typed_lines_and_follows_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("console.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = telnetd(&script).await;
    let r = running("console", "TELNET", server.addr.port()).await;

    let b = Browser::start(&r.site.url()).await;
    b.sign_in("Administrator", r.site.fleet.server.admin_password())
        .await;
    b.goto("/devices/gw-1/console/console").await;
    let state = b
        .wait_eval(
            "const c = window.thingportConsole; return c ? {state: c.state, message: c.message} \
             : null",
            T,
            |v| matches!(v["state"].as_str(), Some("connected" | "failed" | "ended")),
        )
        .await;
    assert_eq!(
        state["state"],
        "connected",
        "{state}\ntelnetd log:\n{}",
        server.log()
    );
    wait_terminal(&b, "Thingport test device gw-1 (Telnet)").await;
    wait_terminal(&b, "Thingport login: ").await;

    // A typed line reaches the program; the pty has the terminal's size from NAWS.
    let first: Value = b.eval(TERM_SIZE).await;
    type_keys(&b, "one\r").await;
    let text = wait_terminal(&b, "size-one: ").await;
    let before = size_for(&text, "one").expect("a size line");
    assert_eq!(
        before,
        format!("{} {}", first[0], first[1]),
        "the pty's size is not the terminal's:\n{text}"
    );

    // A smaller window: xterm.js refits, the GAS sends NAWS, telnetd resizes the pty.
    b.resize(900, 600).await;
    let now = b
        .wait_eval(TERM_SIZE, T, |v| v.is_array() && *v != first)
        .await;
    type_keys(&b, "two\r").await;
    let text = wait_terminal(&b, "size-two: ").await;
    let after = size_for(&text, "two").expect("a size line");
    assert_eq!(
        after,
        format!("{} {}", now[0], now[1]),
        "the pty did not follow the window (it was {before}):\n{text}"
    );
    assert_ne!(after, before, "{text}");
    b.shot("console-telnet").await;

    // Leaving the page ends the session: the browser closed its console (USER_SHUTDOWN).
    let live = newest_session(&r).await;
    assert_eq!(live["kind"], "console", "{live}");
    assert_eq!(live["status"], "STARTED", "{live}");
    b.goto("/devices").await;
    let ended = r
        .site
        .wait_terminated("gw-1", live["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(ended["terminationCause"], "USER_SHUTDOWN", "{ended}");
    server.wait_all_exited(T);
    b.close().await;
}
