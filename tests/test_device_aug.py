"""Device-robust augmentations: Freq-MixStyle on normalised batches and device impulse response (DIR) augmentation as a
per-mel-band gain on log-mel features, checked against convolving the waveform and running the front end."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

sf = require("soundfile")

from edge_asc.data.devices import DEVICES, dir_family, linear_impulse_response
from edge_asc.errors import ConfigError
from edge_asc.frontend import offline
from edge_asc.spec import PRESETS
from edge_asc.train.augment import (
    AugmentConfig,
    apply_dir,
    dir_gain_bank,
    freq_mixstyle,
    ir_band_gains_db,
    load_ir_folder,
)


# ---- Freq-MixStyle -----------------------------------------------------------------------------------------------
def _batch(seed=0, b=8, c=1, m=16, w=20):
    rng = np.random.default_rng(seed)
    # per-clip, per-band offsets and scales, like device colourations on top of content
    return (rng.normal(size=(b, c, m, w)) * rng.uniform(0.5, 2, size=(b, 1, m, 1))
            + rng.normal(scale=3, size=(b, 1, m, 1))).astype(np.float32)


def test_freq_mixstyle_p0_is_identity_and_draws_nothing():
    x = _batch()
    rng = np.random.default_rng(5)
    out = freq_mixstyle(x, 0.0, 0.3, rng)
    assert out is x
    assert rng.random() == np.random.default_rng(5).random()  # the stream is untouched


def test_freq_mixstyle_mixes_per_band_statistics_as_defined():
    x = _batch(b=8, c=3)
    out = freq_mixstyle(x, 1.0, 0.3, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.float32
    # the draws in the documented order: the apply-coin, lam per clip, the permutation
    rng = np.random.default_rng(1)
    rng.random()
    lam = rng.beta(0.3, 0.3, size=(8, 1, 1, 1))
    perm = rng.permutation(8)
    xd = x.astype(np.float64)
    mu, sd = xd.mean(axis=(1, 3), keepdims=True), xd.std(axis=(1, 3), keepdims=True)
    od = out.astype(np.float64)
    # each clip's per-band mean / std over channels and frames are the mixes of its own and its partner's
    np.testing.assert_allclose(od.mean(axis=(1, 3), keepdims=True), lam * mu + (1 - lam) * mu[perm], atol=1e-4)
    np.testing.assert_allclose(od.std(axis=(1, 3), keepdims=True), lam * sd + (1 - lam) * sd[perm], rtol=1e-3)
    # within a band the content keeps its shape: an affine map per (clip, band)
    for i in (0, 5):
        for f in (0, 7):
            a, b = xd[i, :, f].ravel(), od[i, :, f].ravel()
            assert np.corrcoef(a, b)[0, 1] > 0.9999
    assert not np.allclose(out, x)


def test_freq_mixstyle_is_identity_when_clips_share_their_statistics():
    one = _batch(b=1)
    x = np.repeat(one, 6, axis=0)
    out = freq_mixstyle(x, 1.0, 0.3, np.random.default_rng(2))
    np.testing.assert_allclose(out, x, atol=1e-4)


def test_freq_mixstyle_probability_per_batch():
    x = _batch(b=4)
    rng = np.random.default_rng(3)
    applied = sum(freq_mixstyle(x, 0.4, 0.3, rng) is not x for _ in range(400))
    assert 120 < applied < 200  # ~160 of 400


# ---- DIR: per-band gain vs convolution + front end -------------------------------------------------------------
@pytest.mark.parametrize("preset", ["edge", "paper"])
def test_dir_band_gain_matches_convolution_through_the_front_end(preset):
    """The tolerance the docs state: on broadband noise, per-band gain errors average <= 0.3 dB, and are <= 1.5 dB in
    every band within 30 dB of the IR's peak gain (the lowest bands, 40 dB down a steep high-pass, differ more:
    window leakage from their neighbours)."""
    spec = PRESETS[preset]
    sr = spec.sample_rate
    x = np.random.default_rng(0).standard_normal(int(1.5 * sr)) * 0.1
    fx = offline(x.astype(np.float32), spec)[0]
    for dev in (DEVICES["s4"], DEVICES["s6"], dir_family()[3]):
        ir = linear_impulse_response(dev, sr)
        d = len(ir) // 2  # the IR's delay: compare the same audio
        y = np.convolve(x, ir)[d:d + len(x)]
        meas = np.mean(offline(y.astype(np.float32), spec)[0] - fx, axis=1)
        g = ir_band_gains_db(ir, spec)
        err = np.abs(meas - g)
        assert err.mean() <= 0.3, (dev.name, err.mean())
        assert err[g > g.max() - 30].max() <= 1.5, (dev.name, err[g > g.max() - 30].max())
        # and it is a real colouration, not ~0 dB everywhere
        assert g.max() - g[g > g.max() - 30].min() > 5


def test_apply_dir_adds_a_bank_row_to_the_logmel_only():
    rng = np.random.default_rng(0)
    x = rng.uniform(-60, -20, size=(6, 3, 8, 5)).astype(np.float32)
    bank = rng.normal(scale=5, size=(4, 8)).astype(np.float32)
    out = apply_dir(x, bank, 1.0, np.random.default_rng(1), floor_db=-100.0)
    assert np.array_equal(out[:, 1:], x[:, 1:])  # deltas of a constant offset are unchanged
    for i in range(6):
        d = (out[i, 0] - x[i, 0])
        assert np.allclose(d, d[:, :1])  # constant over time
        assert any(np.allclose(d[:, 0], row, atol=1e-5) for row in bank)
    assert np.array_equal(apply_dir(x, bank, 0.0, np.random.default_rng(1), floor_db=-100.0), x)
    low = apply_dir(np.full((1, 1, 8, 2), -99.0, np.float32), np.full((1, 8), -20.0, np.float32), 1.0,
                    np.random.default_rng(0), floor_db=-100.0)
    assert np.all(low == -100.0)  # never below the front end's log floor


def test_dir_bank_from_the_synthetic_family_is_level_neutral():
    bank = dir_gain_bank(AugmentConfig(dir=0.5), PRESETS["edge"])
    assert bank.shape == (32, 64) and bank.dtype == np.float32
    np.testing.assert_allclose(bank.mean(axis=1), 0, atol=1e-4)
    assert dir_gain_bank(AugmentConfig(), PRESETS["edge"]) is None
    # none of the bank's rows is one of the unseen devices' colourations
    spec = PRESETS["edge"]
    for name in ("s4", "s5", "s6"):
        g = ir_band_gains_db(linear_impulse_response(DEVICES[name], 16_000), spec)
        g -= g.mean()
        assert np.min(np.abs(bank - g).mean(axis=1)) > 1.0


def test_dir_folder_reads_wavs_like_the_ir_itself(tmp_path):
    spec = PRESETS["edge"]
    irs = [linear_impulse_response(DEVICES[n], 16_000) for n in ("b", "s2")]
    for i, ir in enumerate(irs):
        sf.write(tmp_path / f"ir{i}.wav", (0.5 * ir / np.abs(ir).max()).astype(np.float32), 16_000,
                 subtype="FLOAT")
    bank = dir_gain_bank(AugmentConfig(dir=1.0, dir_folder=str(tmp_path)), spec)
    for row, ir in zip(bank, irs):
        g = ir_band_gains_db(ir, spec)
        np.testing.assert_allclose(row, g - g.mean(), atol=1e-3)


def test_bad_dir_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        load_ir_folder(str(tmp_path / "missing"), 16_000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no \.wav"):
        load_ir_folder(str(tmp_path / "empty"), 16_000)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(ConfigError, match=r"broken\.wav") as e:
        load_ir_folder(str(bad), 16_000)
    assert "\n" not in str(e.value)
    zero = tmp_path / "zero"
    zero.mkdir()
    sf.write(zero / "silent.wav", np.zeros(256, np.float32), 16_000)
    with pytest.raises(ConfigError, match=r"silent\.wav.*all zeros"):
        load_ir_folder(str(zero), 16_000)


def test_probabilities_are_validated():
    with pytest.raises(ConfigError, match="probability"):
        AugmentConfig(dir=1.5)
    with pytest.raises(ConfigError, match="probability"):
        AugmentConfig(freq_mixstyle=-0.1)
    d = AugmentConfig(freq_mixstyle=0.4, dir=0.5, dir_folder="/x").to_dict()
    assert AugmentConfig.from_dict(d) == AugmentConfig(freq_mixstyle=0.4, dir=0.5, dir_folder="/x")
    # off by default: the paper's recipe is unchanged
    assert AugmentConfig.for_window(64, 61).freq_mixstyle == 0 and AugmentConfig.for_window(64, 61).dir == 0
