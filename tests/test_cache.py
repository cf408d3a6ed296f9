"""Feature cache (edge_asc.train.cache): float16 storage and its error bound, worker-count invariance, resume after
SIGKILL, and the errors a bad clip list gives. Seeded tone-plus-noise clips written at test time; numpy +
soundfile only (no torch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require

sf = require("soundfile")

from edge_asc.audio import load_audio, write_audio
from edge_asc.errors import AudioInputError, ConfigError, DatasetError
from edge_asc.frontend import offline
from edge_asc.spec import PRESETS
from edge_asc.train.cache import CACHE_VERSION, build_cache

REPO = Path(__file__).resolve().parents[1]
F16 = {"dtype": "float16"}  # these tests exercise the float16 store (what 'auto' picks for TAU-sized data)


def make_clips(folder: Path, n: int, seconds: float, sr: int, seed: int = 0) -> list[Path]:
    """``n`` clips: a tone whose pitch and level vary per clip, in noise, one clip near silence (for -100 dB)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(n):
        level = 10 ** rng.uniform(-3, -0.3) if i != 1 else 0.0
        x = level * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 10 ** rng.uniform(-4, -1.5) * (
            rng.standard_normal(t.size)) * (i != 1)
        p = folder / f"clip{i:03d}.wav"
        write_audio(p, x.astype(np.float32), sr)
        out.append(p)
    return out


def entry_of(cache_dir: Path) -> Path:
    (e,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return e


def files_of(entry: Path) -> dict[str, bytes]:
    """Every file of a finished entry but the journal (whose line order follows completion order)."""
    return {str(p.relative_to(entry)): p.read_bytes() for p in sorted(entry.rglob("*"))
            if p.is_file() and p.name != "journal.jsonl"}


def test_float16_store_within_its_rounding_bound(tmp_path):
    spec = PRESETS["paper"]
    paths = make_clips(tmp_path / "a", 3, 1.0, 44_100)
    store = build_cache(paths, [p.stem for p in paths], spec, tmp_path / "c", workers=1, **F16)
    assert f"-v{CACHE_VERSION}" in store.path.name
    worst = 0.0
    for i, p in enumerate(paths):
        ref = offline(load_audio(p, spec.sample_rate)[0], spec)
        got = store[i]
        assert got.dtype == np.float32 and got.shape == ref.shape and store.raw(i).dtype == np.float16
        err = np.abs(got.astype(np.float64) - ref)
        # round to nearest in float16: half a unit in the last place, 2^-11 relative (2^-25 absolute in subnormals)
        assert np.all(err <= np.maximum(np.abs(ref) * 2.0**-11, 2.0**-25))
        worst = max(worst, float(err.max()))
        np.testing.assert_array_equal(got, ref.astype(np.float16).astype(np.float32))
    assert float(np.min(store[1][0])) == pytest.approx(-100.0)  # the silent clip reaches 10*log10(amin)
    assert 0 < worst <= 2.0**-11 * 100  # dB values stay below 128 in magnitude: <= 0.05 dB
    # the normalisation statistics are those of the exact float32 features, computed as the float32 cache did
    s, s2, n = np.zeros(3), np.zeros(3), 0
    for p in paths:
        x = offline(load_audio(p, spec.sample_rate)[0], spec).astype(np.float64)
        s, s2, n = s + x.sum(axis=(1, 2)), s2 + (x * x).sum(axis=(1, 2)), n + x.shape[1] * x.shape[2]
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    assert store.channel_stats() == (tuple(float(v) for v in mean), tuple(float(v) for v in std))


def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    spec = PRESETS["edge"]
    paths = make_clips(tmp_path / "a", 12, 1.0, 16_000)
    ids = [p.stem for p in paths]
    calls: dict[int, list] = {1: [], 2: []}
    stores = {w: build_cache(paths, ids, spec, tmp_path / f"c{w}", workers=w, chunk_clips=2,
                             on_clip=lambda d, n, w=w: calls[w].append((d, n)), **F16) for w in (1, 2)}
    for w in (1, 2):
        assert calls[w] == [(d, 12) for d in range(1, 13)]
    one, two = files_of(stores[1].path), files_of(stores[2].path)
    assert len([k for k in one if k.startswith("chunks")]) == 6
    assert one == two
    assert stores[1].path.name == stores[2].path.name
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(stores[2][i], offline(load_audio(p)[0], spec).astype(np.float16))
    # reused, not recomputed
    again = []
    b = build_cache(paths, ids, spec, tmp_path / "c2", workers=2, on_clip=lambda d, n: again.append(d), **F16)
    assert again == [] and b.path == stores[2].path and len(b) == 12


_KILL_SELF = """
import os, signal, sys
from pathlib import Path
from edge_asc.spec import PRESETS
from edge_asc.train.cache import build_cache
paths = sorted(Path(sys.argv[1]).glob("*.wav"))
def on_clip(done, total):
    if done == int(sys.argv[3]):  # after this clip's bytes reach the chunk's temporary file, before its rename
        os.kill(os.getpid(), signal.SIGKILL)
build_cache(paths, [p.stem for p in paths], PRESETS["edge"], sys.argv[2], workers=1, chunk_clips=3, on_clip=on_clip,
            dtype="float16")
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_sigkill_mid_chunk_resumes_to_the_uninterrupted_cache(tmp_path):
    spec = PRESETS["edge"]
    paths = make_clips(tmp_path / "a", 10, 1.0, 16_000)
    ids = [p.stem for p in paths]
    r = subprocess.run([sys.executable, "-c", _KILL_SELF, str(tmp_path / "a"), str(tmp_path / "c"), "8"],
                       env=_env(), capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()
    entry = entry_of(tmp_path / "c")
    assert not (entry / "index.json").exists()  # never served half-built
    assert sorted(p.name for p in (entry / "chunks").glob("*.f16")) == ["000000.f16", "000001.f16"]
    assert list((entry / "chunks").glob(".000002.f16.*.tmp"))  # chunk 2 died half-written
    lines = (entry / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x)["chunk"] for x in lines] == [0, 1]
    # a kill during the journal append leaves a torn line: it must be ignored, not glued to the next record
    with open(entry / "journal.jsonl", "a") as f:
        f.write('{"chunk": 3, "by')
    kept = {k: (entry / "chunks" / f"00000{k}.f16").stat().st_mtime_ns for k in (0, 1)}
    calls = []
    store = build_cache(paths, ids, spec, tmp_path / "c", workers=1, on_clip=lambda d, n: calls.append(d), **F16)
    assert calls == list(range(1, 11))  # 6 clips reported as already done, then 4 computed
    assert {k: (entry / "chunks" / f"00000{k}.f16").stat().st_mtime_ns for k in (0, 1)} == kept
    # the torn fragment was dropped: every journal line parses and each chunk is journaled once
    assert sorted(json.loads(x)["chunk"] for x in (entry / "journal.jsonl").read_text().splitlines()) == [0, 1, 2, 3]
    assert not list((entry / "chunks").glob(".*.tmp"))  # the dead build's temporary file is gone
    # the chunk size of the resumed build wins
    ref = build_cache(paths, ids, spec, tmp_path / "ref", workers=1, chunk_clips=5, **F16)
    assert files_of(store.path).keys() >= {"index.json", "build.json"}
    assert json.loads((store.path / "build.json").read_text())["chunk_clips"] == 3
    for i in range(10):
        np.testing.assert_array_equal(store[i], ref[i])
    fresh = build_cache(paths, ids, spec, tmp_path / "fresh", workers=1, chunk_clips=3, **F16)
    assert files_of(store.path) == files_of(fresh.path)


_BUILD_PARALLEL = """
import sys
from pathlib import Path
from edge_asc.spec import PRESETS
from edge_asc.train.cache import build_cache
if __name__ == "__main__":
    paths = sorted(Path(sys.argv[1]).glob("*.wav"))
    build_cache(paths, [p.stem for p in paths], PRESETS["paper"], sys.argv[2], workers=2, chunk_clips=2,
                dtype="float16")
"""


def test_sigkill_of_a_parallel_build_resumes(tmp_path):
    spec = PRESETS["paper"]
    paths = make_clips(tmp_path / "a", 24, 6.0, 44_100)  # enough work that the kill lands mid-build
    ids = [p.stem for p in paths]
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(_BUILD_PARALLEL))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "c")], env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal is None:
                found = list((tmp_path / "c").glob("*/journal.jsonl"))
                journal = found[0] if found else None
            if journal is not None and journal.read_text().count("\n") >= 1:
                break
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers
        proc.wait(timeout=30)
    assert journal is not None, "the build never finished a chunk"
    entry = journal.parent
    assert not (entry / "index.json").exists(), "the build finished before the kill: the test needs more work"
    n_done = len([x for x in journal.read_text().splitlines() if x.strip()])
    assert 1 <= n_done < 12
    calls = []
    store = build_cache(paths, ids, spec, tmp_path / "c", workers=2, on_clip=lambda d, n: calls.append(d), **F16)
    assert calls == list(range(1, 25))
    fresh = build_cache(paths, ids, spec, tmp_path / "fresh", workers=1, chunk_clips=2, **F16)
    assert files_of(store.path) == files_of(fresh.path)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_clip_gives_one_line_and_leaves_no_entry(tmp_path, workers):
    paths = make_clips(tmp_path / "a", 6, 0.5, 16_000)
    bad = tmp_path / "a" / "clip004.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(100))
    with pytest.raises(AudioInputError) as e:
        build_cache(paths, [p.stem for p in paths], PRESETS["edge"], tmp_path / "c", workers=workers, chunk_clips=2,
                    **F16)
    msg = str(e.value)
    assert "clip004.wav" in msg and "\n" not in msg
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]


def test_bad_arguments_and_a_damaged_entry(tmp_path):
    spec = PRESETS["edge"]
    paths = make_clips(tmp_path / "a", 3, 0.5, 16_000)
    ids = [p.stem for p in paths]
    with pytest.raises(ConfigError, match="workers"):
        build_cache(paths, ids, spec, tmp_path / "c", workers=0, **F16)
    with pytest.raises(ConfigError, match="chunk_clips"):
        build_cache(paths, ids, spec, tmp_path / "c", chunk_clips=0, **F16)
    with pytest.raises(DatasetError, match="missing"):
        build_cache([*paths, tmp_path / "nope.wav"], [*ids, "nope"], spec, tmp_path / "c", **F16)
    store = build_cache(paths, ids, spec, tmp_path / "c", workers=1, **F16)
    with pytest.raises(IndexError):
        store[3]
    chunk = sorted((store.path / "chunks").glob("*.f16"))[-1]
    with open(chunk, "r+b") as f:
        f.truncate(chunk.stat().st_size - 2)
    with pytest.raises(DatasetError, match="damaged"):
        build_cache(paths, ids, spec, tmp_path / "c", workers=1, **F16)


def test_features_command_fills_the_cache_that_train_reads(tiny_dataset, tmp_path, capsys):
    from edge_asc.cli import main
    from edge_asc.data import load_dataset

    require("torch")
    from edge_asc.train.loop import TrainConfig, train

    cache = tmp_path / "cache"
    assert main(["features", "--data", str(tiny_dataset), "--preset", "edge", "--cache-dir", str(cache),
                 "--no-progress", "--json"]) == 0  # default workers: in-process for this small set
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["train"]["clips"] == 110 and out["splits"]["evaluate"]["clips"] == 90
    entries = {r["entry"] for r in out["splits"].values()}
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}

    class FeaturesDone(Exception):
        pass

    lines = []

    def log(line):  # stop the run once both splits' features are loaded: the model part is not under test
        lines.append(line)
        if line.startswith("features (evaluate)"):
            raise FeaturesDone

    with pytest.raises(FeaturesDone):
        train(load_dataset(tiny_dataset), tmp_path / "run", TrainConfig(preset="edge", epochs=1), cache_dir=cache,
              log=log, progress=False)
    assert {x.rsplit("-> ", 1)[1] for x in lines if x.startswith("features (")} == entries
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == before  # reused, nothing rewritten


def test_features_command_usage_errors(tmp_path, capsys):
    from edge_asc.cli import main

    assert main(["features"]) == 2
    assert main(["features", "--data", str(tmp_path)]) == 2  # no --cache-dir
    assert main(["features", "--data", str(tmp_path), "--cache-dir", str(tmp_path / "c"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_auto_dtype_is_float32_for_small_sets_and_float16_from_the_threshold(tmp_path, monkeypatch):
    import edge_asc.train.cache as cache_mod

    spec = PRESETS["edge"]
    paths = make_clips(tmp_path / "a", 3, 1.0, 16_000)
    ids = [p.stem for p in paths]
    small = build_cache(paths, ids, spec, tmp_path / "c", workers=1)
    assert small.path.name.endswith("-float32") and small.raw(0).dtype == np.float32
    np.testing.assert_array_equal(small[0], offline(load_audio(paths[0])[0], spec))  # exact features
    monkeypatch.setattr(cache_mod, "FLOAT16_AUDIO_BYTES", sum(p.stat().st_size for p in paths))
    large = build_cache(paths, ids, spec, tmp_path / "c", workers=1)
    assert large.path.name.endswith("-float16") and large.raw(0).dtype == np.float16
    assert large.path != small.path and sorted(p.name for p in (large.path / "chunks").iterdir())[0].endswith(".f16")
    with pytest.raises(ConfigError, match="float16, float32 or auto"):
        build_cache(paths, ids, spec, tmp_path / "c", dtype="int8")
