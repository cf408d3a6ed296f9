"""Training augmentations of the paper's recipe, each switchable, on numpy batches with an explicit Generator.

Order applied by the training loop (each step optional): random time crop (per clip) -> random time/frequency shift
-> SpecAugment masks -> mixup. Batches are normalised features float32[B, C, n_mels, W]; masks write 0 (the
training-set mean after normalisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..frontend import tile_to_window, window_starts


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Switches and sizes of the augmentations. ``for_window`` scales the paper's sizes to a model input."""

    random_crop: bool = True
    """True: a random window of each clip per epoch (paper: 423 -> 400 frames); False: the centre window."""
    shift_time: int = 0
    """max |shift| in frames of a random time (width) shift per sample, edges filled by the nearest frame; 0 = off."""
    shift_freq: int = 0
    """max |shift| in mel bins of a random frequency (height) shift per sample, nearest fill; 0 = off."""
    specaugment: bool = True
    """apply SpecAugment masks."""
    time_masks: int = 1
    """number of time masks (paper: 1)."""
    time_mask_max: int = 80
    """max width of a time mask in frames (paper: 80 of 400)."""
    freq_masks: int = 2
    """number of frequency masks (paper: 2)."""
    freq_mask_max: int = 30
    """max height of a frequency mask in mel bins (paper: 30 of 256)."""
    mixup_alpha: float = 0.3
    """mixup Beta(alpha, alpha) parameter (paper: 0.3); 0 = off."""

    def __post_init__(self) -> None:
        for name in ("shift_time", "shift_freq", "time_masks", "time_mask_max", "freq_masks", "freq_mask_max"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"augment {name} must be a non-negative integer, got {v!r}")
        if not (self.mixup_alpha >= 0):
            raise ConfigError(f"mixup_alpha must be >= 0, got {self.mixup_alpha!r}")

    @classmethod
    def for_window(cls, n_mels: int, window_frames: int, **overrides: Any) -> AugmentConfig:
        """The paper's recipe scaled from its 256 x 400 input to ``n_mels`` x ``window_frames``: time mask <= 80/400
        of the window, frequency masks <= 30/256 of the bins, shifts up to 10 % of the window and 5 % of the bins."""
        kw: dict[str, Any] = {
            "time_mask_max": max(1, round(80 * window_frames / 400)),
            "freq_mask_max": max(1, round(30 * n_mels / 256)),
            "shift_time": max(1, round(0.1 * window_frames)),
            "shift_freq": max(1, round(0.05 * n_mels)),
        }
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def off(cls) -> AugmentConfig:
        """Every augmentation disabled (centre crop, no shift, no masks, no mixup)."""
        return cls(random_crop=False, shift_time=0, shift_freq=0, specaugment=False, mixup_alpha=0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        return cls(**dict(d))


def crop(features: np.ndarray, window_frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """One window float32[C, n_mels, window_frames] of a clip float[C, n_mels, T].

    The start is one of :func:`edge_asc.frontend.window_starts` at hop 1 (every frame): ``rng`` given, uniform over
    them (``[0, T - window_frames]``); None, the centre one (``(T - W) // 2``). A clip shorter than the window is
    repeated cyclically (:func:`edge_asc.frontend.tile_to_window`, as every window of the runtime is).
    """
    t = features.shape[2]
    if t <= window_frames:
        return tile_to_window(features, window_frames)
    starts = window_starts(t, window_frames, 1)
    start = starts[int(rng.integers(0, len(starts)))] if rng is not None else starts[(len(starts) - 1) // 2]
    return features[:, :, start:start + window_frames]


def random_shift(batch: np.ndarray, max_time: int, max_freq: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each sample by integers dt in [-max_time, max_time] frames and df in [-max_freq, max_freq] bins:
    ``out[b, c, f, t] = x[b, c, clip(f - df), clip(t - dt)]`` (nearest-edge fill, like Keras' width/height shift)."""
    b, _, m, w = batch.shape
    out = np.empty_like(batch)
    dts = rng.integers(-max_time, max_time + 1, size=b) if max_time else np.zeros(b, int)
    dfs = rng.integers(-max_freq, max_freq + 1, size=b) if max_freq else np.zeros(b, int)
    for i in range(b):
        ti = np.clip(np.arange(w) - dts[i], 0, w - 1)
        fi = np.clip(np.arange(m) - dfs[i], 0, m - 1)
        out[i] = batch[i][:, fi][:, :, ti]
    return out


def spec_augment(batch: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, value: float = 0.0) -> np.ndarray:
    """SpecAugment: per sample ``time_masks`` masks of width uniform in [0, time_mask_max] frames and ``freq_masks``
    masks of height uniform in [0, freq_mask_max] bins, at uniform positions, set to ``value`` in every channel."""
    out = batch.copy()
    b, _, m, w = out.shape
    for i in range(b):
        for _ in range(cfg.time_masks):
            width = int(rng.integers(0, min(cfg.time_mask_max, w) + 1))
            t0 = int(rng.integers(0, w - width + 1))
            out[i, :, :, t0:t0 + width] = value
        for _ in range(cfg.freq_masks):
            height = int(rng.integers(0, min(cfg.freq_mask_max, m) + 1))
            f0 = int(rng.integers(0, m - height + 1))
            out[i, :, f0:f0 + height, :] = value
    return out


def mixup(batch: np.ndarray, targets: np.ndarray, alpha: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Mixup: ``lam ~ Beta(alpha, alpha)``, a random permutation ``p``; returns ``(lam * x + (1 - lam) * x[p],
    lam * y + (1 - lam) * y[p], lam)`` with ``targets`` float32[B, K] one-hot / soft labels."""
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(batch.shape[0])
    x = (lam * batch + (1.0 - lam) * batch[perm]).astype(np.float32)
    y = (lam * targets + (1.0 - lam) * targets[perm]).astype(np.float32)
    return x, y, lam
