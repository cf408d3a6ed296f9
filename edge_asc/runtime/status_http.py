"""The status page of ``edge-asc listen --http 127.0.0.1:8080``: standard library only, read-only.

Routes (GET and HEAD only; anything else is 405, any other path 404 -- no file is ever served, so there is nothing
to traverse):

* ``/``: one self-contained HTML page (inline CSS and JS, no CDN: the Pi may be offline) with the current scene and
  confidence, the top-3, a timeline of the last hours from the SQLite log, counters and the model card.
* ``/api/state``: the :class:`~edge_asc.runtime.status.LiveStatus` snapshot as JSON.
* ``/api/history?since=UNIX_S[&step=S]``: the SQLite log since ``since`` (default 3 h ago, at most
  :data:`MAX_HISTORY_S` back) as at most :data:`MAX_BUCKETS` time buckets, each the majority label, merged into
  segments ``{"start", "end", "label", "confidence" (mean of the label's windows), "windows" (all windows in
  the segment's buckets)}``.
* ``/api/model``: the model card summary.

Responses are bounded (:data:`MAX_BUCKETS` segments, :data:`MAX_URL` characters of request target, at most
:data:`MAX_CLIENTS` requests served at once), carry ``Cache-Control: no-store`` and a strict Content-Security-Policy
that allows only this page's own inline script and style (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import socket
import sqlite3
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError, UsageError
from .sinks import Sink

MAX_URL = 2048
"""longest request target (path + query) in characters; longer is 414."""
MAX_HISTORY_S = 48 * 3600
"""the oldest ``since`` accepted by /api/history, in seconds before now."""
MAX_BUCKETS = 720
"""most time buckets (hence segments) in one history response."""
MAX_CLIENTS = 8
"""requests served at once; more get 503."""
DEFAULT_HISTORY_S = 3 * 3600


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``PORT`` (host 127.0.0.1) -> ``(host, port)``; port 0 picks a free one.

    Raises:
        UsageError: no port, a port outside 0..65535.
    """
    t = text.strip()
    host, port_s = "127.0.0.1", t
    if t.startswith("["):
        end = t.find("]")
        if end < 0 or not t[end + 1:].startswith(":"):
            raise UsageError(f"--http {text!r}: use [ADDRESS]:PORT for IPv6")
        host, port_s = t[1:end], t[end + 2:]
    elif ":" in t:
        host, _, port_s = t.rpartition(":")
        host = host or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise UsageError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--http {text!r}: the port must be in 0..65535")
    return host, port


def history(db_path: str | os.PathLike | None, since: float, until: float, step_s: float | None = None,
            ) -> dict[str, Any]:
    """The detections between ``since`` and ``until`` (unix s) as majority-label buckets merged into segments.

    ``step_s`` (seconds per bucket) is raised so that at most :data:`MAX_BUCKETS` buckets cover the span.
    Returns ``{"since", "until", "step_s", "windows", "segments": [...], "labels": {label: windows},
    "available": bool}``; ``available`` is False when there is no database (yet).
    """
    span = max(until - since, 1.0)
    step = max(float(step_s or 0.0), span / MAX_BUCKETS, 1.0)
    out: dict[str, Any] = {"since": round(since, 3), "until": round(until, 3), "step_s": round(step, 3),
                           "windows": 0, "segments": [], "labels": {}, "available": False}
    if db_path is None or not Path(db_path).is_file():
        return out
    try:
        con = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            rows = con.execute(
                "SELECT CAST((timestamp - ?) / ? AS INTEGER) AS b, label, count(*), avg(confidence) "
                "FROM detections WHERE timestamp >= ? AND timestamp < ? GROUP BY b, label ORDER BY b",
                (since, step, since, until)).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        out["error"] = f"cannot read the database: {exc}"
        return out
    out["available"] = True
    best: dict[int, tuple[str, int, float]] = {}
    in_bucket: dict[int, int] = {}
    totals: dict[str, int] = {}
    for b, label, n, conf in rows:
        totals[label] = totals.get(label, 0) + n
        in_bucket[b] = in_bucket.get(b, 0) + n
        cur = best.get(b)
        if cur is None or n > cur[1]:
            best[b] = (label, n, conf)
    segs: list[dict[str, Any]] = []
    for b in sorted(best):
        label, _, conf = best[b]
        n = in_bucket[b]
        start, end = since + b * step, min(since + (b + 1) * step, until)
        last = segs[-1] if segs else None
        if last is not None and last["label"] == label and abs(last["end"] - start) < 1e-6:
            w = last["windows"] + n
            last["confidence"] = (last["confidence"] * last["windows"] + conf * n) / w
            last["windows"], last["end"] = w, end
        else:
            segs.append({"start": start, "end": end, "label": label, "confidence": conf, "windows": n})
    for s in segs:
        s["start"], s["end"], s["confidence"] = round(s["start"], 3), round(s["end"], 3), round(s["confidence"], 4)
    out["segments"] = segs
    out["labels"] = totals
    out["windows"] = sum(totals.values())
    return out


_CSS = """
:root{--bg:#0f1419;--fg:#e6e6e6;--mut:#8b949e;--card:#161b22;--line:#30363d}
*{box-sizing:border-box}body{margin:0;font:15px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:12px 20px;border-bottom:1px solid var(--line);display:flex;gap:12px;align-items:baseline}
header h1{font-size:18px;margin:0}header span{color:var(--mut)}
main{display:grid;grid-template-columns:2fr 1fr;gap:16px;padding:16px 20px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--mut);margin:0 0 10px}
#scene{font-size:44px;font-weight:700}#conf{font-size:20px;color:var(--mut);margin-left:10px}
#since{color:var(--mut);font-size:13px;margin-bottom:8px}
.bar{height:10px;background:var(--line);border-radius:5px;overflow:hidden;margin:3px 0 8px}
.bar i{display:block;height:100%}
.top{display:grid;grid-template-columns:130px 1fr 50px;gap:8px;align-items:center;font-size:14px}
#timeline{display:flex;height:46px;border-radius:6px;overflow:hidden;background:var(--line);margin:6px 0}
.seg{height:100%;min-width:1px}.axis{display:flex;justify-content:space-between;color:var(--mut);font-size:12px}
.legend span{display:inline-block;margin-right:12px;font-size:13px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
table{border-collapse:collapse;width:100%;font-size:14px}td{padding:3px 0;border-bottom:1px solid var(--line)}
td:last-child{text-align:right;font-variant-numeric:tabular-nums}
.wide{grid-column:1/-1}button{background:var(--line);color:var(--fg);border:0;border-radius:4px;padding:3px 9px}
button.on{background:#1f6feb}.warn{color:#f0883e}.bad{color:#f85149}.ok{color:#3fb950}
@media (max-width:800px){main{grid-template-columns:1fr}}
"""

_JS = """
"use strict";
const MODEL = JSON.parse(document.getElementById("model-data").textContent);
const PALETTE = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22",
                 "#17becf","#aec7e8","#ffbb78","#98df8a","#ff9896"];
const color = l => { const i = MODEL.labels.indexOf(l); return i < 0 ? "#555" : PALETTE[i % PALETTE.length]; };
const asked = Number(new URLSearchParams(location.search).get("minutes"));
let minutes = asked >= 1 && asked <= 2880 ? asked : 180;
const $ = id => document.getElementById(id);
const fmtTime = t => new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
const fmtDur = s => s < 120 ? s.toFixed(0) + " s" :
  s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function row(tbody, k, v, cls) {
  const tr = el("tr"); tr.append(el("td", {}, k)); const td = el("td", cls ? {class: cls} : {}, v); tr.append(td);
  tbody.append(tr);
}
function renderState(s) {
  $("scene").textContent = s.label || "\\u2013";
  $("scene").style.color = s.label ? color(s.label) : "";
  $("conf").textContent = s.label ? (100 * s.confidence).toFixed(0) + " %" : "waiting for the first window";
  $("since").textContent = s.last_change ? "since " + new Date(s.last_change.wall_time * 1000).toLocaleTimeString() +
    (s.last_change.previous ? " (was " + s.last_change.previous + ")" : "") : "";
  const top = $("top3"); top.replaceChildren();
  for (const [l, p] of s.top3) {
    const d = el("div", {class: "top"}); d.append(el("span", {}, l));
    const b = el("div", {class: "bar"}); const i = el("i");
    i.style.width = (100 * p).toFixed(1) + "%"; i.style.background = color(l); b.append(i); d.append(b);
    d.append(el("span", {}, (100 * p).toFixed(0) + "%")); top.append(d);
  }
  const t = $("counters"); t.replaceChildren();
  const dev = {ok: "ok", lost: "bad", waiting: "warn", stopped: "warn", starting: "warn"}[s.device] || "";
  row(t, "device", s.device + (s.source ? " \\u00b7 " + s.source : ""), dev);
  row(t, "windows", s.windows.toLocaleString());
  row(t, "scene changes", s.scene_changes.toLocaleString());
  row(t, "overflows (input / ring)", s.input_overflows + " / " + s.ring_overruns, s.overflows ? "warn" : "");
  row(t, "device losses", s.device_losses, s.device_losses ? "warn" : "");
  row(t, "CPU", s.cpu_percent.toFixed(1) + " %");
  row(t, "memory (RSS)", s.rss_mb.toFixed(0) + " MB");
  row(t, "inference latency", s.latency_ms.toFixed(2) + " ms");
  row(t, "uptime", fmtDur(s.uptime_s));
  if (s.mqtt_connected !== undefined)
    row(t, "MQTT", (s.mqtt_connected ? "connected" : "disconnected") + (s.mqtt_dropped ? ", " + s.mqtt_dropped +
        " dropped" : ""), s.mqtt_connected ? "ok" : "bad");
  $("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
  document.body.dataset.updated = String(s.time);
}
function gap(tl, seconds) {
  const g = el("div", {class: "seg gap"}); g.style.flex = String(seconds); tl.append(g);
}
function renderHistory(h) {
  const tl = $("timeline"); tl.replaceChildren();
  const span = Math.max(h.until - h.since, 1);
  let pos = h.since;
  for (const s of h.segments) {
    if (s.start > pos) gap(tl, s.start - pos);
    const d = el("div", {class: "seg", "data-label": s.label,
      title: s.label + " " + fmtTime(s.start) + "\\u2013" + fmtTime(s.end) + " (" +
             (100 * s.confidence).toFixed(0) + "%)"});
    d.style.flex = String(s.end - s.start); d.style.background = color(s.label); tl.append(d); pos = s.end;
  }
  if (h.until > pos) gap(tl, h.until - pos);
  $("t0").textContent = fmtTime(h.since); $("t1").textContent = "now";
  const lg = $("legend"); lg.replaceChildren();
  const total = Math.max(h.windows, 1);
  for (const l of MODEL.labels) {
    if (!h.labels[l]) continue;
    const s = el("span"); const i = el("i"); i.style.background = color(l); s.append(i);
    s.append(document.createTextNode(l + " " + (100 * h.labels[l] / total).toFixed(0) + "%")); lg.append(s);
  }
  $("histnote").textContent = h.available ?
    h.windows.toLocaleString() + " windows in the last " + fmtDur(minutes * 60) :
    (h.error || "no database: start listen with --db to keep a timeline");
  document.body.dataset.history = String(h.segments.length);
}
async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(r.status);
  return r.json();
}
async function pollState() {
  try { renderState(await getJSON("/api/state")); } catch (e) { $("updated").textContent = "listen is not answering"; }
}
async function pollHistory() {
  const since = (Date.now() / 1000 - minutes * 60).toFixed(0);
  try { renderHistory(await getJSON("/api/history?since=" + since)); }
  catch (e) { $("histnote").textContent = "history: " + e; }
}
for (const b of document.querySelectorAll("button[data-minutes]")) {
  b.classList.toggle("on", Number(b.dataset.minutes) === minutes);
  b.addEventListener("click", () => {
    minutes = Number(b.dataset.minutes);
    for (const o of document.querySelectorAll("button[data-minutes]")) o.classList.toggle("on", o === b);
    pollHistory();
  });
}
pollState(); pollHistory(); setInterval(pollState, 2000); setInterval(pollHistory, 15000);
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


CSP = (f"default-src 'none'; script-src {_csp_hash(_JS)}; style-src {_csp_hash(_CSS)}; connect-src 'self'; "
       "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def render_page(state: dict[str, Any], model: dict[str, Any]) -> str:
    """The HTML page with the current state rendered in (the script refreshes it)."""
    e = html.escape
    label = state.get("label") or "\u2013"
    conf = f"{100 * state.get('confidence', 0.0):.0f} %" if state.get("label") else "waiting for the first window"
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in (
        ("file", model.get("file", "")), ("sha256", str(model.get("sha256", ""))[:16]),
        ("labels", ", ".join(model.get("labels", []))), ("window", f"{model.get('window_seconds', 0)} s"),
        ("front end", f"{model.get('sample_rate', '')} Hz, {model.get('n_mels', '')} mels"),
        ("preset", model.get("preset") or "-"), ("parameters", f"{model.get('param_count', 0):,}"),
        ("MACs per window", f"{model.get('macs_per_inference', 0):,}"),
        ("training run", model.get("training_run") or "-"), ("exported", model.get("exported_at") or "-")))
    model_json = json.dumps(model).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    source = e(state.get("source", ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edge-asc \u00b7 {e(label)}</title><link rel="icon" href="data:,"><style>{_CSS}</style></head>
<body><header><h1>edge-asc</h1><span>{source}</span><span id="updated"></span></header>
<main>
<section><h2>Scene now</h2><div><span id="scene">{e(label)}</span><span id="conf">{e(conf)}</span></div>
<div id="since"></div><div id="top3"></div></section>
<section><h2>Counters</h2><table><tbody id="counters"></tbody></table></section>
<section class="wide"><h2>Timeline <button data-minutes="10">10 min</button> <button data-minutes="60">1 h</button>
<button data-minutes="180">3 h</button> <button data-minutes="720">12 h</button>
<button data-minutes="1440">24 h</button></h2>
<div id="timeline"></div><div class="axis"><span id="t0"></span><span id="histnote"></span><span id="t1"></span></div>
<div class="legend" id="legend"></div></section>
<section class="wide"><h2>Model card</h2><table><tbody>{rows}</tbody></table></section>
</main>
<script type="application/json" id="model-data">{model_json}</script>
<script>{_JS}</script>
</body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: StatusServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-asc"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a client may idle mid-request

    def log_message(self, format: str, *args: Any) -> None:  # no access log on the listen terminal
        pass

    def version_string(self) -> str:
        return self.server_version

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method except GET and HEAD: 405 with Allow
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed: this page is read-only (GET, HEAD)\n",
                   "text/plain; charset=utf-8", extra={"Allow": "GET, HEAD"})

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, *, head: bool = False,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: Any, head: bool) -> None:
        self._send(status, (json.dumps(obj, separators=(",", ":")) + "\n").encode(), "application/json", head=head)

    def _error(self, status: HTTPStatus, message: str, head: bool) -> None:
        self._json(status, {"error": message, "status": int(status)}, head)

    def _serve(self, head: bool) -> None:
        app = self.server.app
        if not app.slots.acquire(blocking=False):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "too many requests at once", head)
            return
        try:
            self._route(app, head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            app.slots.release()

    def _route(self, app: StatusServer, head: bool) -> None:
        if len(self.path) > MAX_URL:
            self._error(HTTPStatus.REQUEST_URI_TOO_LONG, f"request target longer than {MAX_URL} characters", head)
            return
        u = urlsplit(self.path)
        if u.path == "/":
            body = render_page(app.status.snapshot(), app.status.model).encode("utf-8")
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", head=head)
        elif u.path == "/api/state":
            self._json(HTTPStatus.OK, app.state(), head)
        elif u.path == "/api/model":
            self._json(HTTPStatus.OK, app.status.model, head)
        elif u.path == "/api/history":
            try:
                q = parse_qs(u.query, keep_blank_values=True, strict_parsing=bool(u.query), max_num_fields=4)
            except ValueError:
                self._error(HTTPStatus.BAD_REQUEST, "malformed query string", head)
                return
            unknown = sorted(set(q) - {"since", "step"})
            if unknown:
                self._error(HTTPStatus.BAD_REQUEST, f"unknown query parameter(s): {', '.join(unknown)[:100]}", head)
                return
            now = time.time()
            try:
                since = _number(q, "since", now - DEFAULT_HISTORY_S)
                step = _number(q, "step", 0.0)
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc), head)
                return
            if since < now - MAX_HISTORY_S:
                self._error(HTTPStatus.BAD_REQUEST, f"since is more than {MAX_HISTORY_S // 3600} h ago", head)
                return
            if since > now or step < 0:
                self._error(HTTPStatus.BAD_REQUEST, "since must be in the past and step >= 0", head)
                return
            self._json(HTTPStatus.OK, history(app.db_path, since, now, step), head)
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found: try /, /api/state, /api/history?since=UNIX_S", head)


def _number(q: dict[str, list[str]], key: str, default: float) -> float:
    vals = q.get(key)
    if vals is None:
        return default
    if len(vals) != 1 or len(vals[0]) > 32:
        raise ValueError(f"{key} must be given once, as a number")
    try:
        v = float(vals[0])
    except ValueError:
        raise ValueError(f"{key} must be a number, got {vals[0]!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{key} must be finite, got {vals[0]!r}")
    return v


class StatusServer(Sink):
    """The status page's HTTP server, in daemon threads; a sink only so that the listen loop closes it.

    Args:
        address: ``(host, port)``; port 0 picks a free port (see :attr:`url`).
        status: the :class:`~edge_asc.runtime.status.LiveStatus` to show.
        db_path: the listen SQLite database for the timeline (None: no timeline).

    Raises:
        ConfigError: the address cannot be bound (in use, not an address of this machine).
    """

    def __init__(self, address: tuple[str, int], *, status, db_path: str | os.PathLike | None = None) -> None:
        self.status = status
        self.db_path = str(db_path) if db_path is not None else None
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        host, port = address
        try:
            self.httpd = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"--http {host}:{port}: cannot serve there ({exc.strerror}): pick another port") \
                from None
        self.httpd.app = self
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="edge-asc-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def state(self) -> dict[str, Any]:
        return self.status.snapshot()

    def close(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join(timeout=2.0)
        self.httpd.server_close()
