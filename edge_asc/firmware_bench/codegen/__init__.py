"""Firmware generator: a full-int8 ``.tflite`` -> a self-contained C project for a microcontroller, built on the host
or for the chip and run under QEMU, bit-exact with TensorFlow Lite Micro, with measured flash, RAM and instructions.

    from edge_asc.firmware_bench.codegen import firmware
    rep = firmware("model.tflite", "nrf52840", "fw/", run=True)      # generate, build, run under QEMU, verify
    print(rep.to_json())

Modules: :mod:`.graph` (the file as :func:`edge_asc.artifact.read_artifact` reads it, constants as numpy),
:mod:`.lower` (op -> kernel call, TFLM's parameter arithmetic), :mod:`.plan` (static arena), :mod:`.project` (write
the C project), :mod:`.runner` (build, run, measure), :mod:`.verify` (compare with TFLM), :mod:`.chips` (targets),
:mod:`.frontend` (the model's FrontendSpec in C, with ``frontend=``: audio in -> label out, measured per STFT hop).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import EdgeAscError
from .chips import CHIPS, Chip, get_chip
from .lower import LOWERINGS, UnsupportedOpError
from .project import Project, generate
from .runner import LinkOverflowError, RunResult, ToolchainError, arm_toolchain_present, install_arm_toolchain

__all__ = ["CHIPS", "LOWERINGS", "REPORT_FILE", "Chip", "FirmwareReport", "FrontendMeasurement", "LinkOverflowError",
           "NotBitExactError", "Project", "ToolchainError", "UnsupportedOpError", "arm_toolchain_present", "firmware",
           "generate", "get_chip", "install_arm_toolchain", "load_firmware_runs"]

#: the report a firmware run leaves in its project folder (read by ``edge-asc report``)
REPORT_FILE = "firmware_report.json"


class NotBitExactError(EdgeAscError):
    """The firmware's outputs differ from TensorFlow Lite Micro's."""


@dataclass(frozen=True, kw_only=True)
class OpCost:
    """Measured instructions of one op per inference (QEMU), with its MACs."""

    index: int
    name: str
    instructions: int
    macs: int

    @property
    def instructions_per_mac(self) -> float | None:
        return self.instructions / self.macs if self.macs else None


@dataclass(frozen=True, kw_only=True)
class FirmwareReport:
    """What one ``edge-asc firmware`` call generated, built, ran and measured.

    Attributes:
        model: the ``.tflite`` path; ``model_sha256`` its hash.
        target: the chip key; ``report_target`` the matching ``targets.toml`` key (``edge-asc report``);
            ``core`` and ``qemu_machine`` how it was emulated.
        out_dir: the C project.
        arena_bytes: the planned tensor arena; ``weight_bytes`` constant data.
        comparisons: bit-exactness against TFLM per place ('host', 'qemu'): n inputs, n identical, first diverging op.
        flash_bytes, ram_bytes, stack_bytes, static_ram_bytes: measured on the QEMU build (None without ``run``).
        instructions: instructions per inference (mean over the inputs; QEMU).
        op_costs: instructions per op per inference (QEMU).
        cpi, clock_hz: the time estimate's assumptions; ``est_ms`` = instructions x cpi / clock.
        provenance: where each number comes from.
        frontend: with a front end (``--frontend``) and ``run``: the audio-in -> label-out program measured under
            QEMU (see :class:`FrontendMeasurement`); None otherwise.
        frontend_parity: with a front end and ``host``: the host build's log-mel and int8 input tensors on seeded
            audio against :mod:`edge_asc.frontend` (``max_db``, ``int8_elements``, ``int8_equal``, ``int8_max_step``).
    """

    model: str
    model_sha256: str
    target: str
    report_target: str | None
    core: str
    qemu_machine: str
    out_dir: str
    n_ops: int
    macs: int
    arena_bytes: int
    weight_bytes: int
    comparisons: tuple[dict, ...] = ()
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    stack_bytes: int | None = None
    static_ram_bytes: int | None = None
    chip_flash_bytes: int = 0
    chip_ram_bytes: int = 0
    instructions: int | None = None
    instructions_range: tuple[int, int] | None = None
    op_costs: tuple[OpCost, ...] = ()
    cpi: float = 1.0
    clock_hz: float = 0.0
    provenance: dict[str, str] = field(default_factory=dict)
    frontend: dict | None = None
    frontend_parity: dict | None = None

    @property
    def est_ms(self) -> float | None:
        return self.instructions * self.cpi / self.clock_hz * 1e3 if self.instructions else None

    @property
    def bit_exact(self) -> bool | None:
        return all(c["bit_exact"] for c in self.comparisons) if self.comparisons else None

    def largest_conv(self) -> OpCost | None:
        convs = [c for c in self.op_costs if c.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and c.macs]
        return max(convs, key=lambda c: c.macs) if convs else None

    def op_type_table(self) -> list[tuple[str, int, int, int]]:
        """(op type, count, instructions per inference, MACs) summed per type, most instructions first."""
        acc: dict[str, list[int]] = {}
        for c in self.op_costs:
            a = acc.setdefault(c.name, [0, 0, 0])
            a[0] += 1
            a[1] += c.instructions
            a[2] += c.macs
        return sorted(((k, v[0], v[1], v[2]) for k, v in acc.items()), key=lambda r: -r[2])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["op_costs"] = [dict(asdict(c), instructions_per_mac=c.instructions_per_mac) for c in self.op_costs]
        d["est_ms"] = self.est_ms
        d["bit_exact"] = self.bit_exact
        big = self.largest_conv()
        d["largest_conv"] = None if big is None else {"op": big.index, "macs": big.macs,
                                                      "instructions": big.instructions,
                                                      "instructions_per_mac": big.instructions_per_mac}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


@dataclass(frozen=True, kw_only=True)
class FrontendMeasurement:
    """The audio-in -> label-out program (front end + model) of one target, measured under QEMU.

    Time per model window stride, the definitions the report and the benchmark use (``cpi`` / ``clock_hz`` as the
    model's estimate): the front end runs once per STFT hop (``hop_s`` of audio, ``hop_instructions``), and every
    ``hop_frames`` hops (``stride_s`` of audio) the window is laid out (``window_instructions``) and the model runs
    (``model_instructions``).

    - ``audio_to_label_ms``: from the last sample of a window arriving to its label: one hop + the layout + the model.
    - ``duty_cycle``: busy share of the core while streaming, ``(hop_frames x hop + window + model) / stride_s``.
    - ``frontend_duty_cycle``: the front end's share alone, ``hop_instructions x cpi / clock / hop_s``.

    ``flash_bytes`` / ``ram_bytes``: the whole program (front end + model) linked for the chip, RAM with its stack
    high-water mark. ``flash_added_bytes`` / ``ram_added_bytes``: the symbols it links that the model-only firmware
    does not (the front end's code, tables and state, the libm functions it calls; static RAM, no stack).
    """

    hop_instructions: int
    hop_instructions_range: tuple[int, int]
    window_instructions: int
    model_instructions: int
    hop_frames: int
    hop_s: float
    stride_s: float
    flash_bytes: int
    ram_bytes: int
    flash_added_bytes: int
    ram_added_bytes: int
    int8_elements: int
    int8_equal: int
    int8_max_step: int
    cpi: float
    clock_hz: float
    source: str

    def _ms(self, instructions: float) -> float:
        return instructions * self.cpi / self.clock_hz * 1e3

    @property
    def audio_to_label_ms(self) -> float:
        return self._ms(self.hop_instructions + self.window_instructions + self.model_instructions)

    @property
    def duty_cycle(self) -> float:
        per_stride = self.hop_frames * self.hop_instructions + self.window_instructions + self.model_instructions
        return self._ms(per_stride) / 1e3 / self.stride_s

    @property
    def frontend_duty_cycle(self) -> float:
        return self._ms(self.hop_instructions) / 1e3 / self.hop_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(hop_ms=self._ms(self.hop_instructions), audio_to_label_ms=self.audio_to_label_ms,
                 duty_cycle=self.duty_cycle, frontend_duty_cycle=self.frontend_duty_cycle)
        return d


def _measure_frontend(project: Project, measured_model: RunResult | None) -> FrontendMeasurement:
    """Run the audio-in -> label-out program under QEMU on seeded audio (two model windows) and compare its int8
    input tensors with the Python front end's."""
    from .frontend import reference_inputs, seeded_audio
    from .runner import added_bytes, run_app_qemu

    plan = project.frontend
    audio = seeded_audio(plan)
    run = run_app_qemu(project, audio)
    _, ref = reference_inputs(plan, audio)
    agree = _int8_agreement(ref, run.inputs)
    hops = [i for i, e in zip(run.hop_instructions, run.hop_emitted) if e] or list(run.hop_instructions)
    chip = project.chip
    model_elf = project.out_dir / "build" / "arm" / "model.elf"
    flash_added, ram_added = added_bytes(project.out_dir / "build" / "arm" / "app.elf", model_elf) \
        if measured_model is not None and model_elf.exists() else (0, 0)
    return FrontendMeasurement(
        hop_instructions=round(sum(hops) / len(hops)), hop_instructions_range=(min(hops), max(hops)),
        window_instructions=round(sum(run.window_instructions) / max(1, len(run.window_instructions))),
        model_instructions=round(sum(run.inference_instructions) / max(1, len(run.inference_instructions))),
        hop_frames=plan.hop_frames, hop_s=plan.hop_seconds, stride_s=plan.stride_seconds,
        flash_bytes=run.flash_bytes, ram_bytes=run.ram_bytes,
        flash_added_bytes=flash_added, ram_added_bytes=ram_added,
        int8_elements=agree["int8_elements"], int8_equal=agree["int8_equal"],
        int8_max_step=agree["int8_max_step"], cpi=chip.cpi, clock_hz=chip.clock_hz,
        source=plan.source)


def _int8_agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    n = min(len(ref), len(got))
    diff = np.abs(ref[:n].astype(np.int16) - got[:n].astype(np.int16))
    return {"windows": n, "int8_elements": int(diff.size), "int8_equal": int((diff == 0).sum()),
            "int8_max_step": int(diff.max()) if diff.size else 0}


def _frontend_parity(project: Project) -> dict:
    """The host build of the audio-in -> label-out program on seeded audio against the Python front end."""
    from .frontend import reference_inputs, seeded_audio
    from .runner import run_app_host

    audio = seeded_audio(project.frontend)
    run = run_app_host(project, audio)
    feats, ref = reference_inputs(project.frontend, audio)
    got = run.features.transpose(1, 2, 0)
    t = min(got.shape[2], feats.shape[2])
    max_db = float(np.abs(got[:, :, :t] - feats[:, :, :t]).max()) if t else 0.0
    return {"max_db": max_db, "frames": t, **_int8_agreement(ref, run.inputs)}


def load_firmware_runs(paths, model_sha256: str) -> tuple[dict[str, dict], list[str]]:
    """Firmware runs (``REPORT_FILE`` in each project folder, or the JSON file itself) for ``edge-asc report``.

    Returns:
        ({targets.toml key: the run's JSON}, warnings): only measured runs (``--run``) of this very model file.
    """
    runs: dict[str, dict] = {}
    warnings: list[str] = []
    for p in paths:
        f = Path(p)
        f = f / REPORT_FILE if f.is_dir() else f
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            warnings.append(f"firmware run {p}: cannot read {f.name} ({exc.__class__.__name__})")
            continue
        if d.get("model_sha256") != model_sha256:
            warnings.append(f"firmware run {p} is for another model file (sha256 {str(d.get('model_sha256'))[:12]})")
        elif d.get("instructions") is None:
            warnings.append(f"firmware run {p} has no measurements (generate it with --run)")
        elif not d.get("report_target"):
            warnings.append(f"firmware run {p}: target {d.get('target')} has no entry in targets.toml")
        else:
            runs[d["report_target"]] = d
    return runs, warnings


def _sha256(buf: bytes) -> str:
    return hashlib.sha256(buf).hexdigest()


def firmware(model_path: str | os.PathLike, target: str, out_dir: str | os.PathLike, *, host: bool = False,
             run: bool = False, n_verify: int = 20, seed: int = 0, single_rounding: bool = False,
             stack_bytes: int | None = None, frontend: str | None = None,
             hop_frames: int | None = None) -> FirmwareReport:
    """Generate the C project of ``model_path`` for ``target`` and optionally build, run and verify it.

    Args:
        host: build with the host's C compiler and compare ``n_verify`` seeded inputs with TFLM.
        run: build for the chip (arm-none-eabi-gcc, the chip's memory in the linker script), run ``n_verify``
            seeded inputs (at least one) under QEMU, measure flash / RAM / instructions and compare with TFLM.
        n_verify: inputs to compare (0: none; with ``run``, one input still runs for the measurements).
        seed: seed of the int8 inputs (uniform over [-128, 127]).
        frontend: add the model's front end and an audio-in -> label-out program (see :func:`.project.generate`:
            'card', or a preset name for a file without a card); with ``run`` it is measured under QEMU too
            (:class:`FrontendMeasurement`, in the report's ``frontend``).
        hop_frames: frames between model windows of that program (default half a window).

    Raises:
        UnsupportedOpError: the model has ops without a kernel (one line naming them).
        LinkOverflowError: (run) the firmware does not fit the chip (exit code 3).
        ToolchainError: a compiler or QEMU is missing or failed.
        NotBitExactError: an output differs from TFLM's (message: the first diverging op).
    """
    from .chips import DEFAULT_STACK_BYTES
    from .runner import run_host, run_qemu
    from .verify import compare, seeded_inputs, tflm_reference

    path = Path(model_path)
    buf = path.read_bytes()
    chip = get_chip(target)
    project = generate(buf, chip, out_dir, single_rounding=single_rounding,
                       stack_bytes=DEFAULT_STACK_BYTES if stack_bytes is None else stack_bytes, frontend=frontend,
                       hop_frames=hop_frames)
    comparisons: list[dict] = []
    measured: RunResult | None = None
    n_in = max(n_verify, 1 if run else 0)
    inputs = seeded_inputs(buf, n_in, seed) if n_in else None
    ref = tflm_reference(path, inputs)[0] if (host or run) and n_verify else None
    failures = []
    for where, wanted in (("host", host), ("qemu", run)):
        if not wanted:
            continue
        if n_verify:
            cmp = compare(project, path, inputs, where=where, reference=ref)
            comparisons.append(cmp.to_json())
            if not cmp.bit_exact:
                failures.append(f"{where}: {cmp.n - cmp.n_equal} of {cmp.n} outputs differ from TFLite Micro "
                                f"(max |diff| {cmp.max_abs_diff}); {cmp.divergence or 'no op output differs'}")
            if where == "qemu":
                measured = cmp.run
        elif where == "qemu":
            measured = run_qemu(project, inputs)
        else:
            run_host(project, inputs)
    kw: dict = {}
    if measured is not None and measured.instructions:
        n = len(measured.instructions)
        per_op = tuple(OpCost(index=k, name=project.op_names[k], instructions=round(v / n), macs=project.op_macs[k])
                       for k, v in enumerate(measured.op_instructions))
        kw = {"flash_bytes": measured.flash_bytes, "ram_bytes": measured.ram_bytes,
              "stack_bytes": measured.stack_bytes, "static_ram_bytes": measured.static_ram_bytes,
              "instructions": round(sum(measured.instructions) / n),
              "instructions_range": (min(measured.instructions), max(measured.instructions)), "op_costs": per_op}
    if host and project.frontend is not None:
        kw["frontend_parity"] = _frontend_parity(project)
    if run and project.frontend is not None:
        kw["frontend"] = _measure_frontend(project, measured).to_dict()
    prov = {"arena_bytes": "planned (generator)", "bit_exact": "TFLite Micro Python interpreter (tflite-micro)"}
    if measured is not None:
        prov.update(flash_bytes="measured (arm-none-eabi-size: vectors + text + rodata + data)",
                    ram_bytes="measured (data + bss + stack high-water mark by stack painting)",
                    instructions=f"measured (qemu {chip.qemu_machine} -icount shift=0, SysTick at "
                                 f"{measured.instructions_per_tick:g} instructions per tick)",
                    est_ms=f"estimate: instructions x CPI {chip.cpi} / {chip.clock_hz / 1e6:g} MHz")
        if "frontend" in kw:
            prov["frontend"] = (f"measured (qemu {chip.qemu_machine} -icount shift=0): the audio-in -> label-out "
                                "program (front end + model) on seeded int16 audio, its flash and RAM from its own "
                                "link with the chip's memory; ms and duty cycle estimated with the CPI above")
    rep = FirmwareReport(model=str(path), model_sha256=_sha256(buf), target=chip.key,
                         report_target=chip.report_target, core=chip.core,
                         qemu_machine=chip.qemu_machine, out_dir=str(project.out_dir), n_ops=len(project.op_names),
                         macs=sum(project.op_macs), arena_bytes=project.arena_bytes,
                         weight_bytes=project.weight_bytes, comparisons=tuple(comparisons),
                         chip_flash_bytes=chip.flash_bytes, chip_ram_bytes=chip.ram_bytes, cpi=chip.cpi,
                         clock_hz=chip.clock_hz, provenance=prov, **kw)
    (project.out_dir / REPORT_FILE).write_text(rep.to_json() + "\n")
    if failures:
        raise NotBitExactError("; ".join(failures))
    return rep
