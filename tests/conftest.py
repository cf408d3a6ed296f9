"""Shared pytest fixtures and the optional-dependency check. Seeded, generated at test time, no network, no hardware."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

# The top-level modules of the optional extras (README, "Extras"), by (extra, distribution that installs the module);
# an entry covers its submodules. require() may skip a test that needs one of these; every other module (the core
# numpy, soundfile and soxr, and the test tools of the `dev` extra) must import. onnx2tf is installed by the Makefile
# with --no-deps, beside `export`.
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "ai_edge_litert": ("pi", "ai-edge-litert"),
    "sounddevice": ("pi", "sounddevice"),
    "paho": ("pi", "paho-mqtt"),
    "torch": ("train", "torch"),
    "librosa": ("train", "librosa"),
    "matplotlib": ("train", "matplotlib"),
    "rich": ("train", "rich"),
    "safetensors": ("train", "safetensors"),
    "tensorflow": ("export", "tensorflow-cpu"),
    "onnx": ("export", "onnx"),
    "onnxscript": ("export", "onnxscript"),
    "onnx2tf": ("export", "onnx2tf"),
    "flatbuffers": ("pi", "flatbuffers"),
    "tflite_micro": ("bench", "tflite-micro"),
    "ethosu": ("bench", "ethos-u-vela"),
}


def optional_extra(module: str) -> str | None:
    """The extra that installs ``module`` (or the package it belongs to), or None for a module that is not optional."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        entry = OPTIONAL_MODULES.get(".".join(parts[:n]))
        if entry is not None:
            return entry[0]
    return None


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to anything but empty, ``0``, ``false`` or ``no``
    (``.ci/run`` sets ``CI=1``; CI services set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(module: str) -> ModuleType:
    """Import and return ``module`` for the tests that need it (at module level: for the whole file).

    When ``module`` is not installed, the test is skipped if the module belongs to an optional extra
    (:data:`OPTIONAL_MODULES`) and CI is not set (:func:`in_ci`); otherwise it fails, naming the extra to install.
    A module that is installed but fails to import (a broken install, a missing dependency of its own) always fails.

    Raises:
        pytest.skip.Exception: an optional module is absent and CI is not set.
        pytest.fail.Exception: a core module is absent, CI is set, or the module is broken.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = exc  # decided below, outside the handler, so the report is one message and not a chain
    extra = optional_extra(module)
    name = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not name or not (module == name or module.startswith(name + ".")):
        pytest.fail(f"'{module}' is installed but does not import: {error}", pytrace=False)
    if extra is not None and not in_ci():
        pytest.skip(f"'{module}' is not installed (pip install 'edge-asc[{extra}]')", allow_module_level=True)
    why = "CI is set: every extra must be installed" if extra is not None else "it is not optional"
    pytest.fail(f"'{module}' is not installed and {why} (pip install 'edge-asc[{extra or 'all'}]')", pytrace=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A generated TAU 2020 Mobile layout dataset: 20 clips per class (about 2 per class per device), 1 s, 16 kHz,
    seed 0 -- 110 train clips (devices A, B, C, S1-S3) and 90 evaluate clips (all nine devices). Made once per session.
    """
    from edge_asc.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("tiny_dataset") / "data", clips_per_class=20, seconds=1.0,
                      sample_rate=16_000, seed=0)
