"""DCASE low-complexity budgets as named constants, and pass/fail verdicts with margins.

A verdict passes when ``value <= limit`` (the rules say "maximum"/"at most"); the margin is ``limit - value`` (negative
when over). The tests pin that a model exactly at a limit passes and one unit above fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: DCASE 2021 Task 1A ("Low-Complexity Acoustic Scene Classification with Multiple Devices"): "The model complexity
#: limit is set to 128 KB for the non-zero parameters", counted at the precision they are stored in (float32 = 4 bytes,
#: float16 = 2 bytes, int8 = 1 byte); zero-valued parameters (e.g. after pruning) are not counted. The task page's
#: worked examples use KB = 1024 bytes, so the limit is 131,072 bytes.
DCASE2021_MAX_NONZERO_PARAM_BYTES = 128 * 1024

#: DCASE 2022, 2023, 2024 and 2025 Task 1 ("Low-Complexity Acoustic Scene Classification"): "the maximum memory
#: allowed for model parameters is 128 KB", counting *all* parameters (zeros included) at the data type they are stored
#: in (int8 = 1 byte, float16 = 2 bytes, float32 = 4 bytes), with 128 KB = 128,000 bytes (the organisers' ``nessi``
#: helper: ``MAX_PARAMS_MEMORY = 128_000``).
DCASE2022_MAX_PARAM_BYTES = 128_000

#: DCASE 2022–2025 Task 1: "the maximum number of multiply-accumulate operations (MACs) is 30 million per inference",
#: the inference being on a 1-second audio clip (``nessi``: ``MAX_MACS = 30_000_000``).
DCASE2022_MAX_MACS_PER_SECOND = 30_000_000


@dataclass(frozen=True, kw_only=True)
class BudgetCheck:
    """One budget verdict. ``value`` and ``limit`` are in ``unit``; passes iff ``value <= limit``."""

    key: str
    """short name used by ``--require`` (e.g. 'dcase2022-params')."""
    rule: str
    """the rule in words, with its year."""
    value: float
    limit: float
    unit: str

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    @property
    def margin(self) -> float:
        """``limit - value`` in ``unit``; negative when over budget."""
        return self.limit - self.value

    @property
    def margin_pct(self) -> float:
        """margin as a percentage of the limit."""
        return 100.0 * self.margin / self.limit if self.limit else float("-inf")

    def verdict(self) -> str:
        """e.g. 'PASS (35,112 bytes under)' / 'FAIL (246,218 bytes over, 192%)'."""
        amount = abs(self.margin)
        num = f"{amount:,.0f}" if amount >= 10 or float(amount).is_integer() else f"{amount:,.2f}"
        if self.passed:
            return f"PASS ({num} {self.unit} under, {self.margin_pct:.1f}% headroom)"
        return f"FAIL ({num} {self.unit} over, {self.value / self.limit:.2f}x the limit)"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(passed=self.passed, margin=self.margin, margin_pct=self.margin_pct)
        return d


def dcase_checks(*, nonzero_param_bytes: float, param_bytes: float, macs_per_second: float) -> list[BudgetCheck]:
    """The three DCASE checks for a model's stored parameter bytes and its MACs for 1 s of audio."""
    return [
        BudgetCheck(key="dcase2021-params",
                    rule="DCASE 2021 Task 1A: <= 128 KB (131,072 bytes) of non-zero parameters at stored precision",
                    value=nonzero_param_bytes, limit=DCASE2021_MAX_NONZERO_PARAM_BYTES, unit="bytes"),
        BudgetCheck(key="dcase2022-params",
                    rule="DCASE 2022-2025 Task 1: <= 128,000 bytes of parameters as stored (zeros included)",
                    value=param_bytes, limit=DCASE2022_MAX_PARAM_BYTES, unit="bytes"),
        BudgetCheck(key="dcase2022-macs",
                    rule="DCASE 2022-2025 Task 1: <= 30,000,000 MACs per inference on 1 s of audio",
                    value=macs_per_second, limit=DCASE2022_MAX_MACS_PER_SECOND, unit="MACs"),
    ]


#: ``--require`` groups: name -> check keys.
REQUIRE_GROUPS: dict[str, tuple[str, ...]] = {
    "dcase2021": ("dcase2021-params",),
    "dcase2022": ("dcase2022-params", "dcase2022-macs"),
    "dcase": ("dcase2021-params", "dcase2022-params", "dcase2022-macs"),
}
