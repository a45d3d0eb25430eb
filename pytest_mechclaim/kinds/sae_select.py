"""The SAE kind's feature ranking and selection (SELF-GROUND §1.5, E004's "ranking top 100, eval top 5"), control
feature sets and the label-permutation null.

* ranking: each task's SAE activations at the final position (where the interventions act), negated prompt vs its
  matched control; a feature's score is mean(negated) - mean(control), with the same gap per family;
* selection among the ``RANKING_POOL`` best-ranked features active on the bank (a dead feature has nothing to
  rank): ``top`` (by score), ``top-family-consistent`` (positive gap in >= 2 families, by score),
  ``ensemble-specificity`` (gap > 0 and |control activation| <= the pool's median, by family consistency, gap,
  low control activation); a mode that cannot fill ``TOP_K`` fails (SELF-GROUND's feature_selection_failed);
* control feature sets: 3 random and 3 density-matched (seeds 7/11/13) outside the selected ranks, and the
  bottom-active set;
* the empirical null: the whole selection re-run on 30 seeded label permutations, each null set picked from all
  d_sae features and scored like the claim, so the search over every feature is part of the null.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from ..banks import feature_sets as fsets
from ..banks.feature_sets import FeatureSet, FeatureSetError, NullDistribution
from ..banks.schema import ValidTask
from ..engine import sae_evidence
from ..tasks import Task

TOP_K = 5
RANKING_POOL = 100
MIN_FAMILY_CONSISTENCY = 2
CONTROL_QUANTILE = 0.5
CONTROL_SEEDS = (7, 11, 13)
NULL_SEEDS = tuple(range(1000, 1030))
SELECTION_MODES = ("top", "top-family-consistent", "ensemble-specificity")


def final_sae_activations(model, sae, sequences: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
    """[n, d_sae]: ``sae.encode`` of the activation at the SAE's hook, at each sequence's last position."""
    import torch

    hook = sae.cfg.metadata.hook_name
    layer = int(hook.split(".")[1])
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        by_length.setdefault(len(s), []).append(i)
    out = np.zeros((len(sequences), sae.cfg.d_sae), dtype=np.float64)
    with torch.no_grad():
        for idx in by_length.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                tokens = torch.tensor([list(sequences[i]) for i in chunk], device=model.cfg.device)
                _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == hook, stop_at_layer=layer + 1)
                feats = sae.encode(cache[hook][:, -1].to(sae.device, sae.dtype))
                out[chunk] = feats.float().cpu().numpy()
    return out


@dataclass
class Ranking:
    """Per-feature activation statistics on one bank: the ranking every selection mode reads."""

    families: tuple[str, ...]
    task_families: tuple[str, ...]  # per task, in row order of ``negated``/``control``
    negated: np.ndarray  # [n_tasks, d_sae] final-position activations on the negated prompts
    control: np.ndarray  # [n_tasks, d_sae] ... on their matched controls

    @cached_property
    def gap(self) -> np.ndarray:
        return self.negated.mean(0) - self.control.mean(0)

    @cached_property
    def family_gap(self) -> dict[str, np.ndarray]:
        fam = np.array(self.task_families)
        return {f: self.negated[fam == f].mean(0) - self.control[fam == f].mean(0) for f in self.families}

    @cached_property
    def family_consistency(self) -> np.ndarray:
        return sum((g > 0).astype(int) for g in self.family_gap.values())

    @property
    def acts(self) -> np.ndarray:
        """Per-example activations (negated prompts, then controls): what density matching reads."""
        return np.concatenate([self.negated, self.control])

    @property
    def d_sae(self) -> int:
        return self.negated.shape[1]

    def permuted(self, seed: int) -> "Ranking":
        """The same activations with each task's negated/control labels swapped by a seeded coin."""
        swap = np.random.default_rng(seed).random(len(self.negated)) < 0.5
        neg = np.where(swap[:, None], self.control, self.negated)
        ctl = np.where(swap[:, None], self.negated, self.control)
        return Ranking(self.families, self.task_families, neg, ctl)

    def rows(self, features: Sequence[int]) -> list[dict]:
        """SELF-GROUND's ranking columns for the given features."""
        out = []
        for f in features:
            t, c = float(self.negated[:, f].mean()), float(self.control[:, f].mean())
            row = {"feature": f"sae_{f}", "score": float(self.gap[f]), "mean_target_prompt_activation": t,
                   "mean_control_prompt_activation": c, "target_control_ratio": t / (abs(c) + 1e-9),
                   "family_consistency_count": int(self.family_consistency[f]),
                   "activation_nonzero_rate_target": float((np.abs(self.negated[:, f]) > 1e-12).mean()),
                   "activation_nonzero_rate_control": float((np.abs(self.control[:, f]) > 1e-12).mean())}
            row.update({f"target_minus_control_activation_{fam}": float(g[f]) for fam, g in self.family_gap.items()})
            out.append(row)
        return out


def rank_features(model, sae, tasks: Sequence[ValidTask], families: Sequence[str]) -> Ranking:
    acts = final_sae_activations(model, sae, [t.prompt_ids for t in tasks] + [t.control_ids for t in tasks])
    n = len(tasks)
    return Ranking(tuple(families), tuple(t.family for t in tasks), acts[:n], acts[n:])


def selection_order(ranking: Ranking, mode: str, top_k: int = TOP_K) -> np.ndarray:
    """Every feature index, the mode's ``top_k`` first, then the rest by score. Raises ``FeatureSetError`` when the
    mode cannot fill ``top_k`` (SELF-GROUND: a mode that cannot fill the set fails, it never pads)."""
    by_score = fsets.ranking(ranking.gap)
    # Dead features (never active on the bank) have no activation to rank, and would set the control quantile to 0.
    active = np.abs(ranking.acts).max(0) > 0
    pool = np.array([f for f in by_score if active[f]][:RANKING_POOL], dtype=int)
    gap, consistency = ranking.gap, ranking.family_consistency
    if mode == "top":
        chosen = list(pool[:top_k])
    elif mode == "top-family-consistent":
        chosen = [int(f) for f in pool if consistency[f] >= MIN_FAMILY_CONSISTENCY][:top_k]
    elif mode == "ensemble-specificity":
        control = np.abs(ranking.control.mean(0))
        limit = float(np.quantile(control[pool], CONTROL_QUANTILE))
        eligible = [int(f) for f in pool if gap[f] > 0 and control[f] <= limit]
        chosen = sorted(eligible, key=lambda f: (-consistency[f], -gap[f], control[f], f))[:top_k]
    else:
        raise ValueError(f"unknown selection mode {mode!r}; modes: {SELECTION_MODES}")
    if len(chosen) < top_k:
        raise FeatureSetError(f"selection mode {mode!r} finds {len(chosen)} of {top_k} features among the "
                              f"{len(pool)} best-ranked active features")
    chosen_set = set(chosen)
    return np.array(chosen + [int(f) for f in by_score if int(f) not in chosen_set])


def order_scores(order: np.ndarray) -> np.ndarray:
    """A score vector whose ranking is ``order`` (what ``banks.feature_sets`` ranks by)."""
    scores = np.empty(len(order))
    scores[order] = np.arange(len(order), 0, -1, dtype=float)
    return scores


def control_sets(ranking: Ranking, mode: str, seeds: Sequence[int] = CONTROL_SEEDS) -> list[FeatureSet]:
    """The selected set (label ``top``), random and density-matched sets per seed (outside the top ranks of the
    mode's order), and the bottom-active set (lowest nonzero |score| among active features)."""
    scores = order_scores(selection_order(ranking, mode))
    acts = ranking.acts
    return ([fsets.top_set(scores, TOP_K)] + [fsets.random_set(scores, TOP_K, s) for s in seeds]
            + [fsets.density_matched_set(acts, scores, TOP_K, s) for s in seeds]
            + [fsets.bottom_active_set(acts, ranking.gap, TOP_K)])


def evaluate(model, sae, tasks: Sequence[Task], sets: Sequence[FeatureSet], operations,
             positions: Sequence[str] = ("final",)) -> list:
    """Rows for every feature set; the ``top`` set's rows are the claim's (``unit_set="target"``), the others
    carry their own label as ``unit_set`` (``random_seed_7``, ``density_matched_seed_7``, ``bottom_active`` ...)."""
    ev = sae_evidence(model, tasks, sae, {s.label: s.features for s in sets}, operations=operations, mode="delta",
                      positions=positions)
    return [dataclasses.replace(r, unit_set="target" if r.unit == "top" else r.unit) for r in ev]


def mean_gap(rows) -> float:
    gaps = [r.specificity_gap for r in rows if r.ok and r.paired]
    return float(np.mean(gaps)) if gaps else float("nan")


def selection_null(model, sae, tasks: Sequence[Task], ranking: Ranking, mode: str, operations,
                   seeds: Sequence[int] = NULL_SEEDS) -> NullDistribution:
    """Null for the claim's score (mean specificity gap over its rows): the same selection over all d_sae features
    on label-permuted activations, scored on the same tasks, suites and operations. Each entry is the best set a
    search over every feature finds when the labels carry no negation, so the search is part of the null."""
    sets = []
    for s in seeds:
        order = selection_order(ranking.permuted(s), mode)
        sets.append(FeatureSet(f"null_seed_{s}", "null", tuple(int(f) for f in order[:TOP_K]), s))
    ev = sae_evidence(model, tasks, sae, {s.label: s.features for s in sets}, operations=operations, mode="delta")
    by_set: dict[str, list] = {}
    for r in ev:
        by_set.setdefault(r.unit, []).append(r)
    return NullDistribution(tuple(mean_gap(by_set[s.label]) for s in sets), "best_of_search_size_random_units",
                            tuple(seeds), ranking.d_sae)


def feature_ids(sets) -> list[dict]:
    """The part of feature sets that defines the test (labels, kinds, feature ids, seeds): hashed; their measured
    density statistics are results, attached and reported only."""
    return [{k: (s.to_dict() if hasattr(s, "to_dict") else s)[k] for k in ("label", "kind", "features", "seed")}
            for s in sets]
