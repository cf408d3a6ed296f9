"""Where detections go: a live terminal view, JSON lines, and an SQLite database (WAL).

Every sink has ``window(result)``, ``change(scene_change)``, ``event(kind, message, **fields)``, ``tick()`` (called
by the listen loop on every pass, also while a lost device is retried: heartbeats, refreshed counters) and ``close()``.
JSONL lines and SQLite rows are written (and flushed / committed) as they happen, so an abrupt stop (kill -9, power
loss aside) loses at most the record being written and never corrupts what is there.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .._io import append_jsonl, stderr_line
from ..errors import ConfigError
from .pipeline import WindowResult
from .tracker import SceneChange


class Sink:
    """Base sink: ignores everything."""

    def window(self, result: WindowResult) -> None:
        pass

    def change(self, change: SceneChange) -> None:
        pass

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    """Appends one JSON object per scene change and per runtime event (start, overflow, device lost/resumed, stop),
    flushed and fsynced per line. With ``windows=True`` every classified window is logged too.

    Records: ``{"type": "scene_change"|"window"|<event kind>, ..., "model_sha256": ...}``.
    """

    def __init__(self, path: str | os.PathLike, *, model_sha256: str = "", windows: bool = False) -> None:
        self.path = str(path)
        self.model_sha256 = model_sha256
        self.windows = windows
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise ConfigError(f"--jsonl {self.path}: folder {parent} does not exist: create it first")
        self.lines = 0

    def _write(self, rec: dict[str, Any]) -> None:
        rec["model_sha256"] = self.model_sha256
        append_jsonl(self.path, rec)
        self.lines += 1

    def window(self, result: WindowResult) -> None:
        if self.windows:
            self._write(result.to_dict())

    def change(self, change: SceneChange) -> None:
        self._write(change.to_dict())

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        self._write({"type": kind, "message": message, "wall_time": round(time.time(), 3), **fields})


SCHEMA = """
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp REAL NOT NULL,        -- unix time, seconds, when the window was classified
    stream_time_s REAL NOT NULL,    -- seconds from the start of the stream to the window's start
    label TEXT NOT NULL,            -- current (smoothed, hysteresis) scene
    confidence REAL NOT NULL,       -- its smoothed posterior, 0..1
    top3 TEXT NOT NULL,             -- JSON [[label, posterior], ...] best first
    latency_ms REAL NOT NULL,       -- inference wall time
    model_sha256 TEXT NOT NULL,
    scene_change INTEGER NOT NULL DEFAULT 0  -- 1 when this window changed the scene
);
CREATE INDEX IF NOT EXISTS detections_time ON detections(timestamp);
"""


class SqliteSink(Sink):
    """One row per classified window in the ``detections`` table; WAL journal, committed per row.

    WAL with ``synchronous=NORMAL`` keeps the database consistent after the writer is killed (kill -9): committed
    rows survive, an interrupted transaction is rolled back on the next open.

    Raises:
        ConfigError: the database cannot be opened or is not a database.
    """

    def __init__(self, path: str | os.PathLike, *, model_sha256: str = "") -> None:
        self.path = str(path)
        self.model_sha256 = model_sha256
        try:
            self.db = sqlite3.connect(self.path, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.commit()
        except sqlite3.Error as exc:
            raise ConfigError(f"--db {self.path}: cannot open the SQLite database ({exc}): pick another path") from None
        self.rows = 0

    def window(self, result: WindowResult) -> None:
        self.db.execute(
            "INSERT INTO detections (timestamp, stream_time_s, label, confidence, top3, latency_ms, model_sha256,"
            " scene_change) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (result.wall_time, result.start_s, result.label, result.confidence,
             json.dumps([[lbl, round(p, 5)] for lbl, p in result.top3]), result.latency_s * 1e3,
             self.model_sha256, int(result.change is not None)))
        self.db.commit()
        self.rows += 1

    def close(self) -> None:
        try:
            self.db.commit()
            self.db.close()
        except sqlite3.Error:
            pass


def rss_mb() -> float:
    """Resident set size of this process in MB (``/proc/self/statm``; peak RSS from ``resource`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Stats:
    """CPU % of this process over the last interval, current RSS, from the standard library."""

    def __init__(self) -> None:
        self._t, self._c = time.monotonic(), time.process_time()
        self.cpu_percent = 0.0

    def update(self) -> None:
        t, c = time.monotonic(), time.process_time()
        if t - self._t >= 1.0:
            self.cpu_percent = 100.0 * (c - self._c) / (t - self._t)
            self._t, self._c = t, c

    @staticmethod
    def rss_mb() -> float:
        return rss_mb()


class TerminalView(Sink):
    """Live view of the current scene, confidence bars of every class, latency, CPU % and overflow count.

    Uses ``rich`` when it is installed and ``stream`` is a terminal; otherwise prints one plain line per scene change
    and per event (suitable for logs and pipes). ``status`` is a callable returning ``{'overflows': int, ...}``.
    """

    def __init__(self, labels: Sequence[str], *, stream: TextIO | None = None, source: str = "",
                 status=None, rich: bool | None = None, quiet_windows: bool = True) -> None:
        self.labels = tuple(labels)
        self.stream = stream or sys.stdout
        self.source = source
        self.status = status or dict
        self.stats = _Stats()
        self._last: WindowResult | None = None
        self._live = None
        use_rich = (rich if rich is not None else self.stream.isatty())
        if use_rich:
            try:
                from rich.console import Console
                from rich.live import Live

                self._console = Console(file=self.stream)
                self._live = Live(self._render(), console=self._console, refresh_per_second=4, transient=False)
                self._live.start()
            except ImportError:
                self._live = None

    def _render(self):
        from rich.table import Table

        r = self._last
        st = self.status()
        t = Table(title=f"edge-asc listen — {self.source}", show_header=True, expand=False)
        t.add_column("scene")
        t.add_column("posterior", justify="right")
        t.add_column("", min_width=30)
        probs = r.smoothed if r is not None else [0.0] * len(self.labels)
        for lbl, p in zip(self.labels, probs):
            mark = "[bold green]" if r is not None and lbl == r.label else ""
            end = "[/]" if mark else ""
            t.add_row(f"{mark}{lbl}{end}", f"{float(p):.2f}", "█" * round(float(p) * 30))
        lat = f"{r.latency_s * 1e3:.2f} ms" if r is not None else "-"
        t.caption = (f"scene: {r.label if r else '-'} ({r.confidence:.2f})  t={r.start_s:.1f} s  latency {lat}  "
                     f"CPU {self.stats.cpu_percent:.0f}%  RSS {self.stats.rss_mb():.0f} MB  "
                     f"overflows {st.get('overflows', 0)}" if r is not None else "waiting for the first window…")
        return t

    def window(self, result: WindowResult) -> None:
        self._last = result
        self.stats.update()
        if self._live is not None:
            self._live.update(self._render())

    def change(self, change: SceneChange) -> None:
        if self._live is not None:
            return
        top = ", ".join(f"{lbl} {p:.2f}" for lbl, p in change.top3)
        lat = f"{self._last.latency_s * 1e3:.2f} ms" if self._last is not None else "-"
        st = self.status()
        print(f"{change.start_s:9.2f} s  {change.label:<20s} {change.confidence:.2f}  [{top}]  latency {lat}  "
              f"CPU {self.stats.cpu_percent:.0f}%  overflows {st.get('overflows', 0)}", file=self.stream, flush=True)

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        if message and kind not in ("start", "stop"):
            if self._live is not None:
                self._live.console.print(message)
            else:
                stderr_line(message)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
