"""Softmax, clip posterior and macro accuracy: the one copy that training, evaluation, export verification and the
runtime use. numpy only (device-safe).

Empty inputs are defined, not errors: :func:`softmax` of a zero-size array is a zero-size float32 array of the same
shape; :func:`macro_accuracy` of no clips is NaN (undefined: no class was scored, which is not the same as every
class wrong).
"""

from __future__ import annotations

import math

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``: float64 internally, float32 out, same shape as ``logits``.

    A zero-size input (no rows, or no classes) gives a zero-size float32 array of the same shape.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        return np.zeros(z.shape, dtype=np.float32)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def clip_posterior(window_logits: np.ndarray) -> np.ndarray:
    """Clip posterior = mean of the window posteriors: float[n_windows, K] logits -> float32[K] probabilities.

    No windows (float[0, K]) gives float32[K] of NaN.
    """
    z = np.asarray(window_logits)
    p = softmax(z.reshape(-1, z.shape[-1]))
    if p.shape[0] == 0:
        return np.full(z.shape[-1], np.nan, dtype=np.float32)
    return p.mean(axis=0).astype(np.float32)


def macro_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> float:
    """Mean over the classes present in ``y`` of the fraction of their items predicted correctly (the DCASE metric).

    Args:
        pred: int[N] predicted class indices.
        y: int[N] true class indices.
        n_classes: if given, only classes ``0 .. n_classes - 1`` count (classes without items never do).

    Returns:
        A fraction in [0, 1]; NaN when no class is present (``N == 0``).

    Raises:
        ValueError: ``pred`` and ``y`` differ in shape.
    """
    p, t = np.asarray(pred).reshape(-1), np.asarray(y).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and y must have the same length, got {p.shape[0]} and {t.shape[0]}")
    classes = np.unique(t)
    if n_classes is not None:
        classes = classes[(classes >= 0) & (classes < n_classes)]
    if classes.size == 0:
        return math.nan
    return float(np.mean([np.mean(p[t == k] == k) for k in classes]))
