"""The dependency wall for the device commands: `edge-asc classify` and `edge-asc listen` (and importing the
device-safe packages) never import torch, tensorflow, librosa or onnx. Checked in fresh subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import require

from edge_asc.audio import write_audio

HEAVY = ("torch", "tensorflow", "librosa", "onnx", "onnx2tf", "keras", "tf_keras", "jax")

require("tensorflow")  # only to build the test model in this (parent) process
require("ai_edge_litert")
from runtime_models import LABELS, high, low, write_model

PROBE = """
import json, sys, contextlib, io
{body}
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print("HEAVY=" + json.dumps(heavy))
"""


def _heavy_after(body: str) -> tuple[list[str], str]:
    r = subprocess.run([sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("HEAVY="))
    return json.loads(line[len("HEAVY="):]), r.stdout


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("wall")
    wav = d / "a.wav"
    write_audio(wav, low(2.5), 16_000)
    return write_model(d / "m.tflite"), str(wav), d


def test_device_packages_import_nothing_heavy():
    heavy, _ = _heavy_after("import edge_asc.spec, edge_asc.audio, edge_asc.frontend, edge_asc.runtime\n"
                            "import edge_asc.runtime.sources, edge_asc.runtime.sinks, edge_asc.runtime.engine\n"
                            "import edge_asc.commands.classify, edge_asc.commands.listen")
    assert heavy == []


def test_classify_imports_nothing_heavy(artifacts):
    model, wav, _ = artifacts
    heavy, out = _heavy_after(
        "from edge_asc.cli import main\n"
        f"rc = main(['classify', {wav!r}, '--model', {model!r}, '--json'])\n"
        "assert rc == 0, rc\n"
        "import edge_asc.runtime.interpreter as i; print('BACKEND=' + i.interpreter_backend()[0])")
    assert heavy == []
    assert "BACKEND=ai_edge_litert" in out and '"label": "low"' in out


def test_listen_imports_nothing_heavy(artifacts):
    model, wav, d = artifacts
    heavy, _ = _heavy_after(
        "from edge_asc.cli import main\n"
        f"rc = main(['listen', '--model', {model!r}, '--input', {wav!r}, '--jsonl', {str(d / 'e.jsonl')!r}, "
        f"'--db', {str(d / 'e.db')!r}, '--plain'])\n"
        "assert rc == 0, rc")
    assert heavy == []


def test_evaluate_of_a_tflite_imports_nothing_heavy(artifacts):
    import numpy as np

    model, _, d = artifacts
    data = d / "folders"
    for label, make in zip(LABELS, (low, high, lambda s, seed: np.zeros(int(s * 16_000), np.float32))):
        (data / label).mkdir(parents=True)
        for k in range(4):
            write_audio(data / label / f"{label}{k}.wav", make(2.0, seed=k), 16_000)
    heavy, out = _heavy_after(
        "from edge_asc.cli import main\n"
        f"rc = main(['evaluate', {model!r}, '--data', {str(data)!r}])\n"
        "assert rc == 0, rc")
    assert heavy == [] and "macro accuracy" in out
