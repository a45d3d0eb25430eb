"""Evidence gates: pure functions from rows to a GateResult. No torch, no pytest.

Every gate returns a result with its name, value, threshold, pass/fail, the highest status the claim can still
reach given this result (``caps_at``), a one-line reason, and the coordinates of its worst rows. A gate never
raises on bad evidence: missing or unusable input gives ``caps_at=BLOCKED`` with the reason (fail closed).

Which rows a gate reads:
* gates about the claimed unit read rows with ``unit_set == "target"`` and ``status == "ok"``; excluded rows are
  counted in ``details`` (the verdict's row accounting decides what they cost);
* ``unit_controls``, ``paired_test`` and ``strong_floor`` also read the control unit sets
  (``random_seed_*``, ``density_matched_seed_*``, ``bottom_active``, random comparison heads ...).

Thresholds default to the seed systems' values (reference/seed-systems.md §1.9, §2.6, §3.5, §5).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean
from typing import Callable, Iterable, Sequence

from .evidence import NUMBERS, BaselineRow, EvidenceRow
from .status import Status

WORST_K = 5
# Below this, a mean absolute movement counts as "no movement" (SELF-GROUND's min_abs_delta_mean).
MIN_ABS_DELTA = 1e-6


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


def _result(name, value, threshold, comparison, passed, caps_at, reason, worst=(), **details) -> GateResult:
    if passed and caps_at < Status.CANDIDATE:
        raise AssertionError(f"gate {name}: a passing result cannot cap below candidate")
    return GateResult(name, passed, value, threshold, comparison, caps_at, reason, tuple(worst), details)


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


# --------------------------------------------------------------------------------------------------------------
# Paired-control gates (|target movement| - |matched control movement|)
# --------------------------------------------------------------------------------------------------------------


def _gap(row: EvidenceRow) -> float | None:
    return row.specificity_gap


def _paired(rows) -> tuple[list[EvidenceRow], dict]:
    ok, acc = _target_rows(rows)
    paired = [r for r in ok if r.paired]
    acc["n_unpaired"] = len(ok) - len(paired)
    return paired, acc


def specificity_gap(rows: Sequence[EvidenceRow], min: float = 0.0) -> GateResult:
    """Mean over rows of |target_delta| - |control_delta| must exceed ``min``.

    A mean gap <= 0 means the matched controls moved at least as much as the target: falsified.
    """
    name, cmp = "specificity_gap", ">"
    paired, acc = _paired(rows)
    if not paired:
        return _blocked(name, min, cmp, "no valid target rows with a paired control delta", **acc)
    gaps = [r.specificity_gap for r in paired]
    value = fmean(gaps)
    target = fmean(abs(r.target_delta) for r in paired)
    control = fmean(abs(r.control_delta) for r in paired)
    worst = _worst(paired, _gap, "specificity_gap")
    details = dict(acc, n=len(paired), target_abs_delta_mean=target, control_abs_delta_mean=control)
    if value > min:
        return _result(name, value, min, cmp, True, Status.STRONG,
                       f"target moves {target:.4g}, matched controls {control:.4g}", worst, **details)
    caps = Status.FALSIFIED if value <= 0 else Status.INSUFFICIENT
    why = "controls move at least as much as the target" if value <= 0 else "gap positive but below threshold"
    return _result(name, value, min, cmp, False, caps,
                   f"{why}: target {target:.4g} vs control {control:.4g}", worst, **details)


def positive_share(rows: Sequence[EvidenceRow], min: float = 0.5) -> GateResult:
    """Share of rows whose own specificity gap is > 0 must be >= ``min`` (a mean can hide cancellation)."""
    name, cmp = "positive_share", ">="
    paired, acc = _paired(rows)
    if not paired:
        return _blocked(name, min, cmp, "no valid target rows with a paired control delta", **acc)
    n_positive = sum(1 for r in paired if r.specificity_gap > 0)
    value = n_positive / len(paired)
    worst = _worst(paired, _gap, "specificity_gap")
    ok = value >= min
    reason = f"{n_positive}/{len(paired)} rows have a positive gap of their own"
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT, reason, worst,
                   **acc, n=len(paired), n_positive=n_positive)


def multi_control_minimum(rows: Sequence[EvidenceRow], min: float = 0.0, min_suites: int = 2) -> GateResult:
    """The mean gap of the *worst* control suite (per intervention and factor) must exceed ``min``.

    Needs at least ``min_suites`` distinct suites: one suite counted twice is one suite.
    """
    name, cmp = "multi_control_minimum", ">"
    paired, acc = _paired(rows)
    if not paired:
        return _blocked(name, min, cmp, "no valid target rows with a paired control delta", **acc)
    missing = [r for r in paired if not r.control_suite]
    if missing:
        return _blocked(name, min, cmp, f"{len(missing)} paired rows name no control_suite", **acc)
    by_cell = _mean_by(paired, lambda r: (r.control_suite, r.intervention, r.factor), _gap)
    suites = sorted({r.control_suite for r in paired})
    (w_suite, w_op, w_factor), value = min_item = _min_item(by_cell)
    worst = _worst([r for r in paired if (r.control_suite, r.intervention, r.factor) == min_item[0]], _gap,
                   "specificity_gap")
    cells = {f"{s}|{op}" + (f"x{f:g}" if f is not None else ""): v for (s, op, f), v in by_cell.items()}
    details = dict(acc, suites=suites, per_suite=cells)
    if len(suites) < min_suites:
        return _result(name, value, min, cmp, False, Status.INSUFFICIENT,
                       f"only {len(suites)} distinct control suite(s) ({', '.join(suites)}); need {min_suites}",
                       worst, **details)
    ok = value > min
    reason = (f"worst suite {w_suite} under {w_op}: gap {value:.4g}"
              + ("" if ok else " (controls in this suite move as much as the target)"))
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT, reason, worst, **details)


def _min_item(mapping: dict):
    return min(mapping.items(), key=lambda kv: (kv[1], repr(kv[0])))


def collateral_ratio(rows: Sequence[EvidenceRow], max: float = 1.0, strong_max: float = 0.5) -> GateResult:
    """mean|control_delta| / mean|target_delta| (a ratio of means): 0 is a perfect score, not a failure.

    <= ``max`` (and < 1) for a candidate, <= ``strong_max`` for strong. A target that never moves cannot support a
    claim.
    """
    name, cmp = "collateral_ratio", "<="
    paired, acc = _paired(rows)
    if not paired:
        return _blocked(name, max, cmp, "no valid target rows with a paired control delta", **acc)
    target = fmean(abs(r.target_delta) for r in paired)
    control = fmean(abs(r.control_delta) for r in paired)
    row_ratios = [abs(r.control_delta) / abs(r.target_delta) for r in paired if r.target_delta != 0]
    details = dict(acc, target_abs_delta_mean=target, control_abs_delta_mean=control,
                   mean_of_row_ratios=fmean(row_ratios) if row_ratios else None,
                   n_null_row_ratios=len(paired) - len(row_ratios))
    worst = _worst(paired, lambda r: abs(r.control_delta) - abs(r.target_delta), "control_minus_target",
                   highest=True)
    if target <= MIN_ABS_DELTA:
        return _result(name, None, max, cmp, False, Status.FALSIFIED,
                       f"the target never moves (mean |delta| {target:.3g})", worst, **details)
    value = control / target
    # Controls that move as much as the target never pass, whatever ``max`` says (the seeds' <= 1.0 let 1.0 through).
    if value > max or value >= 1.0:
        caps = Status.FALSIFIED if value >= 1.0 else Status.INSUFFICIENT
        return _result(name, value, max, cmp, False, caps,
                       f"controls move {value:.3g}x as much as the target", worst, **details)
    caps = Status.STRONG if value <= strong_max else Status.CANDIDATE
    reason = f"controls move {value:.3g}x the target" + ("" if caps == Status.STRONG else f" (> {strong_max} for strong)")
    return _result(name, value, max, cmp, True, caps, reason, worst, **details)


# --------------------------------------------------------------------------------------------------------------
# Family-level gates
# --------------------------------------------------------------------------------------------------------------


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
                      max_unusable_share: float = 0.5) -> GateResult:
    """Mean normalized effect over positive-family rows must exceed ``min``.

    Rows whose clean - corrupt is below ``denominator_floor`` (metric units) or negative are reported, never
    dropped silently; when more than ``max_unusable_share`` of rows are unusable the gate blocks (the task does
    not separate clean from corrupt).
    """
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
    details = dict(acc, n=len(positives), effect_status_counts=dict(statuses), denominator_floor=denominator_floor)
    unusable_view = [_row_view(r, effect_status=normalized_effect_of(r, denominator_floor)[1]) for r in unusable[:WORST_K]]
    if len(unusable) / len(positives) > max_unusable_share or not effects:
        return _result(name, None, min, cmp, False, Status.BLOCKED,
                       f"{len(unusable)}/{len(positives)} rows have clean - corrupt below {denominator_floor} "
                       "or negative: the task does not separate clean from corrupt", unusable_view, **details)
    value = fmean(effects.values())
    worst = _worst([r for r in positives if id(r) in effects], lambda r: effects[id(r)], "effect") + unusable_view
    details["n_unusable"] = len(unusable)
    if value > min:
        return _result(name, value, min, cmp, True, Status.STRONG,
                       f"mean normalized effect {value:.3g} over {len(effects)} rows"
                       + (f" ({len(unusable)} below the denominator floor, reported)" if unusable else ""),
                       worst, **details)
    caps = Status.FALSIFIED if value <= 0 else Status.INSUFFICIENT
    return _result(name, value, min, cmp, False, caps,
                   f"mean normalized effect {value:.3g}" + (" (no positive effect)" if value <= 0 else ""),
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
        return _result(name, value, min, cmp, False, Status.FALSIFIED,
                       f"no positive effect (positive mean {positive:.3g})", worst, **details)
    if max_control >= positive:
        return _result(name, value, min, cmp, False, Status.FALSIFIED,
                       f"control family {hardest} moves as much ({max_control:.3g}) as positives ({positive:.3g})",
                       worst, **details)
    ok = value > min
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT,
                   f"positives {positive:.3g} vs hardest control {hardest} {max_control:.3g}", worst, **details)


def family_minimum(rows: Sequence[EvidenceRow], min: float = 0.0, min_families: int = 2,
                   denominator_floor: float = 0.1, score: str = "auto") -> GateResult:
    """The worst positive family must still clear ``min``; at least ``min_families`` positive families.

    ``score`` says what is compared per family:
    * ``"gap"``: the mean specificity gap |target_delta| - |control_delta| (rows with paired controls);
    * ``"effect"``: the mean *signed* normalized effect: a unit that helps one family and hurts another moves
      both by a lot, so only the sign catches it;
    * ``"effect_minus_control"``: the family's mean effect minus the hardest control family's mean effect;
    * ``"auto"`` (default): "gap" when every positive row is paired, else "effect_minus_control".
    """
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
        row_score, label = _gap, "specificity gap"
    elif score == "effect":
        row_score, label = effect, "normalized effect"
    elif score == "effect_minus_control":
        _, ctl = _family_effects(ok_rows, denominator_floor)
        if not ctl:
            return _blocked(name, min, cmp, "rows carry neither paired controls nor control families", **acc)
        max_control = max(ctl.values())
        row_score = lambda r: (e - max_control) if (e := effect(r)) is not None else None
        label = "effect minus hardest control"
    else:
        raise ValueError(f"score must be auto, gap, effect or effect_minus_control, not {score!r}")
    per_family = _mean_by(positives, lambda r: r.family, row_score)
    if not per_family:
        return _blocked(name, min, cmp, "no positive family has usable rows", **acc)
    worst_family, value = _min_item(per_family)
    worst = _worst([r for r in positives if r.family == worst_family], row_score, label.replace(" ", "_"))
    details = dict(acc, per_family=per_family, worst_family=worst_family, kind=label)
    if len(per_family) < min_families:
        return _result(name, value, min, cmp, False, Status.INSUFFICIENT,
                       f"only {len(per_family)} positive famil{'y' if len(per_family) == 1 else 'ies'}; "
                       f"need {min_families}", worst, **details)
    ok = value > min
    return _result(name, value, min, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT,
                   f"worst family {worst_family}: {label} {value:.4g}", worst, **details)


# --------------------------------------------------------------------------------------------------------------
# Replication: seeds, interventions, positions
# --------------------------------------------------------------------------------------------------------------


def _classify_group(rows: list[EvidenceRow], min: float, floor: float) -> tuple[str, float | None]:
    """local-mi-lab's per-seed classifier, for paired rows or for family-role rows."""
    if rows and all(r.paired for r in rows):
        target = fmean(abs(r.target_delta) for r in rows)
        control = fmean(abs(r.control_delta) for r in rows)
        gap = target - control
        if target <= MIN_ABS_DELTA:
            return "no_positive_effect", gap
        if control >= target:
            return "nonspecific_moves_controls", gap
        return ("survives" if gap > min else "weak"), gap
    pos, ctl = _family_effects(rows, floor)
    if not pos or not ctl:
        return "insufficient_examples", None
    positive, max_control = fmean(pos.values()), max(ctl.values())
    gap = positive - max_control
    if positive <= 0:
        return "no_positive_effect", gap
    if max_control >= positive:
        return "nonspecific_moves_controls", gap
    return ("survives" if gap > min else "weak"), gap


def replication(rows: Sequence[EvidenceRow], axis: str = "seed", min_passing: int = 2, min: float = 0.0,
                denominator_floor: float = 0.1, require_distinct_prompts: bool | None = None) -> GateResult:
    """At least ``min_passing`` values of ``axis`` (seed, intervention, position) survive on their own, and none
    shows controls moving as much as the target (one such group falsifies, as in local-mi-lab's rules C and E).

    For seeds, the prompts must differ between seeds (``require_distinct_prompts``, default on for seeds): seeds
    that redraw the same prompts re-measure, they do not replicate.
    """
    name, cmp = f"{axis}_replication", ">="
    ok_rows, acc = _target_rows(rows)
    if require_distinct_prompts is None:
        require_distinct_prompts = axis == "seed"
    groups: dict = defaultdict(list)
    for r in ok_rows:
        groups[getattr(r, axis)].append(r)
    if None in groups:
        return _blocked(name, min_passing, cmp, f"{len(groups[None])} rows have no {axis}", **acc)
    per_group = {k: _classify_group(v, min, denominator_floor) for k, v in sorted(groups.items(), key=lambda kv: repr(kv[0]))}
    details = dict(acc, per_group={str(k): {"status": s, "gap": g} for k, (s, g) in per_group.items()})
    passing = [k for k, (s, _) in per_group.items() if s == "survives"]
    nonspecific = [k for k, (s, _) in per_group.items() if s == "nonspecific_moves_controls"]
    value = float(len(passing))
    worst_key = _min_item({k: (g if g is not None else -math.inf) for k, (_, g) in per_group.items()})[0] if per_group else None
    worst_rows = groups.get(worst_key, [])
    worst = _worst(worst_rows, lambda r: r.specificity_gap if r.paired else normalized_effect_of(r, denominator_floor)[0],
                   "score")
    if len(groups) < 2:
        return _result(name, value, min_passing, cmp, False, Status.INSUFFICIENT,
                       f"only {len(groups)} {axis} value(s); replication needs at least 2", worst, **details)
    if require_distinct_prompts:
        prompt_sets = {k: frozenset(r.prompt_id for r in v) for k, v in groups.items()}
        repeated = [k for k in prompt_sets for j in prompt_sets if repr(k) < repr(j) and prompt_sets[k] == prompt_sets[j]]
        if repeated:
            return _result(name, value, min_passing, cmp, False, Status.INSUFFICIENT,
                           f"{axis}s {repeated} redraw exactly the prompts of another {axis}: re-measurement, "
                           "not replication", worst, **details)
    if nonspecific:
        return _result(name, value, min_passing, cmp, False, Status.FALSIFIED,
                       f"controls move as much as the target at {axis} {', '.join(map(str, nonspecific))}",
                       worst, **details)
    ok = len(passing) >= min_passing
    return _result(name, value, min_passing, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT,
                   f"{len(passing)}/{len(groups)} {axis}s survive on their own", worst, **details)


def seed_replication(rows: Sequence[EvidenceRow], min_passing: int = 2, min: float = 0.0,
                     denominator_floor: float = 0.1) -> GateResult:
    """>= ``min_passing`` seeds pass on their own, no seed where controls move as much, distinct prompts per seed."""
    return replication(rows, "seed", min_passing=min_passing, min=min, denominator_floor=denominator_floor)


# --------------------------------------------------------------------------------------------------------------
# Unit controls: the claimed unit against random / density-matched / bottom-active control units
# --------------------------------------------------------------------------------------------------------------


def _movement(row: EvidenceRow, floor: float) -> float | None:
    if row.target_delta is not None:
        return abs(row.target_delta)
    return normalized_effect_of(row, floor)[0]


def unit_controls(rows: Sequence[EvidenceRow], min_ratio: float = 1.05, denominator_floor: float = 0.1) -> GateResult:
    """The target unit must move the target metric ``min_ratio`` times more than *each* control unit set does
    (on positive-family rows). The value is the ratio against the strongest control set."""
    name, cmp = "unit_controls", ">="
    ok_rows = [r for r in rows if r.ok and r.family_role == "positive"]
    by_set = _mean_by(ok_rows, lambda r: r.unit_set, lambda r: _movement(r, denominator_floor))
    target = by_set.pop("target", None)
    details = {"per_set_movement": dict(by_set), "target_movement": target}
    if target is None:
        return _blocked(name, min_ratio, cmp, "no valid target-unit rows", **details)
    if not by_set:
        return _blocked(name, min_ratio, cmp, "no control unit set was evaluated (missing controls)", **details)
    strongest, control = _min_item({k: -v for k, v in by_set.items()})
    control = -control
    worst = _worst([r for r in ok_rows if r.unit_set == strongest], lambda r: _movement(r, denominator_floor),
                   "movement", highest=True)
    details["strongest_control_set"] = strongest
    if target <= MIN_ABS_DELTA:
        return _result(name, None, min_ratio, cmp, False, Status.FALSIFIED, "the target unit does not move the metric",
                       worst, **details)
    value = target / control if control > 0 else math.inf
    if value >= min_ratio:
        return _result(name, value, min_ratio, cmp, True, Status.STRONG,
                       f"target moves {value:.3g}x the strongest control set ({strongest})", worst, **details)
    caps = Status.FALSIFIED if value <= 1.0 else Status.INSUFFICIENT
    return _result(name, value, min_ratio, cmp, False, caps,
                   f"control set {strongest} moves the metric {control:.3g} vs target {target:.3g}", worst, **details)


# --------------------------------------------------------------------------------------------------------------
# Telemetry and calibration
# --------------------------------------------------------------------------------------------------------------


def norm_drift(rows: Sequence[EvidenceRow], max_warning_rate: float = 0.5, max_mean: float = 0.5) -> GateResult:
    """Share of rows with a norm warning must stay below ``max_warning_rate`` for a candidate; strong needs no
    warning at all and mean relative drift <= ``max_mean`` (SELF-GROUND's floor)."""
    name, cmp = "norm_drift", "<"
    ok_rows, acc = _target_rows(rows)
    with_telemetry = [r for r in ok_rows if r.norm_drift is not None]
    if not with_telemetry:
        return _blocked(name, max_warning_rate, cmp, "no row carries norm telemetry", **acc)
    rate = sum(r.norm_warning for r in with_telemetry) / len(with_telemetry)
    mean_drift = fmean(r.norm_drift for r in with_telemetry)
    worst = _worst(with_telemetry, lambda r: r.norm_drift, "norm_drift", highest=True)
    details = dict(acc, mean_relative_drift=mean_drift, n=len(with_telemetry),
                   n_without_telemetry=len(ok_rows) - len(with_telemetry))
    if rate >= max_warning_rate:
        return _result(name, rate, max_warning_rate, cmp, False, Status.INSUFFICIENT,
                       f"{rate:.0%} of interventions shove the norm (mean drift {mean_drift:.3g})", worst, **details)
    if rate > 0 or mean_drift > max_mean:
        return _result(name, rate, max_warning_rate, cmp, True, Status.CANDIDATE,
                       f"warning rate {rate:.0%}, mean drift {mean_drift:.3g}: any warning denies strong", worst,
                       **details)
    return _result(name, rate, max_warning_rate, cmp, True, Status.STRONG,
                   f"no norm warnings, mean drift {mean_drift:.3g}", worst, **details)


def baseline_calibration(rows: Sequence[BaselineRow], min_pass_rate: float = 0.5, min_margin: float | None = None,
                         min_per_family: int | None = None, families: Sequence[str] | None = None) -> GateResult:
    """Reads baseline rows only (never intervention rows).

    Tasks are kept when the unpatched contrast has the intended sign (and, with ``min_margin``, |contrast| >=
    margin). Every required family must keep ``min_per_family`` tasks, or the claim is blocked (calibration
    failed); the intended-direction pass rate must be >= ``min_pass_rate`` for a candidate.
    """
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
    worst = [dict(r.to_dict(), exclusion=why) for r, why in sorted(excluded, key=lambda rw: rw[0].contrast)[:WORST_K]]
    details = {"per_family": per_family, "n_tasks": len(rows), "n_kept": len(rows) - len(excluded),
               "excluded": [{"task_id": r.task_id, "family": r.family, "reason": why} for r, why in excluded]}
    if min_per_family is not None:
        failed = {f: c for f, c in per_family.items() if c["kept"] < min_per_family}
        if failed:
            parts = [f"{f} kept {c['kept']}/{c['total']} ({c['wrong_direction']} wrong direction, "
                     f"{c['below_margin']} below margin)" for f, c in failed.items()]
            return GateResult(name, False, rate, min_pass_rate, cmp, Status.BLOCKED,
                              f"calibration failed, fewer than {min_per_family} tasks kept: " + "; ".join(parts),
                              tuple(worst), details)
    ok = rate >= min_pass_rate
    return _result(name, rate, min_pass_rate, cmp, ok, Status.STRONG if ok else Status.INSUFFICIENT,
                   f"{rate:.0%} of tasks point the intended way before any intervention", worst, **details)


# --------------------------------------------------------------------------------------------------------------
# The strong floor, the empirical null and the paired test
# --------------------------------------------------------------------------------------------------------------

STRONG_REQUIRES = ("strong_floor", "empirical_null", "paired_test")


def strong_floor(rows: Sequence[EvidenceRow], min_tasks: int = 30, min_families: int = 3,
                 min_random_sets: int = 3, min_density_sets: int = 3,
                 required_interventions: Sequence[str] = ("ablate", "amplify")) -> GateResult:
    """SELF-GROUND's mechanical floor for strong, counted from the rows actually present (not from config)."""
    name, cmp = "strong_floor", ">="
    ok_rows = [r for r in rows if r.ok]
    target = [r for r in ok_rows if r.unit_set == "target"]
    n_tasks = len({r.prompt_id for r in target})
    n_families = len({r.family for r in target if r.family_role == "positive"})
    sets = {r.unit_set for r in ok_rows}
    n_random = len({s for s in sets if s.startswith("random")})
    n_density = len({s for s in sets if s.startswith("density_matched")})
    interventions = {r.intervention for r in target}
    missing_ops = [op for op in required_interventions if op not in interventions]
    shortfalls = []
    if n_tasks < min_tasks:
        shortfalls.append(f"{n_tasks} distinct tasks < {min_tasks}")
    if n_families < min_families:
        shortfalls.append(f"{n_families} families < {min_families}")
    if n_random < min_random_sets:
        shortfalls.append(f"{n_random} random control sets < {min_random_sets}")
    if n_density < min_density_sets:
        shortfalls.append(f"{n_density} density-matched control sets < {min_density_sets}")
    if missing_ops:
        shortfalls.append(f"missing interventions {missing_ops}")
    details = {"n_tasks": n_tasks, "n_families": n_families, "n_random_sets": n_random,
               "n_density_sets": n_density, "interventions": sorted(interventions)}
    ok = not shortfalls
    return _result(name, float(n_tasks), float(min_tasks), cmp, ok, Status.STRONG if ok else Status.CANDIDATE,
                   "floor met" if ok else "; ".join(shortfalls), (), **details)


def percentile_rank(value: float, null: Sequence[float]) -> float:
    """Share of the null strictly below ``value``, ties counted half (uniform in [0, 1] for a null claim)."""
    below = sum(1 for x in null if x < value)
    ties = sum(1 for x in null if x == value)
    return (below + 0.5 * ties) / len(null)


def empirical_null(value: float, null: Sequence[float], min_percentile: float = 0.95, min_null_sets: int = 30,
                   search_size: int | None = None) -> GateResult:
    """The claim's score must rank at or above ``min_percentile`` in a null of >= ``min_null_sets`` seeded random
    sets. When the candidate came from a search over ``search_size`` units, each null entry must itself be the best
    of ``search_size`` random units (pass such a null and the size): the gate records which comparison was made."""
    name, cmp = "empirical_null", ">="
    null = [float(x) for x in null]
    details = {"n_null": len(null), "search_size": search_size,
               "null_kind": "best_of_search_size_random_units" if search_size else "single_random_sets"}
    if not math.isfinite(value) or not all(math.isfinite(x) for x in null):
        return _blocked(name, min_percentile, cmp, "non-finite score in the claim or its null", **details)
    if len(null) < min_null_sets:
        return _result(name, None, min_percentile, cmp, False, Status.CANDIDATE,
                       f"null has {len(null)} sets; strong needs {min_null_sets}", (), **details)
    rank = percentile_rank(value, null)
    details.update(null_mean=fmean(null), null_max=max(null), value_scored=value)
    ok = rank >= min_percentile
    return _result(name, rank, min_percentile, cmp, ok, Status.STRONG if ok else Status.CANDIDATE,
                   f"claim ranks at the {rank:.0%} percentile of {len(null)} null sets", (), **details)


def paired_test(rows: Sequence[EvidenceRow], alpha: float = 0.05, min_pairs: int = 10) -> GateResult:
    """Sign test and Wilcoxon signed-rank test (scipy) of per-task specificity gaps, target vs each control unit
    set, paired by (prompt_id, intervention, factor, control_suite). Passes when every control set loses on both
    tests with p <= ``alpha`` and a positive direction. The value is the largest p-value."""
    from scipy import stats

    name, cmp = "paired_test", "<="
    ok_rows = [r for r in rows if r.ok and r.paired]
    key = lambda r: (r.prompt_id, r.intervention, r.factor, r.control_suite, r.position)
    target = {key(r): r.specificity_gap for r in ok_rows if r.unit_set == "target"}
    control_sets = sorted({r.unit_set for r in ok_rows} - {"target"})
    if not target or not control_sets:
        return _blocked(name, alpha, cmp, "paired test needs target rows and at least one control unit set")
    per_set, worst_p = {}, 0.0
    for s in control_sets:
        other = {key(r): r.specificity_gap for r in ok_rows if r.unit_set == s}
        diffs = [target[k] - other[k] for k in target if k in other]
        nonzero = [d for d in diffs if d != 0]
        if len(diffs) < min_pairs or not nonzero:
            per_set[s] = {"n_pairs": len(diffs), "p_sign": None, "p_wilcoxon": None, "direction": "unknown"}
            worst_p = math.inf
            continue
        n_pos = sum(d > 0 for d in nonzero)
        p_sign = float(stats.binomtest(n_pos, len(nonzero), 0.5).pvalue)
        p_wil = float(stats.wilcoxon(nonzero).pvalue)
        direction = "positive" if n_pos * 2 > len(nonzero) else "negative" if n_pos * 2 < len(nonzero) else "mixed"
        per_set[s] = {"n_pairs": len(diffs), "p_sign": p_sign, "p_wilcoxon": p_wil, "direction": direction,
                      "sign_consistency": n_pos / len(nonzero)}
        worst_p = max(worst_p, p_sign, p_wil) if direction == "positive" else math.inf
    ok = worst_p <= alpha
    failing = [s for s, v in per_set.items() if v["direction"] != "positive" or v["p_sign"] is None
               or max(v["p_sign"], v["p_wilcoxon"]) > alpha]
    reason = (f"target beats all {len(control_sets)} control sets (max p {worst_p:.3g})" if ok
              else f"not significant or not positive against: {', '.join(failing)}")
    return _result(name, worst_p if math.isfinite(worst_p) else None, alpha, cmp, ok,
                   Status.STRONG if ok else Status.CANDIDATE, reason, (), per_set=per_set)


# --------------------------------------------------------------------------------------------------------------
# Metric calibration (local-mi-lab §2.6 I): does the metric separate positive families from control families?
# --------------------------------------------------------------------------------------------------------------


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
    problems = []
    bank_problems = [f"positive domain {k} mean {v:.3g} <= 0" for k, v in domain.items() if v <= 0]
    bank_problems += [f"positive length {k} mean {v:.3g} <= 0" for k, v in length.items() if v <= 0]
    if gap <= min_gap:
        problems.append(f"gap {gap:.3g} <= {min_gap}")
    if ctl_means[hardest] >= pos_means[weakest]:
        problems.append(f"hardest control {hardest} ({ctl_means[hardest]:.3g}) >= weakest positive {weakest} "
                        f"({pos_means[weakest]:.3g})")
    if fmean(pos_frac.values()) < min_positive_fraction:
        problems.append(f"positive fraction {fmean(pos_frac.values()):.2f} < {min_positive_fraction}")
    worst_ctl_frac = max(ctl_frac.values())
    if worst_ctl_frac > max_control_fraction:
        problems.append(f"control fraction {worst_ctl_frac:.2f} > {max_control_fraction}")
    status = ("prompt_bank_needs_revision" if bank_problems else "metric_needs_revision" if problems
              else "metric_calibrated_for_next_spec")
    details = {"status": status, "search_allowed": status == "metric_calibrated_for_next_spec",
               "positive_family_means": pos_means, "control_family_means": ctl_means,
               "positive_fractions": pos_frac, "control_fractions": ctl_frac, "domain_means": domain,
               "length_means": length, "positive_mean": positive_mean, "hardest_control_family": hardest,
               "weakest_positive_family": weakest}
    hard_rows = sorted((r for r in ctl if r.family == hardest), key=lambda r: -r.value)[:WORST_K]
    worst = [dict(example_id=r.example_id, family=r.family, value=r.value) for r in hard_rows]
    ok = not problems and not bank_problems
    # A metric that fails to separate, on a bank whose positives the model does not even get right, is evidence
    # against the metric (falsified); unusable input (non-finite, a missing role) was blocked above. Searches that
    # depend on the metric are blocked by banks.calibration.search_permission.
    caps = Status.STRONG if ok else Status.FALSIFIED
    return _result(name, gap, min_gap, cmp, ok, caps,
                   "metric separates positives from controls" if ok else f"{status}: " + "; ".join(bank_problems + problems),
                   worst, **details)


__all__ = [
    "GateResult",
    "MetricCalibrationRow",
    "STRONG_REQUIRES",
    "baseline_calibration",
    "collateral_ratio",
    "control_family_gap",
    "empirical_null",
    "family_minimum",
    "metric_calibration",
    "multi_control_minimum",
    "norm_drift",
    "normalized_effect",
    "normalized_effect_of",
    "paired_test",
    "percentile_rank",
    "positive_share",
    "replication",
    "seed_replication",
    "specificity_gap",
    "strong_floor",
    "unit_controls",
]
