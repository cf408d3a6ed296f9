"""The CLI: help/version, `features`, and one-line errors with the documented exit codes (no tracebacks)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from edge_asc import __version__
from edge_asc.cli import COMMANDS, main


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "tone.wav"
    t = np.arange(32000) / 16000
    sf.write(p, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    return p


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_features_prints_shape_and_stats(wav, capsys):
    assert main(["features", str(wav), "--preset", "edge"]) == 0
    out = capsys.readouterr().out
    assert "(1, 64, 124)" in out  # 2 s at 16 kHz: 1 + (32000 - 512) // 256 frames
    assert main(["features", str(wav), "--preset", "paper", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["shape"] == [3, 256, 77] and d["preset"] == "paper"  # 88,200 samples: 85 frames - 8 (deltas)
    # a 440 Hz tone: the log-mel maximum is far above the -100 dB floor
    assert d["channels"]["log_mel"]["max_db"] > 20


def test_features_png(wav, tmp_path):
    out = tmp_path / "spec.png"
    assert main(["features", str(wav), "--png", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    assert main(["features", str(tmp_path / "missing.wav")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err and "Traceback" not in err
    assert main(["features", str(tmp_path / "missing.wav"), "--preset", "bogus"]) == 1
    assert "choose one of ['edge', 'micro', 'paper']" in capsys.readouterr().err
    assert main(["features"]) == 2  # usage error: missing FILE
    assert main(["no-such-command"]) == 2


def test_console_entry_point_in_a_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_asc", "features", str(tmp_path / "x.wav")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("edge-asc: error:") and "Traceback" not in r.stderr
