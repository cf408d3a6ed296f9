"""Feature cache: every clip's front-end features computed once, stored as one memory-mapped float32 file.

Layout of a cache entry ``<cache_dir>/<spec.feature_hash()>-<clip-list hash>/``::

    features.f32   raw float32, the clips' un-normalised features back to back, each clip as [C, n_mels, T_i]
    index.json     clip ids, frame counts T_i and element offsets; written last (its presence = the entry is complete)

Keyed by :meth:`FrontendSpec.feature_hash` (normalisation excluded) and by the clip list (path, size, mtime), so a
changed front end or changed audio gives a new entry. numpy only (plus :mod:`edge_asc.audio` /
:mod:`edge_asc.frontend`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_path, atomic_write_text
from ..errors import AudioInputError, DatasetError
from ..spec import FrontendSpec

CACHE_VERSION = 1


@dataclass(frozen=True)
class FeatureStore:
    """Read-only view of a cache entry: ``store[i]`` is clip i's features float32[C, n_mels, T_i] (dB,
    memory-mapped)."""

    path: Path
    clip_ids: tuple[str, ...]
    frames: np.ndarray
    """int64[N]: frames per clip."""
    offsets: np.ndarray
    """int64[N + 1]: element offsets into the flat file."""
    channels: int
    n_mels: int
    data: np.ndarray
    """float32 flat memmap."""

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.data[a:b].reshape(self.channels, self.n_mels, int(self.frames[i]))

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation (dB) over every bin and frame of every clip (float64 sums)."""
        s = np.zeros(self.channels)
        s2 = np.zeros(self.channels)
        n = 0
        for i in range(len(self)):
            x = np.asarray(self[i], dtype=np.float64)
            s += x.sum(axis=(1, 2))
            s2 += (x * x).sum(axis=(1, 2))
            n += x.shape[1] * x.shape[2]
        if n == 0:
            raise DatasetError("no feature frames to compute normalisation statistics from: are the clips empty?")
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        std = np.where(std > 1e-6, std, 1.0)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _clip_list_hash(paths: Sequence[Path], clip_ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p, cid in zip(paths, clip_ids):
        try:
            st = p.stat()
        except OSError:
            raise DatasetError(f"audio file {str(p)!r} is missing: re-check the dataset folder") from None
        h.update(f"{cid}\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _open(entry: Path) -> FeatureStore:
    idx = json.loads((entry / "index.json").read_text())
    offsets = np.asarray(idx["offsets"], dtype=np.int64)
    total = int(offsets[-1])
    data = (np.memmap(entry / "features.f32", dtype=np.float32, mode="r", shape=(total,)) if total
            else np.zeros(0, np.float32))
    return FeatureStore(path=entry, clip_ids=tuple(idx["clip_ids"]), frames=np.asarray(idx["frames"], np.int64),
                        offsets=offsets, channels=int(idx["channels"]), n_mels=int(idx["n_mels"]), data=data)


def build_cache(paths: Sequence[str | os.PathLike], clip_ids: Sequence[str], spec: FrontendSpec,
                cache_dir: str | os.PathLike, *,
                on_clip: Callable[[int, int], None] | None = None) -> FeatureStore:
    """Compute (or reuse) the features of ``paths`` through :func:`edge_asc.frontend.offline`.

    Args:
        paths: audio files, in clip order.
        clip_ids: one id per path (stored, for checking).
        spec: front end; only its :meth:`~FrontendSpec.feature_hash` fields matter.
        cache_dir: parent folder of cache entries (created).
        on_clip: progress callback ``(done, total)`` while computing.

    Returns:
        The :class:`FeatureStore` (memory-mapped, read-only).

    Raises:
        DatasetError: no clips, or a missing file. AudioInputError: an unreadable clip or one shorter than a frame.
    """
    from ..audio import load_audio
    from ..frontend import offline

    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError("no clips to compute features for: the dataset split is empty")
    if len(paths) != len(clip_ids):
        raise ValueError("paths and clip_ids differ in length")
    entry = Path(cache_dir) / f"{spec.feature_hash()}-{_clip_list_hash(paths, clip_ids)}-v{CACHE_VERSION}"
    if (entry / "index.json").exists():
        return _open(entry)
    entry.mkdir(parents=True, exist_ok=True)
    frames: list[int] = []
    with atomic_path(entry / "features.f32") as tmp, open(tmp, "wb") as f:
        for i, p in enumerate(paths):
            audio, _ = load_audio(p, spec.sample_rate)
            x = offline(audio, spec)
            if x.shape[2] == 0:
                raise AudioInputError(f"clip {str(p)!r} is shorter than one feature frame "
                                      f"({spec.samples_for_frames(1)} samples at {spec.sample_rate} Hz)")
            f.write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
            frames.append(int(x.shape[2]))
            if on_clip is not None:
                on_clip(i + 1, len(paths))
    per = spec.channels * spec.n_mels
    offsets = np.concatenate([[0], np.cumsum(np.asarray(frames, dtype=np.int64) * per)])
    atomic_write_text(entry / "index.json", json.dumps({
        "version": CACHE_VERSION, "spec": spec.to_dict(), "clip_ids": list(clip_ids), "frames": frames,
        "offsets": offsets.tolist(), "channels": spec.channels, "n_mels": spec.n_mels}))
    return _open(entry)

