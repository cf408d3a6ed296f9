"""`edge-asc listen` without hardware: a fake sounddevice driven from a thread with real timing, injected overflows,
a device that disappears mid-stream, PortAudio missing, device selection errors, signals, and abrupt stops."""

from __future__ import annotations

import importlib.abc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import fake_sounddevice
import numpy as np
import pytest
from conftest import require

from edge_asc.audio import write_audio
from edge_asc.cli import main
from edge_asc.errors import DeviceError
from edge_asc.frontend import RingBuffer
from edge_asc.runtime import Classifier, StreamPipeline
from edge_asc.runtime.engine import run_listen
from edge_asc.runtime.sinks import JsonlSink, SqliteSink
from edge_asc.runtime.sources import MicSource, import_sounddevice, resolve_device

require("tensorflow")
from runtime_models import high, low, write_model

NATIVE = 44_100


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("listen") / "tiny.tflite")


def use_fake(monkeypatch, world):
    sd = fake_sounddevice.make_module(world)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd


class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---- the main scenario ----------------------------------------------------------------------------------------
def test_mic_stream_with_overflows_and_device_loss_recovers(monkeypatch, model_path, tmp_path):
    """44.1 kHz USB mic (resampled to 16 kHz), 4 overflow-flagged callbacks, the device vanishes at 1.5 s and the
    first re-open fails; listen must count, warn, retry with back-off, resume, and log everything."""
    audio = np.concatenate([low(2.5, NATIVE), high(2.5, NATIVE)])
    world = fake_sounddevice.World(audio, NATIVE, blocksize=1024, overflow_callbacks=range(10, 14), fail_at_s=1.5,
                                   reopen_failures=1)
    sd = use_fake(monkeypatch, world)
    clf = Classifier(model_path)
    source = MicSource("usb", sd=sd, stall_seconds=1.0)
    assert source.device.index == 1 and source.sample_rate == NATIVE
    pipe = StreamPipeline(clf, input_rate=source.sample_rate, hop_seconds=0.25, smooth=3)
    j, d = tmp_path / "ev.jsonl", tmp_path / "det.db"
    sinks = [JsonlSink(j, model_sha256=clf.model_sha256), SqliteSink(d, model_sha256=clf.model_sha256)]
    t0 = time.monotonic()
    summary = run_listen(pipe, source, sinks, duration_s=4.9, backoff_s=(0.05, 0.2), warn_every_s=0.0)
    wall = time.monotonic() - t0
    assert 4.0 < wall < 8.0  # real timing: the fake delivers audio at its sample rate
    assert summary.input_overflows == 4
    assert summary.device_losses == 1 and world.open_failures == 1 and world.opens == 2
    assert summary.stopped_by == "duration" and summary.final_label == "high"
    assert threading.get_ident() not in world.callback_threads  # the callback ran on the stream's thread

    recs = jsonl(j)
    kinds = [r["type"] for r in recs]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert "overflow" in kinds and kinds.index("device_lost") < kinds.index("device_resumed")
    changes = [r for r in recs if r["type"] == "scene_change"]
    assert [c["label"] for c in changes] == ["low", "high"]
    assert changes[0]["start_s"] == 0.0 and 1.5 <= changes[1]["start_s"] <= 4.0  # a 1.5-s window is half high
    assert all(r["model_sha256"] == clf.model_sha256 for r in recs)
    ov = next(r for r in recs if r["type"] == "overflow")
    assert ov["input_overflows"] >= 1 and "keeping the newest audio" in ov["message"]
    lost = next(r for r in recs if r["type"] == "device_lost")
    assert "USB PnP Sound Device" in lost["message"] and "\n" not in lost["message"]
    resumed = next(r for r in recs if r["type"] == "device_resumed")
    assert resumed["attempts"] == 2 and resumed["outage_s"] > 0.1

    db = sqlite3.connect(d)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT stream_time_s, label, confidence, top3, latency_ms, model_sha256, scene_change "
                      "FROM detections ORDER BY id").fetchall()
    assert len(rows) == summary.windows >= 8
    assert rows[0][1] == "low" and rows[-1][1] == "high"
    assert sum(r[6] for r in rows) == 2
    assert all(r[5] == clf.model_sha256 and r[4] > 0 and 0 < r[2] <= 1 for r in rows)
    assert json.loads(rows[0][3])[0][0] == "low"
    times = [r[0] for r in rows]
    assert times == sorted(times)  # stream time keeps increasing across the outage


def test_callback_only_copies_and_counts():
    world = fake_sounddevice.World(np.zeros(10), NATIVE)
    src = MicSource(None, sd=fake_sounddevice.make_module(world))
    ring = RingBuffer(4096)
    src._ring = ring
    block = np.arange(512, dtype=np.float32).reshape(-1, 1)
    src._callback(block, 512, None, fake_sounddevice._Flags(True))
    src._callback(block, 512, None, fake_sounddevice._Flags(False))
    assert src.overflows == 1 and src.callbacks == 2 and len(ring) == 1024
    np.testing.assert_array_equal(ring.read(512), block[:, 0])


def test_stalled_stream_is_a_lost_device():
    world = fake_sounddevice.World(np.zeros(10), NATIVE)
    src = MicSource(None, sd=fake_sounddevice.make_module(world), stall_seconds=0.0)
    src.start(RingBuffer(4096))
    world.streams[-1]._halt.set()  # the stream thread stops delivering
    time.sleep(0.05)
    from edge_asc.runtime.sources import DeviceLost

    with pytest.raises(DeviceLost, match="delivered no audio"):
        src.check()
        time.sleep(0.01)
        src.check()
    src.close()


# ---- device selection and missing PortAudio -------------------------------------------------------------------
def test_device_selection_by_default_index_and_name():
    sd = fake_sounddevice.make_module(fake_sounddevice.World(np.zeros(1), NATIVE))
    assert resolve_device(sd, None).index == 1  # the system default input
    assert resolve_device(sd, 2).name == "pulse"
    assert resolve_device(sd, "2").name == "pulse"
    assert resolve_device(sd, "USB pnp").index == 1


@pytest.mark.parametrize("device, match", [
    ("Blue Yeti", "no input device matches 'Blue Yeti'"),
    ("0", "index 0 does not exist or has no input"),  # an output-only device
    ("7", "index 7 does not exist"),
])
def test_wrong_device_lists_available_inputs(device, match):
    sd = fake_sounddevice.make_module(fake_sounddevice.World(np.zeros(1), NATIVE))
    with pytest.raises(DeviceError, match=match) as e:
        resolve_device(sd, device)
    assert "[1] USB PnP Sound Device: Audio (hw:1,0) (1 ch, 44100 Hz)" in str(e.value)
    assert "[2] pulse" in str(e.value) and "bcm2835" not in str(e.value)


def test_no_input_device_at_all(monkeypatch, model_path, capsys):
    world = fake_sounddevice.World(np.zeros(1), NATIVE, devices=[
        {"name": "HDMI", "index": 0, "max_input_channels": 0, "default_samplerate": 48000.0}], default=(-1, 0))
    use_fake(monkeypatch, world)
    assert main(["listen", "--model", model_path]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no audio input device found: plug in a USB microphone" in err[0]


def test_wrong_device_name_via_cli(monkeypatch, model_path, capsys):
    use_fake(monkeypatch, fake_sounddevice.World(np.zeros(1), NATIVE))
    assert main(["listen", "--model", model_path, "--device", "nonexistent"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "available inputs: [1] USB PnP" in err[0]


def test_portaudio_missing_is_one_line_with_the_apt_command(monkeypatch, model_path, capsys):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError, match=r"apt-get install libportaudio2"):
        import_sounddevice()
    import edge_asc.runtime  # noqa: F401  - the runtime itself still imports
    for argv in (["listen", "--model", model_path], ["listen", "--list-devices"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "sudo apt-get install libportaudio2" in err[0]


def test_list_devices(monkeypatch, capsys):
    use_fake(monkeypatch, fake_sounddevice.World(np.zeros(1), NATIVE))
    assert main(["listen", "--list-devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["[1] USB PnP Sound Device: Audio (hw:1,0) (1 ch, 44100 Hz)", "[2] pulse (32 ch, 44100 Hz)"]


def test_cli_listen_from_fake_mic_for_a_duration(monkeypatch, model_path, tmp_path, capsys):
    use_fake(monkeypatch, fake_sounddevice.World(low(3.0, NATIVE), NATIVE, blocksize=2048))
    j = tmp_path / "e.jsonl"
    assert main(["listen", "--model", model_path, "--device", "1", "--duration", "1.2", "--jsonl", str(j),
                 "--plain"]) == 0
    out, err = capsys.readouterr()
    assert "low" in out and "stopped (duration)" in err
    recs = jsonl(j)
    assert [r["type"] for r in recs] == ["start", "scene_change", "stop"]
    assert recs[0]["sample_rate"] == NATIVE and recs[0]["model_rate"] == 16_000


def test_usage_errors(model_path, capsys):
    assert main(["listen", "--model", model_path, "--realtime"]) == 2
    assert main(["listen", "--model", model_path, "--duration", "0", "--input", "x.wav"]) == 2
    assert main(["listen", "--model", model_path, "--hop", "-1", "--input", "x.wav"]) == 2
    assert main(["listen", "--input", "x.wav"]) == 2


# ---- file input, realtime pacing, signals and abrupt stops ----------------------------------------------------
@pytest.fixture(scope="module")
def scene_wav(tmp_path_factory):
    p = tmp_path_factory.mktemp("wav") / "scene.wav"
    write_audio(p, np.concatenate([low(2.0, NATIVE), high(2.0, NATIVE)]), NATIVE)
    return str(p)


def test_listen_input_file_matches_classify(model_path, scene_wav, tmp_path, capsys):
    d = tmp_path / "d.db"
    assert main(["listen", "--model", model_path, "--input", scene_wav, "--db", str(d), "--hop", "0.5",
                 "--smooth", "1"]) == 0
    assert "stopped (end_of_input) after 4.0 s" in capsys.readouterr().err
    rows = sqlite3.connect(d).execute("SELECT stream_time_s, label FROM detections ORDER BY id").fetchall()
    assert main(["classify", scene_wav, "--model", model_path, "--hop", "0.5", "--json"]) == 0
    windows = json.loads(capsys.readouterr().out)["files"][0]["windows"]
    # Same windows, same start times (the smoothed label lags the raw one, so compare times only).
    assert [round(r[0], 3) for r in rows] == [round(w["start_s"], 3) for w in windows]
    assert rows[0][1] == "low" and rows[-1][1] == "high"


def _listen_subprocess(model_path, wav, tmp_path):
    j, d = tmp_path / "s.jsonl", tmp_path / "s.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "edge_asc", "listen", "--model", model_path, "--input", wav,
                          "--realtime", "--hop", "0.25", "--jsonl", str(j), "--db", str(d), "--plain"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the writer is mid-stream
        if d.exists():
            try:
                if sqlite3.connect(d).execute("SELECT count(*) FROM detections").fetchone()[0] >= 3:
                    break
            except sqlite3.Error:
                pass
        time.sleep(0.1)
    else:
        p.kill()
        pytest.fail("listen subprocess wrote no detections")
    return p, j, d


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_flushes(model_path, scene_wav, tmp_path, sig):
    p, j, d = _listen_subprocess(model_path, scene_wav, tmp_path)
    p.send_signal(sig)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "stopped (signal)" in err and "Traceback" not in err
    recs = jsonl(j)
    assert recs[-1]["type"] == "stop" and recs[-1]["stopped_by"] == "signal"
    db = sqlite3.connect(d)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM detections").fetchone()[0] == recs[-1]["windows"]


def test_kill_9_leaves_sinks_consistent(model_path, scene_wav, tmp_path):
    p, j, d = _listen_subprocess(model_path, scene_wav, tmp_path)
    time.sleep(0.3)
    p.kill()  # SIGKILL: no handler, no flush, no close
    p.communicate(timeout=20)
    assert p.returncode == -signal.SIGKILL
    recs = jsonl(j)  # every line is complete JSON
    assert recs[0]["type"] == "start" and recs[1]["type"] == "scene_change" and recs[-1]["type"] != "stop"
    db = sqlite3.connect(d)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT label, confidence, top3 FROM detections").fetchall()
    assert len(rows) >= 3 and all(r[0] in ("low", "high", "silence") and json.loads(r[2]) for r in rows)


# ---- terminal view --------------------------------------------------------------------------------------------
def _window_result():
    from edge_asc.runtime.pipeline import WindowResult

    return WindowResult(start_s=1.0, probs=np.array([.8, .1, .1], np.float32),
                        smoothed=np.array([.7, .2, .1], np.float32), label="low", confidence=.7,
                        top3=(("low", .7), ("high", .2), ("silence", .1)), latency_s=0.0012)


@pytest.mark.parametrize("rich", [False, True])
def test_terminal_view_shows_scene_bars_latency_and_overflows(rich, capsys):
    import io

    from edge_asc.runtime.sinks import TerminalView
    from edge_asc.runtime.tracker import SceneChange

    if rich:
        require("rich")
    buf = io.StringIO()
    tv = TerminalView(("low", "high", "silence"), stream=buf, rich=rich, source="microphone X",
                      status=lambda: {"overflows": 3})
    r = _window_result()
    tv.window(r)
    tv.change(SceneChange(start_s=0.0, label="low", confidence=0.7, top3=r.top3))
    tv.event("overflow", "edge-asc: warning: input overflow")
    tv.close()
    out = buf.getvalue()
    if rich:
        assert "█" * 21 in out and "high" in out and "overflows 3" in out and "1.20 ms" in out
    else:
        assert len(out.splitlines()) == 1 and "low" in out and "[low 0.70, high 0.20, silence 0.10]" in out
        assert "latency 1.20 ms" in out and "overflows 3" in out
        assert "input overflow" in capsys.readouterr().err
