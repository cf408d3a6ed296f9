"""Deterministic synthetic acoustic scenes in the exact TAU Urban Acoustic Scenes 2020 Mobile development layout.

Each of the 10 TAU scenes is a recipe: a background texture plus sound events (following the paper's view that a scene
is made of events), every parameter randomised per location and per clip::

    airport          babble + broadband engine swell + announcement chime + PA voice, large hall reverb
    shopping_mall    babble + music (notes on a scale, beat) + footsteps + scanner beeps, large hall reverb
    metro_station    babble + arriving-train rumble/squeal + door beeps + PA voice, very reverberant
    street_pedestrian close babble + footsteps + distant traffic + bicycle bell
    public_square    distant crowd babble + footsteps + fountain + distant traffic + birds
    street_traffic   low rumble + passing-vehicle swells + horns + idling engine
    park             wind gusts + bird chirps (FM sweeps) + distant traffic + distant voices
    bus              diesel engine harmonics + cabin rumble + stop beeps + few voices
    tram             electric motor whine (gliding) + rumble + rail clacks + squeal
    metro            loud broadband rumble + motor whine + fast rail clacks + squeal

airport / shopping_mall and street_pedestrian / public_square share most of their ingredients and differ by events
that are present only in some clips, so they are genuinely confusable. Each location also has its own reverberation
and a broad colouration (surfaces, distance), so the spectral envelope alone is a weak cue and the events carry the
class. Every clip is then "recorded" by one of nine
simulated devices (:mod:`edge_asc.data.devices`). Training uses A, B, C, S1-S3; the evaluate/test split holds every
device, S4-S6 unseen in training, and its locations are disjoint from the training locations, as in TAU.

The output is byte-identical for the same arguments: every clip has its own generator seeded by
``(seed, scene, clip index)`` and files are written as 16-bit PCM.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write_text
from ..errors import DatasetError
from ..spec import TAU_LABELS
from .devices import DEVICES, DeviceChain
from .records import SEEN_DEVICES, TAU_DEVICES

#: The ten cities of TAU Urban Acoustic Scenes 2020 Mobile development.
CITIES: tuple[str, ...] = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague",
                           "stockholm", "vienna")
#: Default fraction of each class's clips in the evaluate split (spread evenly over the nine devices).
EVAL_FRACTION = 0.4
#: Clips per location (the devices of one location are different, like TAU's parallel recordings).
CLIPS_PER_LOCATION = 4
#: Written beside the TAU files; its presence lets a later ``synthesize`` replace the folder.
PROVENANCE_FILE = "synth.json"
GENERATOR_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# building blocks (all float64, length n, unit-ish RMS)
# ---------------------------------------------------------------------------------------------------------------
class _Ctx:
    """Per-clip context: sample rate, length, time axis, frequency axis and the clip's generator."""

    def __init__(self, n: int, sr: int, rng: np.random.Generator) -> None:
        self.n, self.sr, self.rng = n, sr, rng
        self.t = np.arange(n) / sr
        self.f = np.fft.rfftfreq(n, 1 / sr)

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


def _rms_norm(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _band(f: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
    """Smooth band-pass magnitude (``order`` per side), ``lo``/``hi`` in Hz."""
    f = np.maximum(f, 1.0)
    return 1 / np.sqrt(1 + (lo / f) ** (2 * order)) / np.sqrt(1 + (f / hi) ** (2 * order))


def _noise(c: _Ctx, mag: np.ndarray) -> np.ndarray:
    """Noise with magnitude spectrum ``mag`` on ``c.f``; unit RMS."""
    spec = (c.rng.standard_normal(c.f.shape[0]) + 1j * c.rng.standard_normal(c.f.shape[0])) * mag
    return _rms_norm(np.fft.irfft(spec, c.n))


def _tilt(f: np.ndarray, db_per_oct: float) -> np.ndarray:
    return 2.0 ** (db_per_oct / 6.0 * np.log2(np.maximum(f, 20.0) / 1000.0))


def _slow_env(c: _Ctx, rate_hz: float, depth: float) -> np.ndarray:
    """Smooth random amplitude envelope in [1 - depth, 1]: control points every 1/rate_hz s, cosine-interpolated
    (computed every 16 samples, then linearly interpolated)."""
    k = max(2, math.ceil(c.n / c.sr * rate_hz) + 2)
    pts = 1 - depth * c.rng.random(k)
    tl = np.arange(0, c.n + 16, 16) / c.sr * rate_hz
    i = np.minimum(tl.astype(np.int64), k - 2)
    w = 0.5 - 0.5 * np.cos(np.pi * (tl - i))
    low = pts[i] * (1 - w) + pts[i + 1] * w
    return np.interp(np.arange(c.n) / 16.0, np.arange(low.shape[0]), low)


def _filter(c: _Ctx, x: np.ndarray, mag: np.ndarray) -> np.ndarray:
    return np.fft.irfft(np.fft.rfft(x) * mag, c.n)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (a fast FFT length, much shorter than the next power of two)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _saw(phase: np.ndarray) -> np.ndarray:
    """Sawtooth of a phase in cycles (naive; the aliasing is part of the texture)."""
    return 2.0 * (phase - np.floor(phase)) - 1.0


def _glide(c: _Ctx, f0: float, f1: float, t0: float = 0.0, t1: float | None = None) -> np.ndarray:
    """Phase in cycles of a tone gliding exponentially from f0 to f1 over the clip."""
    dur = c.n / c.sr if t1 is None else t1
    freq = f0 * (f1 / f0) ** np.clip((c.t - t0) / max(dur, 1e-3), 0, 1)
    return np.cumsum(freq) / c.sr


def _place(c: _Ctx, out: np.ndarray, ev: np.ndarray, start: int) -> None:
    """Add ``ev`` into ``out`` at sample ``start`` (clipped at both ends)."""
    a, b = max(start, 0), min(start + ev.shape[0], c.n)
    if b > a:
        out[a:b] += ev[a - start:b - start]


def _env_ad(n: int, attack: int, decay_per_sample: float) -> np.ndarray:
    i = np.arange(n)
    return np.minimum(1.0, (i + 1) / max(attack, 1)) * np.exp(-decay_per_sample * i)


# ---- components --------------------------------------------------------------------------------------------
def background(c: _Ctx, tilt: float, lo: float, hi: float) -> np.ndarray:
    return _noise(c, _tilt(c.f, tilt) * _band(c.f, lo, hi, 1)) * _slow_env(c, 2.0, 0.25)


def rumble(c: _Ctx, fc: float, mod_rate: float = 1.0, depth: float = 0.4) -> np.ndarray:
    return _noise(c, _band(c.f, 20, fc, 2)) * _slow_env(c, mod_rate, depth)


def babble(c: _Ctx, voices: int, formant_shift: float = 1.0, syll_rate: float = 4.0) -> np.ndarray:
    """Crowd of ``voices`` talkers: gliding glottal pulse trains, syllable envelopes, shared formant filter."""
    out = np.zeros(c.n)
    for _ in range(voices):
        f0 = c.u(95, 240)
        f1 = f0 * c.u(0.8, 1.25)
        src = _saw(_glide(c, f0, f1) + c.u(0, 1))
        env = _slow_env(c, syll_rate * c.u(0.7, 1.4), 1.0) ** 2
        out += src * env * c.u(0.3, 1.0)
    formants = np.zeros_like(c.f)
    for fc, bw in ((500, 250), (1500, 500), (2500, 700)):
        fc = fc * formant_shift * c.u(0.85, 1.15)
        formants += np.exp(-0.5 * ((c.f - fc) / bw) ** 2)
    mag = (formants + 0.05) * _band(c.f, 150, 4000, 2)
    return _rms_norm(_filter(c, out, mag))


def voice(c: _Ctx) -> np.ndarray:
    """One loud, band-limited talker (public-address announcement)."""
    return babble(c, 1, formant_shift=c.u(0.9, 1.1), syll_rate=c.u(4, 6)) * _band(c.f, 300, 3400, 3).mean() ** 0


def footsteps(c: _Ctx, rate: float) -> np.ndarray:
    out = np.zeros(c.n)
    step = c.sr / rate
    pos = c.u(0, step)
    fc = c.u(400, 1800)
    while pos < c.n:
        m = int(c.sr * c.u(0.02, 0.05))
        ev = c.rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 5)) * c.u(0.5, 1.0)
        ev *= np.sin(2 * np.pi * fc * np.arange(m) / c.sr)
        _place(c, out, ev, int(pos))
        pos += step * c.u(0.85, 1.15)
    return _rms_norm(out + 1e-9)


def chirps(c: _Ctx, count: int, f_lo: float, f_hi: float) -> np.ndarray:
    """Bird song: trills of short FM sweeps between f_lo and f_hi (Hz)."""
    out = np.zeros(c.n)
    nyq = c.sr / 2 * 0.95
    for _ in range(count):
        start = c.u(-0.05, 0.9) * c.n
        n_notes = int(c.rng.integers(2, 6))
        dur = c.u(0.03, 0.09)
        fa, fb = min(c.u(f_lo, f_hi), nyq), min(c.u(f_lo, f_hi), nyq)
        gap = c.u(0.02, 0.08)
        for k in range(n_notes):
            m = int(dur * c.sr)
            tt = np.arange(m) / c.sr
            freq = fa + (fb - fa) * tt / dur
            ph = 2 * np.pi * np.cumsum(freq) / c.sr
            ev = np.sin(ph) * np.sin(np.pi * tt / dur) ** 2
            _place(c, out, ev, int(start + k * (dur + gap) * c.sr))
    return _rms_norm(out + 1e-9)


def chime(c: _Ctx) -> np.ndarray:
    """Announcement chime: 2-3 bell notes (inharmonic partials, exponential decay) a few hundred ms apart."""
    out = np.zeros(c.n)
    base = c.u(450, 1100)
    start = c.u(-0.2, 0.6) * c.n
    for k, ratio in enumerate((1.0, 0.8, 0.67)[: int(c.rng.integers(2, 4))]):
        m = int(c.sr * 0.6)
        tt = np.arange(m) / c.sr
        f = base * ratio
        ev = sum(a * np.sin(2 * np.pi * f * p * tt) for p, a in ((1, 1.0), (2.76, 0.4), (5.4, 0.2)) if f * p < c.sr / 2)
        _place(c, out, ev * np.exp(-tt * 6), int(start + k * 0.3 * c.sr))
    return _rms_norm(out + 1e-9)


def music(c: _Ctx) -> np.ndarray:
    """Background music: notes of a pentatonic scale (filtered sawtooth + 2 partials) on a tempo, with a kick."""
    out = np.zeros(c.n)
    tempo = c.u(1.6, 2.6)  # beats/s
    beat = c.sr / tempo
    root = c.u(180, 330)
    scale = np.array([0, 2, 4, 7, 9, 12, 14])
    pos = c.u(-0.5, 0) * beat
    while pos < c.n:
        m = int(beat * c.rng.choice([0.5, 1.0]))
        f = root * 2 ** (c.rng.choice(scale) / 12)
        tt = np.arange(m) / c.sr
        ph = f * tt
        ev = (_saw(ph) * 0.3 + np.sin(2 * np.pi * ph) + 0.5 * np.sin(4 * np.pi * ph)) * _env_ad(m, 80, 3.0 / m)
        _place(c, out, ev, int(pos))
        mk = int(0.12 * c.sr)
        tk = np.arange(mk) / c.sr
        kick = np.sin(2 * np.pi * (60 * tk + 150 * (1 - np.exp(-tk * 30)) / 30)) * np.exp(-tk * 30) * 1.5
        _place(c, out, kick, int(pos))
        pos += m
    return _rms_norm(out + 1e-9)


def beeps(c: _Ctx) -> np.ndarray:
    out = np.zeros(c.n)
    f = c.u(900, 3000)
    dur, gap = c.u(0.05, 0.15), c.u(0.05, 0.2)
    start = c.u(-0.1, 0.7) * c.n
    m = int(dur * c.sr)
    tt = np.arange(m) / c.sr
    tone = np.sin(2 * np.pi * f * tt) * np.minimum(1, np.minimum(tt, dur - tt) * 400)
    for k in range(int(c.rng.integers(1, 4))):
        _place(c, out, tone, int(start + k * (dur + gap) * c.sr))
    return _rms_norm(out + 1e-9)


def engine_harmonics(c: _Ctx, f0_lo: float, f0_hi: float, glide: float, cutoff: float) -> np.ndarray:
    """Engine/motor: sawtooth with a gliding fundamental, low-passed at ``cutoff`` Hz, slight roughness."""
    f0 = c.u(f0_lo, f0_hi)
    f1 = f0 * c.u(1 / glide, glide)
    x = _saw(_glide(c, f0, f1) + c.u(0, 1)) + 0.4 * _saw(_glide(c, 2.01 * f0, 2.01 * f1))
    x *= 1 + 0.2 * np.sin(2 * np.pi * c.u(4, 12) * c.t)
    return _rms_norm(_filter(c, x, _band(c.f, 0.5 * f0_lo, cutoff, 2)))


def passby(c: _Ctx, count: int) -> np.ndarray:
    """Passing vehicles: low-passed noise with a Gaussian swell plus a Doppler-falling engine tone."""
    out = np.zeros(c.n)
    dur = c.n / c.sr
    for _ in range(count):
        tc, w = c.u(-0.3, 1.3) * dur, c.u(0.2, 0.8)
        env = np.exp(-0.5 * ((c.t - tc) / w) ** 2)
        body = _noise(c, _band(c.f, 40, c.u(600, 2500), 2))
        f0 = c.u(70, 160)
        dop = f0 * (1 + 0.08 * np.tanh(-(c.t - tc) / (0.5 * w)))
        tone = _saw(np.cumsum(dop) / c.sr) * 0.4
        out += (body + tone) * env
    return _rms_norm(out + 1e-9)


def horn(c: _Ctx) -> np.ndarray:
    out = np.zeros(c.n)
    f = c.u(280, 520)
    m = int(c.u(0.15, 0.6) * c.sr)
    tt = np.arange(m) / c.sr
    ev = (_saw(f * tt) + 0.8 * _saw(1.26 * f * tt)) * np.minimum(1, np.minimum(tt, tt[-1] - tt) * 60)
    _place(c, out, ev, int(c.u(-0.2, 0.8) * c.n))
    return _rms_norm(_filter(c, out, _band(c.f, 200, 4000, 1)) + 1e-9)


def clacks(c: _Ctx, interval: float) -> np.ndarray:
    """Rail joints: pairs of short resonant impacts every ``interval`` s."""
    out = np.zeros(c.n)
    fc = c.u(300, 1500)
    pos = c.u(0, interval) * c.sr
    pair = c.u(0.06, 0.16) * c.sr
    while pos < c.n:
        for off in (0.0, pair):
            m = int(0.03 * c.sr)
            n = np.arange(m)
            ev = c.rng.standard_normal(m) * np.exp(-n / (m / 6)) * np.sin(2 * np.pi * fc * n / c.sr)
            _place(c, out, ev, int(pos + off))
        pos += interval * c.sr * c.u(0.9, 1.1)
    return _rms_norm(out + 1e-9)


def squeal(c: _Ctx) -> np.ndarray:
    f = c.u(1800, min(5000, c.sr / 2 * 0.8))
    vib = c.u(3, 8)
    ph = np.cumsum(f * (1 + 0.01 * np.sin(2 * np.pi * vib * c.t))) / c.sr
    env = np.exp(-0.5 * ((c.t - c.u(0, 1) * c.n / c.sr) / c.u(0.15, 0.5)) ** 2)
    return _rms_norm(np.sin(2 * np.pi * ph) * env + 1e-9)


def wind(c: _Ctx) -> np.ndarray:
    return _noise(c, _band(c.f, 20, c.u(200, 700), 1)) * _slow_env(c, c.u(1, 3), 0.9)


def fountain(c: _Ctx) -> np.ndarray:
    lo = c.u(1200, 2500)
    return _noise(c, _band(c.f, lo, min(lo * 4, c.sr / 2 * 0.9), 2)) * _slow_env(c, 8, 0.3)


def reverb(c: _Ctx, x: np.ndarray, rt60: float, wet: float) -> np.ndarray:
    """Exponentially decaying noise tail (RT60 in s) mixed at ``wet`` with the dry signal; length kept."""
    m = int(min(rt60, 1.0) * c.sr)
    if m < 8 or wet <= 0:
        return x
    tt = np.arange(m) / c.sr
    ir = c.rng.standard_normal(m) * np.exp(-6.9 * tt / rt60)
    ir[: int(0.005 * c.sr)] = 0.0
    nfft = _fast_len(c.n + m)
    tail = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[: c.n]
    return x + wet * _rms_norm(tail + 1e-12) * np.sqrt(np.mean(x * x))


# ---------------------------------------------------------------------------------------------------------------
# scene recipes
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Location:
    """Location-level parameters shared by the clips of one location (drawn once per location)."""

    tilt: float
    """background spectral tilt, dB/octave."""
    bg_lo: float
    bg_hi: float
    """background band, Hz."""
    rt60: float
    """reverberation time, s."""
    wet: float
    """reverberant level relative to dry."""
    level_db: float
    """overall recording level offset, dB."""
    density: float
    """event density multiplier (busy vs quiet location)."""
    eq_seed: int
    """seed of the location's colouration (surfaces, distance): a few broad +-6 dB bumps over the whole scene."""


_INDOOR_HALL = {"tilt": (-5.0, -1.5), "bg_lo": (60, 200), "bg_hi": (3000, 7000), "rt60": (0.6, 1.6), "wet": (0.4, 1.0)}
_OUTDOOR = {"tilt": (-6.0, -2.0), "bg_lo": (30, 120), "bg_hi": (2500, 7000), "rt60": (0.05, 0.3), "wet": (0.0, 0.3)}
_VEHICLE = {"tilt": (-7.0, -3.0), "bg_lo": (20, 80), "bg_hi": (1500, 5000), "rt60": (0.1, 0.35), "wet": (0.1, 0.4)}
_SCENE_ACOUSTICS: dict[str, dict] = {
    "airport": _INDOOR_HALL, "shopping_mall": _INDOOR_HALL,
    "metro_station": {**_INDOOR_HALL, "rt60": (1.0, 2.0), "wet": (0.6, 1.2)},
    "street_pedestrian": _OUTDOOR, "public_square": _OUTDOOR, "street_traffic": _OUTDOOR,
    "park": {**_OUTDOOR, "tilt": (-7.0, -3.0), "bg_hi": (2000, 8000)},
    "bus": _VEHICLE, "tram": _VEHICLE, "metro": {**_VEHICLE, "tilt": (-5.0, -2.0)},
}


def draw_location(label: str, rng: np.random.Generator) -> Location:
    a = _SCENE_ACOUSTICS[label]

    def u(k: str) -> float:
        return float(rng.uniform(*a[k]))

    return Location(tilt=u("tilt"), bg_lo=u("bg_lo"), bg_hi=u("bg_hi"), rt60=u("rt60"), wet=u("wet"),
                    level_db=float(rng.uniform(-6, 6)), density=float(rng.uniform(0.6, 1.4)),
                    eq_seed=int(rng.integers(2**31)))


def _location_eq(f: np.ndarray, seed: int) -> np.ndarray:
    """Magnitude of a location's colouration on ``f`` (Hz): 3 broad bumps of up to +-6 dB on a log-frequency axis."""
    r = np.random.default_rng(seed)
    octs = np.log2(np.maximum(f, 20.0) / 1000.0)
    db = np.zeros_like(f)
    for cen, w, g in zip(r.uniform(-3, 2.5, 3), r.uniform(0.5, 1.5, 3), r.uniform(-6, 6, 3)):
        db += g * np.exp(-0.5 * ((octs - cen) / w) ** 2)
    return 10 ** (db / 20)


Layer = tuple[float, np.ndarray]  # (level dB relative to the background, unit-RMS signal)


def _db(c: _Ctx, lo: float, hi: float) -> float:
    return c.u(lo, hi)


def _airport(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, 0, 8), babble(c, int(c.rng.integers(5, 12))))]
    if c.chance(0.5 * loc.density):
        L.append((_db(c, -6, 3), _noise(c, _band(c.f, c.u(150, 400), c.u(1500, 5000), 2)) * _slow_env(c, 0.5, 0.8)))
    if c.chance(0.55):
        L.append((_db(c, -2, 8), chime(c)))
    if c.chance(0.3):
        L.append((_db(c, -2, 6), voice(c)))
    if c.chance(0.3):
        L.append((_db(c, -10, -2), footsteps(c, c.u(1.5, 2.5))))
    return L


def _shopping_mall(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, 0, 8), babble(c, int(c.rng.integers(5, 12))))]
    if c.chance(0.75):
        L.append((_db(c, -6, 3), music(c)))
    if c.chance(0.4 * loc.density):
        L.append((_db(c, -10, -2), footsteps(c, c.u(1.5, 2.5))))
    if c.chance(0.2):
        L.append((_db(c, -6, 2), beeps(c)))
    return L


def _metro_station(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, -4, 5), babble(c, int(c.rng.integers(3, 9))))]
    if c.chance(0.5):
        L.append((_db(c, 0, 10), rumble(c, c.u(200, 700), 0.7, 0.8)))
        if c.chance(0.5):
            L.append((_db(c, -8, 2), squeal(c)))
    if c.chance(0.35):
        L.append((_db(c, -4, 4), beeps(c)))
    if c.chance(0.35):
        L.append((_db(c, -2, 6), voice(c)))
    return L


def _street_pedestrian(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, 0, 8), babble(c, int(c.rng.integers(2, 7)), syll_rate=4.5))]
    if c.chance(0.85):
        L.append((_db(c, -4, 3), footsteps(c, c.u(1.6, 2.4))))
    if c.chance(0.6):
        L.append((_db(c, -6, 2), rumble(c, c.u(150, 500))))
    if c.chance(0.12):
        L.append((_db(c, -4, 4), chime(c)))
    return L


def _public_square(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, -3, 6), babble(c, int(c.rng.integers(6, 14)), syll_rate=3.5))]
    if c.chance(0.4 * loc.density):
        L.append((_db(c, -8, 0), footsteps(c, c.u(1.5, 2.5))))
    if c.chance(0.45):
        L.append((_db(c, -6, 2), fountain(c)))
    if c.chance(0.6):
        L.append((_db(c, -5, 3), rumble(c, c.u(150, 500))))
    if c.chance(0.2):
        L.append((_db(c, -8, 0), chirps(c, int(c.rng.integers(1, 3)), 1500, 4000)))
    return L


def _street_traffic(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, 0, 8), rumble(c, c.u(200, 800), 0.5, 0.5))]
    if c.chance(0.95):
        L.append((_db(c, 0, 8), passby(c, int(c.rng.integers(1, 4)))))
    if c.chance(0.3 * loc.density):
        L.append((_db(c, -4, 6), horn(c)))
    if c.chance(0.35):
        L.append((_db(c, -8, 0), engine_harmonics(c, 25, 45, 1.05, 800)))
    if c.chance(0.2):
        L.append((_db(c, -10, -2), babble(c, 3)))
    return L


def _park(c: _Ctx, loc: Location) -> list[Layer]:
    L: list[Layer] = []
    if c.chance(0.7):
        L.append((_db(c, -2, 8), wind(c)))
    if c.chance(0.9):
        L.append((_db(c, -6, 4), chirps(c, int(c.rng.integers(1, 5)), 2000, 6500)))
    if c.chance(0.5):
        L.append((_db(c, -6, 2), rumble(c, c.u(150, 400))))
    if c.chance(0.3):
        L.append((_db(c, -10, -2), babble(c, int(c.rng.integers(1, 4)))))
    if c.chance(0.15):
        L.append((_db(c, -10, -2), footsteps(c, c.u(1.5, 2.2))))
    return L


def _bus(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, 0, 8), engine_harmonics(c, 22, 55, 1.15, c.u(400, 1200))), (_db(c, -2, 6), rumble(c, c.u(150, 400)))]
    if c.chance(0.4):
        L.append((_db(c, -8, 0), babble(c, int(c.rng.integers(1, 4)))))
    if c.chance(0.25):
        L.append((_db(c, -4, 4), beeps(c)))
    return L


def _tram(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, -2, 6), rumble(c, c.u(200, 600)))]
    if c.chance(0.9):
        L.append((_db(c, -4, 5), engine_harmonics(c, 150, 600, 1.5, c.u(2000, 5000))))
    if c.chance(0.7):
        L.append((_db(c, -4, 4), clacks(c, c.u(0.4, 0.9))))
    if c.chance(0.25):
        L.append((_db(c, -8, 0), squeal(c)))
    if c.chance(0.3):
        L.append((_db(c, -8, 0), babble(c, int(c.rng.integers(1, 4)))))
    return L


def _metro(c: _Ctx, loc: Location) -> list[Layer]:
    L = [(_db(c, 2, 10), rumble(c, c.u(400, 1500), 2.0, 0.4))]
    if c.chance(0.7):
        L.append((_db(c, -4, 4), engine_harmonics(c, 100, 400, 1.6, c.u(1500, 4000))))
    if c.chance(0.9):
        L.append((_db(c, -2, 6), clacks(c, c.u(0.2, 0.45))))
    if c.chance(0.3):
        L.append((_db(c, -6, 2), squeal(c)))
    if c.chance(0.2):
        L.append((_db(c, -10, -2), babble(c, int(c.rng.integers(1, 3)))))
    return L


RECIPES: dict[str, Callable[[_Ctx, Location], list[Layer]]] = {
    "airport": _airport, "bus": _bus, "metro": _metro, "metro_station": _metro_station, "park": _park,
    "public_square": _public_square, "shopping_mall": _shopping_mall, "street_pedestrian": _street_pedestrian,
    "street_traffic": _street_traffic, "tram": _tram,
}
if sorted(RECIPES) != sorted(TAU_LABELS):  # a programming error: every TAU label needs exactly one recipe
    raise RuntimeError(f"synth RECIPES {sorted(RECIPES)} do not match TAU_LABELS {sorted(TAU_LABELS)}")


def render_scene(label: str, loc: Location, n_samples: int, sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
    """One clean scene (before the device): ``float64[n_samples]`` at ``sample_rate`` Hz, RMS about -26 dBFS."""
    c = _Ctx(n_samples, sample_rate, rng)
    tilt = loc.tilt + c.u(-1, 1)
    x = background(c, tilt, loc.bg_lo, loc.bg_hi)
    for level_db, layer in RECIPES[label](c, loc):
        x = x + 10 ** (level_db / 20) * layer
    x = reverb(c, x, loc.rt60 * c.u(0.9, 1.1), loc.wet)
    x = _filter(c, x, _location_eq(c.f, loc.eq_seed))
    target_db = -26 + loc.level_db + c.u(-4, 4)
    return _rms_norm(x) * 10 ** (target_db / 20)


# ---------------------------------------------------------------------------------------------------------------
# dataset plan and writer
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PlannedClip:
    label: str
    index: int
    """clip index within its class (part of the clip's seed)."""
    split: str
    device: str
    city: str
    location: int
    """location number, unique within the dataset."""
    location_index: int
    """location index within its class (part of the location's seed)."""
    segment: int

    @property
    def filename(self) -> str:
        return f"audio/{self.label}-{self.city}-{self.location}-{self.segment}-{self.device}.wav"

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"


def min_clips_per_class() -> int:
    """Smallest ``clips_per_class``: one evaluate clip per device (9) plus one training clip per seen device (6)."""
    return len(TAU_DEVICES) + len(SEEN_DEVICES)


def plan(clips_per_class: int, eval_fraction: float = EVAL_FRACTION) -> list[PlannedClip]:
    """Which clips to make: per class, ``max(1, round(N * eval_fraction / 9))`` evaluate clips per device (all nine)
    and the rest for training, cycling over A, B, C, S1-S3. Locations hold up to :data:`CLIPS_PER_LOCATION` clips
    and never straddle the splits.
    """
    n_min = min_clips_per_class()
    if not isinstance(clips_per_class, int) or clips_per_class < n_min:
        raise DatasetError(f"clips_per_class must be an integer >= {n_min} (every device in both splits), "
                           f"got {clips_per_class!r}")
    per_dev = max(1, round(clips_per_class * eval_fraction / len(TAU_DEVICES)))
    per_dev = min(per_dev, (clips_per_class - len(SEEN_DEVICES)) // len(TAU_DEVICES))
    n_eval = per_dev * len(TAU_DEVICES)
    out: list[PlannedClip] = []
    loc_counter = 0
    for li, label in enumerate(TAU_LABELS):
        devs = [SEEN_DEVICES[i % len(SEEN_DEVICES)] for i in range(clips_per_class - n_eval)]
        devs_eval = [TAU_DEVICES[i % len(TAU_DEVICES)] for i in range(n_eval)]
        idx = 0
        loc_i = 0
        for split, ds in (("train", devs), ("evaluate", devs_eval)):
            for start in range(0, len(ds), CLIPS_PER_LOCATION):
                loc_counter += 1
                city = CITIES[(li * 7 + loc_i * 3) % len(CITIES)]
                for seg, dev in enumerate(ds[start:start + CLIPS_PER_LOCATION]):
                    out.append(PlannedClip(label=label, index=idx, split=split, device=dev, city=city,
                                           location=loc_counter, location_index=loc_i, segment=seg))
                    idx += 1
                loc_i += 1
    return out


def _prepare_out_dir(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise DatasetError(f"{out} exists and is not a folder: choose another --out")
        entries = list(out.iterdir())
        if entries and not (out / PROVENANCE_FILE).is_file():
            raise DatasetError(f"{out} is not empty and was not made by 'edge-asc data synth': choose an empty or "
                               f"new --out folder")
        for name in ("audio", "evaluation_setup"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in ("meta.csv", PROVENANCE_FILE):
            if (out / name).exists():
                (out / name).unlink()
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "evaluation_setup").mkdir(exist_ok=True)


def synthesize(out_dir: str | os.PathLike, *, clips_per_class: int = 100, seconds: float = 1.0,
               sample_rate: int = 16_000, seed: int = 0, eval_fraction: float = EVAL_FRACTION) -> Path:
    """Write a synthetic dataset in the TAU Urban Acoustic Scenes 2020 Mobile development layout.

    Args:
        out_dir: folder to create (or an earlier synthesised folder, which is replaced).
        clips_per_class: clips per scene, >= 15 (see :func:`plan` for the split and device allocation).
        seconds: clip length in s (0.1 .. 60).
        sample_rate: Hz (8000 .. 48000); written as 16-bit PCM WAV.
        seed: dataset seed; the same arguments give byte-identical files.
        eval_fraction: about this fraction of each class goes to the evaluate split (0.1 .. 0.8).

    Returns:
        ``out_dir`` as a Path (``audio/*.wav``, ``meta.csv``, ``evaluation_setup/fold1_{train,evaluate,test}.csv``
        and a ``synth.json`` provenance record).

    Raises:
        DatasetError: arguments out of range, or ``out_dir`` is a non-empty folder not made by this function.
    """
    import soundfile as sf

    if not (isinstance(seconds, (int, float)) and 0.1 <= seconds <= 60):
        raise DatasetError(f"seconds must be in [0.1, 60], got {seconds!r}")
    if not (isinstance(sample_rate, int) and 8000 <= sample_rate <= 48_000):
        raise DatasetError(f"sample_rate must be an integer in [8000, 48000] Hz, got {sample_rate!r}")
    if not (isinstance(seed, int) and 0 <= seed < 2**63):
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.1 <= eval_fraction <= 0.8:
        raise DatasetError(f"eval_fraction must be in [0.1, 0.8], got {eval_fraction!r}")
    clips = plan(clips_per_class, eval_fraction)
    out = Path(out_dir)
    _prepare_out_dir(out)
    n = round(seconds * sample_rate)
    chains = {d: DeviceChain(DEVICES[d], n, sample_rate) for d in TAU_DEVICES}
    label_index = {lab: i for i, lab in enumerate(TAU_LABELS)}
    locations: dict[tuple[str, int], Location] = {}
    for pc in clips:
        li = label_index[pc.label]
        key = (pc.label, pc.location_index)
        if key not in locations:
            locations[key] = draw_location(pc.label, np.random.default_rng([seed, li, 1, pc.location_index]))
        rng = np.random.default_rng([seed, li, 0, pc.index])
        x = render_scene(pc.label, locations[key], n, sample_rate, rng)
        y = chains[pc.device](x, rng)
        peak = float(np.max(np.abs(y)))
        if peak > 0.98:
            y = y * (0.98 / peak)
        buf = io.BytesIO()  # in memory: soundfile's flush() on a real file fsyncs every clip (slow)
        sf.write(buf, y.astype(np.float32), sample_rate, subtype="PCM_16", format="WAV")
        (out / pc.filename).write_bytes(buf.getvalue())
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    meta += [f"{pc.filename}\t{pc.label}\t{pc.identifier}\t{pc.device}" for pc in clips]
    train = ["filename\tscene_label"] + [f"{pc.filename}\t{pc.label}" for pc in clips if pc.split == "train"]
    evaluate = ["filename\tscene_label"] + [f"{pc.filename}\t{pc.label}" for pc in clips if pc.split == "evaluate"]
    test = ["filename"] + [pc.filename for pc in clips if pc.split == "evaluate"]
    atomic_write_text(out / "evaluation_setup" / "fold1_train.csv", "\n".join(train) + "\n")
    atomic_write_text(out / "evaluation_setup" / "fold1_evaluate.csv", "\n".join(evaluate) + "\n")
    atomic_write_text(out / "evaluation_setup" / "fold1_test.csv", "\n".join(test) + "\n")
    atomic_write_text(out / "meta.csv", "\n".join(meta) + "\n")
    prov = {"generator": "edge_asc.data.synth", "version": GENERATOR_VERSION, "clips_per_class": clips_per_class,
            "seconds": seconds, "sample_rate": sample_rate, "seed": seed, "eval_fraction": eval_fraction,
            "clips": len(clips)}
    atomic_write_text(out / PROVENANCE_FILE, json.dumps(prov, indent=2, sort_keys=True) + "\n")
    return out
