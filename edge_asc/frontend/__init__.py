"""Device-safe log-mel front end (numpy only): offline features, streaming features, and the sample ring buffer."""

from .core import (
    StreamingFrontend,
    analysis_window,
    delta_coefficients,
    mel_filterbank,
    normalize,
    offline,
)
from .ring import RingBuffer

__all__ = [
    "RingBuffer",
    "StreamingFrontend",
    "analysis_window",
    "delta_coefficients",
    "mel_filterbank",
    "normalize",
    "offline",
]
