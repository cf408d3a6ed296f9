"""Device runtime: int8 LiteRT latency vs the float PyTorch model, end-to-end CPU per audio second, peak RSS.

1. Per-window latency on the same N windows (seeded synthetic audio through the front end): the int8 ``.tflite``
   through :class:`edge_asc.runtime.Classifier` with 1 thread (whole call: normalise + quantise + invoke +
   dequantise; the invoke alone is reported too) vs the float PyTorch model with ``torch.set_num_threads(1)``
   (``--checkpoint`` via ``edge_asc.train.checkpoint.load_checkpoint``; without one, a freshly initialised model of
   the card's ``model_config`` — same architecture and cost, random weights). Goal: median ratio >= 3 for ``edge``.
2. End to end, in subprocesses (CPU = user + sys of the child from ``os.wait4``, startup and imports included):
   ``edge-asc classify F --hop 0.5 --json`` on 60 s of audio, and ``edge-asc listen --input F --realtime --hop 0.5``
   (the file paced like a microphone; 60 s of wall time, skip with ``--no-realtime``).
   Goals for ``edge``: CPU seconds / audio seconds <= 0.05, peak RSS <= 120 MB.

    python benchmarks/runtime.py --model runs/demo/model_int8.tflite [--checkpoint runs/demo/train] \\
        --json runs/bench/runtime.json
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _util import parser, write_json

from edge_asc.audio import write_audio
from edge_asc.frontend import normalize, offline
from edge_asc.runtime import Classifier

DEFAULT_MODEL = "runs/demo/model_int8.tflite"  # what `make demo` writes
GOAL_RATIO = 3.0
GOAL_CPU_PER_AUDIO_S = 0.05
GOAL_RSS_MB = 120.0
AUDIO_SECONDS = 60.0
HOP_S = 0.5


def synthetic_audio(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Seeded noise + tones that change every 5 s (so windows differ), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f = 200.0 * (1 + (np.floor(t / 5.0) % 6))
    x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * f * t)
    return np.clip(x, -1, 1).astype(np.float32)


def stats_ms(times_s) -> dict:
    a = np.asarray(times_s) * 1e3
    return {"median_ms": round(float(np.median(a)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4),
            "mean_ms": round(float(a.mean()), 4), "n": int(a.size)}


def bench_int8(clf: Classifier, windows) -> dict:
    for w in windows[:10]:
        clf.logits(w)
    call, invoke = [], []
    for w in windows:
        t0 = time.perf_counter()
        clf.logits(w)
        call.append(time.perf_counter() - t0)
        invoke.append(clf.last_latency_s)
    return {"call": stats_ms(call), "invoke": stats_ms(invoke), "backend": clf.backend, "threads": clf.threads}


def torch_model(clf: Classifier, checkpoint: str | None):
    import torch

    torch.set_num_threads(1)
    if checkpoint:
        from edge_asc.train.checkpoint import load_checkpoint

        model, meta = load_checkpoint(checkpoint)
        return model, f"checkpoint {checkpoint}", meta.frontend
    from edge_asc.model import build_model, model_preset
    from edge_asc.model.config import MiniSegNetConfig

    card = clf.card
    if card.model_config:
        cfg, src = MiniSegNetConfig.from_dict(dict(card.model_config)), "card.model_config (random init)"
    else:
        cfg, src = model_preset("edge"), "preset 'edge' (random init; the .tflite card has no model_config)"
    torch.manual_seed(0)
    return build_model(cfg).eval(), src, card.frontend


def bench_torch(model, spec, windows) -> dict:
    import torch

    xs = [torch.from_numpy(normalize(w, spec)[None]) for w in windows]
    with torch.inference_mode():
        for x in xs[:10]:
            model(x)
        times = []
        for x in xs:
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return {"call": stats_ms(times), "threads": torch.get_num_threads(), "torch": torch.__version__}


#: Runs ``edge-asc`` and reports the process's own peak RSS (VmHWM of its address space) on exit. ``ru_maxrss`` from
#: wait4 would also count the parent's pages at fork time (Linux carries the pre-exec high-water mark over).
CHILD = """
import atexit, sys
def _hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            sys.stderr.write('EDGE_ASC_VMHWM_KB ' + line.split()[1] + chr(10))
atexit.register(_hwm)
from edge_asc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, "-c", CHILD, *args]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"benchmark child failed (exit {rc}): {' '.join(cmd)}\n{err[-2000:]}")
    cpu = ru.ru_utime + ru.ru_stime
    hwm = [int(line.split()[1]) for line in err.splitlines() if line.startswith("EDGE_ASC_VMHWM_KB ")]
    return {"command": "edge-asc " + " ".join(args), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cpu_per_audio_s": round(cpu / AUDIO_SECONDS, 5), "peak_rss_mb": round(hwm[-1] / 1024, 1) if hwm else None}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"int8 .tflite with a model card (default {DEFAULT_MODEL})")
    p.add_argument("--checkpoint", help="training run whose float model to compare against")
    p.add_argument("--windows", type=int, default=300, help="windows timed per model (default 300)")
    p.add_argument("--no-realtime", action="store_true", help="skip the 60-s real-time paced listen run")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = p.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"no model at {args.model}: export one with 'edge-asc export CHECKPOINT --int8 --out M' "
                         f"and pass --model M")
    clf = Classifier(args.model, threads=1)
    spec = clf.card.frontend
    audio = synthetic_audio(AUDIO_SECONDS, spec.sample_rate)
    feats = offline(audio, spec)
    W = clf.card.window_frames
    starts = np.linspace(0, feats.shape[-1] - W, args.windows).astype(int)
    windows = [np.ascontiguousarray(feats[:, :, s : s + W]) for s in starts]

    res: dict = {"model": args.model, "model_sha256": clf.model_sha256, "model_preset": clf.card.model_preset,
                 "window_seconds": round(clf.card.window_seconds, 4), "input_shape": list(clf.card.input_shape),
                 "input_dtype": clf.card.input_quant.dtype}
    res["int8"] = bench_int8(clf, windows)
    if not args.no_torch:
        model, src, tspec = torch_model(clf, args.checkpoint)
        res["float_torch"] = {**bench_torch(model, tspec, windows), "source": src}
        ratio = res["float_torch"]["call"]["median_ms"] / res["int8"]["call"]["median_ms"]
        res["latency_ratio_float_over_int8"] = round(ratio, 3)
        res["latency_ratio_goal_met"] = ratio >= GOAL_RATIO

    with tempfile.TemporaryDirectory() as d:
        wav = os.path.join(d, "sixty.wav")
        write_audio(wav, audio, spec.sample_rate)
        res["classify_60s"] = run_child(["classify", wav, "--model", args.model, "--hop", str(HOP_S), "--json"])
        res["listen_60s_fast"] = run_child(["listen", "--model", args.model, "--input", wav, "--hop",
                                            str(HOP_S), "--plain"])
        if not args.no_realtime:
            res["listen_60s_realtime"] = run_child(["listen", "--model", args.model, "--input", wav,
                                                    "--realtime", "--hop", str(HOP_S), "--plain"])
    e2e = [v for k, v in res.items() if k.startswith(("classify_", "listen_"))]
    res["goals"] = {"ratio_min": GOAL_RATIO, "cpu_per_audio_s_max": GOAL_CPU_PER_AUDIO_S,
                    "peak_rss_mb_max": GOAL_RSS_MB}
    res["cpu_goal_met"] = all(v["cpu_per_audio_s"] <= GOAL_CPU_PER_AUDIO_S for v in e2e)
    res["rss_goal_met"] = all(v["peak_rss_mb"] <= GOAL_RSS_MB for v in e2e)
    write_json(args.json, res)
    worst_cpu = max(v["cpu_per_audio_s"] for v in e2e)
    worst_rss = max(v["peak_rss_mb"] for v in e2e)
    ratio_txt = (f"float/int8 latency {res['latency_ratio_float_over_int8']:.2f}x "
                 f"(torch {res['float_torch']['call']['median_ms']:.3f} ms) " if "float_torch" in res else "")
    print(f"runtime: int8 median {res['int8']['call']['median_ms']:.3f} ms p99 {res['int8']['call']['p99_ms']:.3f} ms "
          f"(invoke {res['int8']['invoke']['median_ms']:.3f} ms), {ratio_txt}; "
          f"CPU/audio <= {worst_cpu:.4f}, peak RSS <= {worst_rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
