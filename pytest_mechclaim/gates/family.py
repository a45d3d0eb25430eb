"""Family-level gates: the normalized effect, local-mi-lab's positive-minus-control gap, the worst family."""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Sequence

from ..evidence import EvidenceRow
from ..status import Status
from ._core import WORST_K, GateResult, _blocked, _mean_by, _min_item, _result, _row_view, _target_rows, _worst
from .direction import check_direction, direction_details, directed_gap, unpredicted
from .specificity import paired_rows_of
from .thresholds import check_choice, check_thresholds
from .uncertainty import CONFIDENCE, N_RESAMPLES, clustered_ci


def normalized_effect_of(row: EvidenceRow, denominator_floor: float) -> tuple[float | None, str]:
    """(patched - corrupt)/(clean - corrupt) for a patch into the corrupt run; (clean - patched)/(clean - corrupt)
    for an ablation of the clean run. Positive means the unit carries the behaviour, in both cases.

    Returns (effect, status); the effect is None when the row lacks the numbers or clean - corrupt is below the
    floor (``denominator_below_floor``: the prompts barely differ, a ratio would be noise).
    """
    if row.clean is None or row.corrupt is None or row.patched is None:
        return None, "missing_patching_numbers"
    denominator = row.clean - row.corrupt
    if denominator < denominator_floor:
        return None, "denominator_below_floor" if denominator >= 0 else "clean_below_corrupt"
    if row.run == "corrupt":
        return (row.patched - row.corrupt) / denominator, "ok"
    return (row.clean - row.patched) / denominator, "ok"


def normalized_effect(rows: Sequence[EvidenceRow], min: float = 0.0, denominator_floor: float = 0.1,
                      max_unusable_share: float = 0.5, confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES) -> GateResult:
    """Mean normalized effect over positive-family rows must exceed ``min``, and so must the lower bound of its
    prompt-clustered bootstrap interval.

    Rows whose clean - corrupt is below ``denominator_floor`` (metric units) or negative are reported, never
    dropped silently; when more than ``max_unusable_share`` of rows are unusable the gate blocks (the task does
    not separate clean from corrupt).
    """
    check_thresholds("normalized_effect", min=min, denominator_floor=denominator_floor,
                     max_unusable_share=max_unusable_share, confidence=confidence, n_resamples=n_resamples)
    name, cmp = "normalized_effect", ">"
    ok_rows, acc = _target_rows(rows)
    positives = [r for r in ok_rows if r.family_role == "positive"]
    if not positives:
        return _blocked(name, min, cmp, "no valid positive-family target rows", **acc)
    effects, statuses = {}, defaultdict(int)
    for r in positives:
        e, status = normalized_effect_of(r, denominator_floor)
        statuses[status] += 1
        if e is not None:
            effects[id(r)] = e
    unusable = [r for r in positives if id(r) not in effects]
    details = dict(acc, n=len(positives), effect_status_counts=dict(sorted(statuses.items())),
                   denominator_floor=denominator_floor)
    unusable.sort(key=lambda r: repr(sorted(r.coordinates().items())))
    unusable_view = [_row_view(r, effect_status=normalized_effect_of(r, denominator_floor)[1])
                     for r in unusable[:WORST_K]]
    if len(unusable) / len(positives) > max_unusable_share or not effects:
        return _result(name, None, min, cmp, False, Status.BLOCKED,
                       f"{len(unusable)}/{len(positives)} rows have clean - corrupt below {denominator_floor} "
                       "or negative: the task does not separate clean from corrupt", unusable_view, **details)
    usable = [r for r in positives if id(r) in effects]
    value = fmean(effects.values())
    ci = clustered_ci(usable, lambda r: effects[id(r)], confidence, n_resamples)
    worst = _worst(usable, lambda r: effects[id(r)], "effect") + unusable_view
    details.update(n_unusable=len(unusable), ci_low=ci["ci_low"], ci_high=ci["ci_high"], confidence=confidence,
                   ci_method=ci["method"], n_prompts=ci["n_prompts"])
    if value <= min:
        caps = Status.FALSIFIED if value <= 0 else Status.INSUFFICIENT
        return _result(name, value, min, cmp, False, caps,
                       f"mean normalized effect {value:.3g}" + (" (no positive effect)" if value <= 0 else ""),
                       worst, **details)
    if ci["ci_low"] is None:
        return _result(name, float(ci["n_prompts"]), 2.0, ">=", False, Status.INSUFFICIENT,
                       f"mean normalized effect {value:.3g} from one prompt: no confidence interval", worst, **details)
    if ci["ci_low"] <= min:
        return _result(name, ci["ci_low"], min, cmp, False, Status.INSUFFICIENT,
                       f"mean normalized effect {value:.3g} but its {confidence:.0%} CI lower bound "
                       f"{ci['ci_low']:.3g} <= {min:g}", worst, **details)
    return _result(name, value, min, cmp, True, Status.STRONG,
                   f"mean normalized effect {value:.3g} over {len(effects)} rows, {confidence:.0%} CI "
                   f"[{ci['ci_low']:.3g}, {ci['ci_high']:.3g}]"
                   + (f" ({len(unusable)} below the denominator floor, reported)" if unusable else ""),
                   worst, **details)


def _family_effects(rows, floor) -> tuple[dict, dict]:
    pos = _mean_by([r for r in rows if r.family_role == "positive"], lambda r: r.family,
                   lambda r: normalized_effect_of(r, floor)[0])
    ctl = _mean_by([r for r in rows if r.family_role == "control"], lambda r: r.family,
                   lambda r: normalized_effect_of(r, floor)[0])
    return pos, ctl


def control_family_gap(rows: Sequence[EvidenceRow], min: float = 0.0, denominator_floor: float = 0.1) -> GateResult:
    """local-mi-lab's positive-minus-control gap: mean over positive families of the family mean effect, minus the
    *max* over control families (the worst control, not the average)."""
    check_thresholds("control_family_gap", min=min, denominator_floor=denominator_floor)
    name, cmp = "control_family_gap", ">"
    ok_rows, acc = _target_rows(rows)
    pos, ctl = _family_effects(ok_rows, denominator_floor)
    details = dict(acc, positive_family_means=pos, control_family_means=ctl)
    if not pos:
        return _blocked(name, min, cmp, "no positive family has a usable normalized effect", **details)
    if not ctl:
        return _blocked(name, min, cmp, "no control family has a usable normalized effect (missing controls)",
                        **details)
    positive = fmean(pos.values())
    hardest, max_control = _min_item({k: -v for k, v in ctl.items()})
    max_control = -max_control
    value = positive - max_control
    worst = _worst([r for r in ok_rows if r.family == hardest], lambda r: normalized_effect_of(r, denominator_floor)[0],
                   "effect", highest=True)
    details.update(positive_mean=positive, max_control=max_control, hardest_control_family=hardest)
    if positive <= 0:
        # The deciding quantity is the positive mean itself (the gap can look positive when controls go negative).
        return _result(name, positive, 0.0, cmp, False, Status.FALSIFIED,
                       f"no positive effect (positive mean {positive:.3g})", worst, **details)
    if max_control >= positive:
        return _result(name, value, min, cmp, False, Status.FALSIFIED,
                       f"control family {hardest} moves as much ({max_control:.3g}) as positives ({positive:.3g})",
                       worst, **details)
    ok = value > min
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT,
                   f"positives {positive:.3g} vs hardest control {hardest} {max_control:.3g}", worst, **details)


FAMILY_SCORES = ("auto", "gap", "effect", "effect_minus_control")


def family_minimum(rows: Sequence[EvidenceRow], min: float = 0.0, min_families: int = 2,
                   denominator_floor: float = 0.1, score: str = "auto", direction="carries",
                   confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> GateResult:
    """The worst positive family must still clear ``min`` (its mean and its prompt-clustered CI lower bound); at
    least ``min_families`` positive families.

    ``score`` says what is compared per family:
    * ``"gap"``: the mean directed gap (target movement in ``direction`` - |control_delta|, informative pairs);
    * ``"effect"``: the mean *signed* normalized effect: a unit that helps one family and hurts another moves
      both by a lot, so only the sign catches it;
    * ``"effect_minus_control"``: the family's mean effect minus the hardest control family's mean effect;
    * ``"auto"`` (default): "gap" when every positive row is paired, else "effect_minus_control".
    """
    check_thresholds("family_minimum", min=min, min_families=min_families, denominator_floor=denominator_floor,
                     confidence=confidence, n_resamples=n_resamples)
    check_choice("family_minimum", "score", score, FAMILY_SCORES)
    check_direction("family_minimum", direction)
    # An explicit score is part of the gate's identity: two family minima on one claim must not share a name.
    name, cmp = ("family_minimum" if score == "auto" else f"family_minimum[{score}]"), ">"
    ok_rows, acc = _target_rows(rows)
    positives = [r for r in ok_rows if r.family_role == "positive"]
    if score == "auto":
        score = "gap" if positives and all(r.paired for r in positives) else "effect_minus_control"
    effect = lambda r: normalized_effect_of(r, denominator_floor)[0]
    if score == "gap":
        if not positives or not all(r.paired for r in positives):
            return _blocked(name, min, cmp, "score='gap' needs paired control deltas on every positive row", **acc)
        paired, acc = paired_rows_of(rows, direction)
        positives = [r for r in paired if r.family_role == "positive"]
        if (missing := unpredicted(positives, direction)):
            return _blocked(name, min, cmp, f"direction predicts no sign for interventions {missing}", **acc)
        row_score, label = (lambda r: directed_gap(r, direction)), "specificity gap"
    elif score == "effect":
        row_score, label = effect, "normalized effect"
    else:
        _, ctl = _family_effects(ok_rows, denominator_floor)
        if not ctl:
            return _blocked(name, min, cmp, "rows carry neither paired controls nor control families", **acc)
        max_control = max(ctl.values())
        row_score = lambda r: (e - max_control) if (e := effect(r)) is not None else None
        label = "effect minus hardest control"
    if score != "gap":
        acc.update(direction_details("carries"))  # normalized effects are signed by construction
    per_family = _mean_by(positives, lambda r: r.family, row_score)
    if not per_family:
        return _blocked(name, min, cmp, "no positive family has usable rows", **acc)
    cis = {f: clustered_ci([r for r in positives if r.family == f], row_score, confidence, n_resamples)
           for f in per_family}
    worst_family, value = _min_item(per_family)
    details = dict(acc, per_family=per_family, worst_family=worst_family, kind=label, confidence=confidence,
                   per_family_ci={f: [c["ci_low"], c["ci_high"]] for f, c in cis.items()})
    worst = _worst([r for r in positives if r.family == worst_family], row_score, label.replace(" ", "_"))
    if len(per_family) < min_families:
        return _result(name, float(len(per_family)), float(min_families), ">=", False, Status.INSUFFICIENT,
                       f"only {len(per_family)} positive famil{'y' if len(per_family) == 1 else 'ies'}; "
                       f"need {min_families}", worst, **details)
    if value <= min:
        return _result(name, value, min, cmp, False, Status.INSUFFICIENT,
                       f"worst family {worst_family}: {label} {value:.4g}", worst, **details)
    no_ci = sorted(f for f, c in cis.items() if c["ci_low"] is None)
    if no_ci:
        return _result(name, float(cis[no_ci[0]]["n_prompts"]), 2.0, ">=", False, Status.INSUFFICIENT,
                       f"famil{'y' if len(no_ci) == 1 else 'ies'} {', '.join(no_ci)} rest on one prompt: "
                       "no confidence interval", worst, **details)
    ci_family, ci_low = _min_item({f: c["ci_low"] for f, c in cis.items()})
    if ci_low <= min:
        return _result(name, ci_low, min, cmp, False, Status.INSUFFICIENT,
                       f"family {ci_family}: mean {label} {per_family[ci_family]:.4g} but its {confidence:.0%} CI "
                       f"lower bound {ci_low:.4g} <= {min:g}", worst, **details)
    return _result(name, value, min, cmp, True, Status.STRONG,
                   f"worst family {worst_family}: {label} {value:.4g} (lowest CI bound {ci_low:.4g}, {ci_family})",
                   worst, **details)
