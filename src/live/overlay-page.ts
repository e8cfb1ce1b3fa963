// Owns the overlay page a creator puts into OBS as a browser source: one self-contained HTML file
// (no CDN, no external file: streams run anywhere, our machines are offline) that connects with
// its read-only overlay key, shows each tip as an alert for a few seconds, queued in order, and
// reconnects with `since` after any drop. Tip text only ever reaches the page through textContent.

/** How long each alert shows by default, and the bounds of `?duration_ms=`. */
export const ALERT_MS_DEFAULT = 5000;
export const ALERT_MS_MIN = 200;
export const ALERT_MS_MAX = 60_000;

export function overlayPage(o: { username: string; nonce: string }): string {
  // The only values put into the page are JSON-encoded into the script, with "<" escaped so no
  // value can close the script element.
  const cfg = JSON.stringify({
    username: o.username,
    defaultMs: ALERT_MS_DEFAULT,
    minMs: ALERT_MS_MIN,
    maxMs: ALERT_MS_MAX,
  }).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>3AM tip alerts</title>
<style nonce="${o.nonce}">
  html, body { margin: 0; padding: 0; background: transparent; overflow: hidden; }
  body { font-family: system-ui, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; width: 100vw; height: 100vh; }
  #stage { position: absolute; left: 0; right: 0; top: 6vh; display: flex; justify-content: center; pointer-events: none; }
  .alert { min-width: 28vw; max-width: 60vw; padding: 1.6vh 2.4vw; border-radius: 1.6vh; color: #fff;
    background: rgba(20, 20, 28, 0.82); box-shadow: 0 0.6vh 3vh rgba(0, 0, 0, 0.45);
    text-align: center; opacity: 0; transform: translateY(-2vh) scale(0.98);
    transition: opacity 250ms ease, transform 250ms ease; }
  .alert.show { opacity: 1; transform: none; }
  .alert .who { font-size: 4.4vh; font-weight: 800; letter-spacing: 0.02em; text-shadow: 0 0.3vh 0.8vh #000; }
  .alert .amount { font-size: 6.2vh; font-weight: 900; color: #7CFFB2; text-shadow: 0 0.3vh 0.8vh #000; margin: 0.4vh 0; }
  .alert .message { font-size: 3.4vh; line-height: 1.25; word-wrap: break-word; overflow-wrap: anywhere; white-space: pre-wrap; text-shadow: 0 0.2vh 0.6vh #000; }
  .alert.superlike { background: linear-gradient(135deg, rgba(255, 120, 0, 0.92), rgba(255, 0, 128, 0.92)); }
  .alert.superlike .amount { color: #FFF27A; }
  .alert.superlike .who::before { content: "\\2605  SUPERLIKE  \\2605"; display: block; font-size: 2.6vh; letter-spacing: 0.3em; color: #FFF27A; }
  #status { position: absolute; right: 1vw; bottom: 1vh; width: 1.2vh; height: 1.2vh; border-radius: 50%; background: #e33; opacity: 0.6; }
  #status.up { background: transparent; }
</style>
</head>
<body>
<div id="stage" aria-live="polite"></div>
<div id="status" title="disconnected"></div>
<script nonce="${o.nonce}">
(function () {
  "use strict";
  var cfg = ${cfg};
  var params = new URLSearchParams(location.search);
  var key = params.get("key") || "";
  var ms = Number(params.get("duration_ms")) || cfg.defaultMs;
  ms = Math.max(cfg.minMs, Math.min(cfg.maxMs, ms));
  var stage = document.getElementById("stage");
  var status = document.getElementById("status");
  var lastSeq = null;     // the newest feed number received: the "since" of the next connection
  var queue = [];
  var showing = false;
  var retryMs = 500;
  var stopped = false;
  window.overlayShown = [];  // every alert shown, in order (for tests and debugging)

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    e.className = cls;
    if (text) e.textContent = text;  // never innerHTML: tip text is user input
    return e;
  }

  function next() {
    if (showing || queue.length === 0) return;
    showing = true;
    var m = queue.shift();
    var t = m.tip;
    var box = el("div", "alert" + (t.kind === "superlike" ? " superlike" : ""));
    box.setAttribute("data-seq", String(m.seq));
    box.appendChild(el("div", "who", (t.from_display_name || t.from_username) + " tipped"));
    box.appendChild(el("div", "amount", "$" + t.amount));
    if (t.message) box.appendChild(el("div", "message", t.message));
    stage.appendChild(box);
    window.overlayShown.push({ seq: m.seq, kind: t.kind, text: box.textContent });
    requestAnimationFrame(function () { box.classList.add("show"); });
    setTimeout(function () {
      box.classList.remove("show");
      setTimeout(function () { box.remove(); showing = false; next(); }, 260);
    }, ms);
  }

  function take(m) {
    if (lastSeq !== null && m.seq <= lastSeq) return;
    lastSeq = m.seq;
    queue.push(m);
    next();
  }

  function connect() {
    if (stopped) return;
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(proto + "//" + location.host + "/ws?overlay_key=" + encodeURIComponent(key));
    ws.onopen = function () {
      // batch: a busy stream's tips come as one frame per delivered batch, not one each.
      var sub = { op: "subscribe", channel: "tips", batch: true };
      if (lastSeq !== null) sub.since = lastSeq;
      ws.send(JSON.stringify(sub));
    };
    ws.onmessage = function (ev) {
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.op === "subscribed") {
        status.className = "up";
        retryMs = 500;
        if (lastSeq === null) lastSeq = m.seq;  // first connection: only tips from now on
      } else if (m.op === "tip") {
        take(m);
      } else if (m.op === "batch") {
        for (var i = 0; i < m.frames.length; i++) take(m.frames[i]);
      } else if (m.op === "reset") {
        lastSeq = m.seq - 1;
      }
    };
    ws.onclose = function (ev) {
      status.className = "";
      if (ev.code === 4001) { stopped = true; return; }  // the key was replaced: a new URL is needed
      setTimeout(connect, retryMs);
      retryMs = Math.min(5000, retryMs * 2);
    };
  }
  connect();
})();
</script>
</body>
</html>
`;
}
