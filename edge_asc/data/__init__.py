"""Datasets: TAU Urban Acoustic Scenes 2020/2022 Mobile readers, folder-per-class reader, dataset checks and a
deterministic synthetic scene generator with simulated recording devices (:mod:`edge_asc.data.synth`).

Importing this package costs only the standard library; the generator and the audio check import numpy/soundfile.
"""

from __future__ import annotations

from .readers import load_dataset, read_folders, read_tau
from .records import (
    SEEN_DEVICES,
    SPLITS,
    TAU_DEVICES,
    UNKNOWN_DEVICE,
    UNSEEN_DEVICES,
    ClipRecord,
    CountTable,
    Dataset,
    device_code,
    device_display,
    device_order,
    label_order,
)

__all__ = [
    "SEEN_DEVICES",
    "SPLITS",
    "TAU_DEVICES",
    "UNKNOWN_DEVICE",
    "UNSEEN_DEVICES",
    "ClipRecord",
    "CountTable",
    "Dataset",
    "device_code",
    "device_display",
    "device_order",
    "label_order",
    "load_dataset",
    "read_folders",
    "read_tau",
]
