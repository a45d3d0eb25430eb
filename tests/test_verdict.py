"""The verdict ladder and the seed systems' reference cases (seed-systems.md §8) expressed as rows.

Mapping of the seeds' statuses onto the ladder (and where we deliberately differ):
* SELF-GROUND blocked -> blocked; candidate_evidence -> candidate; strong_candidate_evidence -> strong.
* SELF-GROUND insufficient_evidence -> insufficient, EXCEPT when the matched controls moved at least as much as the
  target (E002, E003): that is `falsified` here, as MechLedger already mapped those runs to failed_or_weakened.
* local-mi-lab nonspecific / heldout_falsified / no_positive_effect -> falsified; heldout_downgraded -> insufficient;
  replicated_head_specific_candidate -> candidate; denominator_problem -> blocked.
"""

from __future__ import annotations

import dataclasses

from pytest_mechclaim import gates
from pytest_mechclaim.evidence import BaselineRow, EvidenceRow
from pytest_mechclaim.gates import GateResult, MetricCalibrationRow
from pytest_mechclaim.status import Status
from pytest_mechclaim.verdict import decide

from .rowkit import effect_rows, paired_rows
from .test_gates import _strong_rows


def _replace(row: EvidenceRow, **changes) -> EvidenceRow:
    return dataclasses.replace(row, **changes)


def _selfground_gates(rows, baseline=None, multi=False):
    results = [gates.specificity_gap(rows), gates.collateral_ratio(rows), gates.norm_drift(rows),
               gates.family_minimum(rows, min_families=2), gates.unit_controls(rows)]
    if multi:
        results.append(gates.multi_control_minimum(rows))
    if baseline is not None:
        results.append(gates.baseline_calibration(baseline))
    return results


# ---- ladder rules ----------------------------------------------------------------------------------------------


def test_no_gate_is_blocked_not_a_pass():
    verdict = decide([], paired_rows(0.9, 0.1))
    assert verdict.status == Status.BLOCKED and "no gate ran" in verdict.reasons[0]


def test_all_rows_skipped_is_blocked():
    rows = [_replace(r, status="invalid", reason="nonfinite_telemetry") for r in paired_rows(0.9, 0.1)]
    verdict = decide([gates.specificity_gap(rows)], rows)
    assert verdict.status == Status.BLOCKED


def test_nonfinite_number_makes_a_row_invalid_not_silently_dropped():
    row = EvidenceRow(unit="u", intervention="ablate", prompt_id="p", family="f", target_delta=float("nan"),
                      control_delta=0.1)
    assert row.status == "invalid" and row.reason == "nonfinite:target_delta"


def test_any_skipped_row_denies_candidate():
    rows = _strong_rows()
    rows[0] = _replace(rows[0], status="invalid", reason="nonfinite_row_value")
    verdict = decide(_selfground_gates(rows), rows)
    assert verdict.status == Status.INSUFFICIENT
    assert "invalid" in verdict.reasons[0]


def test_not_applicable_rows_are_recorded_but_do_not_cap():
    rows = _strong_rows() + [EvidenceRow(unit="top", intervention="ablate", prompt_id="x", family="f1",
                                         status="not_applicable", reason="position_unavailable:previous_occurrence")]
    verdict = decide(_selfground_gates(rows), rows)
    assert verdict.status == Status.CANDIDATE
    assert verdict.row_accounting["n_not_applicable"] == 1


def test_strong_is_reachable_with_the_full_floor():
    rows = [_replace(r, target_delta=r.target_delta + (hash(r.prompt_id) % 5) * 1e-3) for r in _strong_rows()]
    null = [0.05 + i * 0.005 for i in range(40)]
    results = _selfground_gates(rows) + [gates.strong_floor(rows), gates.empirical_null(0.8, null),
                                         gates.paired_test(rows)]
    verdict = decide(results, rows)
    assert verdict.status == Status.STRONG, verdict.reasons


def test_strong_needs_floor_null_and_paired_test_to_have_run():
    rows = _strong_rows()
    verdict = decide(_selfground_gates(rows), rows)
    assert verdict.status == Status.CANDIDATE
    assert any("strong needs strong_floor, empirical_null, paired_test" in r for r in verdict.reasons)


def test_lowest_cap_wins_and_its_reason_comes_first():
    rows = paired_rows(0.9, 0.1)
    blocked = GateResult("sae_compatibility", False, None, None, "==", Status.BLOCKED, "d_in 512 != 576")
    verdict = decide([gates.specificity_gap(rows), blocked], rows)
    assert verdict.status == Status.BLOCKED and verdict.reasons[0] == "sae_compatibility: d_in 512 != 576"


# ---- §8 reference cases ----------------------------------------------------------------------------------------


def _e002_rows():
    # target 0.0342, control 0.0547 (gap < 0), 30 tasks, 3 families, 3 random + 3 density seeds, ablate only.
    families = ("property", "sentiment", "state")
    rows = paired_rows(0.0342, 0.0547, families=families, suites=("matched_non_negation",), seeds=(0,), per_cell=10)
    for s in (7, 11, 13):
        rows += paired_rows(0.03, 0.05, families=families, suites=("matched_non_negation",), seeds=(0,), per_cell=10,
                            unit_set=f"random_seed_{s}")
        rows += paired_rows(0.03, 0.05, families=families, suites=("matched_non_negation",), seeds=(0,), per_cell=10,
                            unit_set=f"density_matched_seed_{s}")
    return rows


def test_e002_like_is_rejected():
    rows = _e002_rows()
    baseline = ([BaselineRow(f"p{i}", "property", -0.2) for i in range(10)]
                + [BaselineRow(f"s{i}", "sentiment", 0.3 if i < 5 else -0.3) for i in range(10)]
                + [BaselineRow(f"t{i}", "state", 0.3 if i < 2 else -0.3) for i in range(10)])
    verdict = decide(_selfground_gates(rows, baseline), rows)
    # Seed: insufficient_evidence. Here controls moved more than the target: falsified.
    assert verdict.status == Status.FALSIFIED
    failing = {g.name for g in verdict.failing_gates}
    assert {"specificity_gap", "baseline_calibration", "collateral_ratio"} <= failing


def test_e003_like_is_rejected_by_collateral_and_gap():
    rows = paired_rows(0.6277, 0.7188, families=("property", "sentiment", "state"), suites=("matched",),
                       seeds=(0,), per_cell=23)
    rows += paired_rows(0.5, 0.7, families=("property", "sentiment", "state"), suites=("matched",), seeds=(0,),
                        per_cell=23, unit_set="random_seed_7")
    baseline = [BaselineRow(f"t{i}", "sentiment", 0.5) for i in range(69)]
    verdict = decide(_selfground_gates(rows, baseline), rows)
    assert verdict.status == Status.FALSIFIED
    collateral = next(g for g in verdict.gates if g.name == "collateral_ratio")
    assert not collateral.passed and collateral.value > 1.0


def test_e004_like_multi_control_is_insufficient():
    # E004's best cell: target 0.8960, control 0.7599 (pooled gap 0.136), multi-control min gap -0.0194 (the hard
    # negative suite), family min gap -0.0900 (property). Per-family targets and per-suite controls chosen to give
    # exactly those aggregates.
    control_mean, target_mean = 0.7599, 0.8959
    property_target = control_mean - 0.0900
    other_target = (3 * target_mean - property_target) / 2
    hard_negative = target_mean + 0.0194
    other_control = (5 * control_mean - hard_negative) / 4
    suites = {"matched_non_negation_current": other_control, "lexical_identity": other_control,
              "semantic_unrelated": other_control, "shuffled_target": other_control, "hard_negative": hard_negative}
    families = ("property", "sentiment", "state")
    targets = {"property": property_target, "sentiment": other_target, "state": other_target}
    rows = paired_rows(targets, suites, families=families, suites=tuple(suites), seeds=(0,), per_cell=4)
    rows += paired_rows(0.1, 0.1, families=families, suites=tuple(suites), seeds=(0,), per_cell=4,
                        unit_set="random_seed_7")
    verdict = decide(_selfground_gates(rows, multi=True), rows)
    by_name = {g.name: g for g in verdict.gates}
    assert by_name["specificity_gap"].passed and abs(by_name["specificity_gap"].value - 0.136) < 1e-3
    assert not by_name["multi_control_minimum"].passed
    assert abs(by_name["multi_control_minimum"].value - (-0.0194)) < 1e-9
    assert "hard_negative" in by_name["multi_control_minimum"].reason
    assert abs(by_name["family_minimum"].value - (-0.0900)) < 1e-9
    assert by_name["family_minimum"].details["worst_family"] == "property"
    assert verdict.status == Status.INSUFFICIENT


def test_metadata_mismatch_override_caps_at_insufficient():
    rows = _strong_rows()
    override = GateResult("sae_compatibility", False, None, None, "==", Status.INSUFFICIENT,
                          "metadata mismatch overridden: diagnostic only")
    verdict = decide(_selfground_gates(rows) + [override], rows)
    assert verdict.status == Status.INSUFFICIENT


def test_missing_controls_are_blocked():
    rows = [_replace(r, control_delta=None, control_suite=None) for r in paired_rows(0.9, 0.1)]
    verdict = decide(_selfground_gates(rows), rows)
    assert verdict.status == Status.BLOCKED


def test_any_warning_denies_strong():
    rows = [_replace(r, target_delta=r.target_delta + (hash(r.prompt_id) % 5) * 1e-3) for r in _strong_rows()]
    rows[0] = _replace(rows[0], norm_drift=0.7, norm_warning=True)
    results = _selfground_gates(rows) + [gates.strong_floor(rows), gates.empirical_null(0.8, [0.1] * 40),
                                         gates.paired_test(rows)]
    assert decide(results, rows).status == Status.CANDIDATE


def test_local_multiseed_l7h7_replicates_to_candidate():
    gaps = {0: 0.0884, 1: 0.0893, 2: 0.0641}
    rows = effect_rows({"pos_a": {s: 0.10 + g for s, g in gaps.items()},
                        "pos_b": {s: 0.10 + g for s, g in gaps.items()}, "ctl_a": 0.10})
    results = [gates.seed_replication(rows), gates.control_family_gap(rows), gates.normalized_effect(rows)]
    assert decide(results, rows).status == Status.CANDIDATE


def test_local_head_with_a_nonspecific_seed_is_falsified():
    rows = effect_rows({"pos": {0: 0.3, 1: 0.3, 2: 0.3}, "ctl_a": {0: 0.0, 1: 0.0, 2: 0.5}})
    assert decide([gates.seed_replication(rows)], rows).status == Status.FALSIFIED


def test_local_heldout_any_controls_move_row_falsifies():
    # L7H7 held out: positives keep some effect but a control family moves as much at one seed.
    rows = effect_rows({"heldout_symbolic": 0.2, "heldout_word": 0.15,
                        "ctl_wrong_target": {10: 0.05, 11: 0.25, 12: 0.05}}, seeds=(10, 11, 12))
    verdict = decide([gates.seed_replication(rows), gates.control_family_gap(rows)], rows)
    assert verdict.status == Status.FALSIFIED


def test_local_heldout_survival_only_at_final_is_downgraded():
    final = effect_rows({"pos": 0.5, "ctl_a": 0.1}, seeds=(10, 11, 12), position="final")
    previous = effect_rows({"pos": 0.02, "ctl_a": 0.01}, seeds=(10, 11, 12), position="previous_occurrence")
    rows = final + previous
    results = [gates.seed_replication(final), gates.replication(rows, axis="position", min_passing=2, min=0.05)]
    assert decide(results, rows).status == Status.INSUFFICIENT


def test_metric_calibration_failure_blocks_a_search():
    rows = ([MetricCalibrationRow(f"w{i}", "calib_clean_repeat_word", "positive", 1.7428) for i in range(8)]
            + [MetricCalibrationRow(f"n{i}", "calib_clean_repeat_number", "positive", 6.03) for i in range(8)]
            + [MetricCalibrationRow(f"t{i}", "calib_frequency_trap_control", "control", 3.217) for i in range(8)])
    from pytest_mechclaim.banks.calibration import search_permission

    result = gates.metric_calibration(rows)
    assert result.details["search_allowed"] is False
    assert decide([result]).status == Status.FALSIFIED  # the metric claim itself: metric_needs_revision
    assert decide([search_permission(result)]).status == Status.BLOCKED  # a search that depends on it
