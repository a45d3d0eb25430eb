"""Metric calibration (local-mi-lab §2.6 I): does the metric separate positive families from control families?"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean
from typing import Sequence

from ..status import Status
from ._core import WORST_K, GateResult, _blocked, _from_check, _result, check, first_failing
from .thresholds import check_thresholds


@dataclass(frozen=True)
class MetricCalibrationRow:
    example_id: str
    family: str
    family_role: str  # positive | control
    value: float  # the metric on the unpatched prompt, e.g. logit[true] - logit[control]
    token_domain: str | None = None
    length_bucket: str | None = None


def metric_calibration(rows: Sequence[MetricCalibrationRow], min_gap: float = 0.25, min_positive_fraction: float = 0.8,
                       max_control_fraction: float = 0.2) -> GateResult:
    """A search may only run on a metric that separates positives from controls (``details['search_allowed']``).

    Checks: mean positive family - max control family > ``min_gap``; hardest control < weakest positive family;
    mean positive-family fraction(value > 0) >= ``min_positive_fraction``; worst control-family fraction(value > 0)
    <= ``max_control_fraction``; no positive token-domain or length-bucket mean <= 0. ``details['search_allowed']``.
    """
    check_thresholds("metric_calibration", min_gap=min_gap, min_positive_fraction=min_positive_fraction,
                     max_control_fraction=max_control_fraction)
    name, cmp = "metric_calibration", ">"
    rows = list(rows)
    if any(not math.isfinite(r.value) for r in rows):
        return _blocked(name, min_gap, cmp, "non-finite metric values", search_allowed=False)
    pos = [r for r in rows if r.family_role == "positive"]
    ctl = [r for r in rows if r.family_role == "control"]
    if not pos or not ctl:
        return _blocked(name, min_gap, cmp, "prompt bank needs revision: positive and control families are both required",
                        search_allowed=False)

    def fam(rows_, f):
        out = defaultdict(list)
        for r in rows_:
            out[r.family].append(f(r))
        return {k: fmean(v) for k, v in sorted(out.items())}

    pos_means, ctl_means = fam(pos, lambda r: r.value), fam(ctl, lambda r: r.value)
    pos_frac, ctl_frac = fam(pos, lambda r: float(r.value > 0)), fam(ctl, lambda r: float(r.value > 0))
    domain = {k: fmean(r.value for r in pos if r.token_domain == k) for k in sorted({r.token_domain for r in pos} - {None})}
    length = {k: fmean(r.value for r in pos if r.length_bucket == k) for k in sorted({r.length_bucket for r in pos} - {None})}
    positive_mean = fmean(pos_means.values())
    hardest = max(ctl_means, key=lambda k: (ctl_means[k], k))
    weakest = min(pos_means, key=lambda k: (pos_means[k], k))
    gap = positive_mean - ctl_means[hardest]
    worst_ctl_frac = max(ctl_frac.values())
    positive_fraction = fmean(pos_frac.values())
    weakest_domain = min(list(domain.values()) + list(length.values()), default=None)
    # Bank checks first (a bank whose positives point the wrong way), then the metric's own; the first failing
    # one is what the gate table shows.
    checks = [check("weakest_positive_domain_or_length_mean", weakest_domain if weakest_domain is not None else 1.0,
                    0.0, ">"),
              check("positive_minus_hardest_control", gap, min_gap, cmp),
              check("weakest_positive_minus_hardest_control", pos_means[weakest] - ctl_means[hardest], 0.0, ">"),
              check("positive_fraction", positive_fraction, min_positive_fraction, ">="),
              check("worst_control_fraction", worst_ctl_frac, max_control_fraction, "<=")]
    bank_problems = [f"positive domain {k} mean {v:.3g} <= 0" for k, v in domain.items() if v <= 0]
    bank_problems += [f"positive length {k} mean {v:.3g} <= 0" for k, v in length.items() if v <= 0]
    problems = []
    if not checks[1]["passed"]:
        problems.append(f"gap {gap:.3g} <= {min_gap}")
    if not checks[2]["passed"]:
        problems.append(f"hardest control {hardest} ({ctl_means[hardest]:.3g}) >= weakest positive {weakest} "
                        f"({pos_means[weakest]:.3g})")
    if not checks[3]["passed"]:
        problems.append(f"positive fraction {positive_fraction:.2f} < {min_positive_fraction}")
    if not checks[4]["passed"]:
        problems.append(f"control fraction {worst_ctl_frac:.2f} > {max_control_fraction}")
    status = ("prompt_bank_needs_revision" if bank_problems else "metric_needs_revision" if problems
              else "metric_calibrated_for_next_spec")
    details = {"status": status, "search_allowed": status == "metric_calibrated_for_next_spec",
               "positive_family_means": pos_means, "control_family_means": ctl_means,
               "positive_fractions": pos_frac, "control_fractions": ctl_frac, "domain_means": domain,
               "length_means": length, "positive_mean": positive_mean, "hardest_control_family": hardest,
               "weakest_positive_family": weakest, "checks": checks}
    hard_rows = sorted((r for r in ctl if r.family == hardest), key=lambda r: -r.value)[:WORST_K]
    worst = [dict(example_id=r.example_id, family=r.family, value=r.value) for r in hard_rows]
    ok = not problems and not bank_problems
    # A metric that fails to separate, on a bank whose positives the model does not even get right, is evidence
    # against the metric (falsified); unusable input (non-finite, a missing role) was blocked above. Searches that
    # depend on the metric are blocked by banks.calibration.search_permission.
    caps = Status.STRONG if ok else Status.FALSIFIED
    if ok:
        return _result(name, gap, min_gap, cmp, True, caps, "metric separates positives from controls", worst,
                       **details)
    return _from_check(name, first_failing(checks), caps, f"{status}: " + "; ".join(bank_problems + problems),
                       worst, **details)
