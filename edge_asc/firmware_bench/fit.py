"""Budget-driven search over the Mini-SegNet family (``edge-asc fit``).

Pure Python on :func:`edge_asc.model.count_params` / :func:`edge_asc.model.count_macs` (no torch): every combination
of width multiplier, mel bins, frames per window and pooling factors around a base preset is counted, those meeting
every constraint are kept, and the largest (most parameters, then most MACs) come first.

Constraints:

- ``max_params``: trainable parameters of the PyTorch model (DCASE counts parameters; at int8 one parameter is one
  byte, plus 3 bytes per int32 bias once exported, minus the batch-norm parameters folded away — check the exported
  model with ``edge-asc report``).
- ``max_macs``: MACs for 1 s of audio, ``count_macs(cfg) * frames_in_1s / n_frames`` (the report's definition).
- ``max_ram``: :func:`arena_estimate`, the int8 activation peak of the Mini-SegNet schedule (a lower bound; confirm it
  on the exported model with :func:`confirm` / ``edge-asc fit --confirm MODEL.tflite``, which runs TFLite Micro).
"""

from __future__ import annotations

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


def arena_estimate(cfg) -> int:
    """Peak bytes of int8 activations live at once for the Mini-SegNet forward pass (batch 1).

    Stages (``a0, a1, a2``: H*W at input, after pool 1, after pool 2; ``pre1, pre2``: the pre-pool activations kept
    for the mask unpooling): enc1 ``in + c1*a0``; pool1 ``pre1 + c1*a1``; enc2 ``pre1 + c1*a1 + c2*a1`` and
    ``pre1 + 2*c2*a1``; pool2 ``pre1 + pre2 + c2*a2``; unpool2 ``pre1 + pre2 + c2*a2 + 2*c2*a1`` (upsampled + mask);
    dec1 ``pre1 + 2*c2*a1``, ``pre1 + c2*a1 + c1*a1``; unpool1 ``pre1 + c1*a1 + 2*c1*a0``; dec2 ``3*c1*a0``
    (input, output, and the mask not yet freed). A lower bound: the exported graph has extra transposes and
    comparisons, and the TFLM arena adds its own data.
    """
    c1, c2 = cfg.channels
    (h0, w0), (h1, w1), (h2, w2) = cfg.feature_sizes
    a0, a1, a2 = h0 * w0, h1 * w1, h2 * w2
    inp = cfg.in_channels * a0
    pre1, pre2 = c1 * a0, c2 * a1
    stages = [
        inp + c1 * a0,
        pre1 + c1 * a1,
        pre1 + c1 * a1 + c2 * a1,
        pre1 + 2 * c2 * a1,
        pre1 + pre2 + c2 * a2,
        pre1 + pre2 + c2 * a2 + 2 * c2 * a1,
        pre1 + c2 * a1 + c1 * a1,
        pre1 + c1 * a1 + 2 * c1 * a0,
        3 * c1 * a0,
    ]
    return max(stages)


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
        arena = arena_estimate(cfg)
        if max_ram is not None and arena > max_ram:
            continue
        found.append(FitCandidate(config=cfg, params=params, macs=macs, macs_1s=macs_1s, arena_estimate_bytes=arena,
                                  base=base))
    found.sort(key=lambda c: (-c.params, -c.macs_1s, -c.config.n_mels, -c.config.n_frames))
    return found[:top]


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
