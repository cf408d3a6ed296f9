"""Knowledge distillation: the loss against a hand computation, W = 0 as plain training, the teacher ensemble's mean
in each teacher's own normalisation, refusals of incompatible teachers, and `edge-asc train --teacher` end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require

torch = require("torch")
require("soundfile")

from test_train import FAST as TRAIN_FAST
from test_train import QUIET, make_toy

from edge_asc.errors import ConfigError
from edge_asc.frontend import normalize
from edge_asc.train.augment import AugmentConfig
from edge_asc.train.checkpoint import load_checkpoint, read_meta
from edge_asc.train.distill import DistillConfig, TeacherEnsemble, kd_loss, teacher_refs
from edge_asc.train.loop import TrainConfig, train

FAST = dict(TRAIN_FAST, val_every=0)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kd_loss_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 4)) * 2, rng.normal(size=(5, 4)) * 3
    y = rng.dirichlet(np.ones(4), size=5)  # soft (mixed) targets
    T, W = 3.0, 0.3
    ce = -np.mean(np.sum(y * np.log(_softmax(s)), axis=1))
    pt, ps = _softmax(t / T), _softmax(s / T)
    kl = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    want = (1 - W) * ce + W * T * T * kl
    got = kd_loss(torch.tensor(s), torch.tensor(y), torch.tensor(t), T, W)
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert float(kd_loss(torch.tensor(s), torch.tensor(y), torch.tensor(t), T, 0.0)) == pytest.approx(ce, rel=1e-9)
    # the KL term vanishes when student and teacher agree
    assert float(kd_loss(torch.tensor(s), torch.tensor(y), torch.tensor(s), T, 1.0)) == pytest.approx(0, abs=1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Toy data; two teachers (seeds 1, 2), and a third trained on fewer clips (other normalisation statistics)."""
    root = tmp_path_factory.mktemp("kd")
    toy = make_toy(root / "data")
    cache = root / "cache"
    t1 = train(toy, root / "t1", TrainConfig(epochs=1, seed=1, **FAST), cache_dir=cache, **QUIET)
    t2 = train(toy, root / "t2", TrainConfig(epochs=1, seed=2, **FAST), cache_dir=cache, **QUIET)
    sub = dataclasses.replace(toy, clips=tuple(c for c in toy.clips if c.device != "b"))
    t3 = train(sub, root / "t3", TrainConfig(epochs=1, seed=3, **FAST), cache_dir=cache, **QUIET)
    return toy, root, cache, (t1, t2, t3)


def test_weight_zero_is_plain_training(runs):
    toy, root, cache, (t1, _, _) = runs
    aug = AugmentConfig.for_window(64, 61)  # mixup, masks, shifts on: the teacher must not disturb the draws
    base = dict(FAST, augment=aug)
    plain = train(toy, root / "plain", TrainConfig(epochs=1, seed=4, **base), cache_dir=cache, **QUIET)
    kd0 = train(toy, root / "kd0", TrainConfig(epochs=1, seed=4, **base,
                                                 distill=DistillConfig(teachers=teacher_refs([t1.run_dir]),
                                                                       weight=0.0)),
                cache_dir=cache, **QUIET)
    assert [h["train_loss"] for h in kd0.history] == [h["train_loss"] for h in plain.history]
    weights = [load_checkpoint(r.run_dir)[0].state_dict() for r in (plain, kd0)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    kd = train(toy, root / "kd5", TrainConfig(epochs=1, seed=4, **base,
                                               distill=DistillConfig(teachers=teacher_refs([t1.run_dir]),
                                                                     weight=0.5)),
               cache_dir=cache, **QUIET)
    assert kd.history[0]["train_loss"] != plain.history[0]["train_loss"]
    kd_w = load_checkpoint(kd.run_dir)[0].state_dict()
    assert not all(torch.equal(weights[0][k], kd_w[k]) for k in kd_w)


def test_ensemble_is_the_mean_of_teachers_in_their_own_normalisation(runs):
    _, _, _, (t1, t2, t3) = runs
    student = read_meta(t1.run_dir)  # the student trains on the same clips as t1, t2
    assert student.frontend.norm_mean != read_meta(t3.run_dir).frontend.norm_mean
    refs = teacher_refs([t1.run_dir, t2.run_dir, t3.run_dir])
    ens = TeacherEnsemble(DistillConfig(teachers=refs), student_spec=student.frontend, labels=student.labels,
                          window_frames=61)
    raw = np.random.default_rng(0).uniform(-80, -20, size=(4, 1, 64, 61)).astype(np.float32)
    x = normalize(raw, student.frontend)
    want = []
    for r in (t1, t2, t3):
        model, meta = load_checkpoint(r.run_dir)
        with torch.no_grad():
            want.append(model(torch.from_numpy(normalize(raw, meta.frontend).astype(np.float32))).numpy())
    got = ens.logits(x).numpy()
    np.testing.assert_allclose(got, np.mean(want, axis=0), atol=1e-4)
    assert not np.allclose(want[0], want[1], atol=1e-3)  # the mean is over different teachers


def test_a_teacher_with_other_features_scores_clips_in_its_own_and_mixes_like_the_batch(runs):
    from edge_asc.frontend.windows import windows
    from edge_asc.train.cache import build_cache
    from edge_asc.train.splits import resolve_split

    toy, root, cache, (t1, _, _) = runs
    spec = read_meta(t1.run_dir).frontend
    other = train(toy, root / "mels32", TrainConfig(epochs=1, seed=1, **dict(FAST, preset="edge:n_mels=32")),
                  cache_dir=cache, **QUIET)
    ens = TeacherEnsemble(DistillConfig(teachers=teacher_refs([t1.run_dir, other.run_dir])), student_spec=spec,
                          labels=toy.labels, window_frames=61)
    assert len(ens.models) == 1 and len(ens.clip_teachers) == 1  # t1: batch teacher; the 32-mel run: clip teacher
    split = resolve_split(toy, "train", toy.labels)
    x = np.zeros((3, 1, 64, 61), np.float32)
    with pytest.raises(ConfigError, match="clip logits"):
        ens.logits(x, np.arange(3))
    asked = []

    def features_for(s):
        asked.append(s.n_mels)
        return build_cache(split.paths, split.clip_ids, s, cache)

    ens.cache_clip_logits(features_for)
    assert asked == [32] and ens.clip_logits.shape == (len(split.paths), len(toy.labels))
    model, meta = load_checkpoint(other.run_dir)  # the definition: mean logits over the clip's own windows
    store = build_cache(split.paths, split.clip_ids, meta.frontend, cache)
    with torch.no_grad():
        z2 = model(torch.from_numpy(windows(normalize(store[2], meta.frontend), meta.window_frames))).mean(0).numpy()
    np.testing.assert_allclose(ens.clip_logits[2], z2, atol=1e-5)
    idx, perm, lam = np.array([2, 0, 5]), np.array([2, 0, 1]), 0.7
    with torch.no_grad():
        zb = load_checkpoint(t1.run_dir)[0](torch.from_numpy(x)).numpy()
    zc = ens.clip_logits[idx]
    want = (zb + lam * zc + (1 - lam) * zc[perm]) / 2
    np.testing.assert_allclose(ens.logits(x, idx, (lam, perm)).numpy(), want, atol=1e-5)
    # end to end, mixup on: the 64-mel student learns from the 32-mel teacher's clip logits
    base = dict(FAST, augment=AugmentConfig.for_window(64, 61))
    plain = train(toy, root / "plain-c", TrainConfig(epochs=1, seed=4, **base), cache_dir=cache, **QUIET)
    kd = train(toy, root / "kd-clip", TrainConfig(epochs=1, seed=4, **base, distill=DistillConfig(
        teachers=teacher_refs([other.run_dir]), weight=0.5)), cache_dir=cache, **QUIET)
    assert np.isfinite(kd.history[0]["train_loss"]) and kd.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_changed_or_incompatible_teachers_are_refused(runs):
    toy, _, _, (t1, _, _) = runs
    spec = read_meta(t1.run_dir).frontend
    with pytest.raises(ConfigError, match="labels"):
        TeacherEnsemble(DistillConfig(teachers=teacher_refs([t1.run_dir])), student_spec=spec,
                        labels=("x", "y", "z"), window_frames=61)
    ref = dataclasses.replace(teacher_refs([t1.run_dir])[0], weights_sha256="0" * 64)
    with pytest.raises(ConfigError, match="retrained or changed"):
        TeacherEnsemble(DistillConfig(teachers=(ref,)), student_spec=spec, labels=toy.labels, window_frames=61)
    with pytest.raises(ConfigError, match="kd weight"):
        DistillConfig(teachers=teacher_refs([t1.run_dir]), weight=1.5)


def test_train_cli_with_teacher_records_and_resumes(tmp_path, capsys):
    from edge_asc.cli import main
    from edge_asc.data import load_dataset
    from edge_asc.data.synth import synthesize

    data = synthesize(tmp_path / "data", clips_per_class=15, seconds=0.5, sample_rate=16_000, seed=0)
    common = ["--data", str(data), "--batch-size", "32", "--no-progress", "--val-every", "0",
              "--cache-dir", str(tmp_path / "cache")]
    teacher = train(load_dataset(data), tmp_path / "teacher", TrainConfig(epochs=1, preset="edge", batch_size=32,
                                                                           val_every=0),
                    cache_dir=tmp_path / "cache", **QUIET)
    student = ["train", "--preset", "micro", "--out", str(tmp_path / "student"), *common,
               "--teacher", str(teacher.run_dir), "--kd-temperature", "3", "--kd-weight", "0.7",
               "--freq-mixstyle", "0.4", "--dir", "0.5"]
    assert main([*student, "--epochs", "1"]) == 0
    meta = json.loads((tmp_path / "student" / "checkpoint.json").read_text())
    d = meta["train_config"]["distill"]
    assert d["temperature"] == 3 and d["weight"] == 0.7
    assert d["teachers"] == [{"path": str(Path(teacher.run_dir).resolve()), "run_id": teacher.meta.run_id,
                              "weights_sha256": teacher.meta.weights_sha256, "preset": "edge"}]
    assert meta["train_config"]["augment"]["freq_mixstyle"] == 0.4 and meta["train_config"]["augment"]["dir"] == 0.5
    assert main([*student, "--epochs", "2", "--resume"]) == 0
    assert json.loads((tmp_path / "student" / "checkpoint.json").read_text())["epoch"] == 2
    # resuming with another distillation setting is refused
    bad = [a if a != "0.7" else "0.2" for a in student]
    assert main([*bad, "--epochs", "3", "--resume"]) == 1
    assert "same settings" in capsys.readouterr().err
    assert main(["train", "--preset", "micro", "--out", str(tmp_path / "s2"), *common, "--epochs", "1",
                 "--dir-folder", str(tmp_path)]) == 2
