"""The one rule that cuts a clip's feature frames into model windows. numpy only (device-safe).

Training crops, evaluation, calibration, export verification, ``edge-asc classify`` and the live ``edge-asc listen``
all take their window starts from :func:`window_starts`; the streaming :class:`WindowAssembler` emits windows at the
same starts as the offline :func:`windows` on the whole clip.

The rule, for a clip of ``T`` feature frames, windows of ``W`` frames and a hop of ``H`` frames:

- **Starts** are ``0, H, 2H, ...`` while the window fits (``start + W <= T``). Window ``k`` covers frames
  ``[k*H, (k+1)*H + W - H)`` of the clip.
- **Default hop** is half a window, ``H = max(1, W // 2)`` (:func:`default_hop_frames`): every frame but the edges is
  seen by two windows, and a live stream gets a new answer every half window. A hop in seconds is rounded to whole
  frames (:func:`hop_frames`).
- **No end-aligned extra window.** The last ``(T - W) % H`` frames (fewer than ``H``) are not covered. A live stream
  cannot know where a clip ends, so an end window would be one that ``classify`` reports and ``listen`` never does;
  without it a clip gives the same windows offline, streamed, and streamed block by block.
- **A clip shorter than one window** (``0 < T < W``) gives exactly one window at start 0: its frames repeated
  cyclically along time until ``W`` frames (:func:`tile_to_window`). Tiling, not zero padding, because every frame of
  a tiled window is a real frame of the scene, so the window keeps the level and texture statistics the model was
  trained on; zero-padded audio turns into frames at the front end's log floor (-100 dB), far outside anything in
  training, and after int8 input quantisation they all sit on the lowest code. The streaming assembler can only
  decide this at the end of the stream (:meth:`WindowAssembler.flush`), when it knows no more frames will come.
- **A clip with no frames** (shorter than one FFT frame plus delta context) has no window: :func:`windows` raises
  :class:`~edge_asc.errors.AudioInputError`.

Training samples random crops at every frame (hop 1) through the same :func:`window_starts`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import AudioInputError, ConfigError
from ..spec import FrontendSpec


def default_hop_frames(window_frames: int) -> int:
    """The default hop: half a window, ``max(1, window_frames // 2)`` frames."""
    return max(1, int(window_frames) // 2)


def hop_frames(spec: FrontendSpec, window_frames: int, hop_seconds: float | None = None) -> int:
    """Window hop in front-end frames for a hop in seconds: ``max(1, round(hop_seconds * sr / hop_length))``.

    Args:
        spec: the front end (``sample_rate`` Hz, ``hop_length`` samples per frame).
        window_frames: the model's window in frames (only for the default).
        hop_seconds: seconds between window starts; None: :func:`default_hop_frames`.

    Raises:
        ConfigError: ``hop_seconds`` <= 0 or not finite.
    """
    if hop_seconds is None:
        return default_hop_frames(window_frames)
    try:
        hop = float(hop_seconds)
    except (TypeError, ValueError):
        hop = float("nan")
    if not (math.isfinite(hop) and hop > 0):
        raise ConfigError(f"hop must be a positive number of seconds, got {hop_seconds!r}")
    return max(1, round(hop * spec.sample_rate / spec.hop_length))


def window_starts(n_frames: int, window_frames: int, hop: int | None = None) -> range:
    """Start frames of the windows of a clip of ``n_frames`` frames (the module's rule).

    Args:
        n_frames: frames in the clip (>= 0).
        window_frames: frames per window (>= 1).
        hop: frames between starts (>= 1); None: :func:`default_hop_frames`.

    Returns:
        ``range(0, n_frames - window_frames + 1, hop)``; ``range(0, 1)`` (one tiled window) when
        ``0 < n_frames < window_frames``; an empty range when ``n_frames == 0``.

    Raises:
        ValueError: ``window_frames`` or ``hop`` < 1, or ``n_frames`` < 0.
    """
    h = default_hop_frames(window_frames) if hop is None else int(hop)
    if window_frames < 1 or h < 1 or n_frames < 0:
        raise ValueError(f"need window_frames >= 1, hop >= 1 and n_frames >= 0, got {window_frames}, {h}, "
                         f"{n_frames}")
    if 0 < n_frames < window_frames:
        return range(1)
    return range(0, n_frames - window_frames + 1, h)


def tile_to_window(features: np.ndarray, window_frames: int) -> np.ndarray:
    """One window from a clip shorter than (or as long as) a window: its frames repeated cyclically along time.

    Args:
        features: float[..., T] with ``0 < T <= window_frames`` (e.g. float32[C, n_mels, T]).

    Returns:
        float32[..., window_frames]; ``out[..., t] = features[..., t % T]``.

    Raises:
        AudioInputError: ``T == 0``. ValueError: ``T > window_frames``.
    """
    x = np.asarray(features)
    t = x.shape[-1]
    if t == 0:
        raise AudioInputError("the clip is too short to give a single feature frame: use a longer clip")
    if t > window_frames:
        raise ValueError(f"tile_to_window needs at most {window_frames} frames, got {t}: use windows()")
    reps = -(-window_frames // t)
    return np.tile(x, (1,) * (x.ndim - 1) + (reps,))[..., :window_frames].astype(np.float32, copy=False)


def windows(features: np.ndarray, window_frames: int, hop: int | None = None) -> np.ndarray:
    """Cut a clip's features into model windows at :func:`window_starts`.

    Args:
        features: float32[C, n_mels, T] (normalised or not) from :func:`edge_asc.frontend.offline`.
        window_frames: frames per window (the model's input width).
        hop: frames between window starts; None: half a window.

    Returns:
        float32[n_windows, C, n_mels, window_frames]; a clip with ``0 < T < window_frames`` gives one tiled window
        (:func:`tile_to_window`).

    Raises:
        AudioInputError: not [C, n_mels, T], or the clip has 0 frames.
        ValueError: ``window_frames`` or ``hop`` < 1.
    """
    x = np.asarray(features)
    if x.ndim != 3:
        raise AudioInputError(f"features must be [channels, mels, frames], got shape {x.shape}")
    t = x.shape[2]
    starts = window_starts(t, window_frames, hop)
    if t < window_frames:
        return tile_to_window(x, window_frames)[None]
    return np.stack([x[:, :, s:s + window_frames] for s in starts]).astype(np.float32, copy=False)


class WindowAssembler:
    """The streaming form of :func:`windows`: cuts a stream of feature frames into windows at :func:`window_starts`.

    ``push(frames)`` takes float32[C, n_mels, n_new] and returns ``[(start_frame, window), ...]``, each window a new
    float32[C, n_mels, window_frames] array; window ``k`` covers stream frames ``[k*hop, k*hop + window_frames)``.
    At the end of a stream, :meth:`flush` returns the one tiled window of a stream shorter than a window (and
    nothing otherwise), so pushing a clip's frames in any split and flushing gives exactly ``windows(clip)``.
    """

    def __init__(self, window_frames: int, hop: int) -> None:
        if window_frames < 1 or hop < 1:
            raise ConfigError(f"window ({window_frames}) and hop ({hop}) must be >= 1 frame")
        self.window_frames, self.hop_frames = int(window_frames), int(hop)
        self.reset()

    def reset(self) -> None:
        """Forget buffered frames; the next pushed frame is stream frame 0."""
        self._pending: np.ndarray | None = None
        self._base = 0  # stream frame index of _pending[..., 0]
        self._next = 0  # stream frame index where the next window starts
        self._tiled = False  # flush() has emitted the tiled window of a short stream

    def push(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add frames float32[C, n_mels, n_new]; return the windows that became complete."""
        if frames.shape[-1] == 0:
            return []
        p = frames if self._pending is None or self._pending.shape[-1] == 0 else np.concatenate(
            [self._pending, frames], axis=-1)
        total = self._base + p.shape[-1]
        out = []
        if total >= self.window_frames:
            W = self.window_frames
            for start in window_starts(total, W, self.hop_frames)[self._next // self.hop_frames:]:
                s = start - self._base
                out.append((start, np.ascontiguousarray(p[..., s : s + W])))
                self._next = start + self.hop_frames
        drop = min(self._next - self._base, p.shape[-1])
        self._pending = p[..., drop:].copy() if drop else p
        self._base += drop
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """End of the stream: ``[(0, tiled window)]`` if it had frames but fewer than a window, else ``[]``.

        Returns the tiled window once; :meth:`reset` starts a new stream.
        """
        p = self._pending
        if self._tiled or self._next or p is None or not 0 < p.shape[-1] < self.window_frames:
            return []
        self._tiled = True
        return [(0, tile_to_window(p, self.window_frames))]
