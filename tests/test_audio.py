"""Audio input: every format and channel layout in, mono float32 out; every bad file a one-line AudioInputError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from edge_asc.audio import AudioWarning, StreamResampler, load_audio, resample, to_float32, write_audio
from edge_asc.errors import AudioInputError


def _tone(sr=16000, seconds=0.5, amp=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = amp * np.sin(2 * np.pi * 440 * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else x


@pytest.mark.parametrize(
    "ext, subtype, tol",
    [("wav", "PCM_16", 1 / 32768), ("wav", "PCM_24", 1e-6), ("wav", "PCM_32", 1e-7), ("wav", "FLOAT", 1e-7),
     ("flac", "PCM_16", 1 / 32768), ("ogg", "VORBIS", None)],
)
def test_reads_formats_as_float32_in_range(tmp_path, ext, subtype, tol):
    x = _tone()
    p = tmp_path / f"a.{ext}"
    sf.write(p, x, 16000, subtype=subtype)
    y, sr = load_audio(p)
    assert sr == 16000 and y.dtype == np.float32 and y.ndim == 1
    if tol is None:  # lossy: compare energy
        assert abs(np.sqrt(np.mean(y**2)) - np.sqrt(np.mean(x**2))) < 0.02
    else:
        np.testing.assert_allclose(y, x, atol=tol * 1.01)


def test_downmixes_channels_and_resamples(tmp_path):
    x = _tone(sr=44100, seconds=1.0, channels=4)
    p = tmp_path / "multi.wav"
    sf.write(p, x, 44100, subtype="FLOAT")
    y, sr = load_audio(p, 16000)
    assert sr == 16000 and y.shape == (16000,)
    ref = resample(x.mean(axis=1).astype(np.float32), 44100, 16000)
    np.testing.assert_allclose(y, ref, atol=1e-6)
    # soxr HQ keeps a 440 Hz tone's amplitude (mean of channel gains 0.25..1.0 = 0.625 * 0.5)
    assert np.max(np.abs(y[2000:-2000])) == pytest.approx(0.3125, rel=0.01)


def test_stream_resampler_matches_one_shot(rng):
    x = rng.standard_normal(48000).astype(np.float32) * 0.1
    rs = StreamResampler(48000, 16000)
    parts = [rs.process(x[i : i + 1000]) for i in range(0, x.size, 1000)] + [rs.flush()]
    y = np.concatenate(parts)
    ref = resample(x, 48000, 16000)
    assert abs(y.size - ref.size) <= 2
    n = min(y.size, ref.size)
    np.testing.assert_allclose(y[100 : n - 100], ref[100 : n - 100], atol=2e-3)


def test_to_float32_scales_integer_pcm():
    np.testing.assert_allclose(to_float32(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5])
    np.testing.assert_allclose(to_float32(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128])


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(AudioInputError, match=r"no such file: check the path"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioInputError, match="is a directory"):
        load_audio(tmp_path)


def test_corrupt_file(tmp_path):
    p = tmp_path / "junk.wav"
    p.write_bytes(b"RIFF" + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)))
    with pytest.raises(AudioInputError, match=r"not a readable audio file.*use WAV, FLAC or OGG"):
        load_audio(p)


def test_truncated_wav(tmp_path):
    p = tmp_path / "cut.wav"
    sf.write(p, _tone(seconds=1.0), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match=r"truncated \(header says 16000 samples"):
        load_audio(p)


def test_zero_length(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0), 16000, subtype="PCM_16")
    with pytest.raises(AudioInputError, match=r"contains no audio \(0 samples\)"):
        load_audio(p)


def test_non_finite_samples(tmp_path):
    x = _tone().astype(np.float32)
    x[10] = np.nan
    x[20] = np.inf
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="2 of 8000 samples are NaN or infinite"):
        load_audio(p)


def test_warns_on_clipping_and_short_audio(tmp_path):
    x = np.clip(_tone(amp=3.0), -1, 1)
    p = tmp_path / "clip.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.warns(AudioWarning, match="clipping"):
        load_audio(p)
    q = tmp_path / "short.wav"
    sf.write(q, _tone(seconds=0.25), 16000)
    with pytest.warns(AudioWarning, match="shorter than one model window"):
        load_audio(q, min_seconds=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(q, min_seconds=0.2)  # long enough: no warning


def test_write_audio_is_atomic_and_round_trips(tmp_path):
    p = tmp_path / "out.flac"
    write_audio(p, _tone().astype(np.float32), 16000)
    y, _ = load_audio(p)
    assert y.shape == (8000,)
    assert [f.name for f in tmp_path.iterdir()] == ["out.flac"]  # no temp file left behind


def test_truncated_flac_is_reported_as_corrupt(tmp_path):
    p = tmp_path / "cut.flac"
    sf.write(p, np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match=r"audio data is corrupt.*re-export or re-record"):
        load_audio(p)
