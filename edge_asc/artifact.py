"""The one reader of a ``.tflite`` file: model card and metadata, operators, tensors, buffers, graph inputs/outputs.

A TFLite file is a FlatBuffer (schema: ``tensorflow/compiler/mlir/lite/schema/schema.fbs``, file identifier
``TFL3``). :func:`read_artifact` checks the identifier once and returns an :class:`Artifact` whose parts are read on
first use through the table API of ``ai_edge_litert.schema_py_generated`` (the ``pi`` extra; it needs the
pure-Python ``flatbuffers`` package and numpy): reading the card touches the metadata entries and one buffer, not the
graph. Device-safe: no tensorflow, torch or onnx, and not the LiteRT interpreter either.

Only subgraph 0 (the model's main graph, the one interpreters run) is described; :attr:`Artifact.subgraph_count`
says whether there are others. Tensor types are spelled one way everywhere: the schema's ``TensorType`` name in lower
case, which is numpy's name where numpy has the type (``'int8'``, ``'int32'``, ``'float32'``, ``'bool'``, ``'int4'``).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

from .errors import ModelContractError
from .spec import ModelCard

#: FlatBuffer file identifier of a TFLite model (bytes 4..8 of the file).
FILE_IDENTIFIER = b"TFL3"
#: Metadata entry name of the edge-asc model card (UTF-8 JSON of :class:`~edge_asc.spec.ModelCard`).
CARD_NAME = "edge_asc.model_card"

#: TFLite tensor type (lower case) -> (bytes per element, 0.5 for 4-bit; numpy dtype or None when numpy has none).
DTYPES: Mapping[str, tuple[float, str | None]] = MappingProxyType({
    "float32": (4, "<f4"), "float16": (2, "<f2"), "float64": (8, "<f8"), "bfloat16": (2, "<u2"),
    "int8": (1, "i1"), "uint8": (1, "u1"), "int16": (2, "<i2"), "uint16": (2, "<u2"),
    "int32": (4, "<i4"), "uint32": (4, "<u4"), "int64": (8, "<i8"), "uint64": (8, "<u8"),
    "bool": (1, "u1"), "int4": (0.5, None), "uint4": (0.5, None), "int2": (0.25, None),
    "complex64": (8, "<c8"), "complex128": (16, "<c16"), "string": (1, None),
    "float8_e4m3fn": (1, "u1"), "float8_e5m2": (1, "u1"),
})


def tensor_bytes(shape: Sequence[int], dtype: str) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype`` (a name of :data:`DTYPES`; unknown types count 1 byte per
    element), rounded up to whole bytes. Negative (dynamic) dimensions count as 0."""
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    return math.ceil(n * DTYPES.get(dtype, (1, None))[0])


@dataclass(frozen=True, kw_only=True)
class Quantization:
    """Affine quantisation of a tensor: ``real = scale * (q - zero_point)``, per tensor or along ``axis``."""

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int
    """the quantised dimension (``quantized_dimension``) when there is more than one scale; 0 otherwise."""

    @property
    def per_tensor(self) -> tuple[float, int] | None:
        """``(scale, zero point)`` when there is exactly one scale (what an interpreter's ``quantization`` reports)."""
        return (self.scales[0], self.zero_points[0] if self.zero_points else 0) if len(self.scales) == 1 else None


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """One tensor of subgraph 0."""

    index: int
    """index in subgraph 0 (the interpreter's tensor index)."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    """lower-case TFLite type name, a key of :data:`DTYPES` (e.g. 'int8', 'int32', 'float32')."""
    buffer: int
    """index of its buffer (0: the empty sentinel buffer)."""
    data: bytes | None = field(repr=False)
    """the stored bytes of a constant (weights, biases, shapes); None for activations and graph inputs."""
    quantization: Quantization | None
    """None when the tensor has no scales (float and structural tensors)."""
    variable: bool

    @property
    def constant(self) -> bool:
        return self.data is not None

    @property
    def nbytes(self) -> int:
        """Dense bytes of the tensor (:func:`tensor_bytes` of its shape and dtype)."""
        return tensor_bytes(self.shape, self.dtype)


@dataclass(frozen=True, kw_only=True)
class Op:
    """One operator of subgraph 0, in execution order."""

    index: int
    name: str
    """the builtin operator's schema name ('CONV_2D', 'MEAN', ...); for a custom operator its custom code."""
    custom: bool
    inputs: tuple[int, ...]
    """tensor indices in input-slot order; -1 marks an omitted optional input (e.g. a convolution without bias)."""
    outputs: tuple[int, ...]
    options: Mapping[str, Any]
    """``builtin_options`` by ``schema.fbs`` field name (e.g. ``filter_width``, ``adj_x``, ``fused_activation_function``
    as the enum's integer); vectors as tuples; empty when the op has none (``builtin_options_2``, used by StableHLO
    ops only, is not read)."""

    @property
    def present_inputs(self) -> tuple[int, ...]:
        """``inputs`` without the omitted optional ones (-1)."""
        return tuple(i for i in self.inputs if i >= 0)


@dataclass(frozen=True, eq=False)
class Artifact:
    """A ``.tflite`` file, read lazily: each property parses its part of the FlatBuffer on first use.

    Every property raises :class:`ModelContractError` (one line, naming the file) on a truncated or corrupt file.
    """

    data: bytes = field(repr=False)
    """the file's bytes."""
    where: str
    """the path, or '<bytes>': how messages name the model."""
    _model: Any = field(repr=False, compare=False)

    @property
    def file_bytes(self) -> int:
        return len(self.data)

    @functools.cached_property
    def version(self) -> int:
        """Schema version (3 for every current TFLite file)."""
        with self._guard():
            return int(self._model.Version())

    @functools.cached_property
    def metadata(self) -> Mapping[str, bytes]:
        """Every metadata entry as ``{name: raw bytes}`` (the converter's entries and edge-asc's card)."""
        with self._guard():
            m = self._model
            out = {}
            for i in range(m.MetadataLength()):
                entry = m.Metadata(i)
                name = _text(entry.Name())
                idx = int(entry.Buffer())
                if not 0 <= idx < m.BuffersLength():
                    raise ModelContractError(f"{self.where}: metadata '{name}' points at missing buffer {idx}")
                out[name] = self._buffer(idx)
            return MappingProxyType(out)

    @functools.cached_property
    def card(self) -> ModelCard:
        """The edge-asc :class:`~edge_asc.spec.ModelCard` stored as metadata :data:`CARD_NAME`.

        Raises:
            ModelContractError: no card (the model was not exported by edge-asc), or a card that does not parse.
        """
        raw = self.metadata.get(CARD_NAME)
        if raw is None:
            raise ModelContractError(
                f"{self.where}: model has no edge-asc model card (labels, front end, quantisation): "
                f"export it with 'edge-asc export' or add one with edge_asc.tflite_meta.embed_model_card"
            )
        try:
            return ModelCard.from_json(raw)
        except Exception as exc:  # noqa: BLE001 - ConfigError, or a foreign writer's JSON: one contract error
            raise ModelContractError(f"{self.where}: model card is invalid: {exc}") from None

    @functools.cached_property
    def buffers(self) -> tuple[bytes, ...]:
        """The bytes of every buffer, by buffer index (``b''`` for empty ones, such as buffer 0)."""
        with self._guard():
            return tuple(self._buffer(i) for i in range(self._model.BuffersLength()))

    @functools.cached_property
    def subgraph_count(self) -> int:
        with self._guard():
            return int(self._model.SubgraphsLength())

    @functools.cached_property
    def tensors(self) -> tuple[Tensor, ...]:
        """Every tensor of subgraph 0, by tensor index."""
        names = _names()
        buffers = self.buffers
        with self._guard():
            g = self._subgraph()
            out = []
            for i in range(g.TensorsLength()):
                t = g.Tensors(i)
                b = int(t.Buffer())
                data = buffers[b] if 0 < b < len(buffers) and buffers[b] else None
                q = t.Quantization()
                quant = None
                if q is not None and q.ScaleLength():
                    zp = q.ZeroPointAsNumpy() if q.ZeroPointLength() else ()
                    quant = Quantization(scales=tuple(float(s) for s in q.ScaleAsNumpy()),
                                         zero_points=tuple(int(z) for z in zp), axis=int(q.QuantizedDimension()))
                code = int(t.Type())
                out.append(Tensor(index=i, name=_text(t.Name()) or f"t{i}", shape=_ints(t.ShapeAsNumpy()),
                                  dtype=names.dtypes.get(code, f"type{code}"), buffer=b, data=data,
                                  quantization=quant, variable=bool(t.IsVariable())))
            return tuple(out)

    @functools.cached_property
    def ops(self) -> tuple[Op, ...]:
        """Every operator of subgraph 0 in execution order."""
        names = _names()
        with self._guard():
            m, g = self._model, self._subgraph()
            codes = []
            for k in range(m.OperatorCodesLength()):
                c = m.OperatorCodes(k)
                builtin = max(int(c.BuiltinCode()), int(c.DeprecatedBuiltinCode()))
                custom = builtin == names.schema.BuiltinOperator.CUSTOM
                codes.append((_text(c.CustomCode()) if custom else names.ops.get(builtin, f"OP{builtin}"), custom))
            out = []
            for k in range(g.OperatorsLength()):
                op = g.Operators(k)
                name, custom = codes[op.OpcodeIndex()]
                out.append(Op(index=k, name=name, custom=custom, inputs=_ints(op.InputsAsNumpy()),
                              outputs=_ints(op.OutputsAsNumpy()), options=_options(names.schema, op)))
            return tuple(out)

    @functools.cached_property
    def inputs(self) -> tuple[int, ...]:
        """Tensor indices of the graph inputs (subgraph 0)."""
        with self._guard():
            return _ints(self._subgraph().InputsAsNumpy())

    @functools.cached_property
    def outputs(self) -> tuple[int, ...]:
        """Tensor indices of the graph outputs (subgraph 0)."""
        with self._guard():
            return _ints(self._subgraph().OutputsAsNumpy())

    # -----------------------------------------------------------------------------------------------------------
    def _subgraph(self) -> Any:
        if not self._model.SubgraphsLength():
            raise ModelContractError(f"{self.where}: TFLite model has no subgraph: re-export it")
        return self._model.Subgraphs(0)

    def _buffer(self, index: int) -> bytes:
        b = self._model.Buffers(index)
        if b.DataLength():
            return b.DataAsNumpy().tobytes()
        offset, size = int(b.Offset()), int(b.Size())
        if offset > 1 and size:  # files over 2 GB keep buffers after the FlatBuffer, addressed by offset and size
            if offset + size > len(self.data):
                raise ModelContractError(f"{self.where}: buffer {index} lies past the end of the file: the file is "
                                         f"truncated or corrupt: re-export or re-copy it")
            return self.data[offset : offset + size]
        return b""

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except ModelContractError:
            raise
        except Exception as exc:  # noqa: BLE001 - flatbuffers raises struct/index/value errors on corrupt offsets
            raise ModelContractError(f"{self.where}: TFLite file is truncated or corrupt "
                                     f"({type(exc).__name__}: {exc}): re-export or re-copy it") from None


def load_bytes(model: str | os.PathLike | bytes) -> tuple[bytes, str]:
    """``(bytes, name for messages)`` of a model given as a path or as its bytes. No format check.

    Raises:
        ModelContractError: the path does not exist or is a directory.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    p = Path(model)
    if not p.exists():
        raise ModelContractError(f"{p}: no such model file: check the path or export one with 'edge-asc export'")
    if p.is_dir():
        raise ModelContractError(f"{p}: is a directory, expected a .tflite file")
    return p.read_bytes(), str(p)


def is_tflite(path: str | os.PathLike) -> bool:
    """True for an existing file whose FlatBuffer identifier is :data:`FILE_IDENTIFIER` (any file name); reads 8
    bytes."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(8)[4:8] == FILE_IDENTIFIER


def read_artifact(model: str | os.PathLike | bytes) -> Artifact:
    """Open a ``.tflite`` file (path or bytes). Only the header is checked here; the parts are read on first use.

    Raises:
        ModelContractError: missing file, not a TFLite FlatBuffer (no ``TFL3`` identifier), or a corrupt root table.
        MissingExtraError: ``ai-edge-litert`` (which ships the TFLite schema) is not installed.
    """
    data, where = load_bytes(model)
    if len(data) < 16 or data[4:8] != FILE_IDENTIFIER:
        raise ModelContractError(
            f"{where}: not a TFLite model (missing the 'TFL3' identifier): export one with 'edge-asc export'"
        )
    if int.from_bytes(data[:4], "little") >= len(data):
        raise ModelContractError(f"{where}: TFLite file is truncated or corrupt: re-export or re-copy it")
    schema = _names().schema
    art = Artifact(data=data, where=where, _model=schema.Model.GetRootAs(data, 0))
    _ = art.version  # reads the root table's vtable: a corrupt header fails here, not later
    return art


# ---------------------------------------------------------------------------------------------------------------
@functools.cache
def _names() -> SimpleNamespace:
    """The schema module and its enum value -> name maps, imported on first use."""
    from .errors import require

    schema = require("ai_edge_litert.schema_py_generated", "pi", "reading .tflite models")

    def enum(cls: type) -> dict[int, str]:
        return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}

    return SimpleNamespace(schema=schema, ops=enum(schema.BuiltinOperator),
                           dtypes={v: k.lower() for v, k in enum(schema.TensorType).items()})


def _text(s: bytes | str | None) -> str:
    return s.decode("utf-8", errors="replace") if isinstance(s, (bytes, bytearray)) else (s or "")


def _ints(v: Any) -> tuple[int, ...]:
    """A vector the table API returned (a numpy array, or 0 when the vector is absent) as a tuple of ints."""
    return tuple(int(x) for x in v) if not isinstance(v, int) else ()


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _options(schema: Any, op: Any) -> Mapping[str, Any]:
    opts = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), op.BuiltinOptions())
    if opts is None:
        return MappingProxyType({})
    out = {}
    for k, v in vars(opts).items():
        if hasattr(v, "tolist"):
            v = tuple(v.tolist())
        elif isinstance(v, list):
            v = tuple(v)
        out[_CAMEL.sub("_", k).lower()] = v
    return MappingProxyType(out)
