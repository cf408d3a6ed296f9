"""Audio input: read any WAV/FLAC/OGG, downmix, resample, validate. Device-safe (numpy, soundfile, soxr).

Every failure a user can cause raises :class:`~edge_asc.errors.AudioInputError` with a one-line message naming the
file, the problem and the fix. Suspicious but usable audio (clipping, shorter than a model window) warns with
:class:`AudioWarning`.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioInputError


class AudioWarning(UserWarning):
    """Audio is usable but suspicious (clipped, shorter than one model window)."""


@dataclass(frozen=True, kw_only=True)
class AudioInfo:
    """What a file said about itself before conversion."""

    path: str
    sample_rate: int
    """Hz, as stored."""
    channels: int
    frames: int
    """samples per channel, as stored."""
    subtype: str
    """e.g. PCM_16, PCM_24, FLOAT."""

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def to_mono(x: np.ndarray) -> np.ndarray:
    """``float[n]`` or ``float[n, channels]`` -> ``float32[n]`` (mean of the channels)."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise AudioInputError(f"audio must be 1-D or 2-D (samples, channels), got shape {x.shape}")
    return x.mean(axis=1, dtype=np.float64).astype(np.float32) if x.shape[1] > 1 else x[:, 0].astype(np.float32)


def to_float32(x: np.ndarray) -> np.ndarray:
    """Integer PCM (int16/int32/uint8) or float samples -> float32 in [-1, 1]."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype.kind == "i":
        return (x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)
    raise AudioInputError(f"unsupported sample dtype {x.dtype}: give int16/int32/uint8 PCM or float samples")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality resampling of mono float32 audio with soxr (``'HQ'``); returns float32."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    if sr_in <= 0 or sr_out <= 0:
        raise AudioInputError(f"sample rates must be positive, got {sr_in} -> {sr_out} Hz")
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


class StreamResampler:
    """Streaming resampler (soxr ``ResampleStream``) for a microphone whose native rate differs from the model's.

    ``process(block) -> float32[m]``; the output over many blocks equals one-shot resampling up to soxr's filter
    delay handling. ``flush()`` returns the tail at end of stream.
    """

    def __init__(self, sr_in: int, sr_out: int) -> None:
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._rs = None
        if self.sr_in != self.sr_out:
            import soxr

            self._rs = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ")

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        b = np.ascontiguousarray(np.asarray(block, dtype=np.float32).reshape(-1))
        if self._rs is None:
            return b
        return self._rs.resample_chunk(b, last=last)

    def flush(self) -> np.ndarray:
        return self.process(np.zeros(0, dtype=np.float32), last=True)


def check_samples(x: np.ndarray, *, source: str = "audio") -> np.ndarray:
    """Validate mono samples: non-empty and finite. Returns ``x`` as float32. Warns on clipping."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise AudioInputError(f"{source}: audio is empty (0 samples): record or pick a non-empty file")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - finite.sum())
        raise AudioInputError(
            f"{source}: {bad} of {x.size} samples are NaN or infinite: the file is damaged; re-export or re-record it"
        )
    peak = float(np.max(np.abs(x)))
    if peak >= 0.999:
        clipped = float(np.mean(np.abs(x) >= 0.999))
        if clipped > 1e-3:
            warnings.warn(
                f"{source}: {clipped:.2%} of samples are at full scale (clipping): lower the input gain",
                AudioWarning,
                stacklevel=2,
            )
    return x


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header of an audio file, or :class:`AudioInputError` if it is missing or unreadable."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p}: no such file: check the path")
    if p.is_dir():
        raise AudioInputError(f"{p}: is a directory, not an audio file")
    try:
        with sf.SoundFile(str(p)) as f:
            info = AudioInfo(path=str(p), sample_rate=int(f.samplerate), channels=int(f.channels),
                             frames=int(f.frames), subtype=str(f.subtype))
            log = f.extra_info
    except (sf.SoundFileError, OSError) as exc:  # LibsndfileError carries libsndfile's text
        raise AudioInputError(
            f"{p}: not a readable audio file ({_first_line(exc)}): use WAV, FLAC or OGG"
        ) from None
    # libsndfile silently shortens a WAV whose data chunk runs past the end of the file; its log says so.
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log, re.MULTILINE)
    if m and int(m.group(2)) < int(m.group(1)):
        align = re.search(r"Block Align\s*:\s*(\d+)", log)
        declared = int(m.group(1)) // max(1, int(align.group(1)) if align else 2 * info.channels)
        raise AudioInputError(
            f"{p}: file is truncated (header says {declared} samples, {info.frames} present): re-copy or re-export it"
        )
    return info


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    min_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC/OGG file as mono float32 in [-1, 1], resampled to ``sample_rate`` if given.

    Args:
        path: file path.
        sample_rate: target rate in Hz (soxr 'HQ' resampling), or None to keep the file's rate.
        min_seconds: warn (:class:`AudioWarning`) if the audio is shorter than this (e.g. one model window).

    Returns:
        (float32[n_samples], sample_rate_hz)

    Raises:
        AudioInputError: missing path, unreadable/corrupt/truncated file, zero-length audio, non-finite samples.
    """
    import soundfile as sf

    info = audio_info(path)
    if info.frames == 0:
        raise AudioInputError(f"{path}: contains no audio (0 samples): record or pick a non-empty file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as exc:
        raise AudioInputError(
            f"{path}: audio data is corrupt ({_first_line(exc)}): re-export or re-record it"
        ) from None
    if data.shape[0] == 0:
        raise AudioInputError(f"{path}: contains no audio (0 samples): record or pick a non-empty file")
    if data.shape[0] < info.frames:
        raise AudioInputError(
            f"{path}: file is truncated (header says {info.frames} samples, {data.shape[0]} present): "
            f"re-copy or re-export it"
        )
    x = check_samples(to_mono(data), source=str(path))
    if sample_rate is not None and sr != sample_rate:
        x = resample(x, sr, sample_rate)
        sr = sample_rate
    if min_seconds is not None and x.shape[0] < min_seconds * sr:
        warnings.warn(
            f"{path}: {x.shape[0] / sr:.3f} s of audio is shorter than one model window ({min_seconds:.3f} s): "
            f"results will be unreliable",
            AudioWarning,
            stacklevel=2,
        )
    return x, int(sr)


def write_audio(path: str | os.PathLike, x: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono float32 audio atomically (temp file + rename). ``subtype``: PCM_16, PCM_24, FLOAT..."""
    import soundfile as sf

    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), np.asarray(x, dtype=np.float32), int(sample_rate), subtype=subtype,
                 format=_format_for(p))
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def _format_for(p: Path) -> str:
    ext = p.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext, "WAV")


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    return s[0] if s else type(exc).__name__
