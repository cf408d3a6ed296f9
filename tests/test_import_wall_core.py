"""The dependency wall: the device-safe core never imports torch, tensorflow, librosa or onnx."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "tensorflow", "librosa", "onnx", "onnx2tf", "keras")

SCRIPT = f"""
import json, sys
import numpy as np
import edge_asc, edge_asc.spec, edge_asc.audio, edge_asc.frontend, edge_asc.tflite_meta, edge_asc.cli
from edge_asc.frontend import StreamingFrontend, offline, RingBuffer
from edge_asc.spec import PRESETS
for spec in PRESETS.values():
    fe = StreamingFrontend(spec)
    x = np.random.default_rng(0).standard_normal(spec.sample_rate).astype(np.float32) * 0.1
    for i in range(0, x.size, 1000):
        fe.push(x[i:i + 1000])
    offline(x, spec)
rb = RingBuffer(100); rb.write(np.zeros(10, np.float32)); rb.read()
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
"""


def test_core_and_streaming_frontend_import_no_heavy_library():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_cli_help_imports_no_heavy_library():
    code = ("import sys, json, contextlib, io\nfrom edge_asc.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
