"""Quantisation-aware fine-tuning (QAT) of a trained int8-native Mini-SegNet for the full-int8 TFLite export.

The export cannot take a QAT graph (onnx2tf does not import QDQ ONNX): it re-calibrates the *float* model on
training windows and lets the TFLite converter quantise it. So QAT here trains the float weights to be robust to that
converter's own int8 arithmetic, and the exported model comes from the float weights of the QAT checkpoint:
``edge-asc export`` needs nothing new.

:class:`QuantSim` wraps a :class:`~edge_asc.model.segnet.MiniSegNet` (sharing its parameters, no copies) and runs the
graph the converter produces, op for op, with an int8 quantisation point wherever the TFLite graph has an int8
tensor (read from exported files with ``preserve_all_tensors``; see ``tests/test_qat.py`` for the op-level checks):

- weights of CONV_2D and FULLY_CONNECTED: per output channel, symmetric, ``scale = max|w| / 127``, zero point 0
  (codes -127..127); BatchNorm is folded into the convolution first, with its running statistics (frozen);
- constant vectors of ADD / SUB / MUL (the instance norms' affine, the event block's index constants): per tensor,
  asymmetric, over their own min/max (scalars are exact);
- activations: per tensor, asymmetric int8 over the min/max the float graph reaches on the calibration windows, the
  range widened to include 0 and the zero point nudged to an integer as the converter does
  (:func:`activation_qparams`); a RELU / RELU6 that the converter fuses into the CONV_2D / FULLY_CONNECTED / ADD / MUL
  in front of it is applied before that op's quantisation point (one int8 tensor, not two). The converter's
  calibrator logs an op's inputs after the op ran, and LiteRT runs an ADD / SUB / MUL in the buffer of a single-use,
  same-shape input that is not a graph output, so that input's range also covers the op's output (``merge``): the
  soft unpooling's difference gets the mask's [0, 6] (twice its own step), the MixupNorm's ``r * w`` and ``mu * lam``
  the range of the ADD after them;
- ops whose int8 kernels keep their input's scale (MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR, PAD, RESHAPE, TRANSPOSE,
  REDUCE_MAX / REDUCE_MIN) add no point; AVERAGE_POOL_2D and CONCATENATION give their operands their result's range,
  so the banded GAP's time MEAN and row pool and the event block's outputs are quantised with the range of the head's
  concatenation (of the pooled GAP without the event head): values above it saturate, as in the exported file;
- every step of the int8-native blocks: the MixupNorm's MEAN / SUB / RELU / PiecewiseReciprocal FULLY_CONNECTEDs / MUL
  / ADD chain, the soft unpooling's shift, difference, RELU6 mask and scaled values, and the event block's ramps
  (whose one-step slopes only behave as comparisons on the int8 grid), up to the int8 logits.

Gradients pass the rounding as straight-through estimators (``torch.fake_quantize_*``: 1 inside the int8 range, 0
where a value saturates). Activation ranges are not learned: the converter will set them from the float model's
calibration min/max, so QAT re-estimates exactly those (float forward over the same calibration windows the export
draws) before every epoch and keeps them fixed within it (:attr:`QatConfig.ranges`; a moving average of the training
batches is the measured alternative).

The loss is the cross-entropy of the simulated int8 logits plus, by default, a hinge on top-2 logit gaps below
``QatConfig.margin``: float-vs-int8 disagreements happen on windows the float model is unsure of (on those with a
margin >= ``CONFIDENT_MARGIN`` the export agrees on almost every window measured), and cross-entropy through
straight-through rounding alone hardly moves the float-vs-int8 error (measurements: ``benchmarks/int8_fidelity.py``).

The simulation is built from :class:`Quantiser` (the quantisation points and their ranges) and one function per
block (:func:`q_conv_block`, :func:`q_mixup_norm`, :func:`q_recip`, :func:`q_unpool`, :func:`q_gap`,
:func:`q_events`), so the op-level tests run the same code on single blocks. The model code itself is untouched: a
forward hook sees a module's output but not the ADD / MUL / MEAN inside a block's ``forward``, so the simulation
walks the graph itself; ``QuantSim(model)`` in ``'float'`` mode equals ``model`` (pinned by a test), which keeps
the two from drifting apart.

Imports torch at module level: load it after ``edge_asc.errors.require('torch', ...)``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DatasetError
from ..export.verify import CONFIDENT_MARGIN
from ..model.layers import CELL_SLOPE, MixupNorm, upsample_to

#: int8 activation codes.
QMIN, QMAX = -128, 127
#: Symmetric int8 weight codes (TFLite's narrow range for weights: -127..127, zero point 0).
WMAX = 127
#: How the activation ranges follow the weights during QAT.
RANGE_MODES = ("calibration", "ema")
QAT_SCHEMA_VERSION = 1


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 activation tensor calibrated on float values in [lo, hi], as the TFLite
    converter computes them: the range widened to include 0, ``scale = (hi - lo) / 255``, the zero point from the
    end with the smaller rounding error, rounded and clamped to [-128, 127]. A degenerate range gets a tiny scale
    (its one value, 0, stays exact). Returns the scale as float32 (what the .tflite stores)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"activation range [{lo}, {hi}] is not finite")
    if hi - lo < 1e-12:
        return 1e-8, QMIN
    scale = (hi - lo) / (QMAX - QMIN)
    zp_min, zp_max = QMIN - lo / scale, QMAX - hi / scale
    zp = zp_min if abs(QMIN) + abs(lo / scale) < abs(QMAX) + abs(hi / scale) else zp_max
    zp_int = QMIN if zp < QMIN else QMAX if zp > QMAX else math.floor(zp + 0.5)
    return float(np.float32(scale)), zp_int


def fq_activation(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x`` rounded to the int8 grid of an activation calibrated on [lo, hi] (:func:`activation_qparams`), values
    outside it saturated; gradient 1 inside the grid's range and 0 outside (straight-through)."""
    scale, zp = activation_qparams(lo, hi)
    return torch.fake_quantize_per_tensor_affine(x, scale, zp, QMIN, QMAX)


def fq_weight(w: torch.Tensor) -> torch.Tensor:
    """CONV_2D / FULLY_CONNECTED weights float[O, ...] rounded as the converter stores them: int8 per output channel
    (axis 0), symmetric, ``scale = max|w| / 127``, zero point 0; straight-through gradient."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
    scale = torch.clamp(amax / WMAX, min=1e-12).float()
    zp = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -WMAX, WMAX)


def fq_constant(c: torch.Tensor) -> torch.Tensor:
    """A constant operand of ADD / SUB / MUL: int8 per tensor over its own range (scalars are exact)."""
    if c.numel() == 1:
        return c
    v = c.detach()
    return fq_activation(c, float(v.min()), float(v.max()))


class Quantiser:
    """The quantisation points of one simulated int8 graph and their calibrated ranges.

    ``mode``: ``'float'`` (every point is the identity), ``'observe'`` (points record their float min/max),
    ``'quant'`` (points round to the int8 grid of their range). With ``ema_momentum > 0`` and ``updating`` set,
    ``'quant'`` forwards also move each point's range towards the batch's min/max (exponential moving average).
    """

    def __init__(self) -> None:
        self.mode = "float"
        self.observed: dict[str, tuple[float, float]] = {}
        """point -> (min, max) of its float values seen in ``'observe'`` mode (or their moving average)."""
        self.ema_momentum = 0.0
        self.updating = False
        self.tie_excess: torch.Tensor | float = 0.0
        """sum over the points quantised with another point's range (``like``) of their float values' mean squared
        excess over that range (relative to its width), accumulated by ``'quant'`` forwards while ``updating``;
        the caller resets it."""
        self.only: set[str] | None = None
        """in ``'quant'`` mode, quantise only these points (and weights only if ``'weights'`` is in it): the other
        tensors stay float. None: every point. For error budgets (which tensor costs what)."""
        self._rules: dict[str, tuple[str | None, str | None]] = {}

    def a(self, name: str, x: torch.Tensor, *, like: str | None = None, merge: str | None = None) -> torch.Tensor:
        """Activation quantisation point ``name`` (an op's int8 output tensor).

        ``like``: quantise with point ``like``'s range instead: the converter gives every tensor of a chain of
        same-scale ops that ends in a CONCATENATION (or AVERAGE_POOL_2D) the range of that op's result.
        ``merge``: the calibrated range also covers what point ``merge`` observed: the op computing ``merge``
        runs in place in this tensor's buffer (LiteRT shares a single-use, same-shape input of ADD / SUB / MUL
        with the output), and the converter's calibrator logs op inputs after the op ran.
        """
        if like is not None or merge is not None:
            self._rules[name] = (like, merge)
        if self.mode == "float":
            return x
        if self.mode == "observe" or (self.updating and self.ema_momentum > 0):
            v = x.detach()
            lo, hi = float(v.min()), float(v.max())
            old = self.observed.get(name)
            if old is None:
                self.observed[name] = (lo, hi)
            elif self.mode == "observe":
                self.observed[name] = (min(old[0], lo), max(old[1], hi))
            else:
                m = self.ema_momentum
                self.observed[name] = (m * old[0] + (1 - m) * lo, m * old[1] + (1 - m) * hi)
            if self.mode == "observe":
                return x
        if self.only is not None and name not in self.only:
            return x
        lo, hi = self.range_of(name)
        if like is not None and self.updating:
            # a tied tensor is clipped to another tensor's range in the int8 graph; the float model is not: the
            # penalty (mean squared excess, in units of the range) lets training pull its values inside
            self.tie_excess = self.tie_excess + ((F.relu(x - hi) + F.relu(lo - x)) / max(hi - lo, 1e-6)).square().mean()
        return fq_activation(x, lo, hi)

    def w(self, w: torch.Tensor) -> torch.Tensor:
        """CONV_2D / FULLY_CONNECTED weights (:func:`fq_weight` in ``'quant'`` mode)."""
        return fq_weight(w) if self.mode == "quant" and (self.only is None or "weights" in self.only) else w

    def c(self, c: torch.Tensor) -> torch.Tensor:
        """A constant operand of ADD / SUB / MUL (:func:`fq_constant` in ``'quant'`` mode)."""
        return fq_constant(c) if self.mode == "quant" and (self.only is None or "weights" in self.only) else c

    def range_of(self, name: str) -> tuple[float, float]:
        """The float range the converter quantises point ``name`` with.

        Raises:
            ConfigError: the point (or one its range depends on) was never observed.
        """
        like, _ = self._rules.get(name, (None, None))
        key = like or name
        _, merge = self._rules.get(key, (None, None))
        try:
            lo, hi = self.observed[key]
            if merge is not None:
                mlo, mhi = self.observed[merge]
                lo, hi = min(lo, mlo), max(hi, mhi)
        except KeyError as exc:
            raise ConfigError(f"no calibrated range for quantisation point {exc.args[0]!r}: calibrate first") \
                from None
        return lo, hi

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Every observed point's range (:meth:`range_of`)."""
        return {k: self.range_of(k) for k in self.observed}

    def quant_params(self) -> dict[str, tuple[float, int]]:
        """(scale, zero point) of every observed point."""
        return {k: activation_qparams(*v) for k, v in self.ranges().items()}

    def observe(self, fn: Callable[[torch.Tensor], Any], batches: Any) -> dict[str, tuple[float, float]]:
        """Reset the ranges to the min/max the float graph ``fn`` reaches over ``batches`` (tensors), as the
        converter's calibration does. Returns :meth:`ranges`."""
        mode, self.mode, self.observed = self.mode, "observe", {}
        try:
            with torch.no_grad():
                for x in batches:
                    fn(x)
        finally:
            self.mode = mode
        return self.ranges()


# ---- blocks (NCHW torch tensors; names are the quantisation points' prefixes) ------------------------------------
def _act(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x) if isinstance(act, nn.ReLU) else F.relu6(x)


def q_conv_block(q: Quantiser, name: str, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Mini-SegNet conv block (SamePadConv2d, norm, ReLU / ReLU6). BatchNorm is folded into the convolution with
    its running statistics (as the converter folds it), the activation fused."""
    conv, norm = blk.conv.conv, blk.norm
    xp = blk.conv.pad(x)
    if isinstance(norm, nn.BatchNorm2d):
        k = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        w = conv.weight * k.view(-1, 1, 1, 1)
        b = (conv.bias - norm.running_mean) * k + norm.bias
        return q.a(name, _act(blk.act, F.conv2d(xp, q.w(w), b)))
    lam = norm.lam if isinstance(norm, MixupNorm) else 0.0
    if lam == 1.0:
        return q.a(name, _act(blk.act, F.conv2d(xp, q.w(conv.weight), conv.bias)))
    y = q.a(f"{name}.conv", F.conv2d(xp, q.w(conv.weight), conv.bias))
    return q_mixup_norm(q, name, y, norm.inorm if isinstance(norm, MixupNorm) else norm, lam, blk.act)


def q_recip(q: Quantiser, p: str, s: torch.Tensor, recip: nn.Module) -> torch.Tensor:
    """:class:`~edge_asc.model.layers.PiecewiseReciprocal` on float[M, 1]: FULLY_CONNECTED + RELU6, then
    FULLY_CONNECTED."""
    h = q.a(f"{p}.recip1", F.relu6(F.linear(s, q.w(recip.w1), recip.b1)))
    return q.a(f"{p}.recip2", F.linear(h, q.w(recip.w2), recip.b2))


def q_mixup_norm(q: Quantiser, p: str, y: torch.Tensor, inorm: nn.Module, lam: float,
                 act: nn.Module) -> torch.Tensor:
    """The int8-native MixupNorm (``edge_asc.model.layers._int8_native_mixup_norm``) followed by the block's
    activation, which the converter fuses into the last ADD."""
    n, c = y.shape[0], y.shape[1]
    mu = q.a(f"{p}.mu", y.mean(dim=(2, 3), keepdim=True))
    d = q.a(f"{p}.d", y - mu)
    pos = q.a(f"{p}.relu", F.relu(d))
    half_mad = q.a(f"{p}.mad", pos.mean(dim=(2, 3), keepdim=True))
    r = q_recip(q, p, half_mad.reshape(n * c, 1), inorm.recip).reshape(n, c, 1, 1)
    ra = q.a(f"{p}.rw", r * q.c((1.0 - lam) * inorm.weight.view(1, -1, 1, 1)), merge=f"{p}.a")
    a = q.a(f"{p}.a", ra + lam)
    mul = q.a(f"{p}.mulmu", mu * lam, merge=f"{p}.b")
    b = q.a(f"{p}.b", mul + q.c((1.0 - lam) * inorm.bias.view(1, -1, 1, 1)))
    da = q.a(f"{p}.da", d * a, merge=p)
    return q.a(p, _act(act, da + b))


def q_unpool(q: Quantiser, p: str, values: torch.Tensor, pre: torch.Tensor, pooled: torch.Tensor,
             cfg: Any) -> torch.Tensor:
    """The int8-native SegNet unpooling (:func:`edge_asc.model.layers.mask_unpool`) of ``cfg`` (a
    MiniSegNetConfig: unpool, unpool_softness, pool). Upsampling and padding keep their input's grid."""
    size = (pre.shape[2], pre.shape[3])
    if cfg.unpool == "nearest":
        return upsample_to(values, cfg.pool, size)
    k = CELL_SLOPE if cfg.unpool == "mask" else cfg.unpool_softness
    shift = q.a(f"{p}.shift", pooled - 1.0 / k)
    diff = q.a(f"{p}.diff", pre - upsample_to(shift, cfg.pool, size), merge=f"{p}.mask")
    mask6 = q.a(f"{p}.mask", F.relu6(diff * (6.0 * k)))
    v = q.a(f"{p}.values", values * (1.0 / 6.0))
    return q.a(p, upsample_to(v, cfg.pool, size) * mask6)


def q_gap(q: Quantiser, d: torch.Tensor, bands: int, head: str) -> torch.Tensor:
    """The head's global average pooling (MiniSegNet ``_gap``): MEAN over time, then AVERAGE_POOL_2D over
    ``bands`` mel bands; both tied to the range of point ``head`` (the concatenation they feed)."""
    if bands == 1:
        return q.a("gap", d.mean(dim=(2, 3)), like=head)
    h = d.shape[2] // bands
    t = q.a("gap.time", d.mean(dim=3, keepdim=True), like=head)[:, :, : h * bands]
    return q.a("gap", F.avg_pool2d(t, kernel_size=(h, 1), stride=(h, 1)), like=head).flatten(1)


def q_events(q: Quantiser, ev: nn.Module, x: torch.Tensor, head: str) -> torch.Tensor:
    """The int8-native :class:`~edge_asc.model.layers.EventExtraction` on float[N, C, H, W] -> [N, k] (no
    gradient); its outputs are tied to the range of point ``head``."""
    x = x.detach()
    diff = q.a("ev.diff", x - x.amax(dim=1, keepdim=True))
    e6 = q.a("ev.e6", F.relu6(F.conv2d(diff, q.w(ev.cell_w), ev.cell_b)))
    f6 = q.a("ev.f6", F.relu6(F.conv2d(e6, q.w(ev.first_conv))))
    avail = q.a("ev.avail", f6.mean(dim=(2, 3)))
    index = q.c(1.0 + ev.index_frac)
    out = []
    for i in range(ev.k):
        last = i + 1 == ev.k  # the last update of avail is unused: the exporter drops it
        dd = q.a(f"ev.{i}.diff", avail - avail.amax(dim=1, keepdim=True))
        hit6 = q.a(f"ev.{i}.hit", F.relu6(F.linear(dd, q.w(ev.rank_w), ev.cell_b)))
        p6 = q.a(f"ev.{i}.first", F.relu6(F.linear(hit6, q.w(ev.first_mat))))
        # the last pick has one consumer, the SUB below, which runs in place
        pick = q.a(f"ev.{i}.pick", p6 * (1.0 / 6.0), merge=f"ev.{i}.out" if last else None)
        out.append(q.a(f"ev.{i}.out", index - pick, like=head).amin(dim=1, keepdim=True))
        if not last:
            plus6 = q.a(f"ev.{i}.plus6", avail + 6.0, merge=f"ev.{i}.prod")
            prod = q.a(f"ev.{i}.prod", pick * plus6, merge=f"ev.{i}.avail")
            avail = q.a(f"ev.{i}.avail", avail - prod)
    return torch.cat(out, dim=1)


def unsupported_reason(cfg: Any) -> str | None:
    """Why :class:`QuantSim` cannot mirror the int8 graph of model config ``cfg`` (None when it can)."""
    if not cfg.int8_native:
        return ("QAT mirrors the int8-native graph (int8_native=true, every preset but 'edge-gap'); this "
                "checkpoint uses the reference formulation")
    if cfg.act_bound not in (None, 6.0):
        return f"QAT supports act_bound none or 6 (fused RELU / RELU6), got {cfg.act_bound}"
    return None


class QuantSim(nn.Module):
    """The int8 graph of a :class:`~edge_asc.model.segnet.MiniSegNet` (int8-native; ReLU or ReLU6), op for op:
    ``forward(x: float32[N, C, n_mels, W]) -> logits float32[N, K]`` with ``model``'s own parameters (shared, not
    copied: training the simulation trains the model).

    ``sim.q.mode``: ``'float'`` (the model's eval-mode function, BN folded; dropout follows ``sim.training``),
    ``'quant'`` (fake-quantised; :meth:`calibrate` first) or ``'observe'``. BatchNorm statistics are never updated.

    Raises:
        ConfigError: a model the simulation does not mirror (:func:`unsupported_reason`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        why = unsupported_reason(model.config)
        if why is not None:
            raise ConfigError(why)
        self.model = model
        self.q = Quantiser()
        # the point whose range the head's same-scale chain takes: the CONCATENATION, or the pooled GAP
        self.head = "head" if model.events is not None else "gap"
        self.decoder_out: torch.Tensor | None = None
        """the last forward's decoder output float[N, c1, H, W] (what the event block ranks per cell)."""
        self.events_out: torch.Tensor | None = None
        """the last forward's event block output [N, k] (index / C, as the head takes it), or None without one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, cfg, q = self.model, self.model.config, self.q
        q.updating = self.training
        def pool(t):
            return F.max_pool2d(t, kernel_size=cfg.pool, stride=cfg.pool)
        x = q.a("input", x)
        pre1 = q_conv_block(q, "enc1", m.enc1, x)
        p1 = pool(pre1)
        pre2 = q_conv_block(q, "enc2b", m.enc2b, q_conv_block(q, "enc2a", m.enc2a, p1))
        p2 = pool(pre2)
        d = q_unpool(q, "unpool2", p2, pre2, p2, cfg)
        d = q_conv_block(q, "dec1b", m.dec1b, q_conv_block(q, "dec1a", m.dec1a, d))
        d = q_unpool(q, "unpool1", d, pre1, p1, cfg)
        d = q_conv_block(q, "dec2", m.dec2, d)
        self.decoder_out = d
        g = q_gap(q, d, cfg.gap_bands, self.head)
        if m.events is not None:
            g = q.a("head", torch.cat([g, q_events(q, m.events, d, self.head)], dim=1))
            self.events_out = g[:, -m.events.k:].detach()
        h = m.drop(q.a("fc1", F.relu(F.linear(g, q.w(m.fc1.weight), m.fc1.bias))))
        h = m.drop(q.a("fc2", F.relu(F.linear(h, q.w(m.fc2.weight), m.fc2.bias))))
        return q.a("logits", F.linear(h, q.w(m.out.weight), m.out.bias))

    def calibrate(self, windows: np.ndarray, batch_size: int = 64) -> dict[str, tuple[float, float]]:
        """Set every range to the float graph's min/max over ``windows`` (normalised float32[N, C, n_mels, W], the
        export's calibration windows), as the converter will. Returns the ranges."""
        training = self.training
        self.eval()
        try:
            batches = (torch.from_numpy(np.ascontiguousarray(windows[s:s + batch_size], dtype=np.float32))
                       for s in range(0, len(windows), batch_size))
            return self.q.observe(self, batches)
        finally:
            self.train(training)


# ---- fine-tuning ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class QatConfig:
    """Settings of one QAT fine-tuning run (recorded in the checkpoint's ``qat`` metadata)."""

    epochs: int = 3
    """passes over the training split."""
    lr: float = 1e-3
    """peak learning rate."""
    schedule: str = "cosine"
    """'cosine': from ``lr`` down to 0 over the run (per batch), so the weights the export takes are not a snapshot
    of a noisy constant-rate walk; 'constant'."""
    optimizer: str = "adam"
    """'adam' or 'sgd' (momentum 0.9)."""
    batch_size: int | None = None
    """clips per batch; None: the base run's."""
    seed: int = 0
    """seeds batch order, augmentation and dropout."""
    ranges: str = "calibration"
    """'calibration': activation ranges re-estimated before every epoch as the converter will set them (float min/max
    over the calibration windows), fixed within the epoch; 'ema': moved after every batch towards the batch's min/max
    (``ema_momentum``), starting from the calibration ranges."""
    ema_momentum: float = 0.99
    float_weight: float = 0.0
    """weight of a second cross-entropy on the float forward (0: the int8 simulation's loss only)."""
    mixup_alpha: float | None = None
    """mixup during fine-tuning (0: off, hard labels); None: the base run's augmentation as it was."""
    margin_weight: float = 1.0
    """weight of a hinge on each window's top-2 logit gap below ``margin``: windows the float model is unsure of are
    the ones whose int8 export can disagree (0: off, cross-entropy on the int8 simulation only)."""
    margin: float = 0.2
    """the hinge's margin, in logit units (a few int8 steps of the logits; ``CONFIDENT_MARGIN`` = 0.5 agreed more
    but cost float accuracy on weakly trained models)."""
    margin_on: str = "top1"
    """'label': the gap between the target class (the largest share of a mixed batch's target) and the best other
    class (a multi-class hinge loss: it does not make wrong answers more confident); 'top1': the gap between the
    two largest logits, whatever the label."""
    event_margin_weight: float = 0.0
    """weight of a hinge on the event block's per-cell decision: in cells whose largest decoder channel is positive,
    the gap to the second largest below ``event_margin_steps`` int8 steps of that tensor is penalised (the block has
    no gradient of its own; a gap under the int8 noise flips the cell's argmax between float and int8)."""
    event_margin_steps: float = 2.0
    tie_weight: float = 0.0
    """weight of the penalty on float values outside the range the converter ties them to
    (:attr:`Quantiser.tie_excess`: the banded GAP's time MEAN takes the head concatenation's range)."""
    calib_size: int = 300
    """calibration windows (the export's default, so QAT sees the ranges ``edge-asc export`` will use)."""
    calib_seed: int = 0
    calib_strategy: str = "stratified"

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ConfigError(f"QAT epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ConfigError(f"QAT learning rate must be in (0, 1), got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"QAT optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 2):
            raise ConfigError(f"QAT batch size must be an integer >= 2, got {self.batch_size!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"QAT schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.ranges not in RANGE_MODES:
            raise ConfigError(f"QAT ranges must be one of {RANGE_MODES}, got {self.ranges!r}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"ema_momentum must be in [0, 1), got {self.ema_momentum!r}")
        if self.mixup_alpha is not None and self.mixup_alpha < 0:
            raise ConfigError(f"mixup_alpha must be >= 0, got {self.mixup_alpha!r}")
        if self.margin_weight < 0 or self.margin <= 0:
            raise ConfigError("margin_weight must be >= 0 and margin > 0")
        if self.margin_on not in ("label", "top1"):
            raise ConfigError(f"margin_on must be 'label' or 'top1', got {self.margin_on!r}")
        if self.event_margin_weight < 0 or self.event_margin_steps <= 0:
            raise ConfigError("event_margin_weight must be >= 0 and event_margin_steps > 0")
        if self.float_weight < 0 or self.tie_weight < 0:
            raise ConfigError(f"float_weight and tie_weight must be >= 0, got {self.float_weight!r}, "
                              f"{self.tie_weight!r}")
        if not (isinstance(self.calib_size, int) and self.calib_size >= 1):
            raise ConfigError(f"calib_size must be a positive integer, got {self.calib_size!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class QatResult:
    run_dir: Path
    meta: Any  # CheckpointMeta
    history: tuple[Mapping[str, Any], ...]


def _window_logits(fn: Callable[[torch.Tensor], torch.Tensor], wins: np.ndarray, batch_size: int = 256) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([fn(torch.from_numpy(np.ascontiguousarray(wins[s:s + batch_size]))).numpy()
                               for s in range(0, len(wins), batch_size)])


def compare_float_int8(sim: QuantSim, wins: np.ndarray, owners: np.ndarray, y: np.ndarray,
                       n_classes: int) -> dict[str, float]:
    """Float model vs its int8 simulation on held-out windows (normalised float32[N, C, n_mels, W], clip index per
    window, label per clip): clip macro accuracies (mean window posterior per clip), window top-1 agreement, and that
    agreement on windows whose float top-2 margin is >= ``CONFIDENT_MARGIN``."""
    from ..metrics import macro_accuracy, softmax

    mode, training = sim.q.mode, sim.training
    sim.eval()
    try:
        sim.q.mode = "float"
        fl = _window_logits(sim, wins)
        sim.q.mode = "quant"
        ql = _window_logits(sim, wins)
    finally:
        sim.q.mode = mode
        sim.train(training)

    def macro(logits: np.ndarray) -> float:
        p = softmax(logits)
        clip = np.zeros((len(y), p.shape[1]))
        np.add.at(clip, owners, p)
        return macro_accuracy(clip.argmax(1), y, n_classes)

    top2 = np.sort(fl, axis=1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) >= CONFIDENT_MARGIN
    agree = fl.argmax(1) == ql.argmax(1)
    return {"float_macro_acc": macro(fl), "sim_int8_macro_acc": macro(ql), "sim_top1_agreement": float(agree.mean()),
            "sim_confident_agreement": float(agree[sure].mean()) if sure.any() else float("nan"),
            "confident_fraction": float(sure.mean())}


def qat_finetune(checkpoint: str | os.PathLike, dataset: Any, out_dir: str | os.PathLike, config: QatConfig, *,
                 calibration: Any = None, cache_dir: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = None) -> QatResult:
    """Fine-tune a trained run through its int8 simulation and write the result as a new run in ``out_dir``.

    The new run is a normal checkpoint (float weights; ``edge-asc export``, ``evaluate``, ``classify`` take it as
    they are) whose ``checkpoint.json`` carries ``qat``: the base run and its weights' sha256, the
    :class:`QatConfig`, and float / simulated-int8 metrics on the 'evaluate' split before and after. BatchNorm
    statistics stay as trained; ``history.jsonl`` gets one line per QAT epoch.

    Args:
        checkpoint: the trained run directory (or its checkpoint.json).
        dataset: the :mod:`edge_asc.data` Dataset it was trained on ('train' split for fine-tuning and calibration,
            'evaluate' for the metrics).
        out_dir: the new run directory (must not hold a run).
        calibration: a :class:`~edge_asc.calibration.CalibrationSet` to take ranges from instead of drawing
            ``config.calib_size`` windows (pass the one the export will use, if not the default).
        cache_dir: feature cache (default ``<out_dir>/../feature-cache``, where ``edge-asc train`` puts it).

    Raises:
        ConfigError: ``out_dir`` holds a run; a model the simulation does not mirror; a calibration set of another
            front end.
        DatasetError: the dataset's labels differ from the checkpoint's; an empty training split.
        ModelContractError: missing / corrupt checkpoint.
    """
    from .._io import append_jsonl
    from ..calibration import build_calibration
    from ..frontend.windows import windows
    from .augment import AugmentConfig
    from .cache import build_cache
    from .checkpoint import HISTORY_FILE, META_FILE, load_checkpoint, resolve_run_dir, save_checkpoint
    from .loop import TrainConfig, make_batch
    from .splits import check_labels, resolve_split

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out_dir)
    if (out / META_FILE).exists():
        raise ConfigError(f"{str(out)!r} already holds a run: choose another --out for the QAT checkpoint")
    model, meta = load_checkpoint(checkpoint)
    base = resolve_run_dir(checkpoint)
    why = unsupported_reason(meta.model_config)
    if why is not None:
        raise ConfigError(why)
    labels = tuple(meta.labels)
    check_labels(dataset.labels, labels)
    tc = TrainConfig.from_dict(meta.train_config) if meta.train_config else TrainConfig()
    window = meta.window_frames
    aug = tc.augment or AugmentConfig.for_window(meta.model_config.n_mels, window)
    if config.mixup_alpha is not None:
        aug = dataclasses.replace(aug, mixup_alpha=config.mixup_alpha)
    batch_size = config.batch_size or tc.batch_size
    cache = Path(cache_dir) if cache_dir is not None else out.parent / "feature-cache"
    train_split = resolve_split(dataset, "train", labels)
    if not train_split.paths:
        raise DatasetError("the dataset's 'train' split is empty: nothing to fine-tune on")
    store = build_cache(train_split.paths, train_split.clip_ids, meta.frontend, cache)
    mean = np.asarray(meta.frontend.norm_mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta.frontend.norm_std, np.float32).reshape(1, -1, 1, 1)

    val_split = resolve_split(dataset, "evaluate", labels)
    val = None
    if val_split.paths:
        vstore = build_cache(val_split.paths, val_split.clip_ids, meta.frontend, cache)
        vw = [windows((np.asarray(vstore[i]) - mean[0]) / std[0], window) for i in range(len(vstore))]
        val = (np.concatenate(vw).astype(np.float32), np.repeat(np.arange(len(vw)), [len(w) for w in vw]),
               val_split.y)

    t = time.perf_counter()
    cs = calibration if calibration is not None else build_calibration(
        dataset, meta.frontend, window, size=config.calib_size, seed=config.calib_seed,
        strategy=config.calib_strategy, labels=labels)
    if cs.manifest.frontend.feature_hash() != meta.frontend.feature_hash() or cs.manifest.window_frames != window:
        raise ConfigError("the calibration set was computed with another front end or window length than the "
                          "checkpoint's")
    calib = cs.normalized_nchw()
    log(f"qat: {len(calib)} calibration windows in {time.perf_counter() - t:.1f} s")

    sim = QuantSim(model)
    sim.calibrate(calib)
    sim.q.mode = "quant"
    before = compare_float_int8(sim, *val, len(labels)) if val is not None else {}
    if before:
        log("qat: before  " + _metrics_text(before))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=config.lr) if config.optimizer == "adam"
           else torch.optim.SGD(params, lr=config.lr, momentum=0.9))
    sim.q.ema_momentum = config.ema_momentum if config.ranges == "ema" else 0.0
    history: list[dict[str, Any]] = []
    n = len(store)
    nb = max(1, math.ceil(n / batch_size))
    t_run = time.perf_counter()
    for epoch in range(config.epochs):
        t_ep = time.perf_counter()
        if config.ranges == "calibration" or epoch == 0:
            sim.calibrate(calib)
        rng = np.random.default_rng([config.seed, 1_000_000 + epoch])
        torch.manual_seed(config.seed * 1_000_003 + 1_000_000 + epoch)
        sim.train()
        order = rng.permutation(n)
        loss_sum = seen = 0.0
        for b in range(nb):
            idx = order[b * batch_size:(b + 1) * batch_size]
            if len(idx) < 2:
                continue
            if config.schedule == "cosine":
                for g in opt.param_groups:
                    g["lr"] = 0.5 * config.lr * (1.0 + math.cos(math.pi * (epoch + b / nb) / config.epochs))
            x, target = make_batch(store, idx, train_split.y, len(labels), window, mean, std, aug, rng)
            xt, tt = torch.from_numpy(x), torch.from_numpy(target)
            sim.q.tie_excess = 0.0
            logits = sim(xt)
            loss = -(tt * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            if config.margin_weight > 0:
                loss = loss + config.margin_weight * _margin_hinge(logits, tt, config.margin, config.margin_on)
            if config.tie_weight > 0:
                loss = loss + config.tie_weight * sim.q.tie_excess
            if config.event_margin_weight > 0 and model.events is not None:
                loss = loss + config.event_margin_weight * _event_margin(sim, config.event_margin_steps)
            if config.float_weight > 0:
                sim.q.mode = "float"
                loss = loss + config.float_weight * -(tt * F.log_softmax(sim(xt), dim=1)).sum(dim=1).mean()
                sim.q.mode = "quant"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        if config.ranges == "calibration":
            sim.calibrate(calib)  # the ranges the export will compute for these weights
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                                   "seconds": time.perf_counter() - t_ep}
        if val is not None:
            metrics.update(compare_float_int8(sim, *val, len(labels)))
        history.append(metrics)
        log(f"qat epoch {epoch + 1}/{config.epochs}  loss {metrics['train_loss']:.4f}  "
            + (_metrics_text(metrics) if val is not None else ""))
    sim.calibrate(calib)
    after = compare_float_int8(sim, *val, len(labels)) if val is not None else {}
    qat_meta = {
        "schema_version": QAT_SCHEMA_VERSION, "base_run": str(base), "base_run_id": meta.run_id,
        "base_weights_sha256": meta.weights_sha256, "base_epoch": meta.epoch, "config": config.to_dict(),
        "batch_size": batch_size, "calibration_sha256": cs.manifest.sha256, "calibration_windows": len(cs),
        "before": before, "after": after, "seconds": time.perf_counter() - t_run,
    }
    metrics = dict(meta.metrics)
    metrics.update({f"qat_{k}": v for k, v in after.items()})
    model.eval()
    new_meta = save_checkpoint(out, model, dataclasses.replace(
        meta, metrics=metrics, run_id=f"{meta.run_id}+qat" if meta.run_id else "qat", qat=qat_meta,
        weights_sha256="", optimizer_sha256=""))
    for m in history:
        append_jsonl(out / HISTORY_FILE, m)
    return QatResult(run_dir=out, meta=new_meta, history=tuple(history))


def _margin_hinge(logits: torch.Tensor, targets: torch.Tensor, margin: float, on: str) -> torch.Tensor:
    """Mean ``relu(margin - gap)`` over the batch; ``gap``: target-class logit minus the best other one
    (``on='label'``), or the top-2 logit gap (``on='top1'``)."""
    if on == "top1":
        top = torch.topk(logits, 2, dim=1).values
        return F.relu(margin - (top[:, 0] - top[:, 1])).mean()
    y = targets.argmax(dim=1, keepdim=True)
    z_y = logits.gather(1, y).squeeze(1)
    others = logits.scatter(1, y, float("-inf")).amax(dim=1)
    return F.relu(margin - (z_y - others)).mean()


def _event_margin(sim: QuantSim, steps: float) -> torch.Tensor:
    """Mean hinge ``relu(margin - (top1 - top2))`` over the cells of the last decoder output whose top channel is
    positive; ``margin`` = ``steps`` int8 steps of the decoder output's calibrated range."""
    d = sim.decoder_out
    lo, hi = sim.q.range_of("dec2")
    margin = steps * (max(hi, 0.0) - min(lo, 0.0)) / (QMAX - QMIN)
    top = torch.topk(d, 2, dim=1).values
    live = (top[:, 0] > 0).float()
    return (F.relu(margin - (top[:, 0] - top[:, 1])) * live).sum() / live.sum().clamp(min=1.0)


def _metrics_text(m: Mapping[str, Any]) -> str:
    return (f"float macro-acc {m['float_macro_acc']:.3f}  int8-sim macro-acc {m['sim_int8_macro_acc']:.3f}  "
            f"agreement {m['sim_top1_agreement']:.3f} (confident {m['sim_confident_agreement']:.3f} on "
            f"{100 * m['confident_fraction']:.0f}%)")
