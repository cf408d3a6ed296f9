"""The on-device classifier: a TFLite model plus the ModelCard it carries."""

from __future__ import annotations

import hashlib
import math
import os
import time

import numpy as np

from ..errors import ModelContractError
from ..frontend import normalize
from ..metrics import softmax
from ..spec import ModelCard, QuantParams
from ..tflite_meta import read_model_card
from .interpreter import _model_bytes, load_interpreter

_NP_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "float32": np.float32}


def _quant_of(detail: dict) -> tuple[float, int]:
    scale, zp = detail.get("quantization", (0.0, 0))
    return float(scale), int(zp)


def _same_scale(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=0.0)


class Classifier:
    """A ``.tflite`` model with an embedded :class:`~edge_asc.spec.ModelCard`, ready to classify feature windows.

    Attributes:
        card: the model card read from the file.
        labels: ``card.labels``; ``probabilities()[k]`` belongs to ``labels[k]``.
        model_sha256: hex sha256 of the model file's bytes (the model id in logs and databases).
        last_latency_s: wall time in seconds of the most recent ``invoke`` (0.0 before the first).
        backend: which interpreter package runs the model ('ai_edge_litert', 'tflite_runtime' or 'tensorflow').

    Raises (constructor):
        ModelContractError: the file is missing, is not TFLite, has no card, or its input/output tensors disagree with
            the card (shape, dtype, quantisation) or with the number of labels.
        MissingExtraError / DeviceError: see :func:`~edge_asc.runtime.load_interpreter`.
    """

    def __init__(self, model_path: str | os.PathLike | bytes, *, threads: int = 1, edgetpu: bool = False) -> None:
        data = _model_bytes(model_path)
        where = "<bytes>" if isinstance(model_path, (bytes, bytearray, memoryview)) else str(model_path)
        self.path = where
        self.model_sha256 = hashlib.sha256(data).hexdigest()
        self.card: ModelCard = read_model_card(data) if where == "<bytes>" else read_model_card(model_path)
        self.labels: tuple[str, ...] = self.card.labels
        self._interp = load_interpreter(data, threads=threads, edgetpu=edgetpu)
        from .interpreter import interpreter_backend

        self.backend = interpreter_backend()[0]
        self.threads = threads
        self.edgetpu = edgetpu
        self.last_latency_s = 0.0
        self._check_contract(where)

    # ---------------------------------------------------------------------------------------------------------
    def _check_contract(self, where: str) -> None:
        card = self.card
        ins = self._interp.get_input_details()
        outs = self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelContractError(
                f"{where}: model has {len(ins)} inputs and {len(outs)} outputs, expected 1 and 1: re-export it"
            )
        i, o = ins[0], outs[0]
        shape = tuple(int(v) for v in i["shape"])
        if shape != card.input_shape:
            raise ModelContractError(
                f"{where}: input tensor shape {shape} disagrees with the model card's {card.input_shape} "
                f"({card.input_layout}, {card.frontend.n_mels} mels x {card.window_frames} frames x "
                f"{card.frontend.channels} channels): re-export the model"
            )
        self._in_dtype = self._check_quant(where, "input", i, card.input_quant)
        self._out_dtype = self._check_quant(where, "output", o, card.output_quant)
        oshape = tuple(int(v) for v in o["shape"])
        k = len(card.labels)
        if int(np.prod(oshape)) != k or (oshape and oshape[-1] != k):
            raise ModelContractError(
                f"{where}: output tensor shape {oshape} does not give one score per label ({k} labels in the card): "
                f"re-export the model"
            )
        self._in_index, self._out_index = i["index"], o["index"]
        self._in_scale, self._in_zp = _quant_of(i)
        self._out_scale, self._out_zp = _quant_of(o)
        self._input = np.zeros(shape, dtype=self._in_dtype)
        if np.issubdtype(self._in_dtype, np.integer):
            info = np.iinfo(self._in_dtype)
            self._qmin, self._qmax = float(info.min), float(info.max)

    @staticmethod
    def _check_quant(where: str, what: str, detail: dict, q: QuantParams) -> type:
        dtype = np.dtype(detail["dtype"])
        if dtype.name != q.dtype:
            raise ModelContractError(
                f"{where}: {what} tensor is {dtype.name} but the model card says {q.dtype}: re-export the model"
            )
        if np.issubdtype(dtype, np.integer):
            scale, zp = _quant_of(detail)
            if scale <= 0:
                raise ModelContractError(f"{where}: integer {what} tensor has no quantisation scale: re-export it")
            if not _same_scale(scale, q.scale) or zp != q.zero_point:
                raise ModelContractError(
                    f"{where}: {what} quantisation in the model (scale {scale:.6g}, zero point {zp}) disagrees with "
                    f"the model card (scale {q.scale:.6g}, zero point {q.zero_point}): re-export the model"
                )
        return dtype.type

    # ---------------------------------------------------------------------------------------------------------
    @property
    def window_shape(self) -> tuple[int, int, int]:
        """Expected feature window shape ``(channels, n_mels, window_frames)``."""
        f = self.card.frontend
        return (f.channels, f.n_mels, self.card.window_frames)

    def _prepare(self, window: np.ndarray) -> None:
        w = np.asarray(window)
        if w.shape != self.window_shape:
            raise ModelContractError(
                f"feature window has shape {w.shape}, the model needs {self.window_shape} "
                f"(channels, mels, frames): use the model card's front end and window_frames"
            )
        x = normalize(w.astype(np.float32, copy=False), self.card.frontend)
        x = x.transpose(1, 2, 0)[None] if self.card.input_layout == "NHWC" else x[None]
        if np.issubdtype(self._in_dtype, np.integer):
            q = np.rint(x / np.float32(self._in_scale)) + np.float32(self._in_zp)
            np.clip(q, self._qmin, self._qmax, out=q)
            self._input[...] = q
        else:
            self._input[...] = x

    def logits(self, window: np.ndarray) -> np.ndarray:
        """Scores of one window.

        Args:
            window: float32[channels, n_mels, window_frames] of UN-normalised dB features from
                :mod:`edge_asc.frontend`; normalisation, layout and quantisation follow the model card.

        Returns:
            float32[K] dequantised model outputs (logits, or probabilities if ``card.output_kind`` says so).

        Raises:
            ModelContractError: a window of the wrong shape, or the interpreter failed to run the model on it
                (e.g. an int8 kernel's own check, such as a division by a zero-quantised tensor).
        """
        self._prepare(window)
        interp = self._interp
        interp.set_tensor(self._in_index, self._input)
        t0 = time.perf_counter()
        try:
            interp.invoke()
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelContractError(
                f"the interpreter failed to run the model on this window ({first}): the exported graph is "
                f"not runnable on this input; re-export it with this edge-asc version"
            ) from None
        self.last_latency_s = time.perf_counter() - t0
        out = interp.get_tensor(self._out_index).reshape(-1)
        if np.issubdtype(self._out_dtype, np.integer):
            return (out.astype(np.float32) - np.float32(self._out_zp)) * np.float32(self._out_scale)
        return out.astype(np.float32)

    def probabilities(self, window: np.ndarray) -> np.ndarray:
        """float32[K] class probabilities of one window (softmax of the logits, unless the model outputs them)."""
        out = self.logits(window)
        if self.card.output_kind == "probabilities":
            return out
        return softmax(out)
