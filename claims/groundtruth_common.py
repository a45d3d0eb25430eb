"""Shared evidence recipe for the ground-truth induction claims (true head and planted decoy)."""

from pytest_mechclaim.engine import head_evidence
from pytest_mechclaim.groundtruth import induction_tasks

ALL_HEADS = ("L0H0", "L0H1", "L1H0", "L1H1")
DISCOVERY_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (10, 11, 12)
# Held-out families: sequence lengths and prefixes never used in discovery.
HELDOUT_FAMILIES = {"repeat_mid": (9, 7), "repeat_tail": (14, 13)}


def record_head_claim(mechclaim, model, unit, seeds, families=None):
    kwargs = {} if families is None else {"families": families}
    tasks = [t for s in seeds for t in induction_tasks(s, **kwargs)]
    rows = mechclaim.record(head_evidence(model, tasks, [unit], interventions=("clean_to_corrupt", "zero")))
    comparison = [h for h in ALL_HEADS if h != unit]
    mechclaim.record(head_evidence(model, tasks, comparison, interventions=("clean_to_corrupt", "zero"),
                                   unit_set="random_comparison"))
    return rows


def run_candidate_gates(mechclaim, rows):
    gate = mechclaim.gate
    gate.specificity_gap(rows, min=0.0)
    gate.positive_share(rows, min=0.5)
    gate.family_minimum(rows, min=0.0, min_families=2)
    gate.multi_control_minimum(rows, min=0.0, min_suites=2)
    gate.collateral_ratio(rows, max=1.0, strong_max=0.5)
    gate.normalized_effect(rows, min=0.0)
    gate.norm_drift(rows)
    gate.seed_replication(rows, min_passing=2)
    gate.unit_controls(min_ratio=1.05)
