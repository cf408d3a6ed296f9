"""Scene tracking over sliding windows: moving-average posterior smoothing plus hysteresis."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SceneChange:
    """The reported scene changed.

    ``start_s`` is stream time in seconds (0 = first sample of the stream or file) of the first window whose smoothed
    posterior favoured the new scene; ``confidence`` is the new scene's smoothed posterior (0..1); ``top3`` holds the
    three best ``(label, smoothed posterior)`` pairs, best first; ``previous`` is the scene before ('' at the start).
    """

    start_s: float
    label: str
    confidence: float
    top3: tuple[tuple[str, float], ...]
    previous: str = ""
    wall_time: float = field(default_factory=time.time)
    """Unix time in seconds when the change was decided."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.confidence <= 1.0 + 1e-6):
            raise ConfigError(f"confidence must be in [0, 1], got {self.confidence}")
        object.__setattr__(self, "top3", tuple((str(lbl), float(p)) for lbl, p in self.top3))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "scene_change",
            "start_s": round(self.start_s, 4),
            "label": self.label,
            "confidence": round(self.confidence, 5),
            "top3": [[lbl, round(p, 5)] for lbl, p in self.top3],
            "previous": self.previous,
            "wall_time": round(self.wall_time, 3),
        }


def top_k(labels: Sequence[str], probs: np.ndarray, k: int = 3) -> tuple[tuple[str, float], ...]:
    """The ``k`` best ``(label, probability)`` pairs, best first (ties: lower index first)."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")[:k]
    return tuple((labels[i], float(probs[i])) for i in order)


class SceneTracker:
    """Smooth window posteriors and decide the current scene without flicker.

    Smoothing: the mean of the last ``smooth`` windows' posteriors (fewer at the start of a stream).
    Hysteresis: the reported scene switches from A to B only when B is the smoothed arg-max AND exceeds A's smoothed
    posterior by at least ``margin``, for ``patience`` consecutive windows. The first window sets the first scene.

    Args:
        labels: class names, one per posterior entry.
        smooth: windows in the moving average (>= 1).
        margin: required lead of the challenger over the current scene, in posterior units [0, 1).
        patience: consecutive windows the lead must hold (>= 1).

    Raises:
        ConfigError: out-of-range settings.
    """

    def __init__(self, labels: Sequence[str], *, smooth: int = 5, margin: float = 0.1, patience: int = 2) -> None:
        if not isinstance(smooth, int) or smooth < 1:
            raise ConfigError(f"smooth must be an integer >= 1 window, got {smooth!r}")
        if not (0.0 <= margin < 1.0):
            raise ConfigError(f"margin must be in [0, 1), got {margin!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"patience must be an integer >= 1 window, got {patience!r}")
        self.labels = tuple(labels)
        self.smooth, self.margin, self.patience = smooth, float(margin), patience
        self._hist = np.zeros((smooth, len(self.labels)), dtype=np.float64)
        self._n = 0
        self.current: int | None = None
        self._cand: int | None = None
        self._cand_count = 0
        self._cand_start = 0.0
        self.smoothed = np.zeros(len(self.labels), dtype=np.float32)
        self.changes = 0

    @property
    def label(self) -> str:
        """Current scene label ('' before the first window)."""
        return "" if self.current is None else self.labels[self.current]

    @property
    def confidence(self) -> float:
        """Smoothed posterior of the current scene (0 before the first window)."""
        return 0.0 if self.current is None else float(self.smoothed[self.current])

    def reset(self) -> None:
        """Forget the smoothing history and the current scene."""
        self._n = 0
        self.current = None
        self._cand, self._cand_count = None, 0
        self.smoothed[:] = 0.0

    def update(self, probs: np.ndarray, start_s: float) -> SceneChange | None:
        """Add one window's posteriors (float[K], summing to 1) starting at ``start_s`` seconds of stream time.

        Returns:
            A :class:`SceneChange` when the reported scene changes (including the first window), else None.
        """
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.shape[0] != len(self.labels):
            raise ConfigError(f"posterior has {p.shape[0]} entries, the tracker has {len(self.labels)} labels")
        self._hist[self._n % self.smooth] = p
        self._n += 1
        filled = min(self._n, self.smooth)
        sm = self._hist[:filled].mean(axis=0) if filled < self.smooth else self._hist.mean(axis=0)
        self.smoothed[:] = sm
        best = int(np.argmax(sm))
        if self.current is None:
            return self._switch(best, start_s)
        if best != self.current and sm[best] >= sm[self.current] + self.margin:
            if best != self._cand:
                self._cand, self._cand_count, self._cand_start = best, 0, start_s
            self._cand_count += 1
            if self._cand_count >= self.patience:
                return self._switch(best, self._cand_start)
        else:
            self._cand, self._cand_count = None, 0
        return None

    def _switch(self, idx: int, start_s: float) -> SceneChange:
        prev = self.label
        self.current = idx
        self._cand, self._cand_count = None, 0
        self.changes += 1
        return SceneChange(start_s=float(start_s), label=self.labels[idx], confidence=float(self.smoothed[idx]),
                           top3=top_k(self.labels, self.smoothed), previous=prev)
