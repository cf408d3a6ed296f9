"""The model card inside a ``.tflite`` file: embed it at export time, read it on the device.

A TFLite file is a FlatBuffer whose root ``Model`` table has a ``metadata`` vector of ``(name, buffer index)``
entries. edge-asc stores its :class:`~edge_asc.spec.ModelCard` as UTF-8 JSON in a buffer named :data:`CARD_NAME`;
LiteRT and TFLite Micro ignore metadata they do not know.

Reading goes through :func:`edge_asc.artifact.read_artifact` (device-safe: the TFLite schema bindings of the ``pi``
extra, no tensorflow, no interpreter). Writing re-serialises the model with the FlatBuffers object API of the same
bindings (export side), keeping every buffer 16-byte aligned as the TFLite converter does.
"""

from __future__ import annotations

import os

from .artifact import CARD_NAME, FILE_IDENTIFIER, read_artifact
from .spec import ModelCard

__all__ = ["CARD_NAME", "embed_model_card", "read_metadata", "read_model_card"]


def read_metadata(model: str | os.PathLike | bytes) -> dict[str, bytes]:
    """All metadata entries of a TFLite model (path or bytes) as ``{name: raw bytes}``.

    Raises:
        ModelContractError: missing file, not a TFLite FlatBuffer, or corrupt offsets.
        MissingExtraError: ``ai-edge-litert`` (the TFLite schema) is not installed.
    """
    return dict(read_artifact(model).metadata)


def read_model_card(model: str | os.PathLike | bytes) -> ModelCard:
    """The :class:`ModelCard` embedded in a TFLite model (path or bytes).

    Raises:
        ModelContractError: missing or corrupt file, no card (the model was not exported by edge-asc), or a card that
            does not parse.
        MissingExtraError: ``ai-edge-litert`` (the TFLite schema) is not installed.
    """
    return read_artifact(model).card


def embed_model_card(tflite: bytes, card: ModelCard) -> bytes:
    """Return ``tflite`` with ``card`` stored as metadata :data:`CARD_NAME` (replacing an earlier card).

    Every other table, buffer and metadata entry is kept. Needs ``ai_edge_litert`` and ``flatbuffers`` (export side).
    """
    from .errors import require

    schema = require("ai_edge_litert.schema_py_generated", "pi", "writing TFLite metadata")
    flatbuffers = require("flatbuffers", "pi", "writing TFLite metadata")
    import numpy as np

    read_artifact(tflite)  # one line of ModelContractError for bytes that are not a TFLite model
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    model.buffers = list(model.buffers or [])
    metadata = [m for m in (model.metadata or []) if _name(m.name) != CARD_NAME]
    buf = schema.BufferT()
    buf.data = np.frombuffer(card.to_json().encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = CARD_NAME
    entry.buffer = len(model.buffers) - 1
    metadata.append(entry)
    model.metadata = metadata
    for b in model.buffers:  # keep tensor data 16-byte aligned like the TFLite converter
        b.__class__ = _aligned_buffer_class(schema)
    builder = flatbuffers.Builder(len(tflite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _name(n) -> str:
    return n.decode() if isinstance(n, (bytes, bytearray)) else (n or "")


_ALIGNED: dict[int, type] = {}


def _aligned_buffer_class(schema) -> type:
    cls = _ALIGNED.get(id(schema))
    if cls is not None:
        return cls

    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder):
            import numpy as np

            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                try:
                    data = builder.EndVector()
                except TypeError:  # flatbuffers < 2.0 needs the element count
                    data = builder.EndVector(len(raw))
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            if getattr(self, "offset", 0):
                schema.BufferAddOffset(builder, self.offset)
            if getattr(self, "size", 0):
                schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    _ALIGNED[id(schema)] = AlignedBufferT
    return AlignedBufferT
