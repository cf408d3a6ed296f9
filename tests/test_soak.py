"""What the soak benchmark stands on: a file looped (`listen --loop N`) and paced faster than real time
(`--realtime --speed X`) loses no window, and `benchmarks/soak.py --json` itself runs (a short soak)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from edge_asc.audio import write_audio
from edge_asc.cli import main
from edge_asc.errors import ConfigError
from edge_asc.runtime import Classifier, hop_frames_for
from edge_asc.runtime.sources import FileSource

require("tensorflow")  # builds the tiny test model
from runtime_models import high, low, write_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("soak") / "tiny.tflite")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    p = tmp_path_factory.mktemp("soak_wav") / "clip.wav"
    write_audio(p, np.concatenate([low(1.5, 16_000), high(1.5, 16_000)]), 16_000)
    return str(p)


def expected_windows(model_path: str, n_samples: int, hop_s: float) -> int:
    card = Classifier(model_path).card
    frames = card.frontend.n_frames(n_samples)
    return (frames - card.window_frames) // hop_frames_for(card, hop_s) + 1


def test_looped_fast_paced_file_loses_no_window(model_path, clip, tmp_path, capsys):
    d, j = tmp_path / "d.db", tmp_path / "e.jsonl"
    t0 = time.monotonic()
    assert main(["listen", "--model", model_path, "--input", clip, "--realtime", "--speed", "10", "--loop", "4",
                 "--hop", "0.25", "--smooth", "1", "--plain", "--db", str(d), "--jsonl", str(j)]) == 0
    wall = time.monotonic() - t0
    assert wall < 6.0  # 12 s of audio at 10x
    assert "stopped (end_of_input) after 12.0 s of audio" in capsys.readouterr().err
    rows = sqlite3.connect(d).execute("SELECT stream_time_s, label FROM detections ORDER BY id").fetchall()
    assert len(rows) == expected_windows(model_path, 4 * 48_000, 0.25)
    assert np.allclose(np.diff([r[0] for r in rows]), 0.256, atol=1e-3)  # one stream, no gap at the loop seams
    changes = [json.loads(x) for x in j.read_text().splitlines() if '"scene_change"' in x]
    assert [c["label"] for c in changes] == ["low", "high", "low", "high", "low", "high", "low", "high"]
    assert 2.0 < changes[2]["start_s"] < 3.5  # the second pass starts at 3 s of stream time


def test_file_source_settings_are_checked(clip):
    with pytest.raises(ConfigError, match="speed"):
        FileSource(clip, realtime=True, speed=0)
    with pytest.raises(ConfigError, match="loops"):
        FileSource(clip, loops=-1)
    assert FileSource(clip, realtime=True, speed=100).block == 1024 * 4
    assert FileSource(clip, speed=100).block == 1024  # unpaced reads keep their block


def test_speed_and_loop_usage_errors(model_path, clip):
    assert main(["listen", "--model", model_path, "--input", clip, "--speed", "5"]) == 2  # needs --realtime
    assert main(["listen", "--model", model_path, "--input", clip, "--realtime", "--speed", "0"]) == 2
    assert main(["listen", "--model", model_path, "--loop", "3"]) == 2  # needs --input
    assert main(["listen", "--model", model_path, "--input", clip, "--loop", "-1"]) == 2


@pytest.mark.slow
def test_soak_benchmark_runs(model_path, tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--model", model_path, "--hours",
                        "0.05", "--speed", "20", "--json", str(out)], check=False, capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["goals"]["no_window_lost"] and res["goals"]["no_overflow"]
    assert res["goals"]["kill9_sqlite_ok"] and res["goals"]["kill9_jsonl_parses"]
    assert res["run"]["db_rows"] == res["run"]["windows_expected"] > 300 and res["run"]["rss_samples"] > 5
    assert res["run"]["cpu_per_audio_s"] > 0 and res["kill9"]["returncode"] == -9
    assert "h of audio in" in r.stdout and "kill -9 after" in r.stdout
