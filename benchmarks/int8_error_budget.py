"""Where does a full-int8 export lose agreement with its float model? One int8 tensor at a time, in the simulation.

For a trained run: :class:`edge_asc.train.qat.QuantSim` (the converter's int8 graph, op for op, calibrated on the
300 windows ``edge-asc export`` draws) on the held-out windows ``edge-asc export`` verifies on, compared with the
float model: window top-1 agreement and event top-4 set agreement with every int8 point on, with one group only
(weights, input, logits, the event block), with each activation point alone and with each weight tensor alone.
Controls: the *float* model on inputs with uniform noise of a fraction of one int8 input step (no quantisation
anywhere), which says how sensitive the model's decisions are to input changes far below what any int8 file must
make.

    .venv/bin/python benchmarks/int8_error_budget.py --run RUN --data DATA [--json runs/bench/int8_error_budget.json]

No goals: it measures where the error of ``benchmarks/int8_fidelity.py``'s rows comes from (docs/qat.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _util import parser, write_json


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run (checkpoint folder)")
    p.add_argument("--data", required=True, help="its dataset")
    p.add_argument("--calib-size", type=int, default=300, help="calibration windows (edge-asc export's default)")
    p.add_argument("--noise", type=float, nargs="*", default=[0.5, 0.1, 0.01],
                   help="input noise controls, in int8 input steps (uniform +-)")
    p.add_argument("--top", type=int, default=12, help="single points printed (worst first)")
    p.add_argument("--float-weights", type=int, nargs="*", default=[], metavar="I",
                   help="also measure the whole int8 graph with these weight tensors (indices as printed) kept float")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from edge_asc.calibration import build_calibration
    from edge_asc.data import load_dataset
    from edge_asc.export.verify import FloatRun, grid_agreement, held_out_clips, held_out_windows
    from edge_asc.train.checkpoint import load_checkpoint
    from edge_asc.train.qat import QuantSim, activation_qparams

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    model, meta = load_checkpoint(args.run)
    labels = tuple(meta.labels)
    calib = build_calibration(ds, meta.frontend, meta.window_frames, size=args.calib_size,
                              labels=labels).normalized_nchw()
    wins = held_out_windows(meta.frontend, meta.window_frames, ds, held_out_clips(ds, labels)).astype(np.float32)
    sim = QuantSim(model).eval()
    sim.calibrate(calib)
    channels = model.config.channels[0]

    def forward(mode: str, only: set[str] | None, x: np.ndarray) -> FloatRun:
        sim.q.mode, sim.q.only = mode, only
        logits, events = [], []
        with torch.no_grad():
            for s in range(0, len(x), 128):
                logits.append(sim(torch.from_numpy(np.ascontiguousarray(x[s:s + 128]))).numpy())
                if sim.events_out is not None:
                    events.append(np.rint(sim.events_out.numpy() * channels).astype(np.int64))
        return FloatRun(logits=np.concatenate(logits), events=np.concatenate(events) if events else None, counts=None)

    fl = forward("float", None, wins)

    def agreement(run: FloatRun) -> dict[str, float | None]:
        top1, ev = grid_agreement(fl, run)
        return {"top1": top1, "event_set": ev}

    points = sorted(sim.q.observed)
    event_points = {n for n in points if n.startswith("ev.")}
    groups = {"all": None, "weights": {"weights"}, "input": {"input"}, "logits": {"logits"},
              "event block": event_points, "all but the event block": (set(points) - event_points) | {"weights"}}
    group_rows = {name: agreement(forward("quant", only, wins)) for name, only in groups.items()}
    single = {n: agreement(forward("quant", {n}, wins)) for n in points}
    weights, kept_float = _weight_budget(sim, forward, agreement, wins, set(args.float_weights))
    step = activation_qparams(*sim.q.range_of("input"))[0]
    rng = np.random.default_rng(0)
    noise = {}
    for frac in args.noise:
        noisy = wins + rng.uniform(-frac * step, frac * step, wins.shape).astype(np.float32)
        noise[f"{frac:g}"] = agreement(forward("float", None, noisy))

    out = {"run": str(Path(args.run)), "data": str(Path(args.data)), "n_windows": len(wins),
           "calib_size": args.calib_size, "input_step": step, "groups": group_rows, "single_points": single,
           "single_weights": weights, "float_weights": args.float_weights, "all_but_float_weights": kept_float,
           "input_noise_float": noise, "seconds": time.perf_counter() - t0}
    write_json(args.json, out)

    def text(r: dict) -> str:
        ev = "-" if r["event_set"] is None else f"{r['event_set']:.3f}"
        return f"top-1 {r['top1']:.3f}, event set {ev}"

    print(f"{len(wins)} held-out windows; int8 points quantised, the rest float:")
    for name, r in group_rows.items():
        print(f"  {name:26s} {text(r)}")
    print(f"  one point alone, {args.top} lowest top-1:")
    for n, r in sorted(single.items(), key=lambda kv: kv[1]["top1"])[:args.top]:
        print(f"    {n:24s} {text(r)}")
    print(f"  one weight tensor alone (activations float), {args.top} lowest top-1:")
    for r in sorted(weights, key=lambda r: r["top1"])[:args.top]:
        print(f"    #{r['index']:<3d} {tuple(r['shape'])!s:18s} {text(r)}")
    if kept_float is not None:
        print(f"  every int8 point but weight tensors {sorted(args.float_weights)}: {text(kept_float)}")
    for frac, r in noise.items():
        print(f"  float model, input + uniform noise of +-{frac} int8 input step: {text(r)}")
    print(f"int8_error_budget: {out['seconds']:.0f} s")
    return 0


def _weight_budget(sim, forward, agreement, wins: np.ndarray, keep_float: set[int]) -> tuple[list[dict], dict | None]:
    """Each CONV_2D / FULLY_CONNECTED weight tensor quantised alone (every activation float): rows of its index in
    the simulation's forward order, its shape, and the agreement with the float model; and, when ``keep_float`` names
    some, the whole int8 graph with those weight tensors float (None otherwise)."""
    from edge_asc.train.qat import fq_weight

    seen: list[tuple[int, ...]] = []
    state: dict = {"i": 0, "quantise": set()}

    def w(t):
        i = state["i"]
        state["i"] += 1
        if i == len(seen):
            seen.append(tuple(t.shape))
        return fq_weight(t) if i in state["quantise"] else t

    def run(quantise: set[int], only: set[str] | None):
        state["quantise"] = quantise
        return forward("quant", only, wins)

    sim.q.w = w
    restart = sim.register_forward_pre_hook(lambda *_: state.update(i=0))  # indices count within one forward
    try:
        run(set(), set())
        rows = [{"index": i, "shape": list(shape), **agreement(run({i}, set()))} for i, shape in enumerate(seen)]
        kept = agreement(run(set(range(len(seen))) - keep_float, None)) if keep_float else None
        return rows, kept
    finally:
        restart.remove()
        del sim.q.w


if __name__ == "__main__":
    raise SystemExit(main())
