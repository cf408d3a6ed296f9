"""Dataset readers: TAU Urban Acoustic Scenes 2020/2022 Mobile development layouts and folder-per-class.

TAU layout (both years)::

    ROOT/meta.csv                        filename  scene_label  identifier  source_label   (tab-separated, header)
    ROOT/audio/<clip>.wav
    ROOT/evaluation_setup/fold1_train.csv     filename  scene_label
    ROOT/evaluation_setup/fold1_evaluate.csv  filename  scene_label
    ROOT/evaluation_setup/fold1_test.csv      filename

2020 clips are 10 s named ``<scene>-<city>-<location>-<segment>-<device>.wav`` (``airport-barcelona-0-0-a.wav``);
2022 clips are the same recordings cut into 1-s pieces, ``<scene>-<city>-<location>-<segment>-<piece>-<device>.wav``
(``airport-lisbon-1000-40000-0-a.wav``). ``identifier`` is the location (``lisbon-1000``), ``source_label`` the device.

Folder-per-class layout: ``ROOT/<label>/*.wav`` (also .flac/.ogg); device ``'unknown'``, location = clip id, and a
deterministic seeded, per-class train/evaluate split.

Standard library only. Every layout problem raises :class:`~edge_asc.errors.DatasetError` with a one-line message
naming the first offenders, their count and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DatasetError
from ..spec import TAU_LABELS
from .records import UNKNOWN_DEVICE, ClipRecord, Dataset, label_order

META_COLUMNS: tuple[str, ...] = ("filename", "scene_label", "identifier", "source_label")
FOLD_COLUMNS: dict[str, tuple[str, ...]] = {
    "train": ("filename", "scene_label"),
    "evaluate": ("filename", "scene_label"),
    "test": ("filename",),
}
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg")
#: fraction of each class put in the 'evaluate' split of a folder-per-class dataset.
FOLDER_EVAL_FRACTION = 0.3
_SHOW = 3  # offenders named in an error message


def offenders(items: Sequence[str], what: str, fix: str) -> DatasetError:
    """A one-line DatasetError: '<count> <what> (first: x, y, z): <fix>'."""
    items = list(items)
    first = ", ".join(repr(s) for s in items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
    return DatasetError(f"{len(items)} {what} (first: {first}): {fix}")


def _read_table(path: Path, required: Sequence[str], root: Path) -> list[dict[str, str]]:
    """Rows of a TAU tab-separated file with a header, as dicts of the required columns."""
    rel = _rel(path, root)
    if not path.is_file():
        raise DatasetError(f"{rel} is missing in {root}: a TAU dataset folder needs meta.csv and "
                           f"evaluation_setup/fold1_{{train,evaluate,test}}.csv (or use ROOT/<label>/*.wav folders)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{rel} cannot be read ({exc.__class__.__name__}): check the file") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DatasetError(f"{rel} is empty: it needs a header line with columns {list(required)}")
    reader = csv.reader(lines, delimiter="\t")
    header = [h.strip() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        sep = " (it is not tab-separated)" if len(header) == 1 and ("," in header[0] or ";" in header[0]) else ""
        raise DatasetError(f"{rel} lacks column(s) {missing}{sep}; header is {header}: TAU files are tab-separated "
                           f"with columns {list(required)}")
    idx = [header.index(c) for c in required]
    rows, short = [], []
    for lineno, fields in enumerate(reader, start=2):
        if len(fields) <= max(idx) or any(not fields[i].strip() for i in idx):
            short.append(f"line {lineno}")
            continue
        rows.append({c: fields[i].strip() for c, i in zip(required, idx)})
    if short:
        raise offenders(short, f"row(s) of {rel} have empty or missing fields", f"every row needs {list(required)}")
    return rows


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _duplicates(names: Iterable[str]) -> list[str]:
    return [n for n, k in Counter(names).items() if k > 1]


def tau_variant(stems: Iterable[str]) -> str:
    """'tau2020' (``scene-city-loc-seg-dev``), 'tau2022' (``scene-city-loc-seg-piece-dev``) or 'tau' (mixed)."""
    parts = {s.count("-") + 1 for s in stems}
    if parts == {5}:
        return "tau2020"
    if parts == {6}:
        return "tau2022"
    return "tau"


def read_tau(root: str | os.PathLike, *, verify_files: bool = True) -> Dataset:
    """Read a TAU Urban Acoustic Scenes 2020/2022 Mobile development folder.

    Args:
        root: the folder holding ``meta.csv``, ``audio/`` and ``evaluation_setup/``.
        verify_files: check that every listed audio file exists (one ``stat`` per file).

    Returns:
        A :class:`Dataset` with layout 'tau2020' or 'tau2022' (or 'tau' for mixed file names). Clips of
        ``meta.csv`` listed in no fold file are left out.

    Raises:
        DatasetError: missing files or columns, duplicate file names, labels outside TAU's 10 scenes, a fold file
            naming a clip that meta.csv lacks or giving it another label, or missing audio files.
    """
    root = Path(root)
    meta = _read_table(root / "meta.csv", META_COLUMNS, root)
    folds = {s: _read_table(root / "evaluation_setup" / f"fold1_{s}.csv", cols, root)
             for s, cols in FOLD_COLUMNS.items()
             if s != "test" or (root / "evaluation_setup" / "fold1_test.csv").exists()}

    names = [r["filename"] for r in meta]
    dup = _duplicates(names) or _duplicates(Path(n).stem for n in names)
    if dup:
        raise offenders(sorted(dup), "duplicate file name(s) in meta.csv", "each clip must be listed once "
                        "under a unique file name")
    bad = sorted({r["scene_label"] for r in meta} - set(TAU_LABELS))
    if bad:
        raise offenders(bad, "unknown scene label(s) in meta.csv",
                        f"TAU labels are {list(TAU_LABELS)} (use ROOT/<label>/*.wav folders for other labels)")
    by_name = {r["filename"]: r for r in meta}

    split_of: dict[str, str] = {}
    test_names: set[str] = set()
    for split, rows in folds.items():
        fname = f"evaluation_setup/fold1_{split}.csv"
        dup = _duplicates(r["filename"] for r in rows)
        if dup:
            raise offenders(sorted(dup), f"duplicate file name(s) in {fname}", "list each clip once")
        absent = [r["filename"] for r in rows if r["filename"] not in by_name]
        if absent:
            raise offenders(absent, f"file(s) in {fname} are not in meta.csv", "regenerate the fold files or meta.csv")
        wrong = [r["filename"] for r in rows
                 if "scene_label" in r and r["scene_label"] != by_name[r["filename"]]["scene_label"]]
        if wrong:
            raise offenders(wrong, f"file(s) in {fname} have a scene_label different from meta.csv",
                            "make the two files agree")
        if split == "test":
            test_names.update(r["filename"] for r in rows)
            continue
        both = [r["filename"] for r in rows if r["filename"] in split_of]
        if both:
            raise offenders(both, "file(s) are in both fold1_train.csv and fold1_evaluate.csv",
                            "a clip belongs to one split")
        split_of.update((r["filename"], split) for r in rows)

    clips: list[ClipRecord] = []
    for r in meta:
        name = r["filename"]
        split = split_of.get(name, "test" if name in test_names else None)
        if split is None:
            continue
        clips.append(ClipRecord(path=root / name, label=r["scene_label"], device=r["source_label"].lower(),
                                location=r["identifier"], split=split, clip_id=Path(name).stem))
    if not clips:
        raise DatasetError(f"{root}: no clip of meta.csv is listed in evaluation_setup/fold1_*.csv: "
                           f"the dataset is empty")
    if verify_files:
        missing = [_rel(c.path, root) for c in clips if not c.path.is_file()]
        if missing:
            raise offenders(missing, f"audio file(s) listed in meta.csv are missing under {root}",
                            "restore the audio/ folder (unzip every audio archive) or fix meta.csv")
    return Dataset(root=root, labels=label_order(c.label for c in clips), clips=clips,
                   layout=tau_variant(c.clip_id for c in clips),
                   test_ids=frozenset(Path(n).stem for n in test_names))


def _stable_key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def read_folders(root: str | os.PathLike, *, seed: int = 0, eval_fraction: float = FOLDER_EVAL_FRACTION) -> Dataset:
    """Read ``ROOT/<label>/*.wav`` (also .flac, .ogg) as a dataset of unknown devices.

    Each class is split deterministically: files are ordered by a hash of ``seed`` and their name, and the first
    ``round(eval_fraction * n)`` (at least 1 when the class has 2 or more files) go to 'evaluate', the rest to 'train'.
    The split of a file therefore depends only on the seed and its class's file names.

    Raises:
        DatasetError: no label folders with audio, or the same file name in two folders.
    """
    root = Path(root)
    if not 0.0 <= eval_fraction < 1.0:
        raise DatasetError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    per_label: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES
                       and not f.name.startswith("."))
        if files:
            per_label[d.name] = files
    if not per_label:
        raise DatasetError(f"{root} holds neither meta.csv (TAU layout) nor <label>/*.wav folders: point at the "
                           f"dataset folder")
    dup = _duplicates(f.stem for fs in per_label.values() for f in fs)
    if dup:
        raise offenders(sorted(dup), "file name(s) occur in more than one label folder",
                        "give every recording a unique file name")
    clips: list[ClipRecord] = []
    for label, files in per_label.items():
        ranked = sorted(files, key=lambda f: _stable_key(seed, f"{label}/{f.name}"))
        n_eval = round(eval_fraction * len(files))
        if eval_fraction > 0 and len(files) >= 2:
            n_eval = min(max(n_eval, 1), len(files) - 1)
        evaluate = set(ranked[:n_eval])
        for f in files:
            clips.append(ClipRecord(path=f, label=label, device=UNKNOWN_DEVICE, location=f.stem,
                                    split="evaluate" if f in evaluate else "train", clip_id=f.stem))
    return Dataset(root=root, labels=label_order(per_label), clips=clips, layout="folder")


def find_tau_root(root: Path) -> Path | None:
    """``root`` if it holds meta.csv, or its only sub-folder that does (an unzipped TAU archive), else None."""
    if (root / "meta.csv").is_file():
        return root
    subs = [p for p in root.iterdir() if p.is_dir() and (p / "meta.csv").is_file()]
    return subs[0] if len(subs) == 1 else None


def load_dataset(root: str | os.PathLike, *, verify_files: bool = True, seed: int = 0) -> Dataset:
    """Open a dataset folder, detecting its layout.

    * ``ROOT/meta.csv`` (or ``ROOT/<one folder>/meta.csv``): TAU 2020 or 2022 Mobile development layout.
    * otherwise ``ROOT/<label>/*.wav``: folder per class, device 'unknown', seeded split (``seed``).

    Raises:
        DatasetError: the folder is missing or its layout is broken (see :func:`read_tau`, :func:`read_folders`).
    """
    p = Path(root)
    if not p.is_dir():
        raise DatasetError(f"dataset folder {str(p)!r} does not exist: check the path "
                           f"(or create one with 'edge-asc data synth --out DIR')")
    tau = find_tau_root(p)
    if tau is not None:
        return read_tau(tau, verify_files=verify_files)
    return read_folders(p, seed=seed)
