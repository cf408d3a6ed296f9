"""Shared pytest fixtures. Seeded, generated at test time, no network, no hardware."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
