"""Portable CPU arithmetic: the same float results on every x86-64 machine, whatever its cores and vector width.

PyTorch's CPU kernels pick their code path per machine: ATen dispatches to AVX-512 or AVX2 loops, oneDNN's
convolutions to AVX-512, AVX2 or AMX kernels, and several of those partition reductions by thread. Two machines (or
one machine with two thread counts) then add the same numbers in different orders, and a 70-epoch training run ends
a few tenths of a point apart. Capping both libraries at AVX2, which every x86-64 CPU sold since 2015 runs, makes
the result independent of the thread count and of the machine's vector width (see docs/reproducibility.md for the
measurement). It has to happen before torch is imported: both libraries read the setting once, at load time.
"""

from __future__ import annotations

import os
import platform
import sys

#: Environment that caps ATen's and oneDNN's CPU dispatch at AVX2 (x86-64 only; other CPUs have one code path).
PORTABLE_MATH_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pin_portable_math() -> bool:
    """Cap this process's PyTorch CPU arithmetic at AVX2 (see the module docstring).

    Sets :data:`PORTABLE_MATH_ENV` unless the variables are already set, and only while torch is not imported yet.

    Returns:
        True when the cap is (or will be, once torch loads) in effect, or when the CPU is not x86-64 (nothing to cap);
        False when torch was imported earlier with another capability or the user set the variables otherwise.
    """
    if not _x86():
        return True
    if "torch" not in sys.modules:
        for k, v in PORTABLE_MATH_ENV.items():
            os.environ.setdefault(k, v)
    return portable_math_active()


def portable_math_active() -> bool:
    """True when this process's PyTorch CPU arithmetic is (or will be) capped at AVX2, or the CPU is not x86-64."""
    if not _x86():
        return True
    if "torch" in sys.modules:
        import torch

        return torch.backends.cpu.get_cpu_capability() == "AVX2" and \
            os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"
    return all(os.environ.get(k, "").lower() == v.lower() for k, v in PORTABLE_MATH_ENV.items())


def cpu_math() -> dict[str, object]:
    """What decides this process's float results: ATen's CPU capability, oneDNN's cap, torch's thread count."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "threads": torch.get_num_threads(),
            "portable": portable_math_active()}
