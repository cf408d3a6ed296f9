"""The one window rule (edge_asc.frontend.windows): starts, default hop, no end window, short clips tiled, and the
streaming assembler cutting exactly the offline windows. numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from edge_asc.errors import AudioInputError, ConfigError
from edge_asc.frontend import (
    WindowAssembler,
    default_hop_frames,
    hop_frames,
    tile_to_window,
    window_starts,
    windows,
)
from edge_asc.spec import PRESETS


def test_starts_every_hop_while_the_window_fits_and_no_end_window():
    assert list(window_starts(130, 61, 30)) == [0, 30, 60]  # frames 121..129 are not covered
    assert list(window_starts(421, 400, 400)) == [0]
    assert list(window_starts(61, 61, 30)) == [0]
    assert list(window_starts(623, 61)) == list(range(0, 563, 30))  # a 10-s clip of the edge front end: 19 windows
    assert list(window_starts(10, 4, 1)) == list(range(7))  # hop 1: every crop start


def test_default_hop_is_half_a_window():
    assert default_hop_frames(61) == 30 and default_hop_frames(400) == 200 and default_hop_frames(1) == 1
    assert list(window_starts(200, 61)) == list(window_starts(200, 61, 30))


def test_short_clip_has_one_window_and_an_empty_clip_none():
    assert list(window_starts(25, 61, 30)) == [0]
    assert list(window_starts(0, 61, 30)) == []
    for bad in ((10, 0, 1), (10, 4, 0), (-1, 4, 1)):
        with pytest.raises(ValueError):
            window_starts(*bad)


def test_windows_are_slices_at_the_starts_and_a_short_clip_is_tiled():
    x = np.arange(2 * 3 * 130, dtype=np.float32).reshape(2, 3, 130)
    w = windows(x, 61, 30)
    assert w.shape == (3, 2, 3, 61) and w.dtype == np.float32
    for k, s in enumerate((0, 30, 60)):
        np.testing.assert_array_equal(w[k], x[:, :, s:s + 61])
    short = windows(x[:, :, :25], 61)
    assert short.shape == (1, 2, 3, 61)
    np.testing.assert_array_equal(short[0], np.concatenate([x[:, :, :25]] * 3, axis=2)[:, :, :61])
    np.testing.assert_array_equal(tile_to_window(x[:, :, :25], 61), short[0])
    with pytest.raises(AudioInputError, match="too short"):
        windows(x[:, :, :0], 61)
    with pytest.raises(AudioInputError, match="channels, mels, frames"):
        windows(x[0], 61)


def test_hop_in_seconds_rounds_to_frames():
    spec = PRESETS["edge"]  # 16 kHz, 256-sample hop
    assert hop_frames(spec, 61) == 30
    assert hop_frames(spec, 61, 0.5) == 31  # 31.25 frames
    assert hop_frames(spec, 61, 0.496) == 31
    assert hop_frames(spec, 61, 0.001) == 1
    for bad in (0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(ConfigError, match="hop"):
            hop_frames(spec, 61, bad)


@pytest.mark.parametrize("n_frames", [0, 1, 25, 60, 61, 62, 91, 130, 200])
@pytest.mark.parametrize("W, hop", [(61, 30), (10, 3), (10, 10), (5, 17)])
def test_assembler_pushed_in_any_split_then_flushed_equals_windows(rng, n_frames, W, hop):
    feats = rng.standard_normal((2, 4, n_frames)).astype(np.float32)
    want = [] if n_frames == 0 else list(windows(feats, W, hop))
    asm = WindowAssembler(W, hop)
    got, pos = [], 0
    while pos < n_frames:
        n = int(rng.integers(0, 23))
        got += asm.push(feats[..., pos:pos + n])
        pos += n
    got += asm.flush()
    assert asm.flush() == []  # the tiled window of a short stream comes once
    assert [s for s, _ in got] == list(window_starts(n_frames, W, hop))
    assert len(got) == len(want)
    for (_, a), b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_assembler_reset_starts_a_new_stream(rng):
    feats = rng.standard_normal((1, 2, 40)).astype(np.float32)
    asm = WindowAssembler(10, 5)
    first = asm.push(feats)
    asm.reset()
    again = asm.push(feats)
    assert [s for s, _ in first] == [s for s, _ in again] == list(range(0, 31, 5))
    with pytest.raises(ConfigError):
        WindowAssembler(0, 1)


def test_one_window_start_function():
    """Every window start in the package comes from frontend.windows.window_starts: no second slicing rule."""
    import pathlib
    import re

    import edge_asc

    root = pathlib.Path(edge_asc.__file__).parent
    pattern = re.compile(r"range\(0, [^)]*- *(w|W|window|window_frames) *\+ *1")
    hits = [str(p.relative_to(root)) for p in root.rglob("*.py")
            if p.name != "windows.py" and pattern.search(p.read_text())]
    assert hits == []
    defs = [str(p.relative_to(root)) for p in root.rglob("*.py") if "def window_starts(" in p.read_text()]
    assert defs == ["frontend/windows.py"]
