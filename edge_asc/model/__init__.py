"""Mini-SegNet family (Shao et al., EURASIP JASMP 2024).

Importing this package does not import torch: the configuration, presets and the parameter / MAC counters are
pure Python (the report and fit tools use them); :func:`build_model` imports torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .complexity import LayerCost, count_macs, count_params, layer_costs
from .config import (
    MODEL_PRESETS,
    MiniSegNetConfig,
    ModelPreset,
    format_preset,
    get_preset,
    model_preset,
    resolve_preset,
    split_preset,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .probe import VerificationProbe

#: The paper's reported parameter count (Table 5, Mini-SegNet with MixupNorm and event extraction).
PAPER_PARAMS = 478_218


def build_model(cfg: MiniSegNetConfig) -> nn.Module:
    """A freshly initialised :class:`edge_asc.model.segnet.MiniSegNet` (train mode) for ``cfg``.

    The module maps normalised features float32[N, C, n_mels, T] (NCHW) to logits float32[N, n_classes].

    Raises:
        MissingExtraError: torch is not installed (``pip install 'edge-asc[train]'``).
    """
    from ..errors import require

    require("torch", "train", "building Mini-SegNet")
    from .segnet import MiniSegNet

    return MiniSegNet(cfg)


def verification_probe(model: nn.Module) -> VerificationProbe:
    """What export verification needs from ``model`` (a :class:`edge_asc.model.segnet.MiniSegNet`) besides its
    logits: the event block's geometry (channels, top-k, the pooled features it is concatenated to, count units) and
    a recorder of the event indices / counts of each forward pass. See :mod:`edge_asc.model.probe`.

    Raises:
        TypeError: ``model`` is not a MiniSegNet.
    """
    from .probe import VerificationProbe

    return VerificationProbe(model)


__all__ = [
    "MODEL_PRESETS",
    "PAPER_PARAMS",
    "LayerCost",
    "MiniSegNetConfig",
    "ModelPreset",
    "build_model",
    "count_macs",
    "count_params",
    "format_preset",
    "get_preset",
    "layer_costs",
    "model_preset",
    "resolve_preset",
    "split_preset",
    "verification_probe",
]
