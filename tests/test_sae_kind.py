"""The SAE kind's own checks (pytest_mechclaim/kinds/sae*.py), on synthetic activations with known answers (no
model): selection modes, the label-permutation null's input, task validation, the selection gate, engine tasks.
Frozen feature sets are the run's frozen store (tests/test_kinds.py)."""

import numpy as np
import pytest

from pytest_mechclaim.kinds import sae_banks
from pytest_mechclaim.kinds import sae_select as select
from pytest_mechclaim.kinds.sae import selection_gate
from pytest_mechclaim.banks import feature_sets as fsets
from pytest_mechclaim.banks.calibration import BaselineCalibration
from pytest_mechclaim.banks.controls import ControlCase, ControlSuites
from pytest_mechclaim.banks.feature_sets import FeatureSet, FeatureSetError
from pytest_mechclaim.banks.schema import BankTask, Validation, ValidTask
from pytest_mechclaim.gates import baseline_calibration
from pytest_mechclaim.status import Status

FAMILIES = sae_banks.FAMILIES


def ranking_with(gaps_by_family: dict[int, tuple[float, float, float]], d_sae: int = 400, per_family: int = 4,
                 dead_from: int = 300, seed: int = 0) -> select.Ranking:
    """Activations where feature f's negated-minus-control gap in family k is ``gaps_by_family[f][k]`` (others: a
    small random background); features >= ``dead_from`` never fire."""
    rng = np.random.default_rng(seed)
    n = per_family * len(FAMILIES)
    fams = tuple(f for f in FAMILIES for _ in range(per_family))
    control = rng.uniform(0.0, 0.05, size=(n, d_sae))
    negated = control + rng.uniform(-0.01, 0.01, size=(n, d_sae)).clip(min=-control)
    for f, gaps in gaps_by_family.items():
        for k, family in enumerate(FAMILIES):
            rows = [i for i, fam in enumerate(fams) if fam == family]
            negated[rows, f] = control[rows, f] + gaps[k]
    negated[:, dead_from:] = control[:, dead_from:] = 0.0
    return select.Ranking(FAMILIES, fams, negated, control)


def test_top_mode_takes_the_best_scores_and_family_consistent_skips_one_family_features():
    strong_in_one = {f: (4.0, 0.0, -0.1) for f in range(3)}  # the best scores, but in one family only
    broad = {f: (1.0, 1.0, 1.0) for f in range(3, 9)}
    r = ranking_with({**strong_in_one, **broad})
    top = select.selection_order(r, "top")[:select.TOP_K]
    assert set(top) >= {0, 1, 2}
    consistent = select.selection_order(r, "top-family-consistent")[:select.TOP_K]
    assert not set(consistent) & {0, 1, 2} and set(consistent) <= set(range(3, 9))


def test_ensemble_specificity_prefers_low_control_activation_and_fails_closed_when_it_cannot_fill():
    r = ranking_with({f: (1.0, 1.0, 1.0) for f in range(10)})
    r.control[:, :3] += 5.0  # features 0-2 also fire strongly on the controls
    r.negated[:, :3] += 5.0
    chosen = select.selection_order(r, "ensemble-specificity")[:select.TOP_K]
    assert not set(chosen) & {0, 1, 2}
    only_two = ranking_with({0: (1.0, 1.0, 1.0), 1: (1.0, 1.0, 1.0)})
    only_two.negated[:, 2:] = only_two.control[:, 2:]  # nothing else has a positive gap
    with pytest.raises(FeatureSetError, match=r"finds [0-2] of 5"):
        select.selection_order(only_two, "ensemble-specificity")


def test_dead_features_never_enter_the_selection_pool():
    # 80% dead features: with them in the pool the control quantile would be 0 and ensemble could not fill.
    r = ranking_with({f: (0.5 + f / 10, 0.5, 0.5) for f in range(10)}, d_sae=500, dead_from=100)
    order = select.selection_order(r, "ensemble-specificity")
    assert all(f < 100 for f in order[:select.TOP_K])


def test_order_scores_reproduce_the_order_and_control_sets_stay_outside_the_selected_ranks():
    r = ranking_with({f: (1.0, 1.0, 1.0) for f in range(10)})
    order = select.selection_order(r, "top")
    assert list(fsets.ranking(select.order_scores(order))) == list(order)
    sets = select.control_sets(r, "top")
    assert [s.label for s in sets] == (["top"] + [f"random_seed_{s}" for s in select.CONTROL_SEEDS]
                                       + [f"density_matched_seed_{s}" for s in select.CONTROL_SEEDS]
                                       + ["bottom_active"])
    excluded = set(order[:fsets.excluded_rank_count(r.d_sae, select.TOP_K)].tolist())
    for s in sets[1:7]:
        assert not set(s.features) & excluded


def test_permuted_labels_swap_within_tasks_and_depend_on_the_seed():
    r = ranking_with({0: (2.0, 2.0, 2.0)})
    a, b = r.permuted(1), r.permuted(2)
    for p in (a, b):
        pairs = {tuple(sorted((p.negated[i, 0], p.control[i, 0]))) for i in range(len(p.negated))}
        assert pairs == {tuple(sorted((r.negated[i, 0], r.control[i, 0]))) for i in range(len(r.negated))}
    assert not np.array_equal(a.negated, b.negated)
    assert abs(a.gap[0]) < r.gap[0]  # random signs cancel part of the real gap


def valid_task(i: int, family: str) -> ValidTask:
    task = BankTask(f"{family}_{i}", family, f"The {i} was not good. The {i} was", " bad", " good",
                    f"The {i} was good. The {i} was", " good", " bad")
    return ValidTask(task, (1, 10 + i, 3, 4), (1, 10 + i, 4), 5, 6, 6, 5)


def bank_of(counts: dict[str, int]) -> sae_banks.Bank:
    valid = [valid_task(i, f) for f, n in counts.items() for i in range(n)]
    cal = BaselineCalibration(Validation(valid, []), [], baseline_calibration([]), FAMILIES)
    return sae_banks.Bank("uncalibrated", 0, cal, valid)


def test_task_validation_blocks_a_family_with_too_few_valid_tasks():
    assert bank_of({f: 3 for f in FAMILIES}).validation_gate().passed
    gate = bank_of({"sentiment_negation": 3, "property_negation": 3, "state_negation": 1}).validation_gate()
    assert gate.caps_at == Status.BLOCKED and "state_negation" in gate.reason


def test_selection_gate_blocks_when_the_mode_cannot_fill_the_set():
    assert selection_gate("ensemble-specificity", "finds 2 of 5").caps_at == Status.BLOCKED
    assert selection_gate("top", [FeatureSet("top", "top", (1, 2))]).passed


def test_engine_tasks_pair_the_negated_prompt_with_its_control_and_every_suite():
    tasks = [valid_task(0, "sentiment_negation")]
    case = ControlCase("c0", tasks[0].id, "sentiment_negation", "matched_non_negation", "x", " good", " bad",
                       (1, 10, 4), 6, 5)
    built = sae_banks.engine_tasks(tasks, ControlSuites([case], [], ("matched_non_negation",), FAMILIES), seed=0)
    pair, controls = built[0].pair, dict(built[0].controls)
    assert pair.clean == tasks[0].prompt_ids and pair.corrupt == tasks[0].control_ids and pair.seed == 0
    assert controls["matched_non_negation"].family_role == "control"
    assert controls["matched_non_negation"].clean == case.prompt_ids
    assert sae_banks.prompts_of(tasks) == {tasks[0].task.prompt, tasks[0].task.control_prompt}
