"""Ethos-U55/U65 figures from the ``ethos-u-vela`` compiler (``pip install 'edge-asc[bench]'``).

``vela`` is run in a temporary directory on the model with an explicit accelerator, system configuration and memory
mode from its bundled ``Arm/vela.ini``; the report reads the per-network summary CSV it writes (cycles, inference
time, SRAM and flash used, MACs) and the compiled ``*_vela.tflite`` (every op that is not the ``ethos-u`` custom op
stays on the CPU). The reasons Vela gives for each CPU op ("Warning (supported operators) ...") are kept.

Vela's inference time covers the NPU part only: ops left on the CPU are extra (listed, never hidden). Known Vela
facts: nearest-neighbour resize runs on the NPU only for equal scale factors of 2, 4 or 8, other factors fall back to
the CPU; ``--show-cpu-operations`` crashed in Vela 5.2.0, so it is not used. Vela's "Neural network macs" counts
reductions such as MEAN as MACs, so it can exceed the conv/dense MACs of :mod:`edge_asc.firmware_bench.graph`.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError, MissingExtraError

_WARN = re.compile(r"Warning \(supported operators\) operator: ([A-Z0-9_]+), ofm: '([^']*)'\s*\nReason: ([^\n]*)")


@dataclass(frozen=True, kw_only=True)
class CpuOp:
    """An op Vela left on the CPU."""

    op: str
    tensor: str
    """its output tensor."""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class VelaResult:
    """Vela's estimate for one accelerator configuration. Times in seconds, memory in bytes."""

    accelerator: str
    """e.g. 'ethos-u55-128'."""
    system_config: str
    memory_mode: str
    clock_hz: float
    cycles: int
    """total cycles per inference (NPU part)."""
    inference_seconds: float
    sram_bytes: int
    """SRAM used (tensor arena of the NPU part)."""
    flash_bytes: int
    """off-chip + on-chip flash used (command stream + encoded weights)."""
    nn_macs: int
    """Vela's own MAC count (includes reductions)."""
    npu_ops: int
    cpu_ops: tuple[CpuOp, ...]
    vela_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vela_cmd() -> list[str]:
    try:
        import ethosu.vela  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("ethos-u-vela", "bench", "Ethos-U estimates") from exc
    exe = Path(sys.executable).with_name("vela")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vela")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from ethosu.vela.vela import main; sys.exit(main())"]


def run_vela(model: str | os.PathLike | bytes, *, accelerator: str = "ethos-u55-128",
             system_config: str = "Ethos_U55_High_End_Embedded", memory_mode: str = "Shared_Sram",
             timeout: float = 300.0) -> VelaResult:
    """Compile ``model`` with Vela in a temporary directory and parse its summary.

    Raises:
        MissingExtraError: ethos-u-vela is not installed.
        ExportError: Vela failed (its last output line is in the message).
    """
    cmd = _vela_cmd()
    with tempfile.TemporaryDirectory(prefix="edge_asc_vela_") as tmp:
        src = Path(tmp) / "model.tflite"
        if isinstance(model, (bytes, bytearray, memoryview)):
            src.write_bytes(bytes(model))
        else:
            shutil.copyfile(model, src)
        out_dir = Path(tmp) / "out"
        args = [*cmd, "--config", "Arm/vela.ini", "--accelerator-config", accelerator, "--system-config",
                system_config, "--memory-mode", memory_mode, "--output-dir", str(out_dir), str(src)]
        try:
            proc = subprocess.run(args, capture_output=True, check=False, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise ExportError(f"vela did not finish within {timeout:.0f} s: skip it with --no-vela") from None
        text = proc.stdout + "\n" + proc.stderr
        csvs = sorted(out_dir.glob("*_summary_*.csv")) if out_dir.exists() else []
        if proc.returncode != 0 or not csvs:
            last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "no output")
            raise ExportError(f"vela failed for {accelerator} (exit {proc.returncode}): {last.strip()[:200]}")
        with open(csvs[0], newline="") as f:
            row = next(csv.DictReader(f))
        reasons = {(m.group(1), m.group(2)): m.group(3).strip() for m in _WARN.finditer(text)}
        compiled = next(out_dir.glob("*_vela.tflite"), None)
        cpu_ops: list[CpuOp] = []
        npu_ops = 0
        if compiled is not None:
            from .graph import read_graph

            for layer in read_graph(compiled).layers:
                if layer.op == "CUSTOM:ethos-u":
                    npu_ops += 1
                else:
                    reason = reasons.get((layer.op, layer.name), "")
                    cpu_ops.append(CpuOp(op=layer.op, tensor=layer.name, reason=reason))
        m_npu = re.search(r"NPU operators = (\d+)", text)
        from importlib.metadata import version

        kib = 1024.0
        return VelaResult(
            accelerator=accelerator, system_config=system_config, memory_mode=memory_mode,
            clock_hz=float(row["core_clock"]), cycles=int(float(row["cycles_total"])),
            inference_seconds=float(row["inference_time"]),
            sram_bytes=round(float(row["sram_memory_used"]) * kib),
            flash_bytes=round((float(row["off_chip_flash_memory_used"])
                               + float(row["on_chip_flash_memory_used"])) * kib),
            nn_macs=int(float(row["nn_macs"])), npu_ops=int(m_npu.group(1)) if m_npu else npu_ops,
            cpu_ops=tuple(cpu_ops), vela_version=version("ethos-u-vela"),
        )
