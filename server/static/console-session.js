// The browser console's session, shared by the VNC and terminal pages.
//
// The page's own origin (the platform) starts the session: POST <data-start> answers the GAS's
// console URL and a single-use ticket. The browser then opens the GAS's console WebSocket and
// sends the ticket as its first message (never in a URL, so it reaches no log). The GAS answers
// {"type":"ready"} once it has logged in to the endpoint with the stored credentials (which this
// page never sees), or why it could not: {"type":"error"} or {"type":"hostKey"}.

export const root = document.getElementById("console");
const stateEl = document.getElementById("console-state");
const noticeEl = document.getElementById("console-notice");
const hostkeyEl = document.getElementById("hostkey");
const reconnectBtn = root.querySelector('[data-action="reconnect"]');
const XSRF = { "X-XSRF-TOKEN": "TWX-XSRF-TOKEN-VALUE" };

// What tests (and curious operators) can read: the console's state and last message.
export const status = { state: "starting", message: "", session: "", hostKey: null };
window.thingportConsole = status;

export function setState(text, state) {
  stateEl.textContent = text;
  stateEl.dataset.state = state;
  status.state = state;
}

export function notice(text) {
  noticeEl.textContent = text;
  noticeEl.hidden = !text;
  status.message = text;
}

function controls(enabled) {
  for (const el of root.querySelectorAll(".console-bar [data-action], [data-action=send-clipboard]")) {
    if (el.dataset.action === "reconnect") continue;
    el.disabled = !enabled;
  }
}

let onReconnect = null;
reconnectBtn.addEventListener("click", () => {
  reconnectBtn.hidden = true;
  if (onReconnect) onReconnect();
});

// The console is over: say why, offer to reconnect, and add how the platform recorded it.
export function ended(reason, state = "ended") {
  if (status.state === "ended" || status.state === "failed") return;
  reason = reason ? reason.charAt(0).toUpperCase() + reason.slice(1) : "";
  setState(state === "failed" ? "Failed" : "Disconnected", state);
  root.dataset.ended = "";
  notice(reason);
  controls(false);
  reconnectBtn.hidden = false;
  if (status.session) recorded(status.session, reason);
}

// The session's termination cause, once the platform has it (a few tries over about 5 s).
async function recorded(session, reason) {
  const url = `${root.dataset.start.replace(/\/start$/, "/session")}?id=${encodeURIComponent(session)}`;
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 500));
    if (status.session !== session) return;
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const s = await r.json();
      if (s.status === "TERMINATED" && s.terminationCause) {
        status.terminationCause = s.terminationCause;
        if (status.session === session) notice(`${reason} (The session ended: ${s.terminationCause}.)`);
        return;
      }
    } catch {
      return;
    }
  }
}

// A refusal from the platform or the GAS, shown as such.
export function failed(e) {
  if (e && e.type === "hostKey") {
    showHostKey(e);
    ended(e.code === "HOST_KEY_MISMATCH"
      ? "The device presented another SSH host key than the one pinned for this endpoint. The connection was refused."
      : "No SSH host key is pinned for this endpoint yet. The connection was refused.", "failed");
    return;
  }
  let text = (e && (e.message || e.reason)) || String(e);
  const code = (e && e.code) || "";
  if (code.endsWith("AUTH_FAILED") || code === "VNC_PASSWORD_REQUIRED") {
    text = `${text.charAt(0).toUpperCase()}${text.slice(1)}. Someone who may edit the endpoint can correct the stored credentials on the device page.`;
  } else if (code === "ENDPOINT_UNREACHABLE") {
    text = `The gateway could not reach the endpoint: ${text}`;
  } else if (code === "TICKET_REFUSED") {
    text = `The Global Access Server refused the console: ${text}`;
  }
  ended(text, "failed");
}

function showHostKey(m) {
  status.hostKey = { code: m.code, fingerprint: m.fingerprint, key: m.key };
  document.getElementById("hostkey-text").textContent = m.code === "HOST_KEY_MISMATCH"
    ? `Warning: the host key changed. The device presented the key below; the pinned key is ${m.expected}. If the device was not reinstalled, someone may be intercepting the connection.`
    : "The device presented this SSH host key. Check its fingerprint (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the device) before trusting it.";
  document.getElementById("hostkey-fingerprint").textContent = m.fingerprint;
  hostkeyEl.hidden = false;
  const trust = hostkeyEl.querySelector('[data-action="trust"]');
  if (trust) {
    trust.onclick = async () => {
      trust.disabled = true;
      try {
        const r = await fetch(root.dataset.trust, {
          method: "POST",
          credentials: "same-origin",
          headers: { ...XSRF, "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
          body: new URLSearchParams({ hostKey: m.key }),
        });
        const body = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(body.error || `the platform answered ${r.status}`);
        hostkeyEl.hidden = true;
        status.hostKey = null;
        reconnectBtn.hidden = true;
        if (onReconnect) onReconnect();
      } catch (err) {
        notice(`The key was not pinned: ${err.message}`);
      } finally {
        trust.disabled = false;
      }
    };
  }
}

// Starts a session and opens its console; resolves with the WebSocket once the GAS is ready.
export async function open(size, reconnect) {
  onReconnect = reconnect;
  hostkeyEl.hidden = true;
  notice("");
  delete root.dataset.ended;
  status.state = "starting";
  setState("Starting a session…", "starting");
  const r = await fetch(root.dataset.start, {
    method: "POST",
    credentials: "same-origin",
    headers: { ...XSRF, Accept: "application/json" },
  });
  if (r.status === 401) {
    window.location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
    throw new Error("signed out");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `the platform answered ${r.status}`);
  status.session = body.session;
  setState("Connecting to the device…", "connecting");
  const ws = new WebSocket(body.consoleUrl, "thingport-console.v1");
  ws.binaryType = "arraybuffer";
  return await new Promise((resolve, reject) => {
    let settled = false;
    const settle = (f, v) => { if (!settled) { settled = true; f(v); } };
    ws.onopen = () => ws.send(JSON.stringify({ ticket: body.ticket, cols: size.cols, rows: size.rows }));
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === "ready") {
        ws.onmessage = null; ws.onclose = null; ws.onerror = null;
        setState("Connected", "connected");
        controls(true);
        settle(resolve, ws);
      } else if (m.type === "error" || m.type === "hostKey") {
        settle(reject, m);
      }
    };
    ws.onclose = (ev) => settle(reject, { message: ev.reason ? `The console closed: ${ev.reason}` : "The console connection closed before it was ready." });
    ws.onerror = () => settle(reject, { message: "The Global Access Server could not be reached for the console." });
  });
}
