"""`edge-asc listen --http`: the read-only status page and JSON API over real HTTP (routes, 404 / 405 / 400 / 414,
path traversal, bounded history, HEAD, security headers), and the page in a real headless Chromium after audio was
fed with `--input clip.wav --realtime` (DOM checked, screenshot written)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from edge_asc.audio import write_audio
from edge_asc.cli import main
from edge_asc.errors import ConfigError, UsageError
from edge_asc.runtime.sinks import SCHEMA
from edge_asc.runtime.status import LiveStatus
from edge_asc.runtime.status_http import MAX_BUCKETS, StatusServer, history, parse_address, render_page

LABELS = ("low", "high", "silence")
MODEL = {"file": "m.tflite", "sha256": "ab" * 32, "labels": list(LABELS), "window_seconds": 0.992,
         "sample_rate": 16000, "n_mels": 64, "preset": "edge", "param_count": 1234, "macs_per_inference": 5678,
         "training_run": "run-1", "exported_at": "2026-01-01", "mode": "int8"}


def make_db(path: Path, rows: list[tuple[float, str, float]]) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO detections (timestamp, stream_time_s, label, confidence, top3, latency_ms, "
                   "model_sha256) VALUES (?, 0, ?, ?, '[]', 1.0, 'x')", rows)
    db.commit()
    db.close()


@pytest.fixture
def server(tmp_path):
    """A status server on a free port over a LiveStatus that saw two windows, and a database of 20 minutes:
    10 min 'low' then 10 min 'high', one row a second."""
    from edge_asc.runtime.pipeline import WindowResult

    now = time.time()
    db = tmp_path / "d.db"
    make_db(db, [(now - 1200 + i, "low" if i < 600 else "high", 0.8) for i in range(1200)])
    live = LiveStatus(LABELS, model=MODEL, source="microphone USB",
                      counters=lambda: {"input_overflows": 2, "ring_overruns": 1, "dropped_samples": 512})
    for label in ("low", "high"):
        live.window(WindowResult(start_s=1.0, probs=np.zeros(3, np.float32), smoothed=np.zeros(3, np.float32),
                                 label=label, confidence=0.75, top3=((label, 0.75), ("silence", 0.2), ("x", 0.05)),
                                 latency_s=0.002))
    live.event("start", "", source="microphone", name="USB")
    s = StatusServer(("127.0.0.1", 0), status=live, db_path=db)
    yield s
    s.close()


def request(server, method: str, target: str, *, body: bytes | None = None):
    host, port = server.httpd.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.putrequest(method, target, skip_accept_encoding=True)  # sent as is: no normalisation of '..'
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_parse_address():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)  # noqa: S104
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:8080") == ("::1", 8080)
    for bad in ("host", "h:99999", "[::1]8080", "h:-1"):
        with pytest.raises(UsageError):
            parse_address(bad)


def test_page_and_json_routes(server):
    st, h, body = request(server, "GET", "/")
    page = body.decode()
    assert st == 200 and h["Content-Type"] == "text/html; charset=utf-8" and int(h["Content-Length"]) == len(body)
    assert '<span id="scene">high</span>' in page and "microphone USB" in page and "run-1" in page
    # Self-contained: no external script, style, font or image (the Pi may be offline).
    assert "http://" not in page and "https://" not in page and "src=" not in page and "@import" not in page
    assert h["Cache-Control"] == "no-store" and h["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in h["Content-Security-Policy"] and "unsafe-inline" not in h["Content-Security-Policy"]
    assert h["Server"] == "edge-asc"

    st, h, body = request(server, "GET", "/api/state")
    s = json.loads(body)
    assert st == 200 and h["Content-Type"] == "application/json"
    assert s["label"] == "high" and s["windows"] == 2 and s["overflows"] == 3 and s["device"] == "ok"
    assert s["source"] == "microphone USB" and s["top3"][0] == ["high", 0.75] and s["rss_mb"] > 0

    st, _, body = request(server, "GET", "/api/model")
    assert st == 200 and json.loads(body) == MODEL

    st, h, body = request(server, "HEAD", "/")
    assert st == 200 and body == b"" and int(h["Content-Length"]) > 1000


def test_history_segments(server):
    now = time.time()
    st, _, body = request(server, "GET", f"/api/history?since={now - 1800:.0f}")
    h = json.loads(body)
    assert st == 200 and h["available"] and h["windows"] == 1200 and h["labels"] == {"low": 600, "high": 600}
    segs = h["segments"]
    assert [s["label"] for s in segs] == ["low", "high"] and segs[0]["end"] == segs[1]["start"]
    assert abs(segs[0]["start"] - (now - 1200)) < h["step_s"] + 1 and abs(segs[1]["end"] - h["until"]) < 1e-3
    assert abs(sum(s["windows"] for s in segs) - 1200) == 0 and segs[0]["confidence"] == pytest.approx(0.8)
    # Default window (3 h), and a long one: never more than MAX_BUCKETS buckets.
    st, _, body = request(server, "GET", "/api/history")
    assert st == 200 and json.loads(body)["step_s"] == pytest.approx(3 * 3600 / MAX_BUCKETS)
    st, _, body = request(server, "GET", f"/api/history?since={now - 47 * 3600:.0f}&step=1")
    assert st == 200 and json.loads(body)["step_s"] >= 46.99 * 3600 / MAX_BUCKETS


def test_history_function_without_a_database(tmp_path):
    h = history(None, 0.0, 100.0)
    assert h["available"] is False and h["segments"] == []
    (tmp_path / "bad.db").write_text("not a database")
    assert "cannot read the database" in history(tmp_path / "bad.db", 0.0, 100.0)["error"]
    n = 100_000  # many alternating rows: the response stays bounded by the bucket count
    make_db(tmp_path / "big.db", [(i * 0.01, "low" if i % 2 else "high", 0.5) for i in range(n)])
    h = history(tmp_path / "big.db", 0.0, n * 0.01)
    assert len(h["segments"]) <= MAX_BUCKETS and h["windows"] == n
    assert len(json.dumps(h)) < 200_000


@pytest.mark.parametrize("target", [
    "/nope", "/index.html", "/api", "/api/state/", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/api/../../../etc/passwd", "//etc/passwd", "/static/..%2f..%2fetc/passwd", "/..\\..\\windows\\win.ini",
])
def test_unknown_paths_and_traversal_are_404(server, target):
    st, h, body = request(server, "GET", target)
    assert st == 404 and h["Content-Type"] == "application/json"
    assert b"root:" not in body and json.loads(body)["status"] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_other_methods_are_405(server, method):
    st, h, body = request(server, method, "/api/state", body=b"{}" if method in ("POST", "PUT") else None)
    assert st == 405 and h["Allow"] == "GET, HEAD" and b"read-only" in body


@pytest.mark.parametrize("query, status", [
    ("since=abc", 400), ("since=nan", 400), ("since=inf", 400), ("since=1", 400), ("since=1e300", 400),
    ("since=1&since=2", 400), ("step=-1", 400), ("foo=1", 400), ("a=1&b=2&c=3&d=4&e=5", 400), ("since", 400),
    ("since=" + "1" * 40, 400),
])
def test_bad_history_queries_are_400(server, query, status):
    st, _, body = request(server, "GET", "/api/history?" + query)
    assert st == status and json.loads(body)["error"]


def test_oversized_requests_are_414(server):
    st, _, _ = request(server, "GET", "/api/history?since=" + "1" * 3000)
    assert st == 414
    st, _, _ = request(server, "GET", "/" + "a" * 70_000)  # past the standard library's own line limit
    assert st == 414


def test_busy_server_answers_503(server):
    for _ in range(8):
        server.slots.acquire()
    try:
        st, _, body = request(server, "GET", "/api/state")
    finally:
        for _ in range(8):
            server.slots.release()
    assert st == 503 and b"too many" in body


def test_bind_error_is_a_config_error(server):
    with pytest.raises(ConfigError, match="cannot serve there"):
        StatusServer(server.httpd.server_address[:2], status=server.status)


def test_page_escapes_what_it_shows():
    page = render_page({"label": "<script>x</script>", "confidence": 0.5, "source": "a&b"},
                       {**MODEL, "training_run": "</script><b>", "labels": ["</script>"]})
    assert "<script>x</script>" not in page and "&lt;script&gt;x" in page and "a&amp;b" in page
    assert page.count("</script>") == 2  # the JSON island and the page script; the model's text is escaped


def test_cli_usage_error(tmp_path, capsys):
    assert main(["listen", "--model", "m.tflite", "--input", "x.wav", "--http", "nohost"]) == 2
    assert "--http 'nohost'" in capsys.readouterr().err


# ---- a real browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    from apt_tools import require_binary

    return require_binary("chromium", "chromium")


def _chromium(exe: str, profile: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=6000", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_status_page_in_a_headless_browser(chromium, tmp_path):
    require("tensorflow")
    from runtime_models import high, low, write_model

    model = write_model(tmp_path / "tiny.tflite")
    wav = tmp_path / "clip.wav"
    write_audio(wav, np.concatenate([low(4.0), high(36.0)]), 16_000)
    db = tmp_path / "d.db"
    p = subprocess.Popen([sys.executable, "-m", "edge_asc", "listen", "--model", model, "--input", str(wav),
                          "--realtime", "--hop", "0.5", "--smooth", "2", "--db", str(db), "--http", "127.0.0.1:0",
                          "--plain"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(iter(p.stderr.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            url = next((x.split("status page at ")[1].strip() for x in list(err_lines) if "status page at" in x),
                       None)
            time.sleep(0.1)
        assert url, err_lines
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        while time.monotonic() < deadline:  # wait until the file's second scene is on
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/api/state")
            state = json.loads(c.getresponse().read())
            c.close()
            if state["label"] == "high":
                break
            time.sleep(0.2)
        assert state["label"] == "high", state

        r = _chromium(chromium, tmp_path / "profile", "--dump-dom", url + "?minutes=10")
        assert r.returncode == 0, r.stderr[-2000:]
        dom = r.stdout
        assert '<span id="scene" style="color: rgb(255, 127, 14);">high</span>' in dom  # set by the script
        assert 'data-updated="' in dom and 'data-history="' in dom  # both API calls came back and were rendered
        assert 'class="seg" data-label="low"' in dom and 'class="seg" data-label="high"' in dom
        assert "ok · file clip.wav" in dom and "windows in the last 10 min" in dom

        shot = tmp_path / "status_page.png"
        r = _chromium(chromium, tmp_path / "profile", "--window-size=1280,900", f"--screenshot={shot}",
                      url + "?minutes=10")
        assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280 and len(png) > 20_000
        if os.environ.get("EDGE_ASC_SCREENSHOT"):  # keep a copy (the README's picture)
            shutil.copy(shot, os.environ["EDGE_ASC_SCREENSHOT"])
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    assert p.returncode == 0, err_lines[-5:]
    assert any("stopped (signal)" in x for x in err_lines)
