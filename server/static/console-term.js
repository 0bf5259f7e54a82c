// SSH and Telnet consoles: xterm.js on the GAS's console WebSocket. Keyboard input goes up as
// binary messages, output comes down as binary messages; resizes and flow control are small
// JSON text messages. When output arrives faster than the terminal draws it, the page asks the
// GAS to pause (it then stops reading the device, which backs up into the tunnel), and to
// resume once the terminal caught up.

import { Terminal } from "/static/vendor/xterm-6.0.0/lib/xterm.mjs";
import { FitAddon } from "/static/vendor/xterm-addon-fit-0.11.0/lib/addon-fit.mjs";
import * as c from "/static/console-session.js";

const screen = document.getElementById("screen");
const term = new Terminal({
  cursorBlink: true,
  fontSize: 14,
  scrollback: 5000,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(screen);
fit.fit();
c.status.term = term;

const encoder = new TextEncoder();
let ws = null;
// ttyd's flow control: a write callback every 100 kB; more than 10 outstanding → pause.
const CALLBACK_EVERY = 100000;
let written = 0;
let pending = 0;
let paused = false;

function control(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function output(bytes) {
  written += bytes.length;
  if (written > CALLBACK_EVERY) {
    written = 0;
    pending += 1;
    term.write(bytes, () => {
      pending = Math.max(0, pending - 1);
      if (paused && pending < 4) { paused = false; control({ type: "resume" }); }
    });
    if (!paused && pending > 10) { paused = true; control({ type: "pause" }); }
  } else {
    term.write(bytes);
  }
}

async function connect() {
  fit.fit();
  written = 0; pending = 0; paused = false;
  try {
    ws = await c.open({ cols: term.cols, rows: term.rows }, connect);
  } catch (e) {
    ws = null;
    c.failed(e);
    return;
  }
  let last = "";
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { output(new Uint8Array(ev.data)); return; }
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    if (m.type === "exit") term.write(`\r\n[the remote shell exited with status ${m.status}]\r\n`);
    else if (m.type === "closed") last = m.reason;
    else if (m.type === "error") last = m.message;
  };
  ws.onclose = (ev) => {
    ws = null;
    c.ended(last || ev.reason || "The console connection closed.");
  };
  control({ type: "resize", cols: term.cols, rows: term.rows });
  term.focus();
}

term.onData((d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
term.onBinary((d) => {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const b = new Uint8Array(d.length);
  for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
  ws.send(b);
});
term.onResize(({ cols, rows }) => control({ type: "resize", cols, rows }));
new ResizeObserver(() => { try { fit.fit(); } catch { /* hidden */ } }).observe(screen);

c.root.querySelector('[data-action="copy"]').addEventListener("click", async () => {
  const text = term.getSelection();
  if (!text) { c.notice("Select text in the terminal first."); return; }
  try { await navigator.clipboard.writeText(text); c.notice(""); } catch { c.notice("The browser did not allow copying: use Ctrl+Insert or the context menu."); }
  term.focus();
});
c.root.querySelector('[data-action="paste"]').addEventListener("click", async () => {
  try { term.paste(await navigator.clipboard.readText()); c.notice(""); } catch { c.notice("The browser did not allow reading the clipboard: use Ctrl+Shift+V or Shift+Insert in the terminal."); }
  term.focus();
});

connect();
