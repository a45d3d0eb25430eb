"""SELF-GROUND's negation x SAE path (E002 -> E003 -> E004) as claim stages, shared by the SmolLM2 claims and the
Pythia-70M-deduped seed study (reference/seed-systems.md §1).

Preregistered here, before any result, and never changed per model, claim or outcome:

* tasks: the negation bank's three required families (sentiment/property/state), token-validated for the claim's
  model; E002 takes 10 per family from bank seed 0 and scores them uncalibrated; E003 scores ``candidates_per_family``
  candidates per family (80 as in E003; a study may take fewer for compute, bank seed 0, so E002's tasks are among
  them) and keeps those whose unpatched contrast points the intended way with |contrast| >= 0.1, at least 10 kept per
  family (E003's rule), before any intervention runs;
* compatibility: ``check_sae_compatibility`` on the prompts the stage evaluates (negated prompts and their controls);
* ranking: each task's SAE activations at the final position (where the interventions act), negated prompt vs its
  matched non-negated control; a feature's score is mean(negated) - mean(control), with the same gap per family;
* selection (§1.5, E004's "ranking top 100, eval top 5") among the 100 best-ranked features that are active on the
  bank (a dead feature has nothing to rank; a pool of them would put the control-activation median at 0):
  ``top`` (by score), ``top-family-consistent`` (positive gap in >= 2 families, E004's setting, by score),
  ``ensemble-specificity`` (gap > 0 and |control activation| <= the pool's median, sorted by family consistency,
  gap, then low control activation); a mode that cannot fill 5 blocks (SELF-GROUND's feature_selection_failed);
* control feature sets (``banks.feature_sets``): 3 random and 3 density-matched (per-example density and mean
  |activation|) with seeds 7/11/13, and the bottom-active set;
* interventions: ablate (and amplify x2 in E004) at the final position, delta mode (the SAE's reconstruction error
  stays in, SELF-GROUND's D004), scored on the task's target - foil logit contrast and on each control suite's;
* empirical null (E004): the whole selection re-run on 30 seeded label permutations (each task's negated and control
  activations swapped at random), each null set picked from all d_sae features and scored like the claim, so the
  null accounts for the search over every feature (see ``selection_null``);
* held-out (E003 claim): bank seed 1 with every prompt discovery saw removed, calibrated by the same rule, scoring
  the feature sets frozen at discovery;
* gates, at the seeds' default thresholds: baseline calibration (pass rate >= 0.5 on the evaluated tasks),
  specificity gap > 0, collateral ratio <= 1, norm drift, family minimum over all three families, unit controls
  (the selected set moves the target >= 1.05x every control feature set); E004 adds control-suite coverage, the
  multi-control minimum (every suite x operation), the strong floor, the paired test and the null.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from pytest_mechclaim import gates
from pytest_mechclaim.banks import feature_sets as fsets
from pytest_mechclaim.banks import negation
from pytest_mechclaim.banks.calibration import BaselineCalibration, calibrate_baseline
from pytest_mechclaim.banks.controls import SUITES, ControlSuites, build_control_suites
from pytest_mechclaim.banks.feature_sets import FeatureSet, FeatureSetError, NullDistribution
from pytest_mechclaim.banks.schema import ValidTask, as_tokenizer
from pytest_mechclaim.engine import sae_evidence
from pytest_mechclaim.gates import GateResult
from pytest_mechclaim.sae_compat import check_sae_compatibility
from pytest_mechclaim.status import Status
from pytest_mechclaim.tasks import PromptPair, Task

FAMILIES = negation.FAMILIES
DISCOVERY_SEED = 0
HELDOUT_SEED = 1
E002_PER_FAMILY = 10
CANDIDATES_PER_FAMILY = 80
MIN_VALID_PER_FAMILY = 2  # SELF-GROUND's task-validation minimum for a generated bank
MIN_MARGIN = 0.1
MIN_KEPT_PER_FAMILY = 10
MIN_PASS_RATE = 0.5
TOP_K = 5
RANKING_POOL = 100
MIN_FAMILY_CONSISTENCY = 2
CONTROL_QUANTILE = 0.5
CONTROL_SEEDS = (7, 11, 13)
AMPLIFY_FACTOR = 2.0
NULL_SEEDS = tuple(range(1000, 1030))
SELECTION_MODES = ("top", "top-family-consistent", "ensemble-specificity")
MATCHED = ("matched_non_negation",)
ABLATE = ("ablate",)
ABLATE_AMPLIFY = ("ablate", ("amplify", AMPLIFY_FACTOR))


# ---------------------------------------------------------------------------------------------------- tasks
@dataclass
class Bank:
    """Validated, baseline-scored tasks: ``calibration`` judged them all; ``tasks`` are the ones evaluated."""

    name: str
    seed: int
    calibration: BaselineCalibration
    tasks: list[ValidTask]
    rule: dict = field(default_factory=dict)  # the calibration rule beyond the pass rate (margin, per family)
    n_removed_as_seen: int = 0

    @property
    def baseline_rows(self):
        ids = {t.id for t in self.tasks}
        return [r for r in self.calibration.rows if r.task_id in ids]

    def validation_gate(self) -> GateResult:
        """Blocked when a required family has fewer than ``MIN_VALID_PER_FAMILY`` token-valid tasks."""
        counts = self.calibration.validation.counts(FAMILIES)
        short = {f: c["valid"] for f, c in counts.items() if c["valid"] < MIN_VALID_PER_FAMILY}
        details = {"counts": counts, "rejection_reasons": self.calibration.validation.reason_counts()}
        if short:
            return GateResult("task_validation", False, float(min(short.values())), float(MIN_VALID_PER_FAMILY), ">=",
                              Status.BLOCKED, f"families below {MIN_VALID_PER_FAMILY} token-valid tasks: {short}",
                              details=details)
        n = sum(c["valid"] for c in counts.values())
        return GateResult("task_validation", True, float(min(c["valid"] for c in counts.values())),
                          float(MIN_VALID_PER_FAMILY), ">=", Status.STRONG,
                          f"{n} token-valid tasks over {len(FAMILIES)} families", details=details)

    def table(self) -> list[dict]:
        return [dict(zip(self.calibration.TABLE_HEADER, row)) for row in self.calibration.table()]


def uncalibrated_bank(model, seed: int = DISCOVERY_SEED, per_family: int = E002_PER_FAMILY) -> Bank:
    """E002: every token-valid task is evaluated; the baseline gate only reports the intended-direction pass rate."""
    cal = calibrate_baseline(model, negation.negation_bank(seed, per_family), FAMILIES, min_pass_rate=MIN_PASS_RATE)
    return Bank("uncalibrated", seed, cal, list(cal.validation.valid))


def calibrated_bank(model, seed: int = DISCOVERY_SEED, per_family: int = CANDIDATES_PER_FAMILY,
                    exclude_prompts: frozenset = frozenset()) -> Bank:
    """E003: keep tasks whose unpatched contrast has the intended sign and |contrast| >= ``MIN_MARGIN``; blocked
    unless every family keeps ``MIN_KEPT_PER_FAMILY``. ``exclude_prompts`` removes (and counts) candidates whose
    prompt or control prompt another stage already used, before anything is scored."""
    bank = negation.negation_bank(seed, per_family)
    candidates = [t for t in bank if t.prompt not in exclude_prompts and t.control_prompt not in exclude_prompts]
    rule = {"min_margin": MIN_MARGIN, "min_per_family": MIN_KEPT_PER_FAMILY}
    cal = calibrate_baseline(model, candidates, FAMILIES, min_pass_rate=MIN_PASS_RATE, **rule)
    return Bank("calibrated", seed, cal, cal.kept, rule, len(bank) - len(candidates))


def prompts_of(tasks: Sequence[ValidTask]) -> frozenset:
    return frozenset(p for t in tasks for p in (t.task.prompt, t.task.control_prompt))


def engine_tasks(tasks: Sequence[ValidTask], suites: ControlSuites, seed: int) -> list[Task]:
    """Engine tasks: the negated prompt with its target/foil, and one control pair per suite.

    The engine's pairs carry a second ("corrupt") prompt; SAE edits act on the clean run, so it only sets the
    unpatched reference: the negated prompt's is its matched non-negated control, each control's the negated prompt.
    """
    by_task = suites.by_task()
    out = []
    for t in tasks:
        pair = PromptPair(t.id, t.family, t.prompt_ids, t.control_ids, t.target_id, t.foil_id, seed=seed,
                          text=t.task.prompt)
        controls = tuple(
            (suite, PromptPair(case.case_id, t.family, case.prompt_ids, t.prompt_ids, case.target_id, case.foil_id,
                               family_role="control", seed=seed, text=case.prompt))
            for suite, case in sorted(by_task.get(t.id, {}).items()))
        out.append(Task(pair, controls))
    return out


def padded_tokens(tasks: Sequence[ValidTask]):
    """Negated and control prompts as one [batch, pos] tensor, right-padded with BOS: a special token, which the
    compatibility gate's quality measurement skips, after the prompt, which a causal model never reads back."""
    import torch

    seqs = [t.prompt_ids for t in tasks] + [t.control_ids for t in tasks]
    bos = seqs[0][0]
    width = max(map(len, seqs))
    return torch.tensor([list(s) + [bos] * (width - len(s)) for s in seqs])


def compatibility(model, sae, tasks: Sequence[ValidTask], model_name: str | None = None) -> GateResult:
    return check_sae_compatibility(model, sae, padded_tokens(tasks), hook_name=sae.cfg.metadata.hook_name,
                                   model_name=model_name)


# --------------------------------------------------------------------------------------------------- ranking
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


def rank_features(model, sae, tasks: Sequence[ValidTask]) -> Ranking:
    acts = final_sae_activations(model, sae, [t.prompt_ids for t in tasks] + [t.control_ids for t in tasks])
    n = len(tasks)
    return Ranking(FAMILIES, tuple(t.family for t in tasks), acts[:n], acts[n:])


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


# ------------------------------------------------------------------------------------------------- evidence
def evaluate(model, sae, tasks: Sequence[Task], sets: Sequence[FeatureSet], operations=ABLATE) -> list:
    """Rows for every feature set; the ``top`` set's rows are the claim's (``unit_set="target"``), the others
    carry their own label as ``unit_set`` (``random_seed_7``, ``density_matched_seed_7``, ``bottom_active`` ...)."""
    ev = sae_evidence(model, tasks, sae, {s.label: s.features for s in sets}, operations=operations, mode="delta")
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


def attach_sets(mechclaim, ranking: Ranking, sets: Sequence[FeatureSet], mode: str) -> None:
    mechclaim.declare("selection_mode", mode)
    mechclaim.declare("feature_sets", feature_ids(sets))
    mechclaim.attach("feature_sets", [s.to_dict() for s in sets])
    mechclaim.attach("selected_feature_rationale", ranking.rows(sets[0].features))


# ------------------------------------------------------------------------------------------------- the study
@dataclass
class Evaluation:
    """One evaluated cell: its bank, suites, feature sets, rows, and (E004) the null."""

    bank: Bank
    suites: ControlSuites
    ranking: Ranking | None
    mode: str
    sets: list[FeatureSet]
    operations: tuple
    rows: list = field(default_factory=list)
    null: NullDistribution | None = None
    selection_error: str | None = None


def freeze_sets(path: Path, claim_id: str, mode: str, sets: Sequence[FeatureSet], bank: Bank) -> dict:
    """Write the feature sets chosen at discovery, with a content hash and the discovery prompts; idempotent for the
    same content, an error for different content (a later stage can never change what discovery chose)."""
    body = {"claim_id": claim_id, "mode": mode, "sets": [s.to_dict() for s in sets],
            "discovery_prompts": sorted(prompts_of(bank.tasks))}
    body["content_hash"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if path.exists():
        existing = json.loads(path.read_text())
        if existing["content_hash"] != body["content_hash"]:
            raise ValueError(f"{path} already freezes other feature sets; a later stage cannot change them")
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, sort_keys=True, indent=1) + "\n")
    return body


def load_frozen_sets(path: Path) -> tuple[list[FeatureSet], dict]:
    data = json.loads(path.read_text())
    stored = data.pop("content_hash")
    if hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest() != stored:
        raise ValueError(f"{path}: the frozen feature sets were edited after freezing")
    sets = [FeatureSet(d["label"], d["kind"], tuple(d["features"]), d["seed"], d["relaxed"], d["tolerance"],
                       d["details"]) for d in data["sets"]]
    return sets, data


class NegationStudy:
    """Everything the negation claims of one model + SAE compute, each part once per process (session fixture)."""

    def __init__(self, model, sae, frozen_dir: Path, candidates_per_family: int = CANDIDATES_PER_FAMILY,
                 model_name: str | None = None) -> None:
        self.model, self.sae, self.frozen_dir = model, sae, Path(frozen_dir)
        self.candidates_per_family, self.model_name = candidates_per_family, model_name
        self.tokenizer = as_tokenizer(model)
        self._compat: dict[str, GateResult] = {}
        self._cells: dict[tuple, Evaluation] = {}

    # banks
    @cached_property
    def e002_bank(self) -> Bank:
        return uncalibrated_bank(self.model)

    @cached_property
    def e003_bank(self) -> Bank:
        return calibrated_bank(self.model, DISCOVERY_SEED, self.candidates_per_family)

    @cached_property
    def heldout_bank(self) -> Bank:
        seen = prompts_of(self.e003_bank.calibration.validation.valid)
        return calibrated_bank(self.model, HELDOUT_SEED, self.candidates_per_family, exclude_prompts=seen)

    def bank(self, name: str) -> Bank:
        return {"e002": self.e002_bank, "e003": self.e003_bank, "heldout": self.heldout_bank}[name]

    def compatibility(self, bank_name: str) -> GateResult:
        if bank_name not in self._compat:
            bank = self.bank(bank_name)
            self._compat[bank_name] = compatibility(self.model, self.sae, bank.tasks, self.model_name)
        return self._compat[bank_name]

    def ranking(self, bank_name: str) -> Ranking:
        key = ("ranking", bank_name)
        if key not in self._cells:
            self._cells[key] = rank_features(self.model, self.sae, self.bank(bank_name).tasks)
        return self._cells[key]

    def suites(self, bank_name: str, suites: Sequence[str]) -> ControlSuites:
        key = ("suites", bank_name, tuple(suites))
        if key not in self._cells:
            self._cells[key] = build_control_suites(self.bank(bank_name).tasks, self.tokenizer, suites=suites)
        return self._cells[key]

    def evaluation(self, bank_name: str, mode: str, suites: Sequence[str], operations, with_null: bool = False
                   ) -> Evaluation:
        """Discovery cell: rank on the bank, select by ``mode``, evaluate every feature set (once per process)."""
        key = ("evaluation", bank_name, mode, tuple(suites), tuple(map(str, operations)), with_null)
        if key in self._cells:
            return self._cells[key]
        bank, built = self.bank(bank_name), self.suites(bank_name, suites)
        ranking = self.ranking(bank_name)
        try:
            sets = control_sets(ranking, mode)
        except FeatureSetError as exc:
            cell = Evaluation(bank, built, ranking, mode, [], tuple(operations), selection_error=str(exc))
            self._cells[key] = cell
            return cell
        tasks = engine_tasks(bank.tasks, built, bank.seed)
        cell = Evaluation(bank, built, ranking, mode, sets, tuple(operations),
                          evaluate(self.model, self.sae, tasks, sets, operations))
        if with_null:
            cell.null = selection_null(self.model, self.sae, tasks, ranking, mode, operations)
        self._cells[key] = cell
        return cell

    def frozen_path(self, claim_id: str) -> Path:
        return self.frozen_dir / f"{claim_id}-frozen-feature-sets.json"

    def discovery_runnable(self, bank_name: str) -> bool:
        bank = self.bank(bank_name)
        return (not bank.calibration.blocked and bool(bank.tasks)
                and self.compatibility(bank_name).caps_at > Status.BLOCKED)

    def freeze(self, claim_id: str, bank_name: str, mode: str, suites, operations) -> Path | None:
        """Discovery's feature sets for ``claim_id``, frozen (once) before any later stage scores them; None when
        discovery cannot run or its mode finds no set."""
        path = self.frozen_path(claim_id)
        if not path.exists():
            if not self.discovery_runnable(bank_name):
                return None
            cell = self.evaluation(bank_name, mode, suites, operations)
            if cell.selection_error:
                return None
            freeze_sets(path, claim_id, mode, cell.sets, cell.bank)
        return path

    def heldout_evaluation(self, claim_id: str) -> Evaluation:
        """The feature sets frozen at discovery, scored on the held-out bank (matched controls, ablation)."""
        key = ("heldout", claim_id)
        if key not in self._cells:
            sets, _ = load_frozen_sets(self.frozen_path(claim_id))
            bank, built = self.heldout_bank, self.suites("heldout", MATCHED)
            tasks = engine_tasks(bank.tasks, built, bank.seed)
            self._cells[key] = Evaluation(bank, built, None, "frozen", sets, ABLATE,
                                          evaluate(self.model, self.sae, tasks, sets, ABLATE))
        return self._cells[key]


# ------------------------------------------------------------------------------------------------ the stages
def selection_gate(cell: Evaluation) -> GateResult:
    if cell.selection_error:
        return GateResult("feature_selection", False, None, float(TOP_K), ">=", Status.BLOCKED, cell.selection_error)
    return GateResult("feature_selection", True, float(TOP_K), float(TOP_K), ">=", Status.STRONG,
                      f"{cell.mode}: features {list(cell.sets[0].features)}; "
                      f"{len(cell.sets) - 1} control feature sets",
                      details={"relaxed_density_sets": [s.label for s in cell.sets if s.relaxed]})


def record_prerequisites(mechclaim, study: NegationStudy, bank_name: str, calibration_gate: bool) -> bool:
    """Task validation, the bank's calibration (its table attached; its gate recorded when ``calibration_gate`` or
    when it blocks) and SAE compatibility on the bank's prompts. Returns whether an evaluation may run."""
    bank = study.bank(bank_name)
    mechclaim.attach("baseline_calibration_table", bank.table())
    mechclaim.attach("baseline_excluded", bank.calibration.excluded())
    if bank.n_removed_as_seen:
        mechclaim.attach("candidates_removed_as_seen_at_discovery", bank.n_removed_as_seen)
    results = [mechclaim.gate.add(bank.validation_gate())]
    if calibration_gate or bank.calibration.blocked:
        results.append(mechclaim.gate.add(bank.calibration.gate))
    if bank.calibration.blocked or not bank.tasks:
        return False
    results.append(mechclaim.gate.add(study.compatibility(bank_name)))
    return all(r.caps_at > Status.BLOCKED for r in results)


def record_calibration_stage(mechclaim, study: NegationStudy, bank_name: str) -> None:
    record_prerequisites(mechclaim, study, bank_name, calibration_gate=True)


def run_single_suite_gates(mechclaim, rows, bank: Bank) -> None:
    """SELF-GROUND's report gate on the evaluated tasks, with the sign of the gap and the family minimum added."""
    target = [r for r in rows if r.unit_set == "target"]
    gate = mechclaim.gate
    gate.baseline_calibration(bank.baseline_rows, min_pass_rate=MIN_PASS_RATE, families=list(FAMILIES), **bank.rule)
    gate.specificity_gap(target)
    gate.collateral_ratio(target)
    gate.norm_drift(target)
    gate.family_minimum(target, min_families=len(FAMILIES))
    gate.unit_controls(rows)


def run_multi_control_gates(mechclaim, cell: Evaluation) -> None:
    """E004's cell gate: every suite x operation and every family must keep a positive gap; plus the strong
    floor, the label-permutation null and the paired test against every control feature set."""
    rows = cell.rows
    target = [r for r in rows if r.unit_set == "target"]
    mechclaim.gate.add(cell.suites.coverage())
    run_single_suite_gates(mechclaim, rows, cell.bank)
    mechclaim.gate.multi_control_minimum(target, min_suites=2)
    mechclaim.gate.strong_floor(rows)
    mechclaim.gate.paired_test(rows)
    if cell.null is not None:
        mechclaim.attach("empirical_null", dict(cell.null.to_dict(), kind="selection_under_permuted_labels",
                                                score="mean specificity gap over the claim's rows"))
        mechclaim.gate.empirical_null(mean_gap(target), cell.null.values, search_size=cell.null.search_size)


def record_discovery_stage(mechclaim, study: NegationStudy, bank_name: str, mode: str, suites=MATCHED,
                           operations=ABLATE, with_null: bool = False, freeze_as: str | None = None) -> None:
    if not record_prerequisites(mechclaim, study, bank_name, calibration_gate=False):
        return  # fail closed: no intervention on a blocked bank or an incompatible SAE
    cell = study.evaluation(bank_name, mode, suites, operations, with_null)
    if not mechclaim.gate.add(selection_gate(cell)).passed:
        return
    attach_sets(mechclaim, cell.ranking, cell.sets, mode)
    if freeze_as is not None:
        study.freeze(freeze_as, bank_name, mode, suites, operations)
    mechclaim.record(cell.rows)
    if len(suites) > 1:
        run_multi_control_gates(mechclaim, cell)
    else:
        run_single_suite_gates(mechclaim, cell.rows, cell.bank)


def record_heldout_stage(mechclaim, study: NegationStudy, claim_id: str, bank_name: str, mode: str) -> None:
    """The feature sets frozen at ``bank_name``'s discovery (run first if needed), on the held-out bank."""
    if not record_prerequisites(mechclaim, study, "heldout", calibration_gate=False):
        return
    path = study.freeze(claim_id, bank_name, mode, MATCHED, ABLATE)
    if path is None:
        mechclaim.gate.add(GateResult("frozen_feature_sets", False, None, None, "exists", Status.BLOCKED,
                                      f"discovery on the {bank_name} bank could not run or select, so nothing was "
                                      "frozen for the held-out stage to score"))
        return
    _, frozen = load_frozen_sets(path)
    cell = study.heldout_evaluation(claim_id)
    shared = prompts_of(cell.bank.tasks) & set(frozen["discovery_prompts"])
    mechclaim.gate.add(GateResult(
        "heldout_disjoint", not shared, float(len(shared)), 0.0, "==", Status.BLOCKED if shared else Status.STRONG,
        f"{len(shared)} held-out prompts were seen at discovery" if shared
        else f"{len(cell.bank.tasks)} held-out tasks (bank seed {cell.bank.seed}), none seen at discovery "
             f"({cell.bank.n_removed_as_seen} candidates removed before scoring)"))
    mechclaim.declare("frozen_feature_sets", feature_ids(frozen["sets"]))
    mechclaim.attach("frozen_feature_sets", frozen["sets"])
    mechclaim.record(cell.rows)
    run_single_suite_gates(mechclaim, cell.rows, cell.bank)
