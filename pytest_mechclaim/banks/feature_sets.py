"""Control feature sets and empirical nulls for SAE feature claims (pure numpy; no torch).

Inputs are what a caller computes from SAE encodings: ``scores`` [d_sae] (the ranking that chose the top set,
higher is better) and ``acts`` [n_examples, d_sae] (per-example feature activations on the claim's prompts).

* ``random_set``: a seeded sample after excluding the top ``max(top_k, 10% of d_sae)`` ranks;
* ``density_matched_set``: for each top feature, a partner (outside the top ranks) whose per-example activation
  density (fraction of examples where it is active) and mean |activation| are both within a relative tolerance of
  the top feature's; partners are drawn at random by seed among the eligible ones, so seeds give different sets.
  When some top feature has no partner, both tolerances double (up to 5 times) and the set says ``relaxed=True``
  with the tolerance used; if even that fails, it raises. A dead feature never partners an active one (from
  tolerance 1 on it would be "within tolerance" of everything);
* ``bottom_active_set``: the lowest-|score| features that are active at all;
* nulls: ``random_set_null`` (one score per seeded random set) and ``best_of_n_null`` (each entry is the best of N
  random units, for a candidate that won a search over N units); both feed ``gates.empirical_null``.

Labels follow the evidence-row convention the gates count: ``top``, ``random_seed_{s}``,
``density_matched_seed_{s}``, ``bottom_active`` (use them as ``unit_set``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .. import gates
from ..gates import GateResult

DEFAULT_SEEDS = (7, 11, 13)
MAX_RELAXATIONS = 5


class FeatureSetError(ValueError):
    """A control set that cannot be built honestly (too few eligible features, bad shapes)."""


@dataclass(frozen=True)
class FeatureSet:
    label: str
    kind: str  # top | random | density_matched | bottom_active
    features: tuple[int, ...]
    seed: int | None = None
    relaxed: bool = False
    tolerance: float | None = None
    details: dict = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict:
        return {"label": self.label, "kind": self.kind, "features": list(self.features), "seed": self.seed,
                "relaxed": self.relaxed, "tolerance": self.tolerance, "details": self.details}


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise FeatureSetError("scores must be a finite 1-D array [d_sae]")
    return s


def ranking(scores) -> np.ndarray:
    """Feature indices by descending score (ties by index, so the order never depends on the sort)."""
    s = _scores(scores)
    return np.lexsort((np.arange(len(s)), -s))


def excluded_rank_count(d_sae: int, top_k: int) -> int:
    """How many top ranks control sets never draw from: max(top_k, 10% of d_sae)."""
    return max(top_k, math.ceil(0.1 * d_sae))


def activation_stats(acts, active_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(density, abs_mean) per feature: the fraction of examples where |activation| > threshold, and mean |a|."""
    a = np.asarray(acts, dtype=float)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise FeatureSetError("acts must be a finite 2-D array [n_examples, d_sae]")
    return (np.abs(a) > active_threshold).mean(axis=0), np.abs(a).mean(axis=0)


def top_set(scores, top_k: int) -> FeatureSet:
    order = ranking(scores)
    if top_k < 1 or top_k > len(order):
        raise FeatureSetError(f"top_k={top_k} does not fit d_sae={len(order)}")
    return FeatureSet("top", "top", tuple(int(i) for i in order[:top_k]))


def _pool(scores, top_k: int) -> np.ndarray:
    order = ranking(scores)
    return np.sort(order[excluded_rank_count(len(order), top_k):])


def random_set(scores, top_k: int, seed: int) -> FeatureSet:
    pool = _pool(scores, top_k)
    if len(pool) < top_k:
        raise FeatureSetError(f"only {len(pool)} features outside the top ranks; need {top_k}")
    chosen = np.random.default_rng(seed).choice(pool, size=top_k, replace=False)
    return FeatureSet(f"random_seed_{seed}", "random", tuple(int(i) for i in chosen), seed,
                      details={"excluded_top_ranks": excluded_rank_count(len(_scores(scores)), top_k)})


def density_matched_set(acts, scores, top_k: int, seed: int, rel_tol: float = 0.10,
                        max_relaxations: int = MAX_RELAXATIONS, active_threshold: float = 0.0) -> FeatureSet:
    """One partner per top feature, matched on per-example activation density and mean |activation|."""
    density, abs_mean = activation_stats(acts, active_threshold)
    s = _scores(scores)
    if len(s) != len(density):
        raise FeatureSetError(f"scores has {len(s)} features, acts has {len(density)}")
    top = top_set(s, top_k).features
    pool = _pool(s, top_k)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(top))  # which top feature picks first: seeded, so no feature always wins
    tol = rel_tol
    for relaxation in range(max_relaxations + 1):
        chosen: dict[int, int] = {}
        used: set[int] = set()
        for k in order:
            f = top[k]
            ok = ((np.abs(density[pool] - density[f]) <= tol * density[f] + 1e-12)
                  & (np.abs(abs_mean[pool] - abs_mean[f]) <= tol * abs_mean[f] + 1e-12))
            if density[f] > 0:
                # From tolerance 1 on, a dead feature is "within tolerance" of anything; it is no control.
                ok &= density[pool] > 0
            eligible = [int(c) for c in pool[ok] if int(c) not in used]
            if not eligible:
                break
            pick = int(rng.choice(eligible))
            chosen[f] = pick
            used.add(pick)
        if len(chosen) == len(top):
            pairs = [{"top": f, "match": chosen[f],
                      "density_top": float(density[f]), "density_match": float(density[chosen[f]]),
                      "abs_mean_top": float(abs_mean[f]), "abs_mean_match": float(abs_mean[chosen[f]])}
                     for f in top]
            return FeatureSet(
                f"density_matched_seed_{seed}", "density_matched", tuple(chosen[f] for f in top), seed,
                relaxed=relaxation > 0, tolerance=tol,
                details={"relaxations": relaxation, "requested_tolerance": rel_tol,
                         "stats_source": "per_example_activation_density", "pairs": pairs,
                         "mean_density_top": float(density[list(top)].mean()),
                         "mean_density_match": float(density[list(chosen.values())].mean()),
                         "mean_abs_top": float(abs_mean[list(top)].mean()),
                         "mean_abs_match": float(abs_mean[list(chosen.values())].mean())})
        tol *= 2
    raise FeatureSetError(f"no density-matched partner for every top feature within tolerance "
                          f"{tol / 2:g} after {max_relaxations} relaxations (pool of {len(pool)} features)")


def bottom_active_set(acts, scores, top_k: int, active_threshold: float = 0.0) -> FeatureSet:
    """The ``top_k`` active features (density > 0) with the smallest nonzero |score|."""
    density, _ = activation_stats(acts, active_threshold)
    s = _scores(scores)
    candidates = [i for i in np.lexsort((np.arange(len(s)), np.abs(s))) if density[i] > 0 and s[i] != 0]
    if len(candidates) < top_k:
        raise FeatureSetError(f"only {len(candidates)} active features with a nonzero score; need {top_k}")
    return FeatureSet("bottom_active", "bottom_active", tuple(int(i) for i in candidates[:top_k]))


def control_feature_sets(acts, scores, top_k: int, seeds: Sequence[int] = DEFAULT_SEEDS,
                         rel_tol: float = 0.10) -> list[FeatureSet]:
    """SELF-GROUND's serious-run sets: top, a random and a density-matched set per seed, bottom-active."""
    return ([top_set(scores, top_k)] + [random_set(scores, top_k, s) for s in seeds]
            + [density_matched_set(acts, scores, top_k, s, rel_tol) for s in seeds]
            + [bottom_active_set(acts, scores, top_k)])


# --------------------------------------------------------------------------------------------------------------
# Empirical nulls
# --------------------------------------------------------------------------------------------------------------

NULL_KINDS = ("single_random_sets", "best_of_search_size_random_units")


@dataclass(frozen=True)
class NullDistribution:
    values: tuple[float, ...]
    kind: str
    seeds: tuple[int, ...]
    search_size: int | None = None

    def percentile(self, value: float) -> float:
        return gates.percentile_rank(value, self.values)

    def gate(self, value: float, min_percentile: float = 0.95, min_null_sets: int = 30) -> GateResult:
        """``gates.empirical_null`` with this null (and its search size, so the result says which null it was)."""
        return gates.empirical_null(value, self.values, min_percentile=min_percentile, min_null_sets=min_null_sets,
                                    search_size=self.search_size)

    def to_dict(self) -> dict:
        return {"values": list(self.values), "kind": self.kind, "seeds": list(self.seeds),
                "search_size": self.search_size}


def random_set_null(score_set: Callable[[FeatureSet], float], scores, top_k: int,
                    seeds: Sequence[int] = tuple(range(1000, 1030))) -> NullDistribution:
    """Score ``len(seeds)`` (>= 30 for strong) seeded random sets with the claim's own scoring function."""
    seeds = tuple(seeds)
    if len(set(seeds)) != len(seeds):
        raise FeatureSetError("null seeds must be distinct")
    values = tuple(float(score_set(random_set(scores, top_k, s))) for s in seeds)
    return NullDistribution(values, "single_random_sets", seeds)


def best_of_n_null(unit_scores, search_size: int, n_null: int = 30, seed: int = 0) -> NullDistribution:
    """Null for a candidate chosen as the best of a search over ``search_size`` units: each entry is the maximum
    of ``search_size`` units drawn at random (without replacement) from ``unit_scores``, the scores of units under
    the null (random directions, random feature sets, units scored on shuffled labels ...)."""
    u = np.asarray(unit_scores, dtype=float)
    if u.ndim != 1 or not np.all(np.isfinite(u)):
        raise FeatureSetError("unit_scores must be a finite 1-D array")
    if search_size < 1 or search_size > len(u):
        raise FeatureSetError(f"search_size {search_size} needs at least that many null unit scores, got {len(u)}")
    rng = np.random.default_rng(seed)
    values = tuple(float(u[rng.choice(len(u), size=search_size, replace=False)].max()) for _ in range(n_null))
    return NullDistribution(values, "best_of_search_size_random_units", (seed,), search_size)
