"""Writing a PNG (`features --png`, the report's PNG) draws on a Figure of its own: it neither imports pyplot nor
switches the caller's matplotlib backend. Checked in a fresh subprocess that chose another backend first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import firmware_models as fm
import numpy as np
import soundfile as sf
from conftest import require

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import matplotlib
matplotlib.use("svg")
from edge_asc.cli import main
from edge_asc.firmware_bench.render import write_png
from edge_asc.firmware_bench.report import build_report

wav, model, out = sys.argv[1:]
assert main(["features", wav, "--png", out + "/mel.png"]) == 0
write_png(build_report(model, run_tflm=False, run_vela=False, measure=False), out + "/report.png")
print(json.dumps({"backend": matplotlib.get_backend(), "pyplot": "matplotlib.pyplot" in sys.modules}))
"""


def test_png_writers_leave_the_backend_alone(tmp_path):
    require("matplotlib")
    require("ai_edge_litert")  # the hand-built .tflite is written with its schema
    wav = tmp_path / "tone.wav"
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000), 16000)
    model = tmp_path / "hand.tflite"
    model.write_bytes(fm.hand_model())
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(wav), str(model), str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"backend": "svg", "pyplot": False}
    for name in ("mel.png", "report.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
