// Thingport web console: the few behaviours a server-rendered page needs, and nothing else.
//
// - Forms marked data-xhr are posted with fetch and the XSRF header every state-changing request
//   made with the session cookie must carry; the answer (an HTML fragment, errors included) replaces
//   the element named by data-target (a selector, or closest:SELECTOR for an ancestor; default: the
//   form itself). data-confirm asks first.
// - Elements with data-poll="URL" refresh their content from URL every data-every seconds while
//   the tab is visible.
// - Buttons with data-copy="ID" copy the text of element ID.
// - An answer with the header x-thingport-redirect navigates there (sign-in, sign-out).

const XSRF = { "X-XSRF-TOKEN": "TWX-XSRF-TOKEN-VALUE" };

async function send(url, options) {
  const r = await fetch(url, {
    credentials: "same-origin",
    ...options,
    headers: { ...XSRF, ...(options.headers || {}) },
  });
  const go = r.headers.get("x-thingport-redirect");
  if (go && go.startsWith("/") && !go.startsWith("//")) {
    location.assign(go);
    return null;
  }
  return r;
}

// The answer replaces the target when it is the target's new version (same id, or the target
// has none); otherwise (an error answered for a panel) it goes inside the target.
function replace(target, html) {
  const holder = document.createElement("template");
  holder.innerHTML = html.trim();
  const nodes = Array.from(holder.content.childNodes);
  const root = holder.content.firstElementChild;
  if (target.id && !(root && root.id === target.id)) {
    target.replaceChildren(...nodes);
  } else {
    target.replaceWith(...nodes);
  }
  for (const node of nodes) {
    if (node instanceof Element) {
      startPolling(node);
      const focusable = "[role=alert], [role=status], [data-focus]";
      const alert = node.matches(focusable) ? node : node.querySelector(focusable);
      if (alert) {
        if (!alert.hasAttribute("tabindex")) alert.setAttribute("tabindex", "-1");
        alert.focus();
      }
    }
  }
}

function failure(form, text) {
  let box = form.querySelector(".xhr-failure");
  if (!box) {
    box = document.createElement("p");
    box.className = "error xhr-failure";
    box.setAttribute("role", "alert");
    form.append(box);
  }
  box.textContent = text;
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-xhr")) return;
  event.preventDefault();
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
  const data = new FormData(form);
  const submitter = event.submitter;
  if (submitter && submitter.name) data.append(submitter.name, submitter.value);
  const body = form.enctype === "multipart/form-data" ? data : new URLSearchParams(data);
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  form.setAttribute("aria-busy", "true");
  try {
    // A button's own formaction wins, as in a plain form post.
    const action = submitter && submitter.hasAttribute("formaction") ? submitter.formAction : form.action;
    const r = await send(action, { method: "POST", body });
    if (!r) return;
    const html = await r.text();
    const selector = form.dataset.target;
    const target = !selector
      ? form
      : selector.startsWith("closest:")
        ? form.closest(selector.slice(8))
        : document.querySelector(selector);
    if (target) replace(target, html);
    else location.reload();
  } catch (e) {
    failure(form, "the server could not be reached: " + e.message);
  } finally {
    if (form.isConnected) {
      buttons.forEach((b) => (b.disabled = false));
      form.removeAttribute("aria-busy");
    }
  }
});

const polling = new WeakSet();

function startPolling(root) {
  const found = root.matches && root.matches("[data-poll]") ? [root] : [];
  found.push(...(root.querySelectorAll ? root.querySelectorAll("[data-poll]") : []));
  for (const el of found) {
    if (polling.has(el)) continue;
    polling.add(el);
    const every = Math.max(1, Number(el.dataset.every) || 5) * 1000;
    const timer = setInterval(async () => {
      if (!el.isConnected) return clearInterval(timer);
      // Not while hidden, nor under the user's hands (a focused control would be replaced).
      if (document.hidden || el.contains(document.activeElement)) return;
      try {
        // Marked as a refresh: it does not keep an unattended session alive.
        const r = await send(el.dataset.poll, { method: "GET", headers: { "X-Thingport-Refresh": "1" } });
        if (r && r.ok) {
          el.innerHTML = await r.text();
          startPolling(el);
        }
      } catch (_) {
        // The next tick tries again.
      }
    }, every);
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = label), 1500);
});

startPolling(document.body);
