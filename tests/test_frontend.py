"""The numpy front end equals librosa (center=False) to 1e-4 dB, offline and streaming, for presets and random specs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_asc.errors import AudioInputError
from edge_asc.frontend import StreamingFrontend, delta_coefficients, mel_filterbank, offline
from edge_asc.spec import PRESETS, FrontendSpec

librosa = require("librosa")

TOL_DB = 1e-4


def librosa_reference(audio: np.ndarray, s: FrontendSpec) -> np.ndarray:
    """librosa's log-mel (+ deltas with 'valid' edges) with the spec's parameters; float64 input."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Empty filters detected" for some random specs: both sides give the floor
        S = librosa.feature.melspectrogram(
            y=audio.astype(np.float64), sr=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length,
            win_length=s.win_length, window=s.window, center=False, power=s.power, n_mels=s.n_mels,
            fmin=s.fmin, fmax=s.fmax_hz, htk=s.mel_htk, norm=s.mel_norm,
        )
    L = librosa.power_to_db(S, ref=1.0, amin=s.amin, top_db=None)
    if not s.deltas:
        return L[None]
    p = s.delta_pad
    if L.shape[1] <= 2 * p:
        return np.zeros((3, s.n_mels, 0))
    d1 = librosa.feature.delta(L, width=s.delta_width, order=1)
    d2 = librosa.feature.delta(L, width=s.delta_width, order=2)
    return np.stack([L, d1, d2])[:, :, p:-p]


def stream(audio: np.ndarray, s: FrontendSpec, sizes) -> np.ndarray:
    fe = StreamingFrontend(s)
    outs, pos, i = [], 0, 0
    while pos < audio.shape[0]:
        b = int(sizes[i % len(sizes)])
        outs.append(fe.push(audio[pos : pos + b]))
        pos += b
        i += 1
    return np.concatenate(outs, axis=-1) if outs else np.zeros((s.channels, s.n_mels, 0), np.float32)




def _audio(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Noise + tone + a near-silent stretch (exercises the dB floor and a large dynamic range)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 997.0 * t)
    x[: n // 5] *= 1e-5
    return x.astype(np.float32)




@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_offline_and_streaming_match_librosa(preset):
    s = PRESETS[preset]
    audio = _audio(3.0, s.sample_rate, seed=1)
    ref = librosa_reference(audio, s)
    off = offline(audio, s)
    assert off.shape == ref.shape == (s.channels, s.n_mels, s.n_frames(audio.shape[0]))
    assert off.dtype == np.float32
    assert np.max(np.abs(off - ref)) < TOL_DB
    got = stream(audio, s, sizes=[1, 7, 1024, 333, 5000, 2])
    np.testing.assert_array_equal(got, off)


def test_paper_preset_frame_count_for_a_10_s_clip():
    s = PRESETS["paper"]
    # 441,000 samples, n_fft 2048, hop 1024 -> 429 STFT frames (center=False), minus 2*4 for 'valid' deltas.
    assert s.n_frames(441_000) == 421
    assert s.channels == 3
    assert PRESETS["edge"].n_frames(16_000) == 61


specs = st.builds(
    lambda sr, nfft_pow, win_frac, hop_frac, n_mels, fmin_frac, fmax_frac, htk, norm, deltas, width, window, power:
    FrontendSpec(
        sample_rate=sr, n_fft=2**nfft_pow, win_length=max(1, int(2**nfft_pow * win_frac)),
        hop_length=max(1, int(2**nfft_pow * hop_frac)), n_mels=n_mels, fmin=fmin_frac * sr / 2,
        fmax=fmin_frac * sr / 2 + fmax_frac * (sr / 2 - fmin_frac * sr / 2), mel_htk=htk, mel_norm=norm,
        deltas=deltas, delta_width=width, window=window, power=power,
    ),
    sr=st.sampled_from([8000, 16000, 22050, 32000, 44100, 48000]),
    nfft_pow=st.integers(7, 11),
    win_frac=st.sampled_from([1.0, 0.75, 0.5]),
    hop_frac=st.sampled_from([0.125, 0.25, 0.5, 1.0]),
    n_mels=st.integers(4, 96),
    fmin_frac=st.sampled_from([0.0, 0.01, 0.05]),
    fmax_frac=st.sampled_from([1.0, 0.9, 0.6]),
    htk=st.booleans(),
    norm=st.sampled_from(["slaney", None]),
    deltas=st.sampled_from([0, 2]),
    width=st.sampled_from([3, 5, 9]),
    window=st.sampled_from(["hann", "hamming"]),
    power=st.sampled_from([1.0, 2.0]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, seed=st.integers(0, 2**31 - 1), blocks=st.lists(st.integers(1, 4000), min_size=1, max_size=8))
def test_random_specs_match_librosa_offline_and_streaming(spec, seed, blocks):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, int(0.6 * spec.sample_rate)))
    audio = (rng.uniform(0.0, 0.5) * rng.standard_normal(n)).astype(np.float32)
    off = offline(audio, spec)
    assert off.shape == (spec.channels, spec.n_mels, spec.n_frames(n))
    if off.shape[-1]:
        ref = librosa_reference(audio, spec)
        assert ref.shape == off.shape
        assert np.max(np.abs(off - ref)) < TOL_DB
    np.testing.assert_array_equal(stream(audio, spec, blocks), off)


@settings(max_examples=30, deadline=None)
@given(blocks=st.lists(st.integers(0, 3000), min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_streaming_is_block_size_invariant(blocks, seed):
    s = PRESETS["paper"].replace(sample_rate=16000, n_fft=256, win_length=256, hop_length=64, n_mels=20)
    audio = _audio(0.8, s.sample_rate, seed)
    fe = StreamingFrontend(s, chunk_frames=3)
    outs, pos = [], 0
    for b in blocks:
        outs.append(fe.push(audio[pos : pos + b]))
        pos += b
    outs.append(fe.push(audio[pos:]))
    np.testing.assert_array_equal(np.concatenate(outs, -1), offline(audio, s))
    assert fe.frames_emitted == s.n_frames(audio.shape[0])


def test_one_sample_blocks_and_a_minutes_long_block_use_a_fixed_buffer():
    s = PRESETS["edge"]
    audio = _audio(0.3, s.sample_rate, 3)
    fe = StreamingFrontend(s)
    one = np.concatenate([fe.push(audio[i : i + 1]) for i in range(audio.shape[0])], -1)
    np.testing.assert_array_equal(one, offline(audio, s))
    fe2 = StreamingFrontend(s)
    cap = fe2._buf.shape[0]
    long = _audio(180.0, s.sample_rate, 4)
    out = fe2.push(long)
    assert out.shape[-1] == s.n_frames(long.shape[0])
    assert fe2._buf.shape[0] == cap  # preallocated; a 3-minute block does not grow it


def test_reset_forgets_buffered_samples_and_delta_history():
    s = PRESETS["paper"]
    a = _audio(1.0, s.sample_rate, 5)
    fe = StreamingFrontend(s)
    fe.push(a[:30_000])
    fe.reset()
    np.testing.assert_array_equal(fe.push(a), offline(a, s))
    assert fe.frames_emitted == s.n_frames(a.shape[0])


def test_streaming_latency_matches_delta_lookahead():
    s = PRESETS["paper"]
    fe = StreamingFrontend(s)
    # first output frame needs n_fft + 2*pad hops of samples (4 frames of look-ahead and 4 of history)
    need = s.samples_for_frames(1)
    assert fe.push(np.zeros(need - 1, np.float32)).shape[-1] == 0
    assert fe.push(np.zeros(1, np.float32)).shape[-1] == 1


@pytest.mark.parametrize(
    "block, rate, match",
    [
        (np.zeros((10, 2), np.float32), None, r"shape \(10, 2\)"),
        (np.zeros(10, np.int16), None, "dtype int16"),
        (np.array([0.0, np.nan], np.float32), None, "NaN"),
        (np.zeros(10, np.float32), 44100, "44100 Hz differs from the front end's 16000 Hz"),
    ],
)
def test_streaming_rejects_bad_blocks_with_a_message_naming_the_values(block, rate, match):
    fe = StreamingFrontend(PRESETS["edge"])
    fe.push(np.zeros(100, np.float32))
    with pytest.raises(AudioInputError, match=match):
        fe.push(block, sample_rate=rate)
    assert fe.samples_pushed == 100  # state unchanged by a rejected block


def test_offline_short_clip_gives_zero_frames_and_rejects_nan():
    s = PRESETS["edge"]
    assert offline(np.zeros(100, np.float32), s).shape == (1, 64, 0)
    with pytest.raises(AudioInputError, match="NaN or infinite"):
        offline(np.full(1000, np.inf, np.float32), s)


def test_delta_coefficients_are_savitzky_golay():
    k = np.arange(-4, 5)
    np.testing.assert_allclose(delta_coefficients(9, 1), k / 60.0, atol=1e-12)
    # second derivative of a quadratic is exact: taps applied to k^2 give 2
    assert delta_coefficients(9, 2) @ (k.astype(float) ** 2) == pytest.approx(2.0)
    assert delta_coefficients(9, 2).sum() == pytest.approx(0.0, abs=1e-12)


def test_mel_filterbank_matches_librosa():
    for s in PRESETS.values():
        ref = librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax_hz,
                                  htk=s.mel_htk, norm=s.mel_norm, dtype=np.float64)
        np.testing.assert_allclose(mel_filterbank(s), ref, rtol=1e-10, atol=1e-14)
