"""The export gate: does a user of the exported file lose anything against the float model?

Four clauses, each read from the :class:`~edge_asc.export.verify.VerificationReport` of the held-out split and
each an :class:`~edge_asc.export.ExportConfig` field / ``edge-asc export`` flag (the demo's export uses the same
defaults):

``accuracy_drop``
    float minus exported clip-level macro accuracy, in percentage points, at most ``max_accuracy_drop``: what the
    user sees. A negative drop (the export did better on these clips) passes.
``agreement``
    window top-1 agreement at least ``min(min_agreement, output-grid ceiling - max_grid_gap)``. The ceiling
    (:attr:`VerificationReport.output_grid_agreement`) is what rounding the float logits to the int8 output's grid
    alone allows, so an int8 model is held to ``min_agreement`` unless its output grid makes that unreachable,
    and then to within ``max_grid_gap`` of what is reachable. A float output has no ceiling: ``min_agreement``.
``confident_agreement``
    top-1 agreement on the windows whose float top-2 logit margin is at least ``CONFIDENT_MARGIN``, at least
    ``min_confident_agreement``: a model that flips decisions the float model is sure of is broken, whatever the
    window agreement on ambiguous windows.
``event_set_agreement``
    the event block's top-k index set agreement, at least ``min_event_set_agreement`` (the event indices feed the
    dense head).

A clause that cannot be measured (no confident window, no event head or its tensor not found) passes, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .verify import CONFIDENT_MARGIN

if TYPE_CHECKING:  # pragma: no cover
    from .config import ExportConfig
    from .verify import VerificationReport

#: Default of ``max_accuracy_drop``: percentage points of clip-level macro accuracy the export may lose. On a small
#: held-out split one clip is ``100 / (clips per class * classes)`` points (1.1 on 9 clips x 10 classes).
MAX_ACCURACY_DROP_POINTS = 1.0
#: Default of ``min_agreement``: the window top-1 agreement asked for when the output grid allows it.
MIN_AGREEMENT = 0.97
#: Default of ``max_grid_gap``: how far agreement may stay below the output-grid ceiling. Faithful int8 exports of
#: the presets stay within ~0.06 of it; windows the float model is unsure of make up that gap.
MAX_GRID_GAP = 0.07
#: Default of ``min_confident_agreement``: top-1 agreement on the windows the float model is sure of (faithful
#: exports agree on all of them; a flip there needs a logit error of at least half the margin).
MIN_CONFIDENT_AGREEMENT = 0.98
#: Default of ``min_event_set_agreement``: the event block's top-k set agreement. Low on purpose: channels with
#: near-equal counts swap ranks under int8 noise in weakly trained models, while a broken block keeps next to none.
MIN_EVENT_SET_AGREEMENT = 0.2

#: The clauses, in the order they are checked and printed.
CLAUSES = ("accuracy_drop", "agreement", "confident_agreement", "event_set_agreement")


@dataclass(frozen=True, kw_only=True)
class GateClause:
    """One clause of the gate and its verdict."""

    name: str
    """one of :data:`CLAUSES`."""
    value: float | None
    """the measured number (None: not measurable for this model; the clause passes)."""
    relation: str
    """'<=' or '>=': ``value relation threshold`` passes."""
    threshold: float
    unit: str
    """'points' (percentage points) or 'fraction' (in [0, 1])."""
    passed: bool
    rule: str
    """how the threshold was set, e.g. ``min(0.97, output-grid ceiling 0.985 - 0.05)``."""

    def text(self) -> str:
        """e.g. ``agreement 0.9380 >= 0.9350 (min(0.97, output-grid ceiling 0.9850 - 0.05))``."""
        if self.value is None:
            return f"{self.name} not measured ({self.rule})"
        fmt = "{:+.2f}" if self.unit == "points" else "{:.4f}"
        rel = self.relation if self.passed else {"<=": ">", ">=": "<"}[self.relation]
        unit = " points" if self.unit == "points" else ""
        return f"{self.name} {fmt.format(self.value)}{unit} {rel} {self.threshold:.4g}{unit} ({self.rule})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "relation": self.relation, "threshold": self.threshold,
                "unit": self.unit, "passed": self.passed, "rule": self.rule}


@dataclass(frozen=True, kw_only=True)
class GateReport:
    """The gate's verdict on one export: every clause, and whether a failure fails the export (``enforced``)."""

    clauses: tuple[GateClause, ...]
    enforced: bool = True
    """False (``--no-gate``): the clauses are reported but do not fail the export."""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.clauses)

    @property
    def failed(self) -> tuple[str, ...]:
        """names of the failed clauses, in :data:`CLAUSES` order."""
        return tuple(c.name for c in self.clauses if not c.passed)

    def clause(self, name: str) -> GateClause:
        return next(c for c in self.clauses if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "enforced": self.enforced, "failed": list(self.failed),
                "clauses": [c.to_dict() for c in self.clauses]}

    def failures(self) -> str:
        """the failed clauses with their numbers, joined by '; ' ('' when every clause passed)."""
        return "; ".join(c.text() for c in self.clauses if not c.passed)

    def summary(self) -> str:
        """One line: ``gate PASS: ...`` or ``gate FAIL (...): ...`` with every clause's numbers."""
        verdict = "PASS" if self.passed else f"FAIL ({', '.join(self.failed)})"
        off = "" if self.enforced else " [not enforced: --no-gate]"
        return f"gate {verdict}{off}: " + "; ".join(c.text() for c in self.clauses)


def check_gate(ver: VerificationReport, config: ExportConfig) -> GateReport:
    """The gate's clauses for the measurements ``ver`` and the thresholds in ``config`` (see the module docstring)."""
    drop = ver.macro_accuracy_drop
    clauses = [GateClause(name="accuracy_drop", value=drop, relation="<=", threshold=config.max_accuracy_drop,
                          unit="points", passed=drop <= config.max_accuracy_drop,
                          rule=f"macro accuracy float {ver.float_macro_accuracy:.4f} vs exported "
                               f"{ver.exported_macro_accuracy:.4f} on {ver.n_clips} clips")]
    ceiling = ver.output_grid_agreement
    if ceiling is None:
        need, rule = config.min_agreement, f"float output: min_agreement {config.min_agreement:g}"
    else:
        need = min(config.min_agreement, ceiling - config.max_grid_gap)
        rule = f"min({config.min_agreement:g}, output-grid ceiling {ceiling:.4f} - {config.max_grid_gap:g})"
    clauses.append(GateClause(name="agreement", value=ver.window_top1_agreement, relation=">=", threshold=need,
                              unit="fraction", passed=ver.window_top1_agreement >= need,
                              rule=f"{rule}, {ver.n_windows} windows"))
    conf = ver.confident_top1_agreement
    clauses.append(GateClause(
        name="confident_agreement", value=conf, relation=">=", threshold=config.min_confident_agreement,
        unit="fraction", passed=conf is None or conf >= config.min_confident_agreement,
        rule=(f"{100 * ver.confident_fraction:.0f}% of windows have a float top-2 margin >= {CONFIDENT_MARGIN}"
              if conf is not None else f"no window has a float top-2 margin >= {CONFIDENT_MARGIN}")))
    ev = ver.events_topk_set_agreement
    clauses.append(GateClause(
        name="event_set_agreement", value=ev, relation=">=", threshold=config.min_event_set_agreement,
        unit="fraction", passed=ev is None or ev >= config.min_event_set_agreement,
        rule=("top-k event index sets" + (f"; the count grid allows {ver.events_count_grid_set_agreement:.4f}"
                                          if ver.events_count_grid_set_agreement is not None else ""))
        if ev is not None else "no event head, or its tensor was not found in the exported graph"))
    return GateReport(clauses=tuple(clauses), enforced=config.gate)
