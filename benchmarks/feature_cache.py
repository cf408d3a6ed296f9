"""Feature-cache build speed and memory for TAU-sized data: clips/s of the ``paper`` front end on 10-s 44.1-kHz clips.

Writes N seeded 10-s clips at 44.1 kHz as 24-bit mono WAV (TAU Urban Acoustic Scenes 2020 Mobile's format), then
builds the feature cache (:func:`edge_asc.train.cache.build_cache`, ``paper`` FrontendSpec: 3 x 256 mels x 421
frames per clip) from scratch in a fresh process for every dataset size and worker count. Reports:

- build wall time and clips/s (worker start-up included), CPU seconds per clip (the process and its workers), and
  the projected time to cache all of TAU 2020 Mobile development (13,965 + 2,970 = 16,935 clips) on this machine
  at the best measured worker count: as measured (under whatever load the machine had) and from the CPU time with
  the cores free;
- peak RSS of the building process (its own VmHWM) and of each worker and of the whole process tree (psutil samples
  every 10 ms), at two dataset sizes: memory is bounded when these do not grow with the size;
- the parent memory that does grow with the dataset (clip list and bookkeeping, no feature data), in KB per clip,
  from builds of 500 and 5000 tiny clips;
- disk bytes per clip (float16) and the float16 rounding error against the exact float32 features.

The WAVs are in the page cache when built (just written), so this measures CPU work; a cold TAU copy adds the read
of ~1.3 MB per clip. On a shared machine other processes' load changes the numbers: the JSON records the load
average before and after.

    python benchmarks/feature_cache.py --json runs/bench/feature_cache.json [--sizes 100 400] [--workers 1 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import parser, write_json

SECONDS = 10.0
SAMPLE_RATE = 44_100
TAU2020_CLIPS = 13_965 + 2_970
"""TAU Urban Acoustic Scenes 2020 Mobile development: train + evaluate split of the 10-s clips."""

#: Builds the cache of the clips listed in argv[1] into argv[2] with argv[3] workers and the argv[4] front end; prints
#: the build time, the CPU seconds of the process and its (joined) workers, and the process's RSS before the build
#: and its peak (VmHWM) as JSON. A fresh process
#: per build, so one build's pages do not count in the next.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from edge_asc.spec import PRESETS
from edge_asc.train.cache import build_cache
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
def status(key):
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith(key)][0]
if __name__ == "__main__":
    paths = [Path(p) for p in Path(sys.argv[1]).read_text().split()]
    ids = [p.stem for p in paths]
    rss0 = status("VmRSS")
    t0, c0 = time.perf_counter(), cpu()
    store = build_cache(paths, ids, PRESETS[sys.argv[4]], sys.argv[2], workers=int(sys.argv[3]), dtype="float16")
    build_s, cpu_s = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({"build_s": build_s, "cpu_s": cpu_s, "parent_vmhwm_kb": status("VmHWM"),
                      "parent_rss_before_build_kb": rss0, "entry": str(store.path)}))
"""


def write_clips(folder: Path, n: int) -> list[Path]:
    """``n`` seeded clips: white noise plus three tones, levels varying per clip; 24-bit PCM like TAU."""
    from edge_asc.audio import write_audio

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        noise = rng.standard_normal(t.size) * 10 ** rng.uniform(-3.5, -1.5)
        tones = sum(rng.uniform(0.01, 0.1) * np.sin(2 * np.pi * rng.uniform(80, 8000) * t) for _ in range(3))
        x = (noise + tones).astype(np.float32)
        p = folder / f"clip{i:05d}.wav"
        write_audio(p, np.clip(x, -1, 1), SAMPLE_RATE, subtype="PCM_24")
        out.append(p)
    return out


def build(paths: list[Path], cache: Path, workers: int, work: Path, preset: str = "paper") -> dict:
    """One build in a fresh process, its process tree sampled for RSS every 10 ms."""
    import psutil

    listing = work / f"clips-{len(paths)}.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    err_log = work / f"build-{len(paths)}-w{workers}.stderr"  # a file, not a pipe: nobody reads it while polling
    with open(err_log, "w") as err_fh:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(listing), str(cache), str(workers), preset],
                                env=env, stdout=subprocess.PIPE, stderr=err_fh, text=True)
    ps = psutil.Process(proc.pid)
    peak_parent = peak_worker = peak_total = 0
    worker_pids: set[int] = set()
    while proc.poll() is None:
        try:
            kids = ps.children(recursive=True)
            rss = [ps.memory_info().rss] + [k.memory_info().rss for k in kids]
        except psutil.Error:  # a process ended between listing and reading
            time.sleep(0.01)
            continue
        worker_pids.update(k.pid for k in kids)
        peak_parent = max(peak_parent, rss[0])
        peak_worker = max([peak_worker, *rss[1:]])
        peak_total = max(peak_total, sum(rss))
        time.sleep(0.01)
    out, _ = proc.communicate()
    err = err_log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"cache build failed (exit {proc.returncode}):\n{err[-3000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    entry = Path(r["entry"])
    disk = sum(p.stat().st_size for p in (entry / "chunks").glob("*.f16"))
    mb = 1 / 2**20
    return {
        "clips": len(paths), "workers": workers, "build_s": round(r["build_s"], 2),
        "clips_per_s": round(len(paths) / r["build_s"], 2),
        "cpu_s": round(r["cpu_s"], 2), "cpu_s_per_clip": round(r["cpu_s"] / len(paths), 4),
        "parent_peak_rss_mb": round(r["parent_vmhwm_kb"] / 1024, 1),
        "parent_rss_growth_kb": r["parent_vmhwm_kb"] - r["parent_rss_before_build_kb"],
        "parent_peak_rss_sampled_mb": round(peak_parent * mb, 1),
        "worker_peak_rss_sampled_mb": round(peak_worker * mb, 1) if worker_pids else None,
        "tree_peak_rss_sampled_mb": round(peak_total * mb, 1),
        "child_processes_seen": len(worker_pids),
        "disk_bytes_per_clip": disk // len(paths),
        "entry": str(entry),
    }


def bookkeeping(work: Path, sizes=(500, 5000)) -> dict:
    """Parent memory that does grow with the dataset: the clip list, ids, frame counts and chunk jobs. Builds caches
    of many 0.25-s 16-kHz clips (``edge`` front end, in-process) so that the per-clip bookkeeping dominates, and
    reports the growth of the building process's peak RSS over its RSS before the build, per clip."""
    from edge_asc.audio import write_audio

    folder = work / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(max(sizes)):
        p = folder / f"t{i:05d}.wav"
        write_audio(p, (0.1 * rng.standard_normal(4000)).astype(np.float32), 16_000)
        paths.append(p)
    runs = [build(paths[:n], work / f"tiny-cache-{n}", 1, work, preset="edge") for n in sizes]
    growth = [r["parent_rss_growth_kb"] for r in runs]
    return {"clips": list(sizes), "parent_rss_growth_kb": growth,
            "kb_per_clip": round((growth[-1] - growth[0]) / (sizes[-1] - sizes[0]), 3)}


def float16_error(paths: list[Path], entry_cache: Path, n: int = 20) -> dict:
    """Max abs / relative error of the float16 store against the exact features, over the first ``n`` clips."""
    from edge_asc.audio import load_audio
    from edge_asc.frontend import offline
    from edge_asc.spec import PRESETS
    from edge_asc.train.cache import build_cache

    spec = PRESETS["paper"]
    store = build_cache(paths, [p.stem for p in paths], spec, entry_cache, workers=1, dtype="float16")  # opened
    abs_err = rel_err = 0.0
    lo, hi = np.inf, -np.inf
    for i in range(min(n, len(paths))):
        ref = offline(load_audio(paths[i], spec.sample_rate)[0], spec).astype(np.float64)
        e = np.abs(store[i] - ref)
        abs_err = max(abs_err, float(e.max()))
        big = np.abs(ref) > 1e-3
        rel_err = max(rel_err, float((e[big] / np.abs(ref[big])).max()))
        lo, hi = min(lo, float(ref[0].min())), max(hi, float(ref[0].max()))
    return {"clips": min(n, len(paths)), "max_abs_error": abs_err, "max_rel_error": rel_err,
            "rel_bound": 2.0**-11, "log_mel_db_range": [lo, hi]}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 400], help="dataset sizes in clips (default 100 400)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    p.add_argument("--work", help="folder for the clips and caches (default: a temporary folder, removed)")
    args = p.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edge-asc-cache-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        t0 = time.perf_counter()
        clips = write_clips(work / "clips", max(args.sizes))
        gen_s = time.perf_counter() - t0
        runs = []
        for size in sorted(args.sizes):
            for w in args.workers:
                r = build(clips[:size], work / f"cache-{size}-w{w}", w, work)
                runs.append(r)
                print(f"  {size:5d} clips, {w} worker(s): {r['build_s']:7.1f} s, {r['clips_per_s']:6.1f} clips/s, "
                      f"{r['cpu_s_per_clip'] * 1000:.0f} CPU ms/clip, "
                      f"peak RSS parent {r['parent_peak_rss_mb']:.0f} MB, worker "
                      f"{r['worker_peak_rss_sampled_mb'] or 0:.0f} MB, tree {r['tree_peak_rss_sampled_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
        biggest = max(args.sizes)
        f16 = float16_error(clips[:biggest], work / f"cache-{biggest}-w{args.workers[0]}")
        books = bookkeeping(work)
        # the same bytes whatever the worker count
        same = len({tuple((q.name, q.read_bytes()) for q in sorted((Path(r["entry"]) / "chunks").glob("*.f16")))
                    for r in runs if r["clips"] == biggest}) == 1
    load_after = os.getloadavg()
    best = max((r for r in runs if r["clips"] == biggest), key=lambda r: r["clips_per_s"])
    by_size = {w: sorted((r for r in runs if r["workers"] == w), key=lambda r: r["clips"]) for w in args.workers}
    results = {
        "clip": {"seconds": SECONDS, "sample_rate": SAMPLE_RATE, "format": "WAV PCM_24 mono", "frontend": "paper"},
        "generate_s": round(gen_s, 1),
        "runs": runs,
        "best": {"workers": best["workers"], "clips_per_s": best["clips_per_s"]},
        "tau2020_mobile": {
            "clips": TAU2020_CLIPS,
            "projected_hours": round(TAU2020_CLIPS / best["clips_per_s"] / 3600, 2),
            # what the same work takes with every core free: CPU seconds per clip (parallel runs include worker
            # start-up and the parent's share) spread over min(workers, cores) cores
            "projected_hours_idle_machine": round(min(
                TAU2020_CLIPS * r["cpu_s_per_clip"] / min(r["workers"], os.cpu_count() or 1) / 3600
                for r in runs if r["clips"] == biggest), 2),
            "projected_disk_gb": round(TAU2020_CLIPS * best["disk_bytes_per_clip"] / 1e9, 2),
        },
        "rss_growth_mb": {str(w): {k: round((rs[-1][k] or 0) - (rs[0][k] or 0), 1)
                                   for k in ("parent_peak_rss_mb", "worker_peak_rss_sampled_mb",
                                             "tree_peak_rss_sampled_mb")}
                          for w, rs in by_size.items() if len(rs) > 1},
        "bookkeeping": books,
        "tau2020_bookkeeping_mb": round(books["kb_per_clip"] * TAU2020_CLIPS / 1024, 1),
        "bit_identical_across_workers": same,
        "float16": f16,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    write_json(args.json, results)
    t = results["tau2020_mobile"]
    print(f"feature_cache[paper, 10-s 44.1-kHz clips]: {best['clips_per_s']:.1f} clips/s with {best['workers']} "
          f"worker(s) -> TAU 2020 Mobile ({TAU2020_CLIPS} clips) in {t['projected_hours']:.2f} h here "
          f"({t['projected_hours_idle_machine']:.2f} h with the cores idle), "
          f"{t['projected_disk_gb']:.1f} GB float16; RSS growth {args.sizes[0]}->{biggest} clips: "
          + ", ".join(f"w{w} tree {g['tree_peak_rss_sampled_mb']:+.0f} MB" for w, g in results["rss_growth_mb"].items())
          + f" (bookkeeping {books['kb_per_clip']:.2f} KB/clip)"
          + f"; float16 max error {f16['max_abs_error']:.4f} dB; bit-identical across workers: {same}; "
          f"load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
