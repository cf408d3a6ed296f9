"""The one streaming path shared by files and microphones.

ring buffer (native rate) -> streaming resampler -> StreamingFrontend -> window assembler -> Classifier ->
SceneTracker. ``classify_audio`` drives it from an array; ``edge-asc listen`` drives it from a microphone callback
or a paced file; both call :meth:`StreamPipeline.process`. Windows start where :mod:`edge_asc.frontend.windows`
says (every hop, no end-aligned window, a stream shorter than a window tiled to one at its end).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio import AudioWarning, StreamResampler
from ..errors import AudioInputError, ConfigError
from ..frontend import RingBuffer, StreamingFrontend, WindowAssembler, hop_frames
from .tracker import SceneChange, SceneTracker, top_k


def hop_frames_for(card, hop_seconds: float | None) -> int:
    """Window hop in front-end frames for a model card: :func:`edge_asc.frontend.hop_frames` with the card's front
    end and window (default half a window; seconds rounded to whole frames, at least 1).

    Raises:
        ConfigError: ``hop_seconds`` <= 0 or not finite.
    """
    return hop_frames(card.frontend, card.window_frames, hop_seconds)


@dataclass(frozen=True, kw_only=True)
class WindowResult:
    """One classified window.

    ``start_s``: stream seconds where the window's audio starts; ``probs``: float32[K] raw posteriors;
    ``smoothed``: float32[K] tracker posteriors; ``label``/``confidence``: the tracker's current scene and its smoothed
    posterior; ``latency_s``: inference wall time; ``change``: the scene change this window caused, if any.
    """

    start_s: float
    probs: np.ndarray
    smoothed: np.ndarray
    label: str
    confidence: float
    top3: tuple[tuple[str, float], ...]
    latency_s: float
    change: SceneChange | None = None
    wall_time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "window", "start_s": round(self.start_s, 4), "label": self.label,
                "confidence": round(self.confidence, 5), "top3": [[lbl, round(p, 5)] for lbl, p in self.top3],
                "latency_ms": round(self.latency_s * 1e3, 3), "wall_time": round(self.wall_time, 3)}


class StreamPipeline:
    """ring (input rate) -> resampler -> StreamingFrontend -> WindowAssembler -> Classifier -> SceneTracker.

    The producer (an audio callback, a file reader) only calls ``ring.write(block)``; the consumer calls
    :meth:`process`, which drains the ring in ``block``-sample pieces and returns the windows it classified.

    Args:
        classifier: a :class:`~edge_asc.runtime.Classifier` (anything with ``card``, ``labels``, ``probabilities``
            and ``last_latency_s``).
        input_rate: Hz of the audio written into the ring (default: the model's rate; otherwise resampled with soxr).
        hop_seconds: seconds between window starts (default: half a window; :func:`hop_frames_for`).
        smooth, margin, patience: :class:`SceneTracker` settings.
        ring_seconds: ring capacity in seconds of input audio; when the consumer falls further behind, the oldest
            audio is overwritten and counted (``ring.overrun_samples``).
        block: samples read from the ring per front-end push.
    """

    def __init__(self, classifier, *, input_rate: int | None = None, hop_seconds: float | None = None,
                 smooth: int = 5, margin: float = 0.1, patience: int = 2, ring_seconds: float = 4.0,
                 block: int = 1024) -> None:
        card = classifier.card
        self.classifier = classifier
        self.card = card
        self.spec = card.frontend
        self.input_rate = int(input_rate or self.spec.sample_rate)
        if self.input_rate < 1000:
            raise ConfigError(f"input rate must be >= 1000 Hz, got {self.input_rate}")
        if not isinstance(block, int) or block < 1:
            raise ConfigError(f"block must be a positive number of samples, got {block!r}")
        self.block = block
        self.hop_frames = hop_frames_for(card, hop_seconds)
        self.hop_seconds = self.hop_frames * self.spec.hop_length / self.spec.sample_rate
        cap = max(int(ring_seconds * self.input_rate), 4 * block)
        self.ring = RingBuffer(cap)
        self.resampler = StreamResampler(self.input_rate, self.spec.sample_rate)
        self.frontend = StreamingFrontend(self.spec)
        self.assembler = WindowAssembler(card.window_frames, self.hop_frames)
        self.tracker = SceneTracker(card.labels, smooth=smooth, margin=margin, patience=patience)
        self._offset_s = 0.0  # stream seconds before the current segment (after restarts and dropped audio)
        self._seen_overrun = 0
        self.windows = 0

    @property
    def stream_seconds(self) -> float:
        """Stream time reached by the front end, in seconds (including gaps and dropped audio)."""
        return self._offset_s + self.frontend.samples_pushed / self.spec.sample_rate

    def restart(self, gap_seconds: float = 0.0, *, input_rate: int | None = None) -> None:
        """Start a new segment after a discontinuity (device lost and re-opened, maybe at another ``input_rate``):
        clear ring, resampler, front end and assembler; stream time continues from where it was plus
        ``gap_seconds``. The tracker keeps its state (the scene rarely changes while a cable is replugged)."""
        self._offset_s = self.stream_seconds + max(0.0, gap_seconds)
        if input_rate:
            self.input_rate = int(input_rate)
        self.ring.clear()
        self._seen_overrun = self.ring.overrun_samples
        self.resampler = StreamResampler(self.input_rate, self.spec.sample_rate)
        self.frontend.reset()
        self.assembler.reset()

    def process(self, *, end: bool = False) -> list[WindowResult]:
        """Drain the ring through the chain and return the new windows. With ``end`` (no more audio will come),
        also flush the resampler's tail and the window assembler (a segment shorter than a window gives one tiled
        window)."""
        results: list[WindowResult] = []
        while True:
            dropped = self.ring.overrun_samples - self._seen_overrun
            if dropped:  # the ring kept the newest audio: account for the skipped time
                self._seen_overrun += dropped
                self._offset_s += dropped / self.input_rate
            x = self.ring.read(self.block)
            if x.size == 0:
                break
            self._push(self.resampler.process(x), results)
        if end:
            self._push(self.resampler.flush(), results)
            self._classify(self.assembler.flush(), results)
        return results

    def _push(self, y: np.ndarray, results: list[WindowResult]) -> None:
        if y.size:
            self._classify(self.assembler.push(self.frontend.push(y)), results)

    def _classify(self, wins: list[tuple[int, np.ndarray]], results: list[WindowResult]) -> None:
        seg_offset = self._offset_s
        spec = self.spec
        for start_frame, window in wins:
            probs = self.classifier.probabilities(window)
            start_s = seg_offset + start_frame * spec.hop_length / spec.sample_rate
            change = self.tracker.update(probs, start_s)
            tr = self.tracker
            results.append(WindowResult(
                start_s=start_s, probs=probs, smoothed=tr.smoothed.copy(), label=tr.label, confidence=tr.confidence,
                top3=top_k(tr.labels, tr.smoothed), latency_s=float(self.classifier.last_latency_s), change=change))
            self.windows += 1


@dataclass(frozen=True, kw_only=True)
class ClipResult:
    """Classification of one clip.

    ``window_starts_s``: float64[N] start of each window in seconds; ``window_probs``: float32[N, K] per-window
    posteriors; ``clip_probs``: float32[K] mean of ``window_probs``; ``label``: ``labels[argmax(clip_probs)]``;
    ``scene_changes``: what the scene tracker reported along the clip; ``latencies_s``: float64[N] inference times.
    """

    window_starts_s: np.ndarray
    window_probs: np.ndarray
    clip_probs: np.ndarray
    label: str
    scene_changes: tuple[SceneChange, ...] = ()
    latencies_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        n = self.window_probs.shape[0]
        if self.window_probs.ndim != 2 or self.window_starts_s.shape != (n,):
            raise ConfigError(f"window_probs {self.window_probs.shape} and window_starts_s "
                              f"{self.window_starts_s.shape} disagree")
        if self.clip_probs.shape != (self.window_probs.shape[1],):
            raise ConfigError(f"clip_probs shape {self.clip_probs.shape} does not match {self.window_probs.shape}")


def classify_audio(classifier, audio: np.ndarray, *, hop_seconds: float | None = None, block: int = 1024,
                   smooth: int = 5, margin: float = 0.1, patience: int = 2) -> ClipResult:
    """Classify a clip through the streaming path (the same one ``edge-asc listen`` runs).

    Args:
        classifier: a :class:`~edge_asc.runtime.Classifier`.
        audio: float32[n] mono samples at ``classifier.card.frontend.sample_rate``, in [-1, 1].
        hop_seconds: seconds between window starts (default half a window; rounded to whole frames).
        block: samples written to the ring buffer (and pushed into the front end) per step.
        smooth, margin, patience: scene tracker settings (they affect only ``scene_changes``).

    Returns:
        :class:`ClipResult` with the windows of :func:`edge_asc.frontend.windows` on the clip's offline features:
        window ``k`` covers frames ``[k*hop, k*hop + window_frames)``, no end-aligned extra window. A clip shorter
        than one window gives one window, its frames repeated cyclically (with an
        :class:`~edge_asc.audio.AudioWarning`).

    Raises:
        AudioInputError: empty, non-1-D, non-float or non-finite audio, or a clip too short for one feature frame.
        ConfigError: bad hop or block.
    """
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1 or a.dtype.kind != "f":
        raise AudioInputError(f"audio must be float mono samples of shape (n,), got {a.dtype} {a.shape}")
    if a.size == 0:
        raise AudioInputError("audio is empty (0 samples): give at least one sample")
    if not np.all(np.isfinite(a)):
        raise AudioInputError("audio contains NaN or infinite samples: clean or re-record the input")
    card = classifier.card
    first = card.frontend.samples_for_frames(1)
    if a.size < first:
        raise AudioInputError(f"clip of {a.size} samples is too short for one feature frame ({first} samples at "
                              f"{card.frontend.sample_rate} Hz): use a longer clip")
    need = card.frontend.samples_for_frames(card.window_frames)
    if a.size < need:
        warnings.warn(f"clip of {a.size} samples is shorter than one model window ({need} samples, "
                      f"{card.window_seconds:.3f} s): its frames are repeated (tiled) to fill one window",
                      AudioWarning, stacklevel=2)
    pipe = StreamPipeline(classifier, hop_seconds=hop_seconds, smooth=smooth, margin=margin, patience=patience,
                          block=block, ring_seconds=0.0)
    results: list[WindowResult] = []
    for i in range(0, a.size, block):
        pipe.ring.write(a[i : i + block])
        results.extend(pipe.process())
    results.extend(pipe.process(end=True))
    k = len(card.labels)
    probs = np.stack([r.probs for r in results]).astype(np.float32) if results else np.zeros((0, k), np.float32)
    clip = probs.mean(axis=0).astype(np.float32)
    return ClipResult(
        window_starts_s=np.array([r.start_s for r in results], dtype=np.float64),
        window_probs=probs, clip_probs=clip, label=card.labels[int(np.argmax(clip))],
        scene_changes=tuple(r.change for r in results if r.change is not None),
        latencies_s=np.array([r.latency_s for r in results], dtype=np.float64),
    )
