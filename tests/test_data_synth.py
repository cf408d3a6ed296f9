"""Synthetic TAU-layout generator: exact layout, splits/devices, determinism (hashes), seed sensitivity, device
simulation, and the synth + check round trip through the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_asc.cli import main
from edge_asc.data import SEEN_DEVICES, TAU_DEVICES, UNSEEN_DEVICES, load_dataset
from edge_asc.data.devices import DEVICES, DeviceChain, compress, device_response_db
from edge_asc.data.synth import RECIPES, draw_location, plan, render_scene, synthesize
from edge_asc.errors import DatasetError
from edge_asc.spec import TAU_LABELS

TAU2020_NAME = re.compile(r"^audio/([a-z_]+)-([a-z]+)-(\d+)-(\d+)-(a|b|c|s[1-6])\.wav$")


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines(), delimiter="\t"))


def test_tiny_dataset_has_the_exact_tau2020_layout(tiny_dataset):
    root = Path(tiny_dataset)
    meta = _rows(root / "meta.csv")
    assert meta[0] == ["filename", "scene_label", "identifier", "source_label"]
    assert _rows(root / "evaluation_setup/fold1_train.csv")[0] == ["filename", "scene_label"]
    assert _rows(root / "evaluation_setup/fold1_evaluate.csv")[0] == ["filename", "scene_label"]
    test = _rows(root / "evaluation_setup/fold1_test.csv")
    assert test[0] == ["filename"]
    for name, label, ident, dev in meta[1:]:
        m = TAU2020_NAME.match(name)
        assert m, name
        assert m.group(1) == label and f"{m.group(2)}-{m.group(3)}" == ident and m.group(5) == dev
    files = {p.relative_to(root).as_posix() for p in (root / "audio").iterdir()}
    assert files == {r[0] for r in meta[1:]}
    ev = [r[0] for r in _rows(root / "evaluation_setup/fold1_evaluate.csv")[1:]]
    assert [r[0] for r in test[1:]] == ev
    info = sf.info(str(root / meta[1][0]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")


def test_tiny_dataset_splits_devices_and_locations(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert ds.layout == "tau2020" and ds.labels == TAU_LABELS and len(ds.clips) == 200
    train, ev = ds.split("train"), ds.split("evaluate")
    assert {c.device for c in train} == set(SEEN_DEVICES)
    assert {c.device for c in ev} == set(TAU_DEVICES)
    table = ds.counts("evaluate")
    assert all(v == 1 for row in table.counts for v in row)  # one clip per class per device
    assert all(n >= 1 for row in ds.counts("train").counts for n, d in zip(row, table.devices) if d in SEEN_DEVICES)
    assert not {c.location for c in train} & {c.location for c in ev}
    assert len({c.clip_id for c in ds.clips}) == len(ds.clips)


def test_clips_are_valid_and_not_trivial(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    levels = []
    for c in ds.clips[::7]:
        x, sr = sf.read(str(c.path), dtype="float32")
        assert sr == 16000 and np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 0.99
        levels.append(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))
    assert min(levels) > -60 and max(levels) < -10
    assert np.std(levels) > 2.0  # levels vary per clip / location / device


def test_same_arguments_give_byte_identical_files_and_seeds_differ(tmp_path):
    kw = {"clips_per_class": 15, "seconds": 0.5, "sample_rate": 16_000}
    a = _hashes(synthesize(tmp_path / "a", seed=3, **kw))
    b = _hashes(synthesize(tmp_path / "b", seed=3, **kw))
    c = _hashes(synthesize(tmp_path / "c", seed=4, **kw))
    assert a == b and len(a) == 150 + 5
    assert a["meta.csv"] == c["meta.csv"]  # the plan does not depend on the seed ...
    audio = [k for k in a if k.startswith("audio/")]
    assert all(a[k] != c[k] for k in audio)  # ... but every clip does
    # replacing an earlier synth folder gives the same bytes again
    assert _hashes(synthesize(tmp_path / "c", seed=3, **kw)) == a


def test_clip_audio_does_not_depend_on_dataset_size(tmp_path):
    small = synthesize(tmp_path / "s", clips_per_class=15, seconds=0.25, seed=1)
    big = synthesize(tmp_path / "b", clips_per_class=16, seconds=0.25, seed=1)
    name = "audio/" + min(p.name for p in (small / "audio").iterdir())
    assert (small / name).read_bytes() == (big / name).read_bytes()


def test_plan_allocation():
    p = plan(100)
    assert len(p) == 1000
    for lab in TAU_LABELS:
        ev = [c for c in p if c.label == lab and c.split == "evaluate"]
        tr = [c for c in p if c.label == lab and c.split == "train"]
        assert [sum(c.device == d for c in ev) for d in TAU_DEVICES] == [4] * 9
        assert len(tr) == 64 and {c.device for c in tr} == set(SEEN_DEVICES)
    assert len({c.filename for c in p}) == 1000
    with pytest.raises(DatasetError, match=">= 15"):
        plan(14)


@pytest.mark.parametrize("kw,match", [
    ({"clips_per_class": 5}, "clips_per_class"), ({"seconds": 0.01}, "seconds"), ({"sample_rate": 4000}, "sample_rate"),
    ({"seed": -1}, "seed"), ({"eval_fraction": 0.95}, "eval_fraction"),
])
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(DatasetError, match=match):
        synthesize(tmp_path / "x", **{"clips_per_class": 15, **kw})


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty and was not made by 'edge-asc data synth'"):
        synthesize(tmp_path, clips_per_class=15)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("sr", [8000, 44_100])
def test_every_recipe_renders_at_other_rates(sr):
    for i, label in enumerate(TAU_LABELS):
        rng = np.random.default_rng(i)
        x = render_scene(label, draw_location(label, rng), sr // 4, sr, rng)
        assert x.shape == (sr // 4,) and np.all(np.isfinite(x))
        assert -40 < 10 * np.log10(np.mean(x**2)) < -14
    assert set(RECIPES) == set(TAU_LABELS)


def _band_db(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1 / sr)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].mean())


def test_devices_band_limits_and_unseen_devices_are_harsher():
    f = np.array([50.0, 1000.0, 7200.0])
    a = device_response_db(DEVICES["a"], f)
    assert np.all(np.abs(a) < 2.0)  # the reference is nearly flat
    for d in ("b", "c", "s2", "s4", "s6"):
        assert device_response_db(DEVICES[d], f)[0] < -10  # phone-like high-pass
    for d in ("c", "s3", "s4", "s5"):
        assert device_response_db(DEVICES[d], f)[2] < -5  # low-pass below 7.2 kHz
    seen_lp = min(DEVICES[d].lp_hz or 1e9 for d in SEEN_DEVICES)
    assert DEVICES["s5"].lp_hz < seen_lp and DEVICES["s4"].lp_hz < seen_lp  # narrower than anything seen
    assert max(DEVICES[d].noise_db for d in SEEN_DEVICES) < min(DEVICES[d].noise_db for d in UNSEEN_DEVICES) + 3


def test_device_chain_colours_the_same_input_differently():
    sr, n = 16_000, 16_000
    x = 0.05 * np.random.default_rng(0).standard_normal(n)  # white, -26 dBFS: every band excited
    out = {d: DeviceChain(DEVICES[d], n, sr)(x, np.random.default_rng(1)) for d in TAU_DEVICES}
    lows = {d: _band_db(y, sr, 30, 90) for d, y in out.items()}
    highs = {d: _band_db(y, sr, 6500, 7500) for d, y in out.items()}
    assert lows["a"] - lows["s4"] > 15  # s4 high-passes at 260 Hz
    assert highs["a"] - highs["s5"] > 15  # s5 low-passes at 4.8 kHz
    assert np.corrcoef(out["a"], x)[0, 1] > 0.95  # the reference barely changes the scene
    again = DeviceChain(DEVICES["s6"], n, sr)(x, np.random.default_rng(1))
    assert np.array_equal(again, out["s6"])


def test_compressor_reduces_loud_parts_only():
    sr = 16_000
    x = np.r_[0.5 * np.ones(8000), 0.005 * np.ones(8000)] * np.sin(np.arange(16000) * 0.3)
    y = compress(x, sr, threshold_db=-30, ratio=4.0)
    loud_gain = np.sqrt(np.mean(y[2000:6000] ** 2) / np.mean(x[2000:6000] ** 2))
    quiet_gain = np.sqrt(np.mean(y[12000:] ** 2) / np.mean(x[12000:] ** 2))
    assert 20 * np.log10(loud_gain) == pytest.approx(-(1 - 1 / 4) * (20 * np.log10(0.5 / np.sqrt(2)) + 30), abs=1.0)
    assert quiet_gain == pytest.approx(1.0, abs=0.02)


def test_cli_synth_then_check_round_trip(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synth", "--out", str(out), "--clips-per-class", "15", "--seconds", "0.5",
                 "--sample-rate", "8000", "--seed", "7"]) == 0
    assert "wrote 150 clips" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["seed"] == 7
    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"tau2020 dataset at {out}: 150 clips (60 train, 90 evaluate, 90 test), 10 labels, "
                           f"9 devices")
    assert "8000 Hz x150; 0.50-0.50 s per clip" in text
    lines = text.rstrip().splitlines()
    assert lines[-12].split() == ["label", "A", "B", "C", "S1", "S2", "S3", "S4", "S5", "S6", "total"]
    assert lines[-1].split() == ["total", "20", "20", "20", "20", "20", "20", "10", "10", "10", "150"]
    # a second synth into the same folder replaces it; usage errors are exit 2 with one line
    assert main(["data", "synth", "--out", str(out), "--clips-per-class", "15", "--seconds", "0.5",
                 "--sample-rate", "8000", "--seed", "7"]) == 0
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(out), "--clips-per-class", "3"]) == 2
    assert main(["data", "synth", "--out", str(out), "--seconds", "0"]) == 2
    assert main(["data", "synth", "--out", str(out), "--sample-rate", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("edge-asc: error:") == 3 and "Traceback" not in err
