"""TensorFlow Lite Micro + CMSIS-NN built from source for the same ``.tflite`` file and core as the generated
firmware, run under QEMU and measured the same way: the reference that issue 17's goals are ratios of (instructions
per inference <= 0.5x, arena <= 0.75x, flash <= 0.65x TFLM's).

No package ships TFLM's or CMSIS-NN's sources, so the caller points at a TFLM checkout (``--tflm-root DIR``) whose
third-party folders are laid out as TFLM's download scripts leave them (``tensorflow/lite/micro/tools/make/downloads/
{flatbuffers, gemmlowp, ruy, kissfft, cmsis, cmsis/Cortex_DFP, cmsis_nn, pigweed}``; ``docs/firmware.md`` says how).
Nothing from those sources is copied into this package.

Steps, all outside the package:

1. TFLM's own Makefile builds ``libtensorflow-microlite.a`` (``TARGET=cortex_m_generic``, ``TARGET_ARCH`` per core,
   ``OPTIMIZED_KERNEL_DIR=cmsis_nn``, ``BUILD_TYPE=release_with_logs``: TFLM's build for profiling, the per-op
   profiler hooks kept) with the host's ``arm-none-eabi`` GCC. By default only the kernels the model's ops register
   are compiled (every core source and all of CMSIS-NN are): the link pulls the same objects from a full library,
   and the full build takes tens of minutes on two cores. A link that still misses a symbol falls back to the full
   library.
2. A driver (``tflm_main.cc``, our template) embeds the model, registers exactly the model's op types in a
   ``MicroMutableOpResolver``, and measures with the generated firmware's platform file (``ek_platform_cm.c``):
   SysTick ticks under ``qemu-system-arm -icount shift=0`` calibrated to instructions, a painted stack, semihosting
   files for inputs and outputs; per-op ticks from a ``MicroProfilerInterface`` on the same counter.
3. A first run with a large arena reads ``arena_used_bytes()`` and searches (binary, 16-byte steps, starting there)
   the smallest arena with which ``AllocateTensors()`` succeeds (the 'edge' preset fails with exactly
   ``arena_used_bytes()``, 223,684 B, and allocates with 223,696 B). The firmware is rebuilt with that arena (what a
   user ships) and run on the inputs. Flash = vectors + text + rodata + data (+ C++ init array) of the ELF,
   RAM = data + bss (the arena included) + stack high-water mark, as for the generated firmware. The linker script
   gives the emulated board's memory, not the chip's, so a TFLM build too big for the chip is still measured (the
   chip verdict is reported next to it).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import EdgeAscError

#: TFLM's ``TARGET_ARCH`` for each core of :mod:`.codegen.chips` (hard-float, as the generated firmware)
TFLM_ARCH = {"cortex-m4": "cortex-m4+fp", "cortex-m7": "cortex-m7+fp", "cortex-m55": "cortex-m55"}

#: what must exist under the TFLM root for a build (relative paths), with what provides it
REQUIRED = (
    ("tensorflow/lite/micro/tools/make/Makefile", "tensorflow/tflite-micro"),
    ("tensorflow/lite/micro/tools/make/downloads/flatbuffers/include/flatbuffers/flatbuffers.h",
     "google/flatbuffers v25.9.23 with TFLM's flatbuffers.patch"),
    ("tensorflow/lite/micro/tools/make/downloads/gemmlowp/fixedpoint/fixedpoint.h", "google/gemmlowp"),
    ("tensorflow/lite/micro/tools/make/downloads/ruy/ruy", "google/ruy"),
    ("tensorflow/lite/micro/tools/make/downloads/kissfft/kiss_fft.h", "mborgerding/kissfft v130"),
    ("tensorflow/lite/micro/tools/make/downloads/cmsis/CMSIS/Core/Include/cmsis_compiler.h", "ARM-software/CMSIS_6"),
    ("tensorflow/lite/micro/tools/make/downloads/cmsis/Cortex_DFP/Device", "ARM-software/Cortex_DFP"),
    ("tensorflow/lite/micro/tools/make/downloads/cmsis_nn/Include/arm_nnfunctions.h", "ARM-software/CMSIS-NN"),
    ("tensorflow/lite/micro/tools/make/downloads/pigweed", "an empty folder (pigweed is not used)"),
)

#: bytes reserved for the stack (the high-water mark is what is reported)
STACK_BYTES = 32 << 10

_MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"
_PRINT_MK = """edge_asc_print:
\t$(info EDGE_ASC CXX $(CXX))
\t$(info EDGE_ASC CXXFLAGS $(CXXFLAGS))
\t$(info EDGE_ASC INCLUDES $(INCLUDES))
\t$(info EDGE_ASC LIB $(MICROLITE_LIB_PATH))
\t$(info EDGE_ASC LIBS $(MICROLITE_LIBS))
\t$(info EDGE_ASC KERNEL_SRCS $(MICROLITE_CC_KERNEL_SRCS))
\t$(info EDGE_ASC KERNEL_OBJDIR $(KERNEL_OBJDIR))
\t$(info EDGE_ASC KERNEL_OPT $(KERNEL_OPTIMIZATION_LEVEL))
\t@true
"""


#: kernel sources that GCC 12.2 miscompiles for a core at TFLM's flags, built first with extra flags: for the
#: Cortex-M55 it puts a VFP conversion in an IT block ('vcvtne.f32.s32') that binutils 2.40 rejects
WORKAROUNDS = {"cortex-m55": {"tensorflow/lite/micro/kernels/resize_nearest_neighbor.cc":
                              ("-fno-if-conversion", "-fno-if-conversion2")}}


class TflmNotAvailable(EdgeAscError):
    """The TFLM sources are missing or incomplete, or TFLM's build failed: no reference measurement."""


@dataclass(frozen=True, kw_only=True)
class TflmLibrary:
    """A built TFLM library and the flags it was built with (paths relative to ``root``)."""

    root: Path
    core: str
    lib: Path
    cxx: str
    cxxflags: tuple[str, ...]
    includes: tuple[str, ...]
    libs: tuple[str, ...]
    subset: bool


@dataclass(frozen=True, kw_only=True)
class TflmRun:
    """What one TFLM firmware run measured (QEMU).

    Attributes:
        outputs: int8[n, output bytes] (all output tensors concatenated per inference).
        instructions: instructions of each inference.
        op_events: (profiler tag, instructions summed over the inferences) per op, in execution order.
        instructions_per_tick: the calibration.
        arena_bytes: the arena the interpreter was given; ``arena_used_bytes`` what it used.
        stack_bytes: stack high-water mark.
        flash_bytes: vectors + text + rodata + data + init array of the ELF.
        static_ram_bytes: data + bss (the arena included).
    """

    outputs: np.ndarray
    instructions: tuple[int, ...]
    op_events: tuple[tuple[str, int], ...]
    instructions_per_tick: float
    arena_bytes: int
    arena_used_bytes: int
    stack_bytes: int
    arena_min_bytes: int | None = None
    flash_bytes: int = 0
    static_ram_bytes: int = 0
    console: str = field(default="", repr=False)

    @property
    def ram_bytes(self) -> int:
        return self.static_ram_bytes + self.stack_bytes


def _run_tool(cmd: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` of a build step; a step that hangs past ``timeout`` is a one-line TflmNotAvailable."""
    try:
        return subprocess.run(cmd, timeout=timeout, check=False, **kw)
    except subprocess.TimeoutExpired as exc:
        raise TflmNotAvailable(f"TFLM not available: {Path(str(cmd[0])).name} did not finish within "
                               f"{timeout:.0f} s") from exc


def check_sources(root: str | os.PathLike) -> Path:
    """The TFLM root, checked for every file a build needs.

    Raises:
        TflmNotAvailable: one line naming what is missing and which repository provides it.
    """
    r = Path(root).expanduser().resolve()
    missing = [f"{p} ({what})" for p, what in REQUIRED if not (r / p).exists()]
    if missing:
        raise TflmNotAvailable(f"TFLM not available: {r} lacks {'; '.join(missing)} (see docs/firmware.md)")
    return r


def resolver_methods(root: Path) -> dict[str, tuple[str, str | None]]:
    """Builtin op name -> (``MicroMutableOpResolver`` method, default ``Register_*`` function) from TFLM's header."""
    text = (root / "tensorflow/lite/micro/micro_mutable_op_resolver.h").read_text()
    starts = list(re.finditer(r"TfLiteStatus Add(\w+)\(", text))
    out: dict[str, tuple[str, str | None]] = {}
    for k, m in enumerate(starts):
        body = text[m.end():starts[k + 1].start() if k + 1 < len(starts) else len(text)]
        op = re.search(r"BuiltinOperator_(\w+)", body)
        reg = re.search(r"\b(Register_\w+)\(\)", body)
        if op and m.group(1) not in ("Builtin", "Custom"):
            out.setdefault(op.group(1), ("Add" + m.group(1), reg.group(1) if reg else None))
    return out


def kernel_subset(root: Path, kernel_srcs: list[str], registrations: list[str]) -> list[str]:
    """The kernel sources that define ``registrations`` (``Register_CONV_2D`` ...), their ``*_common.cc``
    siblings and the shared kernel utilities, from TFLM's (already CMSIS-NN-specialised) kernel source list."""
    keep = {"kernel_util", "micro_tensor_utils"}
    for reg in registrations:
        for src in kernel_srcs:
            if src.endswith(".cc") and re.search(rf"TFLMRegistration\s+{reg}\s*\(\s*\)\s*\{{",
                                                 (root / src).read_text(errors="replace")):
                keep.add(Path(src).stem)
    keep |= {f"{s}_common" for s in keep}
    return [s for s in kernel_srcs if Path(s).stem in keep]


def _make_args(root: Path, core: str, gen_dir: Path) -> list[str]:
    if core not in TFLM_ARCH:
        raise TflmNotAvailable(f"TFLM not available for core {core}: choose one of {', '.join(TFLM_ARCH)}")
    gcc = shutil.which("arm-none-eabi-gcc")
    if not gcc:
        raise TflmNotAvailable("TFLM not available: arm-none-eabi-gcc not found")
    return ["make", "-C", str(root), "-f", _MAKEFILE, "TARGET=cortex_m_generic", f"TARGET_ARCH={TFLM_ARCH[core]}",
            "OPTIMIZED_KERNEL_DIR=cmsis_nn", "TOOLCHAIN=gcc", f"TARGET_TOOLCHAIN_ROOT={Path(gcc).parent}/",
            "BUILD_TYPE=release_with_logs", f"BASE_GENDIR={gen_dir}"]


def _make_env(build_dir: Path) -> dict:
    """TFLM's Makefile runs ``python3`` scripts that import PIL: when the ``python3`` on PATH lacks it, put this
    interpreter (which must have it) first on PATH."""
    env = dict(os.environ)
    ok = subprocess.run(["python3", "-c", "import PIL"], capture_output=True, check=False).returncode == 0
    if not ok:
        shim = build_dir / "python-shim"
        shim.mkdir(parents=True, exist_ok=True)
        script = shim / "python3"
        # a script, not a symlink: a virtual environment's interpreter finds its packages from its own path
        script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
        script.chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    return env


def parse_print(text: str) -> dict[str, str]:
    """``EDGE_ASC KEY value`` lines (what the print makefile says) -> {KEY: value}."""
    out = {}
    for ln in text.splitlines():
        if ln.startswith("EDGE_ASC "):
            parts = ln.split(" ", 2)
            out[parts[1]] = parts[2] if len(parts) > 2 else ""
    return out


def build_library(root: str | os.PathLike, core: str, build_dir: str | os.PathLike, *,
                  registrations: list[str] | None = None, jobs: int = 2, timeout_s: float = 7200.0) -> TflmLibrary:
    """Build TFLM + CMSIS-NN for ``core`` with TFLM's Makefile (incremental: a second call only relinks).

    The objects go to ``build_dir/gen`` (TFLM's ``BASE_GENDIR``; its folder names carry the core), the log and the
    print makefile to ``build_dir/<core>``.

    Args:
        registrations: ``Register_*`` functions the firmware needs; only their kernels are compiled (None: all).
        jobs: parallel compiler jobs.

    Raises:
        TflmNotAvailable: sources missing or the build failed (the first error line).
    """
    r = check_sources(root)
    top = Path(build_dir).resolve()
    bd = top / core
    bd.mkdir(parents=True, exist_ok=True)
    args = _make_args(r, core, top / "gen")
    env = _make_env(top)
    (bd / "print.mk").write_text(_PRINT_MK)
    proc = _run_tool([*args, "-f", str(bd / "print.mk"), "edge_asc_print"], capture_output=True, text=True,
                     env=env, timeout=600)
    info = parse_print(proc.stdout)
    if proc.returncode or "LIB" not in info:
        raise TflmNotAvailable(f"TFLM not available: its Makefile failed: {_first_error(proc.stdout + proc.stderr)}")
    kernels = info["KERNEL_SRCS"].split()
    extra = []
    subset = registrations is not None
    if subset:
        extra = [f"MICROLITE_CC_KERNEL_SRCS={' '.join(kernel_subset(r, kernels, registrations))}"]
    _build_workarounds(r, core, info, kernel_subset(r, kernels, registrations) if subset else kernels, env)
    log = bd / f"build-{core}.log"
    with open(log, "w") as fh:
        proc = _run_tool([*args, *extra, f"-j{jobs}", "microlite"], stdout=fh, stderr=subprocess.STDOUT,
                         env=env, timeout=timeout_s)
    if proc.returncode:
        raise TflmNotAvailable(f"TFLM not available: building the library failed ({log}): "
                               f"{_first_error(log.read_text(errors='replace'))}")
    return TflmLibrary(root=r, core=core, lib=Path(info["LIB"]), cxx=info["CXX"],
                       cxxflags=tuple(f for f in shlex.split(info["CXXFLAGS"]) if f != "-MD"),
                       includes=tuple(shlex.split(info["INCLUDES"])), libs=tuple(shlex.split(info["LIBS"])),
                       subset=subset)


def _build_workarounds(root: Path, core: str, info: dict[str, str], srcs: list[str], env: dict) -> None:
    """Compile the :data:`WORKAROUNDS` objects of ``core`` with their extra flags before TFLM's make (which then
    finds them up to date)."""
    for src, extra in WORKAROUNDS.get(core, {}).items():
        if src not in srcs:
            continue
        obj = Path(info["KERNEL_OBJDIR"]) / Path(src).with_suffix(".o")
        if obj.exists() and obj.stat().st_mtime > (root / src).stat().st_mtime:
            continue
        obj.parent.mkdir(parents=True, exist_ok=True)
        flags = [f for f in shlex.split(info["CXXFLAGS"]) if f != "-MD"]
        cmd = [info["CXX"], *flags, info.get("KERNEL_OPT", "-O2"), *extra, *shlex.split(info["INCLUDES"]), "-c",
               src, "-o", str(obj)]
        proc = _run_tool(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode:
            raise TflmNotAvailable(f"TFLM not available: compiling {src} failed: {_first_error(proc.stderr)}")


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (keeps its time stamp, so its object is not rebuilt)."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _first_error(log: str) -> str:
    lines = [ln for ln in log.strip().splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "no message")
    return first.strip()[:300]


def model_source(model_bytes: bytes) -> str:
    """C++ source embedding the model as a 16-byte aligned const array ``ek_tflm_model``."""
    rows = [", ".join(str(b) for b in model_bytes[i:i + 32]) for i in range(0, len(model_bytes), 32)]
    body = ",\n  ".join(rows)
    return ("/* Generated by edge-asc (tflm_ref): the model file. */\n"
            f"alignas(16) extern const unsigned char ek_tflm_model[{len(model_bytes)}] = {{\n  {body}}};\n")


def driver_source(op_types: list[str], methods: dict[str, tuple[str, str | None]], n_ops: int,
                  arena_bytes: int, *, find_arena: bool = False) -> str:
    """The driver (``tflm_main.cc``) for a model with ``op_types`` (distinct builtin op names) and ``n_ops`` ops;
    with ``find_arena`` it only searches the smallest arena that allocates (``TFLM arena_min``) and stops.

    Raises:
        TflmNotAvailable: an op type TFLM's op resolver has no method for.
    """
    missing = [op for op in op_types if op not in methods]
    if missing:
        raise TflmNotAvailable(f"TFLM not available for this model: no MicroMutableOpResolver method for "
                               f"{', '.join(missing)}")
    template = (resources.files("edge_asc.firmware_bench") / "tflm_main.cc").read_text()
    adds = "\n".join(f"  if (resolver.{methods[op][0]}() != kTfLiteOk) ek_fail(\"registering {op}\");"
                     for op in op_types)
    return (template.replace("@ADD_OPS@", adds).replace("@N_OP_TYPES@", str(max(len(op_types), 1)))
            .replace("@MAX_EVENTS@", str(n_ops + 8)).replace("@ARENA_BYTES@", str(arena_bytes))
            .replace("@FIND_ARENA@", "1" if find_arena else "0"))


def linker_script(chip) -> str:
    """The generated firmware's linker script with C++ static constructors (``.init_array``) kept."""
    from .codegen.project import linker_script as ek_linker_script

    script = ek_linker_script(chip, STACK_BYTES)
    anchor = "  .ARM.exidx : { *(.ARM.exidx*) } > FLASH\n"
    if anchor not in script:
        raise RuntimeError("the generated linker script changed: update tflm_ref.linker_script")
    extra = ("  .init_array : { . = ALIGN(4); __init_array_start = .; KEEP(*(.init_array*)) "
             "__init_array_end = .; } > FLASH\n")
    # newlib's _sbrk (libnosys, pulled in by C++ runtime paths never taken here) wants the heap start 'end'
    script = script.replace("  /DISCARD/", "  PROVIDE(end = _ebss);\n  /DISCARD/")
    return script.replace(anchor, anchor + extra)


def board_chip(chip):
    """``chip`` with the emulated board's memory instead of the chip's (TFLM is measured even where it does not
    fit the chip): 4 MiB + 4 MiB on the mps2 boards, 16 MiB + 16 MiB of DDR on mps3-an547."""
    size = (16 << 20) if chip.qemu_machine == "mps3-an547" else (4 << 20)
    return dataclasses.replace(chip, flash_bytes=size, ram_bytes=size)


#: ELF sections counted as flash (what is programmed: code, constants, initialised data's load image)
FLASH_SECTIONS = (".vectors", ".text", ".ARM.exidx", ".init_array", ".data")


def build_firmware(lib: TflmLibrary, model_bytes: bytes, op_types: list[str], n_ops: int, chip, out_dir: Path,
                   arena_bytes: int, *, find_arena: bool = False) -> Path:
    """Write and link the driver for ``chip`` (its core must be ``lib.core``); returns the ELF.

    Raises:
        TflmNotAvailable: the compile or link failed (the first error line); an undefined symbol on a subset
            library is reported with ``undefined reference`` in the message.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pkg = resources.files("edge_asc.firmware_bench.codegen") / "c"
    for name in ("ek_platform.h", "ek_platform_cm.c"):
        _write_if_changed(out / name, (pkg / name).read_text())
    _write_if_changed(out / "tflm_model.cc", model_source(model_bytes))
    _write_if_changed(out / "tflm_main.cc", driver_source(op_types, resolver_methods(lib.root), n_ops, arena_bytes,
                                                          find_arena=find_arena))
    _write_if_changed(out / "link.ld", linker_script(board_chip(chip)))
    elf = out / "tflm.elf"
    arch = [f for f in lib.cxxflags if f.startswith(("-mcpu=", "-mfpu=", "-mfloat-abi=", "-mthumb"))]
    cc = lib.cxx[:-3] + "gcc" if lib.cxx.endswith("g++") else "arm-none-eabi-gcc"
    steps = [
        [cc, *arch, "-std=c99", "-O2", "-ffunction-sections", "-fdata-sections", "-c",
         str(out / "ek_platform_cm.c"), "-o", str(out / "ek_platform_cm.o")],
        [lib.cxx, *lib.cxxflags, "-O2", *lib.includes, "-I", str(out), "-c", str(out / "tflm_main.cc"), "-o",
         str(out / "tflm_main.o")],
        [lib.cxx, *lib.cxxflags, "-O2", "-c", str(out / "tflm_model.cc"), "-o", str(out / "tflm_model.o")],
        [lib.cxx, *arch, "-nostartfiles", "--specs=nosys.specs", "-T", str(out / "link.ld"), "-Wl,--gc-sections",
         f"-Wl,-Map={out / 'tflm.map'}", "-o", str(elf), str(out / "tflm_main.o"), str(out / "tflm_model.o"),
         str(out / "ek_platform_cm.o"), str(lib.lib), *lib.libs],
    ]
    for cmd in steps:
        src, obj = Path(cmd[-3]), Path(cmd[-1])
        if "-c" in cmd and obj.exists() and obj.stat().st_mtime > src.stat().st_mtime:
            continue  # unchanged since the last build (the second build only changes the arena in tflm_main.cc)
        proc = _run_tool(cmd, cwd=lib.root, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            log = proc.stdout + proc.stderr
            und = re.search(r"undefined reference to [`']([^']+)'", log)
            what = f"undefined reference to {und.group(1)}" if und else _first_error(log)
            raise TflmNotAvailable(f"TFLM firmware build failed: {what}")
    return elf


_CAL = re.compile(r"^EK calibrate (\d+) (\d+)", re.M)
_ARENA = re.compile(r"^TFLM arena (\d+) (\d+)", re.M)
_INFER = re.compile(r"^EK inference \d+ (\d+)", re.M)
_OP = re.compile(r"^TFLM op (\d+) (\d+) (\S+)", re.M)
_STACK = re.compile(r"^EK stack (\d+)", re.M)
_ARENA_MIN = re.compile(r"^TFLM arena_min (\d+)", re.M)


def parse_console(console: str) -> dict:
    """The driver's report lines -> {'instructions_per_tick', 'arena_bytes', 'arena_used_bytes',
    'instructions' (per inference), 'op_events' ((tag, instructions summed over inferences) in event order),
    'stack_bytes', 'done'}. Ticks become instructions with the calibration line.

    Raises:
        TflmNotAvailable: no calibration or arena line (the firmware did not get that far).
    """
    cal = _CAL.search(console)
    arena = _ARENA.search(console)
    if not cal or not int(cal.group(2)) or not arena:
        last = (console.strip().splitlines() or ["no output"])[-1]
        raise TflmNotAvailable(f"TFLM firmware failed under QEMU: {last[:200]}")
    ipt = int(cal.group(1)) / int(cal.group(2))
    stack = _STACK.search(console)
    return {"instructions_per_tick": ipt, "arena_bytes": int(arena.group(1)),
            "arena_used_bytes": int(arena.group(2)),
            "instructions": tuple(round(int(t) * ipt) for t in _INFER.findall(console)),
            "op_events": tuple((tag, round(int(t) * ipt)) for _, t, tag in _OP.findall(console)),
            "stack_bytes": int(stack.group(1)) if stack else 0,
            "arena_min_bytes": int(m.group(1)) if (m := _ARENA_MIN.search(console)) else None,
            "done": bool(re.search(r"^EK done \d+", console, re.M))}


def run_firmware(elf: Path, chip, inputs: np.ndarray, *, timeout_s: float = 900.0) -> TflmRun:
    """Run the driver under ``qemu-system-arm -icount shift=0`` on ``inputs`` (int8[n, input bytes]).

    Raises:
        TflmNotAvailable: QEMU missing, or the firmware failed (its last console line).
    """
    from .codegen.runner import ToolchainError, qemu_console, section_sizes

    d = elf.parent / "run"
    d.mkdir(exist_ok=True)
    (d / "ek_out.bin").unlink(missing_ok=True)
    (d / "ek_in.bin").write_bytes(np.ascontiguousarray(inputs, dtype=np.int8).tobytes())
    try:
        rc, console = qemu_console(chip.qemu_machine, elf, d, timeout_s)
    except ToolchainError as exc:
        raise TflmNotAvailable(f"TFLM not available: {exc}") from exc
    rep = parse_console(console)
    if rc or not rep["done"]:
        last = (console.strip().splitlines() or ["no output"])[-1]
        raise TflmNotAvailable(f"TFLM firmware failed under QEMU (exit {rc}): {last[:200]}")
    n = len(inputs)
    raw = (d / "ek_out.bin").read_bytes() if (d / "ek_out.bin").exists() else b""
    out = np.frombuffer(raw, dtype=np.int8).reshape(n, -1) if raw else np.zeros((0, 0), np.int8)
    sizes = section_sizes(elf)
    return TflmRun(outputs=out, instructions=rep["instructions"], op_events=rep["op_events"],
                   instructions_per_tick=rep["instructions_per_tick"], arena_bytes=rep["arena_bytes"],
                   arena_used_bytes=rep["arena_used_bytes"], arena_min_bytes=rep["arena_min_bytes"],
                   stack_bytes=rep["stack_bytes"],
                   flash_bytes=sum(sizes.get(s, 0) for s in FLASH_SECTIONS),
                   static_ram_bytes=sizes.get(".data", 0) + sizes.get(".bss", 0), console=console)


@dataclass(frozen=True, kw_only=True)
class TflmReference:
    """TFLM + CMSIS-NN measured on one model and core, with the smallest arena that allocates (``arena_bytes``;
    ``arena_used_bytes`` is what TFLM reports using).

    Attributes:
        instructions: per inference (mean over the inputs); ``op_types``: (op type, count, instructions per
            inference) per op type, most instructions first.
        flash_bytes, ram_bytes, arena_bytes, stack_bytes, static_ram_bytes: measured as for the generated firmware.
        bit_exact: outputs equal the ``expected`` ones given (the Python interpreter's), None when none given.
        fits_chip: flash and RAM within the chip's (the firmware is linked for the board's memory).
        library: how TFLM was built.
    """

    core: str
    qemu_machine: str
    instructions: int
    instructions_range: tuple[int, int]
    op_types: tuple[tuple[str, int, int], ...]
    flash_bytes: int
    ram_bytes: int
    arena_bytes: int
    arena_used_bytes: int
    stack_bytes: int
    static_ram_bytes: int
    n_inputs: int
    bit_exact: bool | None
    fits_chip: bool
    library: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def measure(model_path: str | os.PathLike, chip, root: str | os.PathLike, build_dir: str | os.PathLike,
            inputs: np.ndarray, *, expected: np.ndarray | None = None, jobs: int = 2) -> TflmReference:
    """Build TFLM + CMSIS-NN for ``chip``'s core and measure it on ``model_path`` with ``inputs``.

    Args:
        chip: a :class:`edge_asc.firmware_bench.codegen.chips.Chip` (its core and QEMU board are used).
        inputs: int8[n, input bytes], as :func:`edge_asc.firmware_bench.codegen.verify.seeded_inputs` makes them.
        expected: int8[n, output bytes] to compare the outputs with (e.g. the Python interpreter's).

    Raises:
        TflmNotAvailable: sources, toolchain or emulator missing, or a build or run failed (one line).
    """
    from .codegen.graph import read_model

    buf = Path(model_path).read_bytes()
    model = read_model(buf)
    op_types = list(dict.fromkeys(op.name for op in model.ops))
    root_p = check_sources(root)
    methods = resolver_methods(root_p)
    regs = [methods[op][1] for op in op_types if op in methods and methods[op][1]]
    top = Path(build_dir).resolve()
    lib = build_library(root_p, chip.core, top, registrations=regs, jobs=jobs)
    fw_dir = top / chip.core / "fw" / f"{Path(model_path).parent.name}-{Path(model_path).stem}"
    probe_arena = (8 << 20) if chip.qemu_machine == "mps3-an547" else (3 << 20)
    try:
        elf = build_firmware(lib, buf, op_types, len(model.ops), chip, fw_dir, probe_arena, find_arena=True)
    except TflmNotAvailable as exc:
        if "undefined reference" not in str(exc):
            raise
        lib = build_library(root_p, chip.core, top, registrations=None, jobs=jobs)
        elf = build_firmware(lib, buf, op_types, len(model.ops), chip, fw_dir, probe_arena, find_arena=True)
    probe = run_firmware(elf, chip, inputs[:1])
    arena = probe.arena_min_bytes or probe.arena_used_bytes
    elf = build_firmware(lib, buf, op_types, len(model.ops), chip, fw_dir, arena)
    run = run_firmware(elf, chip, inputs)
    n = len(inputs)
    acc: dict[str, list[int]] = {}
    for tag, ins in run.op_events:
        a = acc.setdefault(tag, [0, 0])
        a[0] += 1
        a[1] += ins
    types = tuple(sorted(((k, v[0], round(v[1] / n)) for k, v in acc.items()), key=lambda r: -r[2]))
    exact = None if expected is None else bool(np.array_equal(run.outputs, np.asarray(expected, dtype=np.int8)))
    return TflmReference(
        core=chip.core, qemu_machine=chip.qemu_machine, instructions=round(sum(run.instructions) / n),
        instructions_range=(min(run.instructions), max(run.instructions)), op_types=types,
        flash_bytes=run.flash_bytes, ram_bytes=run.ram_bytes, arena_bytes=run.arena_bytes,
        arena_used_bytes=run.arena_used_bytes,
        stack_bytes=run.stack_bytes, static_ram_bytes=run.static_ram_bytes, n_inputs=n, bit_exact=exact,
        fits_chip=run.flash_bytes <= chip.flash_bytes and run.ram_bytes <= chip.ram_bytes,
        library={"lib": str(lib.lib), "target_arch": TFLM_ARCH[chip.core], "build_type": "release_with_logs",
                 "optimized_kernel_dir": "cmsis_nn", "kernel_subset": lib.subset,
                 "driver_cflags": "-O2 + TFLM's CXXFLAGS"})


#: issue 17's goals: the generated firmware over TFLM + CMSIS-NN on the same file and core
GOALS = {"instructions": 0.5, "arena": 0.75, "flash": 0.65}


def ratios(*, instructions: int, arena_bytes: int, ram_bytes: int, flash_bytes: int, ref: TflmReference) -> dict:
    """The generated firmware's measurements over TFLM's: instructions, arena, RAM (data + bss + stack), flash."""
    return {"instructions": instructions / ref.instructions, "arena": arena_bytes / ref.arena_bytes,
            "ram": ram_bytes / ref.ram_bytes, "flash": flash_bytes / ref.flash_bytes}


def side_by_side(ours: list[tuple[str, int, int]], ref: TflmReference) -> list[tuple[str, int, int, int, int]]:
    """Per op type: (op, our count, our instructions, TFLM count, TFLM instructions) per inference, TFLM's most
    expensive first; an op type only one side has gets 0 on the other."""
    mine = {op: (n, ins) for op, n, ins in ours}
    theirs = {op: (n, ins) for op, n, ins in ref.op_types}
    order = [op for op, _, _ in ref.op_types] + [op for op, _, _ in ours if op not in theirs]
    return [(op, *mine.get(op, (0, 0)), *theirs.get(op, (0, 0))) for op in order]


def format_comparison(title: str, ours: list[tuple[str, int, int]], *, instructions: int, arena_bytes: int,
                      ram_bytes: int, flash_bytes: int, ref: TflmReference) -> str:
    """A text table: instructions per op type side by side, then totals, memory and the goal ratios."""
    r = ratios(instructions=instructions, arena_bytes=arena_bytes, ram_bytes=ram_bytes, flash_bytes=flash_bytes,
               ref=ref)
    head = f"{'op':<24} {'n':>3} {'ours':>13} {'TFLM+CMSIS-NN':>14} {'ratio':>6}"
    lines = [title, head, "-" * len(head)]
    for op, n_o, i_o, n_t, i_t in side_by_side(ours, ref):
        ratio = f"{i_o / i_t:6.2f}" if i_t else f"{'-':>6}"
        lines.append(f"{op:<24} {max(n_o, n_t):>3} {i_o:>13,} {i_t:>14,} {ratio}")
    lines.append(f"{'total per inference':<28} {instructions:>13,} {ref.instructions:>14,} {r['instructions']:6.2f}"
                 f"   (goal <= {GOALS['instructions']})")
    lines.append(f"{'arena B':<28} {arena_bytes:>13,} {ref.arena_bytes:>14,} {r['arena']:6.2f}"
                 f"   (goal <= {GOALS['arena']})")
    lines.append(f"{'RAM B (data+bss+stack)':<28} {ram_bytes:>13,} {ref.ram_bytes:>14,} {r['ram']:6.2f}")
    lines.append(f"{'flash B':<28} {flash_bytes:>13,} {ref.flash_bytes:>14,} {r['flash']:6.2f}"
                 f"   (goal <= {GOALS['flash']})")
    exact = {True: "bit-exact with", False: "NOT bit-exact with", None: "not compared with"}[ref.bit_exact]
    lines.append(f"TFLM firmware {exact} the Python interpreter on {ref.n_inputs} seeded inputs; stack "
                 f"{ref.stack_bytes:,} B; fits the chip: {'yes' if ref.fits_chip else 'no'}")
    return "\n".join(lines)
