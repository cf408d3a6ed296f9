"""Export-friendly building blocks of Mini-SegNet (torch): MixupNorm, index-free SegNet unpooling, event extraction.

Every block uses only ops that the ONNX dynamo exporter, onnx2tf and int8 TFLite / TFLite Micro handle as builtins:
no ``MaxUnpool2d`` indices, no ``argmax``, no ``topk``, no ``one_hot``. Each block has two formulations:

- *reference* (``int8_native=False``, what checkpoints written before the flag existed use): comparisons and a
  division (EQUAL, LESS, CAST, ABS, DIV, MINIMUM/MAXIMUM against constants). Their int8 export keeps bool and float32
  tensors (EQUAL -> CAST -> QUANTIZE) at full resolution and ops that TFLite Micro, Vela and the Edge TPU compiler
  do not map.
- *int8-native* (``int8_native=True``, every preset): the same functions written with ops whose int8 kernels exist
  everywhere we deploy (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, MEAN, REDUCE_MAX, REDUCE_MIN,
  MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR, PAD, RESHAPE, CONCATENATION, RELU, RELU6). Every clamp to [0, 1] is written
  as ``relu6(6 z) / 6`` with the factor 6 carried into the next linear op: RELU6 is a fused activation of TFLite's int8
  ADD/SUB/MUL/CONV (no extra op), while ``clamp`` exports as MINIMUM + RELU (Vela keeps MINIMUM on the CPU when its
  constant's quantisation differs from the output's). Comparisons become steep ramps one int8 step wide, so the
  float model computes what its int8 export computes.
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


#: Floor of the per-(sample, channel) scale of the instance norms. Without it a near-constant channel (silence, a
#: muted microphone) gives an int8 divisor that rounds to its zero point, which TFLite's int8 DIV rejects at run time
#: ("data[i] != zero_point"). The floor is applied to the standard deviation, after the square root (a floor on the
#: variance is lost to the int8 variance tensor's step): the divisor is then >= 0.1, which stays above the zero point
#: while the calibrated std range is below 51 (int8 step max/255). In float it only caps the gain of channels whose
#: std is below 0.1 at 10 (instead of up to 1/sqrt(eps) = 316). The measurements: ``docs/int8-fidelity.md``.
STD_FLOOR = 0.1


#: sqrt(pi / 2): the standard deviation of a Gaussian over its mean absolute deviation. The 'mad' scale statistic
#: times this equals the standard deviation for Gaussian activations.
MAD_TO_STD = 1.2533141373155003


#: Knots of :class:`PiecewiseReciprocal` for the int8-native instance norms, in units of the scale statistic:
#: geometric from ``STD_FLOOR`` to 16 (28 segments, ratio 1.2), a range that covers the scales of trained models
#: (0.2..4). Linear interpolation of 1/s between them is within 0.9% of 1/s.
RECIP_KNOTS = tuple(STD_FLOOR * 160.0 ** (i / 28) for i in range(29))


class PiecewiseReciprocal(nn.Module):
    """``r(s) ~ 1 / clamp(s * input_scale, t_0, t_K)``: 1/s interpolated linearly between the knots ``t_j``, as
    two FULLY_CONNECTED ops (no DIV, no SQRT: neither has an int8 kernel on Vela, the Edge TPU or every TFLite Micro).

    ``r(s) = 1/t_K + sum_j (1/t_{j-1} - 1/t_j) * clamp((t_j - s) / (t_j - t_{j-1}), 0, 1)``: each saturating hinge
    is a fused RELU6 of the first FULLY_CONNECTED (``relu6(6 (t_j - s) / d_j)``, every hinge spanning [0, 6], so its
    int8 step is the same fraction of every segment), the sum is the second. Below ``t_0`` every hinge is saturated
    (``r = 1 / t_0``: the floor of the instance norms' scale is built in), above ``t_K`` none is.

    Input float32[..., 1] (the raw statistic, multiplied by ``input_scale`` first); output float32[..., 1].
    """

    def __init__(self, knots: tuple[float, ...] = RECIP_KNOTS, input_scale: float = 1.0) -> None:
        super().__init__()
        t = torch.tensor(knots, dtype=torch.float64)
        if t.ndim != 1 or len(t) < 2 or not bool(torch.all(t[1:] > t[:-1])) or not bool(t[0] > 0):
            raise ValueError(f"knots must be positive and increasing, got {knots!r}")
        d = t[1:] - t[:-1]
        self.register_buffer("w1", (-6.0 * input_scale / d).view(-1, 1).float(), persistent=False)
        self.register_buffer("b1", (6.0 * t[1:] / d).float(), persistent=False)
        self.register_buffer("w2", ((1.0 / t[:-1] - 1.0 / t[1:]) / 6.0).view(1, -1).float(), persistent=False)
        self.register_buffer("b2", (1.0 / t[-1:]).float(), persistent=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu6(F.linear(s, self.w1, self.b1)), self.w2, self.b2)


def _int8_native_mixup_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lam: float,
                            recip: PiecewiseReciprocal) -> torch.Tensor:
    """The 'mad' MixupNorm in int8-native ops: ``d * A + B`` with ``d = x - mu``, ``A = lam + (1 - lam) weight r(s)``,
    ``B = lam mu + (1 - lam) bias``.

    The mean absolute deviation is ``2 mean(relu(d))`` (d has zero mean, so its positive and negative parts have
    equal sums: RELU instead of ABS), and ``recip`` (built with ``input_scale = 2 MAD_TO_STD``) gives
    ``1 / max(MAD_TO_STD * mean|d|, STD_FLOOR)`` within 0.9% (two FULLY_CONNECTED ops on the [N * C, 1] statistics
    instead of an int8 DIV).
    """
    n, c = x.shape[0], x.shape[1]
    mu = x.mean(dim=(2, 3), keepdim=True)
    d = x - mu
    half_mad = F.relu(d).mean(dim=(2, 3), keepdim=True)
    r = recip(half_mad.reshape(n * c, 1)).reshape(n, c, 1, 1)
    a = r * ((1.0 - lam) * weight.view(1, -1, 1, 1)) + lam
    b = mu * lam + (1.0 - lam) * bias.view(1, -1, 1, 1)
    return d * a + b


def _mixup_instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lam: float,
                         eps: float, stat: str = "std") -> torch.Tensor:
    """``lam * x + (1 - lam) * (weight * (x - mu) / s + bias)`` per sample and channel over (H, W).

    Written as ``d * a + b`` with ``d = x - mu`` and per-(N, C) scalars ``a = lam + (1 - lam) * weight / s``,
    ``b = lam * mu + (1 - lam) * bias`` (three full-size ops instead of eight). ``stat`` chooses the scale ``s``:

    - ``'std'``: ``max(sqrt(var + eps), STD_FLOOR)``, the textbook instance norm. Not int8-friendly: the int8 graph
      squares ``d`` into a tensor whose step is (max |d|)^2 / 255, so small deviations square to 0 and outliers
      alone set the variance, and it needs an int8 SQRT, which TFLite Micro does not have.
    - ``'mad'``: ``max(MAD_TO_STD * mean|x - mu|, STD_FLOOR)``, the mean absolute deviation scaled to equal the
      standard deviation for Gaussian activations (``eps`` is unused: the floor bounds the divisor). |d| keeps the
      range of d, nothing is squared and no SQRT is needed. This is the form the presets use.

    The division is applied to the per-(N, C) scalars, not at full resolution (``d / s``): LiteRT's int8 DIV is a
    slow reference kernel, and dividing the whole tensor costs far more latency than it gains agreement (the
    measurement, and what limits agreement instead: ``docs/int8-fidelity.md``).
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

    def __init__(self, channels: int, eps: float = 1e-5, stat: str = "std", int8_native: bool = False) -> None:
        super().__init__()
        if stat not in NORM_STATS:
            raise ValueError(f"instance-norm scale statistic must be 'std' or 'mad', got {stat!r}")
        if int8_native and stat != "mad":
            raise ValueError("the int8-native instance norm uses the 'mad' scale statistic")
        self.eps, self.stat = eps, stat
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.recip = PiecewiseReciprocal(input_scale=2.0 * MAD_TO_STD) if int8_native else None

    def mix(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        """``lam * x + (1 - lam) * self(x)`` (see :func:`_mixup_instance_norm`, :func:`_int8_native_mixup_norm`)."""
        if self.recip is not None:
            return _int8_native_mixup_norm(x, self.weight, self.bias, lam, self.recip)
        return _mixup_instance_norm(x, self.weight, self.bias, lam, self.eps, self.stat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x, 0.0)


class MixupNorm(nn.Module):
    """MixupNorm: ``lam * x + (1 - lam) * InstanceNorm(x)`` with a fixed ``lam`` in [0, 1].

    ``lam = 0`` is instance normalisation (with its affine), ``lam = 1`` is the identity. Shape preserving,
    float32[N, C, H, W]. The instance norm's affine parameters live in ``self.inorm``.
    """

    def __init__(self, channels: int, lam: float, eps: float = 1e-5, stat: str = "std",
                 int8_native: bool = False) -> None:
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"MixupNorm lambda must be in [0, 1], got {lam}")
        self.lam = float(lam)
        self.inorm = InstanceNorm(channels, eps, stat, int8_native)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lam == 1.0:
            return x
        return self.inorm.mix(x, self.lam)


def make_norm(kind: str, channels: int, lam: float = 0.1, stat: str = "std", int8_native: bool = False) -> nn.Module:
    """'bn' -> BatchNorm2d, 'in' -> InstanceNorm (affine), 'mixup' -> MixupNorm(lam); ``stat``: the instance
    norm's scale statistic ('std' or 'mad', see :func:`_mixup_instance_norm`); ``int8_native``: the instance norms'
    int8-native formulation (:func:`_int8_native_mixup_norm`)."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        return InstanceNorm(channels, stat=stat, int8_native=int8_native)
    if kind == "mixup":
        return MixupNorm(channels, lam, stat=stat, int8_native=int8_native)
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


#: Slope of the int8-native comparisons (per activation unit): 255 / 6, one int8 step of a ReLU6 activation. A
#: difference of one step below the maximum turns a ramp ``clamp(1 + CELL_SLOPE * (x - max), 0, 1)`` from 1 to 0,
#: so the int8 model compares like ``==`` on its grid and the float model like ``==`` up to that step.
CELL_SLOPE = 255.0 / 6.0


def mask_unpool(values: torch.Tensor, pre_pool: torch.Tensor, pooled: torch.Tensor,
                factor: tuple[int, int], softness: float | None = None, int8_native: bool = False) -> torch.Tensor:
    """SegNet max-unpooling without indices.

    Args:
        values: float[N, C, h, w], what to place (the decoder's tensor, same shape as ``pooled``).
        pre_pool: float[N, C, H, W], the encoder activation that was max-pooled.
        pooled: float[N, C, h, w], ``max_pool2d(pre_pool, factor, factor)`` (floor mode).
        factor: pooling kernel == stride (kh, kw).
        softness: None for the hard mask; a slope for the soft mask (below).
        int8_native: the soft mask written as ``relu6(6k (pre - up(max - 1/k))) * up(values / 6)`` (identical in
            float; no MINIMUM, no comparison; the hard mask becomes a soft mask of slope ``CELL_SLOPE``).

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
    if int8_native:
        k = CELL_SLOPE if softness is None else softness
        # 6 * clamp(1 + k (pre - max), 0, 1) = relu6(6k (pre - up(max - 1/k))): the shift is applied at the pooled
        # resolution, RELU6 is fused into the full-resolution MUL, and the 1/6 goes into the pooled values. (Scaling
        # ``pre`` first made onnx2tf keep an NCHW copy of the skip tensor: three TRANSPOSE ops more.)
        mask6 = F.relu6((pre_pool - upsample_to(pooled - 1.0 / k, factor, size)) * (6.0 * k))
        return upsample_to(values * (1.0 / 6.0), factor, size) * mask6
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

    All tensors beyond step 1 are 2-D: onnx2tf keeps the layout of 2-D tensors, while it guesses an NCHW->NHWC
    transposition for higher ranks, which breaks a pairwise [N, C, C] formulation. Not differentiable (constant
    w.r.t. x), as in the paper.

    With ``int8_native`` every comparison is a ramp one int8 step wide (``CELL_SLOPE``), so the graph has no
    EQUAL/LESS/CAST and no bool or float tensor: per cell ``e = [x == max_c x]`` is
    ``e6 = relu6(6 + 6 CELL_SLOPE (x - max))`` (REDUCE_MAX, SUB, a diagonal 1x1 CONV_2D with fused RELU6), the first
    maximum is ``relu6(e6_c - 2 sum_{j<c} e6_j)`` (one 1x1 CONV_2D with fused RELU6: for 0/6 inputs it is
    ``e_c AND NOT any lower e_j``, with no full-resolution product), and its MEAN gives the counts (x 6). The
    ranking does the same on the [N, C] counts, with ramps one step of a [-1, 1] int8 grid wide (``RANK_SLOPE``).
    Values one step or more apart rank exactly as in the reference, exact ties go to the lowest index, and channels
    closer than one step share the pick.
    """

    #: Ramp slope of the count ranking, per count fraction: 127.5 = one int8 step of a tensor spanning [-1, 1] (the
    #: counts and the -1 marker of picked channels).
    RANK_SLOPE = 127.5
    #: Units of the counts the int8-native block ranks (count fraction x 6); 1 for the reference block.
    NATIVE_COUNT_UNITS = 6.0

    def __init__(self, channels: int, k: int, int8_native: bool = False) -> None:
        super().__init__()
        if not 1 <= k <= channels:
            raise ValueError(f"need 1 <= k <= channels, got k={k}, channels={channels}")
        self.channels, self.k, self.int8_native = channels, k, int8_native
        tri = torch.tril(torch.ones(channels, channels), diagonal=-1)  # tri[c, j] = 1 if j < c
        # per cell: prior[c] = sum_{j < c} eq[j], as a 1x1 conv with weight[c, j] = tri[c, j]
        self.register_buffer("tri_conv", tri.view(channels, channels, 1, 1).clone(), persistent=False)
        # on [N, C] rows: prior = v @ tri.T
        self.register_buffer("tri_mat", tri.t().contiguous(), persistent=False)
        self.register_buffer("index_frac", (torch.arange(channels, dtype=torch.float32) / channels).view(1, -1),
                             persistent=False)
        # int8-native: "hit here and at no lower channel" = relu6(hit_c - 2 * (hits below)), per cell and per row
        first = torch.eye(channels) - 2.0 * tri
        self.register_buffer("first_conv", first.view(channels, channels, 1, 1).clone(), persistent=False)
        self.register_buffer("first_mat", first.clone(), persistent=False)
        # a full 1x1 convolution with a diagonal weight, not a grouped one: the converter writes a grouped conv as a
        # CONV_2D with groups, which older TFLite Micro builds and the Edge TPU compiler do not run
        self.register_buffer("cell_w", (6.0 * CELL_SLOPE * torch.eye(channels)).view(channels, channels, 1, 1),
                             persistent=False)
        self.register_buffer("cell_b", torch.full((channels,), 6.0), persistent=False)
        # hit6 = relu6(6 + RANK_SLOPE (avail - max)): with counts in units of 6, one step of the [-1, 1] grid is
        # 6 / RANK_SLOPE units, which takes hit6 from 6 to 0
        self.register_buffer("rank_w", self.RANK_SLOPE * torch.eye(channels), persistent=False)

    @property
    def count_units(self) -> float:
        """What one count fraction is in the block's count tensor (the MEAN over cells): 6 for the int8-native
        block, 1 for the reference one. Export verification rounds float counts to that tensor's int8 grid."""
        return self.NATIVE_COUNT_UNITS if self.int8_native else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()  # comparisons below carry no gradient anyway
        if self.int8_native:
            return self._forward_int8_native(x)
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

    def _forward_int8_native(self, x: torch.Tensor) -> torch.Tensor:
        # e6 = 6 [x == max_c x]: a 1x1 conv (weight 6 CELL_SLOPE I, bias 6) with fused RELU6
        e6 = F.relu6(F.conv2d(x - x.amax(dim=1, keepdim=True), self.cell_w, self.cell_b))
        # f6 = 6 [first maximum] = relu6(e6_c - 2 sum_{j<c} e6_j): one 1x1 conv (weight I - 2 tri), fused RELU6
        avail = F.relu6(F.conv2d(e6, self.first_conv)).mean(dim=(2, 3))   # [N, C] count fractions x 6
        out = []
        for _ in range(self.k):
            # relu6(6 + slope (avail - max)) as a FULLY_CONNECTED (weight slope * I, bias 6) with fused RELU6: the
            # difference is exactly 0 at the maximum in int8, and the slope is applied inside the clamped op (a
            # separate MUL spans hundreds of units, and its int8 step swallowed the ramp)
            hit6 = F.relu6(F.linear(avail - avail.amax(dim=1, keepdim=True), self.rank_w, self.cell_b))
            pick = F.relu6(F.linear(hit6, self.first_mat)) * (1.0 / 6.0)  # the lowest-index hit, in [0, 1]
            out.append(((1.0 + self.index_frac) - pick).amin(dim=1, keepdim=True))
            avail = avail - pick * (avail + 6.0)                          # picked -> -6 (a count fraction of -1)
        return torch.cat(out, dim=1)
