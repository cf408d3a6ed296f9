"""The model card inside a ``.tflite`` file: embed it at export time, read it on the device.

A TFLite file is a FlatBuffer (schema: ``tensorflow/compiler/mlir/lite/schema/schema.fbs``) whose root ``Model`` table
has a ``metadata`` vector of ``(name, buffer index)`` entries. edge-asc stores its :class:`~edge_asc.spec.ModelCard`
as UTF-8 JSON in a buffer named :data:`CARD_NAME`; LiteRT and TFLite Micro ignore metadata they do not know.

Reading is device-safe: a ~60-line FlatBuffer walker on the standard library (``struct``), so the runtime and the
report read the card without tensorflow, flatbuffers or even LiteRT. Writing re-serialises the model with the
FlatBuffers object API of ``ai_edge_litert.schema_py_generated`` (export side), keeping every buffer 16-byte aligned
as the TFLite converter does.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from .errors import ModelContractError
from .spec import ModelCard

#: Metadata entry name of the edge-asc model card.
CARD_NAME = "edge_asc.model_card"
_FILE_ID = b"TFL3"

# Model table field indices (schema.fbs order).
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_DESC, _MODEL_BUFFERS, _MODEL_METABUF, _MODEL_METADATA = range(7)


class _FB:
    """Minimal read-only FlatBuffer table access over a bytes object."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def u32(self, off: int) -> int:
        return struct.unpack_from("<I", self.buf, off)[0]

    def i32(self, off: int) -> int:
        return struct.unpack_from("<i", self.buf, off)[0]

    def u64(self, off: int) -> int:
        return struct.unpack_from("<Q", self.buf, off)[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute offset of field ``index`` of the table at ``table``, or None when absent."""
        vtable = table - self.i32(table)
        vt_size = struct.unpack_from("<H", self.buf, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vt_size:
            return None
        rel = struct.unpack_from("<H", self.buf, vtable + slot)[0]
        return table + rel if rel else None

    def deref(self, off: int) -> int:
        return off + self.u32(off)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(start offset of the elements, length) of a vector field; (0, 0) when absent."""
        f = self.field(table, index)
        if f is None:
            return 0, 0
        v = self.deref(f)
        return v + 4, self.u32(v)

    def string(self, table: int, index: int) -> str | None:
        start, n = self.vector(table, index)
        if not start and not n:
            return None
        return self.buf[start : start + n].decode("utf-8", errors="replace")


def _load(model: str | os.PathLike | bytes) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    p = Path(model)
    if not p.exists():
        raise ModelContractError(f"{p}: no such model file: check the path or export one with 'edge-asc export'")
    if p.is_dir():
        raise ModelContractError(f"{p}: is a directory, expected a .tflite file")
    return p.read_bytes(), str(p)


def _check_tflite(buf: bytes, where: str) -> _FB:
    if len(buf) < 16 or buf[4:8] != _FILE_ID:
        raise ModelContractError(
            f"{where}: not a TFLite model (missing the 'TFL3' identifier): export one with 'edge-asc export'"
        )
    fb = _FB(buf)
    root = fb.u32(0)
    if root >= len(buf):
        raise ModelContractError(f"{where}: TFLite file is truncated or corrupt: re-export or re-copy it")
    return fb


def read_metadata(model: str | os.PathLike | bytes) -> dict[str, bytes]:
    """All metadata entries of a TFLite model as ``{name: raw bytes}``.

    Raises:
        ModelContractError: missing file, not a TFLite FlatBuffer, or corrupt offsets.
    """
    buf, where = _load(model)
    fb = _check_tflite(buf, where)
    try:
        root = fb.u32(0)
        bstart, bcount = fb.vector(root, _MODEL_BUFFERS)
        mstart, mcount = fb.vector(root, _MODEL_METADATA)
        out: dict[str, bytes] = {}
        for i in range(mcount):
            entry = fb.deref(mstart + 4 * i)
            name = fb.string(entry, 0) or ""
            bf = fb.field(entry, 1)
            bidx = fb.u32(bf) if bf is not None else 0
            if bidx >= bcount:
                raise ModelContractError(f"{where}: metadata '{name}' points at missing buffer {bidx}")
            btab = fb.deref(bstart + 4 * bidx)
            dstart, dlen = fb.vector(btab, 0)
            if dlen:
                data = buf[dstart : dstart + dlen]
            else:  # buffers of >2 GB models live after the FlatBuffer, addressed by offset/size
                of, sz = fb.field(btab, 1), fb.field(btab, 2)
                data = buf[fb.u64(of) : fb.u64(of) + fb.u64(sz)] if of is not None and sz is not None else b""
            out[name] = data
        return out
    except (struct.error, IndexError) as exc:
        raise ModelContractError(f"{where}: TFLite file is truncated or corrupt ({exc}): re-export or re-copy it") from None


def read_model_card(model: str | os.PathLike | bytes) -> ModelCard:
    """The :class:`ModelCard` embedded in a TFLite model.

    Raises:
        ModelContractError: no card (the model was not exported by edge-asc), or a card that does not parse.
    """
    meta = read_metadata(model)
    where = "<bytes>" if isinstance(model, (bytes, bytearray, memoryview)) else str(model)
    raw = meta.get(CARD_NAME)
    if raw is None:
        raise ModelContractError(
            f"{where}: model has no edge-asc model card (labels, front end, quantisation): "
            f"export it with 'edge-asc export' or add one with edge_asc.tflite_meta.embed_model_card"
        )
    try:
        return ModelCard.from_json(raw)
    except Exception as exc:  # ConfigError and friends: re-raise as a model contract problem
        raise ModelContractError(f"{where}: model card is invalid: {exc}") from None


def embed_model_card(tflite: bytes, card: ModelCard) -> bytes:
    """Return ``tflite`` with ``card`` stored as metadata :data:`CARD_NAME` (replacing an earlier card).

    Every other table, buffer and metadata entry is kept. Needs ``ai_edge_litert`` and ``flatbuffers`` (export side).
    """
    from .errors import require

    schema = require("ai_edge_litert.schema_py_generated", "pi", "writing TFLite metadata")
    flatbuffers = require("flatbuffers", "export", "writing TFLite metadata")
    import numpy as np

    _check_tflite(tflite, "<bytes>")
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
    builder.Finish(model.Pack(builder), file_identifier=_FILE_ID)
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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (used as the model id in logs and databases)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
