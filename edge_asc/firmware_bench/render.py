"""Render a :class:`~edge_asc.firmware_bench.report.Report`: terminal text (rich when installed), Markdown, PNG."""

from __future__ import annotations

import os
from pathlib import Path

from .._io import atomic_path, atomic_write_text
from ..errors import MissingExtraError
from .budgets import DCASE2022_MAX_MACS_PER_SECOND, DCASE2022_MAX_PARAM_BYTES
from .report import Report


def _b(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n:.0f} B"


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3f} ms" if s < 0.01 else f"{s * 1e3:.1f} ms"


def _shape(shapes) -> str:
    return " ".join("x".join(str(d) for d in s) for s in shapes)


def _yn(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "NO")


def summary_rows(r: Report) -> list[tuple[str, str]]:
    g = r.graph
    by = ", ".join(f"{k} {v['params']:,} ({v['bytes']:,} B)" for k, v in g.param_bytes_by_dtype.items())
    rows = [
        ("model", f"{r.model} ({g.file_bytes:,} bytes, sha256 {r.sha256[:12]})"),
        ("window / hop", f"{r.window_seconds:.3f} s ({r.window_frames or '?'} frames) / {r.hop_seconds:.3f} s"),
        ("parameters", (f"{g.params:,} ({g.nonzero_params:,} non-zero); stored {g.param_bytes:,} bytes "
                        f"({g.nonzero_param_bytes:,} non-zero)")),
        ("by dtype", by or "-"),
        ("MACs", (f"{r.macs_per_inference:,} per inference; {r.macs_per_second_1s:,.0f} per 1 s of audio; "
                  f"{r.macs_per_second_streaming:,.0f}/s streaming at the hop")),
        ("other ops", f"{g.other_ops:,} element-wise/pooling/reduction ops per inference (not MACs)"),
        ("activations", _peak_line(r)),
        ("activation dtypes", _dtype_line(r)),
    ]
    if r.tflm is not None:
        if r.tflm.runs:
            conf = " (confirmed)" if r.tflm.confirmed else (" (NOT confirmed)" if r.tflm.confirmed is False else "")
            rows.append(("TFLM arena", (f"{r.tflm.arena_bytes:,} bytes{conf} (head {r.tflm.head_bytes:,}, "
                                        f"tail {r.tflm.tail_bytes:,}), tflite-micro {r.tflm.tflm_version}")))
        else:
            rows.append(("TFLM arena", (f"CANNOT RUN: {r.tflm.error}; unsupported ops: "
                                        f"{', '.join(r.tflm.unsupported_ops) or '?'}")))
    for acc, v in r.vela.items():
        cpu = f"; CPU ops: {', '.join(o.op for o in v.cpu_ops)}" if v.cpu_ops else "; all ops on the NPU"
        rows.append((f"Vela {acc}", (f"{v.inference_seconds * 1e3:.3f} ms ({v.cycles:,} cycles @ "
                                     f"{v.clock_hz / 1e6:.0f} MHz), SRAM {v.sram_bytes:,} B, "
                                     f"flash {v.flash_bytes:,} B{cpu}")))
    for w in r.warnings:
        rows.append(("warning", w))
    return rows


def _dtype_line(r: Report) -> str:
    d = {k.lower(): v for k, v in r.graph.activations.dtypes.items()}
    counts = ", ".join(f"{k} x{v}" for k, v in sorted(d.items()))
    if set(d) <= {"int8"}:
        return f"{counts} (no float or bool tensor)"
    if set(d) & {"float32", "float16", "bool"}:
        return f"{counts} (NOT full int8 inside)"
    return counts


def _peak_line(r: Report) -> str:
    a = r.graph.activations
    k = a.peak_index
    at = "" if k is None else f" at op {k} ({r.graph.layers[k].op})"
    return f"peak {a.peak_bytes:,} bytes live{at} (lower bound of the arena)"


def peak_set_by(r: Report) -> str:
    """'peak set by: ...': the op at the activation peak and the tensors live there, largest first."""
    a = r.graph.activations
    k = a.peak_index
    if k is None:
        return "peak set by: - (no ops)"
    parts = [f"`{t.name}` {'x'.join(map(str, t.shape)) or 'scalar'} {t.dtype} {t.bytes:,} B" for t in a.peak_tensors]
    return (f"peak set by: op {k} {r.graph.layers[k].op}, {a.peak_bytes:,} B = " + " + ".join(parts))


_TIMELINE_HEAD = ("#", "op", "out", "live act. B", "peak")


def _timeline_rows(r: Report) -> list[tuple[str, ...]]:
    a = r.graph.activations
    k = a.peak_index
    return [(str(x.index), x.op, _shape(x.output_shapes), f"{a.live_bytes[x.index]:,}",
             "<- peak" if x.index == k else "") for x in r.graph.layers]


def _budget_rows(r: Report) -> list[tuple[str, str, str, str]]:
    return [(b.rule, f"{b.value:,.0f}", f"{b.limit:,.0f}", b.verdict()) for b in r.budgets]


def _target_rows(r: Report) -> list[tuple[str, ...]]:
    rows = []
    for t in r.targets:
        lat = _ms(t.latency_s)
        if t.latency_s_multi is not None and t.threads > 1:
            lat += f" / {_ms(t.latency_s_multi)} ({t.threads} thr)"
        rows.append((t.name, t.provenance, lat, f"{100 * t.duty_cycle:.2f}%",
                     f"{_b(t.ram_needed_bytes)} / {_b(t.ram_available_bytes)}", _yn(t.fits_ram),
                     "-" if t.fits_flash is None else f"{_b(t.flash_needed_bytes)} / {_b(t.flash_available_bytes)}",
                     _yn(t.fits_flash), "yes" if t.runs else "NO", "; ".join(t.notes)))
    return rows


_TARGET_HEAD = ("target", "latency from", "latency", "duty", "RAM need/avail", "fits RAM", "flash need/avail",
                "fits flash", "runs", "notes")
_LAYER_HEAD = ("#", "op", "in", "out", "params", "bytes", "non-zero", "MACs", "other ops", "live act. B")


def _layer_rows(r: Report) -> list[tuple[str, ...]]:
    return [(str(x.index), x.op, _shape(x.input_shapes), _shape(x.output_shapes), f"{x.params:,}",
             f"{x.param_bytes:,}", f"{x.nonzero_params:,}", f"{x.macs:,}", f"{x.other_ops:,}",
             f"{x.activation_bytes:,}") for x in r.graph.layers]


def to_text(r: Report, *, layers: bool = True, width: int | None = None) -> str:
    """The terminal report: rich tables when rich is installed, plain aligned text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return _plain(r, layers=layers)
    import io

    buf = io.StringIO()
    con = Console(file=buf, width=width or 160, force_terminal=False, color_system=None)
    t = Table(title="edge-asc report", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in summary_rows(r):
        t.add_row(k, v)
    con.print(t)
    bt = Table(title="DCASE budgets")
    for h in ("rule", "value", "limit", "verdict"):
        bt.add_column(h)
    for row in _budget_rows(r):
        bt.add_row(*row)
    con.print(bt)
    if layers:
        lt = Table(title="layers")
        for h in _LAYER_HEAD:
            lt.add_column(h, justify="right" if h not in ("op", "in", "out") else "left")
        for row in _layer_rows(r):
            lt.add_row(*row)
        con.print(lt)
        con.print(peak_set_by(r))
    if r.targets:
        tt = Table(title=f"targets (hop {r.hop_seconds:.3f} s)")
        for h in _TARGET_HEAD:
            tt.add_column(h)
        for row in _target_rows(r):
            tt.add_row(*row)
        con.print(tt)
        con.print(_provenance_note(r))
    return buf.getvalue()


def _provenance_note(r: Report) -> str:
    lines = [("latency from: measured = timed here with LiteRT; vela = Ethos-U compiler estimate (+ CPU ops "
              "estimated); firmware (qemu) = instructions of the generated firmware measured under QEMU x CPI "
              "(flash and RAM measured too); estimate = conv/FC MACs x cycles/MAC + every other op's elements x "
              "its per-op cost x CPI (coefficients in targets.toml):")]
    tables = {}
    for t in r.targets:
        if t.provenance == "firmware (qemu)":
            lines.append(f"  {t.key} firmware: {t.notes[0] if t.notes else t.source}")
            continue
        if t.estimate is None or t.provenance == "measured":
            continue
        what = "counts" if t.provenance == "estimate" else "CPU ops"
        lines.append(f"  {t.key} {what}: {t.estimate.describe()}")
        if t.provenance == "estimate":
            lines.append(f"    coefficients: {t.source}")
        if t.estimate.defaulted:
            lines.append(f"    at the table's default cost: {', '.join(t.estimate.defaulted)}")
        if t.estimate.op_costs_source:
            tables[t.estimate.op_costs] = t.estimate.op_costs_source
    lines += [f"  op costs {k}: {v}" for k, v in tables.items() if v]
    return "\n".join(lines)


def _plain(r: Report, *, layers: bool = True) -> str:
    out = [f"{k:>12}: {v}" for k, v in summary_rows(r)]
    out.append("")
    out += [f"{b[3]:<50} {b[0]}" for b in _budget_rows(r)]
    if layers:
        out.append("")
        out.append(_fixed(_LAYER_HEAD, _layer_rows(r)))
        out.append(peak_set_by(r))
    if r.targets:
        out.append("")
        out.append(_fixed(_TARGET_HEAD, _target_rows(r)))
        out.append(_provenance_note(r))
    return "\n".join(out) + "\n"


def _fixed(head, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *rows))


def _md_table(head, rows) -> str:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines)


def to_markdown(r: Report, *, layers: bool = True) -> str:
    """The report as GitHub Markdown."""
    parts = [f"## edge-asc report: `{Path(r.model).name}`", "", _md_table(("", ""), summary_rows(r)), "",
             "### DCASE budgets", "", _md_table(("rule", "value", "limit", "verdict"), _budget_rows(r)), "",
             "### Activation memory per op", "",
             ("Bytes of the non-constant tensors live while each op runs (estimate from the tensor sizes: whole "
              "tensors, no alignment or arena fragmentation; a lower bound of the tensor arena)."), "",
             peak_set_by(r), "", _md_table(_TIMELINE_HEAD, _timeline_rows(r))]
    if layers:
        parts += ["", "### Layers", "", _md_table(_LAYER_HEAD, _layer_rows(r))]
    if r.targets:
        parts += ["", f"### Targets (hop {r.hop_seconds:.3f} s)", "", _md_table(_TARGET_HEAD, _target_rows(r)), "",
                  "\n".join(f"> {line.strip()}" for line in _provenance_note(r).splitlines())]
    return "\n".join(parts) + "\n"


def write_png(r: Report, path: str | os.PathLike) -> None:
    """Per-layer parameter bytes and MACs as bars, with cumulative totals against the DCASE 2022 budget lines, and
    the activation bytes live at every op with the peak marked (and the measured TFLM arena head when known).

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        # A Figure of its own, not pyplot: drawing a report must not switch the caller's matplotlib backend.
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "bench", "the PNG report") from exc
    import numpy as np

    ls = [x for x in r.graph.layers if x.params or x.macs]
    if not ls:
        ls = list(r.graph.layers)
    labels = [f"{x.index}:{x.op.lower()}" for x in ls]
    pbytes = np.array([x.param_bytes for x in ls], dtype=float)
    scale = r.macs_per_second_1s / r.macs_per_inference if r.macs_per_inference else 1.0
    macs = np.array([x.macs * scale for x in ls], dtype=float)
    fig = Figure(figsize=(max(8.0, 0.45 * len(ls) + 3), 10.5), layout="constrained")
    axes = fig.subplots(3, 1)
    for ax, vals, limit, what in ((axes[0], pbytes, DCASE2022_MAX_PARAM_BYTES, "parameter bytes (as stored)"),
                                  (axes[1], macs, DCASE2022_MAX_MACS_PER_SECOND, "MACs per 1 s of audio")):
        x = np.arange(len(vals))
        ax.bar(x, vals, color="tab:blue", label="per layer")
        ax.step(x, np.cumsum(vals), where="mid", color="tab:orange", label="cumulative")
        ax.axhline(limit, color="tab:red", linestyle="--", label=f"DCASE 2022+ limit {limit:,}")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(what)
        ax.set_yscale("symlog", linthresh=max(1.0, float(vals.max(initial=1.0)) / 1e3))
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"{Path(r.model).name}: {r.graph.param_bytes:,} B params, {r.macs_per_second_1s:,.0f} MACs/s "
                      f"(counted from the .tflite)")
    _activation_panel(axes[2], r, np)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _activation_panel(ax, r: Report, np) -> None:
    """Live activation bytes per op (bars, the peak in red and annotated); the TFLM arena head as a line."""
    from matplotlib.ticker import FuncFormatter

    a = r.graph.activations
    live = np.array(a.live_bytes, dtype=float)
    x = np.arange(len(live))
    k = a.peak_index
    colors = ["tab:red" if i == k else "tab:green" for i in x]
    ax.bar(x, live, width=1.0, color=colors, label="live activation bytes (estimate: tensor sizes)")
    if r.tflm is not None and r.tflm.runs and r.tflm.head_bytes:
        ax.axhline(r.tflm.head_bytes, color="tab:purple", linestyle=":",
                   label=f"TFLM arena head {r.tflm.head_bytes:,} B (measured, reference kernels)")
    if k is not None:
        ax.annotate(f"peak {a.peak_bytes:,} B\nop {k} {r.graph.layers[k].op}", xy=(k, live[k]),
                    xytext=(0.5, 0.93), textcoords="axes fraction", ha="center", va="top", fontsize=8,
                    arrowprops={"arrowstyle": "->", "color": "tab:red"})
        ax.set_ylim(0, live[k] * 1.35)
    ax.set_xlim(-0.5, max(len(live) - 0.5, 0.5))
    ax.set_xlabel("op index (execution order)")
    ax.set_ylabel("activation bytes live")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_title("activation memory per op (estimate: whole tensors, no alignment)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def write_text_file(text: str, path: str | os.PathLike) -> None:
    atomic_write_text(path, text)
