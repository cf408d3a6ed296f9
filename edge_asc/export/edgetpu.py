"""Coral Edge TPU: which ops of a full-int8 model the Edge TPU compiler will not map, and running the compiler.

The compiler maps a graph from its start up to the first op it cannot run (an unsupported op, or any op on a tensor
that is not 8-bit quantised) and leaves everything after it to the CPU. The op list follows the Coral documentation
("TensorFlow models on the Edge TPU", supported operations table).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: TFLite builtins the Edge TPU compiler can map (coral.ai/docs/edgetpu/models-intro, supported operations).
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "DEQUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
_QUANT_DTYPES = {"int8", "uint8", "int32"}  # int32: biases and shape operands


@dataclass(frozen=True, kw_only=True)
class EdgeTpuCheck:
    """What the Edge TPU compiler is expected to do with a model."""

    unsupported: dict[str, int]
    """op name -> count of ops the compiler will not map (unsupported op or a non-8-bit tensor)."""
    first_unmapped: int | None
    """execution index of the first op left to the CPU (the compiler maps only the ops before it); None: all."""
    n_ops: int
    compiler: str | None
    """path of edgetpu_compiler on PATH, or None."""
    command: str
    """the exact compiler command for this model."""
    compiled: str | None = None
    """the *_edgetpu.tflite written by the compiler, when it ran."""
    compiler_log: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"unsupported_ops": dict(self.unsupported), "first_unmapped_op": self.first_unmapped,
                "n_ops": self.n_ops, "compiler": self.compiler, "command": self.command,
                "compiled": self.compiled, "compiler_log": self.compiler_log[-2000:]}


def check_edgetpu(model: bytes, model_path: Path) -> EdgeTpuCheck:
    """List the ops of ``model`` the Edge TPU will not map and run ``edgetpu_compiler`` if it is on PATH."""
    from .convert import tflite_ops

    ops = tflite_ops(model)
    unsupported: dict[str, int] = {}
    first = None
    for i, op in enumerate(ops):
        bad_type = any(d not in _QUANT_DTYPES for d in op.input_dtypes + op.output_dtypes)
        if op.custom or op.name not in EDGETPU_OPS or bad_type:
            key = op.name if not bad_type or op.name not in EDGETPU_OPS else f"{op.name} (non-int8 tensor)"
            unsupported[key] = unsupported.get(key, 0) + 1
            if first is None:
                first = i
    out_dir = model_path.parent
    command = f"edgetpu_compiler -s -o {out_dir} {model_path}"
    compiler = shutil.which("edgetpu_compiler")
    compiled, log = None, ""
    if compiler:
        proc = subprocess.run([compiler, "-s", "-o", str(out_dir), str(model_path)], check=False, capture_output=True,
                              text=True, timeout=600)
        log = (proc.stdout or "") + (proc.stderr or "")
        cand = out_dir / f"{model_path.stem}_edgetpu.tflite"
        if proc.returncode == 0 and cand.is_file():
            compiled = str(cand)
    return EdgeTpuCheck(unsupported=unsupported, first_unmapped=first, n_ops=len(ops), compiler=compiler,
                        command=command, compiled=compiled, compiler_log=log)
