"""Deployment targets (from ``targets.toml``), their latency model, and the host latency measurement.

A :class:`Target` is one board; :func:`load_targets` reads the packaged ``targets.toml`` plus an optional user file.
Latency provenance is one of :data:`PROVENANCES`:

- ``measured``: timed on this host with LiteRT (:func:`measure_host`), 1 thread and N threads;
- ``vela``: the Ethos-U compiler's performance estimate (NPU part; CPU ops estimated and added, listed);
- ``estimate``: :meth:`Target.estimate`, which counts all the work of the graph::

      cycles = conv/FC MACs * cycles_per_mac
             + sum over the other ops of  elements * per-op cost * cpi      (op-cost table)
               or                         elements * cycles_per_other_op    (uniform, when the target has no table)
             + ops * cycles_per_layer
      seconds = cycles / clock_hz + overhead_s

  ``elements`` is :attr:`~.graph.Layer.elements` (input elements for reductions and pooling, output elements
  otherwise). An op-cost table (:class:`OpCosts`, ``[op_costs.NAME]`` in ``targets.toml``) gives instructions per
  element per op type, measured for one runtime and instruction set; ``cpi`` turns them into the target's cycles.
  The packaged table ``tflm-cmsis-nn-armv7em`` is derived from an instruction count of TFLite Micro + CMSIS-NN on a
  Cortex-M4 (see ``targets.toml`` for the numbers and the derivation).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingExtraError
from .graph import MAC_OPS

if TYPE_CHECKING:
    from .graph import Layer

PROVENANCES = ("measured", "vela", "estimate")
KINDS = ("cpu", "mcu", "ethos-u", "edgetpu")
UNIFORM = "uniform"
#: op-cost table of a target of these kinds whose TOML row names none (other kinds: 'uniform', no table).
DEFAULT_OP_COSTS = {"mcu": "tflm-cmsis-nn-armv7em", "ethos-u": "tflm-cmsis-nn-armv7em"}


@dataclass(frozen=True, kw_only=True)
class OpCosts:
    """Instructions per work element (:attr:`~.graph.Layer.elements`) of each non-MAC op type, for one runtime and
    instruction set. Conv/dense ops are not in it: they cost their MACs times the target's ``cycles_per_mac``."""

    key: str
    source: str
    """where the numbers come from (measured how, on what)."""
    per_element: Mapping[str, float]
    """op type -> instructions per element; a key 'OP:broadcast' applies to broadcasting ops (``Layer.broadcast``)
    and takes precedence over 'OP'."""
    default: float
    """instructions per element of the op types not in ``per_element``."""
    instructions_per_mac: float = 0.0
    """conv/dense instructions per MAC measured with the same kernels (0: unknown); the basis of the
    ``cycles_per_mac`` of targets using this table (``instructions_per_mac * cpi``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_element", dict(self.per_element))
        if not self.source.strip():
            raise ConfigError(f"op costs {self.key!r}: 'source' must say where the costs come from")
        bad = {k: v for k, v in self.per_element.items() if not (isinstance(v, (int, float)) and v >= 0)}
        if bad or not self.default >= 0 or not self.instructions_per_mac >= 0:
            raise ConfigError(f"op costs {self.key!r}: costs must be numbers >= 0 (got {bad or self.default})")
        macs = sorted(k for k in self.per_element if k.split(":")[0] in MAC_OPS)
        if macs:
            raise ConfigError(f"op costs {self.key!r}: {macs} are MAC ops, priced by cycles_per_mac; remove them")

    def lookup(self, op: str, broadcast: bool = False) -> tuple[str | None, float]:
        """(the key used, or None for the default; instructions per element) of one op."""
        if broadcast and f"{op}:broadcast" in self.per_element:
            return f"{op}:broadcast", self.per_element[f"{op}:broadcast"]
        if op in self.per_element:
            return op, self.per_element[op]
        return None, self.default

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "source": self.source, "per_element": dict(self.per_element),
                "default": self.default, "instructions_per_mac": self.instructions_per_mac}


@dataclass(frozen=True, kw_only=True)
class LatencyEstimate:
    """One estimated inference and what it counts (see the module docstring). Cycles of the target's clock."""

    seconds: float
    clock_hz: float
    macs: int
    """conv/dense MACs (ops in :data:`~.graph.MAC_OPS`)."""
    cycles_per_mac: float
    elements: int
    """work elements of the other ops."""
    other_op_count: int
    """number of ops priced per element."""
    op_costs: str
    """the op-cost table's key, or 'uniform'."""
    op_costs_source: str = ""
    """the table's source (how its costs were obtained); '' when uniform."""
    cpi: float
    """cycles per instruction applied to the table's costs (1.0 and unused when uniform)."""
    cycles_per_other_op: float
    """cycles per element when uniform (0.0 and unused with a table)."""
    op_cycles: Mapping[str, float]
    """cycles per op type ('OP:broadcast' for broadcasting ops the table prices separately), largest first."""
    op_elements: Mapping[str, int]
    """work elements per op type, same keys."""
    defaulted: tuple[str, ...] = ()
    """op types priced at the table's default cost (no figure of their own)."""
    layers: int
    cycles_per_layer: float
    overhead_s: float = 0.0

    @property
    def mac_cycles(self) -> float:
        return self.macs * self.cycles_per_mac

    @property
    def other_cycles(self) -> float:
        return sum(self.op_cycles.values())

    @property
    def cycles(self) -> float:
        return self.mac_cycles + self.other_cycles + self.layers * self.cycles_per_layer

    def describe(self) -> str:
        """One line saying what the figure counts (the report's provenance note)."""
        if self.op_costs == UNIFORM:
            per = f"x {self.cycles_per_other_op:g} cycles/element (uniform)"
        else:
            per = f"x instructions/element per op type (table {self.op_costs}) x CPI {self.cpi:g}"
        total = self.cycles or 1.0
        top = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(self.op_cycles.items())[:4]
                        if v >= 0.01 * total)
        parts = []
        if self.macs:
            parts.append(f"{self.macs / 1e6:.2f} M conv/FC MACs x {self.cycles_per_mac:.3g} cycles/MAC "
                         f"({100 * self.mac_cycles / total:.0f}%)")
        parts.append(f"{self.elements / 1e6:.2f} M elements of {self.other_op_count} other ops {per} "
                     f"({100 * self.other_cycles / total:.0f}%{': ' + top if top else ''})")
        if self.cycles_per_layer:
            parts.append(f"{self.layers} ops x {self.cycles_per_layer:,.0f} cycles")
        line = " + ".join(parts) + f" = {self.cycles / 1e6:.2f} M cycles @ {self.clock_hz / 1e6:g} MHz"
        if self.overhead_s:
            line += f" + {self.overhead_s * 1e3:g} ms"
        return line

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_cycles"], d["op_elements"] = dict(self.op_cycles), dict(self.op_elements)
        d["defaulted"] = list(self.defaulted)
        d.update(mac_cycles=self.mac_cycles, other_cycles=self.other_cycles, cycles=self.cycles,
                 counts=self.describe())
        return d


def estimate_latency(layers: Iterable[Layer], *, clock_hz: float, cycles_per_mac: float,
                     op_costs: OpCosts | None = None, cpi: float = 1.0, cycles_per_other_op: float = 0.0,
                     cycles_per_layer: float = 0.0, overhead_s: float = 0.0) -> LatencyEstimate:
    """Estimated seconds of one inference of ``layers`` (formula in the module docstring).

    ``op_costs=None`` prices every non-MAC op at ``cycles_per_other_op`` cycles per element ('uniform').
    """
    macs = elements = n_other = n = 0
    cycles: dict[str, float] = {}
    elems: dict[str, int] = {}
    defaulted: set[str] = set()
    for layer in layers:
        n += 1
        if layer.op in MAC_OPS:
            macs += layer.macs
            continue
        n_other += 1
        elements += layer.elements
        if op_costs is None:
            key, per = layer.op, cycles_per_other_op
        else:
            used, ins = op_costs.lookup(layer.op, layer.broadcast)
            key, per = used or layer.op, ins * cpi
            if used is None:
                defaulted.add(layer.op)
        cycles[key] = cycles.get(key, 0.0) + layer.elements * per
        elems[key] = elems.get(key, 0) + layer.elements
    order = sorted(cycles, key=lambda k: (-cycles[k], k))
    est = LatencyEstimate(
        seconds=0.0, clock_hz=clock_hz, macs=macs, cycles_per_mac=cycles_per_mac, elements=elements,
        other_op_count=n_other, op_costs=op_costs.key if op_costs is not None else UNIFORM,
        op_costs_source=op_costs.source if op_costs is not None else "",
        cpi=cpi if op_costs is not None else 1.0,
        cycles_per_other_op=cycles_per_other_op if op_costs is None else 0.0,
        op_cycles={k: cycles[k] for k in order}, op_elements={k: elems[k] for k in order},
        defaulted=tuple(sorted(defaulted)), layers=n, cycles_per_layer=cycles_per_layer, overhead_s=overhead_s)
    return replace(est, seconds=est.cycles / clock_hz + overhead_s)


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
    """cycles per conv/dense MAC (int8, effective)."""
    op_costs: OpCosts | None = None
    """instructions per element of the other ops (None: 'uniform', ``cycles_per_other_op`` cycles per element)."""
    cpi: float = 1.0
    """cycles per instruction of this core running ``op_costs``' kernels."""
    cycles_per_other_op: float = 0.0
    """cycles per element of every non-MAC op when there is no op-cost table (and for the NPU without Vela)."""
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
               self.cycles_per_layer, self.overhead_s) < 0 or not self.cpi > 0:
            raise ConfigError(f"target {self.key!r}: sizes and coefficients must be >= 0 (cpi > 0)")
        if self.kind == "ethos-u" and not self.vela_accelerator:
            raise ConfigError(f"target {self.key!r}: kind 'ethos-u' needs vela_accelerator (e.g. 'ethos-u55-128')")
        if not self.source.strip():
            raise ConfigError(f"target {self.key!r}: 'source' must say where the latency coefficients come from")

    def estimate(self, layers: Iterable[Layer]) -> LatencyEstimate:
        """Estimated latency of running ``layers`` on this target's CPU (formula in the module docstring)."""
        return estimate_latency(layers, clock_hz=self.clock_hz, cycles_per_mac=self.cycles_per_mac,
                                op_costs=self.op_costs, cpi=self.cpi, cycles_per_other_op=self.cycles_per_other_op,
                                cycles_per_layer=self.cycles_per_layer, overhead_s=self.overhead_s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_costs"] = self.op_costs.to_dict() if self.op_costs is not None else UNIFORM
        return d


def _parse_op_costs(data: dict, where: str) -> dict[str, OpCosts]:
    tables = data.get("op_costs", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: expected [op_costs.NAME] tables")
    out = {}
    for key, row in tables.items():
        if key == UNIFORM:
            raise ConfigError(f"{where}: op costs may not be called {UNIFORM!r} (it means: no table)")
        try:
            out[key] = OpCosts(key=key, **row)
        except TypeError as exc:
            raise ConfigError(f"{where}: bad op costs {key!r}: {exc}") from None
    return out


def _parse(data: dict, where: str, op_costs: Mapping[str, OpCosts]) -> list[Target]:
    rows = data.get("target")
    if not isinstance(rows, list):
        raise ConfigError(f"{where}: expected [[target]] tables")
    out = []
    for row in rows:
        row = dict(row)
        name = row.pop("op_costs", DEFAULT_OP_COSTS.get(row.get("kind", "mcu"), UNIFORM))
        if name != UNIFORM and name not in op_costs:
            raise ConfigError(f"{where}: target {row.get('key', '?')!r}: no op costs {name!r}; choose from "
                              f"{sorted(op_costs)} or {UNIFORM!r}")
        try:
            out.append(Target(**row, op_costs=None if name == UNIFORM else op_costs[name]))
        except TypeError as exc:
            raise ConfigError(f"{where}: bad target {row.get('key', '?')!r}: {exc}") from None
    return out


def load_targets(extra: str | os.PathLike | None = None) -> dict[str, Target]:
    """The packaged targets, plus (replacing same keys) those of the TOML file ``extra``.

    Raises:
        ConfigError: a file that is not valid TOML or a target that does not validate.
    """
    text = resources.files("edge_asc.firmware_bench").joinpath("targets.toml").read_text()
    packaged = tomllib.loads(text)
    tables = _parse_op_costs(packaged, "targets.toml")
    targets = {t.key: t for t in _parse(packaged, "targets.toml", tables)}
    if extra is not None:
        p = Path(extra)
        if not p.is_file():
            raise ConfigError(f"{p}: no such targets file")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        tables = {**tables, **_parse_op_costs(data, str(p))}
        targets.update({t.key: t for t in _parse(data, str(p), tables)})
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
                "seconds": {str(k): v for k, v in self.seconds.items()},
                "runs": {str(k): v for k, v in self.runs.items()}}


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
