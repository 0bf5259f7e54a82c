//! Helpers of the browser console tests (`tests/tests/console_*.rs`): real servers in inetd
//! mode, the console page's state and terminal text read from the browser, services of `gw-1`.

use crate::browser::Browser;
use crate::clients::{require, Inetd, Running};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// How long a console step may take.
pub const T: Duration = Duration::from_secs(30);

pub fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host key and an `sshd_config` in `dir` (`extra` appended); answers the config's path.
pub fn sshd_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let keygen = require("ssh-keygen", "openssh-client");
    run(std::process::Command::new(&keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("host_key")));
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             UsePAM no\nStrictModes no\nPermitRootLogin yes\nPidFile none\nLogLevel VERBOSE\n{extra}",
            dir = dir.display()
        ),
    )
    .unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    config
}

/// `sshd -i` behind a port-0 listener, logging to `dir/sshd.log`.
pub async fn sshd(dir: &Path, extra: &str) -> Inetd {
    let sshd = require("sshd", "openssh-server");
    let config = sshd_config(dir, extra);
    let mut args = os(&["-i", "-f"]);
    args.extend([
        config.into_os_string(),
        "-E".into(),
        dir.join("sshd.log").into_os_string(),
    ]);
    Inetd::start(&sshd, &args).await
}

/// `ssh-keygen -lf` of a public key file: the SHA-256 fingerprint.
pub fn fingerprint(public: &Path) -> String {
    let keygen = require("ssh-keygen", "openssh-client");
    let out = run(std::process::Command::new(keygen).arg("-lf").arg(public));
    out.split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// Calls a service of `gw-1` as the administrator; answers the result field of the first row.
pub async fn call(r: &Running, service: &str, params: Value) -> Value {
    let resp = r
        .site
        .admin
        .call("Things", "gw-1", service, params)
        .await
        .ok();
    resp.rows()
        .first()
        .map(|row| row.get("result").cloned().unwrap_or_else(|| row.clone()))
        .unwrap_or(Value::Null)
}

/// The text of the console's terminal (every line of its buffer).
pub const TERMINAL_TEXT: &str = "const t = window.thingportConsole && window.thingportConsole.term; \
    if (!t) return ''; const b = t.buffer.active; let out = []; \
    for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l) out.push(l.translateToString(true)); } \
    return out.join('\\n');";

pub async fn console_state(b: &Browser, want: &str) -> Value {
    b.wait_eval(
        "const c = window.thingportConsole; return c ? {state: c.state, message: c.message, \
         session: c.session, hostKey: c.hostKey, connected: !!c.connected} : null",
        T,
        |v| v.get("state").and_then(Value::as_str) == Some(want),
    )
    .await
}

pub async fn wait_terminal(b: &Browser, needle: &str) -> String {
    let v = b
        .wait_eval(TERMINAL_TEXT, T, |v| {
            v.as_str().is_some_and(|t| t.contains(needle))
        })
        .await;
    v.as_str().unwrap_or_default().to_string()
}

/// Types into the focused terminal (xterm.js's hidden textarea).
pub async fn type_keys(b: &Browser, text: &str) {
    let script = format!(
        "window.thingportConsole.term.input({}, true); return true;",
        serde_json::to_string(text).unwrap()
    );
    b.eval(&script).await;
}

/// The newest session of `gw-1` (as the administrator sees it).
pub async fn newest_session(r: &Running) -> Value {
    let resp = r
        .site
        .admin
        .call("Things", "gw-1", "GetSessions", json!({}))
        .await
        .ok();
    resp.rows().first().cloned().expect("a session")
}

/// A TigerVNC password file for `password` in `dir` (`vncpasswd -f`, the obfuscated 8 bytes
/// `-rfbauth` reads); answers its path.
pub fn vnc_password_file(dir: &Path, password: &str) -> std::path::PathBuf {
    use std::io::Write as _;
    let vncpasswd = require("vncpasswd", "tigervnc-tools");
    let mut child = std::process::Command::new(vncpasswd)
        .arg("-f")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vncpasswd -f");
    child
        .stdin
        .take()
        .expect("vncpasswd stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write to vncpasswd");
    let out = child.wait_with_output().expect("vncpasswd -f");
    assert!(
        out.status.success() && out.stdout.len() == 8,
        "vncpasswd -f: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("passwd");
    std::fs::write(&file, out.stdout).unwrap();
    file
}

/// `Xvnc -inetd` behind a port-0 listener: a `width`×`height` desktop with the classic root
/// weave (`-retro`, so the screen is not one colour), VNC Authentication against `passwd`.
pub async fn xvnc_with_password(passwd: &Path, (width, height): (u32, u32)) -> Inetd {
    let xvnc = require("Xvnc", "tigervnc-standalone-server");
    let mut args = os(&["-inetd", "-once", "-retro", "-SecurityTypes", "VncAuth"]);
    args.extend(["-rfbauth".into(), passwd.as_os_str().to_owned()]);
    args.extend(os(&[
        "-geometry",
        &format!("{width}x{height}"),
        "-depth",
        "24",
        "-nolisten",
        "tcp",
        "-desktop",
        "thingport-e2e",
    ]));
    Inetd::start(&xvnc, &args).await
}

/// inetutils' `telnetd -h -E script` behind a port-0 listener (the script runs instead of
/// `login` on the pty telnetd sizes from NAWS).
pub async fn telnetd(script: &Path) -> Inetd {
    let telnetd = require("telnetd", "inetutils-telnetd");
    let mut args = os(&["-h", "-E"]);
    args.push(script.as_os_str().to_owned());
    Inetd::start(&telnetd, &args).await
}

/// Every string reachable from `window.thingportConsole` (a bounded walk that skips DOM nodes
/// and binary buffers), joined by newlines: what page scripts could read of the console.
pub const CONSOLE_STRINGS: &str = "const seen = new Set(); const out = []; let budget = 20000; \
    const walk = (v, depth) => { \
      if (budget-- <= 0 || v === null || v === undefined) return; \
      if (typeof v === 'string') { out.push(v); return; } \
      if (typeof v !== 'object' || depth > 4 || seen.has(v)) return; \
      if (v instanceof Node || ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return; \
      seen.add(v); \
      for (const k of Object.getOwnPropertyNames(v)) { \
        let x; try { x = v[k]; } catch { continue; } walk(x, depth + 1); } }; \
    walk(window.thingportConsole, 0); return out.join('\\n');";
