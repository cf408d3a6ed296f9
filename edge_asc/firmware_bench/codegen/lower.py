"""Lower each TFLite operator to a call of a C kernel (``c/ek_kernels.c``) with parameters computed exactly as
TensorFlow Lite Micro's ``Prepare`` computes them (multipliers, shifts, offsets, clamps, paddings, broadcast strides,
nearest-neighbour index tables).

:data:`LOWERINGS` maps a builtin op name to its lowering; an op that is not there, or a variant a lowering does not
handle (int16 activations, a float op inside the graph), raises :class:`UnsupportedOpError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...errors import ModelContractError
from .graph import Model, Op, Tensor
from .quant import activation_range, f32, quantize_multiplier, round_half_away

MAXD = 6


class UnsupportedOpError(ModelContractError):
    """The model has an op (or an op variant) the firmware generator has no kernel for."""


@dataclass
class Lowered:
    """C code of one op: ``decls`` at file scope (const parameter structs, tables), ``body`` inside the invoke
    function; ``macs`` its multiply-accumulates (conv/dense), ``work`` its element count for other ops."""

    index: int
    name: str
    decls: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    macs: int = 0
    work: int = 0
    scratch: int = 0  # bytes of scratch memory the op needs while it runs (planned in the arena)


class Context:
    """What a lowering may ask: tensors, the C expression of a tensor's data pointer, unique C names."""

    def __init__(self, model: Model, ptr: Callable[[int], str], scratch: Callable[[int], str] | None = None, *,
                 single_rounding: bool = False, fast: bool = True, fusions: dict[int, int] | None = None) -> None:
        self.model = model
        self.ptr = ptr
        self.scratch = scratch or (lambda k: "NULL")
        self.single_rounding = single_rounding
        self.fast = fast
        self.fusions = dict(fusions or {})
        self.fused_into = {k2: k for k, k2 in self.fusions.items()}

    def t(self, index: int) -> Tensor:
        return self.model.tensors[index]

    def qm(self, real: float) -> tuple[int, int]:
        return quantize_multiplier(real, single_rounding=self.single_rounding)


def _c_ints(values: Sequence[int], per_line: int = 16) -> str:
    vals = [str(int(v)) for v in values]
    if not vals:
        return "0"
    return ",\n    ".join(", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line))


def _struct(ctype: str, name: str, fields: dict[str, object]) -> str:
    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "{" + ", ".join(str(int(x)) for x in v) + "}"
        if isinstance(v, dict):
            return "{" + ", ".join(f".{k} = {fmt(x)}" for k, x in v.items()) + "}"
        return str(int(v))
    inner = ", ".join(f".{k} = {fmt(v)}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{{inner}}};"


def _pad6(vals: Sequence[int], fill: int = 0) -> list[int]:
    return list(vals) + [fill] * (MAXD - len(vals))


def _require_int8(op: Op, ctx: Context, tensors: Sequence[int], what: str = "") -> None:
    for i in tensors:
        t = ctx.t(i)
        if t.dtype != "int8":
            raise UnsupportedOpError(f"{op.name} (op {op.index}) with {t.dtype} {what or 'tensors'} is not supported "
                                     "(the firmware generator runs full-int8 graphs)")


def _strides(shape: Sequence[int]) -> list[int]:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return st[::-1]


def _collapse(dims: list[int], *stride_lists: list[int]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims and merge neighbours that are contiguous in every operand."""
    keep = [i for i, d in enumerate(dims) if d != 1]
    dims = [dims[i] for i in keep]
    sts = [[s[i] for i in keep] for s in stride_lists]
    i = len(dims) - 2
    while i >= 0:
        if all(s[i] == s[i + 1] * dims[i + 1] for s in sts):
            dims[i] *= dims[i + 1]
            del dims[i + 1]
            for s in sts:
                s[i] = s[i + 1]
                del s[i + 1]
        i -= 1
    return dims, sts


def broadcast(shape1: Sequence[int], shape2: Sequence[int], out_shape: Sequence[int]) -> dict:
    """``ek_bcast_t`` fields for a binary op: collapsed output dims and each input's element strides."""
    n = len(out_shape)
    s1 = [1] * (n - len(shape1)) + list(shape1)
    s2 = [1] * (n - len(shape2)) + list(shape2)
    st1 = [0 if a == 1 and o != 1 else s for a, o, s in zip(s1, out_shape, _strides(s1))]
    st2 = [0 if a == 1 and o != 1 else s for a, o, s in zip(s2, out_shape, _strides(s2))]
    dims, (c1, c2) = _collapse(list(out_shape), st1, st2)
    size = int(np.prod(out_shape, dtype=np.int64)) if out_shape else 1
    if not dims:
        dims, c1, c2 = [1], [1], [1]
    if len(dims) == 1 and c1 == [1] and c2 == [1]:
        return {"size": size, "nd": 0, "dims": _pad6([]), "st1": _pad6([]), "st2": _pad6([])}
    if len(dims) > MAXD:
        raise UnsupportedOpError(f"broadcast over {len(dims)} non-mergeable dims (at most {MAXD})")
    return {"size": size, "nd": len(dims), "dims": _pad6(dims), "st1": _pad6(c1), "st2": _pad6(c2)}


def grouped(shape1: Sequence[int], shape2: Sequence[int], out_shape: Sequence[int]) -> dict | None:
    """``ek_grouped_t`` fields: iterate the smaller operand's elements (s dims) and, for each, the output elements
    that use it (b dims). None when neither operand is smaller than the output."""
    n = len(out_shape)
    size1 = int(np.prod(shape1, dtype=np.int64)) if shape1 else 1
    size2 = int(np.prod(shape2, dtype=np.int64)) if shape2 else 1
    size = int(np.prod(out_shape, dtype=np.int64)) if out_shape else 1
    if min(size1, size2) >= size:
        return None
    small_first = size1 < size2
    s1 = [1] * (n - len(shape1)) + list(shape1)
    s2 = [1] * (n - len(shape2)) + list(shape2)
    st1 = [0 if a == 1 and o != 1 else s for a, o, s in zip(s1, out_shape, _strides(s1))]
    st2 = [0 if a == 1 and o != 1 else s for a, o, s in zip(s2, out_shape, _strides(s2))]
    dims, (c1, c2, co) = _collapse(list(out_shape), st1, st2, _strides(out_shape))
    small, big = (c1, c2) if small_first else (c2, c1)
    s_idx = [i for i in range(len(dims)) if small[i] != 0]
    b_idx = [i for i in range(len(dims)) if small[i] == 0]
    if len(s_idx) > MAXD or len(b_idx) > MAXD:
        raise UnsupportedOpError(f"broadcast over too many dims ({len(dims)})")
    return {"n_s": len(s_idx), "n_b": len(b_idx), "small_first": int(small_first),
            "s_dims": _pad6([dims[i] for i in s_idx]), "s_out": _pad6([co[i] for i in s_idx]),
            "s_big": _pad6([big[i] for i in s_idx]), "s_small": _pad6([small[i] for i in s_idx]),
            "b_dims": _pad6([dims[i] for i in b_idx]), "b_out": _pad6([co[i] for i in b_idx]),
            "b_big": _pad6([big[i] for i in b_idx]), "_n_small": min(size1, size2)}


#: instructions per element of the direct kernels and per table entry of the table builds (Cortex-M4, measured
#: once: they only choose between two exact ways of computing the same result)
_DIRECT_COST = {"ADD": 26, "SUB": 26, "MUL": 24, "MAXIMUM": 8, "MINIMUM": 8}
_ENTRY_COST = {"ADD": 70, "SUB": 70, "MUL": 35, "MAXIMUM": 12, "MINIMUM": 12}
_OP_CODE = {"ADD": "EK_OP_ADD", "SUB": "EK_OP_SUB", "MUL": "EK_OP_MUL", "MAXIMUM": "EK_OP_MAX", "MINIMUM": "EK_OP_MIN"}


def _binary_call(op: Op, ctx: Context, a: Tensor, b: Tensor, o: Tensor, bc: dict, struct: str | None,
                 direct: str) -> tuple[list[str], list[str], int]:
    """(extra decls, body, scratch bytes): the direct kernel call, or the per-value table kernel when cheaper."""
    g = grouped(a.shape, b.shape, o.shape) if ctx.fast else None
    n = bc["size"]
    if g is not None:
        table_cost = g["_n_small"] * 256 * _ENTRY_COST[op.name] + n * 7
        if table_cost < n * _DIRECT_COST[op.name]:
            gname = f"ek_g{op.index}"
            big, small = (b, a) if g["small_first"] else (a, b)
            fields = {k: v for k, v in g.items() if not k.startswith("_")}
            params = f"&{struct}" if struct else "NULL"
            return ([_struct("ek_grouped_t", gname, fields)],
                    [f"ek_binary_grouped_s8(&{gname}, {_OP_CODE[op.name]}, {params}, {ctx.ptr(big.index)}, "
                     f"{ctx.ptr(small.index)}, {ctx.ptr(o.index)}, {ctx.scratch(op.index)});"], 256)
    if ctx.fast and op.name in ("ADD", "SUB") and n >= 1024:
        return ([], [f"ek_addsub_tab_s8(&{struct}, {int(op.name == 'SUB')}, {ctx.ptr(a.index)}, {ctx.ptr(b.index)}, "
                     f"{ctx.ptr(o.index)}, (int32_t *){ctx.scratch(op.index)});"], 2048)
    return [], [direct], 0


# ---- element-wise binary ops --------------------------------------------------------------------------------------

def _binary_common(op: Op, ctx: Context) -> tuple[Tensor, Tensor, Tensor, dict]:
    _require_int8(op, ctx, [*op.inputs[:2], op.outputs[0]])
    a, b, o = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    return a, b, o, broadcast(a.shape, b.shape, o.shape)


def lower_add_sub(op: Op, ctx: Context) -> Lowered:
    a, b, o, bc = _binary_common(op, ctx)
    sa, sb, so = f32(a.scale), f32(b.scale), f32(o.scale)
    left_shift = 20
    if op.name == "ADD":  # add_common.cc: double precision
        twice = 2.0 * float(max(sa, sb))
        r1, r2 = float(sa) / twice, float(sb) / twice
        ro = twice / ((1 << left_shift) * float(so))
    else:  # sub_common.cc: float32 precision, then widened
        twice32 = f32(2) * max(sa, sb)
        r1, r2 = float(sa / twice32), float(sb / twice32)
        ro = float(twice32 / (f32(1 << left_shift) * so))
    (m1, s1), (m2, s2), (mo, s_o) = ctx.qm(r1), ctx.qm(r2), ctx.qm(ro)
    lo, hi = activation_range(op.options.get("fused_activation_function", 0), so, o.zero_point)
    name = f"ek_p{op.index}"
    fields = {"b": bc, "in1_offset": -a.zero_point, "in2_offset": -b.zero_point, "out_offset": o.zero_point,
              "in1_mult": m1, "in2_mult": m2, "out_mult": mo, "in1_shift": s1, "in2_shift": s2, "out_shift": s_o,
              "left_shift": left_shift, "act_min": lo, "act_max": hi}
    fn = "ek_add_s8" if op.name == "ADD" else "ek_sub_s8"
    extra, body, scratch = _binary_call(op, ctx, a, b, o, bc, name,
                                        f"{fn}(&{name}, {ctx.ptr(a.index)}, {ctx.ptr(b.index)}, {ctx.ptr(o.index)});")
    return Lowered(op.index, op.name, decls=[_struct("ek_addsub_t", name, fields), *extra], body=body,
                   work=bc["size"], scratch=scratch)


def lower_mul(op: Op, ctx: Context) -> Lowered:
    a, b, o, bc = _binary_common(op, ctx)
    real = float(f32(a.scale)) * float(f32(b.scale)) / float(f32(o.scale))
    m, s = ctx.qm(real)
    lo, hi = activation_range(op.options.get("fused_activation_function", 0), o.scale, o.zero_point)
    name = f"ek_p{op.index}"
    fields = {"b": bc, "in1_offset": -a.zero_point, "in2_offset": -b.zero_point, "out_offset": o.zero_point,
              "out_mult": m, "out_shift": s, "act_min": lo, "act_max": hi}
    call = f"ek_mul_s8(&{name}, {ctx.ptr(a.index)}, {ctx.ptr(b.index)}, {ctx.ptr(o.index)});"
    extra, body, scratch = _binary_call(op, ctx, a, b, o, bc, name, call)
    return Lowered(op.index, op.name, decls=[_struct("ek_mul_t", name, fields), *extra], body=body,
                   work=bc["size"], scratch=scratch)


def lower_max_min(op: Op, ctx: Context) -> Lowered:
    a, b, o, bc = _binary_common(op, ctx)
    name = f"ek_p{op.index}"
    fn = "ek_maximum_s8" if op.name == "MAXIMUM" else "ek_minimum_s8"
    extra, body, scratch = _binary_call(op, ctx, a, b, o, bc, None,
                                        f"{fn}(&{name}, {ctx.ptr(a.index)}, {ctx.ptr(b.index)}, {ctx.ptr(o.index)});")
    return Lowered(op.index, op.name, decls=[_struct("ek_bcast_t", name, bc), *extra], body=body,
                   work=bc["size"], scratch=scratch)


# ---- convolutions and dense -------------------------------------------------------------------------------------

def _padding(padding: int, stride: int, dilation: int, in_size: int, k: int) -> tuple[int, int]:
    """(out size, leading pad) as TFLite's ComputePaddingHeightWidth (padding 0 = SAME, 1 = VALID)."""
    eff = (k - 1) * dilation + 1
    out = (in_size + stride - 1) // stride if padding == 0 else (in_size + stride - eff) // stride
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2


def _per_channel(ctx: Context, x: Tensor, w: Tensor, o: Tensor, n: int) -> tuple[list[int], list[int]]:
    """Per-channel multipliers as PopulateConvolutionQuantizationParams (double precision)."""
    scales = list(w.scales) if len(w.scales) > 1 else [w.scales[0]] * n
    mults, shifts = [], []
    for s in scales:
        m, sh = ctx.qm(float(f32(x.scale)) * float(f32(s)) / float(f32(o.scale)))
        mults.append(m)
        shifts.append(sh)
    return mults, shifts


def _bias(op: Op, ctx: Context, slot: int = 2) -> str:
    if len(op.inputs) > slot and op.inputs[slot] >= 0:
        bt = ctx.t(op.inputs[slot])
        if bt.dtype != "int32":
            raise UnsupportedOpError(f"{op.name} (op {op.index}) with a {bt.dtype} bias is not supported")
        return ctx.ptr(bt.index)
    return "NULL"


def _ceil4(n: int) -> int:
    return (n + 3) // 4 * 4


def fast_weight_layout(w: np.ndarray, row: int) -> np.ndarray:
    """The fast kernels' weight layout of int8 ``w[rows, k]``: every row zero-padded to ``row`` bytes (a multiple
    of 4), rows taken in pairs and each pair word-interleaved (4 bytes of row 2q, 4 of row 2q + 1, ...), an odd last
    row left plain. Returns int8[rows * row]."""
    rows, k = w.shape
    padded = np.zeros((rows, row), dtype=np.int8)
    padded[:, :k] = w
    out = []
    for q in range(0, rows - 1, 2):
        pair = padded[q:q + 2].reshape(2, row // 4, 4).transpose(1, 0, 2)
        out.append(pair.reshape(-1))
    if rows % 2:
        out.append(padded[-1])
    return np.concatenate(out) if out else np.zeros(0, np.int8)


def _padded_weights(name: str, w: np.ndarray, row: int) -> str:
    data = fast_weight_layout(w, row)
    return f"static const int8_t {name}[{data.size}] __attribute__((aligned(4))) = {{\n    {_c_ints(data, 32)}}};"


def _round_fast(shifts: list[int], depth: int, bias: np.ndarray | None) -> int:
    """1 when the fast kernels may round with one add: every shift <= 0 and no requantised value (at most the
    accumulator: depth int8 products of |x + offset| <= 255 and |w| <= 128, plus the bias) plus 2^(e-1) reaches
    2^31, so that (v + 2^(e-1) - (v < 0)) >> e equals RoundingDivideByPOT(v, e); 2 when that sum stays below 2^30
    too, so that the doubling high multiply is a single rounded 32 x 32 high-word multiply of 2 x acc."""
    if any(sh > 0 for sh in shifts):
        return 0
    bound = depth * 255 * 128 + (int(np.abs(bias.astype(np.int64)).max()) if bias is not None and bias.size else 0)
    e = max(-sh for sh in shifts)
    total = bound + ((1 << (e - 1)) if e else 0)
    return 2 if total < (1 << 30) else int(total < (1 << 31))


def _bias_data(op: Op, ctx: Context, slot: int = 2) -> np.ndarray | None:
    if len(op.inputs) > slot and op.inputs[slot] >= 0:
        return ctx.t(op.inputs[slot]).data
    return None


def _rq_array(name: str, bias: np.ndarray | None, mults: list[int], shifts: list[int]) -> str:
    """``ek_rq_t`` per channel (bias, multiplier, right shift e, 2^(e-1)) for the fast kernels' requantisation."""
    b = [0] * len(mults) if bias is None else [int(v) for v in np.asarray(bias).reshape(-1)]
    rows = [f"{{{bb}, {m}, {-sh}, {(1 << (-sh - 1)) if sh < 0 else 0}}}" for bb, m, sh in zip(b, mults, shifts)]
    return f"static const ek_rq_t {name}_rq[{len(rows)}] = {{\n    " + ",\n    ".join(rows) + "};"


def _fast_args(op: Op, ctx: Context, name: str, mults: list[int], shifts: list[int], depth: int
               ) -> tuple[int, list[str], str]:
    """(round_fast, decls, the requantisation arguments 'rq, mult, shift, bias') of a fast conv / dense call."""
    bias = _bias_data(op, ctx)
    rf = _round_fast(shifts, depth, bias)
    if rf:
        return rf, [_rq_array(name, bias, mults, shifts)], f"{name}_rq, NULL, NULL, NULL"
    return rf, _arrays(name, mults, shifts), f"NULL, {name}_m, {name}_s, {_bias(op, ctx)}"


def _arrays(name: str, mults: list[int], shifts: list[int]) -> list[str]:
    return [f"static const int32_t {name}_m[{len(mults)}] = {{\n    {_c_ints(mults)}}};",
            f"static const int32_t {name}_s[{len(shifts)}] = {{\n    {_c_ints(shifts)}}};"]


def lower_conv2d(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.inputs[1], op.outputs[0]])
    x, w, o = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    if len(x.shape) != 4:
        raise UnsupportedOpError(f"CONV_2D (op {op.index}) with a {len(x.shape)}-D input is not supported")
    n, ih, iw, ic = x.shape
    oc, kh, kw, kc = w.shape
    opt = op.options
    sh, sw = opt.get("stride_h", 1), opt.get("stride_w", 1)
    dh, dw = opt.get("dilation_h_factor", 1), opt.get("dilation_w_factor", 1)
    oh, ph = _padding(opt.get("padding", 0), sh, dh, ih, kh)
    ow, pw = _padding(opt.get("padding", 0), sw, dw, iw, kw)
    if (oh, ow, oc) != tuple(o.shape[1:]):
        raise UnsupportedOpError(f"CONV_2D (op {op.index}): output shape {o.shape} does not match the padding")
    mults, shifts = _per_channel(ctx, x, w, o, oc)
    lo, hi = activation_range(opt.get("fused_activation_function", 0), o.scale, o.zero_point)
    name = f"ek_p{op.index}"
    fast = ctx.fast and kc == ic and w.data is not None
    patch = _ceil4(kh * kw * kc) if fast else 0
    fields = {"in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc, "k_h": kh, "k_w": kw,
              "k_c": kc, "stride_h": sh, "stride_w": sw, "dil_h": dh, "dil_w": dw, "pad_h": ph, "pad_w": pw,
              "in_offset": -x.zero_point, "out_offset": o.zero_point, "act_min": lo, "act_max": hi, "patch": patch,
              "round_fast": 0}
    body = []
    if fast:
        rf, decls, rq_args = _fast_args(op, ctx, name, mults, shifts, kh * kw * kc)
        fields["round_fast"] = rf
        decls = [_padded_weights(f"{name}_w", w.data.reshape(oc, -1), patch), *decls]
        for b in range(n):
            body.append(f"ek_conv2d_s8_fast(&{name}, {ctx.ptr(x.index)} + {b * ih * iw * ic}, {name}_w, {rq_args}, "
                        f"{ctx.ptr(o.index)} + {b * oh * ow * oc}, {ctx.scratch(op.index)});")
    else:
        decls = _arrays(name, mults, shifts)
        for b in range(n):
            body.append(f"ek_conv2d_s8(&{name}, {ctx.ptr(x.index)} + {b * ih * iw * ic}, {ctx.ptr(w.index)}, "
                        f"{_bias(op, ctx)}, {name}_m, {name}_s, {ctx.ptr(o.index)} + {b * oh * ow * oc});")
    decls.append(_struct("ek_conv_t", name, fields))
    return Lowered(op.index, op.name, decls=decls, body=body, macs=n * oh * ow * oc * kh * kw * kc,
                   scratch=6 * patch + 8 * oc if fast else 0)


def lower_dwconv2d(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.inputs[1], op.outputs[0]])
    x, w, o = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    n, ih, iw, ic = x.shape
    _, kh, kw, oc = w.shape
    opt = op.options
    sh, sw = opt.get("stride_h", 1), opt.get("stride_w", 1)
    dh, dw = opt.get("dilation_h_factor", 1), opt.get("dilation_w_factor", 1)
    oh, ph = _padding(opt.get("padding", 0), sh, dh, ih, kh)
    ow, pw = _padding(opt.get("padding", 0), sw, dw, iw, kw)
    if (oh, ow, oc) != tuple(o.shape[1:]) or oc % ic:
        raise UnsupportedOpError(f"DEPTHWISE_CONV_2D (op {op.index}): output shape {o.shape} does not match")
    mults, shifts = _per_channel(ctx, x, w, o, oc)
    lo, hi = activation_range(opt.get("fused_activation_function", 0), o.scale, o.zero_point)
    name = f"ek_p{op.index}"
    fields = {"in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc, "k_h": kh, "k_w": kw,
              "depth_mult": oc // ic, "stride_h": sh, "stride_w": sw, "dil_h": dh, "dil_w": dw, "pad_h": ph,
              "pad_w": pw, "in_offset": -x.zero_point, "out_offset": o.zero_point, "act_min": lo, "act_max": hi}
    body = [f"ek_dwconv2d_s8(&{name}, {ctx.ptr(x.index)} + {b * ih * iw * ic}, {ctx.ptr(w.index)}, "
            f"{_bias(op, ctx)}, {name}_m, {name}_s, {ctx.ptr(o.index)} + {b * oh * ow * oc});" for b in range(n)]
    return Lowered(op.index, op.name, decls=[*_arrays(name, mults, shifts), _struct("ek_dwconv_t", name, fields)],
                   body=body, macs=n * oh * ow * oc * kh * kw)


def lower_fc(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.inputs[1], op.outputs[0]])
    x, w, o = ctx.t(op.inputs[0]), ctx.t(op.inputs[1]), ctx.t(op.outputs[0])
    out_depth, accum = w.shape[0], w.shape[-1]
    batches = o.size // out_depth
    if batches * accum != x.size:
        raise UnsupportedOpError(f"FULLY_CONNECTED (op {op.index}): input {x.shape} does not match weights {w.shape}")
    per_channel = len(w.scales) > 1
    if per_channel:  # fully_connected_common.cc: double precision
        mults, shifts = _per_channel(ctx, x, w, o, out_depth)
    else:  # GetQuantizedConvolutionMultipler: the input x filter product in float32
        m, s = ctx.qm(float(f32(x.scale) * f32(w.scales[0])) / float(f32(o.scale)))
        mults, shifts = [m], [s]
    lo, hi = activation_range(op.options.get("fused_activation_function", 0), o.scale, o.zero_point)
    name = f"ek_p{op.index}"
    fast = ctx.fast and w.zero_point == 0 and w.data is not None
    depth4 = _ceil4(accum) if fast else 0
    if fast and not per_channel:  # the fast kernel indexes the multipliers per channel
        mults, shifts = mults * out_depth, shifts * out_depth
    fields = {"batches": batches, "accum_depth": accum, "out_depth": out_depth,
              "per_channel": int(per_channel or fast), "in_offset": -x.zero_point, "w_offset": -w.zero_point,
              "out_offset": o.zero_point, "act_min": lo, "act_max": hi, "depth4": depth4, "round_fast": 0}
    if fast:
        rf, decls, rq_args = _fast_args(op, ctx, name, mults, shifts, accum)
        fields["round_fast"] = rf
        decls = [_padded_weights(f"{name}_w", w.data.reshape(out_depth, accum), depth4), *decls]
        decls.append(_struct("ek_fc_t", name, fields))
        body = [f"ek_fc_s8_fast(&{name}, {ctx.ptr(x.index)}, {name}_w, {rq_args}, {ctx.ptr(o.index)}, "
                f"{ctx.scratch(op.index)});"]
    else:
        decls = [*_arrays(name, mults, shifts), _struct("ek_fc_t", name, fields)]
        body = [f"ek_fc_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(w.index)}, {_bias(op, ctx)}, "
                f"{name}_m, {name}_s, {ctx.ptr(o.index)});"]
    return Lowered(op.index, op.name, decls=decls, body=body, macs=batches * out_depth * accum,
                   scratch=depth4 + 4 * out_depth if fast else 0)


# ---- pooling and reductions -----------------------------------------------------------------------------------------

def lower_pool(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.outputs[0]])
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    n, ih, iw, c = x.shape
    opt = op.options
    kh, kw = opt.get("filter_height", 1), opt.get("filter_width", 1)
    sh, sw = opt.get("stride_h", 1), opt.get("stride_w", 1)
    oh, ph = _padding(opt.get("padding", 0), sh, 1, ih, kh)
    ow, pw = _padding(opt.get("padding", 0), sw, 1, iw, kw)
    lo, hi = activation_range(opt.get("fused_activation_function", 0), o.scale, o.zero_point)
    name = f"ek_p{op.index}"
    fields = {"batches": n, "in_h": ih, "in_w": iw, "c": c, "out_h": oh, "out_w": ow, "k_h": kh, "k_w": kw,
              "stride_h": sh, "stride_w": sw, "pad_h": ph, "pad_w": pw, "act_min": lo, "act_max": hi}
    fn = "ek_avgpool_s8" if op.name == "AVERAGE_POOL_2D" else "ek_maxpool_s8"
    return Lowered(op.index, op.name, decls=[_struct("ek_pool_t", name, fields)],
                   body=[f"{fn}(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"], work=x.size)


def reduce_fields(shape: Sequence[int], axes: Sequence[int]) -> dict:
    """``ek_reduce_t`` geometry: kept dims and reduced dims with their input strides, both collapsed."""
    nd = len(shape)
    axes = sorted({a + nd if a < 0 else a for a in axes})
    st = _strides(shape)
    kept = [i for i in range(nd) if i not in axes]
    od, (ost,) = _collapse([shape[i] for i in kept], [st[i] for i in kept])
    rd, (rst,) = _collapse([shape[i] for i in axes], [st[i] for i in axes])
    if not od:
        od, ost = [1], [0]
    if not rd:
        rd, rst = [1], [0]
    if len(od) > MAXD or len(rd) > MAXD:
        raise UnsupportedOpError(f"reduction over a {nd}-D tensor with too many dims")
    count = int(np.prod([shape[i] for i in axes], dtype=np.int64)) if axes else 1
    return {"n_out": len(od), "n_red": len(rd), "out_dims": _pad6(od), "out_st": _pad6(ost),
            "red_dims": _pad6(rd), "red_st": _pad6(rst), "count": count}


def lower_reduce(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.outputs[0]])
    x, o, ax = ctx.t(op.inputs[0]), ctx.t(op.outputs[0]), ctx.t(op.inputs[1])
    if ax.data is None:
        raise UnsupportedOpError(f"{op.name} (op {op.index}) with a non-constant axis is not supported")
    geo = reduce_fields(x.shape, [int(v) for v in np.asarray(ax.data).reshape(-1)])
    fields = dict(geo, in_zp=x.zero_point, out_zp=o.zero_point, mult=0, shift=0)
    if op.name in ("MEAN", "SUM"):
        # reduce_common.cc: multiplier of in/out scale (double); reduce.h folds 1/count in for MEAN
        mult, shift = ctx.qm(float(f32(x.scale)) / float(f32(o.scale)))
        n = geo["count"]
        if op.name == "MEAN" and n > 0:
            k = min(n.bit_length() - 1, 32, 31 + shift)
            mult = (mult << k) // n
            shift -= k
        fields.update(mult=mult, shift=shift)
    elif (x.scale, x.zero_point) != (o.scale, o.zero_point):
        raise UnsupportedOpError(f"{op.name} (op {op.index}) with different input and output quantisation "
                                 "(TFLite Micro rejects it too)")
    fn = {"MEAN": "ek_mean_s8", "SUM": "ek_sum_s8", "REDUCE_MAX": "ek_reduce_max_s8",
          "REDUCE_MIN": "ek_reduce_min_s8"}[op.name]
    name = f"ek_p{op.index}"
    return Lowered(op.index, op.name, decls=[_struct("ek_reduce_t", name, fields)],
                   body=[f"{fn}(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"], work=x.size)


# ---- data movement --------------------------------------------------------------------------------------------------

def lower_reshape(op: Op, ctx: Context) -> Lowered:
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    if x.dtype != o.dtype or x.nbytes != o.nbytes:
        raise UnsupportedOpError(f"{op.name} (op {op.index}) changes the data size")
    # The planner gives the output the input's memory; the copy is a no-op unless they were planned apart.
    return Lowered(op.index, op.name, body=[f"ek_copy({x.nbytes}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"])


def _pad_fields(op: Op, ctx: Context) -> dict:
    x, o, pt = ctx.t(op.inputs[0]), ctx.t(op.outputs[0]), ctx.t(op.inputs[1])
    if pt.data is None or len(x.shape) > 4:
        raise UnsupportedOpError(f"{op.name} (op {op.index}) with non-constant paddings or > 4 dims")
    pads = np.asarray(pt.data).reshape(-1, 2).astype(int)
    ext = 4 - len(x.shape)
    in_dims = [1] * ext + list(x.shape)
    before = [0] * ext + [int(p) for p in pads[:, 0]]
    out_dims = [1] * ext + list(o.shape)
    value = o.zero_point
    if op.name == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        cv = ctx.t(op.inputs[2])
        if cv.data is None:
            raise UnsupportedOpError(f"PADV2 (op {op.index}) with a non-constant pad value")
        value = int(np.asarray(cv.data).reshape(-1)[0])
    return {"in_dims": in_dims, "out_dims": out_dims, "before": before, "pad_value": value}


def lower_pad(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.outputs[0]])
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    fields = _pad_fields(op, ctx)
    if op.index in ctx.fused_into:
        return Lowered(op.index, op.name, body=[f"/* written by op {ctx.fused_into[op.index]} */"])
    name = f"ek_p{op.index}"
    return Lowered(op.index, op.name, decls=[_struct("ek_pad_t", name, fields)],
                   body=[f"ek_pad_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"], work=o.size)


def find_fusions(model: Model) -> dict[int, int]:
    """Producer op -> consumer op pairs the generator fuses: a RESIZE_NEAREST_NEIGHBOR whose output only feeds a PAD
    of the height and width writes straight into the padded tensor (its own output is never materialised)."""
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(model.ops):
        for i in op.inputs:
            readers.setdefault(i, []).append(k)
    fusions = {}
    for k, op in enumerate(model.ops):
        if op.name != "RESIZE_NEAREST_NEIGHBOR" or len(op.outputs) != 1:
            continue
        t = op.outputs[0]
        r = readers.get(t, [])
        if len(r) != 1 or t in model.outputs or model.ops[r[0]].name not in ("PAD", "PADV2"):
            continue
        pad = model.ops[r[0]]
        pt = model.tensors[pad.inputs[1]]
        x = model.tensors[t]
        if pad.inputs[0] != t or pt.data is None or len(x.shape) != 4 or x.dtype != "int8":
            continue
        pads = np.asarray(pt.data).reshape(-1, 2)
        if pads[0].any() or pads[3].any():  # only height / width padding
            continue
        fusions[k] = r[0]
    return fusions


def lower_transpose(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.outputs[0]])
    x, o, pt = ctx.t(op.inputs[0]), ctx.t(op.outputs[0]), ctx.t(op.inputs[1])
    if pt.data is None:
        raise UnsupportedOpError(f"TRANSPOSE (op {op.index}) with a non-constant permutation")
    perm = [int(p) for p in np.asarray(pt.data).reshape(-1)]
    st = _strides(x.shape)
    dims, (sts,) = _collapse([x.shape[p] for p in perm], [st[p] for p in perm])
    if not dims:
        dims, sts = [1], [1]
    name = f"ek_p{op.index}"
    fields = {"nd": len(dims), "size": o.size, "dims": _pad6(dims), "st": _pad6(sts)}
    return Lowered(op.index, op.name, decls=[_struct("ek_transpose_t", name, fields)],
                   body=[f"ek_transpose_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"], work=o.size)


def nearest_index(out_size: int, in_size: int, align_corners: bool, half_pixel: bool) -> list[int]:
    """Source index of every output index (reference_ops::GetNearestNeighbor, float32 arithmetic)."""
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    offset = f32(0.5) if half_pixel else f32(0.0)
    idx = []
    for v in range(out_size):
        prod = (f32(v) + offset) * scale
        k = round_half_away(prod) if align_corners else math.floor(float(prod))
        k = min(int(k), in_size - 1)
        if half_pixel:
            k = max(0, k)
        idx.append(k)
    return idx


def lower_resize_nearest(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.outputs[0]])
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    n, ih, iw, c = x.shape
    _, oh, ow, _ = o.shape
    ac, hp = bool(op.options.get("align_corners", False)), bool(op.options.get("half_pixel_centers", False))
    ys, xs = nearest_index(oh, ih, ac, hp), nearest_index(ow, iw, ac, hp)
    name = f"ek_p{op.index}"
    fields = {"batches": n, "in_h": ih, "in_w": iw, "c": c, "out_h": oh, "out_w": ow}
    decls = [f"static const int16_t {name}_y[{oh}] = {{\n    {_c_ints(ys)}}};",
             f"static const int16_t {name}_x[{ow}] = {{\n    {_c_ints(xs)}}};",
             _struct("ek_resize_t", name, fields)]
    if op.index in ctx.fusions:  # write into the interior of the PAD that consumes the output
        pad_op = ctx.model.ops[ctx.fusions[op.index]]
        pad = _pad_fields(pad_op, ctx)
        decls.append(_struct("ek_pad_t", f"{name}_pad", pad))
        u = ctx.t(pad_op.outputs[0])
        return Lowered(op.index, op.name, decls=decls, work=o.size,
                       body=[f"ek_resize_nearest_pad_s8(&{name}, {name}_y, {name}_x, &{name}_pad, "
                             f"{ctx.ptr(x.index)}, {ctx.ptr(u.index)});"])
    return Lowered(op.index, op.name, decls=decls,
                   body=[f"ek_resize_nearest_s8(&{name}, {name}_y, {name}_x, {ctx.ptr(x.index)}, "
                         f"{ctx.ptr(o.index)});"], work=o.size)


def lower_concat(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [*op.inputs, op.outputs[0]])
    o = ctx.t(op.outputs[0])
    axis = op.options.get("axis", 0)
    axis = axis + len(o.shape) if axis < 0 else axis
    if op.options.get("fused_activation_function", 0):
        raise UnsupportedOpError(f"CONCATENATION (op {op.index}) with a fused activation")
    outer = int(np.prod(o.shape[:axis], dtype=np.int64))
    row = int(np.prod(o.shape[axis:], dtype=np.int64))
    body, offset = [], 0
    for i in op.inputs:
        x = ctx.t(i)
        if (x.scale, x.zero_point) != (o.scale, o.zero_point):
            raise UnsupportedOpError(f"CONCATENATION (op {op.index}) of inputs with different quantisation "
                                     "(TFLite Micro rejects it too)")
        chunk = int(np.prod(x.shape[axis:], dtype=np.int64))
        body.append(f"ek_concat_part_s8({outer}, {chunk}, {row}, {offset}, {ctx.ptr(i)}, {ctx.ptr(o.index)});")
        offset += chunk
    return Lowered(op.index, op.name, body=body, work=o.size)


# ---- activations and (de)quantisation -------------------------------------------------------------------------------

def lower_relu(op: Op, ctx: Context) -> Lowered:
    _require_int8(op, ctx, [op.inputs[0], op.outputs[0]])
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    if op.name == "RELU":  # activations_common.cc: requantise in/out (float32 ratio), clamp at the output's zero
        m, s = ctx.qm(float(f32(x.scale) / f32(o.scale)))
        lo = max(-128, o.zero_point + round_half_away(f32(0.0) / f32(o.scale)))
        name = f"ek_p{op.index}"
        fields = {"size": o.size, "in_zp": x.zero_point, "out_zp": o.zero_point, "mult": m, "shift": s,
                  "act_min": lo, "act_max": 127}
        if ctx.fast and o.size >= 1024:
            return Lowered(op.index, op.name, decls=[_struct("ek_requant_t", name, fields)], work=o.size, scratch=256,
                           body=[f"ek_requant_tab_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)}, "
                                 f"{ctx.scratch(op.index)});"])
        return Lowered(op.index, op.name, decls=[_struct("ek_requant_t", name, fields)],
                       body=[f"ek_relu_requant_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"], work=o.size)
    # RELU6 / RELU_N1_TO_1: clamp in the input's quantisation (FloatToQuantizedType)
    lo_f, hi_f = (0.0, 6.0) if op.name == "RELU6" else (-1.0, 1.0)

    def q(v: float) -> int:
        return max(-128, min(127, round_half_away(f32(v) / f32(x.scale)) + x.zero_point))
    return Lowered(op.index, op.name,
                   body=[f"ek_clamp_s8({o.size}, {q(lo_f)}, {q(hi_f)}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"],
                   work=o.size)


def lower_quantize(op: Op, ctx: Context) -> Lowered:
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    if o.dtype != "int8" or x.dtype not in ("float32", "int8"):
        raise UnsupportedOpError(f"QUANTIZE (op {op.index}) from {x.dtype} to {o.dtype} is not supported")
    if x.dtype == "float32":
        scale = f"{float(f32(o.scale))!r}f"
        return Lowered(op.index, op.name, work=o.size,
                       body=[f"ek_quantize_f32_s8({o.size}, {scale}, {o.zero_point}, "
                             f"(const float *){ctx.ptr(x.index)}, {ctx.ptr(o.index)});"])
    m, s = ctx.qm(float(f32(x.scale)) / float(f32(o.scale)))
    name = f"ek_p{op.index}"
    fields = {"size": o.size, "in_zp": x.zero_point, "out_zp": o.zero_point, "mult": m, "shift": s,
              "act_min": -128, "act_max": 127}
    if ctx.fast and o.size >= 1024:
        return Lowered(op.index, op.name, decls=[_struct("ek_requant_t", name, fields)], work=o.size, scratch=256,
                       body=[f"ek_requant_tab_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)}, "
                             f"{ctx.scratch(op.index)});"])
    return Lowered(op.index, op.name, decls=[_struct("ek_requant_t", name, fields)], work=o.size,
                   body=[f"ek_requantize_s8(&{name}, {ctx.ptr(x.index)}, {ctx.ptr(o.index)});"])


def lower_dequantize(op: Op, ctx: Context) -> Lowered:
    x, o = ctx.t(op.inputs[0]), ctx.t(op.outputs[0])
    if x.dtype != "int8" or o.dtype != "float32":
        raise UnsupportedOpError(f"DEQUANTIZE (op {op.index}) from {x.dtype} to {o.dtype} is not supported")
    return Lowered(op.index, op.name, work=o.size,
                   body=[f"ek_dequantize_s8_f32({o.size}, {float(f32(x.scale))!r}, {x.zero_point}, "
                         f"{ctx.ptr(x.index)}, (float *){ctx.ptr(o.index)});"])


#: builtin op name -> lowering
LOWERINGS: dict[str, Callable[[Op, Context], Lowered]] = {
    "ADD": lower_add_sub, "SUB": lower_add_sub, "MUL": lower_mul,
    "MAXIMUM": lower_max_min, "MINIMUM": lower_max_min,
    "CONV_2D": lower_conv2d, "DEPTHWISE_CONV_2D": lower_dwconv2d, "FULLY_CONNECTED": lower_fc,
    "AVERAGE_POOL_2D": lower_pool, "MAX_POOL_2D": lower_pool,
    "MEAN": lower_reduce, "SUM": lower_reduce, "REDUCE_MAX": lower_reduce, "REDUCE_MIN": lower_reduce,
    "RESHAPE": lower_reshape, "SQUEEZE": lower_reshape, "EXPAND_DIMS": lower_reshape,
    "PAD": lower_pad, "PADV2": lower_pad, "TRANSPOSE": lower_transpose,
    "RESIZE_NEAREST_NEIGHBOR": lower_resize_nearest, "CONCATENATION": lower_concat,
    "RELU": lower_relu, "RELU6": lower_relu, "RELU_N1_TO_1": lower_relu,
    "QUANTIZE": lower_quantize, "DEQUANTIZE": lower_dequantize,
}

#: ops whose output is the input's bytes unchanged (the planner lets them share memory)
ALIAS_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})


def check_supported(model: Model) -> None:
    """Raise :class:`UnsupportedOpError` (one line naming every unsupported op type) before any work is done."""
    if model.n_subgraphs > 1 and any(op.name in ("WHILE", "IF", "CALL_ONCE") for op in model.ops):
        raise UnsupportedOpError("models with control flow (several subgraphs) are not supported")
    missing = sorted({f"CUSTOM:{op.name}" if op.custom else op.name for op in model.ops
                      if op.custom or op.name not in LOWERINGS})
    if missing:
        raise UnsupportedOpError(f"unsupported op{'s' if len(missing) > 1 else ''} for the firmware generator: "
                                 f"{', '.join(missing)} (supported: {', '.join(sorted(LOWERINGS))})")


def lower_model(model: Model, ptr: Callable[[int], str], scratch: Callable[[int], str] | None = None, *,
                single_rounding: bool = False, fast: bool = True, fusions: dict[int, int] | None = None
                ) -> list[Lowered]:
    """Lower every op of ``model`` in execution order (see :func:`check_supported` for the errors).

    Args:
        ptr: C expression of a tensor's data pointer.
        scratch: C expression of an op's scratch memory (see :attr:`Lowered.scratch`).
        fast: use the fast kernels (dual-MAC convolutions and dense layers) where they apply.
        fusions: producer -> consumer ops to fuse (:func:`find_fusions`; the plan must know them too).
    """
    check_supported(model)
    ctx = Context(model, ptr, scratch, single_rounding=single_rounding, fast=fast, fusions=fusions)
    return [LOWERINGS[op.name](op, ctx) for op in model.ops]
