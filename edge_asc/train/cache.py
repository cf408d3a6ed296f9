"""Feature cache: every clip's front-end features computed once, in parallel, stored as memory-mapped float16 (large
datasets) or float32 (small ones).

Sized for TAU Urban Acoustic Scenes 2020 Mobile (16,935 clips of 10 s at 44.1 kHz: about 11 GB of ``paper``
features at float16, twice that at float32) and larger. The dtype is ``build_cache``'s choice (``auto``: float16
once the audio totals 1 GiB, float32 below, so a small set's features, and the runs trained on them, stay exact).
Layout of a cache entry ``<cache_dir>/<spec.feature_hash()>-<clip-list hash>-v2-<dtype>/``::

    build.json            how the entry is cut into chunks (written first, never changed)
    chunks/NNNNNN.f16     raw features (.f16 or .f32) of clips [k*K, (k+1)*K), each clip as [C, n_mels, T_i]
    journal.jsonl         one line per finished chunk: its index, byte count, frame counts, per-clip feature sums
    index.json            clip ids, frame counts, chunk layout; written last: its presence = the entry is complete

**Why it survives interruption.** A chunk is computed into a temporary file, renamed into ``chunks/`` when whole,
and only then journaled (one appended, fsynced line). An interrupted build (Ctrl-C, SIGKILL, power loss) leaves
finished chunks and at worst one unjournaled chunk or a torn journal line; the next :func:`build_cache` call keeps
every journaled chunk whose file has the journaled size, recomputes the rest, and writes ``index.json`` only when
every chunk is there. A store is opened only from ``index.json``, so a half-built entry is never served.

**Why it is deterministic.** Chunk boundaries depend on the clip count only (never on the worker count), each chunk
is computed by one process in clip order, and the front end is pure numpy without threaded reductions, so the
files are bit-identical for any ``workers``.

**Why memory stays bounded.** A worker holds one clip (its audio and features) at a time and streams each clip's
bytes to its chunk file; the parent keeps at most ``2 * workers`` chunks in flight and never touches
feature data. The store is a memory map: reading a clip pages in only that clip.

**Why float16 is enough.** Features are dB values (log-mel >= 10*log10(amin) = -100 dB, and far below float16's
65504 at the top) and their deltas. float16 keeps 11 significant bits, so rounding changes a value by at most
2^-11 of its magnitude: <= 0.031 dB for |x| in [64, 128) dB, <= 0.016 dB in [32, 64), less for the deltas. That is
about 0.002 standard deviations after the per-channel normalisation (std ~ 15 dB), far below the quantisation
of the 16-bit audio itself and the training augmentation. The normalisation statistics themselves come from sums
the workers take of the exact float32 features, so they are bit-identical to those of a float32 cache.
``store[i]`` returns float32 (float16 values widened exactly), whatever the entry's dtype. It does change what a
model trains on, by less than the augmentation does: hence float32 for small sets, whose runs are compared bit for
bit with earlier ones (the demo, the README).

Keyed by :meth:`FrontendSpec.feature_hash` (normalisation excluded) and by the clip list (path, size, mtime), so a
changed front end or changed audio gives a new entry. numpy only (plus :mod:`edge_asc.audio` /
:mod:`edge_asc.frontend`); worker processes are started with ``spawn`` (safe beside torch's threads, the same on
Linux and macOS), so a script that builds a cache with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import append_jsonl, atomic_path, atomic_write_text
from ..errors import AudioInputError, ConfigError, DatasetError, EdgeAscError
from ..spec import FrontendSpec

CACHE_VERSION = 2
"""2: chunked float16 files with a completion journal (1: one float32 file)."""
DTYPES = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}
"""dtypes of the feature files; :meth:`FeatureStore.__getitem__` widens to float32."""
FLOAT16_AUDIO_BYTES = 2**30
"""``dtype='auto'`` stores float16 when the clips' audio files total at least this (TAU 2020 Mobile: 22 GB), float32
below: small sets keep their exact features (and results trained on them), large ones halve the disk."""
MAX_CHUNK_CLIPS = 32
"""clips per chunk file for large datasets (about 21 MB of ``paper`` features for 10-s clips)."""
SMALL_DATASET_BYTES = 32 * 2**20
"""audio files smaller than this in total are processed in-process when ``workers`` is not given."""
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def default_workers() -> int:
    """``min(usable CPUs, 8)``: feature extraction is CPU-bound and each worker holds one clip at a time."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def chunk_clips_for(n_clips: int) -> int:
    """Clips per chunk for a dataset of ``n_clips``: up to 64 chunks for small sets (so several workers have work),
    :data:`MAX_CHUNK_CLIPS` for large ones. Depends on the clip count only, so the layout is the same whatever the
    worker count."""
    return max(1, min(MAX_CHUNK_CLIPS, -(-n_clips // 64)))


@dataclass(frozen=True)
class FeatureStore:
    """Read-only view of a cache entry: ``store[i]`` is clip i's features float32[C, n_mels, T_i] (dB), read from
    the float16 or float32 memory map (see the module docstring for float16's rounding bound)."""

    path: Path
    clip_ids: tuple[str, ...]
    frames: np.ndarray
    """int64[N]: frames per clip."""
    channels: int
    n_mels: int
    chunk_clips: int
    """clips per chunk file (the last chunk may hold fewer)."""
    chunks: tuple[np.ndarray, ...] = field(repr=False)
    """flat memmap (the entry's dtype) of each chunk file."""
    starts: np.ndarray = field(repr=False)
    """int64[N]: element offset of each clip inside its chunk."""
    sums: np.ndarray = field(repr=False)
    """float64[N, C]: per clip and channel, the sum of the exact (float32) features over bins and frames."""
    sums_sq: np.ndarray = field(repr=False)
    """float64[N, C]: the same for the squared features."""

    def __len__(self) -> int:
        return len(self.clip_ids)

    def raw(self, i: int) -> np.ndarray:
        """Clip i's stored features, float16 or float32 [C, n_mels, T_i], a read-only view of the memory map."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"clip index {i} out of range for a store of {len(self)} clips")
        t = int(self.frames[i])
        a = int(self.starts[i])
        return self.chunks[i // self.chunk_clips][a:a + self.channels * self.n_mels * t].reshape(
            self.channels, self.n_mels, t)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.raw(i).astype(np.float32)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation (dB) over every bin and frame of every clip (float64 sums).

        Computed from the per-clip sums the build took of the exact float32 features, accumulated clip by clip as
        the float32 cache (version 1) did: the statistics are those of the unrounded features, bit for bit, so
        float16 storage does not move the normalisation and a run's ``--resume`` check still holds."""
        s = np.zeros(self.channels)
        s2 = np.zeros(self.channels)
        n = 0
        for i in range(len(self)):
            s += self.sums[i]
            s2 += self.sums_sq[i]
            n += self.n_mels * int(self.frames[i])
        if n == 0:
            raise DatasetError("no feature frames to compute normalisation statistics from: are the clips empty?")
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        std = np.where(std > 1e-6, std, 1.0)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _clip_list_hash(paths: Sequence[Path], clip_ids: Sequence[str]) -> tuple[str, int]:
    """(hash of the clip ids, paths, sizes and mtimes; total bytes of the audio files)."""
    h = hashlib.sha256()
    total = 0
    for p, cid in zip(paths, clip_ids):
        try:
            st = p.stat()
        except OSError:
            raise DatasetError(f"audio file {str(p)!r} is missing: re-check the dataset folder") from None
        h.update(f"{cid}\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        total += st.st_size
    return h.hexdigest()[:16], total


def _chunk_path(entry: Path, k: int, dtype: str) -> Path:
    return entry / "chunks" / f"{k:06d}.f{DTYPES[dtype].itemsize * 8}"


def _open(entry: Path) -> FeatureStore:
    idx = json.loads((entry / "index.json").read_text())
    frames = np.asarray(idx["frames"], dtype=np.int64)
    c, m, k_clips = int(idx["channels"]), int(idx["n_mels"]), int(idx["chunk_clips"])
    dtype = idx["dtype"]
    per = c * m
    starts = np.zeros(len(frames), dtype=np.int64)
    chunks = []
    for k, a in enumerate(range(0, len(frames), k_clips)):
        sizes = frames[a:a + k_clips] * per
        starts[a:a + k_clips] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        path = _chunk_path(entry, k, dtype)
        want = int(sizes.sum()) * DTYPES[dtype].itemsize
        if not path.is_file() or path.stat().st_size != want:
            raise DatasetError(f"feature cache {str(entry)!r} is damaged (chunk {k} missing or of the wrong size): "
                               "delete that folder and run again")
        chunks.append(np.memmap(path, dtype=DTYPES[dtype], mode="r", shape=(int(sizes.sum()),)))
    return FeatureStore(path=entry, clip_ids=tuple(idx["clip_ids"]), frames=frames, channels=c, n_mels=m,
                        chunk_clips=k_clips, chunks=tuple(chunks), starts=starts,
                        sums=np.asarray(idx["sums"], dtype=np.float64).reshape(len(frames), c),
                        sums_sq=np.asarray(idx["sums_sq"], dtype=np.float64).reshape(len(frames), c))


def _journaled(entry: Path, per_clip_elems: int, dtype: str) -> dict[int, dict]:
    """Chunks finished by earlier (possibly interrupted) builds: ``{k: record}`` (the record of
    :func:`_compute_chunk`) for every journal line whose chunk file exists with the journaled size. A torn last line
    (a kill during the append) is dropped and the journal rewritten without it, so later appends start on a fresh
    line."""
    journal = entry / "journal.jsonl"
    if not journal.exists():
        return {}
    text = journal.read_text(encoding="utf-8", errors="replace")
    done: dict[int, dict] = {}
    good_lines = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            k, frames, nbytes = int(rec["chunk"]), [int(t) for t in rec["frames"]], int(rec["bytes"])
            if not len(frames) == len(rec["sums"]) == len(rec["sums_sq"]):
                raise ValueError("inconsistent record")
        except (ValueError, KeyError, TypeError):
            continue
        good_lines.append(line)
        p = _chunk_path(entry, k, dtype)
        want = sum(frames) * per_clip_elems * DTYPES[dtype].itemsize
        if nbytes == want and p.is_file() and p.stat().st_size == nbytes:
            done[k] = rec
    if (text and not text.endswith("\n")) or len(good_lines) != len(text.splitlines()):
        atomic_write_text(journal, "".join(f"{line}\n" for line in good_lines))
    return done


def _compute_chunk(entry: str, k: int, paths: Sequence[str], spec: FrontendSpec, dtype: str,
                   on_clip: Callable[[], None] | None = None) -> dict:
    """Compute chunk ``k`` (the features of ``paths``, in order), write it atomically, then journal it.

    Runs in a worker process (top-level, so ``spawn`` can pickle it) or in-process for ``workers=1``. Holds one
    clip at a time. Returns the journal record: ``bytes``, and per clip ``frames`` and the per-channel ``sums`` and
    ``sums_sq`` of the exact features (float64, for :meth:`FeatureStore.channel_stats`).
    """
    from ..audio import load_audio
    from ..frontend import offline

    e = Path(entry)
    frames: list[int] = []
    sums: list[list[float]] = []
    sums_sq: list[list[float]] = []
    with atomic_path(_chunk_path(e, k, dtype)) as tmp, open(tmp, "wb") as f:
        for p in paths:
            audio, _ = load_audio(p, spec.sample_rate)
            x = offline(audio, spec)
            del audio
            if x.shape[2] == 0:
                raise AudioInputError(f"clip {str(p)!r} is shorter than one feature frame "
                                      f"({spec.samples_for_frames(1)} samples at {spec.sample_rate} Hz)")
            if float(np.max(np.abs(x))) > _FLOAT16_MAX:  # dB features never come near; guard against a bad spec
                raise ConfigError(f"clip {str(p)!r} has features beyond float16's range (|x| > {_FLOAT16_MAX:g}): "
                                  "the front end does not produce dB values")
            f.write(np.ascontiguousarray(x, dtype=DTYPES[dtype]).tobytes())
            frames.append(int(x.shape[2]))
            x64 = np.asarray(x, dtype=np.float64)
            sums.append(x64.sum(axis=(1, 2)).tolist())
            sums_sq.append((x64 * x64).sum(axis=(1, 2)).tolist())
            del x, x64
            if on_clip is not None:
                on_clip()
        f.flush()
        os.fsync(f.fileno())
        nbytes = f.tell()
    rec = {"chunk": k, "bytes": nbytes, "frames": frames, "sums": sums, "sums_sq": sums_sq}
    append_jsonl(e / "journal.jsonl", rec)  # JSON floats round-trip exactly (repr)
    return rec


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes are started (from the main thread only, where Python allows it)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (and stops the pool), so a worker
    # finishes or loses its current chunk quietly instead of printing a traceback per process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_cache(paths: Sequence[str | os.PathLike], clip_ids: Sequence[str], spec: FrontendSpec,
                cache_dir: str | os.PathLike, *,
                on_clip: Callable[[int, int], None] | None = None,
                workers: int | None = None, chunk_clips: int | None = None, dtype: str = "auto") -> FeatureStore:
    """Compute (or reuse, or finish) the features of ``paths`` through :func:`edge_asc.frontend.offline`.

    Args:
        paths: audio files, in clip order.
        clip_ids: one id per path (stored, for checking).
        spec: front end; only its :meth:`~FrontendSpec.feature_hash` fields matter.
        cache_dir: parent folder of cache entries (created).
        on_clip: progress callback ``(done, total)``, called once per clip in order of completion (clips found
            done by an earlier, interrupted build are reported first); with ``workers > 1`` a chunk's clips are
            reported together when the chunk is finished.
        workers: extraction processes; 1 computes in this process; default :func:`default_workers`, or 1 when
            the audio files total less than :data:`SMALL_DATASET_BYTES` (starting workers would cost more than
            they save). The cache content is the same for every value.
        chunk_clips: clips per chunk file for a new entry; default :func:`chunk_clips_for` of the clip count (an
            interrupted build resumes with the value it started with).
        dtype: ``float16``, ``float32``, or ``auto``: float16 when the audio files total at least
            :data:`FLOAT16_AUDIO_BYTES`, float32 below. Part of the entry's name.

    Returns:
        The :class:`FeatureStore` (memory-mapped, read-only).

    Raises:
        DatasetError: no clips, or a missing file. AudioInputError: an unreadable clip or one shorter than a frame.
        ConfigError: ``workers`` or ``chunk_clips`` < 1, an unknown ``dtype``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError("no clips to compute features for: the dataset split is empty")
    if len(paths) != len(clip_ids):
        raise ValueError("paths and clip_ids differ in length")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if chunk_clips is not None and not (isinstance(chunk_clips, int) and chunk_clips >= 1):
        raise ConfigError(f"chunk_clips must be an integer >= 1, got {chunk_clips!r}")
    if dtype not in (*DTYPES, "auto"):
        raise ConfigError(f"cache dtype must be float16, float32 or auto, got {dtype!r}")
    key, audio_bytes = _clip_list_hash(paths, clip_ids)
    if dtype == "auto":
        dtype = "float16" if audio_bytes >= FLOAT16_AUDIO_BYTES else "float32"
    entry = Path(cache_dir) / f"{spec.feature_hash()}-{key}-v{CACHE_VERSION}-{dtype}"
    if workers is None:
        # starting spawned workers costs about a second; below ~6 min of 44.1-kHz 16-bit audio one process is faster
        workers = 1 if audio_bytes < SMALL_DATASET_BYTES else default_workers()
    if (entry / "index.json").exists():
        return _open(entry)

    (entry / "chunks").mkdir(parents=True, exist_ok=True)
    with _entry_lock(entry):
        if (entry / "index.json").exists():  # another process built it while this one waited for the lock
            return _open(entry)
        _build(entry, paths, clip_ids, spec, on_clip, workers, chunk_clips, dtype)
    return _open(entry)


@contextlib.contextmanager
def _entry_lock(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``entry`` while building it: a second process building the same entry (two runs
    sharing a cache folder) waits, then finds the finished entry. The kernel drops the lock when its holder dies,
    so a killed build never blocks the resume. No-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(entry / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _build(entry: Path, paths: list[Path], clip_ids: Sequence[str], spec: FrontendSpec,
           on_clip: Callable[[int, int], None] | None, workers: int, chunk_clips: int | None, dtype: str) -> None:
    """The locked part of :func:`build_cache`: resume from the journal, compute the missing chunks, write the index."""
    (entry / "chunks").mkdir(parents=True, exist_ok=True)  # again: a failed build before us may have removed it
    for stale in (entry / "chunks").glob(".*.tmp"):  # temporary files of a killed build (we hold the lock)
        stale.unlink(missing_ok=True)
    build = entry / "build.json"
    if build.exists():  # an interrupted build: keep its layout
        k_clips = int(json.loads(build.read_text())["chunk_clips"])
    else:
        k_clips = chunk_clips or chunk_clips_for(len(paths))
        atomic_write_text(build, json.dumps({"version": CACHE_VERSION, "chunk_clips": k_clips,
                                             "clips": len(paths), "dtype": dtype}))
    n_chunks = -(-len(paths) // k_clips)
    done = _journaled(entry, spec.channels * spec.n_mels, dtype)
    total, n_done = len(paths), 0

    def report(n: int) -> None:
        nonlocal n_done
        for _ in range(n):
            n_done += 1
            if on_clip is not None:
                on_clip(n_done, total)

    for k in sorted(done):
        report(len(done[k]["frames"]))
    todo = [k for k in range(n_chunks) if k not in done]
    jobs = {k: [str(p) for p in paths[k * k_clips:(k + 1) * k_clips]] for k in todo}
    workers = min(workers, len(todo))
    try:
        if workers <= 1:
            for k in todo:
                done[k] = _compute_chunk(str(entry), k, jobs[k], spec, dtype, on_clip=lambda: report(1))
        else:
            done.update(_run_pool(entry, jobs, spec, dtype, workers, report))
    except EdgeAscError:
        # a bad clip: fixing or removing it changes the clip list and so the entry, so this one is dead weight
        # (an interruption is not an EdgeAscError: its finished chunks are kept for the resume)
        shutil.rmtree(entry, ignore_errors=True)
        raise

    def column(name: str) -> list:
        return [v for k in range(n_chunks) for v in done[k][name]]

    atomic_write_text(entry / "index.json", json.dumps({
        "version": CACHE_VERSION, "spec": spec.to_dict(), "clip_ids": list(clip_ids), "frames": column("frames"),
        "sums": column("sums"), "sums_sq": column("sums_sq"),
        "chunk_clips": k_clips, "dtype": dtype, "channels": spec.channels, "n_mels": spec.n_mels}))


def _run_pool(entry: Path, jobs: dict[int, list[str]], spec: FrontendSpec, dtype: str, workers: int,
              report: Callable[[int], None]) -> dict[int, dict]:
    """Compute ``jobs`` (chunk -> paths) in ``workers`` spawned processes, at most ``2 * workers`` in flight."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    out: dict[int, dict] = {}
    queue = iter(sorted(jobs))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    pending: dict = {}
    try:
        with _sigint_ignored():  # the workers start here and inherit the ignored SIGINT, even while importing
            for k in queue:
                pending[pool.submit(_compute_chunk, str(entry), k, jobs[k], spec, dtype)] = k
                if len(pending) >= 2 * workers:
                    break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                k = pending.pop(fut)
                try:
                    out[k] = fut.result()  # a worker's AudioInputError is raised here, with its one-line message
                except BrokenProcessPool as exc:
                    raise DatasetError(f"a feature worker process died ({exc}; out of memory?): the finished "
                                       "chunks are kept, run again (--workers 1 computes in this process)") from exc
                report(len(out[k]["frames"]))
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(_compute_chunk, str(entry), nxt, jobs[nxt], spec, dtype)] = nxt
    finally:
        # on an error or Ctrl-C: drop the queued chunks; running ones finish (and are journaled) or are lost
        pool.shutdown(wait=True, cancel_futures=True)
    return out
