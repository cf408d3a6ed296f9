"""Dataset records: one :class:`ClipRecord` per audio file, a :class:`Dataset` of them, and count tables.

Standard library only. Device ids are kept exactly as TAU writes them in ``meta.csv`` (``source_label``: lower-case
``a``, ``b``, ``c``, ``s1`` ... ``s6``); :func:`device_display` gives the upper-case names used in papers and tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..spec import TAU_LABELS

#: TAU 2020/2022 Mobile devices present in the training split (real A, B, C and simulated S1-S3).
SEEN_DEVICES: tuple[str, ...] = ("a", "b", "c", "s1", "s2", "s3")
#: Simulated devices that appear only in the evaluation/test split.
UNSEEN_DEVICES: tuple[str, ...] = ("s4", "s5", "s6")
#: Every TAU Mobile device in table order.
TAU_DEVICES: tuple[str, ...] = SEEN_DEVICES + UNSEEN_DEVICES
#: Device id given to clips whose recording device is not known (folder-per-class datasets).
UNKNOWN_DEVICE = "unknown"
#: Valid split names. TAU's ``fold1_test.csv`` lists the evaluate clips without labels; here both carry labels.
SPLITS: tuple[str, ...] = ("train", "evaluate", "test")


def device_display(device: str) -> str:
    """Display name of a device id: ``'s4' -> 'S4'``, ``'a' -> 'A'``, ``'unknown' -> 'unknown'``."""
    return device if device == UNKNOWN_DEVICE else device.upper()


def device_code(name: str) -> str:
    """Inverse of :func:`device_display`: ``'S4' -> 's4'`` (TAU's spelling in ``meta.csv``)."""
    return name.strip().lower()


def device_order(devices: Iterable[str]) -> tuple[str, ...]:
    """Devices sorted for tables: TAU order first (a, b, c, s1..s6), then others alphabetically, 'unknown' last."""
    rank = {d: i for i, d in enumerate(TAU_DEVICES)}
    return tuple(sorted(set(devices), key=lambda d: (d == UNKNOWN_DEVICE, rank.get(d, len(rank)), d)))


def label_order(labels: Iterable[str]) -> tuple[str, ...]:
    """Labels in TAU order (:data:`edge_asc.spec.TAU_LABELS`) when they are all TAU labels, else sorted."""
    s = set(labels)
    if s <= set(TAU_LABELS):
        return tuple(lab for lab in TAU_LABELS if lab in s)
    return tuple(sorted(s))


@dataclass(frozen=True, kw_only=True)
class ClipRecord:
    """One audio clip of a dataset.

    Attributes:
        path: path of the audio file (the dataset root joined with its name; absolute when the root is).
        label: scene label (e.g. ``'airport'``).
        device: recording device id as in TAU's ``source_label`` (``'a'``, ``'s4'``...), or ``'unknown'``.
        location: recording location identifier (TAU ``identifier``, e.g. ``'barcelona-0'``); clips of one location
            never straddle the train/evaluate split in TAU.
        split: ``'train'``, ``'evaluate'`` or ``'test'``.
        clip_id: file name stem, unique within a dataset (e.g. ``'airport-barcelona-0-0-a'``).
    """

    path: Path
    label: str
    device: str
    location: str
    split: str
    clip_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.split not in SPLITS:
            raise DatasetError(f"clip {self.clip_id!r}: split must be one of {list(SPLITS)}, got {self.split!r}")
        for name in ("label", "device", "location", "clip_id"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise DatasetError(f"clip {self.clip_id!r}: {name} must be a non-empty string, got {v!r}")

    @property
    def device_name(self) -> str:
        """Upper-case display name of the device (``'S4'``)."""
        return device_display(self.device)


@dataclass(frozen=True, kw_only=True)
class CountTable:
    """Clip counts per (label, device): ``counts[i][j]`` clips of ``labels[i]`` recorded with ``devices[j]``."""

    labels: tuple[str, ...]
    devices: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    split: str | None = None
    """the split counted, or None for all clips."""

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.labels) or any(len(r) != len(self.devices) for r in self.counts):
            raise DatasetError("count table shape does not match its labels x devices")

    @property
    def total(self) -> int:
        return sum(sum(r) for r in self.counts)

    def per_label(self) -> dict[str, int]:
        return {lab: sum(r) for lab, r in zip(self.labels, self.counts)}

    def per_device(self) -> dict[str, int]:
        return {d: sum(r[j] for r in self.counts) for j, d in enumerate(self.devices)}

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "labels": list(self.labels), "devices": list(self.devices),
                "counts": [list(r) for r in self.counts], "total": self.total}

    def render(self) -> str:
        """Plain-text table: one row per label, one column per device (upper-case), totals row and column."""
        heads = [device_display(d) for d in self.devices]
        w0 = max([len("label"), len("total")] + [len(lab) for lab in self.labels])
        dev = self.per_device()
        cols = [max(len(h), len(str(dev[d]))) for d, h in zip(self.devices, heads)]
        tw = max(len("total"), len(str(self.total)))
        lines = ["  ".join(["label".ljust(w0)] + [h.rjust(c) for h, c in zip(heads, cols)] + ["total".rjust(tw)])]
        for lab, row in zip(self.labels, self.counts):
            lines.append("  ".join([lab.ljust(w0)] + [str(v).rjust(c) for v, c in zip(row, cols)]
                                   + [str(sum(row)).rjust(tw)]))
        lines.append("  ".join(["total".ljust(w0)] + [str(dev[d]).rjust(c) for d, c in zip(self.devices, cols)]
                               + [str(self.total).rjust(tw)]))
        return "\n".join(lines)


@dataclass(frozen=True, kw_only=True, eq=False)
class Dataset:
    """A labelled audio dataset.

    Attributes:
        root: the dataset folder.
        labels: scene labels in class-index order (TAU order when all labels are TAU labels).
        clips: every clip, one record per audio file (a TAU clip listed in both ``fold1_evaluate.csv`` and
            ``fold1_test.csv`` appears once, with split ``'evaluate'``).
        layout: ``'tau2020'``, ``'tau2022'`` or ``'folder'``.
        test_ids: clip ids listed in ``fold1_test.csv`` (TAU layouts); ``split('test')`` returns these.
    """

    root: Path
    labels: tuple[str, ...]
    clips: list[ClipRecord]
    layout: str
    test_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "labels", tuple(self.labels))
        unknown = sorted({c.label for c in self.clips} - set(self.labels))
        if unknown:
            raise DatasetError(f"{self.root}: clips carry labels {unknown} outside the dataset's label set")

    def split(self, name: str) -> list[ClipRecord]:
        """Clips of split ``name`` ('train', 'evaluate' or 'test'), in file order.

        Raises:
            DatasetError: an unknown split name.
        """
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}: choose one of {list(SPLITS)}")
        if name == "test":
            return [c if c.split == "test" else dataclasses.replace(c, split="test")
                    for c in self.clips if c.clip_id in self.test_ids or c.split == "test"]
        return [c for c in self.clips if c.split == name]

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices present, in table order."""
        return device_order(c.device for c in self.clips)

    def counts(self, split: str | None = None) -> CountTable:
        """Class x device clip counts of one split (or of all clips when ``split`` is None)."""
        clips: Sequence[ClipRecord] = self.clips if split is None else self.split(split)
        devices = self.devices
        di = {d: j for j, d in enumerate(devices)}
        li = {lab: i for i, lab in enumerate(self.labels)}
        m = [[0] * len(devices) for _ in self.labels]
        for c in clips:
            m[li[c.label]][di[c.device]] += 1
        return CountTable(labels=self.labels, devices=devices, counts=tuple(tuple(r) for r in m), split=split)

    def __len__(self) -> int:
        return len(self.clips)

    def __repr__(self) -> str:
        n = {s: sum(c.split == s for c in self.clips) for s in ("train", "evaluate")}
        return (f"Dataset(root={str(self.root)!r}, layout={self.layout!r}, {len(self.labels)} labels, "
                f"{len(self.clips)} clips: {n['train']} train / {n['evaluate']} evaluate)")
