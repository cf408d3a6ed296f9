"""The conversion steps: PyTorch -> ONNX (dynamo exporter) -> onnx2tf (child process: ONNX -> TF SavedModel, NCHW ->
NHWC) -> TFLite converter (child process: one float / dynamic-range / full-int8 conversion with the explicit
representative dataset), plus the op list (:func:`tflite_ops`) used to check what the converters really produced.

onnx2tf is pinned at 1.29.x (2.x needs Python >= 3.12). It runs in a child process because importing it changes
process-wide state (TF logging, environment variables). Converters can exit 0 without writing their file (onnx2tf
does when its int8 step fails), so every output is checked to exist; the caller then checks tensor types and ops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError

#: Export modes.
MODES = ("float", "dynamic-range", "int8", "edgetpu")
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
ONNX_OPSET = 18
#: onnx2tf 1.29 reads its "RGB test images" from this file in the working directory (or downloads them).
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def to_onnx(model: Any, example: np.ndarray, path: Path, *, opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` (eval mode) with the dynamo exporter to a single self-contained ONNX file.

    Args:
        model: a torch module mapping float32[1, C, n_mels, W] (NCHW) to logits float32[1, K].
        example: float32[1, C, n_mels, W] example input (fixes the static shape).

    Raises:
        ExportError: the exporter failed.
    """
    import torch

    model.eval()
    try:
        torch.onnx.export(model, (torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)),), str(path),
                          dynamo=True, opset_version=opset, external_data=False, verbose=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    except Exception as exc:  # the exporter raises many types; one line is enough for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"PyTorch -> ONNX export failed: {first}") from exc
    if not path.is_file():
        raise ExportError(f"PyTorch -> ONNX export wrote no file at {path}")
    return path


def _run(cmd: list[str], what: str, cwd: Path, timeout_s: float, log_path: Path | None) -> str:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    try:
        proc = subprocess.run(cmd, cwd=str(cwd), env=env, check=False, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what} did not finish within {timeout_s:.0f} s") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    if log_path is not None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write("$ " + " ".join(cmd) + "\n" + output + f"\n[exit {proc.returncode}]\n\n")
    if proc.returncode != 0:
        raise ExportError(f"{what} failed (exit {proc.returncode}): {_hint(output)}{_where(log_path)}")
    return output


def _hint(output: str) -> str:
    tail = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return next((ln for ln in reversed(tail) if "error" in ln.lower() or "failed" in ln.lower()),
                tail[-1] if tail else "no output")[:300]


def _where(log_path: Path | None) -> str:
    return f" (full log: {log_path})" if log_path is not None else ""


def run_onnx2tf(onnx_path: Path, work: Path, mode: str, *, calib_npy: Path | None = None,
                mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,), timeout_s: float = 900,
                log_path: Path | None = None, sample_nhwc: np.ndarray | None = None) -> Path:
    """ONNX -> TFLite of ``mode``: onnx2tf (child process) writes the float SavedModel + float32 TFLite; the
    quantised modes then run the TFLite converter once on that SavedModel (child process,
    :mod:`edge_asc.export._tflite_convert`).

    onnx2tf is never asked for int8 itself, so it can never fall back to calibrating on its MS-COCO images, and the
    int8 conversion allows TFLite int8 builtins only (no TF select ops).

    Args:
        mode: 'float', 'dynamic-range', 'int8' or 'edgetpu' (int8 with int8 input and output, per-channel weights).
        calib_npy: float32[N, H, W, C] NHWC un-normalised calibration windows (required for 'int8' / 'edgetpu').
        mean, std: per-channel normalisation applied to ``calib_npy`` ((x - mean) / std): the checkpoint's
            ``norm_mean`` / ``norm_std``, i.e. what the runtime applies to live features.
        sample_nhwc: float32[n <= 20, H, W, C] normalised model inputs for onnx2tf's op-by-op check. For an input
            with 3 channels (the paper front end: log-mel + deltas) onnx2tf takes the model for an RGB network and
            loads 20 MS-COCO test images from ``ONNX2TF_SAMPLE_FILE`` in its working directory, downloading them
            when the file is absent (which fails offline); we write our own windows there instead. Default: the
            first 20 windows of ``calib_npy``, normalised; give it for the float modes of a 3-channel model.

    Returns:
        the produced ``.tflite`` (checked to exist and be non-empty: a converter can exit 0 without writing it).

    Raises:
        ExportError: a step failed, timed out, or did not produce its file.
    """
    if mode not in MODES:
        raise ExportError(f"unknown export mode {mode!r}: choose one of {list(MODES)}")
    if mode in ("int8", "edgetpu") and calib_npy is None:
        raise ExportError(f"mode {mode!r} needs calibration data (never random tensors, never onnx2tf's MS-COCO "
                          "default): pass --calib DIR or --data DIR")
    out_dir = work / "onnx2tf"
    if sample_nhwc is None and calib_npy is not None:
        first = np.load(calib_npy, mmap_mode="r")[:20]
        sample_nhwc = (first - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if sample_nhwc is not None:
        np.save(work / ONNX2TF_SAMPLE_FILE, np.ascontiguousarray(sample_nhwc[:20], dtype=np.float32))
    _run([sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out_dir), "-n"], "onnx2tf", work,
         timeout_s, log_path)
    if mode == "float":
        return _produced(out_dir / f"{onnx_path.stem}_float32.tflite", "onnx2tf", log_path)
    if not (out_dir / "saved_model.pb").is_file():
        raise ExportError(f"onnx2tf wrote no SavedModel in {out_dir}{_where(log_path)}")
    target = work / f"model_{mode}.tflite"
    cmd = [sys.executable, "-m", "edge_asc.export._tflite_convert", str(out_dir), str(target),
           "int8" if mode in ("int8", "edgetpu") else "dynamic-range"]
    if mode in ("int8", "edgetpu"):
        cmd += [str(calib_npy), json.dumps([float(v) for v in mean]), json.dumps([float(v) for v in std])]
    _run(cmd, "TFLite int8 conversion" if mode != "dynamic-range" else "TFLite conversion", work, timeout_s,
         log_path)
    return _produced(target, "the TFLite converter", log_path)


def _produced(path: Path, what: str, log_path: Path | None) -> Path:
    if not path.is_file() or path.stat().st_size == 0:
        raise ExportError(f"{what} exited 0 but did not produce {path.name}{_where(log_path)}")
    return path


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TfliteOp:
    """One operator of subgraph 0: name (builtin name or custom code) and its tensors' dtypes (lower-case TFLite
    type names, as :data:`edge_asc.artifact.DTYPES` spells them) and shapes."""

    name: str
    custom: bool
    inputs: tuple[int, ...]
    """tensor indices (optional inputs, -1, left out)."""
    outputs: tuple[int, ...]
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]


def tflite_ops(model: bytes) -> list[TfliteOp]:
    """Operators of subgraph 0 in execution order, with their tensors' dtypes and shapes (read with
    :func:`edge_asc.artifact.read_artifact`)."""
    from ..artifact import read_artifact

    art = read_artifact(model)
    tensors = art.tensors
    out = []
    for op in art.ops:
        ins, outs = op.present_inputs, op.outputs
        out.append(TfliteOp(name=op.name, custom=op.custom, inputs=ins, outputs=outs,
                            input_dtypes=tuple(tensors[i].dtype for i in ins),
                            output_dtypes=tuple(tensors[i].dtype for i in outs),
                            input_shapes=tuple(tensors[i].shape for i in ins),
                            output_shapes=tuple(tensors[i].shape for i in outs)))
    return out


def op_summary(ops: list[TfliteOp]) -> dict[str, Any]:
    """Counts per op name, custom ops (Flex / TF select ops are custom), ops computing on float tensors, and the
    dtypes of every activation (op output) tensor: ``non_int8_activations`` lists ``OP:dtype`` for each op that
    writes a tensor other than int8 (empty for a full-int8 graph of the int8-native presets)."""
    float_ops = Counter(o.name for o in ops
                        if o.name not in ("QUANTIZE", "DEQUANTIZE", "CAST")
                        and any(d in ("float32", "float16") for d in o.input_dtypes + o.output_dtypes))
    activations = Counter(d for o in ops for d in o.output_dtypes)
    return {
        "ops": dict(sorted(Counter(o.name for o in ops).items())),
        "activation_dtypes": dict(sorted(activations.items())),
        "non_int8_activations": sorted({f"{o.name}:{d}" for o in ops for d in o.output_dtypes if d != "int8"}),
        "custom_ops": sorted({o.name for o in ops if o.custom}),
        "float_compute_ops": dict(sorted(float_ops.items())),
        "casts_to_float": sum(1 for o in ops if o.name == "CAST" and "float32" in o.output_dtypes),
    }
