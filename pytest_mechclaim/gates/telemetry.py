"""Telemetry gates (norm drift and decoded-delta ratio, two quantities with their own thresholds) and baseline
calibration (reads baseline rows only)."""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Sequence

from ..evidence import BaselineRow, EvidenceRow
from ..status import Status
from ._core import WORST_K, GateResult, _blocked, _result, _target_rows, _worst
from .thresholds import check_thresholds


def _drift_warned(row: EvidenceRow, warn_above: float) -> bool:
    # The engine's own flag (OR of target and control, at its drift threshold) when it set one; else the row mean.
    return row.drift_warning if row.drift_warning is not None else row.norm_drift > warn_above


def norm_drift(rows: Sequence[EvidenceRow], max_warning_rate: float = 0.5, max_mean: float = 0.5,
               warn_above: float = 0.5) -> GateResult:
    """Relative norm drift |‖x'‖ - ‖x‖| / ‖x‖ only (the decoded-delta ratio has its own gate).

    The share of rows with a drift warning must stay below ``max_warning_rate`` for a candidate; strong needs no
    warning at all and mean drift <= ``max_mean`` (SELF-GROUND §1.9). A row warns when the engine flagged its
    drift (``drift_warning``) or, on rows without that flag, when its drift exceeds ``warn_above`` (§1.7: > 0.5).
    """
    check_thresholds("norm_drift", max_warning_rate=max_warning_rate, max_mean=max_mean, warn_above=warn_above)
    name, cmp = "norm_drift", "<"
    ok_rows, acc = _target_rows(rows)
    with_telemetry = [r for r in ok_rows if r.norm_drift is not None]
    if not with_telemetry:
        return _blocked(name, max_warning_rate, cmp, "no row carries norm telemetry", **acc)
    n_warned = sum(_drift_warned(r, warn_above) for r in with_telemetry)
    rate = n_warned / len(with_telemetry)
    mean_drift = fmean(r.norm_drift for r in with_telemetry)
    worst = _worst(with_telemetry, lambda r: r.norm_drift, "norm_drift", highest=True)
    details = dict(acc, mean_relative_drift=mean_drift, n=len(with_telemetry), n_drift_warnings=n_warned,
                   n_without_telemetry=len(ok_rows) - len(with_telemetry), warn_above=warn_above, max_mean=max_mean)
    if rate >= max_warning_rate:
        return _result(name, rate, max_warning_rate, cmp, False, Status.INSUFFICIENT,
                       f"{n_warned}/{len(with_telemetry)} interventions shove the norm (drift warning; mean drift "
                       f"{mean_drift:.3g})", worst, **details)
    if rate > 0:
        return _result(name, rate, max_warning_rate, cmp, True, Status.CANDIDATE,
                       f"{n_warned}/{len(with_telemetry)} rows warn on norm drift (mean drift {mean_drift:.3g}): "
                       "any warning denies strong", worst, **details)
    if mean_drift > max_mean:
        return _result(name, rate, max_warning_rate, cmp, True, Status.CANDIDATE,
                       f"no drift warning, but mean drift {mean_drift:.3g} > {max_mean:g} denies strong", worst,
                       **details)
    return _result(name, rate, max_warning_rate, cmp, True, Status.STRONG,
                   f"no norm-drift warnings, mean drift {mean_drift:.3g}", worst, **details)


def decoded_delta_ratio(rows: Sequence[EvidenceRow], max: float = 0.5, max_warning_rate: float = 0.5) -> GateResult:
    """Decoded-delta ratio ‖Δ‖ / ‖x‖ (the row's max over target and control, §1.7) only.

    A row warns when its ratio exceeds ``max``; the warning rate must stay below ``max_warning_rate`` for a
    candidate, and strong needs no warning (the seeds folded this warning into the norm-drift rate, §1.9/§5).
    """
    check_thresholds("decoded_delta_ratio", max=max, max_warning_rate=max_warning_rate)
    name, cmp = "decoded_delta_ratio", "<"
    ok_rows, acc = _target_rows(rows)
    with_ratio = [r for r in ok_rows if r.decoded_delta_ratio is not None]
    if not with_ratio:
        return _blocked(name, max_warning_rate, cmp, "no row carries a decoded-delta ratio", **acc)
    n_warned = sum(r.decoded_delta_ratio > max for r in with_ratio)
    rate = n_warned / len(with_ratio)
    mean_ratio = fmean(r.decoded_delta_ratio for r in with_ratio)
    worst = _worst(with_ratio, lambda r: r.decoded_delta_ratio, "decoded_delta_ratio", highest=True)
    details = dict(acc, mean_ratio=mean_ratio, n=len(with_ratio), n_ratio_warnings=n_warned, max=max,
                   n_without_ratio=len(ok_rows) - len(with_ratio))
    what = f"{n_warned}/{len(with_ratio)} rows have a decoded-delta ratio > {max:g} (mean ratio {mean_ratio:.3g})"
    if rate >= max_warning_rate:
        return _result(name, rate, max_warning_rate, cmp, False, Status.INSUFFICIENT, what, worst, **details)
    if rate > 0:
        return _result(name, rate, max_warning_rate, cmp, True, Status.CANDIDATE,
                       what + ": any warning denies strong", worst, **details)
    return _result(name, rate, max_warning_rate, cmp, True, Status.STRONG, what, worst, **details)


def baseline_calibration(rows: Sequence[BaselineRow], min_pass_rate: float = 0.5, min_margin: float | None = None,
                         min_per_family: int | None = None, families: Sequence[str] | None = None) -> GateResult:
    """Reads baseline rows only (never intervention rows).

    Tasks are kept when the unpatched contrast has the intended sign (and, with ``min_margin``, |contrast| >=
    margin). Every required family must keep ``min_per_family`` tasks, or the claim is blocked (calibration
    failed); the intended-direction pass rate must be >= ``min_pass_rate`` for a candidate.
    """
    check_thresholds("baseline_calibration", min_pass_rate=min_pass_rate, min_margin=min_margin,
                     min_per_family=min_per_family)
    name, cmp = "baseline_calibration", ">="
    rows = list(rows)
    if not rows:
        return _blocked(name, min_pass_rate, cmp, "no baseline rows")
    nonfinite = [r for r in rows if not r.finite]
    if nonfinite:
        return GateResult(name, False, None, min_pass_rate, cmp, Status.BLOCKED,
                          f"{len(nonfinite)} baseline rows are non-finite",
                          tuple(r.to_dict() for r in nonfinite[:WORST_K]), {"n_nonfinite": len(nonfinite)})

    def exclusion(r: BaselineRow) -> str | None:
        if not r.intended_direction_pass:
            return "baseline_wrong_direction"
        if min_margin is not None and abs(r.contrast) < min_margin:
            return "baseline_margin_below_threshold"
        return None

    excluded = [(r, why) for r in rows if (why := exclusion(r))]
    kept_by_family: dict = defaultdict(int)
    for r in rows:
        if exclusion(r) is None:
            kept_by_family[r.family] += 1
    required = list(families) if families is not None else sorted({r.family for r in rows})
    per_family = {f: {"kept": kept_by_family.get(f, 0), "total": sum(1 for r in rows if r.family == f),
                      "wrong_direction": sum(1 for r, w in excluded if r.family == f and w == "baseline_wrong_direction"),
                      "below_margin": sum(1 for r, w in excluded if r.family == f and w == "baseline_margin_below_threshold")}
                  for f in required}
    rate = sum(r.intended_direction_pass for r in rows) / len(rows)
    worst = [dict(r.to_dict(), exclusion=why)
             for r, why in sorted(excluded, key=lambda rw: (rw[0].contrast, rw[0].task_id))[:WORST_K]]
    details = {"per_family": per_family, "n_tasks": len(rows), "n_kept": len(rows) - len(excluded),
               "pass_rate": rate,
               "excluded": sorted(({"task_id": r.task_id, "family": r.family, "reason": why} for r, why in excluded),
                                  key=lambda e: e["task_id"])}
    if min_per_family is not None:
        failed = {f: c for f, c in per_family.items() if c["kept"] < min_per_family}
        if failed:
            parts = [f"{f} kept {c['kept']}/{c['total']} ({c['wrong_direction']} wrong direction, "
                     f"{c['below_margin']} below margin)" for f, c in failed.items()]
            # The deciding quantity is the thinnest family's kept count, not the (possibly fine) pass rate.
            fewest = min(c["kept"] for c in failed.values())
            return GateResult(name, False, float(fewest), float(min_per_family), ">=", Status.BLOCKED,
                              f"calibration failed, fewer than {min_per_family} tasks kept: " + "; ".join(parts),
                              tuple(worst), details)
    ok = rate >= min_pass_rate
    return _result(name, rate, min_pass_rate, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT,
                   f"{rate:.0%} of tasks point the intended way before any intervention", worst, **details)
