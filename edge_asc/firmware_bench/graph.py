"""Read a ``.tflite`` FlatBuffer into a per-layer table: parameters, non-zero parameters, MACs, activation memory.

No TensorFlow: the FlatBuffer is unpacked with the object API of ``ai_edge_litert.schema_py_generated`` (shipped with
the ``ai-edge-litert`` wheel of the ``pi`` extra). Only subgraph 0 (the model's main graph) is walked.

Counting rules (they are the report's definitions; the tests pin them):

Parameters
    A *parameter* is a constant tensor (a tensor whose buffer holds data) that is either

    - the weight or bias input of a parametric op (``CONV_2D``/``DEPTHWISE_CONV_2D``/``FULLY_CONNECTED``/``CONV_3D``:
      inputs 1 and 2; ``TRANSPOSE_CONV``: inputs 1 and 3; ``BATCH_MATMUL``: any constant operand), whatever its dtype
      (int8 weights, int32 biases of an int8 model, float32 of a float model), or
    - any other constant of a *numeric data* dtype (float32/16/64, bfloat16, int8, uint8, int16, int4) — e.g. the
      scale and shift of a normalisation that was not folded into a convolution.

    Other constants (int32/int64/bool tensors outside a bias slot: reshape shapes, reduction axes, paddings, gather
    indices) are *structural constants*: listed with their bytes, never counted as parameters. Batch norm following a
    convolution is folded into its weights and bias by the TFLite converter, so it has no tensors of its own. A
    buffer shared by several tensors is counted once. Stored bytes are the buffer's bytes (int8 = 1 byte, int32 bias
    = 4 bytes, float32 = 4 bytes, int4 = half a byte); non-zero parameters count the elements whose stored value is
    not 0 (for int8 that is the quantised integer, i.e. the zero point of a symmetric weight quantisation).

MACs (multiply-accumulates, batch 1)
    ``CONV_2D``: ``prod(output) * kh * kw * cin_per_group``; ``DEPTHWISE_CONV_2D``: ``prod(output) * kh * kw``;
    ``TRANSPOSE_CONV``: ``prod(input) * kh * kw * cout``; ``CONV_3D``: ``prod(output) * kd * kh * kw * cin``;
    ``FULLY_CONNECTED``: ``prod(output) * in_features``; ``BATCH_MATMUL``: ``prod(output) * K``. This is the count of
    :func:`edge_asc.model.count_macs` and of the DCASE ``nessi`` helper (conv and dense layers only).

Other operations (reported separately as ``other_ops``, never added to MACs)
    pooling: ``prod(output) * window``; reductions (``MEAN``, ``SUM``, ``REDUCE_*``, ``ARG_*``): ``prod(input)``;
    pure data movement (reshape, transpose, concatenation, pad, slice, gather, nearest resize, ...): 0; every other
    op (activations, element-wise arithmetic, (de)quantise, softmax...): ``prod(output)``. Vela's "Neural network
    macs" adds reductions such as ``MEAN`` to its MAC figure; ours does not.

Activation memory
    For each op in execution order, the bytes of every non-constant tensor that is live while it runs (produced at or
    before the op and consumed at or after it; graph inputs live from the start, graph outputs to the end, variable
    tensors always). The peak is a lower bound for any tensor arena that keeps tensors whole; the TFLite Micro arena
    measured by :mod:`edge_asc.firmware_bench.tflm` adds alignment, fragmentation and the interpreter's own data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError, ModelContractError

#: TensorType name -> (bytes per element (0.5 for 4-bit), numpy dtype name or None when numpy has none).
DTYPES: dict[str, tuple[float, str | None]] = {
    "FLOAT32": (4, "<f4"), "FLOAT16": (2, "<f2"), "FLOAT64": (8, "<f8"), "BFLOAT16": (2, "<u2"),
    "INT8": (1, "i1"), "UINT8": (1, "u1"), "INT16": (2, "<i2"), "UINT16": (2, "<u2"),
    "INT32": (4, "<i4"), "UINT32": (4, "<u4"), "INT64": (8, "<i8"), "UINT64": (8, "<u8"),
    "BOOL": (1, "u1"), "INT4": (0.5, None), "UINT4": (0.5, None), "INT2": (0.25, None),
    "COMPLEX64": (8, "<c8"), "COMPLEX128": (16, "<c16"), "STRING": (1, None),
    "FLOAT8_E4M3FN": (1, "u1"), "FLOAT8_E5M2": (1, "u1"),
}
#: dtypes whose constants are model data (parameters) wherever they appear.
DATA_DTYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "INT8", "UINT8", "INT16", "INT4", "UINT4",
                         "INT2", "FLOAT8_E4M3FN", "FLOAT8_E5M2"})
#: op -> input slots holding weights / biases.
PARAM_SLOTS: dict[str, tuple[int, ...]] = {
    "CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "CONV_3D": (1, 2),
    "TRANSPOSE_CONV": (1, 3), "BATCH_MATMUL": (0, 1),
}
POOL_OPS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "L2_POOL_2D"})
REDUCE_OPS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL",
                        "ARG_MAX", "ARG_MIN"})
MOVE_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "CONCATENATION", "PACK", "UNPACK", "SPLIT",
                      "SPLIT_V", "SLICE", "STRIDED_SLICE", "GATHER", "GATHER_ND", "PAD", "PADV2", "MIRROR_PAD",
                      "RESIZE_NEAREST_NEIGHBOR", "TILE", "BROADCAST_TO", "SHAPE", "DEPTH_TO_SPACE",
                      "SPACE_TO_DEPTH", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "REVERSE_V2", "ZEROS_LIKE"})


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise MissingExtraError("ai_edge_litert", "pi", "reading the layers of a .tflite model") from exc
    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True, kw_only=True)
class ParamTensor:
    """One stored parameter tensor (see the module docstring for what counts)."""

    name: str
    dtype: str
    """TFLite tensor type, e.g. 'INT8', 'INT32', 'FLOAT32'."""
    shape: tuple[int, ...]
    role: str
    """'weight', 'bias' (slots of parametric ops) or 'constant' (another numeric-data constant)."""
    count: int
    """elements."""
    nonzero: int
    """elements whose stored value is not zero."""
    bytes: int
    """stored bytes (the buffer's length)."""
    layer: int
    """index of the first layer that reads it."""

    @property
    def nonzero_bytes(self) -> float:
        """Stored bytes of the non-zero elements (``nonzero * bytes / count``)."""
        return self.bytes * self.nonzero / self.count if self.count else 0.0


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One operator of subgraph 0, in execution order."""

    index: int
    op: str
    """builtin op name ('CONV_2D', ...) or 'CUSTOM:<code>'."""
    name: str
    """name of its first output tensor."""
    input_shapes: tuple[tuple[int, ...], ...]
    """shapes of its non-constant inputs."""
    output_shapes: tuple[tuple[int, ...], ...]
    params: int
    """elements of the parameter tensors first read by this layer."""
    param_bytes: int
    nonzero_params: int
    macs: int
    """conv/dense multiply-accumulates (batch 1)."""
    other_ops: int
    """element-wise / pooling / reduction operations (not MACs)."""
    activation_bytes: int
    """bytes of non-constant tensors live while this op runs."""


@dataclass(frozen=True, kw_only=True)
class ModelGraph:
    """Everything the report reads from the FlatBuffer. Sizes in bytes, counts in elements, MACs per inference."""

    file_bytes: int
    layers: tuple[Layer, ...]
    param_tensors: tuple[ParamTensor, ...]
    structural_constant_bytes: int
    """bytes of int32/int64/bool constants that are not parameters (shapes, axes, paddings, indices)."""
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    output_dtypes: tuple[str, ...]
    op_counts: Mapping[str, int] = field(default_factory=dict)
    subgraphs: int = 1

    @property
    def params(self) -> int:
        return sum(p.count for p in self.param_tensors)

    @property
    def nonzero_params(self) -> int:
        return sum(p.nonzero for p in self.param_tensors)

    @property
    def param_bytes(self) -> int:
        return sum(p.bytes for p in self.param_tensors)

    @property
    def nonzero_param_bytes(self) -> int:
        """Stored bytes of the non-zero parameters, rounded up to whole bytes."""
        return math.ceil(sum(p.nonzero_bytes for p in self.param_tensors) - 1e-9)

    @property
    def param_bytes_by_dtype(self) -> dict[str, dict[str, int]]:
        """``{dtype: {"tensors", "params", "nonzero", "bytes"}}``."""
        out: dict[str, dict[str, int]] = {}
        for p in self.param_tensors:
            d = out.setdefault(p.dtype, {"tensors": 0, "params": 0, "nonzero": 0, "bytes": 0})
            d["tensors"] += 1
            d["params"] += p.count
            d["nonzero"] += p.nonzero
            d["bytes"] += p.bytes
        return out

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def other_ops(self) -> int:
        return sum(layer.other_ops for layer in self.layers)

    @property
    def peak_activation_bytes(self) -> int:
        return max((layer.activation_bytes for layer in self.layers), default=0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_counts"] = dict(self.op_counts)
        for k in ("params", "nonzero_params", "param_bytes", "nonzero_param_bytes", "param_bytes_by_dtype", "macs",
                  "other_ops", "peak_activation_bytes"):
            d[k] = getattr(self, k)
        return d


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    return n


def _elem_bytes(count: int, dtype: str) -> int:
    return math.ceil(count * DTYPES.get(dtype, (1, None))[0])


def _nonzero(raw: bytes, dtype: str, count: int) -> int:
    import numpy as np

    npd = DTYPES.get(dtype, (1, None))[1]
    if dtype in ("INT4", "UINT4"):
        b = np.frombuffer(raw, dtype=np.uint8)
        nib = np.stack([b & 0x0F, b >> 4], axis=1).reshape(-1)[:count]
        return int(np.count_nonzero(nib))
    if npd is None:  # no numpy view: count every element as non-zero (documented worst case)
        return count
    arr = np.frombuffer(raw, dtype=npd)[:count]
    if arr.dtype.kind == "f":
        return int(np.count_nonzero(arr != 0))  # -0.0 is zero
    return int(np.count_nonzero(arr))


def read_graph(model: str | os.PathLike | bytes) -> ModelGraph:
    """Parse a ``.tflite`` file (path or bytes) into a :class:`ModelGraph`.

    Raises:
        ModelContractError: missing file, not a TFLite FlatBuffer, or a graph that does not parse.
        MissingExtraError: ``ai-edge-litert`` (which ships the TFLite schema) is not installed.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        buf, where = bytes(model), "<bytes>"
    else:
        p = Path(model)
        if not p.is_file():
            raise ModelContractError(f"{p}: no such model file: check the path or export one with 'edge-asc export'")
        buf, where = p.read_bytes(), str(p)
    if len(buf) < 16 or buf[4:8] != b"TFL3":
        raise ModelContractError(f"{where}: not a TFLite model (missing the 'TFL3' identifier): pass a .tflite file")
    schema = _schema()
    try:
        m = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception:  # noqa: BLE001 - flatbuffers raises assorted struct/index errors on corrupt input
        raise ModelContractError(f"{where}: TFLite file does not parse: re-export it") from None
    if not m.subgraphs:
        raise ModelContractError(f"{where}: TFLite model has no subgraph")
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    g = m.subgraphs[0]
    tensors = g.tensors or []
    ops = g.operators or []
    buffers = m.buffers or []

    def tdtype(t) -> str:
        return type_names.get(t.type, f"TYPE{t.type}")

    def tshape(t) -> tuple[int, ...]:
        return tuple(int(s) for s in (t.shape if t.shape is not None else ()))

    def raw_data(t) -> bytes | None:
        if not t.buffer or t.buffer >= len(buffers):
            return None
        b = buffers[t.buffer]
        if b.data is not None and len(b.data):
            return bytes(b.data)
        if getattr(b, "offset", 0) and getattr(b, "size", 0) > 0:  # > 2 GB layout: data after the FlatBuffer
            return buf[b.offset : b.offset + b.size]
        return None

    const = {i: raw_data(t) for i, t in enumerate(tensors)}
    is_const = {i: d is not None for i, d in const.items()}

    def opname(op) -> str:
        code = m.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode or 0, code.deprecatedBuiltinCode or 0)
        name = op_names.get(builtin, f"OP{builtin}")
        if name == "CUSTOM":
            cc = code.customCode
            cc = cc.decode() if isinstance(cc, (bytes, bytearray)) else str(cc)
            return f"CUSTOM:{cc}"
        return name

    names = [opname(op) for op in ops]
    n_ops = len(ops)

    # ---- live intervals of non-constant tensors ----
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for i in g.inputs if g.inputs is not None else []:
        start[int(i)] = -1
    for k, op in enumerate(ops):
        for i in op.inputs if op.inputs is not None else []:
            i = int(i)
            if i < 0 or is_const.get(i):
                continue
            start.setdefault(i, k)
            end[i] = max(end.get(i, k), k)
        for i in op.outputs if op.outputs is not None else []:
            i = int(i)
            if i < 0:
                continue
            start.setdefault(i, k)
            end[i] = max(end.get(i, k), k)
    for i in g.outputs if g.outputs is not None else []:
        end[int(i)] = n_ops
    for i, t in enumerate(tensors):
        if t.isVariable and not is_const.get(i):
            start[i], end[i] = -1, n_ops
    live_bytes = [0] * n_ops
    for i, s in start.items():
        t = tensors[i]
        nb = _elem_bytes(_prod(tshape(t)), tdtype(t))
        for k in range(max(s, 0), min(end.get(i, s), n_ops - 1) + 1):
            live_bytes[k] += nb

    # ---- parameters ----
    seen_buffers: set[int] = set()
    params: list[ParamTensor] = []
    structural = 0
    per_layer: dict[int, list[ParamTensor]] = {}
    for k, op in enumerate(ops):
        slots = PARAM_SLOTS.get(names[k], ())
        for slot, i in enumerate(op.inputs if op.inputs is not None else []):
            i = int(i)
            if i < 0 or not is_const.get(i):
                continue
            t = tensors[i]
            key = t.buffer
            if key in seen_buffers:
                continue
            seen_buffers.add(key)
            dt = tdtype(t)
            raw = const[i]
            count = _prod(tshape(t))
            if slot in slots:
                role = "bias" if (slot == 2 and names[k] != "TRANSPOSE_CONV") or slot == 3 else "weight"
                if names[k] == "BATCH_MATMUL":
                    role = "weight"
            elif dt in DATA_DTYPES:
                role = "constant"
            else:
                structural += len(raw)
                continue
            pt = ParamTensor(name=(t.name.decode() if isinstance(t.name, bytes) else str(t.name or f"t{i}")),
                             dtype=dt, shape=tshape(t), role=role, count=count, nonzero=_nonzero(raw, dt, count),
                             bytes=len(raw), layer=k)
            params.append(pt)
            per_layer.setdefault(k, []).append(pt)

    # ---- layers ----
    layers: list[Layer] = []
    for k, op in enumerate(ops):
        name = names[k]
        ins = [int(i) for i in (op.inputs if op.inputs is not None else []) if int(i) >= 0]
        outs = [int(i) for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0]
        in_shapes = tuple(tshape(tensors[i]) for i in ins if not is_const.get(i))
        out_shapes = tuple(tshape(tensors[i]) for i in outs)
        out_elems = sum(_prod(s) for s in out_shapes)
        macs, other = _macs(name, op, tensors, ins, outs, tshape, out_elems)
        lp = per_layer.get(k, [])
        first_out = tensors[outs[0]].name if outs else b""
        layers.append(Layer(
            index=k, op=name,
            name=first_out.decode() if isinstance(first_out, bytes) else str(first_out),
            input_shapes=in_shapes, output_shapes=out_shapes,
            params=sum(p.count for p in lp), param_bytes=sum(p.bytes for p in lp),
            nonzero_params=sum(p.nonzero for p in lp), macs=macs, other_ops=other, activation_bytes=live_bytes[k],
        ))
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    gin = [int(i) for i in (g.inputs if g.inputs is not None else [])]
    gout = [int(i) for i in (g.outputs if g.outputs is not None else [])]
    return ModelGraph(
        file_bytes=len(buf), layers=tuple(layers), param_tensors=tuple(params), structural_constant_bytes=structural,
        input_shapes=tuple(tshape(tensors[i]) for i in gin), input_dtypes=tuple(tdtype(tensors[i]) for i in gin),
        output_shapes=tuple(tshape(tensors[i]) for i in gout), output_dtypes=tuple(tdtype(tensors[i]) for i in gout),
        op_counts=counts, subgraphs=len(m.subgraphs),
    )


def _macs(name, op, tensors, ins, outs, tshape, out_elems) -> tuple[int, int]:
    """(MACs, other ops) of one op; see the module docstring."""

    def shape(slot: int) -> tuple[int, ...]:
        return tshape(tensors[ins[slot]]) if slot < len(ins) else ()

    if name == "CONV_2D":
        f = shape(1)  # [Cout, kh, kw, Cin/groups]
        return out_elems * _prod(f[1:]), 0
    if name == "DEPTHWISE_CONV_2D":
        f = shape(1)  # [1, kh, kw, Cout]
        return out_elems * _prod(f[1:3]), 0
    if name == "CONV_3D":
        f = shape(1)  # [kd, kh, kw, Cin, Cout]
        return out_elems * _prod(f[:-1]), 0
    if name == "TRANSPOSE_CONV":
        f = shape(1)  # [Cout, kh, kw, Cin]; input is slot 2
        return _prod(shape(2)) * _prod(f[:3]), 0
    if name == "FULLY_CONNECTED":
        f = shape(1)  # [units, in]
        return out_elems * (f[-1] if f else 0), 0
    if name == "BATCH_MATMUL":
        a = shape(0)
        opts = op.builtinOptions
        k = (a[-2] if getattr(opts, "adjX", False) else a[-1]) if a else 0
        return out_elems * k, 0
    if name in POOL_OPS:
        o = op.builtinOptions
        return 0, out_elems * max(1, int(getattr(o, "filterHeight", 1)) * int(getattr(o, "filterWidth", 1)))
    if name in REDUCE_OPS:
        return 0, _prod(shape(0))
    if name in MOVE_OPS:
        return 0, 0
    return 0, out_elems
