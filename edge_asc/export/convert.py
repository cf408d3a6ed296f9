"""The conversion steps: PyTorch -> ONNX (dynamo exporter) -> onnx2tf (in a subprocess) -> TFLite bytes, plus a
small TFLite op reader used to check what the converter really produced.

onnx2tf is pinned at 1.29.x (2.x needs Python >= 3.12). It runs in a child process because importing it changes
process-wide state (TF logging, environment variables), and because its int8 step can fail while the process still
exits 0: the output file is therefore always checked (exists, is a TFLite FlatBuffer, has the expected tensor types).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError

#: Export modes and the onnx2tf output file suffix each one takes.
MODE_FILES = {
    "float": "_float32.tflite",
    "dynamic-range": "_dynamic_range_quant.tflite",
    "int8": "_full_integer_quant.tflite",
    "edgetpu": "_full_integer_quant.tflite",
}
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
ONNX_OPSET = 18


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


def run_onnx2tf(onnx_path: Path, work: Path, mode: str, *, calib_npy: Path | None = None,
                mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,), timeout_s: float = 900,
                log_path: Path | None = None) -> Path:
    """Convert ``onnx_path`` with onnx2tf in a subprocess and return the TFLite file of ``mode``.

    Args:
        mode: 'float', 'dynamic-range', 'int8' or 'edgetpu' (int8 with int8 input and output, per-channel weights).
        calib_npy: float32[N, H, W, C] NHWC un-normalised calibration windows (needed for every quantised mode:
            onnx2tf would otherwise calibrate on 20 MS-COCO images, or try to download them).
        mean, std: per-channel normalisation the converter applies to ``calib_npy`` ((x - mean) / std), i.e. the
            checkpoint's ``norm_mean`` / ``norm_std``.

    Raises:
        ExportError: onnx2tf failed, timed out, or did not produce the expected file.
    """
    if mode not in MODE_FILES:
        raise ExportError(f"unknown export mode {mode!r}: choose one of {sorted(MODE_FILES)}")
    out_dir = work / "onnx2tf"
    cmd = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out_dir), "-n"]
    if mode != "float":
        if calib_npy is None:
            raise ExportError(f"mode {mode!r} needs calibration data (onnx2tf would otherwise calibrate on MS-COCO "
                              "images): pass --calib DIR or --data DIR")
        c = len(mean)
        m = repr([[[[float(v) for v in mean]]]]) if c > 1 else repr([[[[float(mean[0])]]]])
        s = repr([[[[float(v) for v in std]]]]) if c > 1 else repr([[[[float(std[0])]]]])
        cmd += ["-oiqt", "-qt", "per-channel", "-iqd", "int8", "-oqd", "int8",
                "-cind", INPUT_NAME, str(calib_npy), m, s]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    try:
        proc = subprocess.run(cmd, cwd=str(work), env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ExportError(f"onnx2tf did not finish within {timeout_s:.0f} s") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    if log_path is not None:
        log_path.write_text(" ".join(cmd) + "\n\n" + output, encoding="utf-8")
    stem = onnx_path.stem
    produced = out_dir / f"{stem}{MODE_FILES[mode]}"
    if proc.returncode != 0 or not produced.is_file() or produced.stat().st_size == 0:
        tail = [ln.strip() for ln in output.splitlines() if ln.strip()]
        hint = next((ln for ln in reversed(tail) if "error" in ln.lower() or "failed" in ln.lower()),
                    tail[-1] if tail else "no output")
        where = f" (full log: {log_path})" if log_path is not None else ""
        raise ExportError(f"onnx2tf (exit {proc.returncode}) did not produce {produced.name}: {hint[:300]}{where}")
    return produced


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TfliteOp:
    """One operator of subgraph 0: name (builtin name or custom code) and its tensors' dtypes."""

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
    """Operators of subgraph 0 in execution order (needs ``ai_edge_litert``'s schema module, export side)."""
    from ..errors import require

    schema = require("ai_edge_litert.schema_py_generated", "pi", "reading TFLite graphs")
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    g = m.subgraphs[0]
    out = []
    for op in g.operators or []:
        code = m.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        custom = builtin == schema.BuiltinOperator.CUSTOM
        name = (code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)) \
            if custom else op_names.get(builtin, str(builtin))

        ins = tuple(int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0)
        outs = tuple(int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0)

        def dt(ix):
            return tuple(type_names.get(g.tensors[i].type, "?") for i in ix)

        def sh(ix):
            return tuple(tuple(int(d) for d in (g.tensors[i].shape if g.tensors[i].shape is not None else []))
                         for i in ix)

        out.append(TfliteOp(name=name, custom=custom, inputs=ins, outputs=outs, input_dtypes=dt(ins),
                            output_dtypes=dt(outs), input_shapes=sh(ins), output_shapes=sh(outs)))
    return out


def op_summary(ops: list[TfliteOp]) -> dict[str, Any]:
    """Counts per op name, custom ops (Flex / TF select ops are custom), and ops computing on float tensors."""
    float_ops = Counter(o.name for o in ops
                        if o.name not in ("QUANTIZE", "DEQUANTIZE", "CAST")
                        and any(d in ("float32", "float16") for d in o.input_dtypes + o.output_dtypes))
    return {
        "ops": dict(sorted(Counter(o.name for o in ops).items())),
        "custom_ops": sorted({o.name for o in ops if o.custom}),
        "float_compute_ops": dict(sorted(float_ops.items())),
        "casts_to_float": sum(1 for o in ops if o.name == "CAST" and "float32" in o.output_dtypes),
    }
