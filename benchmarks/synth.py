"""Speed and determinism of the synthetic dataset generator.

Goal: 1,000 clips of 1 s at 16 kHz (``--clips-per-class 100``) written in <= 30 s on the 2-core dev machine. The
dataset is generated twice into fresh folders and every file's SHA-256 is compared (byte-identical = deterministic).

    .venv/bin/python benchmarks/synth.py --json out.json [--clips-per-class 100] [--seconds 1.0]
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from _util import parser, write_json

GOAL_SECONDS = 30.0


def tree_hash(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clips-per-class", type=int, default=100)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--sample-rate", type=int, default=16_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from edge_asc.data.synth import synthesize

    times, hashes = [], []
    with tempfile.TemporaryDirectory(prefix="edge-asc-synth-") as tmp:
        for run in range(2):
            t0 = time.perf_counter()
            root = synthesize(Path(tmp) / f"run{run}", clips_per_class=args.clips_per_class, seconds=args.seconds,
                              sample_rate=args.sample_rate, seed=args.seed)
            times.append(time.perf_counter() - t0)
            hashes.append(tree_hash(root))
    n = args.clips_per_class * 10
    best = min(times)
    identical = hashes[0] == hashes[1]
    out = {"clips": n, "seconds_per_clip_audio": args.seconds, "sample_rate": args.sample_rate, "seed": args.seed,
           "wall_seconds": times, "best_seconds": best, "clips_per_second": n / best, "goal_seconds": GOAL_SECONDS,
           "goal_met": best <= GOAL_SECONDS * n / 1000 * args.seconds * args.sample_rate / 16_000,
           "files": len(hashes[0]), "byte_identical": identical}
    write_json(args.json, out)
    print(f"synth: {n} clips of {args.seconds:g} s at {args.sample_rate} Hz in {best:.2f} s ({n / best:.0f} clips/s; "
          f"goal <= {GOAL_SECONDS:.0f} s per 1000 x 1 s); two runs byte-identical: {identical}")


if __name__ == "__main__":
    main()
