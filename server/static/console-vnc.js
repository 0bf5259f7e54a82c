// VNC consoles: noVNC on the GAS's console WebSocket. The GAS has already answered the VNC
// server's security handshake with the stored password and offers this page only security type
// None, so noVNC never asks for (or sees) a password.

import RFB from "/static/vendor/novnc-1.7.0/core/rfb.js";
import * as c from "/static/console-session.js";

const screen = document.getElementById("screen");
const fit = c.root.querySelector('[data-action="fit"]');
const viewOnly = c.root.querySelector('[data-action="view-only"]');
const clip = document.getElementById("clipboard-text");
let rfb = null;

async function connect() {
  let ws;
  try {
    ws = await c.open({ cols: 80, rows: 24 }, connect);
  } catch (e) {
    c.failed(e);
    return;
  }
  let reason = "";
  ws.addEventListener("close", (ev) => { reason = ev.reason; });
  c.setState("Connecting to the screen…", "connecting");
  rfb = new RFB(screen, ws, { shared: true });
  c.status.rfb = rfb;
  rfb.scaleViewport = fit.checked;
  rfb.viewOnly = viewOnly.checked;
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    c.setState("Connected", "connected");
    c.status.connected = true;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", () => {
    c.status.connected = false;
    rfb = null;
    c.ended(reason ? `The console ended: ${reason}` : "The VNC connection closed.");
  });
  rfb.addEventListener("desktopname", (e) => { c.status.desktop = e.detail.name; });
  rfb.addEventListener("clipboard", (e) => { clip.value = e.detail.text; });
}

fit.addEventListener("change", () => { if (rfb) rfb.scaleViewport = fit.checked; });
viewOnly.addEventListener("change", () => { if (rfb) rfb.viewOnly = viewOnly.checked; });
c.root.querySelector('[data-action="ctrl-alt-del"]').addEventListener("click", () => { if (rfb) { rfb.sendCtrlAltDel(); rfb.focus(); } });
c.root.querySelector('[data-action="send-clipboard"]').addEventListener("click", () => { if (rfb) rfb.clipboardPasteFrom(clip.value); });

// X11 keysyms of the special keys the browser would keep for itself.
const KEYS = {
  Escape: [[0xff1b, "Escape"]], Tab: [[0xff09, "Tab"]],
  F1: [[0xffbe, "F1"]], F2: [[0xffbf, "F2"]], F5: [[0xffc2, "F5"]],
  F10: [[0xffc7, "F10"]], F11: [[0xffc8, "F11"]], F12: [[0xffc9, "F12"]],
  Super: [[0xffeb, "MetaLeft"]],
  CtrlAltF1: [[0xffe3, "ControlLeft"], [0xffe9, "AltLeft"], [0xffbe, "F1"]],
  CtrlAltF7: [[0xffe3, "ControlLeft"], [0xffe9, "AltLeft"], [0xffc4, "F7"]],
};
const keySelect = c.root.querySelector('[data-action="key"]');
keySelect.addEventListener("change", () => {
  const keys = KEYS[keySelect.value];
  keySelect.value = "";
  if (!rfb || !keys) return;
  for (const [sym, code] of keys) rfb.sendKey(sym, code, true);
  for (const [sym, code] of [...keys].reverse()) rfb.sendKey(sym, code, false);
  rfb.focus();
});

connect();
