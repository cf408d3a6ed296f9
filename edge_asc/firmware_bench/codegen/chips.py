"""Microcontrollers the firmware generator targets: core, compiler flags, the QEMU board that emulates the core,
and the chip's real flash and RAM (the linker script uses them, so a model that does not fit fails to link).

QEMU has no timing model: it counts instructions (``-icount shift=0``); cycles and milliseconds are estimates,
instructions x ``cpi`` / ``clock_hz``. The CPIs are the assumptions of ``edge_asc/firmware_bench/targets.toml`` for the
same cores (Cortex-M4 1.25: single issue, 2-cycle loads and taken branches, flash behind a cache; Cortex-M7 0.85:
dual issue, = 1.25 x 3.42 / 5.01 CoreMark/MHz of M4 vs M7; Cortex-M55 1.0: assumed).

Emulated memory maps (QEMU 7.2): ``mps2-an386`` (Cortex-M4) and ``mps2-an500`` (Cortex-M7) have 4 MiB of SSRAM at
0x0 and 4 MiB at 0x20000000; ``mps3-an547`` (Cortex-M55) has 512 KiB ITCM at 0x0 and DDR from 0x60000000. The vector
table sits at 0x0 on every board (1 KiB region), the code and constants in a FLASH region, everything written in a
RAM region, both sized to the chip.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UsageError

#: bytes reserved for the main stack at the top of RAM (included in the link-time RAM check)
DEFAULT_STACK_BYTES = 4096
VECTOR_BYTES = 1024


@dataclass(frozen=True, kw_only=True)
class Chip:
    """One firmware target.

    Attributes:
        key: the ``--target`` name.
        name: display name.
        core: 'cortex-m4', 'cortex-m7' or 'cortex-m55'.
        cflags: GCC flags selecting the core and its FPU.
        qemu_machine: the ``qemu-system-arm -M`` board emulating the core.
        flash_bytes, ram_bytes: the chip's memory (linker limits).
        flash_origin, ram_origin: where the emulated board has memory for those regions.
        clock_hz: core clock (Hz) for the time estimate.
        cpi: assumed cycles per instruction for the time estimate.
        report_target: the matching key in ``targets.toml`` (``edge-asc report``), if any.
    """

    key: str
    name: str
    core: str
    cflags: tuple[str, ...]
    qemu_machine: str
    flash_bytes: int
    ram_bytes: int
    flash_origin: int
    ram_origin: int
    clock_hz: float
    cpi: float
    report_target: str | None = None

    def __post_init__(self) -> None:
        if self.flash_bytes <= VECTOR_BYTES or self.ram_bytes <= 0 or self.clock_hz <= 0 or self.cpi <= 0:
            raise ValueError(f"chip {self.key}: sizes, clock and CPI must be positive")


_M4F = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
_M7 = ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16")
_M55 = ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard")

CHIPS: dict[str, Chip] = {c.key: c for c in (
    Chip(key="nrf52840", name="Nordic nRF52840 (Cortex-M4F, 64 MHz, 1 MiB flash, 256 KiB RAM)", core="cortex-m4",
         cflags=_M4F, qemu_machine="mps2-an386", flash_bytes=1 << 20, ram_bytes=256 << 10,
         flash_origin=0x400, ram_origin=0x20000000, clock_hz=64e6, cpi=1.25, report_target="nrf52840"),
    Chip(key="stm32l4r5", name="ST STM32L4R5 (Cortex-M4F, 120 MHz, 2 MiB flash, 640 KiB RAM)", core="cortex-m4",
         cflags=_M4F, qemu_machine="mps2-an386", flash_bytes=2 << 20, ram_bytes=640 << 10,
         flash_origin=0x400, ram_origin=0x20000000, clock_hz=120e6, cpi=1.25),
    Chip(key="stm32h7", name="ST STM32H7 class (Cortex-M7, 480 MHz, 2 MiB flash, 512 KiB AXI SRAM)",
         core="cortex-m7", cflags=_M7, qemu_machine="mps2-an500", flash_bytes=2 << 20, ram_bytes=512 << 10,
         flash_origin=0x400, ram_origin=0x20000000, clock_hz=480e6, cpi=0.85, report_target="stm32h7"),
    Chip(key="m55", name="Cortex-M55 class (Helium, 500 MHz, 2 MiB flash, 256 KiB RAM as the m55-u55 target)",
         core="cortex-m55", cflags=_M55, qemu_machine="mps3-an547", flash_bytes=2 << 20, ram_bytes=256 << 10,
         flash_origin=0x60000000, ram_origin=0x68000000, clock_hz=500e6, cpi=1.0, report_target="m55-u55"),
)}


def get_chip(key: str) -> Chip:
    """The chip called ``key``.

    Raises:
        UsageError: unknown key (the message lists the known ones).
    """
    try:
        return CHIPS[key]
    except KeyError:
        raise UsageError(f"unknown firmware target {key!r}: choose one of {', '.join(CHIPS)}") from None
