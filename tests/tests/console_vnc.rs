//! VNC browser consoles end to end (SPEC §11): a real headless Chromium opens the console page of
//! a VNC endpoint; the GAS answers a **real** TigerVNC `Xvnc`'s VNC Authentication with the
//! password stored (encrypted) in the platform, offers noVNC only security type None, and relays
//! the desktop. The browser shows the server's framebuffer and never holds the password; a wrong
//! stored password fails the console with a clear message and `AUTHENTICATION_FAILED`.
//!
//! `Xvnc -inetd` runs per connection behind a 127.0.0.1:0 listener
//! (`thingport_e2e::clients::Inetd`). Screenshots: `target/screenshots/console-vnc-*.png`.

use serde_json::{json, Value};
use thingport_e2e::browser::Browser;
use thingport_e2e::clients::running;
use thingport_e2e::consoles::*;

/// VNC Authentication uses the first 8 characters of a password: these are exactly 8.
const PASSWORD: &str = "tP4vnc8x";
const WRONG: &str = "wr0ngPw9";
const GEOMETRY: (u32, u32) = (800, 480);

/// The noVNC canvas: its size (the server's framebuffer), its size on the page, and how many
/// distinct colours a grid of samples over it holds.
const CANVAS: &str = "const cv = document.querySelector('#screen canvas'); \
    if (!cv || !cv.width || !cv.height) return null; \
    const img = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data; \
    const colours = new Set(); \
    for (let y = 0; y < cv.height; y += 7) for (let x = 0; x < cv.width; x += 5) { \
      const i = (y * cv.width + x) * 4; \
      colours.add((img[i] << 16) | (img[i + 1] << 8) | img[i + 2]); } \
    const r = cv.getBoundingClientRect(); \
    return {width: cv.width, height: cv.height, colours: colours.size, \
            shownWidth: Math.round(r.width), shownHeight: Math.round(r.height)};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_console_logs_in_with_the_stored_password_shows_the_desktop_and_never_hands_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = vnc_password_file(dir.path(), PASSWORD);
    let server = xvnc_with_password(&passwd, GEOMETRY).await;
    let r = running("vnc", "VNC", server.addr.port()).await;

    let set = call(
        &r,
        "SetEndpointCredentials",
        json!({"endpoint": "vnc", "authentication": "password", "password": PASSWORD}),
    )
    .await;
    assert!(!set.to_string().contains(PASSWORD), "{set}");
    let stored = call(&r, "GetEndpointCredentials", json!({"endpoint": "vnc"})).await;
    assert_eq!(stored["passwordSet"], true, "{stored}");
    assert_eq!(stored["authentication"], "password", "{stored}");
    assert!(stored.get("password").is_none(), "{stored}");
    assert!(!stored.to_string().contains(PASSWORD), "{stored}");

    let b = Browser::start(&r.site.url()).await;
    b.sign_in("Administrator", r.site.fleet.server.admin_password())
        .await;
    b.goto("/devices/gw-1/console/vnc").await;
    let state = b
        .wait_eval(
            "const c = window.thingportConsole; return c ? {state: c.state, message: c.message, \
             connected: !!c.connected, desktop: c.desktop || ''} : null",
            T,
            |v| v["connected"] == true || v["state"] == "failed" || v["state"] == "ended",
        )
        .await;
    assert_eq!(
        state["connected"],
        true,
        "{state}\nXvnc log:\n{}",
        server.log()
    );
    assert_eq!(state["state"], "connected", "{state}");
    assert_eq!(state["desktop"], "thingport-e2e", "{state}");

    // The canvas has the server's geometry (even when scaled to the window) and shows the real
    // desktop: the root weave is not one colour.
    let canvas = b
        .wait_eval(CANVAS, T, |v| v["colours"].as_u64().unwrap_or(0) > 1)
        .await;
    assert_eq!(
        (canvas["width"].as_u64(), canvas["height"].as_u64()),
        (Some(GEOMETRY.0 as u64), Some(GEOMETRY.1 as u64)),
        "{canvas}"
    );
    assert!(
        canvas["shownWidth"].as_u64().unwrap_or(0) >= 200
            && canvas["shownHeight"].as_u64().unwrap_or(0) >= 100,
        "the desktop is hardly visible on the page: {canvas}"
    );
    b.shot("console-vnc-1-desktop").await;

    // The browser never received the password: not in the page, not in anything the console
    // exposes (noVNC's state included), and the platform answers only that one is set.
    let source = b.client.source().await.expect("page source");
    assert!(!source.contains(PASSWORD), "the password is in the page");
    let strings = b.eval(CONSOLE_STRINGS).await;
    let strings = strings.as_str().unwrap_or_default();
    assert!(
        !strings.is_empty(),
        "window.thingportConsole holds no strings"
    );
    assert!(
        !strings.contains(PASSWORD),
        "the password is reachable from window.thingportConsole"
    );
    let stored = call(&r, "GetEndpointCredentials", json!({"endpoint": "vnc"})).await;
    assert_eq!(stored["passwordSet"], true, "{stored}");
    assert!(!stored.to_string().contains(PASSWORD), "{stored}");
    let live = newest_session(&r).await;
    assert_eq!(live["kind"], "console", "{live}");
    assert_eq!(live["status"], "STARTED", "{live}");

    // A wrong stored password: reloading the console fails it with the reason, and the session
    // ends with AUTHENTICATION_FAILED. (Leaving the first console ended its session.)
    call(
        &r,
        "SetEndpointCredentials",
        json!({"endpoint": "vnc", "authentication": "password", "password": WRONG}),
    )
    .await;
    b.client.refresh().await.expect("reload the console");
    let first = r
        .site
        .wait_terminated("gw-1", live["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(first["terminationCause"], "USER_SHUTDOWN", "{first}");
    let state = console_state(&b, "failed").await;
    let message = state["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        message.contains("refused the stored password") && message.contains("authentication"),
        "the failure does not say that authentication with the stored password failed: {state}"
    );
    assert_eq!(state["connected"], false, "{state}");
    b.wait_text("#console-notice", "refused the stored password", T)
        .await;
    b.wait_text("#console-state", "Failed", T).await;
    b.shot("console-vnc-2-wrong-password").await;
    let refused = newest_session(&r).await;
    assert_ne!(refused["sessionId"], live["sessionId"], "{refused}");
    let refused: Value = r
        .site
        .wait_terminated("gw-1", refused["sessionId"].as_str().unwrap(), T)
        .await;
    assert_eq!(
        refused["terminationCause"], "AUTHENTICATION_FAILED",
        "{refused}"
    );
    b.close().await;
}
