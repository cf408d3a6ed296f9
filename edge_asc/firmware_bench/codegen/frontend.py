"""The model's front end in the generated firmware: its FrontendSpec as C tables and sizes.

The C code (``c/ek_frontend.c``) is the streaming log-mel of :mod:`edge_asc.frontend`, fed from an int16 ring buffer
and producing the model's int8 input tensor. Everything it needs from the spec is generated here from
:mod:`edge_asc.frontend`'s own functions: :func:`~edge_asc.frontend.analysis_window` (fixed point, :func:`window_q`
fractional bits), :func:`~edge_asc.frontend.mel_filterbank` (float32, stored sparse: one run of FFT bins per band,
as the Python kernel sums it), :func:`~edge_asc.frontend.delta_coefficients`; the twiddles are computed in double
precision (Q30). Normalisation and quantisation follow :meth:`edge_asc.runtime.Classifier.input_tensor`
(``(f - mean) / std``, ``rint(x / scale) + zero_point``, saturated, in float32), so the int8 tensor differs from the
Python one only where the C log-mel lands on the other side of a rounding edge.

The FFT is our own: a complex radix-2 FFT of ``n_fft / 2`` points plus the real split, in int64 fixed point (float32
and int32 FFTs are 0.15-0.4 dB off the float64 Python front end on a full-scale tone: ``docs/firmware-frontend.md``);
``n_fft`` must be a power of two, which every preset's is. CMSIS-DSP (the ``cmsisdsp`` sdist) would add a build-time
download and include tree to every generated project for one function, with float32 / q31 FFTs of that precision.

Where the spec comes from: the model card embedded in the ``.tflite`` (front end, window frames, input layout), or,
for a file without a card (e.g. ``export_untrained_int8``), a named front-end preset adapted to the input tensor's
``[1, n_mels, frames, channels]`` (:func:`edge_asc.spec.frontend_for_model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError, ModelContractError
from ...spec import FrontendSpec, frontend_for_model, frontend_preset
from .graph import Model

#: the generated files (next to the model's)
FRONTEND_FILES = ("ek_frontend_config.h", "ek_frontend_tables.c")


@dataclass(frozen=True, kw_only=True)
class FrontendPlan:
    """What the generated front end computes.

    Attributes:
        spec: the front end.
        window_frames: feature frames per model window; ``hop_frames`` frames between window starts
            (:func:`edge_asc.frontend.window_starts`).
        layout: the input tensor's axes, 'NHWC' (``[1, n_mels, frames, channels]``) or 'NCHW'.
        scale, zero_point: the model input tensor's quantisation.
        ring_samples: int16 samples in the audio ring (a power of two >= 2 * n_fft).
        source: where the spec came from ('model card' or 'preset NAME').
    """

    spec: FrontendSpec
    window_frames: int
    hop_frames: int
    layout: str
    scale: float
    zero_point: int
    ring_samples: int
    source: str

    @property
    def hop_seconds(self) -> float:
        """Audio time of one STFT hop (one call of the front end per hop)."""
        return self.spec.hop_length / self.spec.sample_rate

    @property
    def stride_seconds(self) -> float:
        """Audio time between two model windows: ``hop_frames`` hops."""
        return self.hop_frames * self.hop_seconds

    def to_json(self) -> dict:
        return {"spec": self.spec.to_dict(), "window_frames": self.window_frames, "hop_frames": self.hop_frames,
                "layout": self.layout, "scale": self.scale, "zero_point": self.zero_point,
                "ring_samples": self.ring_samples, "source": self.source}


def plan_frontend(model: Model, *, card=None, preset: str | None = None, hop_frames: int | None = None
                  ) -> FrontendPlan:
    """The front end of ``model``: from its model card, or from ``preset`` fitted to its input tensor.

    Args:
        model: the graph (its single int8 input tensor is what the front end fills).
        card: the file's :class:`~edge_asc.spec.ModelCard` (None: the file has none).
        preset: a front-end preset name (:data:`edge_asc.spec.PRESETS`), used when ``card`` is None.
        hop_frames: frames between model windows (default: half a window, as the runtime's default).

    Raises:
        ConfigError: no card and no preset, an ``n_fft`` that is not a power of two, or a hop < 1.
        ModelContractError: the model has not exactly one int8 input of the front end's shape.
    """
    from ...frontend import default_hop_frames

    if len(model.inputs) != 1:
        raise ModelContractError(f"the front end feeds one input tensor; the model has {len(model.inputs)}")
    t = model.tensors[model.inputs[0]]
    shape = tuple(int(v) for v in t.shape)
    if t.dtype != "int8" or not t.scales:
        raise ModelContractError(f"the front end produces an int8 input tensor; the model's input is {t.dtype}"
                                 + ("" if t.scales else " without quantisation"))
    if card is not None:
        spec, frames, layout, source = card.frontend, card.window_frames, card.input_layout, "model card"
        want = card.input_shape
    else:
        if preset is None:
            raise ConfigError("the model file has no model card: name its front end (--frontend PRESET, e.g. edge)")
        if len(shape) != 4:
            raise ModelContractError(f"the model's input tensor has shape {list(shape)}: the front end needs "
                                     "[1, n_mels, frames, channels]")
        spec = frontend_for_model(frontend_preset(preset), n_mels=shape[1], channels=shape[3])
        frames, layout, source, want = shape[2], "NHWC", f"preset {preset}", shape
    if shape != tuple(want):
        raise ModelContractError(f"the model's input tensor has shape {list(shape)}, its front end gives "
                                 f"{list(want)} ({layout})")
    n = spec.n_fft
    if n & (n - 1):
        raise ConfigError(f"the firmware front end needs a power-of-two n_fft (its FFT is radix 2), got {n}")
    hop = default_hop_frames(frames) if hop_frames is None else int(hop_frames)
    if hop < 1:
        raise ConfigError(f"hop_frames must be >= 1, got {hop}")
    ring = 1 << max(2 * n - 1, 1).bit_length()
    return FrontendPlan(spec=spec, window_frames=int(frames), hop_frames=hop, layout=layout, scale=t.scale,
                        zero_point=t.zero_point, ring_samples=ring, source=source)


def _floats(vals, per: int = 8) -> str:
    items = [f"{float(np.float32(v))!r}f" for v in np.asarray(vals, dtype=np.float64).reshape(-1)]
    items = [s.replace("inf", "INFINITY") for s in items] or ["0.0f"]
    return ",\n    ".join(", ".join(items[i:i + per]) for i in range(0, len(items), per))


def _ints(vals, per: int = 16) -> str:
    items = [str(int(v)) for v in np.asarray(vals).reshape(-1)] or ["0"]
    return ",\n    ".join(", ".join(items[i:i + per]) for i in range(0, len(items), per))


def window_q(spec: FrontendSpec) -> int:
    """Fractional bits of the firmware's fixed-point window: the largest ``q <= 30`` with
    ``32768 * sum(window) * 2^q <= 2^52``, so that no value of the int64 FFT (``|X[k]| <= sum |x w|``, the split's
    doubled sums and the twiddle products' 2^55 limit) can overflow.

    Raises:
        ConfigError: a window too long for the int64 FFT (no such ``q >= 8``).
    """
    from ...frontend import analysis_window

    q = min(30, 52 - 15 - math.ceil(math.log2(float(analysis_window(spec).sum()))))
    if q < 8:
        raise ConfigError(f"the firmware front end's int64 FFT cannot hold a window of {spec.win_length} samples")
    return q


def mel_runs(spec: FrontendSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mel filterbank as runs: (first FFT bin per band, bins per band (0: empty band), the weights of all runs
    concatenated, float64)."""
    from ...frontend import mel_filterbank

    fb = mel_filterbank(spec)
    starts, lens, weights = [], [], []
    for row in fb:
        nz = np.flatnonzero(row)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        starts.append(lo)
        lens.append(hi - lo)
        weights.append(row[lo:hi])
    return np.asarray(starts), np.asarray(lens), np.concatenate(weights) if weights else np.zeros(0)


def frontend_sources(plan: FrontendPlan) -> dict[str, str]:
    """The generated files of the front end: ``{file name: text}`` (:data:`FRONTEND_FILES`)."""
    from ...frontend import analysis_window, delta_coefficients

    spec = plan.spec
    n, m = spec.n_fft, spec.n_fft // 2
    w = analysis_window(spec)
    wq = window_q(spec)
    window = np.rint(w * 2.0 ** wq).astype(np.int64)  # Q(wq): x * w exact in int64
    k = np.arange(m)
    twiddle = np.rint(np.stack([np.cos(2 * np.pi * k / n), -np.sin(2 * np.pi * k / n)], axis=1) * 2.0 ** 30
                      ).astype(np.int64)  # Q30
    # X is computed as 2^wq * (sum of int16 * w) = 2^(wq + 15) * (edge_asc.frontend's X, [-1, 1] full scale), and
    # the split's bins as 2 X (a factor 4 in the power)
    pow_scale4 = 2.0 ** (-2 * (wq + 15) - 2)
    bits = int(math.log2(m))
    bitrev = [int(f"{i:0{bits}b}"[::-1], 2) if bits else 0 for i in range(m)]
    starts, lens, weights = mel_runs(spec)
    ch = spec.channels
    mean = np.broadcast_to(np.asarray(spec.norm_mean, dtype=np.float64), (ch,))
    std = np.broadcast_to(np.asarray(spec.norm_std, dtype=np.float64), (ch,))
    width = spec.delta_width if spec.deltas else 0
    header = "\n".join([
        "/* Generated by edge-asc firmware from the model's FrontendSpec: do not edit. */",
        f"/* {spec.to_json()} */",
        "#ifndef EK_FRONTEND_CONFIG_H",
        "#define EK_FRONTEND_CONFIG_H",
        "#include <stdint.h>",
        f"#define EK_FE_SAMPLE_RATE {spec.sample_rate}",
        f"#define EK_FE_N_FFT {n}",
        f"#define EK_FE_HOP {spec.hop_length}",
        f"#define EK_FE_N_MELS {spec.n_mels}",
        f"#define EK_FE_CHANNELS {ch}",
        f"#define EK_FE_POWER {int(spec.power)}",
        f"#define EK_FE_AMIN {float(np.float32(spec.amin))!r}f",
        f"#define EK_FE_WQ {wq}",
        f"#define EK_FE_POW_SCALE4 {pow_scale4!r}f",
        f"#define EK_FE_DELTA_WIDTH {width}",
        f"#define EK_FE_WINDOW_FRAMES {plan.window_frames}",
        f"#define EK_FE_HOP_FRAMES {plan.hop_frames}",
        f"#define EK_FE_RING {plan.ring_samples}",
        f"#define EK_FE_NCHW {int(plan.layout == 'NCHW')}",
        f"#define EK_FE_SCALE {plan.scale!r}f",
        f"#define EK_FE_ZERO_POINT {plan.zero_point}",
        f"extern const int32_t ek_fe_analysis[{n}];",
        f"extern const int32_t ek_fe_twiddle[{2 * m}];",
        f"extern const uint16_t ek_fe_bitrev[{m}];",
        f"extern const uint16_t ek_fe_mel_start[{spec.n_mels}];",
        f"extern const uint16_t ek_fe_mel_len[{spec.n_mels}];",
        f"extern const float ek_fe_mel_w[{max(len(weights), 1)}];",
        f"extern const float ek_fe_norm_mean[{ch}];",
        f"extern const float ek_fe_norm_std[{ch}];",
        *([f"extern const float ek_fe_delta_taps[2][{width}];"] if width else []),
        "#endif",
        "",
    ])
    tables = [
        "/* Generated by edge-asc firmware from the model's FrontendSpec (edge_asc.frontend's window, mel filterbank",
        " * and delta taps; window and twiddles in fixed point, the rest float32): do not edit. */",
        '#include "ek_frontend_config.h"',
        f"const int32_t ek_fe_analysis[{n}] = {{\n    {_ints(window)}}};",
        f"const int32_t ek_fe_twiddle[{2 * m}] = {{\n    {_ints(twiddle)}}};",
        f"const uint16_t ek_fe_bitrev[{m}] = {{\n    {_ints(bitrev)}}};",
        f"const uint16_t ek_fe_mel_start[{spec.n_mels}] = {{\n    {_ints(starts)}}};",
        f"const uint16_t ek_fe_mel_len[{spec.n_mels}] = {{\n    {_ints(lens)}}};",
        f"const float ek_fe_mel_w[{max(len(weights), 1)}] = {{\n    {_floats(weights)}}};",
        f"const float ek_fe_norm_mean[{ch}] = {{{_floats(mean)}}};",
        f"const float ek_fe_norm_std[{ch}] = {{{_floats(std)}}};",
    ]
    if width:
        taps = np.stack([delta_coefficients(width, 1), delta_coefficients(width, 2)])
        tables.append(f"const float ek_fe_delta_taps[2][{width}] = {{\n    {{{_floats(taps[0])}}},\n    "
                      f"{{{_floats(taps[1])}}}}};")
    return {"ek_frontend_config.h": header, "ek_frontend_tables.c": "\n".join(tables) + "\n"}


def reference_inputs(plan: FrontendPlan, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the Python front end gives for int16 ``audio``: (features float32[C, n_mels, T] in dB, the model input
    tensors int8[n_windows, input bytes]) at the windows the firmware runs (:func:`edge_asc.frontend.windows`),
    normalised, laid out and quantised as :meth:`edge_asc.runtime.Classifier.input_tensor` does."""
    from ...audio import to_float32
    from ...frontend import normalize, offline, window_starts

    feats = offline(to_float32(np.asarray(audio, dtype=np.int16)), plan.spec)
    starts = window_starts(feats.shape[2], plan.window_frames, plan.hop_frames) \
        if feats.shape[2] >= plan.window_frames else range(0)
    out = []
    for s in starts:
        x = normalize(feats[:, :, s:s + plan.window_frames], plan.spec)
        x = x.transpose(1, 2, 0) if plan.layout == "NHWC" else x
        q = np.clip(np.rint(x / np.float32(plan.scale)) + np.float32(plan.zero_point), -128, 127)
        out.append(q.astype(np.int8).reshape(-1))
    size = plan.window_frames * plan.spec.n_mels * plan.spec.channels
    return feats, (np.stack(out) if out else np.zeros((0, size), np.int8))


def seeded_audio(plan: FrontendPlan, windows: int = 2, seed: int = 0) -> np.ndarray:
    """int16 audio for ``windows`` model windows: seeded noise shaped to fall off with frequency plus a tone, at
    about -12 dBFS, so the mel bands span a wide range of levels."""
    spec = plan.spec
    n = spec.samples_for_frames(plan.window_frames + (windows - 1) * plan.hop_frames)
    rng = np.random.default_rng(seed)
    noise = np.cumsum(rng.standard_normal(n)) * 0.02
    noise -= np.convolve(noise, np.ones(64) / 64, mode="same")  # remove the random walk's drift
    t = np.arange(n) / spec.sample_rate
    x = 0.25 * noise / max(1e-9, float(np.abs(noise).max())) + 0.2 * np.sin(2 * np.pi * 440.0 * t)
    return np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)
