"""Deployment targets (from ``targets.toml``) and the host latency measurement.

A :class:`Target` is one board; :func:`load_targets` reads the packaged ``targets.toml`` plus an optional user file.
Latency provenance is one of :data:`PROVENANCES`:

- ``measured``: timed on this host with LiteRT (:func:`measure_host`), 1 thread and N threads;
- ``vela``: the Ethos-U compiler's performance estimate (NPU part; CPU ops estimated and added, listed);
- ``estimate``: ``(macs * cycles_per_mac + other_ops * cycles_per_other_op + layers * cycles_per_layer) / clock_hz
  + overhead_s`` with the target's coefficients and their written source.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from ..errors import ConfigError, MissingExtraError

PROVENANCES = ("measured", "vela", "estimate")
KINDS = ("cpu", "mcu", "ethos-u", "edgetpu")


@dataclass(frozen=True, kw_only=True)
class Target:
    """One deployment target. Bytes, Hz, seconds; the coefficients are in cycles."""

    key: str
    name: str
    cpu: str = ""
    kind: str = "mcu"
    clock_hz: float
    cores: int = 1
    ram_bytes: int
    """RAM available for the model's tensor arena (plus reserved_ram_bytes)."""
    flash_bytes: int = 0
    """0: storage is not a constraint."""
    reserved_ram_bytes: int = 0
    reserved_flash_bytes: int = 0
    host_match: tuple[str, ...] = ()
    cycles_per_mac: float
    cycles_per_other_op: float = 0.0
    cycles_per_layer: float = 0.0
    overhead_s: float = 0.0
    source: str
    vela_accelerator: str = ""
    vela_system_config: str = ""
    vela_memory_mode: str = ""
    npu_macs_per_cycle: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "host_match", tuple(self.host_match))
        if self.kind not in KINDS:
            raise ConfigError(f"target {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not (self.clock_hz > 0 and self.ram_bytes > 0 and self.cycles_per_mac > 0):
            raise ConfigError(f"target {self.key!r}: clock_hz, ram_bytes and cycles_per_mac must be > 0")
        if min(self.flash_bytes, self.reserved_ram_bytes, self.reserved_flash_bytes, self.cycles_per_other_op,
               self.cycles_per_layer, self.overhead_s) < 0:
            raise ConfigError(f"target {self.key!r}: sizes and coefficients must be >= 0")
        if self.kind == "ethos-u" and not self.vela_accelerator:
            raise ConfigError(f"target {self.key!r}: kind 'ethos-u' needs vela_accelerator (e.g. 'ethos-u55-128')")
        if not self.source.strip():
            raise ConfigError(f"target {self.key!r}: 'source' must say where the latency coefficients come from")

    def estimate_seconds(self, *, macs: float, other_ops: float, layers: int) -> float:
        """Estimated latency of one inference on this target's CPU (see the module docstring)."""
        cycles = macs * self.cycles_per_mac + other_ops * self.cycles_per_other_op + layers * self.cycles_per_layer
        return cycles / self.clock_hz + self.overhead_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse(data: dict, where: str) -> list[Target]:
    rows = data.get("target")
    if not isinstance(rows, list):
        raise ConfigError(f"{where}: expected [[target]] tables")
    out = []
    for row in rows:
        try:
            out.append(Target(**row))
        except TypeError as exc:
            raise ConfigError(f"{where}: bad target {row.get('key', '?')!r}: {exc}") from None
    return out


def load_targets(extra: str | os.PathLike | None = None) -> dict[str, Target]:
    """The packaged targets, plus (replacing same keys) those of the TOML file ``extra``.

    Raises:
        ConfigError: a file that is not valid TOML or a target that does not validate.
    """
    text = resources.files("edge_asc.firmware_bench").joinpath("targets.toml").read_text()
    targets = {t.key: t for t in _parse(tomllib.loads(text), "targets.toml")}
    if extra is not None:
        p = Path(extra)
        if not p.is_file():
            raise ConfigError(f"{p}: no such targets file")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        targets.update({t.key: t for t in _parse(data, str(p))})
    return targets


def host_model() -> str:
    """Board / CPU name of this host ('/proc/device-tree/model' on a Pi, the CPU model otherwise)."""
    for path in ("/proc/device-tree/model",):
        try:
            return Path(path).read_bytes().rstrip(b"\0").decode(errors="replace").strip()
        except OSError:
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True, kw_only=True)
class HostLatency:
    """Median wall-clock seconds per ``invoke()`` on this host with LiteRT, per thread count."""

    host: str
    machine: str
    seconds: dict[int, float] = field(default_factory=dict)
    """threads -> median seconds per inference."""
    runs: dict[int, int] = field(default_factory=dict)
    """threads -> timed runs."""
    interpreter: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "machine": self.machine, "interpreter": self.interpreter,
                "seconds": {str(k): v for k, v in self.seconds.items()}, "runs": {str(k): v for k, v in self.runs.items()}}


def _example_input(shape, dtype):
    """Seeded random input of ``shape``/``dtype`` (zeros would make int8 normalisation layers divide by zero)."""
    import numpy as np

    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -128), min(info.max, 127), size=shape, endpoint=True).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def measure_host(model: bytes, *, threads: tuple[int, ...] | None = None, budget_s: float = 0.5,
                 max_runs: int = 50) -> HostLatency:
    """Time ``model`` on this host with the LiteRT interpreter (seeded random input, default delegates: XNNPACK).

    For each thread count: 2 warm-up invokes, then timed invokes until ``budget_s`` or ``max_runs`` (at least 3).

    Raises:
        MissingExtraError: no LiteRT interpreter installed.
    """

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise MissingExtraError("ai_edge_litert", "pi", "timing the model on this host") from exc
    n_cpu = os.cpu_count() or 1
    threads = threads or tuple(sorted({1, n_cpu}))
    seconds: dict[int, float] = {}
    runs: dict[int, int] = {}
    for n in threads:
        it = Interpreter(model_content=model, num_threads=n)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], _example_input(d["shape"], d["dtype"]))
        for _ in range(2):
            it.invoke()
        times = []
        t_end = time.perf_counter() + budget_s
        while len(times) < 3 or (len(times) < max_runs and time.perf_counter() < t_end):
            t0 = time.perf_counter()
            it.invoke()
            times.append(time.perf_counter() - t0)
        seconds[n] = statistics.median(times)
        runs[n] = len(times)
    return HostLatency(host=host_model(), machine=platform.machine(), seconds=seconds, runs=runs,
                       interpreter="ai_edge_litert")
