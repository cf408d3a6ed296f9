"""Budget-driven search over the Mini-SegNet family (``edge-asc fit``).

Pure Python on :func:`edge_asc.model.count_params` / :func:`edge_asc.model.count_macs` (no torch): every combination
of width multiplier, mel bins, frames per window and pooling factors around a base preset is counted, those meeting
every constraint are kept, and the largest (most parameters, then most MACs) come first.

Constraints:

- ``max_params``: trainable parameters of the PyTorch model (DCASE counts parameters; at int8 one parameter is one
  byte, plus 3 bytes per int32 bias once exported, minus the batch-norm parameters folded away — check the exported
  model with ``edge-asc report``).
- ``max_macs``: MACs for 1 s of audio, ``count_macs(cfg) * frames_in_1s / n_frames`` (the report's definition).
- ``max_ram``: :func:`arena_estimate`, the TFLite Micro arena of the full-int8 export: the int8 activation peak of
  the op schedule ``edge-asc export`` writes (head) plus the interpreter's persistent data (tail); a few percent
  below the measured arena of the presets (see its docstring). Confirm it on the exported model with
  :func:`confirm` / ``edge-asc fit --confirm MODEL.tflite``, which runs TFLite Micro (reference kernels: a CMSIS-NN
  build adds scratch buffers).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

DEFAULT_WIDTHS = tuple(k / 32 for k in range(4, 33))
"""width multipliers 0.125 ... 1.0 in steps of 1/32 (2 channels of Conv_block1)."""
DEFAULT_MELS = (32, 40, 48, 64, 80, 96, 128)
DEFAULT_POOLS = ((2, 2), (2, 3), (2, 4), (3, 3), (4, 4))
DEFAULT_FRAME_FRACTIONS = (0.5, 0.75, 1.0)
"""frames per window as fractions of the base preset's window."""


@dataclass(frozen=True, kw_only=True)
class FitCandidate:
    """One configuration meeting the constraints. ``macs_1s``: MACs for 1 s of audio; bytes are int8 estimates."""

    config: Any
    """a :class:`edge_asc.model.MiniSegNetConfig`."""
    params: int
    macs: int
    """per inference (one window of ``config.n_frames`` frames)."""
    macs_1s: float
    arena_estimate_bytes: int
    base: str
    """the base preset string the search started from (``edge``, or ``NAME:field=value,...``)."""

    @property
    def preset_string(self) -> str:
        """The string ``edge-asc train --preset`` takes for this config, e.g. ``edge:n_mels=48,width=0.3125``: every
        field that differs from the base's named preset (:func:`edge_asc.model.format_preset`);
        ``resolve_preset(c.preset_string).config == c.config``."""
        from ..model import format_preset

        return format_preset(self.base, self.config)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset_string, "params": self.params, "macs": self.macs, "macs_1s": self.macs_1s,
                "arena_estimate_bytes": self.arena_estimate_bytes, "config": self.config.to_dict()}


#: Tail of the TFLite Micro arena (persistent interpreter data), bytes: ``TAIL_BASE + TAIL_PER_OP * ops +
#: TAIL_PER_CHANNEL * conv output channels``. ``TAIL_PER_OP`` is read off TFLM's RecordingMicroAllocator: a 64-byte
#: NodeAndRegistration per op plus a 24-byte TfLiteEvalTensor per tensor (constants included, ~1.4 per op);
#: ``TAIL_PER_CHANNEL`` (the per-channel output multipliers and shifts of CONV_2D / DEPTHWISE_CONV_2D and the other
#: channel-sized op data) and ``TAIL_BASE`` are fitted exactly to the two reference exports, random-init ``edge``
#: (117 ops, 176 conv channels, tail 22,896 B) and ``micro`` (115 ops, 88 channels, tail 21,344 B).
TAIL_PER_OP = 98
TAIL_PER_CHANNEL = 15.4
TAIL_BASE = 8_720


class _Schedule:
    """int8 tensors (bytes) and the ops that read / write them, in execution order; ``peak()`` is the largest sum of
    bytes live at one op, with the live-range rule of :func:`edge_asc.firmware_bench.graph.activation_timeline`."""

    def __init__(self, input_bytes: int) -> None:
        self.size = [input_bytes]
        self.op_io: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    @property
    def n(self) -> int:
        return len(self.op_io)

    def op(self, inputs: tuple[int, ...], *out_bytes: int) -> int:
        outs = tuple(range(len(self.size), len(self.size) + len(out_bytes)))
        self.size.extend(out_bytes)
        self.op_io.append((tuple(inputs), outs))
        return len(self.size) - 1  # the (last) output

    def arena(self, *, reordered: bool = True) -> int:
        """Bytes TFLite Micro's greedy planner places for these tensors, run in the order the export writes
        (``reordered``: the converter's order improved by :func:`edge_asc.export.schedule.order_ops`) or in the
        converter's order."""
        from ..export.schedule import greedy_arena_bytes, live_ranges, order_ops

        sizes, ends = dict(enumerate(self.size)), {"graph_inputs": (0,), "graph_outputs": (len(self.size) - 1,)}
        order = order_ops(self.op_io, sizes, **ends).order if reordered else range(self.n)
        ranges = sorted(live_ranges(order, self.op_io, sizes, **ends).items())
        return greedy_arena_bytes([self.size[t] for t, _ in ranges], [f for _, (f, _) in ranges],
                                  [la for _, (_, la) in ranges])


#: segments of the int8-native instance norm's piecewise reciprocal (``len(edge_asc.model.layers.RECIP_KNOTS) - 1``;
#: not imported: that module needs torch). Its first FULLY_CONNECTED writes ``channels x 28`` bytes.
_RECIP_SEGMENTS = 28


def _norm_ops(s: _Schedule, cfg, t: int, c: int, a: int) -> int:
    """The first / last norm of Mini-SegNet as the int8-native export writes it (14 ops: MEAN, MUL, SUB, RELU, MEAN,
    RESHAPE, two FULLY_CONNECTED, RESHAPE, MUL, ADD, RESHAPE, MUL, ADD); batch norm is folded into the convolution."""
    if cfg.norm == "bn" or (cfg.norm == "mixup" and cfg.mixup_lambda == 1.0):
        return t
    mean = s.op((t,), c)
    shift = s.op((mean,), c)
    d = s.op((t, mean), c * a)
    half_mad = s.op((s.op((d,), c * a),), c)
    v = s.op((s.op((s.op((half_mad,), c),), c * _RECIP_SEGMENTS),), c)  # RESHAPE, FC (hinges), FC (sum)
    for _ in range(4):  # RESHAPE, MUL, ADD, RESHAPE
        v = s.op((v,), c)
    return s.op((s.op((d, v), c * a), shift), c * a)


def _schedule(cfg) -> tuple[_Schedule, int]:
    """The op schedule of the full-int8 export of ``cfg`` (int8-native graph, batch 1) and its op count.

    Mirrors the order onnx2tf + the TFLite converter produce (read off exported ``edge`` and ``micro`` files with
    ``read_graph(path).activations``), tensor by tensor, with two simplifications that change no peak: the event
    block's ranking rounds (``10 * topk + 1`` ops on ``c1``-byte tensors) are one op, and the op count adds them back.
    The transposes are the converter's: the decoder output is transposed to NCHW for the event block and the band
    pooling. (:func:`arena_head_estimate` then reorders it as ``edge-asc export`` does.)
    """
    c1, c2 = cfg.channels
    (h0, w0), (h1, w1), (h2, w2) = cfg.feature_sizes
    ph, pw = cfg.pool
    a0, a1, a2 = h0 * w0, h1 * w1, h2 * w2
    r1, r2 = h1 * ph * w1 * pw, h2 * ph * w2 * pw  # nearest-upsampled, before the PAD back to the pre-pool size
    masked = cfg.unpool in ("mask", "soft")
    s = _Schedule(cfg.in_channels * a0)

    def up(t: int, c: int, r: int, a: int) -> int:  # RESIZE_NEAREST_NEIGHBOR (+ PAD when the pool dropped a rest)
        t = s.op((t,), c * r)
        return s.op((t,), c * a) if r != a else t

    pre1 = _norm_ops(s, cfg, s.op((0,), c1 * a0), c1, a0)
    p1 = s.op((pre1,), c1 * a1)  # MAX_POOL_2D
    pre2 = s.op((s.op((p1,), c2 * a1),), c2 * a1)
    p2 = s.op((pre2,), c2 * a2)
    if masked:  # mask6 = relu6(6k (pre - up(max - 1/k))) (SUB, MUL); out = up(values / 6) * mask6
        mask = s.op((s.op((pre2, up(s.op((p2,), c2 * a2), c2, r2, a1)), c2 * a1),), c2 * a1)
        u = s.op((up(s.op((p2,), c2 * a2), c2, r2, a1), mask), c2 * a1)
    else:
        u = up(p2, c2, r2, a1)
    d = s.op((s.op((u,), c2 * a1),), c1 * a1)
    if masked:
        mask = s.op((s.op((pre1, up(s.op((p1,), c1 * a1), c1, r1, a0)), c1 * a0),), c1 * a0)
        u = s.op((up(s.op((d,), c1 * a1), c1, r1, a0), mask), c1 * a0)
    else:
        u = up(d, c1, r1, a0)
    y = s.op((_norm_ops(s, cfg, s.op((u,), c1 * a0), c1, a0),), c1 * a0)  # conv, norm, TRANSPOSE to NCHW
    feats = []
    ranking_ops = 0
    if cfg.head == "events":
        mx = s.op((y,), a0)  # REDUCE_MAX over channels
        e6 = s.op((s.op((s.op((y, mx), c1 * a0),), c1 * a0),), c1 * a0)  # SUB, TRANSPOSE, depthwise CONV_2D
        counts = s.op((s.op((e6,), c1 * a0),), c1)  # CONV_2D (first maximum), MEAN
        feats.append(s.op((counts,), cfg.topk))
        ranking_ops = 10 * cfg.topk + 1
    b = cfg.gap_bands
    g = s.op((y,), c1 * (h0 if b > 1 else 1))  # MEAN over time (over both axes for one band)
    if b > 1:
        if h0 % b:
            g = s.op((g,), c1 * (h0 // b) * b)  # STRIDED_SLICE
        for n in (c1 * h0, c1 * b, c1 * b, c1 * b):  # TRANSPOSE, pool, TRANSPOSE, RESHAPE
            g = s.op((g,), n)
    feats.insert(0, g)
    h = s.op(tuple(feats), cfg.head_features) if len(feats) > 1 else g
    for units in (*cfg.dense_units, cfg.n_classes):
        h = s.op((h,), units)
    return s, s.n + ranking_ops


def _reference_head(cfg) -> int:
    """Head of the reference (``int8_native=False``) graph: the int8 peak of its ideal schedule, a lower bound (its
    export keeps float32 / bool full-resolution tensors that TFLite Micro may not even run; not fitted to exports)."""
    c1, c2 = cfg.channels
    (h0, w0), (h1, w1), (h2, w2) = cfg.feature_sizes
    a0, a1, a2 = h0 * w0, h1 * w1, h2 * w2
    pre1, pre2 = c1 * a0, c2 * a1
    return max(cfg.in_channels * a0 + c1 * a0, pre1 + c1 * a1 + c2 * a1, pre1 + 2 * c2 * a1, pre1 + pre2 + c2 * a2,
               pre1 + pre2 + c2 * a2 + 2 * c2 * a1, pre1 + c2 * a1 + c1 * a1, pre1 + c1 * a1 + 2 * c1 * a0,
               3 * c1 * a0)


def arena_head_estimate(cfg, *, reordered: bool = True) -> int:
    """Planned (head) bytes of the TFLite Micro arena: TFLite Micro's greedy planner
    (:func:`edge_asc.export.schedule.greedy_arena_bytes`) over the tensors of :func:`_schedule`, in the order
    ``edge-asc export`` writes (the converter's order improved by :func:`edge_asc.export.schedule.order_ops`;
    ``reordered=False``: the modelled converter's order).

    For every preset-like config the peak is at the second unpooling: three full-resolution tensors of
    ``c1 * n_mels * n_frames`` bytes (the skip tensor, the mask, the upsampled values) and the low-resolution values
    being upsampled. The schedule takes every stage into account, PAD copies
    included (when ``n_mels`` / ``n_frames`` are not multiples of the pool, the unpooling upsamples to the pooled
    size times the factor, then PADs to the pre-pool size: one more tensor live for one op).
    ``int8_native=False``: :func:`_reference_head`.
    """
    return _schedule(cfg)[0].arena(reordered=reordered) if cfg.int8_native else _reference_head(cfg)


def arena_tail_estimate(cfg) -> int:
    """Persistent (tail) bytes of the TFLite Micro arena: ``TAIL_BASE + TAIL_PER_OP * ops + TAIL_PER_CHANNEL *
    conv channels`` with the op count of :func:`_schedule` and the output channels of every CONV_2D /
    DEPTHWISE_CONV_2D (``5 c1 + 3 c2`` with the event block, ``3 c1 + 3 c2`` without)."""
    c1, c2 = cfg.channels
    channels = (5 if cfg.head == "events" else 3) * c1 + 3 * c2
    return round(TAIL_BASE + TAIL_PER_OP * _schedule(cfg)[1] + TAIL_PER_CHANNEL * channels)


def arena_estimate(cfg) -> int:
    """Estimated TFLite Micro arena (bytes, batch 1) of the full-int8 export of ``cfg``: :func:`arena_head_estimate`
    + :func:`arena_tail_estimate`. Pure Python (counted for thousands of candidates by :func:`search`).

    The modelled schedule reaches the same activation peak as the exported file, but TFLite Micro's greedy planner
    leaves gaps in the real tensor layout that the model does not, so the estimate runs a few percent low (0.94-0.96
    of the measured arena of ``edge`` and ``micro``: ``docs/model-design.md``, measured with ``python
    benchmarks/int8_graph.py``).

    ``int8_native=False`` configs get an estimate too (:func:`_reference_head` + the tail), not checked against an
    export: their full-int8 graph is not what the firmware runs.
    """
    return arena_head_estimate(cfg) + arena_tail_estimate(cfg)


def _frames_in_1s(frontend_name: str) -> int:
    from ..spec import frontend_preset

    return frontend_preset(frontend_name).frames_for_seconds(1.0)


def search(*, max_params: float, max_macs: float, max_ram: float | None = None, base: str = "edge",
           widths=DEFAULT_WIDTHS, mels=DEFAULT_MELS, pools=DEFAULT_POOLS, frames=None, top: int = 10,
           ) -> list[FitCandidate]:
    """Configurations around preset ``base`` (a preset string, :func:`edge_asc.model.resolve_preset`) meeting every
    constraint, largest first (at most ``top``).

    Raises:
        ConfigError: a non-positive constraint or an invalid base preset string.
    """
    from ..model import count_macs, count_params, resolve_preset

    if not (max_params > 0 and max_macs > 0 and (max_ram is None or max_ram > 0)):
        raise ConfigError(f"budgets must be > 0: params={max_params}, macs={max_macs}, ram={max_ram}")
    preset = resolve_preset(base)
    base_cfg = preset.config
    f1s = _frames_in_1s(preset.frontend)
    if frames is None:
        frames = sorted({max(1, round(base_cfg.n_frames * f)) for f in DEFAULT_FRAME_FRACTIONS})
    found: list[FitCandidate] = []
    for w, m, t, pool in itertools.product(widths, mels, frames, pools):
        try:
            cfg = base_cfg.replace(width=float(w), n_mels=int(m), n_frames=int(t), pool=tuple(pool),
                                   gap_bands=min(base_cfg.gap_bands, int(m)))
        except ConfigError:
            continue  # too small for the pooling, or topk > channels
        params = count_params(cfg)
        if params > max_params:
            continue
        macs = count_macs(cfg)
        macs_1s = macs * f1s / cfg.n_frames
        if macs_1s > max_macs:
            continue
        found.append(FitCandidate(config=cfg, params=params, macs=macs, macs_1s=macs_1s, arena_estimate_bytes=0,
                                  base=base))
    found.sort(key=lambda c: (-c.params, -c.macs_1s, -c.config.n_mels, -c.config.n_frames))
    # the arena (an op schedule search per config) only for the largest candidates, until ``top`` fit
    kept: list[FitCandidate] = []
    for c in found:
        arena = arena_estimate(c.config)
        if max_ram is None or arena <= max_ram:
            kept.append(dataclasses.replace(c, arena_estimate_bytes=arena))
            if len(kept) == top:
                break
    return kept


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    """Estimated vs measured arena of an exported model."""

    model: str
    estimate_bytes: int | None
    """:func:`arena_estimate` of the model card's config (None: the card has no model config)."""
    measured_bytes: int | None
    """TFLM arena (None: TFLM cannot run it)."""
    graph_peak_bytes: int = 0
    """peak live activation bytes of the exported graph (:mod:`.graph`), known even when TFLM cannot run it."""
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if self.estimate_bytes and self.measured_bytes:
            return self.measured_bytes / self.estimate_bytes
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "estimate_bytes": self.estimate_bytes, "measured_bytes": self.measured_bytes,
                "graph_peak_bytes": self.graph_peak_bytes, "ratio": self.ratio, "error": self.error}


def confirm(model_path: str) -> Confirmation:
    """Measure the TFLM arena of an exported model and compare it with the estimate for its embedded config.

    Raises:
        ModelContractError: not a readable .tflite.
        MissingExtraError: tflite-micro or ai-edge-litert missing.
    """
    from ..errors import ModelContractError
    from ..model import MiniSegNetConfig
    from ..tflite_meta import read_model_card
    from .graph import read_graph
    from .tflm import measure_arena

    graph = read_graph(model_path)
    est = None
    try:
        card = read_model_card(model_path)
        if card.model_config:
            est = arena_estimate(MiniSegNetConfig.from_dict(card.model_config))
    except (ModelContractError, ConfigError):
        est = None
    res = measure_arena(model_path, op_names=list(graph.op_counts), n_inputs=len(graph.input_shapes))
    return Confirmation(model=str(model_path), estimate_bytes=est, measured_bytes=res.arena_bytes if res.runs else None,
                        graph_peak_bytes=graph.peak_activation_bytes, error="" if res.runs else res.error)
