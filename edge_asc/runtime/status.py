"""What ``edge-asc listen`` is doing right now, as one thread-safe snapshot for the MQTT state and the status page.

:class:`LiveStatus` is a sink: the listen loop feeds it like any other sink (windows, scene changes, runtime events,
ticks), and other threads (the MQTT publisher, the HTTP server) read :meth:`LiveStatus.snapshot`. It holds a few
scalars and the last top-3, never a history (the SQLite log is the history), so its memory does not grow.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .pipeline import WindowResult
from .sinks import Sink, rss_mb
from .tracker import SceneChange

#: device states in the snapshot's ``device`` field.
DEVICE_STATES = ("starting", "waiting", "ok", "lost", "stopped")


class LiveStatus(Sink):
    """Thread-safe current state of a listen run.

    Args:
        labels: the model's class names.
        counters: called (from any thread) for live counters that only the source and ring know, e.g.
            ``{"input_overflows": int, "ring_overruns": int, "dropped_samples": int}``; merged into the snapshot.
        model: a small JSON-able description of the model (the status page shows it as the model card).
        source: where the audio comes from, e.g. ``"microphone USB PnP"``.
    """

    def __init__(self, labels: Sequence[str], *, counters: Callable[[], dict[str, Any]] | None = None,
                 model: dict[str, Any] | None = None, source: str = "") -> None:
        self.labels = tuple(labels)
        self.model = dict(model or {})
        self._counters = counters or dict
        self._lock = threading.Lock()
        self._t0_wall, self._t0 = time.time(), time.monotonic()
        self._cpu_t, self._cpu_c = time.monotonic(), time.process_time()
        self._s: dict[str, Any] = {
            "label": "", "confidence": 0.0, "top3": [], "windows": 0, "scene_changes": 0, "stream_s": 0.0,
            "latency_ms": 0.0, "last_window_time": None, "last_change": None, "device": "starting",
            "device_losses": 0, "source": source, "cpu_percent": 0.0, "message": "",
        }

    # ---- sink side (the listen loop's thread) --------------------------------------------------------------
    def window(self, result: WindowResult) -> None:
        with self._lock:
            s = self._s
            s["label"], s["confidence"] = result.label, round(float(result.confidence), 5)
            s["top3"] = [[lbl, round(float(p), 5)] for lbl, p in result.top3]
            s["windows"] += 1
            s["stream_s"] = round(float(result.start_s), 3)
            s["latency_ms"] = round(float(result.latency_s) * 1e3, 3)
            s["last_window_time"] = round(float(result.wall_time), 3)

    def change(self, change: SceneChange) -> None:
        with self._lock:
            self._s["scene_changes"] += 1
            self._s["last_change"] = change.to_dict()

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        with self._lock:
            s = self._s
            if kind == "start":
                s["device"] = "ok"
                if fields.get("source"):
                    s["source"] = f"{fields['source']} {fields.get('name', '')}".strip()
            elif kind == "device_lost":
                s["device"] = "lost"
                s["device_losses"] += 1
            elif kind == "device_resumed":
                s["device"] = "ok"
            elif kind == "waiting":
                s["device"] = "waiting"
            elif kind == "stop":
                s["device"] = "stopped"
            if message:
                s["message"] = message

    def tick(self) -> None:
        """Refresh the CPU % (this process, over the last >= 1 s of wall time)."""
        t, c = time.monotonic(), time.process_time()
        if t - self._cpu_t >= 1.0:
            with self._lock:
                self._s["cpu_percent"] = round(100.0 * (c - self._cpu_c) / (t - self._cpu_t), 1)
            self._cpu_t, self._cpu_c = t, c

    # ---- reader side (any thread) ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A new dict: scene (``label``, ``confidence`` 0..1, ``top3`` [[label, p], ...]), counters (``windows``,
        ``scene_changes``, ``overflows`` = input overflows + ring overruns, ``device_losses``), ``device`` (one of
        :data:`DEVICE_STATES`), ``cpu_percent``, ``rss_mb``, ``uptime_s``, ``time`` (unix s) and the counters
        callable's fields."""
        with self._lock:
            out = dict(self._s)
            out["top3"] = [list(x) for x in self._s["top3"]]
        try:
            extra = dict(self._counters())
        except Exception as exc:  # noqa: BLE001 - any counters failure must not take the readers down; it is shown
            extra = {"counters_error": f"{type(exc).__name__}: {exc}"}
        out.update(extra)
        out["overflows"] = int(extra.get("input_overflows", 0)) + int(extra.get("ring_overruns", 0))
        out["rss_mb"] = round(rss_mb(), 1)
        out["uptime_s"] = round(time.monotonic() - self._t0, 1)
        out["started_at"] = round(self._t0_wall, 3)
        out["time"] = round(time.time(), 3)
        return out


def model_summary(classifier, path: str | os.PathLike) -> dict[str, Any]:
    """The model card fields a person wants on a status page: file, id, labels, window, front end, size, provenance.

    ``classifier`` is a :class:`~edge_asc.runtime.Classifier`; values are JSON-able.
    """
    card = classifier.card
    f = card.frontend
    prov = dict(card.provenance or {})
    return {
        "file": os.path.basename(str(path)),
        "sha256": classifier.model_sha256,
        "labels": list(card.labels),
        "window_seconds": round(card.window_seconds, 4),
        "sample_rate": f.sample_rate,
        "n_mels": f.n_mels,
        "preset": card.model_preset,
        "param_count": card.param_count,
        "macs_per_inference": card.macs_per_inference,
        "training_run": card.training_run,
        "exported_at": prov.get("exported_at", ""),
        "mode": prov.get("mode", ""),
    }
