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

Work elements (the basis of the per-op latency costs of :mod:`.targets`)
    ``Layer.elements``: for reductions and pooling the elements of the data input (slot 0), for every other op the
    elements of its outputs (data movement included: a ``PAD`` or ``TRANSPOSE`` copies every output element).
    ``Layer.broadcast``: an element-wise op with two or more inputs whose shapes (constants included) differ; TFLite
    Micro runs those through its generic broadcasting kernel instead of the CMSIS-NN one.

Activation memory (:class:`ActivationTimeline`, computed once; ``Layer.activation_bytes`` and
``ModelGraph.peak_activation_bytes`` are read off it)
    For each op in execution order, the bytes of every non-constant tensor that is live while it runs: the inputs it
    reads, the outputs it writes and every tensor produced earlier and consumed later. Graph inputs are live from the
    first op, graph outputs to the last, variable tensors always; constants (weights, biases, shapes) never. The peak
    is a lower bound for any tensor arena that keeps tensors whole; the TFLite Micro arena measured by
    :mod:`edge_asc.firmware_bench.tflm` adds alignment, fragmentation and the interpreter's own data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
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
#: ops whose cost is their MACs (conv / dense / matmul).
MAC_OPS = frozenset(PARAM_SLOTS)


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
    elements: int
    """work elements: data-input elements for reductions and pooling, output elements otherwise."""
    broadcast: bool
    """an element-wise op whose inputs differ in shape (a broadcasting kernel)."""
    activation_bytes: int
    """bytes of non-constant tensors live while this op runs (``ActivationTimeline.live_bytes[index]``)."""


@dataclass(frozen=True, kw_only=True)
class LiveTensor:
    """One non-constant tensor and the ops during which it occupies memory (``first`` to ``last``, inclusive)."""

    index: int
    """tensor index in subgraph 0."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    first: int
    """index of the first op at which it is live (0 for graph inputs and variables)."""
    last: int
    """index of the last op at which it is live (the last op for graph outputs and variables)."""

    def live_at(self, op_index: int) -> bool:
        return self.first <= op_index <= self.last


@dataclass(frozen=True, kw_only=True)
class ActivationTimeline:
    """Activation memory per op, in execution order (see "Activation memory" in the module docstring). Bytes."""

    live_bytes: tuple[int, ...]
    """per op: bytes of the tensors live while it runs."""
    tensors: tuple[LiveTensor, ...]
    """every non-constant tensor with its live range, by tensor index."""

    @property
    def peak_index(self) -> int | None:
        """The first op at which ``live_bytes`` is largest; None for a graph without ops."""
        if not self.live_bytes:
            return None
        return max(range(len(self.live_bytes)), key=lambda k: (self.live_bytes[k], -k))

    @property
    def peak_bytes(self) -> int:
        return max(self.live_bytes, default=0)

    def live_at(self, op_index: int) -> tuple[LiveTensor, ...]:
        """Tensors live while op ``op_index`` runs, largest first (ties by tensor index)."""
        return tuple(sorted((t for t in self.tensors if t.live_at(op_index)), key=lambda t: (-t.bytes, t.index)))

    @property
    def dtypes(self) -> dict[str, int]:
        """Activation tensors per dtype, e.g. ``{'int8': 180}`` for a full-int8 graph."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dtype] = out.get(t.dtype, 0) + 1
        return dict(sorted(out.items()))

    @property
    def peak_tensors(self) -> tuple[LiveTensor, ...]:
        """The tensors live at the peak op, largest first; their bytes add up to ``peak_bytes``."""
        k = self.peak_index
        return () if k is None else self.live_at(k)

    def to_dict(self) -> dict[str, Any]:
        return {"live_bytes": list(self.live_bytes), "peak_index": self.peak_index, "peak_bytes": self.peak_bytes,
                "dtypes": self.dtypes,
                "peak_tensors": [asdict(t) for t in self.peak_tensors], "tensors": [asdict(t) for t in self.tensors]}


def activation_timeline(n_ops: int, op_io: Sequence[tuple[Sequence[int], Sequence[int]]],
                        tensor_info: Mapping[int, tuple[str, tuple[int, ...], str]], *, constants: Collection[int],
                        graph_inputs: Sequence[int], graph_outputs: Sequence[int],
                        variables: Sequence[int] = ()) -> ActivationTimeline:
    """Live ranges and per-op live bytes of the non-constant tensors of one graph.

    Args:
        n_ops: number of ops.
        op_io: per op, (input tensor indices, output tensor indices); negative indices (optional inputs) are skipped.
        tensor_info: tensor index -> (name, shape, dtype name).
        constants: tensor indices that hold data (never counted).
        graph_inputs / graph_outputs / variables: tensor indices.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i in graph_inputs:
        if i >= 0 and i not in constants:
            first[i], last[i] = 0, 0
    for k, (ins, outs) in enumerate(op_io):
        for i in (*ins, *outs):
            if i < 0 or i in constants:
                continue
            first.setdefault(i, k)
            last[i] = max(last.get(i, k), k)
    end = max(n_ops - 1, 0)
    for i in graph_outputs:
        if i >= 0 and i not in constants:
            first.setdefault(i, end)
            last[i] = end
    for i in variables:
        if i not in constants:
            first[i], last[i] = 0, end
    tensors = []
    for i in sorted(first):
        name, shape, dtype = tensor_info[i]
        tensors.append(LiveTensor(index=i, name=name, shape=tuple(shape), dtype=dtype,
                                  bytes=_elem_bytes(_prod(shape), dtype), first=first[i], last=last[i]))
    live = [0] * n_ops
    for t in tensors:
        for k in range(t.first, min(t.last, n_ops - 1) + 1):
            live[k] += t.bytes
    return ActivationTimeline(live_bytes=tuple(live), tensors=tuple(tensors))


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
    activations: ActivationTimeline
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
        """The activation timeline's maximum."""
        return self.activations.peak_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_counts"] = dict(self.op_counts)
        d["activations"] = self.activations.to_dict()
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


def tensor_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype`` (a TFLite type name in lower case, e.g. 'int8', 'float32')."""
    return _elem_bytes(_prod(shape), dtype)


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

    def tname(i: int) -> str:
        n = tensors[i].name
        return n.decode() if isinstance(n, bytes) else str(n or f"t{i}")

    def io(op) -> tuple[list[int], list[int]]:
        return ([int(i) for i in (op.inputs if op.inputs is not None else []) if int(i) >= 0],
                [int(i) for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0])

    op_io = [io(op) for op in ops]
    gin = [int(i) for i in (g.inputs if g.inputs is not None else [])]
    gout = [int(i) for i in (g.outputs if g.outputs is not None else [])]
    timeline = activation_timeline(
        n_ops, op_io, {i: (tname(i), tshape(t), tdtype(t)) for i, t in enumerate(tensors)},
        constants=frozenset(i for i, c in is_const.items() if c), graph_inputs=gin, graph_outputs=gout,
        variables=[i for i, t in enumerate(tensors) if t.isVariable])

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
            pt = ParamTensor(name=tname(i), dtype=dt, shape=tshape(t), role=role, count=count,
                             nonzero=_nonzero(raw, dt, count), bytes=len(raw), layer=k)
            params.append(pt)
            per_layer.setdefault(k, []).append(pt)

    # ---- layers ----
    layers: list[Layer] = []
    for k, op in enumerate(ops):
        name = names[k]
        ins, outs = op_io[k]
        in_shapes = tuple(tshape(tensors[i]) for i in ins if not is_const.get(i))
        out_shapes = tuple(tshape(tensors[i]) for i in outs)
        out_elems = sum(_prod(s) for s in out_shapes)
        macs, other = _macs(name, op, tensors, ins, outs, tshape, out_elems)
        elements, broadcast = _work(name, [tshape(tensors[i]) for i in ins], out_shapes, out_elems)
        lp = per_layer.get(k, [])
        layers.append(Layer(
            index=k, op=name, name=tname(outs[0]) if outs else "",
            input_shapes=in_shapes, output_shapes=out_shapes,
            params=sum(p.count for p in lp), param_bytes=sum(p.bytes for p in lp),
            nonzero_params=sum(p.nonzero for p in lp), macs=macs, other_ops=other, elements=elements,
            broadcast=broadcast, activation_bytes=timeline.live_bytes[k],
        ))
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ModelGraph(
        file_bytes=len(buf), layers=tuple(layers), param_tensors=tuple(params), structural_constant_bytes=structural,
        input_shapes=tuple(tshape(tensors[i]) for i in gin), input_dtypes=tuple(tdtype(tensors[i]) for i in gin),
        output_shapes=tuple(tshape(tensors[i]) for i in gout), output_dtypes=tuple(tdtype(tensors[i]) for i in gout),
        activations=timeline, op_counts=counts, subgraphs=len(m.subgraphs),
    )


def _work(name: str, in_shapes: list[tuple[int, ...]], out_shapes: tuple[tuple[int, ...], ...],
          out_elems: int) -> tuple[int, bool]:
    """(work elements, broadcast) of one op; see the module docstring. ``in_shapes`` include constants."""
    if name in REDUCE_OPS or name in POOL_OPS:
        return (_prod(in_shapes[0]) if in_shapes else 0), False
    elementwise = len(in_shapes) >= 2 and len(out_shapes) == 1 and name not in MAC_OPS and name not in MOVE_OPS
    return out_elems, elementwise and len(set(in_shapes)) > 1


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
