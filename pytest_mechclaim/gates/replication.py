"""Replication across seeds / interventions / positions, and the claimed unit against control unit sets."""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import fmean
from typing import Sequence

from ..evidence import EvidenceRow
from ..status import Status
from ._core import (MIN_ABS_DELTA, GateResult, _blocked, _from_check, _mean_by, _min_item, _result, _target_rows,
                    _worst, check, first_failing)
from .direction import check_direction, direction_details, directed_effect, directed_gap, unpredicted
from .family import _family_effects, normalized_effect_of
from .thresholds import check_choice, check_thresholds

REPLICATION_AXES = ("seed", "intervention", "position", "factor", "scope")


def _classify_group(rows: list[EvidenceRow], min: float, floor: float, direction) -> tuple[str, float | None]:
    """local-mi-lab's per-seed classifier, for paired rows (target movement in ``direction``) or family-role rows."""
    if rows and all(r.paired for r in rows):
        target = fmean(directed_effect(r, direction) for r in rows)
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
                denominator_floor: float = 0.1, require_distinct_prompts: bool | None = None,
                direction="carries") -> GateResult:
    """At least ``min_passing`` values of ``axis`` (seed, intervention, position) survive on their own, and none
    shows controls moving as much as the target (one such group falsifies, as in local-mi-lab's rules C and E).

    For seeds, the prompts must differ between seeds (``require_distinct_prompts``, default on for seeds): seeds
    that redraw the same prompts re-measure, they do not replicate. A failure shows the sub-check that decided it
    (``details["checks"]`` has them all).
    """
    check_choice(f"{axis}_replication", "axis", axis, REPLICATION_AXES)
    name, cmp = f"{axis}_replication", ">="
    check_thresholds("replication", _label=name, min_passing=min_passing, min=min, denominator_floor=denominator_floor)
    check_direction(name, direction)
    ok_rows, acc = _target_rows(rows)
    acc.update(direction_details(direction))
    if not ok_rows:
        return _blocked(name, min_passing, cmp, "no valid target rows to replicate", **acc)
    if (missing := unpredicted(ok_rows, direction)):
        return _blocked(name, min_passing, cmp, f"direction predicts no sign for interventions {missing}", **acc)
    if require_distinct_prompts is None:
        require_distinct_prompts = axis == "seed"
    groups: dict = defaultdict(list)
    for r in ok_rows:
        groups[getattr(r, axis)].append(r)
    if None in groups:
        return _blocked(name, min_passing, cmp, f"{len(groups[None])} rows have no {axis}", **acc)
    per_group = {k: _classify_group(v, min, denominator_floor, direction)
                 for k, v in sorted(groups.items(), key=lambda kv: repr(kv[0]))}
    passing = [k for k, (s, _) in per_group.items() if s == "survives"]
    nonspecific = [k for k, (s, _) in per_group.items() if s == "nonspecific_moves_controls"]
    repeated = []
    if require_distinct_prompts:
        prompt_sets = {k: frozenset(r.prompt_id for r in v) for k, v in groups.items()}
        repeated = sorted({k for k in prompt_sets for j in prompt_sets
                           if k != j and prompt_sets[k] == prompt_sets[j]}, key=repr)
    checks = [check(f"distinct_{axis}s", float(len(groups)), 2.0, ">="),
              check(f"{axis}s_redrawing_the_same_prompts", float(len(repeated)), 0.0, "=="),
              check(f"nonspecific_{axis}s", float(len(nonspecific)), 0.0, "=="),
              check(f"surviving_{axis}s", float(len(passing)), float(min_passing), ">=")]
    details = dict(acc, per_group={str(k): {"status": s, "gap": g} for k, (s, g) in per_group.items()},
                   checks=checks)
    worst_key = _min_item({k: (g if g is not None else -math.inf) for k, (_, g) in per_group.items()})[0]
    worst = _worst(groups[worst_key], lambda r: directed_gap(r, direction) if r.paired
                   else normalized_effect_of(r, denominator_floor)[0], "score")
    failing = first_failing(checks)
    if failing is None:
        return _result(name, float(len(passing)), float(min_passing), cmp, True, Status.STRONG,
                       f"{len(passing)}/{len(groups)} {axis}s survive on their own", worst, **details)
    if failing is checks[0]:
        return _from_check(name, failing, Status.INSUFFICIENT,
                           f"only {len(groups)} {axis} value(s); replication needs at least 2", worst, **details)
    if failing is checks[1]:
        return _from_check(name, failing, Status.INSUFFICIENT,
                           f"{axis}s {repeated} redraw exactly the prompts of another {axis}: re-measurement, "
                           "not replication", worst, **details)
    if failing is checks[2]:
        return _from_check(name, failing, Status.FALSIFIED,
                           f"controls move as much as the target at {axis} {', '.join(map(str, nonspecific))}",
                           worst, **details)
    return _from_check(name, failing, Status.INSUFFICIENT,
                       f"{len(passing)}/{len(groups)} {axis}s survive on their own; need {min_passing}",
                       worst, **details)


def seed_replication(rows: Sequence[EvidenceRow], min_passing: int = 2, min: float = 0.0,
                     denominator_floor: float = 0.1, direction="carries") -> GateResult:
    """>= ``min_passing`` seeds pass on their own, no seed where controls move as much, distinct prompts per seed."""
    return replication(rows, "seed", min_passing=min_passing, min=min, denominator_floor=denominator_floor,
                       direction=direction)


def _movement(row: EvidenceRow, floor: float, direction) -> float | None:
    """Target-set rows: movement in the predicted direction; control sets: |movement| (any direction competes)."""
    if row.target_delta is not None:
        return directed_effect(row, direction) if row.unit_set == "target" else abs(row.target_delta)
    return normalized_effect_of(row, floor)[0]


def unit_controls(rows: Sequence[EvidenceRow], min_ratio: float = 1.05, denominator_floor: float = 0.1,
                  direction="carries") -> GateResult:
    """The target unit must move the target metric (in the predicted direction) ``min_ratio`` times more than
    *each* control unit set does (on positive-family rows). The value is the ratio against the strongest set."""
    check_thresholds("unit_controls", min_ratio=min_ratio, denominator_floor=denominator_floor)
    check_direction("unit_controls", direction)
    name, cmp = "unit_controls", ">="
    ok_rows = [r for r in rows if r.ok and r.family_role == "positive"]
    if (missing := unpredicted([r for r in ok_rows if r.unit_set == "target"], direction)):
        return _blocked(name, min_ratio, cmp, f"direction predicts no sign for interventions {missing}")
    move = lambda r: _movement(r, denominator_floor, direction)
    by_set = _mean_by(ok_rows, lambda r: r.unit_set, move)
    target = by_set.pop("target", None)
    details = {"per_set_movement": dict(by_set), "target_movement": target, **direction_details(direction)}
    if target is None:
        return _blocked(name, min_ratio, cmp, "no valid target-unit rows", **details)
    if not by_set:
        return _blocked(name, min_ratio, cmp, "no control unit set was evaluated (missing controls)", **details)
    strongest, control = _min_item({k: -v for k, v in by_set.items()})
    control = -control
    worst = _worst([r for r in ok_rows if r.unit_set == strongest], move, "movement", highest=True)
    details["strongest_control_set"] = strongest
    if target <= MIN_ABS_DELTA:
        return _result(name, None, min_ratio, cmp, False, Status.FALSIFIED,
                       "the target unit does not move the metric in the predicted direction", worst, **details)
    value = target / control if control > 0 else math.inf
    if value >= min_ratio:
        return _result(name, value, min_ratio, cmp, True, Status.STRONG,
                       f"target moves {value:.3g}x the strongest control set ({strongest})", worst, **details)
    caps = Status.FALSIFIED if value <= 1.0 else Status.INSUFFICIENT
    return _result(name, value, min_ratio, cmp, False, caps,
                   f"control set {strongest} moves the metric {control:.3g} vs target {target:.3g}", worst, **details)
