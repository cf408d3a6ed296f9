"""Simulated recording devices for the synthetic dataset (numpy only).

A device is a fixed, seeded chain, like the TAU Mobile devices (A: reference binaural mic; B, C: phones;
S1-S6: A convolved with measured impulse responses):

``scene -> band limits + microphone colouration (one FFT multiply) -> impulse response (enclosure, S devices)
-> dynamic range compression -> saturation -> noise floor``.

Device characteristics are constants of the device (seeded by its name, not by the dataset seed), so every synthetic
dataset shares the same nine devices. S4-S6 are deliberately outside the range spanned by A, B, C, S1-S3 (narrower
bands, stronger resonances, heavier compression, louder noise), so a classifier that learns device colour as a scene cue
loses accuracy on them, as real systems do on TAU's unseen devices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class DeviceModel:
    """One simulated device. Frequencies in Hz, levels in dB (dBFS for absolute levels)."""

    name: str
    hp_hz: float
    """high-pass corner (4th order)."""
    lp_hz: float | None
    """low-pass corner (6th order), None = none."""
    colour_db: float
    """peak deviation of the seeded microphone colouration (smooth bumps on a log-frequency axis)."""
    n_bumps: int
    """resonances/dips of the colouration."""
    tilt_db_per_oct: float
    """spectral tilt around 1 kHz."""
    ir_ms: float
    """length of the seeded enclosure impulse response (0 = none)."""
    ir_wet: float
    """level of the impulse response's reflections relative to the direct path (0..1)."""
    drc_threshold_db: float
    """compressor threshold, dBFS RMS (0 = no compression)."""
    drc_ratio: float
    """compression ratio (1 = none)."""
    saturation: float
    """tanh drive (0 = linear)."""
    noise_db: float
    """noise floor level, dBFS RMS."""
    noise_tilt_db_per_oct: float
    """colour of the noise floor (negative = hum/rumble-like, positive = hiss)."""


#: The nine TAU Mobile devices. a: reference; b, c: phones; s1-s3 seen simulated; s4-s6 unseen simulated.
DEVICES: dict[str, DeviceModel] = {
    d.name: d for d in (
        DeviceModel(name="a", hp_hz=20, lp_hz=None, colour_db=1.0, n_bumps=2, tilt_db_per_oct=0.0, ir_ms=0,
                    ir_wet=0.0, drc_threshold_db=0, drc_ratio=1.0, saturation=0.0, noise_db=-78,
                    noise_tilt_db_per_oct=-1.0),
        DeviceModel(name="b", hp_hz=130, lp_hz=7000, colour_db=4.0, n_bumps=3, tilt_db_per_oct=1.0, ir_ms=0,
                    ir_wet=0.0, drc_threshold_db=-28, drc_ratio=2.0, saturation=0.0, noise_db=-64,
                    noise_tilt_db_per_oct=1.0),
        DeviceModel(name="c", hp_hz=220, lp_hz=6200, colour_db=5.0, n_bumps=3, tilt_db_per_oct=-1.0, ir_ms=0,
                    ir_wet=0.0, drc_threshold_db=-30, drc_ratio=3.0, saturation=0.0, noise_db=-60,
                    noise_tilt_db_per_oct=0.0),
        DeviceModel(name="s1", hp_hz=80, lp_hz=7600, colour_db=4.0, n_bumps=4, tilt_db_per_oct=0.5, ir_ms=4,
                    ir_wet=0.5, drc_threshold_db=-26, drc_ratio=2.5, saturation=0.0, noise_db=-62,
                    noise_tilt_db_per_oct=-2.0),
        DeviceModel(name="s2", hp_hz=260, lp_hz=7200, colour_db=5.0, n_bumps=4, tilt_db_per_oct=-0.5, ir_ms=6,
                    ir_wet=0.5, drc_threshold_db=-30, drc_ratio=4.0, saturation=0.0, noise_db=-56,
                    noise_tilt_db_per_oct=0.0),
        DeviceModel(name="s3", hp_hz=100, lp_hz=5600, colour_db=6.0, n_bumps=4, tilt_db_per_oct=1.5, ir_ms=3,
                    ir_wet=0.4, drc_threshold_db=-24, drc_ratio=2.0, saturation=0.2, noise_db=-60,
                    noise_tilt_db_per_oct=1.0),
        DeviceModel(name="s4", hp_hz=260, lp_hz=5300, colour_db=6.0, n_bumps=5, tilt_db_per_oct=-1.5, ir_ms=8,
                    ir_wet=0.7, drc_threshold_db=-32, drc_ratio=4.0, saturation=0.2, noise_db=-56,
                    noise_tilt_db_per_oct=-3.0),
        DeviceModel(name="s5", hp_hz=60, lp_hz=4800, colour_db=6.0, n_bumps=5, tilt_db_per_oct=2.0, ir_ms=5,
                    ir_wet=0.6, drc_threshold_db=-30, drc_ratio=3.0, saturation=0.0, noise_db=-55,
                    noise_tilt_db_per_oct=3.0),
        DeviceModel(name="s6", hp_hz=280, lp_hz=7800, colour_db=7.0, n_bumps=3, tilt_db_per_oct=-2.0, ir_ms=20,
                    ir_wet=0.7, drc_threshold_db=-34, drc_ratio=5.0, saturation=0.4, noise_db=-54,
                    noise_tilt_db_per_oct=-1.0),
    )
}


def _device_rng(name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"edge-asc-device-{name}".encode()).digest()[:8],
                                                "little"))


def device_response_db(dev: DeviceModel, freqs: np.ndarray) -> np.ndarray:
    """Magnitude response of the device's microphone + band limits in dB at ``freqs`` (Hz), ``float64[len(freqs)]``."""
    rng = _device_rng(dev.name)
    f = np.maximum(freqs, 1.0)
    db = -10 * np.log10(1 + (dev.hp_hz / f) ** 8)
    if dev.lp_hz is not None:
        db += -10 * np.log10(1 + (f / dev.lp_hz) ** 12)
    octs = np.log2(f / 1000.0)
    db += dev.tilt_db_per_oct * np.clip(octs, -4, 3)
    centres = rng.uniform(np.log2(150 / 1000), np.log2(7000 / 1000), dev.n_bumps)
    widths = rng.uniform(0.25, 0.8, dev.n_bumps)
    gains = rng.uniform(-1, 1, dev.n_bumps)
    gains = dev.colour_db * gains / max(1e-9, np.abs(gains).max())
    for c, w, g in zip(centres, widths, gains):
        db += g * np.exp(-0.5 * ((octs - c) / w) ** 2)
    return db


def device_ir(dev: DeviceModel, sample_rate: int) -> np.ndarray | None:
    """Seeded enclosure impulse response ``float64[L]`` (direct path + decaying reflections), or None."""
    if dev.ir_ms <= 0:
        return None
    rng = _device_rng(dev.name + "-ir")
    n = max(2, int(dev.ir_ms * 1e-3 * sample_rate))
    t = np.arange(n) / n
    ir = rng.standard_normal(n) * np.exp(-4.0 * t) * dev.ir_wet / np.sqrt(n / 8)
    ir[0] = 1.0
    return ir


class DeviceChain:
    """A device prepared for one clip length and sample rate (responses computed once, reused for every clip)."""

    def __init__(self, dev: DeviceModel, n_samples: int, sample_rate: int) -> None:
        self.dev = dev
        self.n = n_samples
        self.sr = sample_rate
        ir = device_ir(dev, sample_rate)
        self.ir_len = 0 if ir is None else len(ir)
        self.nfft = n_samples + self.ir_len + (n_samples + self.ir_len) % 2
        freqs = np.fft.rfftfreq(self.nfft, 1 / sample_rate)
        h = 10 ** (device_response_db(dev, freqs) / 20)
        if ir is not None:
            h = h * np.fft.rfft(ir, self.nfft)
        self.h = h
        nf = np.fft.rfftfreq(n_samples, 1 / sample_rate)
        self.noise_mag = 2.0 ** (dev.noise_tilt_db_per_oct / 6.0 * np.log2(np.maximum(nf, 50.0) / 1000.0))

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Record ``x`` (``float64[n]``, full scale 1.0) with this device; returns ``float64[n]``."""
        d = self.dev
        y = np.fft.irfft(np.fft.rfft(x, self.nfft) * self.h, self.nfft)[: self.n]
        if d.drc_ratio > 1.0:
            y = compress(y, self.sr, d.drc_threshold_db, d.drc_ratio)
        if d.saturation > 0:
            g = 1.0 + 4.0 * d.saturation
            y = np.tanh(g * y) / g
        noise = coloured_noise(rng, self.n, self.noise_mag)
        return y + noise * 10 ** ((d.noise_db + rng.uniform(-2, 2)) / 20)


def coloured_noise(rng: np.random.Generator, n: int, mag: np.ndarray) -> np.ndarray:
    """Gaussian noise of length ``n`` with magnitude spectrum ``mag`` (``len(mag) == n // 2 + 1``), unit RMS."""
    spec = (rng.standard_normal(mag.shape[0]) + 1j * rng.standard_normal(mag.shape[0])) * mag
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt(np.mean(y * y)) + 1e-12)


def compress(x: np.ndarray, sample_rate: int, threshold_db: float, ratio: float, block_ms: float = 10.0) -> np.ndarray:
    """Feed-forward RMS compressor with ~10 ms blocks and linear gain interpolation; ``float64[n] -> float64[n]``."""
    n = x.shape[0]
    b = max(1, int(sample_rate * block_ms * 1e-3))
    nb = -(-n // b)
    pad = np.zeros(nb * b)
    pad[:n] = x
    rms_db = 10 * np.log10(np.mean(pad.reshape(nb, b) ** 2, axis=1) + 1e-12)
    gain_db = -(1 - 1 / ratio) * np.maximum(0.0, rms_db - threshold_db)
    # attack fast, release slow: running minimum over 3 blocks, then a short moving average
    g = np.minimum.reduce([gain_db, np.r_[gain_db[:1], gain_db[:-1]], np.r_[gain_db[:2], gain_db[:-2]]])
    g = np.convolve(np.r_[np.full(2, g[0]), g, np.full(2, g[-1])], np.ones(5) / 5, mode="valid")
    centres = (np.arange(nb) + 0.5) * b
    gain = np.interp(np.arange(n), centres, g)
    return x * 10 ** (gain / 20)


def dir_family(n: int = 32, seed: int = 0) -> list[DeviceModel]:
    """A family of ``n`` random devices of the generator's kind, for device impulse response (DIR) augmentation.

    Each draws its band limits, colouration, tilt and enclosure IR uniformly from ranges that span the nine
    :data:`DEVICES` (high-pass 20-300 Hz, low-pass none or 4.5-8 kHz, colouration 1-7 dB with 2-5 bumps, tilt
    -2..2 dB/octave, enclosure IR 0-20 ms); the colouration itself is seeded by the name ``dir{seed}-{i}``, so no
    member is one of the nine (whose colourations are seeded by their own names). Only the linear part of the chain
    (:func:`linear_impulse_response`) is used for augmentation: compression, saturation and noise are not filters.
    """
    rng = np.random.default_rng([seed, 0x0D1E])
    out = []
    for i in range(n):
        ir_ms = float(rng.choice([0.0, rng.uniform(2, 20)]))
        out.append(DeviceModel(
            name=f"dir{seed}-{i}", hp_hz=float(rng.uniform(20, 300)),
            lp_hz=None if rng.random() < 0.15 else float(rng.uniform(4500, 8000)),
            colour_db=float(rng.uniform(1, 7)), n_bumps=int(rng.integers(2, 6)),
            tilt_db_per_oct=float(rng.uniform(-2, 2)), ir_ms=ir_ms,
            ir_wet=float(rng.uniform(0.3, 0.7)) if ir_ms else 0.0,
            drc_threshold_db=0, drc_ratio=1.0, saturation=0.0, noise_db=-90, noise_tilt_db_per_oct=0.0))
    return out


def linear_impulse_response(dev: DeviceModel, sample_rate: int, length: int | None = None) -> np.ndarray:
    """The linear part of ``dev``'s chain (band limits + microphone colouration + enclosure IR) as an impulse
    response ``float64[length]`` (default: 64 ms of samples): the zero-phase response of
    :func:`device_response_db` times the enclosure IR's spectrum, made causal by a half-length delay and tapered by a
    Hann window (which smooths the response over about ``2 * sample_rate / length`` Hz)."""
    n = int(length or round(0.064 * sample_rate))
    ir = device_ir(dev, sample_rate)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    h = 10 ** (device_response_db(dev, freqs) / 20)
    if ir is not None:
        h = h * np.fft.rfft(ir[:n], n)
    y = np.roll(np.fft.irfft(h, n), n // 2)
    return y * np.hanning(n)
