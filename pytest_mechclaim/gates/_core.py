"""What every gate shares: the result type, the fail-closed constructors, row selection and worst-row views."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean
from typing import Callable, Iterable

from ..evidence import NUMBERS, EvidenceRow
from ..status import Status

WORST_K = 5
# Below this, a mean absolute movement counts as "no movement" (SELF-GROUND's min_abs_delta_mean).
MIN_ABS_DELTA = 1e-6

_COMPARE = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
}


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    comparison: str
    caps_at: Status
    reason: str
    worst: tuple[dict, ...] = ()
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "comparison": self.comparison,
            "caps_at": self.caps_at.label,
            "reason": self.reason,
            "worst": list(self.worst),
            "details": self.details,
        }

    def shown_comparison_holds(self) -> bool | None:
        """Does ``value comparison threshold`` hold as the gate table prints it (None: nothing to compare)?"""
        fn = _COMPARE.get(self.comparison)
        if fn is None or self.value is None or self.threshold is None:
            return None
        return bool(fn(self.value, self.threshold))


def check(name: str, value, threshold, comparison: str) -> dict:
    """One sub-check of a composite gate: the quantity, what it is compared with, and whether it holds."""
    fn = _COMPARE[comparison]
    return {"name": name, "value": value, "threshold": threshold, "comparison": comparison,
            "passed": value is not None and bool(fn(value, threshold))}


def first_failing(checks: list[dict]) -> dict | None:
    return next((c for c in checks if not c["passed"]), None)


def _result(name, value, threshold, comparison, passed, caps_at, reason, worst=(), **details) -> GateResult:
    if passed and caps_at < Status.CANDIDATE:
        raise AssertionError(f"gate {name}: a passing result cannot cap below candidate")
    result = GateResult(name, passed, value, threshold, comparison, caps_at, reason, tuple(worst), details)
    # The table prints value/comparison/threshold next to pass/FAIL: they must never disagree.
    holds = result.shown_comparison_holds()
    if holds is not None and holds != passed:
        raise AssertionError(f"gate {name}: shows {value} {comparison} {threshold} next to "
                             f"{'pass' if passed else 'FAIL'}")
    return result


def _from_check(name, failing: dict, caps_at, reason, worst=(), **details) -> GateResult:
    """A failed composite gate shows the sub-check that decided it, not a headline number that looks fine."""
    return _result(name, failing["value"], failing["threshold"], failing["comparison"], False, caps_at, reason,
                   worst, **details)


def _blocked(name: str, threshold, comparison: str, reason: str, **details) -> GateResult:
    return GateResult(name, False, None, threshold, comparison, Status.BLOCKED, reason, (), details)


def _row_view(row: EvidenceRow, **extra) -> dict:
    view = row.coordinates()
    view.update({k: getattr(row, k) for k in NUMBERS if getattr(row, k) is not None})
    if row.prompt is not None:
        view["prompt"] = row.prompt
    if row.control_prompt is not None:
        view["control_prompt"] = row.control_prompt
    view.update({k: v for k, v in extra.items() if v is not None})
    return view


def _worst(rows: Iterable[EvidenceRow], score: Callable[[EvidenceRow], float | None], label: str,
           k: int = WORST_K, highest: bool = False) -> list[dict]:
    scored = [(s, r) for r in rows if (s := score(r)) is not None]
    # Sort on the score, then the coordinates, so the report is the same whatever the row order.
    scored.sort(key=lambda sr: (-sr[0] if highest else sr[0], repr(sorted(sr[1].coordinates().items()))))
    return [_row_view(r, **{label: s}) for s, r in scored[:k]]


def _target_rows(rows: Iterable[EvidenceRow]) -> tuple[list[EvidenceRow], dict]:
    rows = list(rows)
    target = [r for r in rows if r.unit_set == "target"]
    ok = [r for r in target if r.ok]
    return ok, {"n_rows": len(target), "n_excluded": len(target) - len(ok)}


def _mean_by(rows: Iterable[EvidenceRow], key: Callable[[EvidenceRow], object],
             score: Callable[[EvidenceRow], float | None]) -> dict:
    groups: dict = defaultdict(list)
    for r in rows:
        s = score(r)
        if s is not None:
            groups[key(r)].append(s)
    return {k: fmean(v) for k, v in sorted(groups.items(), key=lambda kv: repr(kv[0]))}


def _min_item(mapping: dict):
    return min(mapping.items(), key=lambda kv: (kv[1], repr(kv[0])))


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
