"""Test helper (not collected): a fake ``sounddevice`` module whose InputStream drives the captured callback from a
thread with real timing, from a scripted 'world' (audio, injected overflow flags, a mid-stream device failure)."""

from __future__ import annotations

import threading
import time
import types

import numpy as np


class PortAudioError(Exception):
    pass


class World:
    """What the fake microphone hears and how it misbehaves.

    ``audio``: float32 samples at ``rate`` played against wall time from the first ``start()``;
    ``overflow_callbacks``: callback numbers (0-based, over all streams) flagged ``input_overflow``;
    ``fail_at_s``: wall seconds after the first start when the device vanishes (callbacks stop, stream inactive);
    ``reopen_failures``: how many re-open attempts fail (PortAudioError) after the failure.
    """

    def __init__(self, audio, rate, *, blocksize=1024, overflow_callbacks=(), fail_at_s=None, reopen_failures=0,
                 devices=None, default=(1, 3)):
        self.audio = np.asarray(audio, np.float32)
        self.rate = rate
        self.blocksize = blocksize
        self.overflow_callbacks = set(overflow_callbacks)
        self.fail_at_s = fail_at_s
        self.reopen_failures = reopen_failures
        self.failed = False
        self.t0 = None
        self.callbacks = 0
        self.opens = 0
        self.open_failures = 0
        self.streams = []
        self.callback_threads = set()
        self.devices = devices if devices is not None else [
            {"name": "bcm2835 Headphones: - (hw:0,0)", "index": 0, "max_input_channels": 0,
             "max_output_channels": 8, "default_samplerate": 48000.0},
            {"name": "USB PnP Sound Device: Audio (hw:1,0)", "index": 1, "max_input_channels": 1,
             "max_output_channels": 0, "default_samplerate": float(rate)},
            {"name": "pulse", "index": 2, "max_input_channels": 32, "max_output_channels": 32,
             "default_samplerate": 44100.0},
        ]
        self.default = default


class _Flags:
    __slots__ = ("input_overflow",)

    def __init__(self, overflow: bool) -> None:
        self.input_overflow = overflow


def make_module(world: World) -> types.ModuleType:
    sd = types.ModuleType("sounddevice")
    sd.PortAudioError = PortAudioError
    sd.default = types.SimpleNamespace(device=list(world.default))
    sd.query_devices = lambda *a, **k: [dict(d) for d in world.devices]

    class InputStream:
        def __init__(self, *, device, channels, samplerate, dtype, blocksize, callback, finished_callback=None):
            if world.failed and world.reopen_failures > 0:
                world.reopen_failures -= 1
                world.open_failures += 1
                raise PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
            assert channels == 1 and dtype == "float32"
            assert int(samplerate) == world.rate, (samplerate, world.rate)
            self.device, self.samplerate = device, samplerate
            self.blocksize = blocksize or world.blocksize
            self.callback, self.finished_callback = callback, finished_callback
            self.active = False
            self._halt = threading.Event()
            self._dead = False
            world.opens += 1
            world.streams.append(self)

        def start(self):
            if world.t0 is None:
                world.t0 = time.monotonic()
            if world.failed:  # the device came back: continue with the audio of 'now'
                world.failed = False
                world.fail_at_s = None
            self.active = True
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

        def _run(self):
            world.callback_threads.add(threading.get_ident())
            bs, rate = self.blocksize, world.rate
            pos = int((time.monotonic() - world.t0) * rate) // bs * bs
            while not self._halt.is_set():
                due = world.t0 + (pos + bs) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._halt.wait(delay)
                    if self._halt.is_set():
                        break
                if world.fail_at_s is not None and not world.failed and time.monotonic() - world.t0 >= world.fail_at_s:
                    world.failed = True
                    self._dead = True
                    self.active = False
                    if self.finished_callback:
                        self.finished_callback()
                    return
                block = np.zeros((bs, 1), np.float32)
                chunk = world.audio[pos : pos + bs]
                block[: chunk.size, 0] = chunk
                flags = _Flags(world.callbacks in world.overflow_callbacks)
                world.callbacks += 1
                self.callback(block, bs, None, flags)
                pos += bs

        def stop(self):
            self._halt.set()
            self.active = False
            if getattr(self, "_thread", None) is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=2)
            if self._dead:
                raise PortAudioError("Error stopping stream: Unanticipated host error [PaErrorCode -9999]")

        def close(self):
            if self._dead:
                raise PortAudioError("Error closing stream: Unanticipated host error [PaErrorCode -9999]")

    sd.InputStream = InputStream
    return sd
