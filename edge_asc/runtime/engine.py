"""The listen loop: a source fills the pipeline's ring; the loop classifies, tracks, and feeds the sinks.

Survives overflow bursts (counted, warned about at most every ``warn_every_s``, newest audio kept), a device that
disappears (one line through the sinks' ``event``, retry with exponential back-off, resume with a fresh front end),
and stops cleanly when ``stop`` is set (the CLI sets it from SIGINT/SIGTERM), when ``duration_s`` of stream time has
passed, or when a file source is exhausted. Sinks are always closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DeviceError
from .pipeline import StreamPipeline
from .sinks import Sink
from .sources import DeviceLost


@dataclass(frozen=True, kw_only=True)
class ListenSummary:
    """What a listen run did. Times in seconds."""

    stream_seconds: float
    wall_seconds: float
    cpu_seconds: float
    windows: int
    scene_changes: int
    final_label: str
    input_overflows: int
    """callbacks PortAudio flagged with input_overflow."""
    ring_overruns: int
    """times the ring buffer overwrote unread audio (the consumer fell behind)."""
    dropped_samples: int
    device_losses: int
    stopped_by: str
    """'signal', 'duration', 'end_of_input' or 'error'."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_listen(pipeline: StreamPipeline, source, sinks: Sequence[Sink], *, stop: threading.Event | None = None,
               duration_s: float | None = None, poll_s: float = 0.1, backoff_s: tuple[float, float] = (0.5, 10.0),
               warn_every_s: float = 5.0) -> ListenSummary:
    """Run until stopped; return a :class:`ListenSummary`. ``source`` is a started-or-not MicSource/FileSource.

    Raises:
        DeviceError: the device cannot be opened at the start (later losses are retried, not raised).
    """
    stop = stop or threading.Event()
    t0, c0 = time.monotonic(), time.process_time()
    losses = 0
    windows = changes = 0
    last_label = ""
    warned_at, warned_total = -1e9, 0
    stopped_by = "signal"

    def emit(kind: str, message: str = "", **fields: Any) -> None:
        for s in sinks:
            s.event(kind, message, **fields)

    def tick() -> None:
        for s in sinks:
            s.tick()

    def dispatch(results) -> None:
        nonlocal windows, changes, last_label
        for r in results:
            windows += 1
            for s in sinks:
                s.window(r)
            if r.change is not None:
                changes += 1
                last_label = r.change.label
                for s in sinks:
                    s.change(r.change)

    source.start(pipeline.ring)
    emit("start", f"listening to {source.kind} '{source.name}' at {source.sample_rate} Hz",
         source=source.kind, name=source.name, sample_rate=source.sample_rate,
         model_rate=pipeline.spec.sample_rate, hop_s=pipeline.hop_seconds)
    try:
        while not stop.is_set():
            source.wait(poll_s, stop)
            tick()
            try:
                source.check()
            except DeviceLost as exc:
                losses += 1
                dispatch(pipeline.process())  # what arrived before the loss still counts
                gap = _recover(source, stop, exc, backoff_s, emit, tick, poll_s)
                if gap is None:
                    break
                pipeline.restart(gap, input_rate=source.sample_rate)
                continue
            done = source.exhausted and len(pipeline.ring) == 0
            dispatch(pipeline.process(end=done))
            total = source.overflows + pipeline.ring.overrun_events
            now = time.monotonic()
            if total > warned_total and now - warned_at >= warn_every_s:
                msg = (f"edge-asc: warning: input overflow ({source.overflows} device overflows, "
                       f"{pipeline.ring.overrun_events} ring overruns, {pipeline.ring.overrun_samples} samples "
                       f"dropped so far): keeping the newest audio")
                emit("overflow", msg, input_overflows=source.overflows, ring_overruns=pipeline.ring.overrun_events,
                     dropped_samples=pipeline.ring.overrun_samples)
                warned_at, warned_total = now, total
            if duration_s is not None and pipeline.stream_seconds >= duration_s:
                stopped_by = "duration"
                break
            if done:
                stopped_by = "end_of_input"
                break
    finally:
        source.close()
        summary = ListenSummary(
            stream_seconds=round(pipeline.stream_seconds, 3), wall_seconds=round(time.monotonic() - t0, 3),
            cpu_seconds=round(time.process_time() - c0, 3), windows=windows, scene_changes=changes,
            final_label=last_label or pipeline.tracker.label, input_overflows=source.overflows,
            ring_overruns=pipeline.ring.overrun_events, dropped_samples=pipeline.ring.overrun_samples,
            device_losses=losses, stopped_by=stopped_by)
        try:
            emit("stop", "", **summary.to_dict())
        finally:
            for s in sinks:
                s.close()
    return summary


def _recover(source, stop: threading.Event, exc: DeviceLost, backoff_s: tuple[float, float],
             emit, tick, tick_s: float = 0.1) -> float | None:
    """Re-open a lost device with exponential back-off, ticking the sinks at least every ``tick_s`` seconds while
    waiting (so a watchdog keeps seeing a live process). Returns the outage in seconds, or None if stopped."""
    t_lost = time.monotonic()
    first, cap = backoff_s
    msg = f"edge-asc: {exc}; retrying every {first:g}-{cap:g} s (Ctrl-C to stop)"
    emit("device_lost", msg, reason=str(exc))
    source.close()
    delay = first
    attempts = 0
    while not stop.is_set():
        until = time.monotonic() + delay
        while not stop.is_set() and (left := until - time.monotonic()) > 0:
            stop.wait(min(left, tick_s))
            tick()
        if stop.is_set():
            break
        attempts += 1
        try:
            source.reopen()
        except DeviceError:
            delay = min(delay * 2, cap)
            continue
        gap = time.monotonic() - t_lost
        msg = f"edge-asc: input device '{source.name}' is back after {gap:.1f} s ({attempts} attempts): resuming"
        emit("device_resumed", msg, outage_s=round(gap, 3), attempts=attempts)
        return gap
    return None
