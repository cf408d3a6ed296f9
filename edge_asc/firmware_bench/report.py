"""The model report: one dataclass built from a ``.tflite`` file, rendered elsewhere (:mod:`.render`).

:func:`build_report` reads the FlatBuffer (:mod:`.graph`), the embedded model card (window, front end), checks the
DCASE budgets (:mod:`.budgets`), optionally measures the TFLite Micro arena (:mod:`.tflm`), runs Vela (:mod:`.vela`)
and times the model on this host, and evaluates every target of ``targets.toml`` (:mod:`.targets`).

Audio-time conventions:

- ``macs_per_inference``: conv/dense MACs of one model window (``window_seconds`` of audio).
- ``macs_per_second_1s``: the DCASE 2022+ figure, MACs for 1 s of audio input: ``macs_per_inference *
  frames_in_1s / window_frames`` (convolution MACs scale with the number of frames; for a 1-s model such as ``edge``
  the factor is exactly 1; dense layers do not scale, so for long windows this slightly underestimates).
- ``macs_per_second_streaming``: MACs per second of a live stream at the chosen hop: ``macs_per_inference / hop``.
- duty cycle: ``latency / hop`` — the fraction of time the processor spends on inference.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BudgetExceededError, ConfigError, EdgeAscError, ModelContractError
from .budgets import REQUIRE_GROUPS, BudgetCheck, dcase_checks
from .graph import ModelGraph, read_graph
from .targets import HostLatency, LatencyEstimate, Target, estimate_latency, load_targets, measure_host
from .tflm import TflmResult
from .vela import VelaResult


@dataclass(frozen=True, kw_only=True)
class TargetResult:
    """One target's verdict. Seconds, bytes; ``fits_flash`` is None when storage is not a constraint."""

    key: str
    name: str
    kind: str
    provenance: str
    """'measured', 'vela', 'estimate' or 'firmware (qemu)' (instructions, flash and RAM of the generated firmware
    measured under QEMU; latency = those instructions x the target's CPI / clock, an estimate)."""
    latency_s: float
    """one inference, 1 thread (or the NPU)."""
    latency_s_multi: float | None = None
    """one inference with ``threads`` threads (measured only)."""
    threads: int = 1
    duty_cycle: float
    """busy share of the core while streaming: ``latency_s / hop``, or with a measured on-device front end
    (``frontend``) its duty cycle, front end included."""
    ram_needed_bytes: int
    ram_source: str
    """what ram_needed_bytes is: 'TFLM arena (measured)', 'Vela SRAM', 'activation peak (estimate)', ..."""
    ram_available_bytes: int
    fits_ram: bool
    flash_needed_bytes: int
    flash_available_bytes: int
    fits_flash: bool | None
    runs: bool = True
    """False when the target's runtime cannot run the model (e.g. TFLM lacks an op)."""
    cpu_ops: tuple[str, ...] = ()
    """ops an accelerator leaves on the CPU."""
    notes: tuple[str, ...] = ()
    source: str = ""
    frontend: dict[str, Any] | None = None
    """with a measured ``edge-asc firmware --frontend --run``: the on-device front end, ``hop_instructions`` per STFT
    hop (measured, qemu), ``hop_s``, and at this report's hop (window stride) ``audio_to_label_s`` (one hop + window
    layout + model, estimate) and ``duty_cycle`` ((STFT hops per stride x hop + layout + model) / stride, estimate);
    flash and RAM of front end + model linked together (the fit verdict uses them)."""
    estimate: LatencyEstimate | None = None
    """the cycle model (:meth:`Target.estimate`): for provenance 'estimate' the latency itself; for 'measured' its
    prediction, for comparison; for 'vela' the share of the ops left on the CPU (None when there are none)."""

    @property
    def fits(self) -> bool:
        return self.runs and self.fits_ram and self.fits_flash is not False

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["cpu_ops"], d["notes"], d["fits"] = list(self.cpu_ops), list(self.notes), self.fits
        d["estimate"] = self.estimate.to_dict() if self.estimate is not None else None
        return d


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything ``edge-asc report`` knows about a model. See the module docstring for the conventions."""

    model: str
    sha256: str
    graph: ModelGraph
    card: dict[str, Any] | None
    window_seconds: float
    window_frames: int | None
    frames_per_second: float | None
    hop_seconds: float
    macs_per_inference: int
    macs_per_second_1s: float
    macs_per_second_streaming: float
    budgets: tuple[BudgetCheck, ...]
    tflm: TflmResult | None = None
    vela: dict[str, VelaResult] = field(default_factory=dict)
    host: HostLatency | None = None
    targets: tuple[TargetResult, ...] = ()
    warnings: tuple[str, ...] = ()
    edge_asc_version: str = ""

    def budget(self, key: str) -> BudgetCheck:
        for b in self.budgets:
            if b.key == key:
                return b
        raise KeyError(key)

    def target(self, key: str) -> TargetResult:
        for t in self.targets:
            if t.key == key:
                return t
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "sha256": self.sha256, "edge_asc_version": self.edge_asc_version,
            "card": self.card, "window_seconds": self.window_seconds, "window_frames": self.window_frames,
            "frames_per_second": self.frames_per_second, "hop_seconds": self.hop_seconds,
            "macs_per_inference": self.macs_per_inference, "macs_per_second_1s": self.macs_per_second_1s,
            "macs_per_second_streaming": self.macs_per_second_streaming,
            "graph": self.graph.to_dict(), "budgets": [b.to_dict() for b in self.budgets],
            "tflm": self.tflm.to_dict() if self.tflm else None,
            "vela": {k: v.to_dict() for k, v in self.vela.items()},
            "host": self.host.to_dict() if self.host else None,
            "targets": [t.to_dict() for t in self.targets], "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=_json_default)

    def check(self, require: list[str] | tuple[str, ...]) -> list[str]:
        """Names of the required budgets that are not met (``[]`` when all pass).

        ``require`` items: a budget key ('dcase2022-params'), a group (:data:`REQUIRE_GROUPS`: 'dcase2021',
        'dcase2022', 'dcase') or 'target:KEY' (the model runs on and fits that target).

        Raises:
            ConfigError: an unknown name.
        """
        failed: list[str] = []
        keys = {b.key for b in self.budgets}
        for item in require:
            if item.startswith("target:"):
                k = item.split(":", 1)[1]
                try:
                    t = self.target(k)
                except KeyError:
                    raise ConfigError(f"--require {item}: no such target in this report "
                                      f"(have {[t.key for t in self.targets]}); add it with --target {k}") from None
                if not t.fits:
                    failed.append(f"{item} (runs={t.runs}, RAM {t.ram_needed_bytes:,}/{t.ram_available_bytes:,} B, "
                                  f"flash {t.flash_needed_bytes:,}/{t.flash_available_bytes:,} B)")
                continue
            names = REQUIRE_GROUPS.get(item, (item,) if item in keys else None)
            if names is None:
                raise ConfigError(f"--require {item!r}: unknown budget; choose from {sorted(REQUIRE_GROUPS)}, "
                                  f"{sorted(keys)} or target:KEY")
            failed += [f"{n}: {self.budget(n).verdict()}" for n in names if not self.budget(n).passed]
        return failed

    def require(self, require: list[str] | tuple[str, ...]) -> None:
        """Raise :class:`BudgetExceededError` (exit code 3) naming every required budget that is not met."""
        failed = self.check(require)
        if failed:
            raise BudgetExceededError("budget not met: " + "; ".join(failed))


def _json_default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _version() -> str:
    try:
        from .. import __version__

        return __version__
    except Exception:  # noqa: BLE001
        return ""


def build_report(model: str | os.PathLike, *, hop_seconds: float | None = None, window_seconds: float | None = None,
                 target_keys: list[str] | None = None, targets_file: str | os.PathLike | None = None,
                 run_tflm: bool = True, run_vela: bool = True, measure: bool = True,
                 threads: tuple[int, ...] | None = None, firmware: tuple[str | os.PathLike, ...] = ()) -> Report:
    """Build the :class:`Report` of one ``.tflite`` file.

    Args:
        model: path of the .tflite.
        hop_seconds: seconds between inferences when streaming (default: the runtime's, half a window).
        window_seconds: audio per inference for a model without an edge-asc model card (ignored when it has one).
        target_keys: targets to evaluate (default: all in targets.toml / targets_file).
        run_tflm / run_vela / measure: skip the TFLM arena run, Vela, or host timing (each takes ~1 s).
        firmware: ``edge-asc firmware --run`` project folders (or their firmware_report.json) of this model: the
            microcontroller targets they measured use the firmware's flash, RAM and instructions.

    Raises:
        ModelContractError: not a readable .tflite.
        ConfigError: an unknown target, a bad targets file or a bad hop.
        MissingExtraError: a tool needed by a requested step is not installed.
    """
    p = Path(model)
    graph = read_graph(p)
    data = p.read_bytes()
    warnings: list[str] = []
    card = None
    try:
        from ..tflite_meta import read_model_card

        card = read_model_card(data)
    except ModelContractError as exc:
        warnings.append(f"no edge-asc model card ({str(exc).split(':', 1)[-1].strip()[:80]}...)")
    if card is not None:
        from ..runtime.pipeline import hop_frames_for

        win_s = card.window_seconds
        win_frames = card.window_frames
        f = card.frontend
        fps = f.sample_rate / f.hop_length
        hop_s = hop_frames_for(card, hop_seconds) * f.hop_length / f.sample_rate
        frames_1s = f.frames_for_seconds(1.0)
        macs_1s = graph.macs * frames_1s / win_frames if frames_1s > 0 else graph.macs / win_s
    else:
        if window_seconds is None:
            window_seconds = 1.0
            warnings.append("window length unknown: assumed 1 s per inference (pass --window-seconds)")
        if not window_seconds > 0:
            raise ConfigError(f"--window-seconds must be > 0, got {window_seconds}")
        win_s, win_frames, fps = float(window_seconds), None, None
        hop_s = float(hop_seconds) if hop_seconds is not None else win_s / 2
        if not hop_s > 0:
            raise ConfigError(f"hop must be a positive number of seconds, got {hop_seconds!r}")
        macs_1s = graph.macs / win_s
    budgets = dcase_checks(nonzero_param_bytes=graph.nonzero_param_bytes, param_bytes=graph.param_bytes,
                           macs_per_second=macs_1s)

    all_targets = load_targets(targets_file)
    if target_keys:
        unknown = [k for k in target_keys if k not in all_targets]
        if unknown:
            raise ConfigError(f"unknown target(s) {unknown}: choose from {sorted(all_targets)} or add them to a "
                              f"--targets-file")
        chosen = [all_targets[k] for k in target_keys]
    else:
        chosen = list(all_targets.values())

    tflm = None
    if run_tflm:
        from .tflm import measure_arena

        tflm = measure_arena(data, op_names=list(graph.op_counts), n_inputs=len(graph.input_shapes),
                             upper_bound=max(8 << 20, 2 * graph.peak_activation_bytes))
        if not tflm.runs:
            warnings.append(f"TFLite Micro cannot run this model: {tflm.error}")
    vela: dict[str, VelaResult] = {}
    if run_vela:
        from .vela import run_vela

        for t in chosen:
            if t.kind == "ethos-u" and t.vela_accelerator not in vela:
                try:
                    vela[t.vela_accelerator] = run_vela(data, accelerator=t.vela_accelerator,
                                                        system_config=t.vela_system_config or
                                                        "Ethos_U55_High_End_Embedded",
                                                        memory_mode=t.vela_memory_mode or "Shared_Sram")
                except EdgeAscError as exc:
                    warnings.append(f"vela ({t.vela_accelerator}): {exc}")
    host = None
    if measure:
        try:
            host = measure_host(data, threads=threads)
        except RuntimeError as exc:  # the interpreter refused to invoke the model: report it, do not hide it
            warnings.append(f"LiteRT could not run the model on this host: {str(exc).splitlines()[0][:160]}")
    fw_runs: dict[str, dict] = {}
    if firmware:
        from .codegen import load_firmware_runs

        fw_runs, fw_warnings = load_firmware_runs(firmware, hashlib.sha256(data).hexdigest())
        warnings.extend(fw_warnings)
    results = tuple(evaluate_target(t, graph=graph, hop_s=hop_s, tflm=tflm, vela=vela.get(t.vela_accelerator),
                                    host=host, firmware_run=fw_runs.get(t.key)) for t in chosen)
    if host is not None:
        results = (host_result(host, hop_s=hop_s, graph=graph), *results)
    return Report(
        model=str(p), sha256=hashlib.sha256(data).hexdigest(), graph=graph,
        card=card.to_dict() if card is not None else None, window_seconds=win_s, window_frames=win_frames,
        frames_per_second=fps, hop_seconds=hop_s, macs_per_inference=graph.macs, macs_per_second_1s=macs_1s,
        macs_per_second_streaming=graph.macs / hop_s, budgets=tuple(budgets), tflm=tflm, vela=vela, host=host,
        targets=results, warnings=tuple(warnings), edge_asc_version=_version(),
    )


def evaluate_target(t: Target, *, graph: ModelGraph, hop_s: float, tflm: TflmResult | None = None,
                    vela: VelaResult | None = None, host: HostLatency | None = None,
                    firmware_run: dict | None = None) -> TargetResult:
    """Fit and latency verdict of one target (see :class:`TargetResult`); ``firmware_run``: a measured
    ``edge-asc firmware`` report for this target (:func:`edge_asc.firmware_bench.codegen.load_firmware_runs`)."""
    notes: list[str] = []
    frontend = None
    est = t.estimate(graph.layers)
    latency, latency_multi, threads, provenance = est.seconds, None, 1, "estimate"
    runs = True
    cpu_ops: tuple[str, ...] = ()
    arena_known = tflm is not None and tflm.runs and tflm.arena_bytes
    act_peak = graph.peak_activation_bytes
    if arena_known:
        ram, ram_src = tflm.arena_bytes, "TFLM arena (measured)"
    else:
        ram, ram_src = act_peak, "activation peak (estimate, lower bound)"
    flash = graph.file_bytes

    if t.kind == "cpu":
        ram, ram_src = graph.file_bytes + act_peak, "model file + activation peak (estimate)"
        if host is not None and any(m in host.host for m in t.host_match):
            provenance = "measured"
            latency = host.seconds[min(host.seconds)]
            threads = max(host.seconds)
            latency_multi = host.seconds[threads]
            notes.append(f"measured on this host ({host.host})")
    elif t.kind == "mcu" and firmware_run is not None:
        fw = firmware_run
        provenance = "firmware (qemu)"
        cpi = t.cpi or fw.get("cpi", 1.0)
        latency = fw["instructions"] * cpi / t.clock_hz
        ram, ram_src = fw["ram_bytes"], "generated firmware: data + bss + stack high-water mark (measured, qemu)"
        flash = fw["flash_bytes"]
        notes.append(f"{fw['instructions']:,} instructions per inference measured under qemu {fw['qemu_machine']} "
                     f"(-icount); cycles = instructions x CPI {cpi:g} (assumed); flash {fw['flash_bytes']:,} B "
                     f"and RAM {fw['ram_bytes']:,} B of the generated firmware, measured; "
                     f"bit-exact with TFLM: {fw.get('bit_exact')}")
        if fw.get("frontend"):
            frontend = _frontend_result(fw["frontend"], cpi=cpi, clock_hz=t.clock_hz, hop_s=hop_s,
                                        model_latency_s=latency)
            ram, flash = fw["frontend"]["ram_bytes"], fw["frontend"]["flash_bytes"]
            ram_src = "generated firmware with its front end: data + bss + stack high-water mark (measured, qemu)"
            notes.append(f"front end on the device: {frontend['hop_instructions']:,} instructions per STFT hop "
                         f"({frontend['hop_s'] * 1e3:g} ms of audio), audio in -> label out "
                         f"{frontend['audio_to_label_s'] * 1e3:.1f} ms, duty cycle "
                         f"{100 * frontend['duty_cycle']:.1f}% with the model; flash and RAM include it")
    elif t.kind == "mcu":
        if tflm is not None and not tflm.runs:
            runs = False
            notes.append(f"TFLite Micro cannot run it: {', '.join(tflm.unsupported_ops) or tflm.error}")
        if tflm is None:
            notes.append("arena not measured (run without --no-tflm for the real figure)")
    elif t.kind == "ethos-u":
        if vela is not None:
            provenance = "vela"
            cpu_ops = tuple(op.op for op in vela.cpu_ops)
            cpu_names = {op.tensor for op in vela.cpu_ops}
            est = t.estimate(layer for layer in graph.layers if layer.name in cpu_names) if cpu_ops else None
            latency = vela.inference_seconds + (est.seconds if est is not None else 0.0)
            if est is not None:
                notes.append(f"{len(cpu_ops)} op(s) on the CPU ({', '.join(sorted(set(cpu_ops)))}), "
                             f"+{est.seconds * 1e3:.2f} ms estimated for the Cortex-M")
            ram, ram_src = vela.sram_bytes, "Vela SRAM"
            if cpu_ops and arena_known:
                ram, ram_src = max(vela.sram_bytes, tflm.arena_bytes), "max(Vela SRAM, TFLM arena)"
            flash = vela.flash_bytes + (graph.file_bytes if cpu_ops else 0)
            if vela.flash_bytes == 0:
                flash = graph.file_bytes
        else:
            npu = t.npu_macs_per_cycle or 64.0
            est = estimate_latency(graph.layers, clock_hz=t.clock_hz, cycles_per_mac=1.0 / npu,
                                   cycles_per_other_op=t.cycles_per_other_op, cycles_per_layer=t.cycles_per_layer)
            latency = est.seconds
            notes.append(f"Vela not run: NPU estimated at {npu:g} MACs/cycle, {t.cycles_per_other_op:g} "
                         f"cycles per element of the other ops")
        if tflm is not None and not tflm.runs and not cpu_ops:
            notes.append("TFLM cannot run the original model; the Vela-compiled one runs its NPU part")
    elif t.kind == "edgetpu":
        ram, ram_src = graph.param_bytes, "parameters in Edge TPU on-chip memory"
        notes.append("needs edgetpu_compiler; ops it cannot map run on the host CPU (not included)")

    ram_needed = int(ram) + t.reserved_ram_bytes
    flash_needed = int(flash) + t.reserved_flash_bytes
    fits_flash = None if t.flash_bytes == 0 else flash_needed <= t.flash_bytes
    return TargetResult(
        key=t.key, name=t.name, kind=t.kind, provenance=provenance, latency_s=latency,
        latency_s_multi=latency_multi, threads=threads,
        duty_cycle=frontend["duty_cycle"] if frontend else latency / hop_s,
        ram_needed_bytes=ram_needed, ram_source=ram_src, ram_available_bytes=t.ram_bytes,
        fits_ram=ram_needed <= t.ram_bytes, flash_needed_bytes=flash_needed, flash_available_bytes=t.flash_bytes,
        fits_flash=fits_flash, runs=runs, cpu_ops=cpu_ops, notes=tuple(notes), frontend=frontend,
        source=(t.source if provenance == "estimate" else
                f"edge-asc firmware in {firmware_run['out_dir']}" if provenance == "firmware (qemu)" else
                ("Vela " + vela.vela_version if vela else "LiteRT")),
        estimate=est,
    )


def _frontend_result(fe: dict, *, cpi: float, clock_hz: float, hop_s: float, model_latency_s: float) -> dict:
    """The front-end figures of a firmware run at this report's hop (window stride) ``hop_s``: the front end runs
    ``hop_s / fe['hop_s']`` times per stride, the window layout and the model once."""
    sec = cpi / clock_hz
    per_hop = fe["hop_instructions"] * sec
    layout = fe["window_instructions"] * sec
    return {"hop_instructions": fe["hop_instructions"], "hop_s": fe["hop_s"], "hop_seconds": per_hop,
            "window_instructions": fe["window_instructions"],
            "audio_to_label_s": per_hop + layout + model_latency_s,
            "duty_cycle": (per_hop * hop_s / fe["hop_s"] + layout + model_latency_s) / hop_s,
            "flash_bytes": fe["flash_bytes"], "ram_bytes": fe["ram_bytes"]}


def host_result(host: HostLatency, *, hop_s: float, graph: ModelGraph) -> TargetResult:
    """The 'this host' row: measured with LiteRT."""
    t1 = host.seconds[min(host.seconds)]
    tn = max(host.seconds)
    return TargetResult(
        key="host", name=f"this host ({host.host})", kind="cpu", provenance="measured", latency_s=t1,
        latency_s_multi=host.seconds[tn], threads=tn, duty_cycle=t1 / hop_s,
        ram_needed_bytes=graph.file_bytes + graph.peak_activation_bytes,
        ram_source="model file + activation peak (estimate)", ram_available_bytes=_host_ram(),
        fits_ram=graph.file_bytes + graph.peak_activation_bytes <= _host_ram(), flash_needed_bytes=graph.file_bytes,
        flash_available_bytes=0, fits_flash=None, source=f"LiteRT ({host.interpreter}), median of timed runs",
    )


def _host_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 33
