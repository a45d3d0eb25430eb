"""Shared evidence recipe for the ground-truth claims: the true induction head and the planted false claims.

Every claim runs the same candidate gates at the seeds' default thresholds; only the unit, the tasks, the
positions or the model variant differ. Nothing here is tuned per claim.
"""

from pytest_mechclaim.engine import head_evidence
from pytest_mechclaim.groundtruth import induction_tasks

ALL_HEADS = ("L0H0", "L0H1", "L1H0", "L1H1")
INTERVENTIONS = ("clean_to_corrupt", "zero")
DISCOVERY_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (10, 11, 12)
# Held-out families: sequence lengths and prefixes never used in discovery.
HELDOUT_FAMILIES = {"repeat_mid": (9, 7), "repeat_tail": (14, 13)}


def tasks_for(seeds, **kwargs):
    return [t for s in seeds for t in induction_tasks(s, **kwargs)]


def record_head_claim(mechclaim, model, unit, tasks, positions=("final",)):
    """Rows for the claimed head, plus the same interventions on every other head as random comparison units."""
    rows = mechclaim.record(head_evidence(model, tasks, [unit], interventions=INTERVENTIONS, positions=positions))
    comparison = [h for h in ALL_HEADS if h != unit]
    mechclaim.record(head_evidence(model, tasks, comparison, interventions=INTERVENTIONS, positions=positions,
                                   unit_set="random_comparison"))
    return rows


def run_candidate_gates(mechclaim, rows):
    gate = mechclaim.gate
    gate.specificity_gap(rows, min=0.0)
    gate.positive_share(rows, min=0.5)
    gate.family_minimum(rows, min=0.0, min_families=2)
    gate.family_minimum(rows, min=0.0, min_families=2, score="effect")
    gate.multi_control_minimum(rows, min=0.0, min_suites=2)
    gate.collateral_ratio(rows, max=1.0, strong_max=0.5)
    gate.normalized_effect(rows, min=0.0)
    gate.norm_drift(rows)
    gate.seed_replication(rows, min_passing=2)
    gate.unit_controls(min_ratio=1.05)
