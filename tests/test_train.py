"""Training recipe, feature cache, windows, checkpoints, evaluation metrics. A tiny generated dataset (tones per
class, three devices) keeps every run to seconds."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import require

torch = require("torch")
sf = require("soundfile")

from edge_asc.errors import ConfigError, DatasetError, ModelContractError
from edge_asc.frontend import normalize, offline, windows
from edge_asc.metrics import clip_posterior
from edge_asc.spec import PRESETS
from edge_asc.train.augment import AugmentConfig, crop, mixup, random_shift, spec_augment
from edge_asc.train.cache import build_cache
from edge_asc.train.checkpoint import load_checkpoint, read_meta
from edge_asc.train.evaluate import compute_report, evaluate_checkpoint, plot_confusion
from edge_asc.train.loop import TrainConfig, make_batch, sgdr_lr, train


@dataclass(frozen=True)
class Clip:
    path: str
    label: str
    device: str
    location: str
    split: str
    clip_id: str


@dataclass
class ToyDataset:
    root: Path
    labels: tuple
    clips: tuple

    def split(self, name):
        return [c for c in self.clips if c.split == name]


def make_toy(root: Path, labels=("low", "mid", "high"), per_device=4, seconds=1.0, sr=16_000) -> ToyDataset:
    """Each class a tone (300/600/900 Hz) in noise; devices a, b (train + evaluate) and s4 (evaluate only)."""
    rng = np.random.default_rng(7)
    clips = []
    t = np.arange(int(seconds * sr)) / sr
    for li, lab in enumerate(labels):
        for dev in ("a", "b", "s4"):
            for k in range(per_device):
                split = "train" if dev != "s4" and k < per_device - 1 else "evaluate"
                x = (0.3 * np.sin(2 * np.pi * 300 * (li + 1) * t + rng.uniform(0, 6))
                     + 0.05 * rng.standard_normal(len(t)))
                name = f"{lab}-{dev}-{k}.wav"
                root.mkdir(parents=True, exist_ok=True)
                sf.write(root / name, x.astype(np.float32), sr)
                clips.append(Clip(name, lab, dev, f"loc{k}", split, f"{lab}-{dev}-{k}"))
    return ToyDataset(root, tuple(labels), tuple(clips))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> ToyDataset:
    return make_toy(tmp_path_factory.mktemp("toy"))


QUIET = {"progress": False, "log": lambda s: None}
FAST = {"preset": "edge", "batch_size": 6, "lr_max": 0.05, "augment": AugmentConfig.off()}


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "two"
    return train(toy, out, TrainConfig(epochs=2, seed=3, **FAST), **QUIET)


# ---- schedule ----------------------------------------------------------------------------------------------------
def test_sgdr_restarts_after_10_30_70_150_310():
    assert sgdr_lr(0) == pytest.approx(0.1)
    assert sgdr_lr(5) == pytest.approx((0.1 + 1e-5) / 2)
    assert sgdr_lr(20) == pytest.approx((0.1 + 1e-5) / 2)  # middle of the 20-epoch second cycle
    for restart in (10, 30, 70, 150, 310):
        assert sgdr_lr(restart - 1e-9) == pytest.approx(1e-5, abs=1e-8)
        assert sgdr_lr(restart) == pytest.approx(0.1)
    assert all(sgdr_lr(a) > sgdr_lr(a + 0.5) for a in np.arange(0, 9.5, 0.5))


# ---- augmentations -----------------------------------------------------------------------------------------------
def test_augment_sizes_scale_with_the_preset():
    paper = AugmentConfig.for_window(256, 400)
    assert (paper.time_mask_max, paper.freq_mask_max, paper.time_masks, paper.freq_masks) == (80, 30, 1, 2)
    edge = AugmentConfig.for_window(64, 61)
    assert (edge.time_mask_max, edge.freq_mask_max) == (12, 8)
    assert paper.mixup_alpha == 0.3 and paper.random_crop and paper.specaugment


def test_crop_random_and_centre():
    x = np.arange(2 * 3 * 10, dtype=np.float32).reshape(2, 3, 10)
    assert np.array_equal(crop(x, 4, None), x[:, :, 3:7])
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(50):
        w = crop(x, 4, rng)
        s = int(w[0, 0, 0])
        assert np.array_equal(w, x[:, :, s:s + 4])
        starts.add(s)
    assert starts == set(range(7))
    assert np.array_equal(crop(x[:, :, :3], 7, None), np.concatenate([x[:, :, :3]] * 3, axis=2)[:, :, :7])


def test_random_shift_moves_content_with_edge_fill():
    x = np.arange(1 * 1 * 5 * 6, dtype=np.float32).reshape(1, 1, 5, 6)
    batch = np.repeat(x, 20, axis=0)
    out = random_shift(batch, 2, 1, np.random.default_rng(1))
    for o in out:
        # recover the shift from the first moving element and check every cell against the formula
        found = False
        for dt in range(-2, 3):
            for df in range(-1, 2):
                ti = np.clip(np.arange(6) - dt, 0, 5)
                fi = np.clip(np.arange(5) - df, 0, 4)
                if np.array_equal(o[0], x[0, 0][fi][:, ti]):
                    found = True
        assert found
    assert not all(np.array_equal(o, batch[0]) for o in out)
    assert np.array_equal(random_shift(batch, 0, 0, np.random.default_rng(1)), batch)


def test_spec_augment_masks_whole_rows_and_columns():
    cfg = AugmentConfig(time_mask_max=5, freq_mask_max=3, time_masks=1, freq_masks=2)
    x = np.random.default_rng(0).uniform(1, 2, size=(16, 2, 12, 20)).astype(np.float32)
    out = spec_augment(x, cfg, np.random.default_rng(2), value=0.0)
    assert np.array_equal(out[out != 0], x[out != 0])  # only masking, never other changes
    for o in out:
        zero = o == 0
        cols = np.where(zero.all(axis=(0, 1)))[0]
        rows = np.where(zero.all(axis=(0, 2)))[0]
        assert len(cols) <= 5 and len(rows) <= 6
        expected = np.isin(np.arange(20), cols)[None, None, :] | np.isin(np.arange(12), rows)[None, :, None]
        assert np.array_equal(zero, np.broadcast_to(expected, zero.shape))
    assert (out == 0).any()


def test_mixup_is_a_convex_pair_combination():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 4, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    xm, ym, lam = mixup(x, y, 0.3, np.random.default_rng(5))
    assert 0 <= lam <= 1
    np.testing.assert_allclose(ym.sum(axis=1), 1, rtol=1e-6)
    perm = np.random.default_rng(5)
    perm.beta(0.3, 0.3)
    p = perm.permutation(8)
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[p], rtol=1e-6)
    np.testing.assert_allclose(ym, lam * y + (1 - lam) * y[p], rtol=1e-6)


def test_make_batch_switches(toy, tmp_path):
    spec = PRESETS["edge"]
    train_clips = toy.split("train")
    store = build_cache([toy.root / c.path for c in train_clips], [c.clip_id for c in train_clips], spec, tmp_path)
    y = np.arange(len(store)) % 3
    idx = np.arange(6)
    mean, std = np.full((1, 1, 1, 1), -40.0, np.float32), np.full((1, 1, 1, 1), 20.0, np.float32)
    off = AugmentConfig.off()
    xb, tb = make_batch(store, idx, y, 3, 40, mean, std, off, np.random.default_rng(0))
    ref = np.stack([(store[i][:, :, 10:50] + 40.0) / 20.0 for i in idx])  # 61 frames -> centre 40 starts at 10
    np.testing.assert_allclose(xb, ref, rtol=1e-6)
    assert np.array_equal(tb, np.eye(3, dtype=np.float32)[y[idx]])
    # SpecAugment only: the off-batch with some cells set to 0
    xs, ts = make_batch(store, idx, y, 3, 40, mean, std, dataclasses.replace(off, specaugment=True,
                                                                           time_mask_max=8, freq_mask_max=8),
                        np.random.default_rng(0))
    changed = xs != xb
    assert changed.any() and np.all(xs[changed] == 0) and np.array_equal(ts, tb)
    # mixup only: soft targets summing to 1, not all one-hot
    _xm, tm = make_batch(store, idx, y, 3, 40, mean, std, dataclasses.replace(off, mixup_alpha=0.3),
                        np.random.default_rng(0))
    np.testing.assert_allclose(tm.sum(1), 1, rtol=1e-6)
    assert not np.array_equal(tm, tb)
    # random crop only: every sample is some 40-frame window of its clip
    xc, _ = make_batch(store, idx, y, 3, 40, mean, std, dataclasses.replace(off, random_crop=True),
                       np.random.default_rng(0))
    for k, i in enumerate(idx):
        full = (store[i] + 40.0) / 20.0
        assert any(np.allclose(xc[k], full[:, :, s:s + 40]) for s in range(22))
    assert not np.array_equal(xc, xb)


# ---- cache -------------------------------------------------------------------------------------------------------
def test_cache_equals_frontend_and_is_reused(toy, tmp_path):
    spec = PRESETS["edge"]
    clips = toy.split("evaluate")[:4]
    paths = [toy.root / c.path for c in clips]
    calls = []
    a = build_cache(paths, [c.clip_id for c in clips], spec, tmp_path, on_clip=lambda d, n: calls.append(d))
    b = build_cache(paths, [c.clip_id for c in clips], spec, tmp_path, on_clip=lambda d, n: calls.append(d))
    assert calls == [1, 2, 3, 4] and a.path == b.path and spec.feature_hash() in a.path.name
    for i, p in enumerate(paths):
        audio, _ = sf.read(p, dtype="float32")
        np.testing.assert_array_equal(b[i], offline(audio, spec))  # a small set: stored as exact float32
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(DatasetError):
        build_cache([], [], spec, tmp_path)


# ---- training ----------------------------------------------------------------------------------------------------
def test_two_epochs_decrease_loss_and_write_a_checkpoint(trained, toy):
    h = trained.history
    assert len(h) == 2 and h[1]["train_loss"] < h[0]["train_loss"]
    run = trained.run_dir
    for f in ("model.safetensors", "optimizer.safetensors", "checkpoint.json", "history.jsonl"):
        assert (run / f).is_file()
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    model, meta = load_checkpoint(run)
    assert not model.training and meta.epoch == 2 and meta.labels == toy.labels and meta.preset == "edge"
    assert meta.window_frames == 61 and meta.model_config.n_classes == 3
    # the stored normalisation is the training features' per-channel mean / std
    feats = np.concatenate([offline(sf.read(toy.root / c.path, dtype="float32")[0], PRESETS["edge"])
                            for c in toy.split("train")], axis=2)
    assert meta.frontend.norm_mean[0] == pytest.approx(float(feats.mean()), rel=1e-4)
    assert meta.frontend.norm_std[0] == pytest.approx(float(feats.std()), rel=1e-4)
    assert meta.frontend.feature_hash() == PRESETS["edge"].feature_hash()


def test_resume_equals_uninterrupted_and_seed_reproduces(toy, trained, tmp_path):
    from safetensors.torch import load_file

    cfg1 = TrainConfig(epochs=1, seed=3, **FAST)
    train(toy, tmp_path / "r", cfg1, **QUIET)
    res = train(toy, tmp_path / "r", dataclasses.replace(cfg1, epochs=2), resume=True, **QUIET)
    a = load_file(str(trained.run_dir / "model.safetensors"))
    b = load_file(str(tmp_path / "r" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res.meta.metrics["train_loss"] == trained.meta.metrics["train_loss"]
    assert res.meta.run_id == read_meta(tmp_path / "r").run_id
    # different seed -> different weights
    other = train(toy, tmp_path / "s", TrainConfig(epochs=1, seed=4, **FAST), **QUIET)
    c = load_file(str(other.run_dir / "model.safetensors"))
    assert not torch.equal(a["enc1.conv.conv.weight"], c["enc1.conv.conv.weight"])


def test_training_errors(toy, trained, tmp_path):
    empty = ToyDataset(toy.root, toy.labels, tuple(c for c in toy.clips if c.split != "train"))
    with pytest.raises(DatasetError, match="'train' split is empty"):
        train(empty, tmp_path / "e", TrainConfig(epochs=1, **FAST), **QUIET)
    with pytest.raises(ConfigError, match="--resume"):
        train(toy, trained.run_dir, TrainConfig(epochs=3, seed=3, **FAST), **QUIET)
    with pytest.raises(ModelContractError, match="nothing to resume"):
        train(toy, tmp_path / "none", TrainConfig(epochs=1, **FAST), resume=True, **QUIET)
    with pytest.raises(ConfigError, match="same settings"):
        train(toy, trained.run_dir, TrainConfig(epochs=3, seed=9, **FAST), resume=True, **QUIET)
    relabelled = ToyDataset(toy.root, ("low", "mid", "top"), toy.clips)
    with pytest.raises(DatasetError, match="labels"):
        train(relabelled, tmp_path / "l", TrainConfig(epochs=1, **FAST), **QUIET)


def test_corrupt_or_missing_checkpoint(trained, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained.run_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelContractError, match="corrupt"):
        load_checkpoint(bad)
    (bad / "checkpoint.json").write_text("{not json")
    with pytest.raises(ModelContractError, match="corrupt"):
        load_checkpoint(bad / "checkpoint.json")
    with pytest.raises(ModelContractError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere.json")
    with pytest.raises(ModelContractError, match=r"no checkpoint\.json"):
        load_checkpoint(tmp_path)


# ---- evaluation --------------------------------------------------------------------------------------------------
def test_report_metrics_by_hand():
    labels = ("x", "y")
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    y = np.array([0, 0, 1, 1])
    rep = compute_report(probs, y, labels, ["a", "a", "s4", "s4"])
    assert rep.overall.accuracy == 0.75 and rep.macro_accuracy == pytest.approx((1.0 + 0.5) / 2)
    assert rep.overall.log_loss == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.8, 0.3])))
    assert rep.confusion == ((2, 0), (1, 1))
    assert rep.per_device["a"].accuracy == 1.0 and rep.per_device["s4"].accuracy == 0.5
    assert rep.groups["seen"].n_clips == 2 and rep.groups["unseen"].macro_accuracy == 0.5
    assert json.loads(json.dumps(rep.to_dict()))["macro_accuracy"] == rep.macro_accuracy
    with pytest.raises(DatasetError):
        compute_report(np.zeros((0, 2)), np.zeros(0, int), labels, [])


def test_evaluate_reads_the_trained_checkpoint(trained, toy, tmp_path):
    rep = evaluate_checkpoint(str(trained.run_dir), toy, cache_dir=str(tmp_path))
    assert rep.overall.n_clips == len(toy.split("evaluate")) and set(rep.groups) == {"seen", "unseen"}
    assert sum(map(sum, rep.confusion)) == rep.overall.n_clips
    # the report agrees with a direct computation through the loaded model
    model, meta = load_checkpoint(trained.run_dir)
    c = toy.split("evaluate")[0]
    x = normalize(offline(sf.read(toy.root / c.path, dtype="float32")[0], meta.frontend), meta.frontend)
    with torch.no_grad():
        logits = model(torch.from_numpy(windows(x, meta.window_frames))).numpy()
    assert rep.confusion[toy.labels.index(c.label)][int(clip_posterior(logits).argmax())] >= 1
    plot_confusion(rep, str(tmp_path / "cm.png"))
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = ToyDataset(toy.root, ("low", "mid", "other"), toy.clips)
    with pytest.raises(DatasetError, match="do not match"):
        evaluate_checkpoint(str(trained.run_dir), other)
