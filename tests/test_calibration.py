"""Calibration set: real training windows through the one front end, stratified, seeded, stored, hashed, checked."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from edge_asc.calibration import (
    ARRAY_FILE,
    MANIFEST_FILE,
    build_calibration,
    load_calibration,
    save_calibration,
)
from edge_asc.errors import ConfigError, DatasetError
from edge_asc.spec import PRESETS

SPEC = PRESETS["edge"].replace(norm_mean=(-45.0,), norm_std=(12.0,))
W = 61


@pytest.fixture(scope="module")
def ds(tiny_dataset):
    from edge_asc.data import load_dataset

    return load_dataset(tiny_dataset)


def test_windows_are_front_end_features_of_the_recorded_clips(ds):
    from edge_asc.audio import load_audio
    from edge_asc.calibration import clip_path
    from edge_asc.frontend import offline

    cs = build_calibration(ds, SPEC, 40, size=12, seed=3)
    assert cs.data.shape == (12, 64, 40, 1) and cs.data.dtype == np.float32
    by_id = {c.clip_id: c for c in ds.split("train")}
    for x, e in zip(cs.data, cs.manifest.entries):
        audio, _ = load_audio(clip_path(ds, by_id[e.clip_id]), SPEC.sample_rate)
        f = offline(audio, SPEC)  # un-normalised dB, NCHW
        assert 0 <= e.offset <= f.shape[2] - 40
        np.testing.assert_array_equal(x, f[:, :, e.offset:e.offset + 40].transpose(1, 2, 0))
        assert by_id[e.clip_id].label == e.label and by_id[e.clip_id].device == e.device
    # random offsets: not all windows start at 0
    assert len({e.offset for e in cs.manifest.entries}) > 1


def test_stratified_covers_every_class_device_group_evenly(ds):
    groups = {(c.label, c.device) for c in ds.split("train")}
    n = 2 * len(groups) + 3
    cs = build_calibration(ds, SPEC, W, size=n, seed=0)
    counts = collections.Counter((e.label, e.device) for e in cs.manifest.entries)
    assert set(counts) == groups
    assert max(counts.values()) - min(counts.values()) <= 1
    # random selection of the same size is (almost surely) not this balanced on this dataset
    rnd = build_calibration(ds, SPEC, W, size=n, seed=0, strategy="random")
    rc = collections.Counter((e.label, e.device) for e in rnd.manifest.entries)
    assert rnd.manifest.strategy == "random" and max(rc.values()) - min(rc.values(), default=0) >= 1


def test_seed_reproducible_and_more_windows_than_clips(ds):
    a = build_calibration(ds, SPEC, W, size=8, seed=5)
    b = build_calibration(ds, SPEC, W, size=8, seed=5)
    c = build_calibration(ds, SPEC, W, size=8, seed=6)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.manifest.sha256 == b.manifest.sha256 and a.manifest.array_sha256 != c.manifest.array_sha256
    n_train = len(ds.split("train"))
    big = build_calibration(ds, SPEC, W, size=n_train + 5, seed=0, strategy="random")
    ids = collections.Counter(e.clip_id for e in big.manifest.entries)
    assert len(ids) == n_train and sum(ids.values()) == n_train + 5


def test_save_load_round_trip_and_normalised_view(ds, tmp_path):
    cs = build_calibration(ds, SPEC, W, size=6, seed=1)
    out = save_calibration(cs, tmp_path / "calib")
    assert sorted(p.name for p in out.iterdir()) == [ARRAY_FILE, MANIFEST_FILE]
    back = load_calibration(out, spec=SPEC, window_frames=W)
    np.testing.assert_array_equal(back.data, cs.data)
    assert back.manifest.sha256 == cs.manifest.sha256
    m = json.loads((out / MANIFEST_FILE).read_text())
    assert m["layout"] == "NHWC" and m["shape"] == [6, 64, W, 1] and m["feature_hash"] == SPEC.feature_hash()
    assert len(m["entries"]) == 6 and {"clip_id", "offset", "label", "device"} <= set(m["entries"][0])
    x = back.normalized_nchw()
    np.testing.assert_allclose(x, (cs.data.transpose(0, 3, 1, 2) + 45.0) / 12.0, rtol=1e-6)
    # another normalisation of the same features is accepted (the converter applies the checkpoint's)
    load_calibration(out / MANIFEST_FILE, spec=SPEC.replace(norm_mean=(0.0,)), window_frames=W)


def test_bad_calibration_sets_are_refused(ds, tmp_path):
    cs = build_calibration(ds, SPEC, W, size=4, seed=1)
    out = save_calibration(cs, tmp_path / "c")
    with pytest.raises(ConfigError, match="another front end"):
        load_calibration(out, spec=SPEC.replace(n_mels=40), window_frames=W)
    with pytest.raises(ConfigError, match="61-frame windows, the model takes 100"):
        load_calibration(out, spec=SPEC, window_frames=100)
    with pytest.raises(DatasetError, match="not a calibration set"):
        load_calibration(tmp_path / "nothing")
    tampered = np.load(out / ARRAY_FILE)
    tampered[0, 0, 0, 0] += 1
    np.save(out / ARRAY_FILE, tampered)
    with pytest.raises(DatasetError, match="sha256"):
        load_calibration(out)
    (out / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        load_calibration(out)
    with pytest.raises(ConfigError, match="positive integer"):
        build_calibration(ds, SPEC, W, size=0)
    with pytest.raises(DatasetError, match="no clips"):
        build_calibration(ds, SPEC, W, size=3, labels=("no_such_scene", "other"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        save_calibration(cs, tmp_path / "file")


def _write_meta(run, spec=SPEC, labels=None):
    """A checkpoint.json (no weights: calibrate reads only the metadata)."""
    from edge_asc.data import load_dataset  # noqa: F401  (same labels as the dataset)
    from edge_asc.model import model_preset
    from edge_asc.spec import TAU_LABELS
    from edge_asc.train.checkpoint import CheckpointMeta

    cfg = model_preset("edge")
    meta = CheckpointMeta(model_config=cfg, frontend=spec, labels=labels or TAU_LABELS, window_frames=cfg.n_frames,
                          run_id="r1", preset="edge")
    run.mkdir(parents=True)
    (run / "checkpoint.json").write_text(json.dumps(meta.to_dict()))
    return run


def test_calibrate_command(tiny_dataset, tmp_path, capsys):
    from edge_asc.cli import main

    run = _write_meta(tmp_path / "run")
    rc = main(["calibrate", str(run), "--data", str(tiny_dataset), "--out", str(tmp_path / "cal"), "--size", "25",
               "--seed", "2", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["windows"] == 25 and summary["shape"] == [25, 64, 61, 1] and summary["strategy"] == "stratified"
    cs = load_calibration(tmp_path / "cal", spec=SPEC, window_frames=61)
    assert cs.manifest.sha256 == summary["manifest_sha256"] and cs.manifest.seed == 2
    assert main(["calibrate", str(run), "--data", str(tiny_dataset), "--out", str(tmp_path / "x"),
                 "--size", "0"]) == 2
    assert main(["calibrate", str(tmp_path / "missing"), "--data", str(tiny_dataset), "--out",
                 str(tmp_path / "y")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_relative_dataset_root(tiny_dataset, monkeypatch):
    from edge_asc.data import load_dataset

    monkeypatch.chdir(tiny_dataset.parent)
    cs = build_calibration(load_dataset(tiny_dataset.name), SPEC, W, size=3, seed=0)
    assert cs.data.shape == (3, 64, W, 1) and np.all(np.isfinite(cs.data))
