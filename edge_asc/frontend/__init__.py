"""Device-safe log-mel front end (numpy only): offline features, streaming features, the sample ring buffer, and the
one rule that cuts features into model windows (:mod:`edge_asc.frontend.windows`)."""

from .core import (
    StreamingFrontend,
    analysis_window,
    delta_coefficients,
    mel_filterbank,
    normalize,
    offline,
)
from .ring import RingBuffer
from .windows import WindowAssembler, default_hop_frames, hop_frames, tile_to_window, window_starts, windows

__all__ = [
    "RingBuffer",
    "StreamingFrontend",
    "WindowAssembler",
    "analysis_window",
    "default_hop_frames",
    "delta_coefficients",
    "hop_frames",
    "mel_filterbank",
    "normalize",
    "offline",
    "tile_to_window",
    "window_starts",
    "windows",
]
