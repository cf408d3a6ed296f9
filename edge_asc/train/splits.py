"""A dataset split resolved to files, labels and devices: what training and evaluation both read. numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError


@dataclass(frozen=True, kw_only=True)
class SplitData:
    """A dataset split resolved to files: paths, ids, integer labels int64[N] (indices into the model's labels),
    devices."""

    paths: tuple[Path, ...]
    clip_ids: tuple[str, ...]
    y: np.ndarray
    devices: tuple[str, ...]


def resolve_split(dataset, split: str, labels: Sequence[str]) -> SplitData:
    """Clips of ``dataset.split(split)`` with labels mapped to indices of ``labels``.

    Raises:
        DatasetError: a clip's label is not in ``labels``.
    """
    root = Path(getattr(dataset, "root", "") or "")
    index = {name: i for i, name in enumerate(labels)}
    paths, ids, ys, devs = [], [], [], []
    for c in dataset.split(split):
        if c.label not in index:
            raise DatasetError(f"clip {c.clip_id!r} has label {c.label!r}, which is not one of the model's "
                               f"{len(labels)} labels {list(labels)}: use a matching dataset or retrain")
        p = Path(c.path)
        # edge_asc.data gives usable paths (absolute, or under a relative root); a bare name is under root
        paths.append(p if p.is_absolute() or p.exists() or not root.parts else root / p)
        ids.append(str(c.clip_id))
        ys.append(index[c.label])
        devs.append(str(c.device))
    return SplitData(paths=tuple(paths), clip_ids=tuple(ids), y=np.asarray(ys, dtype=np.int64), devices=tuple(devs))


def check_labels(dataset_labels: Sequence[str], model_labels: Sequence[str]) -> None:
    """Refuse a dataset whose label set differs from the model's (order may differ).

    Raises:
        DatasetError: naming the labels the dataset lacks and the extra ones it has.
    """
    if set(dataset_labels) != set(model_labels):
        missing = sorted(set(model_labels) - set(dataset_labels))
        extra = sorted(set(dataset_labels) - set(model_labels))
        raise DatasetError(f"the dataset's labels do not match the model's (dataset lacks {missing}, "
                           f"has extra {extra}): evaluate on a dataset with the labels the model was trained on")
