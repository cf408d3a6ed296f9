"""Export-friendly building blocks of Mini-SegNet (torch): MixupNorm, index-free SegNet unpooling, event extraction.

Every block uses only ops that the ONNX dynamo exporter, onnx2tf and int8 TFLite / TFLite Micro handle as builtins
(PAD, CONV_2D, MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR or reshape/broadcast, EQUAL, MUL, ADD, SUB, MEAN, ABS, SUM,
LESS/GREATER, MINIMUM/MAXIMUM, RELU, FULLY_CONNECTED): no ``MaxUnpool2d`` indices, no ``argmax``, no ``topk``, no ``one_hot``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import NORM_STATS


class SamePadConv2d(nn.Module):
    """2-D convolution with explicit 'same' zero padding (extra row/column at the bottom/right for even kernels).

    Input/output float32[N, C, H, W] with the same H, W. The explicit ``ZeroPad2d`` exports as PAD + CONV_2D.
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        kh, kw = kernel
        # F.pad order: (left, right, top, bottom); the larger half goes after, like TF 'SAME'.
        self.pad = nn.ZeroPad2d(((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=kernel, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


#: Floor of the per-(sample, channel) standard deviation in the instance norms: the int8 model computes
#: 1 / sqrt(var + eps) with an int8 DIV, which fails ("data[i] != zero_point") when the divisor rounds to the zero
#: point, i.e. on near-constant channels: silence or a muted microphone (-80 dBFS noise) made the exported 'edge'
#: model fail on every window, and a trained model failed on real windows too. The floor is applied to the standard
#: deviation, after the square root (a floor on the variance is lost: the int8 variance tensor's step was 0.08): the
#: divisor is then >= 0.1, which stays above the zero point while the calibrated std range is below 51 (int8 step
#: max/255; measured maxima 2.5-4.6, i.e. >= 5 steps). In float it only caps the gain of channels whose std is below
#: 0.1 at 10 (instead of up to 1/sqrt(eps) = 316).
STD_FLOOR = 0.1


#: sqrt(pi / 2): the standard deviation of a Gaussian over its mean absolute deviation. The 'mad' scale statistic
#: times this equals the standard deviation for Gaussian activations.
MAD_TO_STD = 1.2533141373155003


def _mixup_instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lam: float,
                         eps: float, stat: str = "std") -> torch.Tensor:
    """``lam * x + (1 - lam) * (weight * (x - mu) / s + bias)`` per sample and channel over (H, W).

    Written as ``d * a + b`` with ``d = x - mu`` and per-(N, C) scalars ``a = lam + (1 - lam) * weight / s``,
    ``b = lam * mu + (1 - lam) * bias`` (three full-size ops instead of eight). ``stat`` chooses the scale ``s``:

    - ``'std'``: ``max(sqrt(var + eps), STD_FLOOR)``, the textbook instance norm. Not int8-friendly: the int8 graph
      squares ``d`` into a tensor whose step is (max |d|)^2 / 255 (measured: 4.9 on a trained 'edge' model, so
      every |d| < 1.6 squared to 0 and the variance came from outliers alone), and needs an int8 SQRT, which
      TFLite Micro does not have.
    - ``'mad'``: ``max(MAD_TO_STD * mean|x - mu|, STD_FLOOR)``, the mean absolute deviation scaled to equal the
      standard deviation for Gaussian activations (``eps`` is unused: the floor bounds the divisor). |d| keeps the
      range of d, nothing is squared and no SQRT is needed. This is the form the presets use.

    Measured on one trained 'edge' checkpoint (360 held-out windows, float-vs-int8 top-1 agreement / int8 LiteRT
    latency per window on the x86 host, 1 thread): 'mad' as written here 0.78 / 1.6 ms; 'mad' with the division
    done at full resolution (``d / s``) 0.81 / 5.7 ms (LiteRT's int8 DIV is a slow reference kernel: not worth it).
    The remaining disagreement comes from the argmax-based unpooling and event block amplifying int8 noise (see
    the README's "int8 fidelity").
    """
    mu = x.mean(dim=(2, 3), keepdim=True)
    d = x - mu
    w = weight.view(1, -1, 1, 1)
    b = bias.view(1, -1, 1, 1)
    if stat == "mad":
        s = MAD_TO_STD * d.abs().mean(dim=(2, 3), keepdim=True)
    else:
        s = torch.sqrt((d * d).mean(dim=(2, 3), keepdim=True) + eps)
    scale = w / torch.clamp(s, min=STD_FLOOR)
    if lam == 0.0:
        return d * scale + b
    return d * (lam + (1.0 - lam) * scale) + (lam * mu + (1.0 - lam) * b)


class InstanceNorm(nn.Module):
    """Instance normalisation over (H, W) per sample and channel, with per-channel affine scale/shift.

    Equals ``nn.InstanceNorm2d(C, affine=True, eps=eps)`` (biased variance), written with mean/sub/mul/rsqrt so it
    lowers to plain arithmetic ops.
    """

    def __init__(self, channels: int, eps: float = 1e-5, stat: str = "std") -> None:
        super().__init__()
        if stat not in NORM_STATS:
            raise ValueError(f"instance-norm scale statistic must be 'std' or 'mad', got {stat!r}")
        self.eps, self.stat = eps, stat
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mixup_instance_norm(x, self.weight, self.bias, 0.0, self.eps, self.stat)


class MixupNorm(nn.Module):
    """MixupNorm: ``lam * x + (1 - lam) * InstanceNorm(x)`` with a fixed ``lam`` in [0, 1].

    ``lam = 0`` is instance normalisation (with its affine), ``lam = 1`` is the identity. Shape preserving,
    float32[N, C, H, W]. The instance norm's affine parameters live in ``self.inorm``.
    """

    def __init__(self, channels: int, lam: float, eps: float = 1e-5, stat: str = "std") -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"MixupNorm lambda must be in [0, 1], got {lam}")
        self.lam = float(lam)
        self.inorm = InstanceNorm(channels, eps, stat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lam == 1.0:
            return x
        return _mixup_instance_norm(x, self.inorm.weight, self.inorm.bias, self.lam, self.inorm.eps,
                                    self.inorm.stat)


def make_norm(kind: str, channels: int, lam: float = 0.1, stat: str = "std") -> nn.Module:
    """'bn' -> BatchNorm2d, 'in' -> InstanceNorm (affine), 'mixup' -> MixupNorm(lam); ``stat``: the instance
    norm's scale statistic ('std' or 'mad', see :func:`_mixup_instance_norm`)."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        return InstanceNorm(channels, stat=stat)
    if kind == "mixup":
        return MixupNorm(channels, lam, stat=stat)
    raise ValueError(f"unknown norm {kind!r}")


def upsample_to(x: torch.Tensor, factor: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour upsample float[N, C, h, w] by integer ``factor`` then zero-pad bottom/right to ``size``.

    ``size`` is the pre-pooling (H, W), with ``h * fh <= H < (h + 1) * fh`` (floor pooling dropped the remainder).
    """
    fh, fw = factor
    h, w = x.shape[2], x.shape[3]
    # nearest resize by an integer factor = exact replication; exports as ONNX Resize -> RESIZE_NEAREST_NEIGHBOR
    # (a 6-D reshape/expand is exact too, but onnx2tf mis-transposes tensors of rank > 4).
    y = F.interpolate(x, size=(h * fh, w * fw), mode="nearest")
    ph, pw = size[0] - h * fh, size[1] - w * fw
    if ph or pw:
        y = F.pad(y, (0, pw, 0, ph))
    return y


def mask_unpool(values: torch.Tensor, pre_pool: torch.Tensor, pooled: torch.Tensor,
                factor: tuple[int, int], softness: float | None = None) -> torch.Tensor:
    """SegNet max-unpooling without indices.

    Args:
        values: float[N, C, h, w], what to place (the decoder's tensor, same shape as ``pooled``).
        pre_pool: float[N, C, H, W], the encoder activation that was max-pooled.
        pooled: float[N, C, h, w], ``max_pool2d(pre_pool, factor, factor)`` (floor mode).
        factor: pooling kernel == stride (kh, kw).
        softness: None for the hard mask; a slope for the soft mask (below).

    Returns:
        float[N, C, H, W]. Hard mask: each value of ``values`` is written at the positions of its pooling window
        where ``pre_pool`` equals the window maximum, zeros elsewhere. Equals ``MaxUnpool2d`` with the pooling
        indices except where a window has tied maxima (MaxUnpool2d keeps one position, this keeps all of them).
        Soft mask: each position gets ``clamp(1 + softness * (pre_pool - window max), 0, 1)`` of the value: 1 at the
        maximum, linearly less for values up to ``1 / softness`` below it, 0 further down.

    The hard mask is a step function of int8-rounded activations: when two positions of a window are within the
    int8 noise of each other, float and int8 put the value in different cells. The soft mask is continuous (a
    perturbation ``e`` changes it by at most ``softness * e``) and exports to builtins too (SUB, MUL, ADD, MINIMUM,
    RELU).
    """
    size = (pre_pool.shape[2], pre_pool.shape[3])
    up_max = upsample_to(pooled, factor, size)
    if softness is None:
        mask = (pre_pool == up_max).to(values.dtype)
    else:
        mask = torch.clamp(1.0 + softness * (pre_pool - up_max), 0.0, 1.0)
    return upsample_to(values, factor, size) * mask


class EventExtraction(nn.Module):
    """Event extraction block: the ``k`` most frequent per-cell argmax channels, as fractions of C.

    For x float[N, C, H, W]: S[n, h, w] = argmax_c x[n, c, h, w] (ties -> lowest channel index); count[n, c] =
    number of cells whose S is c; channels are ranked by (count desc, index asc); the output is
    float32[N, k] = (index of rank 0, ..., index of rank k-1) / C.

    Formulated with exactly reproducible ops and no argmax / topk / one_hot / cumsum:

    1. per cell, one-hot of the first maximum: ``eq = (x == max_c x)``; the number of maxima *before* channel c
       is a fixed strictly-lower-triangular 1x1 convolution; ``first = eq * (prior < 0.5)``. (Not the inclusive
       count ``< 1.5``: in int8 its tensor range is calibrated, and when the float calibration data never has tied
       maxima the range ends at 1, so 2 saturates to 1 and every tied channel passes. ``prior`` reaches >= 1 in
       any window whose maximum is not the last channel, so its range always covers 1.)
    2. ``count = mean_{h,w} first`` -> [N, C] (the fraction of cells, in [0, 1]: the same ranking as the sums, but
       an int8 tensor of scale < 1, which TFLite's int8 EQUAL/LESS kernels require (their input rescaling aborts
       on a scale >= 1; raw counts up to H*W would need a scale of H*W/255));
    3. ``k`` selection rounds on the 2-D [N, C] counts: ``m = max_c avail``; the first channel with ``avail == m``
       (``prior < 0.5`` again, as a [C, C] matmul); its index / C is output (as ``min_c(index/C + 1 - pick)``);
       it is then set to -1 in ``avail``.

    All tensors beyond step 1 are 2-D (onnx2tf keeps their layout; its NCHW->NHWC guessing broke an earlier
    pairwise [N, C, C] formulation). Not differentiable (constant w.r.t. x), as in the paper.
    """

    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        if not 1 <= k <= channels:
            raise ValueError(f"need 1 <= k <= channels, got k={k}, channels={channels}")
        self.channels, self.k = channels, k
        tri = torch.tril(torch.ones(channels, channels), diagonal=-1)  # tri[c, j] = 1 if j < c
        # per cell: prior[c] = sum_{j < c} eq[j], as a 1x1 conv with weight[c, j] = tri[c, j]
        self.register_buffer("tri_conv", tri.view(channels, channels, 1, 1).clone(), persistent=False)
        # on [N, C] rows: prior = v @ tri.T
        self.register_buffer("tri_mat", tri.t().contiguous(), persistent=False)
        self.register_buffer("index_frac", (torch.arange(channels, dtype=torch.float32) / channels).view(1, -1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()  # comparisons below carry no gradient anyway
        eq = (x == x.amax(dim=1, keepdim=True)).to(x.dtype)             # [N, C, H, W], 1 where max (ties: all)
        prior = F.conv2d(eq, self.tri_conv)                             # maxima at channels below c
        first = eq * (prior < 0.5).to(x.dtype)                          # exactly one 1 per cell: lowest index
        avail = first.mean(dim=(2, 3))                                  # [N, C] count fractions in [0, 1]
        out = []
        for _ in range(self.k):
            hit = (avail == avail.amax(dim=1, keepdim=True)).to(x.dtype)  # [N, C] channels with the top count
            pick = hit * ((hit @ self.tri_mat) < 0.5).to(x.dtype)         # the lowest-index one
            # index / C of the picked channel as a min over ``index/C + (1 - pick)`` (others are >= 1), not as
            # ``sum(pick * index/C)``: in int8 a product's range is calibrated, so an index larger than any seen at
            # this rank during calibration saturated to the largest seen one; this tensor's range is [0, 2) by
            # construction (the non-picked entries span it), and REDUCE_MIN keeps its input's quantisation.
            out.append((self.index_frac + (1.0 - pick)).amin(dim=1, keepdim=True))
            avail = avail * (1.0 - pick) - pick                          # picked -> -1, below every real count
        return torch.cat(out, dim=1)                                     # [N, k]
