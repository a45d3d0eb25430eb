"""What strong needs on top of a candidate: the mechanical floor, the empirical null and the paired test."""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import fmean
from typing import Sequence

from ..evidence import EvidenceRow
from ..status import Status
from ._core import GateResult, _blocked, _from_check, _result, check, first_failing
from .direction import check_direction, direction_details, directed_gap, unpredicted
from .thresholds import check_thresholds

STRONG_REQUIRES = ("strong_floor", "empirical_null", "paired_test")


def strong_floor(rows: Sequence[EvidenceRow], min_tasks: int = 30, min_families: int = 3,
                 min_random_sets: int = 3, min_density_sets: int = 3,
                 required_interventions: Sequence[str] = ("ablate", "amplify")) -> GateResult:
    """SELF-GROUND's mechanical floor for strong, counted from the rows actually present (not from config). A
    failure shows the first sub-check that missed (all of them in ``details["checks"]``)."""
    check_thresholds("strong_floor", min_tasks=min_tasks, min_families=min_families,
                     min_random_sets=min_random_sets, min_density_sets=min_density_sets)
    name, cmp = "strong_floor", ">="
    ok_rows = [r for r in rows if r.ok]
    target = [r for r in ok_rows if r.unit_set == "target"]
    if not target:
        return _blocked(name, float(min_tasks), cmp, "no valid target rows to count")
    n_tasks = len({r.prompt_id for r in target})
    n_families = len({r.family for r in target if r.family_role == "positive"})
    sets = {r.unit_set for r in ok_rows}
    n_random = len({s for s in sets if s.startswith("random")})
    n_density = len({s for s in sets if s.startswith("density_matched")})
    interventions = {r.intervention for r in target}
    missing_ops = [op for op in required_interventions if op not in interventions]
    checks = [check("distinct_tasks", float(n_tasks), float(min_tasks), ">="),
              check("positive_families", float(n_families), float(min_families), ">="),
              check("random_control_sets", float(n_random), float(min_random_sets), ">="),
              check("density_matched_control_sets", float(n_density), float(min_density_sets), ">="),
              check("missing_required_interventions", float(len(missing_ops)), 0.0, "==")]
    texts = [f"{n_tasks} distinct tasks < {min_tasks}", f"{n_families} families < {min_families}",
             f"{n_random} random control sets < {min_random_sets}",
             f"{n_density} density-matched control sets < {min_density_sets}",
             f"missing interventions {missing_ops}"]
    shortfalls = [t for c, t in zip(checks, texts) if not c["passed"]]
    details = {"n_tasks": n_tasks, "n_families": n_families, "n_random_sets": n_random,
               "n_density_sets": n_density, "interventions": sorted(interventions), "checks": checks}
    failing = first_failing(checks)
    if failing is None:
        return _result(name, float(n_tasks), float(min_tasks), cmp, True, Status.STRONG, "floor met", (), **details)
    return _from_check(name, failing, Status.CANDIDATE, "; ".join(shortfalls), (), **details)


def percentile_rank(value: float, null: Sequence[float]) -> float:
    """Share of the null strictly below ``value``, ties counted half (uniform in [0, 1] for a null claim):
    scipy's ``percentileofscore(kind="mean")``, as a fraction."""
    from scipy.stats import percentileofscore

    return float(percentileofscore(list(null), value, kind="mean")) / 100.0


def empirical_null(value: float, null: Sequence[float], min_percentile: float = 0.95, min_null_sets: int = 30,
                   search_size: int | None = None) -> GateResult:
    """The claim's score must rank at or above ``min_percentile`` in a null of >= ``min_null_sets`` seeded random
    sets. When the candidate came from a search over ``search_size`` units, each null entry must itself be the best
    of ``search_size`` random units (pass such a null and the size): the gate records which comparison was made."""
    check_thresholds("empirical_null", min_percentile=min_percentile, min_null_sets=min_null_sets,
                     search_size=search_size)
    name, cmp = "empirical_null", ">="
    null = [float(x) for x in null]
    details = {"n_null": len(null), "search_size": search_size,
               "null_kind": "best_of_search_size_random_units" if search_size else "single_random_sets"}
    if not null:
        return _blocked(name, min_percentile, cmp, "the null distribution is empty", **details)
    if not math.isfinite(value) or not all(math.isfinite(x) for x in null):
        return _blocked(name, min_percentile, cmp, "non-finite score in the claim or its null", **details)
    if len(null) < min_null_sets:
        return _result(name, float(len(null)), float(min_null_sets), ">=", False, Status.CANDIDATE,
                       f"null has {len(null)} sets; strong needs {min_null_sets}", (), **details)
    rank = percentile_rank(value, null)
    details.update(null_mean=fmean(null), null_max=max(null), value_scored=value)
    ok = rank >= min_percentile
    return _result(name, rank, min_percentile, cmp, ok, Status.STRONG if ok else Status.CANDIDATE,
                   f"claim ranks at the {rank:.0%} percentile of {len(null)} null sets", (), **details)


def paired_test(rows: Sequence[EvidenceRow], alpha: float = 0.05, min_pairs: int = 10, direction="carries",
                n_comparisons: int = 1) -> GateResult:
    """Sign test and Wilcoxon signed-rank test (scipy) of per-*prompt* differences in directed specificity gap,
    target vs each control unit set. Rows are paired by (prompt, intervention, factor, control suite, position)
    and the differences averaged per prompt first: one prompt is one pair, however many suites re-use its target
    row. Passes when every control set loses on both tests with adjusted p <= ``alpha`` and a positive direction.

    ``n_comparisons`` > 1 (one module testing several units chosen by one search) multiplies every p-value by it
    (Bonferroni, which is Holm's bound for a unit whose rank among the others is unknown; ``holm_adjust`` gives
    the step-down values when all p-values are at hand). The value is the largest adjusted p-value.
    """
    from scipy import stats

    check_thresholds("paired_test", alpha=alpha, min_pairs=min_pairs, n_comparisons=n_comparisons)
    check_direction("paired_test", direction)
    name, cmp = "paired_test", "<="
    ok_rows = [r for r in rows if r.ok and r.paired]
    cell = lambda r: (r.intervention, r.factor, r.control_suite, r.position)
    target = {(r.prompt_id, cell(r)): directed_gap(r, direction) for r in ok_rows if r.unit_set == "target"}
    control_sets = sorted({r.unit_set for r in ok_rows} - {"target"})
    correction = ("no multiplicity correction" if n_comparisons == 1
                  else f"Bonferroni over {n_comparisons} comparisons (Holm's most conservative step)")
    details = {"correction": correction, "n_comparisons": n_comparisons, "paired_by": "prompt_id",
               **direction_details(direction)}
    if not target or not control_sets:
        return _blocked(name, alpha, cmp, "paired test needs target rows and at least one control unit set",
                        **details)
    if (missing := unpredicted(ok_rows, direction)):
        return _blocked(name, alpha, cmp, f"direction predicts no sign for interventions {missing}", **details)
    per_set, worst_p = {}, 0.0
    for s in control_sets:
        other = {(r.prompt_id, cell(r)): directed_gap(r, direction) for r in ok_rows if r.unit_set == s}
        by_prompt = defaultdict(list)
        for k in sorted(set(target) & set(other), key=repr):
            by_prompt[k[0]].append(target[k] - other[k])
        diffs = [fmean(v) for _, v in sorted(by_prompt.items())]
        nonzero = [d for d in diffs if d != 0]
        if len(diffs) < min_pairs or not nonzero:
            per_set[s] = {"n_pairs": len(diffs), "p_sign": None, "p_wilcoxon": None, "direction": "unknown"}
            worst_p = math.inf
            continue
        n_pos = sum(d > 0 for d in nonzero)
        p_sign = min(1.0, float(stats.binomtest(n_pos, len(nonzero), 0.5).pvalue) * n_comparisons)
        p_wil = min(1.0, float(stats.wilcoxon(nonzero).pvalue) * n_comparisons)
        direction_seen = "positive" if n_pos * 2 > len(nonzero) else "negative" if n_pos * 2 < len(nonzero) else "mixed"
        per_set[s] = {"n_pairs": len(diffs), "p_sign": p_sign, "p_wilcoxon": p_wil, "direction": direction_seen,
                      "sign_consistency": n_pos / len(nonzero)}
        worst_p = max(worst_p, p_sign, p_wil) if direction_seen == "positive" else math.inf
    ok = worst_p <= alpha
    failing = [s for s, v in per_set.items() if v["direction"] != "positive" or v["p_sign"] is None
               or max(v["p_sign"], v["p_wilcoxon"]) > alpha]
    reason = (f"target beats all {len(control_sets)} control sets (max p {worst_p:.3g}, {correction})" if ok
              else f"not significant or not positive against: {', '.join(failing)} ({correction})")
    return _result(name, worst_p if math.isfinite(worst_p) else None, alpha, cmp, ok,
                   Status.STRONG if ok else Status.CANDIDATE, reason, (), per_set=per_set, **details)
