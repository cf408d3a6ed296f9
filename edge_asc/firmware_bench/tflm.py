"""Tensor arena of a model measured with the TensorFlow Lite Micro Python interpreter (``tflite-micro`` package).

The interpreter is created with a generous arena, fed seeded random input, invoked once, and its
``RecordingMicroAllocator`` report (``print_allocations``, written by C++ to stderr) gives the bytes the arena really
used: head (the planned activation buffers, reused between ops) + tail (persistent interpreter data: tensor structs,
quantisation data, op state). That total is the ``arena_size`` a firmware needs with the same kernels; with
``confirm=True`` the model is run again with exactly that arena to prove it.

Every run happens in a child process: TFLite Micro aborts the process (segmentation fault) on some allocation
failures, and its messages go to the C-level stderr. Ops missing from the interpreter are found twice: statically
(the builtin ops whose kernels are registered in the installed TFLM build, read from its shared library) and by the
run itself ("Didn't find op for builtin opcode ..."), so a model that TFLM cannot run is reported as such.

Caveat: the Python build uses TFLM's reference kernels; a Cortex-M build with CMSIS-NN kernels asks for extra
scratch buffers (e.g. im2col) and its arena is usually somewhat larger.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError

_CHILD = r"""
import json, sys
import numpy as np
try:
    from tflite_micro.python.tflite_micro import runtime
except ImportError as exc:
    print(json.dumps({"ok": False, "stage": "import", "error": str(exc)})); sys.exit(0)
path, arena, n_inputs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
try:
    it = runtime.Interpreter.from_bytes(data, arena_size=arena)
except Exception as exc:
    print(json.dumps({"ok": False, "stage": "allocate", "error": str(exc)})); sys.exit(0)
print("STAGE allocated", flush=True)
try:
    for i in range(n_inputs):
        d = it.get_input_details(i)
        dt = np.dtype(d["dtype"])
        rng = np.random.default_rng(0)
        x = (rng.integers(-128, 127, size=d["shape"], endpoint=True) if dt.kind in "iu"
             else rng.standard_normal(d["shape"]))
        it.set_input(x.astype(dt), i)
    it.invoke()
    sys.stdout.flush()
    it.print_allocations()
except Exception as exc:
    print(json.dumps({"ok": False, "stage": "invoke", "error": str(exc)})); sys.exit(0)
print(json.dumps({"ok": True}))
"""

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")
_MISSING = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_MISSING_CUSTOM = re.compile(r"Didn't find op for custom opcode '([^']+)'")
_REQUESTED = re.compile(r"Requested: (\d+)")


@dataclass(frozen=True, kw_only=True)
class TflmResult:
    """Outcome of running a model in TFLite Micro. Bytes are arena bytes."""

    runs: bool
    """True when TFLM allocated and invoked the model."""
    arena_bytes: int | None = None
    """total arena used (head + tail); None when it did not run."""
    head_bytes: int | None = None
    """planned (non-persistent) tensor buffers."""
    tail_bytes: int | None = None
    """persistent interpreter data."""
    confirmed: bool | None = None
    """True when a second run with ``arena_size == arena_bytes`` succeeded (None: not tried)."""
    unsupported_ops: tuple[str, ...] = ()
    """ops of the model that this TFLM build cannot run."""
    error: str = ""
    """first line of TFLM's complaint when it did not run."""
    allocations: tuple[str, ...] = field(default_factory=tuple)
    """the RecordingMicroAllocator lines, verbatim."""
    tflm_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def supported_builtin_ops() -> frozenset[str]:
    """Builtin op names whose kernels the installed TFLM build registers (from the symbols of its shared library).

    Raises:
        MissingExtraError: tflite-micro is not installed.
    """
    try:
        import importlib.util

        spec = importlib.util.find_spec("tflite_micro")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("tflite_micro", "bench", "measuring the TFLite Micro arena")
    root = Path(next(iter(spec.submodule_search_locations)))
    names: set[str] = set()
    for so in root.rglob("_runtime*.so"):
        names.update(m.decode() for m in re.findall(rb"Register_([A-Z0-9_]+)Ev", so.read_bytes()))
    return frozenset(names)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tflite-micro")
    except Exception:  # noqa: BLE001 - metadata is informative only
        return ""


def _run_child(path: str, arena: int, n_inputs: int, timeout: float) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, path, str(arena), str(n_inputs)], capture_output=True,
                          check=False, text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    out = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                out = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if out is None:
        stage = "invoke" if "STAGE allocated" in proc.stdout else "allocation (op Prepare)"
        sig = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        last = next((ln.strip() for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "")
        why = f": {last[:160]}" if last else " without a message (an op/type it does not support?)"
        out = {"ok": False, "stage": "crash", "error": f"TFLM aborted ({sig}) during {stage}{why}"}
    return out, proc.stderr


#: Largest arena handed to the interpreter: the tflite-micro Python interpreter crashes (SIGSEGV while loading the
#: model) with arenas above 2 GiB (measured: 2,147,487,744 B loads, 2,415,919,104 B crashes).
MAX_ARENA_BYTES = 2**31


def measure_arena(model: str | os.PathLike | bytes, *, op_names: list[str] | tuple[str, ...] = (), n_inputs: int = 1,
                  upper_bound: int | None = None, confirm: bool = True, timeout: float = 120.0) -> TflmResult:
    """Run ``model`` once in TFLite Micro and return the arena it used.

    Args:
        model: .tflite path or bytes.
        op_names: the model's op names (from :func:`edge_asc.firmware_bench.graph.read_graph`) for the static
            support check; custom ops are given as 'CUSTOM:<code>'.
        n_inputs: number of input tensors to fill with zeros.
        upper_bound: arena bytes for the first run (default: 8 MiB); doubled up to 4 times when TFLM asks for more,
            never beyond ``MAX_ARENA_BYTES``.
        confirm: re-run with exactly the measured arena.

    Raises:
        MissingExtraError: tflite-micro is not installed (``pip install 'edge-asc[bench]'``).
    """
    supported = supported_builtin_ops()
    static_missing = sorted({n for n in op_names if not n.startswith("CUSTOM:") and n not in supported}
                            | {n for n in op_names if n.startswith("CUSTOM:")})
    version = _version()
    with tempfile.TemporaryDirectory(prefix="edge_asc_tflm_") as tmp:
        if isinstance(model, (bytes, bytearray, memoryview)):
            path = os.path.join(tmp, "model.tflite")
            Path(path).write_bytes(bytes(model))
        else:
            path = str(model)
        arena = min(int(upper_bound or 8 * 1024 * 1024), MAX_ARENA_BYTES)
        for _ in range(5):
            out, err = _run_child(path, arena, n_inputs, timeout)
            if out.get("stage") == "import":
                raise MissingExtraError("tflite_micro", "bench", "measuring the TFLite Micro arena")
            req = [int(x) for x in _REQUESTED.findall(err)]
            if out["ok"] or out.get("stage") != "allocate" or not req or max(req) < arena:
                break
            arena = min(2 * max(max(req), arena), MAX_ARENA_BYTES)  # the arena was too small: grow and retry
        missing = _MISSING.findall(err) + [f"CUSTOM:{c}" for c in _MISSING_CUSTOM.findall(err)]
        unsupported = tuple(sorted(set(static_missing) | set(missing)))
        if not out["ok"]:
            lines = [ln.strip() for ln in err.splitlines() if ln.strip() and not ln.startswith("[Recording")]
            first = next((ln for ln in lines if "Didn't find op" in ln), out.get("error", "") if out.get("stage") ==
                         "crash" else (lines[0] if lines else out.get("error", "")))
            return TflmResult(runs=False, unsupported_ops=unsupported, error=first or out.get("error", ""),
                              tflm_version=version)
        total = _TOTAL.search(err)
        head, tail = _HEAD.search(err), _TAIL.search(err)
        allocs = tuple(ln.strip() for ln in err.splitlines() if ln.startswith("[RecordingMicroAllocator]"))
        arena_bytes = int(total.group(1)) if total else None
        confirmed = None
        if confirm and arena_bytes:
            again, _ = _run_child(path, arena_bytes, n_inputs, timeout)
            confirmed = bool(again["ok"])
        return TflmResult(runs=True, arena_bytes=arena_bytes, head_bytes=int(head.group(1)) if head else None,
                          tail_bytes=int(tail.group(1)) if tail else None, confirmed=confirmed,
                          unsupported_ops=unsupported, allocations=allocs, tflm_version=version)
