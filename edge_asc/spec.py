"""Boundary contracts: the front-end specification and the model card.

Device-safe: imports only the standard library and numpy. Both dataclasses are frozen and keyword-only, validate in
``__post_init__``, and round-trip through JSON, because they travel inside checkpoints and inside the exported
``.tflite`` file (see :mod:`edge_asc.tflite_meta`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

#: The 10 TAU Urban Acoustic Scenes 2020/2022 Mobile labels, in the order used by the DCASE baselines.
TAU_LABELS: tuple[str, ...] = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)

SPEC_SCHEMA_VERSION = 1
MODEL_CARD_SCHEMA_VERSION = 1


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class FrontendSpec:
    """Everything needed to turn audio into model features, identically offline, in training and live.

    Features are log-mel power spectra computed with ``center=False`` framing (frame ``t`` covers samples
    ``[t*hop_length, t*hop_length + n_fft)``), so that a streaming front end and the offline one agree exactly.

    Log transform: ``10*log10(max(mel_power, amin))`` in dB with a fixed reference of 1.0 and a fixed floor
    ``amin`` (no per-clip ``ref=max``, no ``top_db``: per-clip normalisation cannot stream).

    Deltas: with ``deltas == 2`` the output has 3 channels (log-mel, delta, delta-delta), each a Savitzky-Golay
    derivative of the log-mel over ``delta_width`` frames (librosa ``feature.delta`` with ``order`` 1 and 2), with
    'valid' edges: ``(delta_width - 1) // 2`` frames are dropped at each end of a clip, and a stream emits a frame
    that many hops late. This is why the paper's 431 frames become 423. With ``deltas == 0`` there is 1 channel.
    """

    sample_rate: int = 16_000
    """Hz; audio is resampled to this before framing."""
    n_fft: int = 512
    """samples per FFT frame."""
    win_length: int = 512
    """samples of the analysis window (<= n_fft, zero-padded to n_fft, centred, as librosa does)."""
    hop_length: int = 256
    """samples between frames."""
    window: str = "hann"
    """window function: 'hann' (periodic) or 'hamming' (periodic)."""
    n_mels: int = 64
    """number of mel bands."""
    fmin: float = 0.0
    """Hz, lower edge of the lowest mel band."""
    fmax: float | None = None
    """Hz, upper edge of the highest band; None means sample_rate / 2."""
    mel_htk: bool = False
    """mel scale: False = Slaney (librosa default), True = HTK."""
    mel_norm: str | None = "slaney"
    """mel filter normalisation: 'slaney' (area-normalised, librosa default) or None."""
    power: float = 2.0
    """exponent of the STFT magnitude (2 = power)."""
    amin: float = 1e-10
    """floor applied to mel power before the log (so the floor is 10*log10(amin) dB = -100 dB by default)."""
    deltas: int = 0
    """0: log-mel only (1 channel); 2: log-mel + delta + delta-delta (3 channels)."""
    delta_width: int = 9
    """frames of the Savitzky-Golay delta window (odd, >= 3)."""
    norm_mean: tuple[float, ...] = (0.0,)
    """dB, per channel; model input is (feature - mean) / std. One value per channel (or one for all)."""
    norm_std: tuple[float, ...] = (1.0,)
    """dB, per channel, > 0."""

    def __post_init__(self) -> None:
        _check(isinstance(self.sample_rate, int) and 1000 <= self.sample_rate <= 384_000,
               f"sample_rate must be an integer in [1000, 384000] Hz, got {self.sample_rate!r}")
        _check(isinstance(self.n_fft, int) and 16 <= self.n_fft <= 65536,
               f"n_fft must be an integer in [16, 65536], got {self.n_fft!r}")
        _check(isinstance(self.win_length, int) and 1 <= self.win_length <= self.n_fft,
               f"win_length must be an integer in [1, n_fft={self.n_fft}], got {self.win_length!r}")
        _check(isinstance(self.hop_length, int) and 1 <= self.hop_length <= self.n_fft,
               f"hop_length must be an integer in [1, n_fft={self.n_fft}], got {self.hop_length!r}")
        _check(self.window in ("hann", "hamming"), f"window must be 'hann' or 'hamming', got {self.window!r}")
        _check(isinstance(self.n_mels, int) and 1 <= self.n_mels <= 1024,
               f"n_mels must be an integer in [1, 1024], got {self.n_mels!r}")
        nyq = self.sample_rate / 2
        _check(0.0 <= self.fmin < self.fmax_hz <= nyq,
               f"need 0 <= fmin < fmax <= sample_rate/2 = {nyq} Hz, got fmin={self.fmin}, fmax={self.fmax_hz}")
        _check(self.mel_norm in ("slaney", None), f"mel_norm must be 'slaney' or None, got {self.mel_norm!r}")
        _check(self.power in (1.0, 2.0), f"power must be 1.0 or 2.0, got {self.power!r}")
        _check(0.0 < self.amin < 1.0, f"amin must be in (0, 1), got {self.amin!r}")
        _check(self.deltas in (0, 2), f"deltas must be 0 or 2, got {self.deltas!r}")
        _check(isinstance(self.delta_width, int) and self.delta_width >= 3 and self.delta_width % 2 == 1,
               f"delta_width must be an odd integer >= 3, got {self.delta_width!r}")
        object.__setattr__(self, "norm_mean", tuple(float(v) for v in self.norm_mean))
        object.__setattr__(self, "norm_std", tuple(float(v) for v in self.norm_std))
        _check(len(self.norm_mean) in (1, self.channels) and len(self.norm_std) in (1, self.channels),
               f"norm_mean/norm_std need 1 or {self.channels} values, got {len(self.norm_mean)}/{len(self.norm_std)}")
        _check(all(math.isfinite(v) for v in self.norm_mean), "norm_mean values must be finite")
        _check(all(math.isfinite(v) and v > 0 for v in self.norm_std), "norm_std values must be finite and > 0")

    # ---- derived quantities -------------------------------------------------------------------------------
    @property
    def fmax_hz(self) -> float:
        """Upper mel edge in Hz (``fmax`` or Nyquist)."""
        return float(self.sample_rate / 2 if self.fmax is None else self.fmax)

    @property
    def channels(self) -> int:
        """Feature channels: 1 (log-mel) or 3 (log-mel, delta, delta-delta)."""
        return 1 if self.deltas == 0 else 3

    @property
    def delta_pad(self) -> int:
        """Frames lost at each clip edge (and the stream's look-ahead in frames) because of 'valid' deltas."""
        return 0 if self.deltas == 0 else (self.delta_width - 1) // 2

    def n_frames(self, n_samples: int) -> int:
        """Output frames for a clip of ``n_samples`` samples (after 'valid' delta edges); may be 0."""
        if n_samples < self.n_fft:
            return 0
        return max(0, 1 + (n_samples - self.n_fft) // self.hop_length - 2 * self.delta_pad)

    def samples_for_frames(self, n_frames: int) -> int:
        """Smallest number of samples that yields ``n_frames`` output frames."""
        if n_frames <= 0:
            return 0
        return self.n_fft + (n_frames - 1 + 2 * self.delta_pad) * self.hop_length

    def seconds_for_frames(self, n_frames: int) -> float:
        """Duration in seconds of the audio that yields ``n_frames`` output frames."""
        return self.samples_for_frames(n_frames) / self.sample_rate

    def frames_for_seconds(self, seconds: float) -> int:
        """Output frames produced by ``seconds`` of audio."""
        return self.n_frames(round(float(seconds) * self.sample_rate))

    # ---- serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["norm_mean"] = list(self.norm_mean)
        d["norm_std"] = list(self.norm_std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FrontendSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown FrontendSpec field(s) {unknown}: the file was written by a newer edge-asc?")
        kw = dict(d)
        for k in ("norm_mean", "norm_std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> FrontendSpec:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"FrontendSpec JSON is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> FrontendSpec:
        return dataclasses.replace(self, **changes)

    def feature_hash(self) -> str:
        """sha256 (16 hex chars) of the fields that change the un-normalised features (not norm_mean/std).

        Used to key feature caches and calibration sets.
        """
        d = self.to_dict()
        d.pop("norm_mean")
        d.pop("norm_std")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def spec_hash(self) -> str:
        """sha256 (16 hex chars) of all fields, normalisation included."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


#: Named front-end presets.
#:
#: ``paper``: Shao et al. 2024 — 44.1 kHz, 2048-point Hann FFT, hop 1024, 256 mels, log-mel + delta + delta-delta.
#: A 10-s clip gives 429 STFT frames with center=False (the paper's 431 used centred framing) and 421 frames after
#: 'valid' deltas; training crops 400.
#:
#: ``edge``: for a 1-s window on a microcontroller-class budget — 16 kHz, 512-point FFT (32 ms), hop 256 (16 ms),
#: 64 Slaney mels up to 8 kHz, log-mel only. A 1-s window is 61 frames (15,872 samples, 0.992 s).
#:
#: ``micro``: for a wearable's duty cycle — ``edge`` at a 32-ms hop (512 samples: frames side by side) and 40 mels.
#: Half the STFT frames per second of ``edge`` and 40 instead of 64 mel bands: a third of the model's cells per
#: second, so about a third of its work. A 1-s window is 31 frames (15,872 samples, 0.992 s).
PRESETS: dict[str, FrontendSpec] = {
    "paper": FrontendSpec(
        sample_rate=44_100, n_fft=2048, win_length=2048, hop_length=1024, n_mels=256, fmin=0.0, fmax=None,
        deltas=2, delta_width=9, norm_mean=(0.0,), norm_std=(1.0,),
    ),
    "edge": FrontendSpec(
        sample_rate=16_000, n_fft=512, win_length=512, hop_length=256, n_mels=64, fmin=0.0, fmax=None,
        deltas=0, norm_mean=(0.0,), norm_std=(1.0,),
    ),
    "micro": FrontendSpec(
        sample_rate=16_000, n_fft=512, win_length=512, hop_length=512, n_mels=40, fmin=0.0, fmax=None,
        deltas=0, norm_mean=(0.0,), norm_std=(1.0,),
    ),
}


def frontend_preset(name: str) -> FrontendSpec:
    """Return the named :data:`PRESETS` entry, or raise :class:`ConfigError` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown front-end preset {name!r}: choose one of {sorted(PRESETS)}") from None


def frontend_for_model(base: FrontendSpec, *, n_mels: int, channels: int) -> FrontendSpec:
    """The front end ``base`` adapted to a model that takes ``channels`` x ``n_mels`` features.

    A model preset names a front-end preset (``ModelPreset.frontend``); a preset string may change the model's
    ``n_mels`` or ``in_channels`` (``edge:n_mels=32``, see :func:`edge_asc.model.resolve_preset`), and this is the
    front end that feeds it: ``base`` with ``n_mels`` mel bands over the same ``[fmin, fmax]`` and, for the channels,
    ``deltas=0`` (1 channel: log-mel) or ``deltas=2`` keeping ``base.delta_width`` (3 channels: log-mel, delta,
    delta-delta). Sample rate, FFT, hop, window, mel scale, log floor and normalisation are kept. The model's window
    length (``n_frames``) is not part of the spec: it is the checkpoint's and model card's ``window_frames``,
    covering ``base.seconds_for_frames(n_frames)`` seconds of audio. Returns ``base`` itself when nothing changes.

    Raises:
        ConfigError: ``channels`` other than 1 or 3, ``n_mels`` outside [1, 1024], or ``base``'s norm_mean/norm_std
            having neither 1 nor ``channels`` values.
    """
    if channels not in (1, 3):
        raise ConfigError(f"no front end gives {channels} feature channels: use 1 (log-mel) or 3 "
                          "(log-mel, delta, delta-delta)")
    deltas = 0 if channels == 1 else 2
    if (base.n_mels, base.deltas) == (n_mels, deltas):
        return base
    return base.replace(n_mels=n_mels, deltas=deltas)


@dataclass(frozen=True, kw_only=True)
class QuantParams:
    """Affine quantisation of one tensor: ``real = scale * (q - zero_point)``; ``dtype`` is 'int8' or 'float32'."""

    dtype: str = "float32"
    scale: float = 1.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        _check(self.dtype in ("int8", "uint8", "int16", "float32"), f"unsupported tensor dtype {self.dtype!r}")
        _check(math.isfinite(self.scale) and self.scale > 0, f"quantisation scale must be > 0, got {self.scale}")


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What an exported model says about itself; embedded in the ``.tflite`` and required by the runtime.

    ``input_layout`` names the input tensor's axes: 'NHWC' means ``[1, n_mels, window_frames, channels]``
    (mel bins as H, time as W, feature channels last, as onnx2tf produces from an NCHW PyTorch model).
    """

    schema_version: int = MODEL_CARD_SCHEMA_VERSION
    labels: tuple[str, ...] = TAU_LABELS
    frontend: FrontendSpec = field(default_factory=lambda: PRESETS["edge"])
    window_frames: int = 61
    """model input length in output frames of the front end."""
    input_layout: str = "NHWC"
    input_quant: QuantParams = field(default_factory=QuantParams)
    output_quant: QuantParams = field(default_factory=QuantParams)
    output_kind: str = "logits"
    """'logits' (softmax applied by the runtime) or 'probabilities'."""
    model_preset: str = ""
    model_config: Mapping[str, Any] = field(default_factory=dict)
    param_count: int = 0
    macs_per_inference: int = 0
    training_run: str = ""
    calibration_sha256: str = ""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """exporter versions, dates, source checkpoint hash..."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        _check(len(self.labels) >= 2, f"a model card needs at least 2 labels, got {len(self.labels)}")
        _check(len(set(self.labels)) == len(self.labels), f"duplicate labels in model card: {self.labels}")
        _check(isinstance(self.window_frames, int) and self.window_frames >= 1,
               f"window_frames must be a positive integer, got {self.window_frames!r}")
        _check(self.input_layout in ("NHWC", "NCHW"), f"input_layout must be NHWC or NCHW, got {self.input_layout!r}")
        _check(self.output_kind in ("logits", "probabilities"),
               f"output_kind must be 'logits' or 'probabilities', got {self.output_kind!r}")

    @property
    def window_seconds(self) -> float:
        """Seconds of audio in one model window."""
        return self.frontend.seconds_for_frames(self.window_frames)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Expected input tensor shape, batch 1."""
        f = self.frontend
        if self.input_layout == "NHWC":
            return (1, f.n_mels, self.window_frames, f.channels)
        return (1, f.channels, f.n_mels, self.window_frames)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "labels": list(self.labels),
            "frontend": self.frontend.to_dict(),
            "window_frames": self.window_frames,
            "window_seconds": self.window_seconds,
            "input_layout": self.input_layout,
            "input_shape": list(self.input_shape),
            "input_quant": dataclasses.asdict(self.input_quant),
            "output_quant": dataclasses.asdict(self.output_quant),
            "output_kind": self.output_kind,
            "model_preset": self.model_preset,
            "model_config": dict(self.model_config),
            "param_count": self.param_count,
            "macs_per_inference": self.macs_per_inference,
            "training_run": self.training_run,
            "calibration_sha256": self.calibration_sha256,
            "provenance": dict(self.provenance),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        d = dict(d)
        version = d.get("schema_version")
        if version != MODEL_CARD_SCHEMA_VERSION:
            raise ConfigError(
                f"model card schema version {version!r} is not supported (this edge-asc reads "
                f"{MODEL_CARD_SCHEMA_VERSION}): re-export the model with this edge-asc version"
            )
        d.pop("window_seconds", None)
        d.pop("input_shape", None)
        try:
            d["frontend"] = FrontendSpec.from_dict(d["frontend"])
            d["input_quant"] = QuantParams(**d.get("input_quant", {}))
            d["output_quant"] = QuantParams(**d.get("output_quant", {}))
            return cls(**d)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"model card is incomplete or malformed: {exc}") from None

    @classmethod
    def from_json(cls, s: str | bytes) -> ModelCard:
        try:
            d = json.loads(s)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"model card is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ConfigError("model card JSON must be an object")
        return cls.from_dict(d)
