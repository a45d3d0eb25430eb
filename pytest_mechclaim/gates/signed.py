"""Signed gates: does the target move the metric the way the claim predicts, overall and in its worst stratum?

|delta| gaps accept a unit that pushes the wrong way, and family means outvote a stratum (a target token, a
prompt length, a domain) where the unit does nothing. These gates read positive-family target rows only.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Sequence

from ..evidence import EvidenceRow
from ..status import Status
from ._core import MIN_ABS_DELTA, GateResult, _blocked, _result, _target_rows, _worst
from .direction import check_direction, direction_details, directed_effect, signed_delta, unpredicted
from .thresholds import check_thresholds
from .uncertainty import CONFIDENCE, N_RESAMPLES, clustered_ci


def _signed_rows(rows, direction) -> tuple[list[EvidenceRow], dict]:
    ok, acc = _target_rows(rows)
    positives = [r for r in ok if r.family_role == "positive"]
    usable = [r for r in positives if signed_delta(r) is not None]
    acc.update(n_positive_rows=len(positives), n_without_delta=len(positives) - len(usable),
               **direction_details(direction))
    return usable, acc


def _judgeable(name: str, min: float, cmp: str, rows, direction):
    """(usable rows, accounting, None), or a blocked result when no row can be judged for its sign."""
    usable, acc = _signed_rows(rows, direction)
    if not usable:
        return usable, acc, _blocked(name, min, cmp, "no valid positive-family target rows with a target delta",
                                     **acc)
    missing = unpredicted(usable, direction)
    if missing:
        return usable, acc, _blocked(name, min, cmp, f"direction predicts no sign for interventions {missing}",
                                     **acc)
    return usable, acc, None


def signed_effect(rows: Sequence[EvidenceRow], direction="carries", min: float = 0.0,
                  confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> GateResult:
    """Mean target movement in the predicted direction (``direction``, see ``gates.direction``) must exceed
    ``min``, and so must the lower bound of its prompt-clustered bootstrap interval.

    A mean on the wrong side of zero, or an interval entirely on it, is falsified: the unit does the opposite of
    what the claim says, however much it moves. ``"either"`` is refused: this gate exists to check the sign.
    """
    check_thresholds("signed_effect", min=min, confidence=confidence, n_resamples=n_resamples)
    check_direction("signed_effect", direction, allow_either=False)
    name, cmp = "signed_effect", ">"
    usable, acc, blocked = _judgeable(name, min, cmp, rows, direction)
    if blocked is not None:
        return blocked
    score = lambda r: directed_effect(r, direction)
    value = fmean(score(r) for r in usable)
    ci = clustered_ci(usable, score, confidence, n_resamples)
    n_wrong = sum(1 for r in usable if score(r) < 0)
    worst = _worst(usable, score, "signed_effect")
    details = dict(acc, n=len(usable), n_wrong_sign=n_wrong, ci_low=ci["ci_low"], ci_high=ci["ci_high"],
                   confidence=confidence, ci_method=ci["method"], n_prompts=ci["n_prompts"],
                   abs_delta_mean=fmean(abs(score(r)) for r in usable))
    interval = (f"{confidence:.0%} CI [{ci['ci_low']:.4g}, {ci['ci_high']:.4g}]" if ci["ci_low"] is not None
                else "no CI (one prompt)")
    if ci["ci_high"] is not None and ci["ci_high"] < 0:
        return _result(name, ci["ci_high"], 0.0, ">", False, Status.FALSIFIED,
                       f"the whole {interval} lies on the wrong side ({n_wrong}/{len(usable)} rows wrong way)",
                       worst, **details)
    if value <= MIN_ABS_DELTA:
        return _result(name, value, max(min, MIN_ABS_DELTA), cmp, False, Status.FALSIFIED,
                       f"mean movement {value:.4g} is not in the predicted direction ({n_wrong}/{len(usable)} rows "
                       f"wrong way; {interval})", worst, **details)
    if value <= min:
        return _result(name, value, min, cmp, False, Status.INSUFFICIENT,
                       f"mean movement {value:.4g} in the predicted direction, below {min:g} ({interval})", worst,
                       **details)
    if ci["ci_low"] is None:
        return _result(name, float(ci["n_prompts"]), 2.0, ">=", False, Status.INSUFFICIENT,
                       f"mean movement {value:.4g} from one prompt: no confidence interval", worst, **details)
    if ci["ci_low"] <= min:
        return _result(name, ci["ci_low"], min, cmp, False, Status.INSUFFICIENT,
                       f"mean movement {value:.4g} but the {interval} reaches {min:g}", worst, **details)
    return _result(name, value, min, cmp, True, Status.STRONG,
                   f"mean movement {value:.4g} in the predicted direction, {interval}", worst, **details)


ALL_FAMILIES = "*"


def _stratum_label(family: str, key: str, value: str) -> str:
    return f"{family}|{key}={value}"


def stratum_minimum(rows: Sequence[EvidenceRow], min: float = 0.0, min_prompts: int = 3,
                    direction="carries") -> GateResult:
    """The worst stratum (family x stratum key x value, with >= ``min_prompts`` distinct prompts) must still move
    the metric in the predicted direction by more than ``min``; the value is that stratum's mean.

    Strata come from ``EvidenceRow.strata`` (target token, length bin, domain). Thinner strata are listed in
    ``details["thin_strata"]`` and not judged; if every stratum is thin the gate is insufficient.
    """
    check_thresholds("stratum_minimum", min=min, min_prompts=min_prompts)
    check_direction("stratum_minimum", direction, allow_either=False)
    name, cmp = "stratum_minimum", ">"
    usable, acc, blocked = _judgeable(name, min, cmp, rows, direction)
    if blocked is not None:
        return blocked
    if not any(r.strata for r in usable):
        return _blocked(name, min, cmp, "no row carries strata (target token, length bin, domain)", **acc)
    score = lambda r: directed_effect(r, direction)
    members: dict = defaultdict(list)
    for r in usable:
        for key, value in r.strata:
            members[(r.family, key, value)].append(r)
            # The same stratum pooled over the positive families: a target token drawn a few times per family is
            # thin in each one but may be judgeable across them (families are judged by family_minimum).
            members[(ALL_FAMILIES, key, value)].append(r)
    per_stratum, thin = {}, {}
    for s, rs in sorted(members.items()):
        n_prompts = len({r.prompt_id for r in rs})
        if n_prompts < min_prompts:
            thin[_stratum_label(*s)] = n_prompts
        else:
            per_stratum[s] = fmean(score(r) for r in rs)
    details = dict(acc, per_stratum={_stratum_label(*s): v for s, v in per_stratum.items()}, thin_strata=thin,
                   min_prompts=min_prompts)
    if not per_stratum:
        return _result(name, 0.0, float(min_prompts), ">=", False, Status.INSUFFICIENT,
                       f"every stratum has fewer than {min_prompts} prompts: {thin}", (), **details)
    worst_stratum = sorted(per_stratum, key=lambda s: (per_stratum[s], s))[0]  # `min` is the threshold here
    value = per_stratum[worst_stratum]
    label = _stratum_label(*worst_stratum)
    worst = _worst(members[worst_stratum], score, "signed_effect")
    details.update(worst_stratum=label, n_strata=len(per_stratum))
    ok = value > min
    reason = (f"worst stratum {label}: mean movement {value:.4g} in the predicted direction over "
              f"{len({r.prompt_id for r in members[worst_stratum]})} prompts"
              + ("" if ok else " (the effect does not hold there)"))
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT, reason, worst, **details)
