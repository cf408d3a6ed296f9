"""Turning a clip's features into model windows, and clip posteriors from window posteriors. numpy only.

Training, evaluation, export verification and the runtime all cut windows with :func:`windows` and pool window
posteriors with :func:`edge_asc.metrics.clip_posterior`, so the three agree on what "the model's answer for a clip"
is.
"""

from __future__ import annotations

import numpy as np

from ..errors import AudioInputError


def window_starts(n_frames: int, window_frames: int, hop_frames: int | None = None) -> list[int]:
    """Start frames of the windows :func:`windows` cuts from a clip of ``n_frames`` frames.

    Windows start at 0, ``hop``, ``2*hop``... while they fit; if the last one does not end at ``n_frames``, one more
    window ending exactly at ``n_frames`` is added, so every frame is covered. A clip shorter than one window gives
    one window (start 0; see :func:`windows` for the padding).

    Raises:
        ValueError: ``window_frames`` or ``hop_frames`` < 1.
    """
    hop = window_frames if hop_frames is None else hop_frames
    if window_frames < 1 or hop < 1:
        raise ValueError(f"window_frames and hop_frames must be >= 1, got {window_frames}, {hop}")
    if n_frames <= window_frames:
        return [0]
    starts = list(range(0, n_frames - window_frames + 1, hop))
    if starts[-1] + window_frames < n_frames:
        starts.append(n_frames - window_frames)
    return starts


def windows(features: np.ndarray, window_frames: int, hop_frames: int | None = None) -> np.ndarray:
    """Cut a clip's features into model windows.

    Args:
        features: float32[C, n_mels, T] (normalised or not) from :func:`edge_asc.frontend.offline`.
        window_frames: frames per window (the model's input width).
        hop_frames: frames between window starts; default ``window_frames`` (no overlap, plus a final window
            aligned to the clip end, see :func:`window_starts`).

    Returns:
        float32[n_windows, C, n_mels, window_frames]. A clip with 0 < T < window_frames is repeated cyclically
        along time to fill one window.

    Raises:
        AudioInputError: the clip has 0 frames (shorter than one FFT frame plus delta context).
    """
    x = np.asarray(features)
    if x.ndim != 3:
        raise AudioInputError(f"features must be [channels, mels, frames], got shape {x.shape}")
    t = x.shape[2]
    if t == 0:
        raise AudioInputError("the clip is too short to give a single feature frame: use a longer clip")
    if t < window_frames:
        reps = -(-window_frames // t)
        return np.tile(x, (1, 1, reps))[None, :, :, :window_frames].astype(np.float32, copy=False)
    starts = window_starts(t, window_frames, hop_frames)
    return np.stack([x[:, :, s:s + window_frames] for s in starts]).astype(np.float32, copy=False)
