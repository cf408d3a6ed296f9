"""Soak: `edge-asc listen` over hours of audio with SQLite, JSONL, the status page and MQTT on, faster than real time.

1. Run: a seeded clip (scenes change every 30 s) looped to ``--hours`` of audio and paced at ``--speed`` x real time
   (``listen --input CLIP --realtime --speed S --loop N --hop 0.5 --db --jsonl --http 127.0.0.1:0 --mqtt ...``), with
   a local Mosquitto started here when the ``mosquitto`` program exists (Debian package ``mosquitto``; otherwise MQTT
   is off and the JSON says so) and a subscriber counting the scene messages. Every 0.5 s of wall time the script
   reads the process's RSS (``/proc/PID/status``) and the stream time from ``/api/state`` (so the HTTP server is
   exercised all along). Goals: RSS slope (least squares after the warm-up: the first hour of audio or 10 %,
   whichever is longer) < 1 MB per hour of audio; database rows == windows expected for the audio length ==
   windows listen reports; no overflow or ring overrun; every scene change reached MQTT. CPU seconds per audio
   second (of the listen process) is reported. The ring holds ``4 * speed`` seconds of audio (listen sizes it so),
   which shows in RSS during the warm-up.
2. Kill: the same command again, killed with SIGKILL at a seeded random moment of its run; then SQLite's
   ``PRAGMA integrity_check`` must answer ``ok`` and every JSONL line must parse.

    python benchmarks/soak.py --model runs/demo/model_int8.tflite --hours 8 --speed 100 \\
        --json runs/bench/soak.json
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from _util import goals_text, parser, write_json

from edge_asc.audio import write_audio
from edge_asc.runtime import Classifier, hop_frames_for

DEFAULT_MODEL = "runs/demo/model_int8.tflite"  # what `make demo` writes
MAX_RSS_SLOPE_MB_PER_AUDIO_HOUR = 1.0
CLIP_SECONDS = 300.0
SCENE_SECONDS = 30.0
HOP_S = 0.5
SAMPLE_EVERY_S = 0.5
WARMUP_FRACTION = 0.1
WARMUP_AUDIO_S = 3600.0
"""the RSS slope leaves out the first 10 % or the first hour of audio, whichever is longer (at most half the run):
SQLite's page cache (2 MB by default) and the ring fill up during it."""


def scene_clip(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Seeded audio whose character changes every ``SCENE_SECONDS``: low noise, tones, high noise, near silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.empty(n, np.float32)
    seg = int(SCENE_SECONDS * sr)
    t = np.arange(seg) / sr
    for k, i in enumerate(range(0, n, seg)):
        m = min(seg, n - i)
        kind = k % 4
        noise = rng.standard_normal(m)
        if kind == 0:
            x = np.convolve(noise, np.ones(16) / 16, mode="same") * 0.5
        elif kind == 1:
            x = 0.2 * np.sin(2 * np.pi * (300 + 100 * (k % 7)) * t[:m]) + 0.02 * noise
        elif kind == 2:
            x = np.diff(noise, prepend=0.0) * 0.1
        else:
            x = 0.002 * noise
        out[i : i + m] = np.clip(x, -1, 1)
    return out


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen | None, int | None, str]:
    """A throw-away anonymous broker on 127.0.0.1:<free port>; ``(None, None, why)`` without mosquitto."""
    exe = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        return None, None, "mosquitto not installed (sudo apt-get install mosquitto): MQTT off"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return None, None, "paho-mqtt not installed (pip install 'edge-asc[pi]'): MQTT off"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port, "on"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None, "mosquitto did not start: MQTT off"


class SceneCounter:
    """Counts MQTT messages on one topic."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.count = 0
        ready = threading.Event()
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="soak-counter")
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: ready.set()

        def on_message(cl, u, msg):
            self.count += 1

        c.on_message = on_message
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        ready.wait(10)
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


def get_json(url: str) -> dict | None:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"not the local status page: {url}")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - checked above: http://127.0.0.1 only
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def listen_cmd(model: str, wav: Path, loops: int, speed: float, d: Path, mqtt_port: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "edge_asc", "listen", "--model", model, "--input", str(wav), "--realtime",
           "--speed", f"{speed:g}", "--loop", str(loops), "--hop", str(HOP_S), "--plain", "--db", str(d / "soak.db"),
           "--jsonl", str(d / "soak.jsonl"), "--http", "127.0.0.1:0"]
    if mqtt_port is not None:
        cmd += ["--mqtt", f"mqtt://127.0.0.1:{mqtt_port}", "--mqtt-node", "soak", "--mqtt-interval", "5"]
    return cmd


STATUS_URL = re.compile(r"status page at (http://127\.0\.0\.1:\d+/)")


def start_listen(cmd: list[str]) -> tuple[subprocess.Popen, list[str], str]:
    """Start listen; return the process, its stderr lines (filled by a thread) and the status page URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        url = next((m.group(1) for x in list(lines) if (m := STATUS_URL.search(x))), None)
        if url:
            return p, lines, url
        time.sleep(0.05)
    p.kill()
    raise SystemExit(f"listen did not start: {''.join(lines)[-2000:]}")


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) over stream time (hours), warm-up samples left out."""
    a = np.array(samples, dtype=np.float64)
    if len(a) == 0:
        return float("nan")
    start = max(a[0, 0] + WARMUP_FRACTION * np.ptp(a[:, 0]), WARMUP_AUDIO_S)
    start = min(start, a[0, 0] + 0.5 * np.ptp(a[:, 0]))
    a = a[a[:, 0] >= start]
    if len(a) < 3 or np.ptp(a[:, 0]) <= 0:
        return float("nan")
    return float(np.polyfit(a[:, 0] / 3600.0, a[:, 1], 1)[0])


def soak_run(args, clf: Classifier, wav: Path, loops: int, d: Path, mqtt_port: int | None, mqtt_state: str) -> dict:
    counter = SceneCounter(mqtt_port, "edge-asc/soak/scene") if mqtt_port is not None else None
    t0 = time.monotonic()
    p, lines, url = start_listen(listen_cmd(args.model, wav, loops, args.speed, d, mqtt_port))
    samples: list[tuple[float, float]] = []
    polls = failed_polls = 0
    while p.poll() is None:
        state = get_json(url + "api/state")
        rss = rss_mb(p.pid)
        polls += 1
        if state is None:
            failed_polls += 1
        elif rss is not None:
            samples.append((float(state["stream_s"]), rss))
        if polls % 20 == 0:
            get_json(url + f"api/history?since={time.time() - 3 * 3600:.0f}")
        time.sleep(SAMPLE_EVERY_S)
    wall = time.monotonic() - t0
    time.sleep(1.0)
    if counter is not None:
        counter.close()
    recs = [json.loads(x) for x in (d / "soak.jsonl").read_text().splitlines()]
    stop = next((r for r in reversed(recs) if r["type"] == "stop"), None)
    if p.returncode != 0 or stop is None:
        raise SystemExit(f"listen failed (exit {p.returncode}): {''.join(lines)[-2000:]}")
    db = sqlite3.connect(d / "soak.db")
    rows = db.execute("SELECT count(*) FROM detections").fetchone()[0]
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    spec = clf.card.frontend
    n_samples = loops * int(CLIP_SECONDS * spec.sample_rate)
    frames = spec.n_frames(n_samples)
    hop = hop_frames_for(clf.card, HOP_S)
    W = clf.card.window_frames
    expected = (frames - W) // hop + 1 if frames >= W else 0
    changes = sum(1 for r in recs if r["type"] == "scene_change")
    slope = slope_mb_per_hour(samples)
    res = {
        "audio_hours": round(stop["stream_seconds"] / 3600, 3), "wall_seconds": round(wall, 1),
        "speed_achieved": round(stop["stream_seconds"] / max(wall, 1e-9), 1),
        "windows_expected": expected, "windows_reported": stop["windows"], "db_rows": rows,
        "scene_changes": changes, "input_overflows": stop["input_overflows"], "ring_overruns": stop["ring_overruns"],
        "cpu_seconds": stop["cpu_seconds"], "cpu_per_audio_s": round(stop["cpu_seconds"] / stop["stream_seconds"], 5),
        "rss_samples": len(samples), "rss_mb_first": round(samples[0][1], 1) if samples else None,
        "rss_mb_last": round(samples[-1][1], 1) if samples else None,
        "rss_mb_max": round(max(s[1] for s in samples), 1) if samples else None,
        "rss_slope_mb_per_audio_hour": round(slope, 4),
        "rss_series": [[round(t / 3600, 3), round(m, 1)] for t, m in samples[:: max(1, len(samples) // 24)]],
        "http_polls": polls, "http_failed_polls": failed_polls,
        "db_integrity": integrity, "mqtt": mqtt_state,
    }
    if counter is not None:
        res["mqtt_scene_messages"] = counter.count
    return res


def kill_run(args, wav: Path, loops: int, d: Path, mqtt_port: int | None) -> dict:
    delay = float(np.random.default_rng(args.seed).uniform(2.0, 8.0))
    p, _, _ = start_listen(listen_cmd(args.model, wav, loops, args.speed, d, mqtt_port))
    time.sleep(delay)
    alive = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=20)
    db = sqlite3.connect(d / "soak.db")
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    rows = db.execute("SELECT count(*) FROM detections").fetchone()[0]
    db.close()
    bad = 0
    text = (d / "soak.jsonl").read_text()
    n_lines = 0
    for line in text.splitlines():
        n_lines += 1
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    return {"killed_after_s": round(delay, 2), "was_running": alive, "returncode": p.returncode,
            "db_integrity": integrity, "db_rows": rows, "jsonl_lines": n_lines, "jsonl_bad_lines": bad,
            "jsonl_ends_with_newline": text.endswith("\n")}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"int8 .tflite with a model card (default {DEFAULT_MODEL})")
    p.add_argument("--hours", type=float, default=8.0, help="hours of audio in the run (default 8)")
    p.add_argument("--speed", type=float, default=100.0, help="times faster than real time (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip and of the kill moment (default 0)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = p.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"no model at {args.model}: export one with 'edge-asc export CHECKPOINT --int8 --out M' "
                         f"and pass --model M")
    if not args.hours > 0 or not 0 < args.speed <= 1000:
        raise SystemExit("--hours must be > 0 and --speed in (0, 1000]")
    clf = Classifier(args.model)
    sr = clf.card.frontend.sample_rate
    loops = max(1, round(args.hours * 3600 / CLIP_SECONDS))
    with tempfile.TemporaryDirectory(prefix="edge-asc-soak-") as tmp:
        tmpd = Path(tmp)
        wav = tmpd / "clip.wav"
        write_audio(wav, scene_clip(CLIP_SECONDS, sr, args.seed), sr)
        broker, port, mqtt_state = start_mosquitto(tmpd)
        try:
            (tmpd / "run").mkdir()
            run = soak_run(args, clf, wav, loops, tmpd / "run", port, mqtt_state)
            (tmpd / "kill").mkdir()
            kill = kill_run(args, wav, loops, tmpd / "kill", port)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=10)
    goals = {
        "rss_slope": run["rss_slope_mb_per_audio_hour"] < MAX_RSS_SLOPE_MB_PER_AUDIO_HOUR,
        "no_window_lost": run["db_rows"] == run["windows_expected"] == run["windows_reported"],
        "no_overflow": run["input_overflows"] == 0 and run["ring_overruns"] == 0,
        "mqtt_all_scene_changes": run.get("mqtt_scene_messages", run["scene_changes"]) == run["scene_changes"],
        "kill9_sqlite_ok": kill["db_integrity"] == "ok" and kill["db_rows"] > 0,
        "kill9_jsonl_parses": kill["jsonl_bad_lines"] == 0 and kill["jsonl_lines"] > 0,
    }
    res = {"model": args.model, "model_sha256": clf.model_sha256, "hours": args.hours, "speed": args.speed,
           "hop_s": HOP_S, "clip_seconds": CLIP_SECONDS, "loops": loops, "seed": args.seed,
           "budgets": {"rss_slope_mb_per_audio_hour_max": MAX_RSS_SLOPE_MB_PER_AUDIO_HOUR},
           "run": run, "kill9": kill, "goals": goals, "all_goals_met": all(goals.values())}
    write_json(args.json, res)
    print(f"soak: {run['audio_hours']:.2f} h of audio in {run['wall_seconds']:.0f} s ({run['speed_achieved']:g}x), "
          f"{run['db_rows']} rows / {run['windows_expected']} expected, RSS {run['rss_mb_first']} -> "
          f"{run['rss_mb_last']} MB (slope {run['rss_slope_mb_per_audio_hour']:+.3f} MB per audio hour), CPU "
          f"{run['cpu_per_audio_s']:.4f} s per audio s, MQTT {run['mqtt']}; kill -9 after {kill['killed_after_s']} s: "
          f"SQLite {kill['db_integrity']}, {kill['jsonl_bad_lines']} bad JSONL lines; {goals_text(goals)}")
    return 1 if args.strict and not all(goals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
