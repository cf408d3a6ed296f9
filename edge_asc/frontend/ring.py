"""A preallocated sample ring buffer for audio callbacks.

Single producer (the audio callback thread) and single consumer (the processing loop). ``write`` copies into the
preallocated array and never allocates; when the ring is full the OLDEST samples are overwritten (the newest audio is
kept, which is what a live classifier wants) and the overwritten samples are counted in ``overrun_samples``.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """Mono float32 ring of ``capacity`` samples.

    ``write(block)`` is safe to call from a sounddevice callback: it only copies (at most two slices) under a lock
    held for the copy. ``read(max_samples)`` returns the oldest unread samples, in order, as a new array.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1 sample, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._write = 0  # total samples ever written (monotonic)
        self._read = 0  # total samples ever consumed or dropped (monotonic)
        self._lock = threading.Lock()
        self.overrun_samples = 0
        self.overrun_events = 0

    def __len__(self) -> int:
        """Unread samples currently held."""
        return self._write - self._read

    def write(self, block: np.ndarray) -> None:
        """Copy ``block`` (float[n] or float[n, 1]) into the ring; overwrite the oldest unread samples if full."""
        src = block.reshape(-1)
        n = src.shape[0]
        if n == 0:
            return
        with self._lock:
            if n >= self.capacity:  # only the newest `capacity` samples can be kept
                dropped = (self._write - self._read) + (n - self.capacity)
                src = src[n - self.capacity :]
                self._write += n - self.capacity
                n = self.capacity
            else:
                dropped = max(0, (self._write - self._read) + n - self.capacity)
            if dropped:
                self.overrun_samples += dropped
                self.overrun_events += 1
                self._read = max(self._read, self._write + n - self.capacity)
            start = self._write % self.capacity
            first = min(n, self.capacity - start)
            self._data[start : start + first] = src[:first]
            if first < n:
                self._data[: n - first] = src[first:]
            self._write += n

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """Remove and return up to ``max_samples`` (default: all) of the oldest unread samples, float32[k]."""
        with self._lock:
            avail = self._write - self._read
            k = avail if max_samples is None else max(0, min(avail, int(max_samples)))
            start = self._read % self.capacity
            first = min(k, self.capacity - start)
            out = np.empty(k, dtype=np.float32)
            out[:first] = self._data[start : start + first]
            if first < k:
                out[first:] = self._data[: k - first]
            self._read += k
            return out

    def clear(self) -> None:
        """Drop every unread sample (counters are kept)."""
        with self._lock:
            self._read = self._write
