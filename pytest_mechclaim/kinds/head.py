"""Head claims: "this attention head carries the behaviour", as stage tests the kind generates.

    SMOLLM2 = HeadDiscovery("smollm2-135m-instruct", AttentionPrior(top=5, negatives=3), InductionBank(), load="smollm2")
    TestL18H6 = HeadClaim("smollm2-induction-L18H6", "L18H6 writes the induction completion ...", "L18H6",
                          SMOLLM2, stages=("replication", "heldout")).tests()

The declaration says which head, on which model and bank, chosen how; the kind decides the rest, the same for
every head claim (local-mi-lab's ladder, seed-systems §2.6):

* candidates, chosen and frozen before any causal scoring (``HeadDiscovery``): ``Preregistered`` (a published
  discovery), ``AttentionPrior`` (the descriptive rung: the induction attention score; attention is not an effect)
  or ``CausalSearch`` (ranked by specificity gap on the discovery bank, only where the metric calibration permits
  a search: ``search_permission``). Frozen per claim id in the run's store with the discovery tasks;
* calibration: the metric unpatched on the seed bank (and, in ``HeadDiscovery.metric_claim``, the discovery bank);
* replication: discovery's tasks (its seeds), clean -> corrupt and zero ablation of ``hook_z``;
* held-out: the bank's held-out families and seeds, checked disjoint from discovery before scoring, and every
  extra position the discovery names (``replication`` over positions);
* characterization: characterization families and seeds, zero ablation, attention/effect alignment;
* every stage records the same interventions on comparison heads (``unit_set="random_comparison"``: every other
  head when there are few, else a seeded sample) so the policy's ``unit_controls`` can run, and adds
  ``positive_share``, ``frozen_role`` and the replication gates the ladder names. The policy runs what it requires.

Claims of one discovery measure each stage's tasks together, when the first of them runs (``planner``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from ..banks.calibration import search_permission
from ..engine import HeadRequest, head_evidence
from ..gates import GateResult
from ..status import Status
from . import _tests
from .banks import GroundTruthBank, InductionBank  # noqa: F401  (re-exported: the banks a head claim names)
from .mechanism import Mechanism
from .planner import head_stage_evidence

INTERVENTIONS = ("clean_to_corrupt", "zero")
STAGE_INTERVENTIONS = {"replication": INTERVENTIONS, "heldout": INTERVENTIONS, "characterization": ("zero",)}
N_COMPARISON_HEADS = 4


def all_heads(model, layers=None) -> list[str]:
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [f"L{layer}H{head}" for layer in layers for head in range(model.cfg.n_heads)]


def comparison_heads(model, unit: str, layers=None, k: int = N_COMPARISON_HEADS) -> list[str]:
    pool = [h for h in all_heads(model, layers) if h != unit]
    return pool if len(pool) <= k else sorted(random.Random(f"comparison:{unit}").sample(pool, k))


# ------------------------------------------------------------------------------------------ candidate selection
@dataclass(frozen=True)
class Preregistered:
    candidates: tuple[str, ...]
    negative_controls: tuple[str, ...] = ()
    source: str = "preregistered in the claim module"

    def choose(self, model, tasks, calibration, layers):
        return list(self.candidates), list(self.negative_controls), {}, f"preregistered: {self.source}"


@dataclass(frozen=True)
class AttentionPrior:
    """The ``top`` heads by induction attention score, and the ``negatives`` lowest as negative controls."""

    top: int = 5
    negatives: int = 3

    def choose(self, model, tasks, calibration, layers):
        from .evidence import induction_attention_scores

        scores = induction_attention_scores(model, layers)
        ranked = sorted(scores, key=lambda h: (-scores[h], h))
        return (ranked[:self.top], sorted(ranked[-self.negatives:]) if self.negatives else [], scores,
                "induction attention score (descriptive; no causal search)")


@dataclass(frozen=True)
class CausalSearch:
    """The ``top`` heads by mean specificity gap (zero ablation) on the discovery bank; needs search permission."""

    top: int = 5
    negatives: int = 3

    def choose(self, model, tasks, calibration, layers):
        permission = search_permission(calibration) if calibration is not None else None
        if permission is None or not permission.passed:
            return [], [], {}, f"causal search refused: {permission.reason if permission else 'no calibration'}"
        rows = head_evidence(model, tasks, all_heads(model, layers), interventions=("zero",))
        by_head: dict = {}
        for r in rows:
            if r.ok and r.paired:
                by_head.setdefault(r.unit, []).append(r.specificity_gap)
        scores = {h: sum(v) / len(v) for h, v in by_head.items()}
        ranked = sorted(scores, key=lambda h: (-scores[h], h))
        return (ranked[:self.top], sorted(ranked[-self.negatives:]) if self.negatives else [], scores,
                "causal search: mean specificity gap under zero ablation (permitted by calibration)")


@dataclass
class Discovery:
    """One model's computed discovery: its model, calibration, chosen and frozen units, tasks per stage."""

    model: object
    calibration: dict  # bank name -> MetricCalibration (empty for a model without a tokenizer)
    selection: str
    candidates: list
    negative_controls: list
    scores: dict
    tasks: dict = field(default_factory=dict)  # stage -> tasks

    @property
    def frozen(self) -> list:
        return self.candidates + self.negative_controls


@dataclass(frozen=True)
class HeadDiscovery:
    """How one model's head candidates are chosen (computed once per process, shared by its claims)."""

    model: str  # the claim marker's model
    candidates: Preregistered | AttentionPrior | CausalSearch
    bank: InductionBank | GroundTruthBank
    load: str | Callable = "smollm2"  # a model fixture name, or a zero-argument builder
    layers: tuple[int, ...] | None = None  # heads considered (selection and comparison heads)
    positions: tuple = ()  # (stage, positions recorded beside the claim's) e.g. (("heldout", ("final", ...)),)

    def compute(self, request) -> Discovery:
        def build():
            model = _tests.load(request, self.load)
            tasks = {"discovery": self.bank.tasks(model, "discovery")}
            calibration = self.bank.calibration(model)
            permission_source = calibration.get("discovery_bank")
            chosen = self.candidates.choose(model, tasks["discovery"], permission_source, self.layers)
            return Discovery(model, calibration, chosen[3], chosen[0], chosen[1], chosen[2], tasks)
        return _tests.cached(request, ("head-discovery", self), build)

    def stage_tasks(self, request, stage: str):
        discovery = self.compute(request)
        name = "discovery" if stage == "replication" else stage
        if name not in discovery.tasks:
            discovery.tasks[name] = self.bank.tasks(discovery.model, name)
        return discovery.tasks[name]

    def record_calibration(self, mechclaim, request, bank: str) -> None:
        """The metric unpatched on one calibration bank (local-mi-lab §2.6 I): what permits a causal search."""
        calibration = self.compute(request).calibration[bank]
        mechclaim.attach("metric_calibration_table", calibration.table())
        mechclaim.record_metric_calibration(calibration.rows)
        if not calibration.rows:
            mechclaim.gate.add(calibration.gate)  # blocked before scoring (e.g. tokenization): say why

    def metric_claim(self, claim_id: str, statement: str, expect: str = "supported") -> type:
        """The metric's calibration as a claim: ``calibration[<bank>]`` per calibration bank of the model."""
        marker = {"statement": statement, "level": "candidate", "expect": expect, "model": self.model}
        tests = [_tests.stage_test("calibration", self.record_calibration, self.bank.calibration_banks)]
        return _tests.claim_class(claim_id, marker, tests, statement)


# ----------------------------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class HeadClaim:
    id: str
    statement: str
    unit: str
    discovery: HeadDiscovery
    stages: tuple[str, ...] = ("replication", "heldout", "characterization")
    expect: str = "supported"
    level: str = "candidate"
    positions: tuple[str, ...] = ("final",)  # where the claim says the head acts
    requires: tuple[str, ...] = ()
    mechanism: Mechanism | None = None  # the same mechanism declared on other models (cross-model replication)

    def tests(self) -> type:
        """The claim's test class: its claim marker and one test per stage (bind it to a ``Test...`` name)."""
        layer = int(self.unit[1:].split("H")[0])
        marker = {"statement": self.statement, "level": self.level, "expect": self.expect, "units": [self.unit],
                  "model": self.discovery.model, "hook": f"blocks.{layer}.attn.hook_z", "kind": "head",
                  "positions": list(self.positions), "requires": list(self.requires)}
        if self.mechanism is not None:
            marker["mechanism"] = self.mechanism.id
        tests = [_tests.stage_test(stage, lambda m, r, s=stage: self.record(m, r, s),
                                   plan=None if stage == "calibration" else (self, stage)) for stage in self.stages]
        return _tests.claim_class(self.id, marker, tests, self.statement)

    def scored(self, discovery: Discovery) -> bool:
        """Whether ``record`` reaches scoring: the unit is frozen, and it is its mechanism's unit when it names one."""
        return self.unit in discovery.frozen and (
            self.mechanism is None or self.mechanism.check(self.discovery, discovery.candidates, self.unit).passed)

    def evidence_requests(self, discovery: Discovery, stage: str) -> list[HeadRequest]:
        """What a stage measures: the claim's head at the stage's positions, and the comparison heads at the
        claim's own positions (``unit_set="random_comparison"``), under the stage's interventions."""
        interventions = STAGE_INTERVENTIONS[stage]
        positions = tuple(dict(self.discovery.positions).get(stage, self.positions))
        comparison = comparison_heads(discovery.model, self.unit, self.discovery.layers)
        return [HeadRequest((self.unit,), interventions, positions),
                HeadRequest(tuple(comparison), interventions, tuple(self.positions), "random_comparison")]

    def record(self, mechclaim, request, stage: str) -> None:
        """One stage: check the frozen set, record target and comparison rows, add the kind's gates."""
        if stage == "calibration":
            return self.discovery.record_calibration(mechclaim, request, "seed_bank")
        decl, store = self.discovery, _tests.use_store(mechclaim, request)
        discovery = decl.compute(request)
        mechclaim.attach("selection", {"rule": discovery.selection, "scores": discovery.scores})
        if not discovery.frozen:
            mechclaim.gate.add(GateResult("frozen_candidate", False, None, None, "in", Status.BLOCKED,
                                          f"discovery froze no candidate set ({discovery.selection})"))
            return
        frozen = store.freeze(self.id, discovery.frozen, discovery.tasks["discovery"],
                              detail={"selection": discovery.selection, "candidates": discovery.candidates})
        mechclaim.declare("frozen_candidates", frozen.summary())
        role = mechclaim.gate.add(frozen_role(discovery, self.unit))
        if self.mechanism is not None:
            mechclaim.declare("mechanism", self.mechanism.declaration())
            if not mechclaim.gate.add(self.mechanism.check(decl, discovery.candidates, self.unit)).passed:
                return
        tasks = decl.stage_tasks(request, stage)
        if stage == "heldout" and not mechclaim.gate.add(store.check_tasks(self.id, tasks)).passed:
            return  # fail closed: a leaking held-out bank is never scored
        if role.caps_at == Status.BLOCKED:
            return
        target, comparison = head_stage_evidence(request, self, stage)
        rows = mechclaim.record(target)
        mechclaim.record(comparison)
        claimed = [r for r in rows if r.position in self.positions]
        mechclaim.gate.positive_share(claimed)
        positions = tuple(dict(decl.positions).get(stage, self.positions))
        if len(STAGE_INTERVENTIONS[stage]) > 1:
            mechclaim.gate.replication(claimed, axis="intervention", min_passing=2)
        if stage == "heldout" and set(positions) - set(self.positions):  # characterization's are context
            mechclaim.gate.replication(rows, axis="position", min_passing=2)
        if stage == "characterization":
            from .evidence import attention_alignment

            mechclaim.gate.add(attention_alignment(discovery.model, tasks, self.unit, claimed))


def frozen_role(discovery: Discovery, unit: str) -> GateResult:
    """A frozen negative control never supports a claim; a unit discovery did not freeze is never scored."""
    if unit not in discovery.frozen:
        return GateResult("frozen_role", False, 0.0, 1.0, "in", Status.BLOCKED,
                          f"{unit} is not in the frozen set {discovery.frozen}: a later stage never adds a candidate")
    role = "candidate" if unit in discovery.candidates else "negative control"
    return GateResult("frozen_role", role == "candidate", 1.0, 1.0, "in",
                      Status.STRONG if role == "candidate" else Status.INSUFFICIENT, f"{unit} is a frozen {role}",
                      details={"role": role})


__all__ = ["AttentionPrior", "CausalSearch", "Discovery", "GroundTruthBank", "HeadClaim", "HeadDiscovery",
           "InductionBank", "Mechanism", "Preregistered", "comparison_heads", "frozen_role"]
