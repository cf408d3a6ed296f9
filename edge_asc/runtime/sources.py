"""Audio sources for the streaming pipeline: a microphone (sounddevice) and a file, optionally paced in real time.

Both only ever call ``ring.write(block)`` from their producer side, so the consumer loop is the same for both.
``sounddevice`` is imported lazily (:func:`import_sounddevice`) because importing it raises where PortAudio is missing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AudioInputError, ConfigError, DeviceError, MissingExtraError

PORTAUDIO_HINT = "install it with 'sudo apt-get install libportaudio2'"


class DeviceLost(DeviceError):
    """The input device stopped delivering audio (unplugged, driver error, stalled stream)."""


class DeviceNotFound(DeviceError):
    """No input device (or none matching the requested name / index) exists right now; it may appear later."""


def import_sounddevice():
    """Import and return the ``sounddevice`` module.

    Raises:
        DeviceError: PortAudio (the C library sounddevice wraps) is missing: names the apt-get command.
        MissingExtraError: the ``sounddevice`` package itself is not installed.
    """
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError('PortAudio library not found')
        raise DeviceError(f"PortAudio library not found ({exc}): {PORTAUDIO_HINT}") from None
    except ImportError:
        raise MissingExtraError("sounddevice", "pi", "microphone input") from None
    return sounddevice


@dataclass(frozen=True, kw_only=True)
class InputDevice:
    """An audio input as PortAudio lists it. ``default_samplerate`` in Hz; ``channels`` = max input channels."""

    index: int
    name: str
    channels: int
    default_samplerate: float

    def describe(self) -> str:
        return f"[{self.index}] {self.name} ({self.channels} ch, {self.default_samplerate:g} Hz)"


def input_devices(sd) -> list[InputDevice]:
    """Every device with at least one input channel."""
    try:
        devs = sd.query_devices()
    except sd.PortAudioError as exc:  # the host API could not be queried
        raise DeviceNotFound(f"cannot list audio devices ({exc}): check that the sound system is running") from None
    out = []
    for i, d in enumerate(devs):
        if int(d.get("max_input_channels", 0)) > 0:
            out.append(InputDevice(index=int(d.get("index", i)), name=str(d["name"]),
                                   channels=int(d["max_input_channels"]),
                                   default_samplerate=float(d.get("default_samplerate", 0) or 0)))
    return out


def _listing(devs: list[InputDevice]) -> str:
    return "; ".join(d.describe() for d in devs) if devs else "none"


def resolve_device(sd, device: str | int | None) -> InputDevice:
    """Find the input device named by ``device``: None = the default input, an integer (or digit string) = a
    PortAudio index, text = a case-insensitive substring of the name (an exact name wins over substrings).

    Raises:
        DeviceError: no input device at all, no match, an ambiguous name, or an index that is not an input; the
            message lists the available input devices.
    """
    devs = input_devices(sd)
    if not devs:
        raise DeviceNotFound("no audio input device found: plug in a USB microphone (and check 'arecord -l')")
    if device is None or device == "":
        default = getattr(getattr(sd, "default", None), "device", -1)
        try:
            idx = int(default[0])  # sounddevice gives an (input, output) pair
        except TypeError:
            idx = int(default) if default is not None else -1
        except (IndexError, ValueError):
            idx = -1
        for d in devs:
            if d.index == idx:
                return d
        return devs[0]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        idx = int(device)
        for d in devs:
            if d.index == idx:
                return d
        raise DeviceNotFound(f"input device index {idx} does not exist or has no input channels: "
                             f"available inputs: {_listing(devs)}")
    name = str(device).strip().lower()
    exact = [d for d in devs if d.name.lower() == name]
    if len(exact) == 1:
        return exact[0]
    hits = [d for d in devs if name in d.name.lower()]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DeviceNotFound(f"no input device matches {device!r}: available inputs: {_listing(devs)}")
    raise DeviceError(f"input device name {device!r} is ambiguous ({len(hits)} match): use an index: "
                      f"{_listing(hits)}")


def refresh_devices(sd) -> None:
    """Make PortAudio list devices again. PortAudio enumerates devices once, when it is initialised, so a USB
    microphone plugged in later is invisible until it is re-initialised; sounddevice offers that as
    ``_terminate()`` + ``_initialize()`` (its documented way to rescan). Only call it with no stream open."""
    terminate, initialize = getattr(sd, "_terminate", None), getattr(sd, "_initialize", None)
    if terminate is None or initialize is None:
        return
    try:
        terminate()
        initialize()
    except sd.PortAudioError as exc:  # the sound system is not up yet; the next try sees it again
        raise DeviceNotFound(f"cannot re-scan audio devices ({_first_line(exc)})") from None


def wait_for_device(sd, device: str | int | None, *, stop: threading.Event, poll_s: tuple[float, float] = (0.5, 5.0),
                    tick=None, tick_s: float = 0.1, log=None) -> InputDevice | None:
    """Wait until :func:`resolve_device` finds ``device`` (at boot the USB microphone may appear after the service
    starts), re-scanning PortAudio's device list between tries.

    Args:
        poll_s: first and maximum seconds between tries (doubling in between).
        tick: called every ``tick_s`` seconds while waiting (watchdog heartbeats).
        log: called with one line when the wait starts and one when the device appears.

    Returns:
        The device, or None when ``stop`` was set first.

    Raises:
        DeviceError: a problem that waiting does not fix (an ambiguous name, the device list cannot be read).
    """
    t0 = time.monotonic()
    delay, cap = poll_s
    tries = 0
    while not stop.is_set():
        tries += 1
        try:
            if tries > 1:
                refresh_devices(sd)
            dev = resolve_device(sd, device)
        except DeviceNotFound as exc:
            if tries == 1 and log is not None:
                log(f"edge-asc: waiting for the input device ({exc}); checking every {poll_s[0]:g}-{cap:g} s")
            until = time.monotonic() + delay
            while not stop.is_set() and (left := until - time.monotonic()) > 0:
                stop.wait(min(left, tick_s))
                if tick is not None:
                    tick()
            delay = min(delay * 2, cap)
            continue
        if tries > 1 and log is not None:
            log(f"edge-asc: input device {dev.describe()} appeared after {time.monotonic() - t0:.1f} s")
        return dev
    return None


class MicSource:
    """Microphone input through ``sounddevice.InputStream`` at the device's native rate, mono float32.

    The callback copies the block into the ring and counts ``status.input_overflow``; nothing else (no allocation
    beyond numpy's view object, no inference, no printing, no locks other than the ring's copy lock).
    :meth:`check` raises :class:`DeviceLost` when the stream stopped by itself or delivered nothing for
    ``stall_seconds``; :meth:`reopen` finds the device again by name (its index may change after a replug).

    Args:
        device: see :func:`resolve_device`.
        sd: the sounddevice module (tests pass a fake); default :func:`import_sounddevice`.
        samplerate: Hz to open the device at; default its native ``default_samplerate``.
        blocksize: frames per callback (0 = let PortAudio choose).
        stall_seconds: no callback for this long while running = device lost.
    """

    kind = "microphone"
    paced = True

    def __init__(self, device: str | int | None = None, *, sd=None, samplerate: int | None = None,
                 blocksize: int = 0, stall_seconds: float = 2.0) -> None:
        self.sd = sd if sd is not None else import_sounddevice()
        self._spec = device
        self.device = resolve_device(self.sd, device)
        self.sample_rate = int(samplerate or round(self.device.default_samplerate) or 48_000)
        self._fixed_rate = samplerate
        self.blocksize = int(blocksize)
        self.stall_seconds = float(stall_seconds)
        self.overflows = 0  # callbacks flagged with input_overflow
        self.callbacks = 0
        self.exhausted = False
        self._stream = None
        self._ring = None
        self._finished = False
        self._last_count = 0
        self._last_progress = time.monotonic()

    @property
    def name(self) -> str:
        return self.device.name

    def _callback(self, indata, frames, time_info, status) -> None:  # audio thread: copy + count only
        if status.input_overflow:
            self.overflows += 1
        self._ring.write(indata)
        self.callbacks += 1

    def _on_finished(self) -> None:
        self._finished = True

    def start(self, ring) -> None:
        """Open and start the stream, writing into ``ring``. Raises DeviceError when the device cannot be opened."""
        self._ring = ring
        self._finished = False
        try:
            stream = self.sd.InputStream(device=self.device.index, channels=1, samplerate=self.sample_rate,
                                         dtype="float32", blocksize=self.blocksize, callback=self._callback,
                                         finished_callback=self._on_finished)
            stream.start()
        except (self.sd.PortAudioError, ValueError) as exc:  # ValueError: a setting the device does not support
            raise DeviceError(f"cannot open input device {self.device.describe()}: {_first_line(exc)}") from None
        self._stream = stream
        self._last_count = self.callbacks
        self._last_progress = time.monotonic()

    def check(self) -> None:
        """Raise :class:`DeviceLost` if the stream died or stalled."""
        s = self._stream
        if s is None:
            raise DeviceLost(f"input device '{self.name}' is not open")
        try:
            active = bool(getattr(s, "active", True))
        except self.sd.PortAudioError as exc:  # from Pa_IsStreamActive on a vanished device
            raise DeviceLost(f"input device '{self.name}' failed ({_first_line(exc)})") from None
        if self._finished or not active:
            raise DeviceLost(f"input device '{self.name}' stopped delivering audio")
        now = time.monotonic()
        if self.callbacks != self._last_count:
            self._last_count, self._last_progress = self.callbacks, now
        elif now - self._last_progress > self.stall_seconds:
            raise DeviceLost(f"input device '{self.name}' delivered no audio for {self.stall_seconds:g} s")

    def reopen(self) -> None:
        """Close what is left of the stream, find the device again by name, and start a new stream."""
        self.close()
        spec = self._spec
        by_name = spec is None or isinstance(spec, int) or str(spec).strip().isdigit()
        self.device = resolve_device(self.sd, self.device.name if by_name else spec)
        if not self._fixed_rate:
            self.sample_rate = int(round(self.device.default_samplerate) or self.sample_rate)
        self.start(self._ring)

    def close(self) -> None:
        s, self._stream = self._stream, None
        if s is None:
            return
        for op in ("stop", "close"):
            # a vanished device: PortAudio errors on stop/close are expected and harmless
            with contextlib.suppress(self.sd.PortAudioError):
                getattr(s, op)()

    def wait(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)


class FileSource:
    """A file as a stream: read in ``block``-sample pieces at the file's own rate, downmixed to mono.

    With ``realtime`` a producer thread writes one block every ``block / rate / speed`` seconds of wall time, exactly
    like a microphone callback (so ring overruns can happen when the consumer is slow); ``speed`` > 1 plays faster
    than real time (soak tests), with blocks of ``block * max(1, speed // 25)`` samples so the producer wakes a few
    hundred times a second at most. Otherwise :meth:`wait` writes the next blocks synchronously whenever the ring has
    room (fast, lossless). ``loops`` plays the file that many times back to back (0 = forever); stream time runs on.

    Raises:
        AudioInputError: missing or unreadable file.
        ConfigError: ``speed`` not in (0, 1000] or ``loops`` < 0.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike, *, realtime: bool = False, block: int = 1024, speed: float = 1.0,
                 loops: int = 1) -> None:
        from ..audio import audio_info

        if not (isinstance(speed, (int, float)) and 0 < speed <= 1000):
            raise ConfigError(f"speed must be in (0, 1000] times real time, got {speed!r}")
        if not isinstance(loops, int) or loops < 0:
            raise ConfigError(f"loops must be an integer >= 0 (0 = forever), got {loops!r}")
        info = audio_info(path)
        if info.frames == 0:
            raise AudioInputError(f"{path}: contains no audio (0 samples): pick a non-empty file")
        self.path = str(path)
        self.name = os.path.basename(self.path)
        self.sample_rate = info.sample_rate
        self.realtime = realtime
        self.paced = realtime
        self.speed = float(speed)
        self.loops = loops
        self.played = 0  # complete passes through the file so far
        self.block = int(block) * (max(1, int(self.speed // 25)) if realtime else 1)
        self.overflows = 0
        self.exhausted = False
        self._ring = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._file = None

    def start(self, ring) -> None:
        import soundfile as sf

        self._ring = ring
        try:
            self._file = sf.SoundFile(self.path)
        except (sf.SoundFileError, OSError) as exc:
            raise AudioInputError(f"{self.path}: not a readable audio file ({_first_line(exc)})") from None
        if self.realtime:
            self._thread = threading.Thread(target=self._pace, name="edge-asc-file-source", daemon=True)
            self._thread.start()

    def _next_block(self) -> np.ndarray | None:
        data = self._file.read(self.block, dtype="float32", always_2d=True)
        if data.shape[0] == 0:
            self.played += 1
            if self.loops and self.played >= self.loops:
                return None
            self._file.seek(0)
            data = self._file.read(self.block, dtype="float32", always_2d=True)
            if data.shape[0] == 0:
                return None
        return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)

    def _pace(self) -> None:
        rate = self.sample_rate * self.speed  # samples per wall second
        period = self.block / rate
        deadline = time.monotonic()
        while not self._halt.is_set():
            b = self._next_block()
            if b is None:
                break
            deadline += b.shape[0] / rate
            self._ring.write(b)
            delay = deadline - time.monotonic()
            if delay > 0:
                self._halt.wait(min(delay, 4 * period))
        self.exhausted = True

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Realtime: sleep ``seconds`` (less when playing fast: at most a quarter of the ring's duration in wall time).
        Otherwise: fill the ring up to half its capacity (no sleeping)."""
        if self.realtime:
            stop.wait(min(seconds, self._ring.capacity / self.sample_rate / self.speed / 4))
            return
        while not self.exhausted and len(self._ring) + self.block <= self._ring.capacity // 2:
            b = self._next_block()
            if b is None:
                self.exhausted = True
                break
            self._ring.write(b)

    def check(self) -> None:
        """A file never disappears mid-stream (its errors surface as AudioInputError when read)."""

    def reopen(self) -> None:  # pragma: no cover - check() never raises DeviceLost for a file
        pass

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._file is not None:
            self._file.close()
            self._file = None


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    return s[0] if s else type(exc).__name__


def describe_input_devices(sd=None) -> list[dict[str, Any]]:
    """Input devices as dicts (for ``listen --list-devices``)."""
    sd = sd if sd is not None else import_sounddevice()
    return [{"index": d.index, "name": d.name, "channels": d.channels, "default_samplerate": d.default_samplerate}
            for d in input_devices(sd)]
