"""Build a generated project and run it: on the host (gcc) or on an emulated Cortex-M (arm-none-eabi-gcc + QEMU).

A run feeds ``n`` inputs through ``ek_in.bin`` and reads the outputs back from ``ek_out.bin``; on QEMU it also
collects the measurements ``ek_main.c`` prints: instructions per inference and per op (SysTick ticks under
``-icount shift=0`` x the instructions per tick measured by a calibration loop), the stack high-water mark; and
``arm-none-eabi-size`` gives flash (vectors + text + rodata + data) and static RAM (data + bss).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BudgetExceededError, EdgeAscError
from .project import Project

#: Debian packages that provide the cross toolchain and the emulator
APT_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm")


class ToolchainError(EdgeAscError):
    """A compiler or the emulator is missing, or a build / run failed."""


class LinkOverflowError(BudgetExceededError):
    """The firmware does not fit the chip: the linker reported a memory region overflow (exit code 3)."""

    def __init__(self, message: str, *, region: str, overflow_bytes: int) -> None:
        super().__init__(message)
        self.region = region
        self.overflow_bytes = overflow_bytes


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """Outputs of ``n`` inferences and, on QEMU, the measurements.

    Attributes:
        outputs: int8[n, output bytes] (all output tensors concatenated per inference).
        instructions: instructions of each inference (QEMU only, else empty).
        op_instructions: instructions of each op summed over the ``n`` inferences (QEMU only).
        instructions_per_tick: the calibration (QEMU only; 40 on the mps2 boards' 25 MHz SysTick).
        stack_bytes: stack high-water mark (QEMU only).
        flash_bytes: vectors + text + rodata + data (QEMU only).
        static_ram_bytes: data + bss, the arena included (QEMU only).
        arena_bytes: the planned tensor arena (part of bss).
        console: the program's console output.
    """

    outputs: np.ndarray
    instructions: tuple[int, ...] = ()
    op_instructions: tuple[int, ...] = ()
    instructions_per_tick: float = 0.0
    stack_bytes: int = 0
    flash_bytes: int = 0
    static_ram_bytes: int = 0
    arena_bytes: int = 0
    console: str = field(default="", repr=False)

    @property
    def ram_bytes(self) -> int:
        """RAM the firmware needs: data + bss (arena included) + stack high-water mark."""
        return self.static_ram_bytes + self.stack_bytes

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("outputs")
        d.pop("console")
        d["ram_bytes"] = self.ram_bytes
        return d


def which(tool: str) -> str | None:
    return shutil.which(tool)


def arm_toolchain_present() -> bool:
    """arm-none-eabi-gcc (with newlib) and qemu-system-arm are on PATH."""
    if not (which("arm-none-eabi-gcc") and which("qemu-system-arm")):
        return False
    proc = subprocess.run(["arm-none-eabi-gcc", "-print-file-name=libc.a"], capture_output=True, text=True,
                          check=False)
    return os.path.isabs(proc.stdout.strip())  # newlib present (gcc echoes the bare name when it is not)


def install_arm_toolchain(timeout_s: float = 900.0) -> bool:
    """Install :data:`APT_PACKAGES` with apt when missing and running as root; True when present afterwards."""
    if arm_toolchain_present():
        return True
    if os.geteuid() != 0 or not which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=timeout_s, check=False)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], capture_output=True,
                   env=env, timeout=timeout_s, check=False)
    return arm_toolchain_present()


_OVERFLOW = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


def _make(project: Project, target: str, extra: str = "", timeout_s: float = 600.0) -> None:
    cmd = ["make", "-C", str(project.out_dir), "-s", target]
    if extra:
        cmd.append(f"EXTRA={extra}")
    if target in ("arm", "app-arm") and not which("arm-none-eabi-gcc"):
        raise ToolchainError("arm-none-eabi-gcc not found: install the Debian packages "
                             f"{' '.join(APT_PACKAGES)} (apt-get install, as root)")
    if target not in ("arm", "app-arm") and not which(os.environ.get("CC", "cc")):
        raise ToolchainError("no host C compiler (cc) found: install gcc")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode:
        log = proc.stdout + proc.stderr
        over = _OVERFLOW.findall(log)
        if over:
            regions = {r: int(n) for r, n in over}
            region, n = max(regions.items(), key=lambda kv: kv[1])
            what = "; ".join(f"{r} by {n:,} bytes" for r, n in regions.items())
            fw = "the firmware with its front end" if target.startswith("app") else "the firmware"
            raise LinkOverflowError(f"{fw} does not fit {project.chip.name}: region {what} "
                                    f"(arena {project.arena_bytes:,} B, constants {project.weight_bytes:,} B)",
                                    region=region, overflow_bytes=n)
        lines = log.strip().splitlines()
        first = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "no message")
        raise ToolchainError(f"building the firmware ({target}) failed: {first}")


def build(project: Project, kind: str = "host", *, extra_cflags: str = "") -> Path:
    """Build ``kind`` ('host', 'debug' or 'arm') and return the binary's path.

    Raises:
        LinkOverflowError: (arm) the firmware does not fit the chip's flash or RAM.
        ToolchainError: no compiler, or the build failed.
    """
    _make(project, kind, extra_cflags)
    return project.out_dir / "build" / {"host": "host/model", "debug": "debug/model", "arm": "arm/model.elf"}[kind]


def _run_dir(project: Project, name: str, inputs: np.ndarray | None) -> Path:
    d = project.out_dir / "build" / name
    d.mkdir(parents=True, exist_ok=True)
    for f in ("ek_in.bin", "ek_out.bin", "ek_dump.bin"):
        (d / f).unlink(missing_ok=True)
    if inputs is not None:
        (d / "ek_in.bin").write_bytes(np.ascontiguousarray(inputs, dtype=np.int8).tobytes())
    return d


def _outputs(d: Path, n: int, console: str) -> np.ndarray:
    if (d / "ek_out.bin").exists():
        return np.frombuffer((d / "ek_out.bin").read_bytes(), dtype=np.int8).reshape(n, -1)
    rows = [[int(v) for v in ln.split()[3:]] for ln in console.splitlines() if ln.startswith("EK output ")]
    return np.asarray(rows, dtype=np.int8).reshape(len(rows), -1) if rows else np.zeros((0, 0), np.int8)


def run_host(project: Project, inputs: np.ndarray | None = None, *, debug: bool = False,
             timeout_s: float = 600.0) -> RunResult:
    """Build (if needed) and run the host binary on ``inputs`` (int8[n, input bytes]; None: one seeded input).

    With ``debug``, the debug build runs and writes ``ek_dump.bin`` next to the outputs (see :func:`read_dump`).
    """
    exe = build(project, "debug" if debug else "host").resolve()
    d = _run_dir(project, "run-debug" if debug else "run-host", inputs)
    proc = subprocess.run([str(exe)], cwd=d, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode:
        raise ToolchainError(f"the host firmware exited with {proc.returncode}: {proc.stderr.strip()[:200]}")
    n = 1 if inputs is None else len(inputs)
    return RunResult(outputs=_outputs(d, n, proc.stdout), arena_bytes=project.arena_bytes, console=proc.stdout)


def read_dump(path: str | os.PathLike) -> list[tuple[int, int, np.ndarray]]:
    """Records of a debug build's ``ek_dump.bin``: (op index, tensor index, int8 bytes) in write order."""
    raw = Path(path).read_bytes()
    recs, pos = [], 0
    while pos + 12 <= len(raw):
        op, tensor, n = np.frombuffer(raw, dtype=np.int32, count=3, offset=pos)
        pos += 12
        recs.append((int(op), int(tensor), np.frombuffer(raw, dtype=np.int8, count=int(n), offset=pos).copy()))
        pos += int(n)
    return recs


def section_sizes(elf: Path) -> dict[str, int]:
    """Section name -> bytes of an ELF (``arm-none-eabi-size -A``)."""
    proc = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True)
    sizes = {}
    for ln in proc.stdout.splitlines():
        parts = ln.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def symbol_sizes(elf: Path) -> dict[str, tuple[str, int]]:
    """Symbol name -> (``nm`` type letter, bytes) of an ELF's sized symbols (``arm-none-eabi-nm -S``)."""
    proc = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True, check=True)
    out = {}
    for ln in proc.stdout.splitlines():
        parts = ln.split()
        if len(parts) == 4:
            out[parts[3]] = (parts[2], int(parts[1], 16))
    return out


def added_bytes(elf: Path, base: Path) -> tuple[int, int]:
    """(flash, static RAM) of the symbols ``elf`` links that ``base`` does not: code and constants (nm types
    T/t/R/r, plus initialised data D/d) count as flash, data and bss (D/d/B/b) as RAM."""
    new, old = symbol_sizes(elf), symbol_sizes(base)
    extra = [(t, n) for name, (t, n) in new.items() if name not in old]
    return (sum(n for t, n in extra if t in "TtRrDd"), sum(n for t, n in extra if t in "DdBb"))


def qemu_console(machine: str, elf: Path, cwd: Path, timeout_s: float) -> tuple[int, str]:
    """Run ``elf`` bare-metal on QEMU board ``machine`` with semihosting (files in ``cwd``) and ``-icount shift=0``
    (SysTick then counts instructions, deterministically): (exit code, console).

    Raises:
        ToolchainError: qemu-system-arm missing, or the run did not finish within ``timeout_s``.
    """
    if not which("qemu-system-arm"):
        raise ToolchainError("qemu-system-arm not found: install the Debian package qemu-system-arm")
    cmd = ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]
    try:
        # QEMU writes the semihosting console to stderr when stdout is not a terminal: read both as one stream
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"QEMU ({machine}) did not finish within {timeout_s:.0f} s") from exc
    return proc.returncode, proc.stdout


def run_qemu(project: Project, inputs: np.ndarray | None = None, *, timeout_s: float = 600.0) -> RunResult:
    """Build for the chip and run under ``qemu-system-arm -icount shift=0`` on ``inputs`` (None: one seeded input).

    Raises:
        LinkOverflowError: the firmware does not fit the chip (the linker's message, with the overflow in bytes).
        ToolchainError: no toolchain / emulator, or the firmware failed.
    """
    elf = build(project, "arm").resolve()
    d = _run_dir(project, "run-qemu", inputs)
    rc, console = qemu_console(project.chip.qemu_machine, elf, d, timeout_s)
    if rc or "EK done" not in console:
        last = (console.strip().splitlines() or ["no output"])[-1]
        raise ToolchainError(f"the firmware failed under QEMU {project.chip.qemu_machine} "
                             f"(exit {rc}): {last[:200]}")
    cal = re.search(r"^EK calibrate (\d+) (\d+)", console, re.M)
    ipt = int(cal.group(1)) / int(cal.group(2)) if cal and int(cal.group(2)) else 0.0
    ticks = [int(t) for t in re.findall(r"^EK inference \d+ (\d+)", console, re.M)]
    op_ticks = [int(t) for t in re.findall(r"^EK op \d+ (\d+) ", console, re.M)]
    stack = re.search(r"^EK stack (\d+)", console, re.M)
    sizes = section_sizes(elf)
    flash = sum(sizes.get(s, 0) for s in (".vectors", ".text", ".ARM.exidx", ".data"))
    static_ram = sizes.get(".data", 0) + sizes.get(".bss", 0)
    n = 1 if inputs is None else len(inputs)
    return RunResult(outputs=_outputs(d, n, console), instructions=tuple(round(t * ipt) for t in ticks),
                     op_instructions=tuple(round(t * ipt) for t in op_ticks), instructions_per_tick=ipt,
                     stack_bytes=int(stack.group(1)) if stack else 0, flash_bytes=flash,
                     static_ram_bytes=static_ram, arena_bytes=project.arena_bytes, console=console)


# ---- audio in -> label out (the front end) --------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class AppRun:
    """One run of the audio-in -> label-out program (``ek_app.c``) on int16 audio.

    Attributes:
        inputs: int8[n_windows, input bytes], the model input tensor the front end laid out for each window.
        outputs: int8[n_windows, output bytes], the model's outputs on them.
        features: (host build only) float32[n_frames, channels, n_mels], every emitted feature frame in dB
            (un-normalised), or None.
        hop_instructions: (QEMU) instructions of each STFT frame (``ek_fe_step``), in order.
        hop_emitted: (QEMU) whether each of those frames emitted a feature frame.
        window_instructions, inference_instructions: (QEMU) per model window.
        instructions_per_tick, stack_bytes, flash_bytes, static_ram_bytes: as in :class:`RunResult` (QEMU).
        overrun_samples: samples the ring overwrote (0 when the program keeps up).
    """

    inputs: np.ndarray
    outputs: np.ndarray
    features: np.ndarray | None = None
    hop_instructions: tuple[int, ...] = ()
    hop_emitted: tuple[bool, ...] = ()
    window_instructions: tuple[int, ...] = ()
    inference_instructions: tuple[int, ...] = ()
    instructions_per_tick: float = 0.0
    stack_bytes: int = 0
    flash_bytes: int = 0
    static_ram_bytes: int = 0
    overrun_samples: int = 0
    console: str = field(default="", repr=False)

    @property
    def ram_bytes(self) -> int:
        return self.static_ram_bytes + self.stack_bytes


def _app_dir(project: Project, name: str, audio: np.ndarray) -> Path:
    if project.frontend is None:
        raise ToolchainError(f"the project in {project.out_dir} has no front end: generate it with a front end")
    d = project.out_dir / "build" / name
    d.mkdir(parents=True, exist_ok=True)
    for f in ("ek_audio.bin", "ek_app_out.bin", "ek_features.bin"):
        (d / f).unlink(missing_ok=True)
    a = np.asarray(audio)
    if a.dtype != np.int16 or a.ndim != 1:
        raise ValueError(f"audio must be int16[n], got {a.dtype}{list(a.shape)}")
    (d / "ek_audio.bin").write_bytes(a.astype("<i2").tobytes())
    return d


def _app_outputs(project: Project, d: Path) -> tuple[np.ndarray, np.ndarray]:
    in_bytes, out_bytes = project.input_bytes, project.output_bytes
    raw = np.frombuffer((d / "ek_app_out.bin").read_bytes(), dtype=np.int8) if (d / "ek_app_out.bin").exists() \
        else np.zeros(0, np.int8)
    rec = raw.reshape(-1, in_bytes + out_bytes)
    return rec[:, :in_bytes].copy(), rec[:, in_bytes:].copy()


def run_app_host(project: Project, audio: np.ndarray, *, timeout_s: float = 600.0) -> AppRun:
    """Build (if needed) and run the audio-in -> label-out program on the host on ``audio`` (int16[n]).

    Raises:
        ToolchainError: no host compiler, no front end in the project, or the program failed.
    """
    _make(project, "app")
    exe = (project.out_dir / "build" / "host" / "app").resolve()
    d = _app_dir(project, "run-app-host", audio)
    proc = subprocess.run([str(exe)], cwd=d, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode or "EK done" not in proc.stdout:
        raise ToolchainError(f"the host audio-in -> label-out program exited with {proc.returncode}: "
                             f"{proc.stderr.strip()[:200]}")
    fe = project.frontend
    inputs, outputs = _app_outputs(project, d)
    feats = np.frombuffer((d / "ek_features.bin").read_bytes(), dtype=np.float32).reshape(
        -1, fe.spec.channels, fe.spec.n_mels).copy()
    done = re.search(r"^EK done \d+ \d+ (\d+)", proc.stdout, re.M)
    return AppRun(inputs=inputs, outputs=outputs, features=feats, overrun_samples=int(done.group(1)),
                  console=proc.stdout)


def run_app_qemu(project: Project, audio: np.ndarray, *, timeout_s: float = 600.0) -> AppRun:
    """Build the audio-in -> label-out program for the chip (front end + model, linked with the chip's flash and
    RAM) and run it under ``qemu-system-arm -icount shift=0`` on ``audio`` (int16[n]): instructions per STFT hop,
    per window layout and per inference, flash and RAM of the whole program.

    Raises:
        LinkOverflowError: front end + model do not fit the chip.
        ToolchainError: no toolchain / emulator, no front end in the project, or the program failed.
    """
    _make(project, "app-arm")
    elf = (project.out_dir / "build" / "arm" / "app.elf").resolve()
    d = _app_dir(project, "run-app-qemu", audio)
    rc, console = qemu_console(project.chip.qemu_machine, elf, d, timeout_s)
    if rc or "EK done" not in console:
        last = (console.strip().splitlines() or ["no output"])[-1]
        raise ToolchainError(f"the audio-in -> label-out firmware failed under QEMU {project.chip.qemu_machine} "
                             f"(exit {rc}): {last[:200]}")
    cal = re.search(r"^EK calibrate (\d+) (\d+)", console, re.M)
    ipt = int(cal.group(1)) / int(cal.group(2)) if cal and int(cal.group(2)) else 0.0
    hops = re.findall(r"^EK hop \d+ (\d+) ([01])", console, re.M)
    wins = [int(t) for t in re.findall(r"^EK window \d+ (\d+)", console, re.M)]
    infs = [int(t) for t in re.findall(r"^EK inference \d+ (\d+)", console, re.M)]
    stack = re.search(r"^EK stack (\d+)", console, re.M)
    done = re.search(r"^EK done \d+ \d+ (\d+)", console, re.M)
    sizes = section_sizes(elf)
    inputs, outputs = _app_outputs(project, d)
    return AppRun(inputs=inputs, outputs=outputs, hop_instructions=tuple(round(int(t) * ipt) for t, _ in hops),
                  hop_emitted=tuple(e == "1" for _, e in hops),
                  window_instructions=tuple(round(t * ipt) for t in wins),
                  inference_instructions=tuple(round(t * ipt) for t in infs), instructions_per_tick=ipt,
                  stack_bytes=int(stack.group(1)) if stack else 0,
                  flash_bytes=sum(sizes.get(s, 0) for s in (".vectors", ".text", ".ARM.exidx", ".data")),
                  static_ram_bytes=sizes.get(".data", 0) + sizes.get(".bss", 0),
                  overrun_samples=int(done.group(1)) if done else 0, console=console)
