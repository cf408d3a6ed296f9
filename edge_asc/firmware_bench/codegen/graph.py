"""The int8 graph of a ``.tflite`` file as the firmware generator needs it: tensors with their quantisation and
constant data as numpy arrays, operators in execution order with their options.

The file is read by :func:`edge_asc.artifact.read_artifact` (the one ``.tflite`` reader); this module only turns its
:class:`~edge_asc.artifact.Tensor` records into the generator's view (numpy constants, float32 scales). Operators are
:class:`edge_asc.artifact.Op` as they are: ``name`` the builtin name ('CONV_2D'), ``custom`` for custom ops,
``options`` the builtin options by ``schema.fbs`` field name (``stride_h``, ``fused_activation_function``, ...).
Only subgraph 0 is read; a model with control flow (more subgraphs called from ops) is rejected by the lowering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...artifact import Artifact, Op, read_artifact, tensor_bytes
from ...artifact import Tensor as ArtifactTensor
from ...errors import ModelContractError

__all__ = ["Model", "Op", "Tensor", "from_artifact", "read_model"]

#: tensor types whose constant data the generator reads (as these numpy types) and can emit as C arrays
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int8": np.int8,
                 "uint8": np.uint8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """One tensor of subgraph 0.

    Attributes:
        index: its index in the subgraph.
        name: the converter's name (for messages only).
        shape: dimensions, ``()`` for a scalar.
        dtype: 'int8', 'int32', 'float32', ... (:data:`edge_asc.artifact.DTYPES` spelling).
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
        return tensor_bytes(self.shape, self.dtype)

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


@dataclass(frozen=True, kw_only=True)
class Model:
    """Subgraph 0 of a ``.tflite`` file: ``ops`` in execution order, ``inputs``/``outputs`` tensor indices."""

    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    n_subgraphs: int = 1


def _tensor(t: ArtifactTensor, where: str) -> Tensor:
    q = t.quantization
    data = None
    if t.data is not None:
        npdt = _NUMPY_DTYPES.get(t.dtype)
        if npdt is None:
            raise ModelContractError(f"{where}: tensor {t.index} ({t.name!r}) has constant data of type {t.dtype}, "
                                     f"which the firmware generator does not support")
        data = np.frombuffer(t.data, dtype=npdt)
        n = int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1
        if data.size != n:
            raise ModelContractError(f"{where}: tensor {t.index} ({t.name!r}) of shape {t.shape} has {data.size} "
                                     f"constant values: the file is corrupt: re-export it")
        data = data.reshape(t.shape)
    return Tensor(index=t.index, name=t.name, shape=t.shape, dtype=t.dtype,
                  scales=q.scales if q is not None else (), zero_points=q.zero_points if q is not None else (),
                  qdim=q.axis if q is not None else 0, data=data)


def from_artifact(art: Artifact) -> Model:
    """The generator's view of subgraph 0 of ``art``.

    Raises:
        ModelContractError: a corrupt file (from the artifact), or a constant of a type without a numpy type (int4).
    """
    return Model(tensors=tuple(_tensor(t, art.where) for t in art.tensors), ops=art.ops, inputs=art.inputs,
                 outputs=art.outputs, n_subgraphs=art.subgraph_count)


def read_model(model: bytes) -> Model:
    """Read a ``.tflite`` file's bytes (:func:`edge_asc.artifact.read_artifact`) into the generator's view.

    Raises:
        ModelContractError: not a TFLite FlatBuffer, a corrupt file, or an unsupported constant type.
        MissingExtraError: ``ai-edge-litert`` (the TFLite schema) is not installed.
    """
    return from_artifact(read_artifact(model))
