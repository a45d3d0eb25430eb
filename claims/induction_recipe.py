"""The induction-head stage ladder on a real LM, shared by the SmolLM2 claims and the GPT-2 seed study.

Preregistered here, before any result, and never changed per head:

* calibration: the logit-contrast metric scored unpatched on local-mi-lab's metric calibration bank and on the
  discovery bank. A causal *search* over heads may only run when calibration allows one (``search_permission``);
  on SmolLM2 it does not, so no head is chosen by a causal search here;
* discovery without a search: the candidate set comes from the descriptive rung of local-mi-lab's ladder, the
  induction attention score (attention from each position of a repeated random sequence's second copy to the token
  after its first occurrence), or from a published discovery (the GPT-2 seed study). The top ``N_CANDIDATES``
  heads and the ``N_NEGATIVE_CONTROLS`` lowest-scoring heads are frozen, with the discovery prompts, before any
  causal scoring;
* replication: clean -> corrupt patch and zero ablation of ``hook_z`` at the final position on the discovery bank
  (seeds 0-2), judged by the candidate gates against random comparison heads;
* held-out: held-out families and seeds (10-12), disjoint from discovery (checked), both interventions at the final
  and previous-occurrence positions, only for frozen units (a later stage never adds one);
* characterization: characterization families and seeds (20-22): attention to the source vs effect (Spearman) and
  the signed effect per family.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mechclaim import gates
from pytest_mechclaim.banks.calibration import calibrate_metric, search_permission
from pytest_mechclaim.banks.heldout import check_heldout, check_units, freeze_candidates, load_frozen
from pytest_mechclaim.banks.induction import build_tasks, induction_bank, metric_calibration_bank
from pytest_mechclaim.engine import head_evidence
from pytest_mechclaim.gates import GateResult
from pytest_mechclaim.status import Status

DISCOVERY_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (10, 11, 12)
CHARACTERIZATION_SEEDS = (20, 21, 22)
N_CANDIDATES = 5
N_NEGATIVE_CONTROLS = 3
N_COMPARISON_HEADS = 4


@dataclass
class Discovery:
    """The frozen candidate set and the calibration it was made under, shared by every claim of one model."""

    calibration: object
    seed_bank_calibration: object
    permission: GateResult
    selection: str
    scores: dict = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    negative_controls: list[str] = field(default_factory=list)
    tasks: list = field(default_factory=list)
    frozen_path: Path | None = None


def bank_tasks(stage: str, seeds, model, n_per_family: int):
    tasks, excluded = [], []
    for seed in seeds:
        build = build_tasks(induction_bank(stage, seed, n_per_family=n_per_family, tokenizer=model.tokenizer),
                            model.tokenizer)
        tasks += build.tasks
        excluded += build.excluded
    return tasks, excluded


def all_heads(model, layers=None) -> list[str]:
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [f"L{layer}H{head}" for layer in layers for head in range(model.cfg.n_heads)]


def induction_attention_scores(model, layers=None, n_sequences: int = 8, length: int = 20, seed: int = 0) -> dict:
    """Per head: mean attention from each second-copy position of BOS + r + r (r random tokens) to the token after
    that position's first occurrence. Descriptive only: attention is not an effect."""
    import torch

    rng = random.Random(f"induction-attention:{seed}")
    bos = model.tokenizer.bos_token_id
    vocab = range(1000, min(model.cfg.d_vocab, 20000))
    tokens = []
    for _ in range(n_sequences):
        r = rng.sample(vocab, length)
        tokens.append([bos] + r + r)
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in (range(model.cfg.n_layers) if layers is None else layers)}
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor(tokens, device=model.cfg.device), names_filter=lambda n: n in names)
    dest = torch.arange(length + 1, 2 * length + 1)
    source = dest - length + 1
    scores = {}
    for name in sorted(names, key=lambda n: int(n.split(".")[1])):
        layer = int(name.split(".")[1])
        pattern = cache[name]  # [batch, head, dest, src]
        per_head = pattern[:, :, dest, source].mean(dim=(0, 2))
        for head, value in enumerate(per_head.tolist()):
            scores[f"L{layer}H{head}"] = value
    return scores


def select_by_attention(model, claim_prefix: str, frozen_dir: Path, layers=None, n_per_family: int = 4) -> Discovery:
    """Calibrate, then freeze the attention-ranked candidates and negative controls with the discovery prompts."""
    discovery = _calibrated(model, "induction attention score (descriptive; no causal search)", n_per_family)
    discovery.scores = induction_attention_scores(model, layers)
    ranked = sorted(discovery.scores, key=lambda h: (-discovery.scores[h], h))
    discovery.candidates = ranked[:N_CANDIDATES]
    discovery.negative_controls = sorted(ranked[-N_NEGATIVE_CONTROLS:])
    return _freeze(discovery, claim_prefix, frozen_dir)


def preregistered(model, claim_prefix: str, frozen_dir: Path, candidates, negative_controls, source: str,
                  n_per_family: int = 4) -> Discovery:
    """Freeze a candidate set fixed by an earlier, published discovery (a replication study)."""
    discovery = _calibrated(model, f"preregistered: {source}", n_per_family)
    discovery.candidates, discovery.negative_controls = list(candidates), list(negative_controls)
    return _freeze(discovery, claim_prefix, frozen_dir)


def _calibrated(model, selection: str, n_per_family: int) -> Discovery:
    tasks, _ = bank_tasks("discovery", DISCOVERY_SEEDS, model, n_per_family)
    examples = [e for s in DISCOVERY_SEEDS for e in induction_bank("discovery", s, n_per_family=n_per_family,
                                                                     tokenizer=model.tokenizer)]
    calibration = calibrate_metric(model, examples, model.tokenizer)
    seed_bank = calibrate_metric(model, metric_calibration_bank(0, tokenizer=model.tokenizer), model.tokenizer)
    return Discovery(calibration, seed_bank, search_permission(calibration), selection, tasks=tasks)


def _freeze(discovery: Discovery, claim_prefix: str, frozen_dir: Path) -> Discovery:
    discovery.frozen_path = frozen_dir / f"{claim_prefix}-frozen-candidates.json"
    freeze_candidates(discovery.frozen_path, claim_prefix, discovery.candidates + discovery.negative_controls,
                      discovery.tasks)
    return discovery


def record_calibration_stage(mechclaim, calibration) -> None:
    """A metric calibration as a claim of its own: the metric separates induction positives from controls."""
    mechclaim.gate.add(calibration.gate)


def comparison_heads(model, unit: str, layers=None, k: int = N_COMPARISON_HEADS) -> list[str]:
    pool = [h for h in all_heads(model, layers) if h != unit]
    return sorted(random.Random(f"comparison:{unit}").sample(pool, k))


def run_candidate_gates(mechclaim, rows, rows_with_controls=None, positions=False, interventions=False):
    gate = mechclaim.gate
    gate.specificity_gap(rows)
    gate.positive_share(rows)
    gate.family_minimum(rows, min_families=2)
    gate.family_minimum(rows, min_families=2, score="effect")
    gate.multi_control_minimum(rows, min_suites=2)
    gate.collateral_ratio(rows)
    gate.normalized_effect(rows)
    gate.norm_drift(rows)
    gate.seed_replication(rows, min_passing=2)
    if interventions:
        gate.replication(rows, axis="intervention", min_passing=2)
    if positions:
        gate.replication(rows, axis="position", min_passing=2)
    gate.unit_controls(rows_with_controls if rows_with_controls is not None else rows)


def frozen_membership(discovery: Discovery, unit: str) -> GateResult:
    """A later stage can keep, downgrade or kill a frozen candidate; it can never add one."""
    if discovery.frozen_path is None:
        return GateResult("frozen_candidate", False, None, None, "in", Status.BLOCKED,
                          "discovery froze no candidate set")
    frozen = load_frozen(discovery.frozen_path)
    try:
        check_units(frozen, [unit])
    except ValueError as exc:
        return GateResult("frozen_candidate", False, 0.0, 1.0, "in", Status.INSUFFICIENT, str(exc))
    role = "candidate" if unit in discovery.candidates else "negative control"
    caps = Status.STRONG if role == "candidate" else Status.INSUFFICIENT
    return GateResult("frozen_candidate", role == "candidate", 1.0, 1.0, "in", caps,
                      f"{unit} is a frozen {role} (set hash {frozen.content_hash[:12]})",
                      details={"frozen": str(discovery.frozen_path), "role": role})


def record_replication_stage(mechclaim, model, discovery: Discovery, unit: str, layers=None):
    membership = mechclaim.gate.add(frozen_membership(discovery, unit))
    if membership.caps_at == Status.BLOCKED:
        return
    interventions = ("clean_to_corrupt", "zero")
    rows = mechclaim.record(head_evidence(model, discovery.tasks, [unit], interventions=interventions))
    controls = head_evidence(model, discovery.tasks, comparison_heads(model, unit, layers),
                             interventions=interventions, unit_set="random_comparison")
    run_candidate_gates(mechclaim, rows, rows + list(controls), interventions=True)


def record_heldout_stage(mechclaim, model, discovery: Discovery, unit: str, layers=None, n_per_family: int = 3):
    membership = mechclaim.gate.add(frozen_membership(discovery, unit))
    if membership.caps_at == Status.BLOCKED:
        return
    tasks, excluded = bank_tasks("heldout", HELDOUT_SEEDS, model, n_per_family)
    mechclaim.attach("heldout_disjointness", check_heldout(load_frozen(discovery.frozen_path), tasks))
    mechclaim.attach("excluded_tasks", sorted({r.reasons[0].split(":")[0] for r in excluded}))
    interventions, positions = ("clean_to_corrupt", "zero"), ("final", "previous_occurrence")
    rows = mechclaim.record(head_evidence(model, tasks, [unit], interventions=interventions, positions=positions))
    # Comparison heads only where unit_controls reads them: the final position.
    controls = head_evidence(model, tasks, comparison_heads(model, unit, layers), interventions=interventions,
                             unit_set="random_comparison")
    final = [r for r in rows if r.position == "final"]
    run_candidate_gates(mechclaim, final, final + list(controls), interventions=True)
    mechclaim.gate.replication(rows, axis="position", min_passing=2)


def record_characterization_stage(mechclaim, model, discovery: Discovery, unit: str, n_per_family: int = 2):
    membership = mechclaim.gate.add(frozen_membership(discovery, unit))
    if membership.caps_at == Status.BLOCKED:
        return
    tasks, _ = bank_tasks("characterization", CHARACTERIZATION_SEEDS, model, n_per_family)
    rows = mechclaim.record(head_evidence(model, tasks, [unit], interventions=("zero",),
                                          positions=("final", "previous_occurrence")))
    final = [r for r in rows if r.position == "final"]
    mechclaim.gate.specificity_gap(final)
    mechclaim.gate.family_minimum(final, min_families=2, score="effect")
    mechclaim.gate.normalized_effect(final)
    mechclaim.gate.seed_replication(final)
    mechclaim.gate.add(attention_alignment(model, tasks, unit, final))


def attention_to_source(model, tasks, unit: str) -> dict[str, float]:
    """Per positive prompt: the head's attention from the final position to the previous occurrence's successor
    (where an induction head reads the token it copies). One batched run per prompt length."""
    import torch

    layer, head = (int(x) for x in unit[1:].split("H"))
    name = f"blocks.{layer}.attn.hook_pattern"
    by_length: dict = {}
    for task in tasks:
        if task.pair.position("previous_occurrence") is not None:
            by_length.setdefault(len(task.pair.clean), []).append(task.pair)
    out = {}
    for pairs in by_length.values():
        with torch.no_grad():
            _, cache = model.run_with_cache(torch.tensor([p.clean for p in pairs], device=model.cfg.device),
                                            names_filter=lambda n: n == name)
        for i, pair in enumerate(pairs):
            out[pair.prompt_id] = float(cache[name][i, head, -1, pair.position("previous_occurrence") + 1])
    return out


def attention_alignment(model, tasks, unit: str, rows) -> GateResult:
    """local-mi-lab's attention/effect alignment: Spearman(attention to the source, normalized effect) > 0."""
    from scipy import stats

    attention = attention_to_source(model, tasks, unit)
    effects = {}
    for r in rows:
        e, status = gates.normalized_effect_of(r, 0.1)
        if status == "ok" and r.prompt_id in attention and r.family_role == "positive":
            effects.setdefault(r.prompt_id, e)
    ids = sorted(effects)
    if len(ids) < 4:
        return GateResult("attention_alignment", False, None, 0.0, ">", Status.INSUFFICIENT,
                          f"only {len(ids)} prompts with both an attention score and a usable effect (need 4)")
    a, e = [attention[i] for i in ids], [effects[i] for i in ids]
    corr = stats.spearmanr(a, e).statistic
    mean_attention = sum(a) / len(a)
    details = {"n": len(ids), "mean_attention_to_source": mean_attention}
    if corr != corr:  # constant input: no correlation is defined
        return GateResult("attention_alignment", False, None, 0.0, ">", Status.INSUFFICIENT,
                          "attention or effect is constant across prompts: no alignment to measure", details=details)
    ok = corr > 0
    return GateResult("attention_alignment", ok, float(corr), 0.0, ">", Status.STRONG if ok else Status.FALSIFIED,
                      f"Spearman(attention to source, effect) = {corr:.3f} over {len(ids)} prompts; "
                      f"mean attention {mean_attention:.3f}", details=details)


def stage_tests(unit: str, model_fixture: str, discovery_fixture: str, layers=None):
    """The replication, held-out and characterization tests of one head claim (each a stage of that claim)."""
    import pytest

    def _get(request, name):
        return request.getfixturevalue(name)

    @pytest.mark.replication
    def test_replication(mechclaim, request):
        record_replication_stage(mechclaim, _get(request, model_fixture), _get(request, discovery_fixture), unit,
                                 layers)

    @pytest.mark.heldout
    def test_heldout(mechclaim, request):
        record_heldout_stage(mechclaim, _get(request, model_fixture), _get(request, discovery_fixture), unit, layers)

    @pytest.mark.characterization
    def test_characterization(mechclaim, request):
        record_characterization_stage(mechclaim, _get(request, model_fixture), _get(request, discovery_fixture), unit)

    return test_replication, test_heldout, test_characterization
