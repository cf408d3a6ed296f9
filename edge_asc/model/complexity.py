"""Parameter and MAC counts of a :class:`MiniSegNetConfig`, in pure Python (no torch, no TensorFlow).

Conventions (those of the DCASE low-complexity track's ``nessi`` counter, i.e. what a conv/dense layer multiplies):

- parameters: every trainable parameter of the torch module, ``sum(p.numel() for p in model.parameters())``
  (conv and dense weights + biases, normalisation scale/shift); running BN statistics (buffers) are not counted.
- MACs: multiply-accumulates of convolutions (``Cin * Cout * kh * kw * H_out * W_out``; 'same' padding keeps H, W)
  and dense layers (``in * out``) for one input window (batch 1). Normalisation, ReLU, pooling, unpooling, GAP and
  the event block's comparisons are not counted (they are element-wise or are folded into convs after export).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MiniSegNetConfig


@dataclass(frozen=True, kw_only=True)
class LayerCost:
    """One layer's trainable parameters and MACs per window."""

    name: str
    params: int
    macs: int


def layer_costs(cfg: MiniSegNetConfig) -> list[LayerCost]:
    """Per-layer parameters and MACs (batch 1), in forward order."""
    c_in = cfg.in_channels
    c1, c2 = cfg.channels
    kh, kw = cfg.kernel
    k = kh * kw
    (h0, w0), (h1, w1), _ = cfg.feature_sizes
    a0, a1 = h0 * w0, h1 * w1
    out: list[LayerCost] = []

    def conv(name: str, ci: int, co: int, area: int) -> None:
        out.append(LayerCost(name=name, params=ci * co * k + co, macs=ci * co * k * area))

    def norm(name: str, c: int) -> None:
        out.append(LayerCost(name=name, params=2 * c, macs=0))  # BN / IN affine / MixupNorm's IN affine: scale + shift

    conv("enc1.conv", c_in, c1, a0)
    norm("enc1.norm", c1)
    conv("enc2.conv1", c1, c2, a1)
    norm("enc2.bn1", c2)
    conv("enc2.conv2", c2, c2, a1)
    norm("enc2.bn2", c2)
    conv("dec1.conv1", c2, c2, a1)
    norm("dec1.bn1", c2)
    conv("dec1.conv2", c2, c1, a1)
    norm("dec1.bn2", c1)
    conv("dec2.conv", c1, c1, a0)
    norm("dec2.norm", c1)
    u1, u2 = cfg.dense_units
    f = cfg.head_features
    for name, i, o in (("fc1", f, u1), ("fc2", u1, u2), ("out", u2, cfg.n_classes)):
        out.append(LayerCost(name=name, params=i * o + o, macs=i * o))
    return out


def count_params(cfg: MiniSegNetConfig) -> int:
    """Trainable parameters of ``build_model(cfg)`` (equals ``sum(p.numel() for p in model.parameters())``)."""
    return sum(layer.params for layer in layer_costs(cfg))


def count_macs(cfg: MiniSegNetConfig) -> int:
    """Multiply-accumulates for one window of ``cfg.n_frames`` frames (batch 1); see the module docstring."""
    return sum(layer.macs for layer in layer_costs(cfg))
