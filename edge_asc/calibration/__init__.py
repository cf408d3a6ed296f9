"""Representative dataset for int8 calibration: real training windows through the one front end, stored and hashed.

A calibration set is a folder with two files:

``calib.npy``
    float32[N, n_mels, window_frames, channels] (NHWC, the layout onnx2tf's converter feeds its representative
    dataset in) of UN-normalised dB features from :func:`edge_asc.frontend.offline`. The converter is given the
    checkpoint's ``norm_mean`` / ``norm_std`` and normalises them itself, exactly as the runtime does.
``manifest.json``
    :class:`CalibrationManifest`: which clip and frame offset each window came from, the front end's feature hash,
    how the windows were drawn (strategy, seed), and the sha256 of ``calib.npy``, so an export is reproducible and a
    set that does not belong to a model is refused.

numpy + standard library only (the dataset is read with :mod:`edge_asc.data`, audio with :mod:`edge_asc.audio`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_text
from ..errors import ConfigError, DatasetError
from ..spec import FrontendSpec

CALIB_SCHEMA_VERSION = 1
ARRAY_FILE = "calib.npy"
MANIFEST_FILE = "manifest.json"
STRATEGIES = ("stratified", "random")
#: Default number of windows: a few hundred is what the TFLite converter's calibration needs for stable ranges.
DEFAULT_SIZE = 300


@dataclass(frozen=True, kw_only=True)
class CalibrationEntry:
    """One calibration window: ``features(clip)[:, :, offset : offset + window_frames]``."""

    clip_id: str
    label: str
    device: str
    offset: int
    """start frame of the window within the clip's offline features (0 for a clip shorter than a window, which
    is tiled cyclically to one window by :func:`edge_asc.frontend.tile_to_window`, as the runtime does)."""

    def to_dict(self) -> dict[str, Any]:
        return {"clip_id": self.clip_id, "label": self.label, "device": self.device, "offset": self.offset}


@dataclass(frozen=True, kw_only=True)
class CalibrationManifest:
    """Provenance of a calibration array; written as ``manifest.json``."""

    frontend: FrontendSpec
    """the front end the features were computed with (its normalisation is not applied to the array)."""
    window_frames: int
    """frames per window (the model's input width)."""
    strategy: str
    """'stratified' (round-robin over class x device groups) or 'random' (uniform over clips)."""
    seed: int
    split: str
    """dataset split the clips came from (normally 'train')."""
    entries: tuple[CalibrationEntry, ...]
    array_sha256: str
    """hex sha256 of the ``calib.npy`` file bytes."""
    dataset_root: str = ""
    labels: tuple[str, ...] = ()
    layout: str = "NHWC"
    schema_version: int = CALIB_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"calibration strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.layout != "NHWC":
            raise ConfigError(f"calibration layout must be NHWC, got {self.layout!r}")
        if not isinstance(self.window_frames, int) or self.window_frames < 1:
            raise ConfigError(f"window_frames must be a positive integer, got {self.window_frames!r}")
        object.__setattr__(self, "entries", tuple(self.entries))
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of the array: (N, n_mels, window_frames, channels)."""
        return (len(self.entries), self.frontend.n_mels, self.window_frames, self.frontend.channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "layout": self.layout,
            "shape": list(self.shape),
            "frontend": self.frontend.to_dict(),
            "feature_hash": self.frontend.feature_hash(),
            "window_frames": self.window_frames,
            "strategy": self.strategy,
            "seed": self.seed,
            "split": self.split,
            "dataset_root": self.dataset_root,
            "labels": list(self.labels),
            "array_sha256": self.array_sha256,
            "entries": [e.to_dict() for e in self.entries],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @property
    def sha256(self) -> str:
        """hex sha256 of the manifest as written (covers the array hash): the id of the calibration set."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationManifest:
        if d.get("schema_version") != CALIB_SCHEMA_VERSION:
            raise ConfigError(f"calibration manifest schema {d.get('schema_version')!r} is not supported "
                              f"(expected {CALIB_SCHEMA_VERSION}): rebuild it with 'edge-asc calibrate'")
        try:
            return cls(
                frontend=FrontendSpec.from_dict(d["frontend"]),
                window_frames=d["window_frames"], strategy=d["strategy"], seed=d["seed"], split=d["split"],
                entries=tuple(CalibrationEntry(**e) for e in d["entries"]), array_sha256=d["array_sha256"],
                dataset_root=d.get("dataset_root", ""), labels=tuple(d.get("labels", ())),
                layout=d.get("layout", "NHWC"),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"calibration manifest is incomplete or malformed: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class CalibrationSet:
    """A calibration array with its manifest. ``data``: float32[N, n_mels, window_frames, channels] (NHWC, dB)."""

    data: np.ndarray
    manifest: CalibrationManifest
    path: Path | None = field(default=None)
    """folder it was loaded from / saved to, if any."""

    def __post_init__(self) -> None:
        if self.data.dtype != np.float32 or self.data.shape != self.manifest.shape:
            raise ConfigError(f"calibration array is {self.data.dtype}{list(self.data.shape)}, its manifest says "
                              f"float32{list(self.manifest.shape)}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def normalized_nchw(self) -> np.ndarray:
        """float32[N, C, n_mels, W]: the windows as the PyTorch model sees them (normalised, NCHW)."""
        from ..frontend import normalize

        return normalize(np.ascontiguousarray(self.data.transpose(0, 3, 1, 2)), self.manifest.frontend)


# ---------------------------------------------------------------------------------------------------------------
def _clip_path(dataset: Any, clip: Any) -> Path:
    """The clip's audio file: ``ClipRecord.path`` is already the dataset root joined with the file name."""
    return Path(clip.path)


def _select(clips: Sequence[Any], size: int, strategy: str, rng: np.random.Generator) -> list[int]:
    """Indices into ``clips`` (repeats allowed once every clip is used), ``size`` of them."""
    n = len(clips)
    if strategy == "random":
        order: list[int] = []
        while len(order) < size:
            order.extend(rng.permutation(n).tolist())
        return order[:size]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault((str(c.label), str(c.device)), []).append(i)
    keys = sorted(groups)
    queues = {k: rng.permutation(groups[k]).tolist() for k in keys}
    pos = dict.fromkeys(keys, 0)
    out: list[int] = []
    start = int(rng.integers(len(keys)))  # which group opens the round-robin (matters when size % groups != 0)
    keys = keys[start:] + keys[:start]
    while len(out) < size:
        for k in keys:
            if len(out) == size:
                break
            q = queues[k]
            if pos[k] == len(q):  # every clip of the group used once: reshuffle and reuse (new offsets)
                queues[k] = q = rng.permutation(groups[k]).tolist()
                pos[k] = 0
            out.append(q[pos[k]])
            pos[k] += 1
    return out


def build_calibration(dataset: Any, spec: FrontendSpec, window_frames: int, *, size: int = DEFAULT_SIZE,
                      seed: int = 0, strategy: str = "stratified", split: str = "train",
                      labels: Sequence[str] | None = None) -> CalibrationSet:
    """Draw ``size`` feature windows from real clips of ``dataset.split(split)``.

    Args:
        dataset: an :mod:`edge_asc.data` Dataset (``.root``, ``.labels``, ``.split(name)`` -> clips with
            ``path, label, device, clip_id``).
        spec: the checkpoint's front end (features are computed with it; its normalisation is not applied).
        window_frames: the model's input width in frames.
        size: number of windows (>= 1). With more windows than clips, clips are reused at new random offsets.
        seed: seeds clip order and window offsets: the same seed gives the same array.
        strategy: 'stratified' cycles through every (label, device) group in turn, so each class x device
            combination is represented as equally as the data allows; 'random' draws clips uniformly.
        split: the dataset split to draw from.
        labels: restrict to clips with these labels (the model's); default every label.

    Returns:
        a :class:`CalibrationSet` (not yet saved; see :func:`save_calibration`).

    Raises:
        ConfigError: size < 1 or an unknown strategy.
        DatasetError: the split has no (matching) clips.
        AudioInputError: a clip cannot be read.
    """
    from ..audio import load_audio
    from ..frontend import offline, tile_to_window, window_starts

    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"calibration size must be a positive integer, got {size!r}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"calibration strategy must be one of {STRATEGIES}, got {strategy!r}")
    clips = list(dataset.split(split))
    if labels is not None:
        wanted = set(labels)
        clips = [c for c in clips if c.label in wanted]
    if not clips:
        raise DatasetError(f"the dataset's {split!r} split has no clips with the model's labels: nothing to "
                           "calibrate on (check --data)")
    rng = np.random.default_rng(seed)
    chosen = _select(clips, size, strategy, rng)
    feats: dict[int, np.ndarray] = {}
    out = np.empty((size, spec.n_mels, window_frames, spec.channels), dtype=np.float32)
    entries = []
    for j, i in enumerate(chosen):
        if i not in feats:
            audio, _ = load_audio(_clip_path(dataset, clips[i]), spec.sample_rate)
            feats[i] = offline(audio, spec)
        f = feats[i]
        t = f.shape[2]
        if t >= window_frames:  # uniform over every start the window rule allows at hop 1
            starts = window_starts(t, window_frames, 1)
            offset = starts[int(rng.integers(0, len(starts)))]
        else:
            offset = 0
        out[j] = tile_to_window(f[:, :, offset:offset + window_frames], window_frames).transpose(1, 2, 0)
        c = clips[i]
        entries.append(CalibrationEntry(clip_id=str(c.clip_id), label=str(c.label), device=str(c.device),
                                        offset=offset))
    manifest = CalibrationManifest(frontend=spec, window_frames=window_frames, strategy=strategy, seed=int(seed),
                                   split=split, entries=tuple(entries), array_sha256=_array_sha256(out),
                                   dataset_root=str(getattr(dataset, "root", "") or ""),
                                   labels=tuple(labels if labels is not None else getattr(dataset, "labels", ())))
    return CalibrationSet(data=out, manifest=manifest)


def _npy_bytes(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, np.ascontiguousarray(a), allow_pickle=False)
    return b.getvalue()


def _array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(_npy_bytes(a)).hexdigest()


def save_calibration(cs: CalibrationSet, out_dir: str | os.PathLike) -> Path:
    """Write ``calib.npy`` then ``manifest.json`` (each atomically; the manifest last) into ``out_dir``.

    Raises:
        ConfigError: ``out_dir`` exists and is not a directory, or cannot be written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"calibration output {str(out)!r} exists and is not a directory: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / ARRAY_FILE) as tmp:
            tmp.write_bytes(_npy_bytes(cs.data))
        atomic_write_text(out / MANIFEST_FILE, cs.manifest.to_json())
    except PermissionError as exc:
        raise ConfigError(f"cannot write the calibration set to {str(out)!r} ({exc.strerror}): choose a writable "
                          "--out") from None
    return out


def load_calibration(path: str | os.PathLike, *, spec: FrontendSpec | None = None,
                     window_frames: int | None = None) -> CalibrationSet:
    """Read and check a calibration folder (or its ``manifest.json``).

    Args:
        spec, window_frames: when given, the set must have been computed with a front end of the same feature
            hash (normalisation may differ: it is applied by the converter) and windows of this length.

    Raises:
        DatasetError: missing files, corrupt array/manifest, array that does not match its sha256, empty set,
            non-finite values.
        ConfigError: front end or window length differ from ``spec`` / ``window_frames``.
    """
    p = Path(path)
    d = p.parent if p.name in (MANIFEST_FILE, ARRAY_FILE) else p
    mpath, apath = d / MANIFEST_FILE, d / ARRAY_FILE
    if not mpath.is_file() or not apath.is_file():
        raise DatasetError(f"{str(d)!r} is not a calibration set (needs {MANIFEST_FILE} and {ARRAY_FILE}): "
                           "build one with 'edge-asc calibrate'")
    try:
        manifest = CalibrationManifest.from_dict(json.loads(mpath.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{str(mpath)!r} is corrupt ({exc}): rebuild it with 'edge-asc calibrate'") from None
    except ConfigError as exc:
        raise DatasetError(f"{str(mpath)!r}: {exc}") from None
    raw = apath.read_bytes()
    if hashlib.sha256(raw).hexdigest() != manifest.array_sha256:
        raise DatasetError(f"{str(apath)!r} does not match the sha256 in its manifest: the calibration set was "
                           "modified or is corrupt; rebuild it with 'edge-asc calibrate'")
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{str(apath)!r} is not a readable .npy array ({exc}): rebuild it") from None
    if data.ndim != 4 or data.shape[0] == 0:
        raise DatasetError(f"calibration set {str(d)!r} is empty or not 4-D (shape {list(data.shape)}): rebuild it "
                           "with 'edge-asc calibrate --size N'")
    if not np.all(np.isfinite(data)):
        raise DatasetError(f"calibration set {str(d)!r} contains NaN or infinite values: rebuild it")
    if spec is not None and manifest.frontend.feature_hash() != spec.feature_hash():
        raise ConfigError(f"calibration set {str(d)!r} was computed with another front end (feature hash "
                          f"{manifest.frontend.feature_hash()}, the model's is {spec.feature_hash()}): rebuild it "
                          "with 'edge-asc calibrate CHECKPOINT'")
    if window_frames is not None and manifest.window_frames != window_frames:
        raise ConfigError(f"calibration set {str(d)!r} has {manifest.window_frames}-frame windows, the model takes "
                          f"{window_frames}: rebuild it with 'edge-asc calibrate CHECKPOINT'")
    try:
        return CalibrationSet(data=data, manifest=manifest, path=d)
    except ConfigError as exc:
        raise DatasetError(f"calibration set {str(d)!r}: {exc}: rebuild it") from None


__all__ = [
    "ARRAY_FILE",
    "DEFAULT_SIZE",
    "MANIFEST_FILE",
    "STRATEGIES",
    "CalibrationEntry",
    "CalibrationManifest",
    "CalibrationSet",
    "build_calibration",
    "load_calibration",
    "save_calibration",
]
