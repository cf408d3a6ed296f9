"""Shared pytest fixtures. Seeded, generated at test time, no network, no hardware."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A generated TAU 2020 Mobile layout dataset: 20 clips per class (about 2 per class per device), 1 s, 16 kHz,
    seed 0 -- 110 train clips (devices A, B, C, S1-S3) and 90 evaluate clips (all nine devices). Made once per session.
    """
    from edge_asc.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("tiny_dataset") / "data", clips_per_class=20, seconds=1.0,
                      sample_rate=16_000, seed=0)
