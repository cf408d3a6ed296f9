"""Read a ``.tflite`` FlatBuffer into a per-layer table: parameters, non-zero parameters, MACs, activation memory.

No TensorFlow: the file is read with :func:`edge_asc.artifact.read_artifact` (the TFLite schema bindings shipped with
the ``ai-edge-litert`` wheel of the ``pi`` extra). Only subgraph 0 (the model's main graph) is walked. Tensor types are
the reader's lower-case names ('int8', 'int32', 'float32').

Counting rules (they are the report's definitions; the tests pin them):

Parameters
    A *parameter* is a constant tensor (a tensor whose buffer holds data) that is either

    - the weight or bias input of a parametric op (``CONV_2D``/``DEPTHWISE_CONV_2D``/``FULLY_CONNECTED``/``CONV_3D``:
      inputs 1 and 2; ``TRANSPOSE_CONV``: inputs 1 and 3; ``BATCH_MATMUL``: any constant operand), whatever its dtype
      (int8 weights, int32 biases of an int8 model, float32 of a float model), or
    - any other constant of a *numeric data* dtype (float32/16/64, bfloat16, int8, uint8, int16, int4) - e.g. the
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
from typing import Any

from ..artifact import DTYPES, Artifact, Op, read_artifact, tensor_bytes

#: dtypes whose constants are model data (parameters) wherever they appear.
DATA_DTYPES = frozenset({"float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "int4", "uint4",
                         "int2", "float8_e4m3fn", "float8_e5m2"})
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


@dataclass(frozen=True, kw_only=True)
class ParamTensor:
    """One stored parameter tensor (see the module docstring for what counts)."""

    name: str
    dtype: str
    """TFLite tensor type, e.g. 'int8', 'int32', 'float32'."""
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
        tensor_info: tensor index -> (name, shape, dtype name as :data:`edge_asc.artifact.DTYPES` spells it).
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
                                  bytes=tensor_bytes(shape, dtype), first=first[i], last=last[i]))
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


def _nonzero(raw: bytes, dtype: str, count: int) -> int:
    import numpy as np

    npd = DTYPES.get(dtype, (1, None))[1]
    if dtype in ("int4", "uint4"):
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
    art = read_artifact(model)
    tensors = art.tensors
    names = [layer_op(op) for op in art.ops]
    timeline = activation_timeline(
        len(art.ops), [(op.present_inputs, op.outputs) for op in art.ops],
        {t.index: (t.name, t.shape, t.dtype) for t in tensors},
        constants=frozenset(t.index for t in tensors if t.constant), graph_inputs=art.inputs,
        graph_outputs=art.outputs, variables=[t.index for t in tensors if t.variable])
    params, structural = _param_tensors(art, names)
    layers = _layers(art, names, params, timeline)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ModelGraph(
        file_bytes=art.file_bytes, layers=layers, param_tensors=params, structural_constant_bytes=structural,
        input_shapes=tuple(tensors[i].shape for i in art.inputs),
        input_dtypes=tuple(tensors[i].dtype for i in art.inputs),
        output_shapes=tuple(tensors[i].shape for i in art.outputs),
        output_dtypes=tuple(tensors[i].dtype for i in art.outputs),
        activations=timeline, op_counts=counts, subgraphs=art.subgraph_count,
    )


def layer_op(op: Op) -> str:
    """The report's name of an operator: its builtin name, or ``'CUSTOM:<code>'`` for a custom operator."""
    return f"CUSTOM:{op.name}" if op.custom else op.name


def _param_tensors(art: Artifact, names: Sequence[str]) -> tuple[tuple[ParamTensor, ...], int]:
    """(parameter tensors in order of first use, bytes of structural constants); see "Parameters" above."""
    tensors = art.tensors
    seen_buffers: set[int] = set()
    params: list[ParamTensor] = []
    structural = 0
    for k, op in enumerate(art.ops):
        slots = PARAM_SLOTS.get(names[k], ())
        for slot, i in enumerate(op.inputs):
            if i < 0 or not tensors[i].constant or tensors[i].buffer in seen_buffers:
                continue
            t = tensors[i]
            seen_buffers.add(t.buffer)
            if slot in slots:
                role = "bias" if (slot == 2 and names[k] != "TRANSPOSE_CONV") or slot == 3 else "weight"
                if names[k] == "BATCH_MATMUL":
                    role = "weight"
            elif t.dtype in DATA_DTYPES:
                role = "constant"
            else:
                structural += len(t.data)
                continue
            count = _prod(t.shape)
            params.append(ParamTensor(name=t.name, dtype=t.dtype, shape=t.shape, role=role, count=count,
                                      nonzero=_nonzero(t.data, t.dtype, count), bytes=len(t.data), layer=k))
    return tuple(params), structural


def _layers(art: Artifact, names: Sequence[str], params: Sequence[ParamTensor],
            timeline: ActivationTimeline) -> tuple[Layer, ...]:
    """One :class:`Layer` per op: shapes, its parameters, MACs, other ops, work elements, live bytes."""
    tensors = art.tensors
    per_layer: dict[int, list[ParamTensor]] = {}
    for p in params:
        per_layer.setdefault(p.layer, []).append(p)
    layers = []
    for k, op in enumerate(art.ops):
        name = names[k]
        ins, outs = op.present_inputs, op.outputs
        in_shapes = [tensors[i].shape for i in ins]
        out_shapes = tuple(tensors[i].shape for i in outs)
        out_elems = sum(_prod(s) for s in out_shapes)
        macs, other = _macs(name, op, in_shapes, out_elems)
        elements, broadcast = _work(name, in_shapes, out_shapes, out_elems)
        lp = per_layer.get(k, [])
        layers.append(Layer(
            index=k, op=name, name=tensors[outs[0]].name if outs else "",
            input_shapes=tuple(tensors[i].shape for i in ins if not tensors[i].constant), output_shapes=out_shapes,
            params=sum(p.count for p in lp), param_bytes=sum(p.bytes for p in lp),
            nonzero_params=sum(p.nonzero for p in lp), macs=macs, other_ops=other, elements=elements,
            broadcast=broadcast, activation_bytes=timeline.live_bytes[k],
        ))
    return tuple(layers)


def _work(name: str, in_shapes: list[tuple[int, ...]], out_shapes: tuple[tuple[int, ...], ...],
          out_elems: int) -> tuple[int, bool]:
    """(work elements, broadcast) of one op; see the module docstring. ``in_shapes`` include constants."""
    if name in REDUCE_OPS or name in POOL_OPS:
        return (_prod(in_shapes[0]) if in_shapes else 0), False
    elementwise = len(in_shapes) >= 2 and len(out_shapes) == 1 and name not in MAC_OPS and name not in MOVE_OPS
    return out_elems, elementwise and len(set(in_shapes)) > 1


def _macs(name: str, op: Op, in_shapes: Sequence[tuple[int, ...]], out_elems: int) -> tuple[int, int]:
    """(MACs, other ops) of one op; see the module docstring. ``in_shapes``: its inputs' shapes, constants included."""

    def shape(slot: int) -> tuple[int, ...]:
        return in_shapes[slot] if slot < len(in_shapes) else ()

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
        k = (a[-2] if op.options.get("adj_x", False) else a[-1]) if a else 0
        return out_elems * k, 0
    if name in POOL_OPS:
        o = op.options
        return 0, out_elems * max(1, int(o.get("filter_height", 1)) * int(o.get("filter_width", 1)))
    if name in REDUCE_OPS:
        return 0, _prod(shape(0))
    if name in MOVE_OPS:
        return 0, 0
    return 0, out_elems
