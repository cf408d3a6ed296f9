"""What export verification reads from a Mini-SegNet besides its logits (:func:`edge_asc.model.verification_probe`).

The exported graph's event-block tensors are found by their shapes, which depend on the block's geometry
(:class:`EventBlockSpec`); float and exported event indices are compared window by window, so the float model's
indices (and the per-channel counts its block ranks) are recorded during verification's forward passes
(:meth:`VerificationProbe.recording`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class EventBlockSpec:
    """The event extraction block's geometry, as the exported graph shows it."""

    channels: int
    """C: channels the block ranks (the last decoder block's output channels, ``config.channels[0]``)."""
    topk: int
    """k: event indices per window; the block outputs float32[N, k] of ``index / C``."""
    pooled_features: int
    """width of the pooled features the k indices are concatenated to in front of the dense head."""
    count_units: float
    """what one count fraction (cells of channel c / all cells) is in the block's count tensor: 6 for the
    int8-native block, 1 for the reference one."""


@dataclass
class EventRecording:
    """Event indices and counts of every window the model ran on while :meth:`VerificationProbe.recording`."""

    _indices: list[np.ndarray] = field(default_factory=list)
    _counts: list[np.ndarray] = field(default_factory=list)

    def indices(self) -> np.ndarray | None:
        """int64[N, k]: the block's event channel indices (rank order) of the recorded windows; None if none ran."""
        return np.concatenate(self._indices) if self._indices else None

    def counts(self) -> np.ndarray | None:
        """float64[N, C]: per recorded window, the fraction of cells whose first maximal channel is c (the counts
        the block ranks, see :func:`first_argmax_counts`); None if none ran."""
        return np.concatenate(self._counts) if self._counts else None


def first_argmax_counts(x: np.ndarray) -> np.ndarray:
    """float64[N, C]: for activations float[N, C, H, W], the fraction of the H*W cells whose first maximal channel
    (ties: the lowest index) is c: the counts :class:`edge_asc.model.layers.EventExtraction` ranks."""
    n, c = x.shape[:2]
    am = np.argmax(x.reshape(n, c, -1), axis=1)
    return np.stack([np.bincount(row, minlength=c) for row in am]).astype(np.float64) / am.shape[1]


class VerificationProbe:
    """A Mini-SegNet's interface to export verification.

    Attributes:
        events: the event block's geometry, or None for a model without one (head 'gap').
        activation_channels: channels of the model's full-resolution activations (for sizing batches).
    """

    def __init__(self, model: Any) -> None:
        from .segnet import MiniSegNet

        if not isinstance(model, MiniSegNet):
            raise TypeError(f"verification_probe needs a MiniSegNet, got {type(model).__name__}")
        self._model = model
        cfg = model.config
        block = model.events
        self.events: EventBlockSpec | None = None
        if block is not None:
            self.events = EventBlockSpec(channels=block.channels, topk=block.k,
                                         pooled_features=cfg.head_features - block.k, count_units=block.count_units)
        self.activation_channels: int = cfg.channels[0]

    @contextmanager
    def recording(self) -> Iterator[EventRecording]:
        """Within the ``with`` block, each forward pass of the model appends its windows' event indices and counts
        to the yielded :class:`EventRecording` (which stays empty for a model without an event block)."""
        rec = EventRecording()
        block = self._model.events
        if block is None:
            yield rec
            return
        channels = block.channels

        def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            rec._indices.append(np.rint(output.detach().numpy() * channels).astype(np.int64))
            rec._counts.append(first_argmax_counts(inputs[0].detach().numpy()))

        handle = block.register_forward_hook(hook)
        try:
            yield rec
        finally:
            handle.remove()
