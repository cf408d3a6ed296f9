"""Wall time of each `edge-asc demo` stage (goal: the full demo <= 10 minutes on the 2-core machine; --quick <= 2).

    python benchmarks/demo.py [--quick] --json runs/bench/demo.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _util import parser, write_json

from edge_asc.cli import main as cli


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        t0 = time.perf_counter()
        rc = cli(["demo", "--out", str(out)] + (["--quick"] if args.quick else []))
        wall = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text()) if rc == 0 else {}
    goal = 120.0 if args.quick else 600.0
    results = {"quick": args.quick, "exit_code": rc, "wall_s": round(wall, 1), "goal_s": goal,
               "meets_goal": rc == 0 and wall <= goal, "stages_s": summary.get("timings_s", {}),
               "float": summary.get("float"), "int8": summary.get("int8")}
    write_json(args.json, results)
    print(f"demo{' --quick' if args.quick else ''}: {wall:.0f} s wall (goal <= {goal:.0f} s) "
          f"stages {results['stages_s']} -> {'OK' if results['meets_goal'] else 'MISSED'}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
