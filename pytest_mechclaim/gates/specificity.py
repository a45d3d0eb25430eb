"""Paired-control gates: the target's movement in the predicted direction against its matched control's |movement|.

Rows of a control cell (suite x intervention x factor x position) that patches the corrupt run and whose every control delta is
exactly 0.0 are *uninformative*: the control pair's clean and corrupt runs do not differ at the patched site, so
nothing was patched and a zero says nothing about specificity. They are reported in ``details`` and left out.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Sequence

from ..evidence import EvidenceRow
from ..status import Status
from ._core import MIN_ABS_DELTA, GateResult, _blocked, _mean_by, _min_item, _result, _worst, _target_rows, check
from .direction import check_direction, direction_details, directed_effect, directed_gap, unpredicted
from .thresholds import check_thresholds
from .uncertainty import CONFIDENCE, N_RESAMPLES, clustered_ci

NO_PAIRS = "no valid target rows with an informative paired control delta"


def _cell(r: EvidenceRow) -> tuple:
    return (r.control_suite, r.intervention, r.factor)


def _cell_label(cell: tuple) -> str:
    suite, op, factor = cell
    return f"{suite}|{op}" + (f"x{factor:g}" if factor is not None else "")


def _site(r: EvidenceRow) -> tuple:
    return (r.control_suite, r.intervention, r.factor, r.position)


def uninformative_cells(rows: Sequence[EvidenceRow]) -> list[tuple]:
    """(suite, intervention, factor, position) cells that patch the corrupt run and whose control deltas are all
    exactly 0.0. (An ablation of the clean run that leaves a control at exactly 0 is perfect specificity: kept.)"""
    by_cell = defaultdict(list)
    for r in rows:
        by_cell[_site(r)].append(r)
    return sorted((c for c, rs in by_cell.items()
                   if all(r.run == "corrupt" and r.control_delta == 0.0 for r in rs)), key=repr)


def paired_rows_of(rows, direction="either") -> tuple[list[EvidenceRow], dict]:
    """Valid target rows with an informative paired control, and the accounting of what was left out."""
    ok, acc = _target_rows(rows)
    paired = [r for r in ok if r.paired]
    dead = set(uninformative_cells(paired))
    kept = [r for r in paired if _site(r) not in dead]
    acc.update(n_unpaired=len(ok) - len(paired), n_uninformative=len(paired) - len(kept),
               uninformative_control_cells=[_cell_label(c[:3]) + f"@{c[3]}" for c in sorted(dead, key=repr)],
               **direction_details(direction))
    return kept, acc


def _no_sign(name, threshold, cmp, rows, direction, acc):
    missing = unpredicted(rows, direction)
    if missing:
        return _blocked(name, threshold, cmp, f"direction predicts no sign for interventions {missing}", **acc)
    return None


def _either_note(direction) -> str:
    return " (|delta| only: direction not checked)" if direction == "either" else ""


def specificity_gap(rows: Sequence[EvidenceRow], min: float = 0.0, direction="carries",
                    confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> GateResult:
    """Mean over rows of (target movement in the predicted direction) - |control_delta| must exceed ``min``, and so
    must the lower bound of its prompt-clustered bootstrap interval.

    A mean gap <= 0 means the matched controls moved at least as much as the target, or the target moved the wrong
    way: falsified. A mean above ``min`` whose interval reaches down to it is insufficient.
    """
    check_thresholds("specificity_gap", min=min, confidence=confidence, n_resamples=n_resamples)
    check_direction("specificity_gap", direction)
    name, cmp = "specificity_gap", ">"
    paired, acc = paired_rows_of(rows, direction)
    if not paired:
        return _blocked(name, min, cmp, NO_PAIRS, **acc)
    if (blocked := _no_sign(name, min, cmp, paired, direction, acc)) is not None:
        return blocked
    gap = lambda r: directed_gap(r, direction)
    value = fmean(gap(r) for r in paired)
    target = fmean(directed_effect(r, direction) for r in paired)
    control = fmean(abs(r.control_delta) for r in paired)
    ci = clustered_ci(paired, gap, confidence, n_resamples)
    worst = _worst(paired, gap, "specificity_gap")
    details = dict(acc, n=len(paired), target_directed_mean=target, control_abs_delta_mean=control,
                   target_abs_delta_mean=fmean(abs(r.target_delta) for r in paired),
                   ci_low=ci["ci_low"], ci_high=ci["ci_high"], confidence=confidence, ci_method=ci["method"],
                   n_prompts=ci["n_prompts"])
    moves = f"target moves {target:.4g} in the predicted direction, matched controls {control:.4g}"
    if value <= min:
        caps = Status.FALSIFIED if value <= 0 else Status.INSUFFICIENT
        why = ("the target moves the wrong way" if target <= 0 else "controls move at least as much as the target"
               if value <= 0 else "gap positive but below threshold")
        return _result(name, value, min, cmp, False, caps, f"{why}: {moves}{_either_note(direction)}", worst,
                       **details)
    if ci["ci_low"] is None:
        return _result(name, float(ci["n_prompts"]), 2.0, ">=", False, Status.INSUFFICIENT,
                       f"mean gap {value:.4g} from {ci['n_prompts']} prompt: no confidence interval", worst, **details)
    if ci["ci_low"] <= min:
        return _result(name, ci["ci_low"], min, cmp, False, Status.INSUFFICIENT,
                       f"mean gap {value:.4g} but its {confidence:.0%} CI lower bound {ci['ci_low']:.4g} <= {min:g} "
                       f"({ci['n_prompts']} prompts)", worst, **details)
    return _result(name, value, min, cmp, True, Status.STRONG,
                   f"{moves}; {confidence:.0%} CI [{ci['ci_low']:.4g}, {ci['ci_high']:.4g}]{_either_note(direction)}",
                   worst, **details)


def positive_share(rows: Sequence[EvidenceRow], min: float = 0.5, direction="carries") -> GateResult:
    """Share of rows whose own directed gap is > 0 must be >= ``min`` (a mean can hide cancellation)."""
    check_thresholds("positive_share", min=min)
    check_direction("positive_share", direction)
    name, cmp = "positive_share", ">="
    paired, acc = paired_rows_of(rows, direction)
    if not paired:
        return _blocked(name, min, cmp, NO_PAIRS, **acc)
    if (blocked := _no_sign(name, min, cmp, paired, direction, acc)) is not None:
        return blocked
    gap = lambda r: directed_gap(r, direction)
    n_positive = sum(1 for r in paired if gap(r) > 0)
    value = n_positive / len(paired)
    worst = _worst(paired, gap, "specificity_gap")
    ok = value >= min
    reason = f"{n_positive}/{len(paired)} rows have a positive gap of their own{_either_note(direction)}"
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT, reason, worst,
                   **acc, n=len(paired), n_positive=n_positive)


def multi_control_minimum(rows: Sequence[EvidenceRow], min: float = 0.0, min_suites: int = 2,
                          direction="carries") -> GateResult:
    """The mean directed gap of the *worst* control suite (per intervention and factor) must exceed ``min``.

    Needs at least ``min_suites`` distinct informative suites: one suite counted twice is one suite, and a suite
    whose control pairs do not differ at the patched site (every control delta exactly 0) is no suite at all.
    """
    check_thresholds("multi_control_minimum", min=min, min_suites=min_suites)
    check_direction("multi_control_minimum", direction)
    name, cmp = "multi_control_minimum", ">"
    ok_rows, _ = _target_rows(rows)
    missing = [r for r in ok_rows if r.paired and not r.control_suite]
    paired, acc = paired_rows_of(rows, direction)
    if missing:
        return _blocked(name, min, cmp, f"{len(missing)} paired rows name no control_suite", **acc)
    if not paired:
        return _blocked(name, min, cmp, NO_PAIRS + (f" (uninformative: {acc['uninformative_control_cells']})"
                                                    if acc["uninformative_control_cells"] else ""), **acc)
    if (blocked := _no_sign(name, min, cmp, paired, direction, acc)) is not None:
        return blocked
    gap = lambda r: directed_gap(r, direction)
    by_cell = _mean_by(paired, _cell, gap)
    suites = sorted({r.control_suite for r in paired})
    worst_cell, value = _min_item(by_cell)
    worst = _worst([r for r in paired if _cell(r) == worst_cell], gap, "specificity_gap")
    details = dict(acc, suites=suites, per_suite={_cell_label(c): v for c, v in by_cell.items()})
    checks = [check("distinct_informative_suites", float(len(suites)), float(min_suites), ">="),
              check("worst_suite_gap", value, min, cmp)]
    details["checks"] = checks
    if len(suites) < min_suites:
        dropped = acc["uninformative_control_cells"]
        return _result(name, float(len(suites)), float(min_suites), ">=", False, Status.INSUFFICIENT,
                       f"only {len(suites)} distinct control suite(s) ({', '.join(suites)}); need {min_suites}"
                       + (f"; left out as uninformative (no clean/corrupt difference at the site): {dropped}"
                          if dropped else ""), worst, **details)
    ok = value > min
    suite, op, _ = worst_cell
    reason = (f"worst suite {suite} under {op}: gap {value:.4g}"
              + ("" if ok else " (controls in this suite move as much as the target)") + _either_note(direction))
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT, reason, worst, **details)


def collateral_ratio(rows: Sequence[EvidenceRow], max: float = 1.0, strong_max: float = 0.5,
                     direction="carries") -> GateResult:
    """mean|control_delta| / mean(target movement in the predicted direction) (a ratio of means): 0 is a perfect
    score, not a failure.

    <= ``max`` (and < 1) for a candidate, <= ``strong_max`` for strong. A target that never moves (or moves the
    wrong way) cannot support a claim.
    """
    check_thresholds("collateral_ratio", max=max, strong_max=strong_max)
    check_direction("collateral_ratio", direction)
    name, cmp = "collateral_ratio", "<="
    paired, acc = paired_rows_of(rows, direction)
    if not paired:
        return _blocked(name, max, cmp, NO_PAIRS, **acc)
    if (blocked := _no_sign(name, max, cmp, paired, direction, acc)) is not None:
        return blocked
    target = fmean(directed_effect(r, direction) for r in paired)
    control = fmean(abs(r.control_delta) for r in paired)
    # A row whose target does not move (|delta| <= MIN_ABS_DELTA, the gate's own floor) has no ratio: dividing by a
    # near-zero delta gives numbers of 1e308 whose sum overflows.
    row_ratios = [abs(r.control_delta) / abs(r.target_delta) for r in paired if abs(r.target_delta) > MIN_ABS_DELTA]
    details = dict(acc, target_directed_mean=target, control_abs_delta_mean=control,
                   target_abs_delta_mean=fmean(abs(r.target_delta) for r in paired),
                   mean_of_row_ratios=fmean(row_ratios) if row_ratios else None,
                   n_null_row_ratios=len(paired) - len(row_ratios))
    worst = _worst(paired, lambda r: abs(r.control_delta) - directed_effect(r, direction), "control_minus_target",
                   highest=True)
    if target <= MIN_ABS_DELTA:
        return _result(name, None, max, cmp, False, Status.FALSIFIED,
                       f"the target does not move in the predicted direction (mean {target:.3g})", worst, **details)
    value = control / target
    # Controls that move as much as the target never pass, whatever ``max`` says (the seeds' <= 1.0 let 1.0 through).
    if value >= 1.0:
        return _result(name, value, 1.0, "<", False, Status.FALSIFIED,
                       f"controls move {value:.3g}x as much as the target", worst, **details)
    if value > max:
        return _result(name, value, max, cmp, False, Status.INSUFFICIENT,
                       f"controls move {value:.3g}x as much as the target", worst, **details)
    caps = Status.STRONG if value <= strong_max else Status.CANDIDATE
    reason = (f"controls move {value:.3g}x the target" + ("" if caps == Status.STRONG else f" (> {strong_max} for strong)")
              + _either_note(direction))
    return _result(name, value, max, cmp, True, caps, reason, worst, **details)

