"""The int8 graph of a ``.tflite`` file as the firmware generator needs it: tensors with their quantisation and
constant data, operators in execution order with their options.

Read with the object API of ``ai_edge_litert.schema_py_generated`` (``ModelT.InitFromPackedBuf``), the same bindings
as the rest of edge-asc, so a shared reader can replace :func:`read_model` without touching the generator.
Only subgraph 0 is read; a model with control flow (more subgraphs called from ops) is rejected by the lowering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import MissingExtraError, ModelContractError

#: TensorType enum value -> (name, numpy dtype or None when the generator has no C type for it)
_DTYPES: dict[int, tuple[str, Any]] = {
    0: ("float32", np.float32), 1: ("float16", np.float16), 2: ("int32", np.int32), 3: ("uint8", np.uint8),
    4: ("int64", np.int64), 6: ("bool", np.bool_), 7: ("int16", np.int16), 9: ("int8", np.int8),
    10: ("float64", np.float64), 17: ("int4", None),
}


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """One tensor of subgraph 0.

    Attributes:
        index: its index in the subgraph.
        name: the converter's name (for messages only).
        shape: dimensions, ``()`` for a scalar.
        dtype: 'int8', 'int32', 'float32', ...
        scales: float32 quantisation scales (empty: not quantised); more than one = per-channel along ``qdim``.
        zero_points: int zero points, one per scale.
        qdim: the quantised dimension of a per-channel tensor.
        data: the constant value (numpy array of ``shape`` and ``dtype``), None for activations.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    qdim: int = 0
    data: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor in memory (int4 packed two per byte)."""
        if self.dtype == "int4":
            return (self.size + 1) // 2
        return self.size * np.dtype(_DTYPES_BY_NAME[self.dtype]).itemsize

    @property
    def scale(self) -> float:
        """The (first) quantisation scale as float32 arithmetic sees it."""
        return float(np.float32(self.scales[0])) if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return int(self.zero_points[0]) if self.zero_points else 0

    @property
    def is_const(self) -> bool:
        return self.data is not None


_DTYPES_BY_NAME = {name: dt for name, dt in _DTYPES.values() if dt is not None}


@dataclass(frozen=True, kw_only=True)
class Op:
    """One operator: ``name`` is the builtin name ('CONV_2D'), ``options`` the builtin options as a dict of the
    schema's camelCase fields (empty when the op has none)."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Model:
    """Subgraph 0 of a ``.tflite`` file: ``ops`` in execution order, ``inputs``/``outputs`` tensor indices."""

    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    n_subgraphs: int = 1


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - the pi extra ships it
        raise MissingExtraError("ai_edge_litert", "pi", "reading .tflite files") from exc
    return schema


def read_model(buf: bytes) -> Model:
    """Parse a ``.tflite`` FlatBuffer.

    Args:
        buf: the file's bytes.

    Raises:
        ModelContractError: not a TFLite FlatBuffer, or a tensor refers to a buffer outside the file.
    """
    schema = _schema()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelContractError("not a TFLite model (no 'TFL3' FlatBuffer identifier)")
    try:
        m = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # noqa: BLE001 - a corrupt FlatBuffer raises anything
        raise ModelContractError(f"cannot parse the .tflite FlatBuffer: {exc}") from exc
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    g = m.subgraphs[0]
    tensors = []
    for i, t in enumerate(g.tensors):
        dtype, npdt = _DTYPES.get(int(t.type), (f"type{int(t.type)}", None))
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        q = t.quantization
        scales = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
        zps = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
        data = None
        b = m.buffers[t.buffer] if 0 <= t.buffer < len(m.buffers) else None
        if b is not None:
            raw = None
            if b.data is not None and len(b.data):
                raw = bytes(np.asarray(b.data, dtype=np.uint8))
            elif getattr(b, "offset", 0) and b.offset > 1:
                raw = buf[b.offset:b.offset + b.size]
            if raw is not None:
                if npdt is None:
                    raise ModelContractError(f"tensor {i} ({t.name!r}) has constant data of unsupported type {dtype}")
                data = np.frombuffer(raw, dtype=npdt).reshape(shape) if shape else np.frombuffer(raw, dtype=npdt)
        tensors.append(Tensor(index=i, name=(t.name or b"").decode(errors="replace") if isinstance(t.name, bytes)
                              else str(t.name or ""), shape=shape, dtype=dtype, scales=scales, zero_points=zps,
                              qdim=int(q.quantizedDimension) if q is not None else 0, data=data))
    ops = []
    for k, op in enumerate(g.operators):
        oc = m.operatorCodes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = op_names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            cc = oc.customCode
            name = "CUSTOM:" + (cc.decode() if isinstance(cc, bytes) else str(cc))
        opts = {}
        if op.builtinOptions is not None:
            opts = {key: val for key, val in vars(op.builtinOptions).items()}
        ops.append(Op(index=k, name=name, inputs=tuple(int(i) for i in op.inputs),
                      outputs=tuple(int(i) for i in op.outputs), options=opts))
    return Model(tensors=tuple(tensors), ops=tuple(ops), inputs=tuple(int(i) for i in g.inputs),
                 outputs=tuple(int(i) for i in g.outputs), n_subgraphs=len(m.subgraphs))
