"""Dataset validation: layout (via the readers) plus every audio file's header (and optionally its samples).

Reports are data: :class:`CheckReport` carries the count tables and audio statistics; ``render()`` makes the text.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import AudioInputError
from .readers import load_dataset, offenders
from .records import CountTable, Dataset


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """What ``edge-asc data check`` found in a valid dataset."""

    root: str
    layout: str
    """'tau2020', 'tau2022', 'tau' or 'folder'."""
    n_clips: int
    split_sizes: dict[str, int]
    """clips per split ('train', 'evaluate', 'test')."""
    counts: CountTable
    """class x device counts over all clips."""
    split_counts: dict[str, CountTable]
    """class x device counts per non-empty split."""
    sample_rates: dict[int, int]
    """Hz -> number of files."""
    channels: dict[int, int]
    """channel count -> number of files."""
    seconds_min: float
    seconds_max: float
    seconds_total: float

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "layout": self.layout, "n_clips": self.n_clips, "split_sizes": self.split_sizes,
                "counts": self.counts.to_dict(), "split_counts": {k: v.to_dict() for k, v in self.split_counts.items()},
                "sample_rates": {str(k): v for k, v in self.sample_rates.items()},
                "channels": {str(k): v for k, v in self.channels.items()},
                "seconds_min": self.seconds_min, "seconds_max": self.seconds_max, "seconds_total": self.seconds_total}

    def render(self, split: str | None = None) -> str:
        sizes = ", ".join(f"{v} {k}" for k, v in self.split_sizes.items() if v)
        rates = ", ".join(f"{k} Hz x{v}" for k, v in sorted(self.sample_rates.items()))
        head = [(f"{self.layout} dataset at {self.root}: {self.n_clips} clips ({sizes}), {len(self.counts.labels)} "
                f"labels, {len(self.counts.devices)} devices"),
                (f"audio: {rates}; {self.seconds_min:.2f}-{self.seconds_max:.2f} s per clip, "
                f"{self.seconds_total / 3600:.2f} h in all"), ""]
        table = self.counts if split is None else self.split_counts.get(split)
        if table is None:
            return "\n".join([*head, f"(split '{split}' is empty)"])
        title = "all clips" if split is None else f"split '{split}'"
        return "\n".join([*head, f"clips per label x device ({title}):", table.render()])


def check_dataset(root: str | os.PathLike, *, deep: bool = False) -> CheckReport:
    """Validate a dataset folder: its layout (:func:`load_dataset`) and every audio file.

    Args:
        root: dataset folder.
        deep: also decode every file's samples (corrupt compressed data, NaN/inf samples), not only its header
            (the header check already catches missing, empty, non-audio and truncated WAV files).

    Raises:
        DatasetError: any layout problem (see the readers), or unreadable / empty audio files (the first few named,
            with the count).
    """
    from ..audio import audio_info, load_audio

    ds: Dataset = load_dataset(root)
    bad: list[str] = []
    rates: Counter[int] = Counter()
    chans: Counter[int] = Counter()
    secs: list[float] = []
    for c in ds.clips:
        try:
            info = audio_info(c.path)  # catches corrupt headers and WAV data chunks cut short
            if info.frames <= 0:
                raise AudioInputError("no samples")
            if deep:
                load_audio(c.path)  # decodes every sample: corrupt data, non-finite values
        except AudioInputError:
            bad.append(_rel(c.path, ds.root))
            continue
        rates[info.sample_rate] += 1
        chans[info.channels] += 1
        secs.append(info.seconds)
    if bad:
        raise offenders(bad, "audio file(s) are unreadable or empty",
                        "re-copy or re-export them (or remove them from meta.csv)")
    sizes = {s: len(ds.split(s)) for s in ("train", "evaluate", "test")}
    return CheckReport(root=str(ds.root), layout=ds.layout, n_clips=len(ds.clips), split_sizes=sizes,
                       counts=ds.counts(), split_counts={s: ds.counts(s) for s, n in sizes.items() if n},
                       sample_rates=dict(sorted(rates.items())), channels=dict(sorted(chans.items())),
                       seconds_min=min(secs), seconds_max=max(secs), seconds_total=float(sum(secs)))


def _rel(path, root) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
