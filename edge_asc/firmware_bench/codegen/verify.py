"""Bit-exactness against TensorFlow Lite Micro: the reference is the ``tflite-micro`` Python interpreter (never
LiteRT, whose XNNPACK and even reference kernels differ from TFLM by up to 23 LSB).

The interpreter runs in a child process (it can abort on a bad model); with ``tensors`` it preserves every tensor
and returns the requested ones, so a debug build's per-op dump can be compared op by op and the first diverging op
named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import MissingExtraError, ModelContractError
from .project import Project
from .runner import RunResult, read_dump, run_host, run_qemu

_CHILD = r"""
import json, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model, inputs_path, out_path = sys.argv[1:4]
tensors, arena = json.loads(sys.argv[4]), int(sys.argv[5])
cfg = runtime.InterpreterConfig.kPreserveAllTensors if tensors else runtime.InterpreterConfig.kAllocationRecording
it = runtime.Interpreter.from_bytes(open(model, "rb").read(), arena_size=arena, intrepreter_config=cfg)
ins, k = [], 0
while True:
    try:
        ins.append(it.get_input_details(k)); k += 1
    except Exception:
        break
outs, k = [], 0
while True:
    try:
        outs.append(it.get_output_details(k)); k += 1
    except Exception:
        break
x = np.load(inputs_path)
res = {"outputs": [], "tensors": {str(t): [] for t in tensors}}
for row in x:
    pos = 0
    for k, d in enumerate(ins):
        n = int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
        it.set_input(np.frombuffer(row[pos:pos + n].tobytes(), dtype=d["dtype"]).reshape(d["shape"]), k)
        pos += n
    it.invoke()
    res["outputs"].append(b"".join(np.ascontiguousarray(it.get_output(k)).tobytes() for k in range(len(outs))))
    for t in tensors:
        res["tensors"][str(t)].append(np.ascontiguousarray(it.GetTensor(t, 0)["tensor_data"]).tobytes())
np.savez(out_path, outputs=np.frombuffer(b"".join(res["outputs"]), dtype=np.int8).reshape(len(x), -1),
         **{"t" + t: np.frombuffer(b"".join(v), dtype=np.int8).reshape(len(x), -1) for t, v in res["tensors"].items()})
"""


def tflm_reference(model_path: str | os.PathLike, inputs: np.ndarray, *, tensors: tuple[int, ...] = (),
                   arena_bytes: int = 64 << 20, timeout_s: float = 600.0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Run TFLite Micro on ``inputs``.

    Args:
        model_path: the ``.tflite`` file.
        inputs: int8[n, input bytes] (all input tensors concatenated per row).
        tensors: tensor indices whose values to return (preserves all tensors).

    Returns:
        (int8[n, output bytes], {tensor index: int8[n, tensor bytes]}).

    Raises:
        MissingExtraError: the ``tflite-micro`` package is not installed.
        ModelContractError: TFLM failed on the model.
    """
    try:
        import tflite_micro  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("tflite_micro", "bench", "the TFLite Micro reference") from exc
    with tempfile.TemporaryDirectory(prefix="edge_asc_fw_") as tmp:
        np.save(Path(tmp) / "in.npy", np.ascontiguousarray(inputs, dtype=np.int8))
        out = Path(tmp) / "out.npz"
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(model_path), str(Path(tmp) / "in.npy"), str(out),
                               json.dumps([int(t) for t in tensors]), str(arena_bytes)], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
        if proc.returncode or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise ModelContractError(f"TFLite Micro failed on {model_path}: {last[:200]}")
        with np.load(out) as z:
            return z["outputs"].copy(), {int(k[1:]): z[k].copy() for k in z.files if k.startswith("t")}


def seeded_inputs(model_bytes: bytes, n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded inputs as raw bytes, int8[n, input bytes]: int8 tensors uniform over [-128, 127] (saturation
    included), float32 tensors standard normal x 4 (the QUANTIZE at the boundary saturates some)."""
    from .graph import read_model

    model = read_model(model_bytes)
    rng = np.random.default_rng(seed)
    parts = []
    for i in model.inputs:
        t = model.tensors[i]
        if t.dtype == "float32":
            v = (rng.standard_normal((n, t.size)) * 4.0).astype(np.float32)
            parts.append(v.view(np.int8).reshape(n, -1))
        elif t.dtype == "int8":
            parts.append(rng.integers(-128, 128, size=(n, t.size), dtype=np.int8))
        else:
            raise ModelContractError(f"input tensor {i} has dtype {t.dtype}: the firmware takes int8 or float32")
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True, kw_only=True)
class Divergence:
    """The first op whose output differs from TFLM's (input ``row``): max absolute difference and count."""

    row: int
    op_index: int
    op_name: str
    tensor: int
    max_abs_diff: int
    n_diff: int
    n_elements: int

    def __str__(self) -> str:
        return (f"first diverging op: {self.op_index} ({self.op_name}), tensor {self.tensor}: {self.n_diff} of "
                f"{self.n_elements} values differ (max |diff| {self.max_abs_diff}) on input {self.row}")


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Outputs of ``n`` inputs compared with TFLM: ``n_equal`` bit-identical rows; ``divergence`` when not."""

    where: str
    n: int
    n_equal: int
    max_abs_diff: int
    divergence: Divergence | None = None
    run: RunResult | None = None

    @property
    def bit_exact(self) -> bool:
        return self.n_equal == self.n

    def to_json(self) -> dict:
        return {"where": self.where, "n": self.n, "n_equal": self.n_equal, "bit_exact": self.bit_exact,
                "max_abs_diff": self.max_abs_diff, "first_divergence": str(self.divergence) if self.divergence
                else None}


def first_divergence(project: Project, model_path: str | os.PathLike, row: np.ndarray, row_index: int = 0
                     ) -> Divergence | None:
    """Run the debug build and TFLM (all tensors preserved) on one input and return the first op whose output
    differs, or None when every op output is identical."""
    res = run_host(project, row.reshape(1, -1), debug=True)
    dump = read_dump(project.out_dir / "build" / "run-debug" / "ek_dump.bin")
    tensors = tuple(sorted({t for _, t, _ in dump}))
    _, ref = tflm_reference(model_path, row.reshape(1, -1), tensors=tensors)
    del res
    for op, t, got in dump:
        want = ref[t][0]
        if got.shape != want.shape or not np.array_equal(got, want):
            diff = np.abs(got.astype(np.int32) - want.astype(np.int32)) if got.shape == want.shape else None
            return Divergence(row=row_index, op_index=op, op_name=project.op_names[op], tensor=t,
                              max_abs_diff=int(diff.max()) if diff is not None else -1,
                              n_diff=int((diff != 0).sum()) if diff is not None else got.size,
                              n_elements=int(want.size))
    return None


def compare(project: Project, model_path: str | os.PathLike, inputs: np.ndarray, *, where: str = "host",
            reference: np.ndarray | None = None, locate: bool = True) -> Comparison:
    """Run the firmware (``where``: 'host' or 'qemu') and TFLM on ``inputs`` and compare the outputs bit for bit.

    Args:
        reference: TFLM's outputs when already computed.
        locate: on a mismatch, find the first diverging op with the host debug build.
    """
    ref = tflm_reference(model_path, inputs)[0] if reference is None else reference
    run = run_host(project, inputs) if where == "host" else run_qemu(project, inputs)
    got = run.outputs
    if got.shape != ref.shape:
        raise ModelContractError(f"firmware outputs have shape {got.shape}, TFLM's {ref.shape}")
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    equal = (diff == 0).all(axis=1)
    div = None
    if locate and not equal.all():
        k = int(np.argmin(equal))
        div = first_divergence(project, model_path, inputs[k], k)
    return Comparison(where=where, n=len(inputs), n_equal=int(equal.sum()), max_abs_diff=int(diff.max(initial=0)),
                      divergence=div, run=run)
