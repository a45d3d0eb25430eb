"""Every gate passes on concrete numbers where it should and fails where it should (no torch)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from pytest_mechclaim import gates
from pytest_mechclaim.evidence import BaselineRow, EvidenceRow
from pytest_mechclaim.gates import MetricCalibrationRow
from pytest_mechclaim.status import Status

from .rowkit import effect_rows, paired_rows


# ---- specificity gap -------------------------------------------------------------------------------------------


def test_specificity_gap_passes_when_target_moves_more():
    result = gates.specificity_gap(paired_rows(0.9, 0.3))
    assert result.passed and result.caps_at == Status.STRONG
    assert result.value == pytest.approx(0.6)
    assert result.details["target_abs_delta_mean"] == pytest.approx(0.9)


def test_specificity_gap_uses_absolute_movement_rowwise():
    # A control that moves the *other* way still moved: |-0.5| counts as 0.5.
    result = gates.specificity_gap(paired_rows(0.4, -0.5))
    assert not result.passed
    assert result.value == pytest.approx(-0.1)
    assert result.caps_at == Status.FALSIFIED


def test_specificity_gap_below_threshold_is_insufficient_not_falsified():
    result = gates.specificity_gap(paired_rows(0.5, 0.45), min=0.1)
    assert not result.passed and result.caps_at == Status.INSUFFICIENT


def test_specificity_gap_blocks_without_paired_controls():
    rows = effect_rows({"pos": 0.8})
    result = gates.specificity_gap(rows)
    assert result.caps_at == Status.BLOCKED and "paired control" in result.reason


def test_specificity_gap_worst_rows_carry_coordinates():
    rows = paired_rows({"f1": 0.9, "f2": 0.2}, 0.3)
    result = gates.specificity_gap(rows)
    worst = result.worst[0]
    assert worst["family"] == "f2" and worst["specificity_gap"] == pytest.approx(-0.1)
    for coordinate in ("unit", "intervention", "seed", "control_suite", "prompt_id", "position"):
        assert coordinate in worst


# ---- positive share (averages hide cancellation) ---------------------------------------------------------------


def test_positive_share_catches_cancellation_a_mean_hides():
    # Family f1 has a huge gap, f2 a small negative one: the mean is positive, most rows are not.
    rows = paired_rows({"f1": 5.0, "f2": 0.1, "f3": 0.1}, 0.3, families=("f1", "f2", "f3"))
    assert gates.specificity_gap(rows).passed
    share = gates.positive_share(rows, min=0.5)
    assert not share.passed and share.value == pytest.approx(1 / 3)
    assert share.caps_at == Status.INSUFFICIENT


def test_positive_share_passes():
    assert gates.positive_share(paired_rows(0.9, 0.3)).value == 1.0


# ---- family minimum --------------------------------------------------------------------------------------------


def test_family_minimum_fails_on_one_bad_family():
    result = gates.family_minimum(paired_rows({"f1": 0.9, "f2": 0.2}, 0.3))
    assert not result.passed and result.details["worst_family"] == "f2"
    assert result.value == pytest.approx(-0.1) and result.caps_at == Status.INSUFFICIENT


def test_family_minimum_passes_and_counts_families():
    assert gates.family_minimum(paired_rows(0.9, 0.3)).passed
    one_family = gates.family_minimum(paired_rows(0.9, 0.3, families=("f1",)), min_families=2)
    assert not one_family.passed and "only 1 positive family" in one_family.reason


def test_family_minimum_on_effect_rows_uses_hardest_control_family():
    rows = effect_rows({"pos_a": 0.8, "pos_b": 0.35, "ctl_shuffled": 0.4, "ctl_norepeat": 0.1})
    result = gates.family_minimum(rows)
    assert result.value == pytest.approx(0.35 - 0.4)
    assert not result.passed and result.details["worst_family"] == "pos_b"


# ---- multi-control minimum -------------------------------------------------------------------------------------


def test_multi_control_minimum_fails_on_one_suite():
    rows = paired_rows(0.9, {"matched": 0.3, "hard_negative": 0.95}, suites=("matched", "hard_negative"))
    result = gates.multi_control_minimum(rows)
    assert not result.passed and result.value == pytest.approx(-0.05)
    assert "hard_negative" in result.reason


def test_multi_control_minimum_passes_and_needs_distinct_suites():
    assert gates.multi_control_minimum(paired_rows(0.9, 0.3)).passed
    single = gates.multi_control_minimum(paired_rows(0.9, 0.3, suites=("matched",)))
    assert not single.passed and "1 distinct control suite" in single.reason


def test_multi_control_minimum_blocks_rows_without_suite():
    rows = [EvidenceRow(unit="u", intervention="ablate", prompt_id="p", family="f", target_delta=1.0, control_delta=0.1)]
    assert gates.multi_control_minimum(rows).caps_at == Status.BLOCKED


# ---- collateral ratio ------------------------------------------------------------------------------------------


def test_collateral_ratio_zero_is_a_perfect_score():
    # SELF-GROUND's `(collateral or 999.0) <= 0.5` failed exactly this case (an ablation: the clean run, lowered).
    result = gates.collateral_ratio(paired_rows(-0.8, 0.0, run="clean"))
    assert result.passed and result.value == 0.0 and result.caps_at == Status.STRONG


def test_collateral_ratio_between_strong_and_candidate_caps_at_candidate():
    result = gates.collateral_ratio(paired_rows(1.0, 0.7))
    assert result.passed and result.caps_at == Status.CANDIDATE and result.value == pytest.approx(0.7)


def test_collateral_ratio_fails_when_controls_move_more():
    result = gates.collateral_ratio(paired_rows(0.6277, 0.7188))
    assert not result.passed and result.value == pytest.approx(0.7188 / 0.6277)
    assert result.caps_at == Status.FALSIFIED


def test_collateral_ratio_target_that_never_moves_is_not_a_pass():
    result = gates.collateral_ratio(paired_rows(0.0, 0.0, run="clean"))
    assert not result.passed and result.value is None and result.caps_at == Status.FALSIFIED


# ---- normalized effect -----------------------------------------------------------------------------------------


def test_normalized_effect_passes_and_fails():
    assert gates.normalized_effect(effect_rows({"pos": 0.7})).value == pytest.approx(0.7)
    failed = gates.normalized_effect(effect_rows({"pos": -0.2}))
    assert not failed.passed and failed.caps_at == Status.FALSIFIED


def test_normalized_effect_for_clean_run_ablation_counts_damage():
    row = EvidenceRow(unit="L1H0", intervention="zero", run="clean", prompt_id="p", family="f",
                      clean=10.0, corrupt=0.0, patched=2.5)
    effect, status = gates.normalized_effect_of(row, 0.1)
    assert status == "ok" and effect == pytest.approx(0.75)


def test_normalized_effect_reports_tiny_denominators_instead_of_dividing():
    # local-mi-lab's 2.83 "effect": clean 4.4459 vs corrupt 4.4799 gave a ratio of noise.
    tiny = [EvidenceRow(unit="h", intervention="clean_to_corrupt", prompt_id=f"t{i}", family="pos",
                        clean=4.4459, corrupt=4.4799, patched=4.5762) for i in range(3)]
    good = effect_rows({"pos": 0.5}, seeds=(0,), per_family=5)
    result = gates.normalized_effect(tiny + good)
    assert result.passed and result.value == pytest.approx(0.5)
    assert result.details["n_unusable"] == 3
    assert result.details["effect_status_counts"]["clean_below_corrupt"] == 3
    assert "reported" in result.reason


def test_normalized_effect_blocks_when_most_denominators_are_unusable():
    tiny = [EvidenceRow(unit="h", intervention="clean_to_corrupt", prompt_id=f"t{i}", family="pos",
                        clean=1.0, corrupt=0.99, patched=1.0) for i in range(5)]
    result = gates.normalized_effect(tiny)
    assert result.caps_at == Status.BLOCKED and "does not separate" in result.reason
    assert result.worst and result.worst[0]["effect_status"] == "denominator_below_floor"


# ---- control family gap (local-mi-lab) -------------------------------------------------------------------------


def test_control_family_gap_passes():
    result = gates.control_family_gap(effect_rows({"pos": 0.6, "ctl_a": 0.1, "ctl_b": 0.2}))
    assert result.passed and result.value == pytest.approx(0.4)
    assert result.details["hardest_control_family"] == "ctl_b"


def test_control_family_gap_uses_worst_control_not_the_average():
    result = gates.control_family_gap(effect_rows({"pos": 0.5, "ctl_a": 0.0, "ctl_b": 0.9}))
    assert not result.passed and result.caps_at == Status.FALSIFIED
    assert "ctl_b" in result.reason


def test_control_family_gap_blocks_without_control_families():
    assert gates.control_family_gap(effect_rows({"pos": 0.5})).caps_at == Status.BLOCKED


# ---- replication -----------------------------------------------------------------------------------------------


def test_seed_replication_local_mi_lab_l7h7():
    # Three seeds of head_specific_positive_candidate with gaps 0.0884 / 0.0893 / 0.0641 (§2.9).
    gaps = {0: 0.0884, 1: 0.0893, 2: 0.0641}
    rows = effect_rows({"pos_a": {s: 0.10 + g for s, g in gaps.items()},
                        "pos_b": {s: 0.10 + g for s, g in gaps.items()}, "ctl_a": 0.10})
    result = gates.seed_replication(rows, min_passing=2)
    assert result.passed and result.value == 3
    assert result.details["per_group"]["1"]["gap"] == pytest.approx(0.0893)


def test_seed_replication_falsified_by_one_nonspecific_seed():
    rows = effect_rows({"pos": {0: 0.3, 1: 0.3, 2: 0.3}, "ctl_a": {0: 0.0, 1: 0.0, 2: 0.5}})
    result = gates.seed_replication(rows)
    assert not result.passed and result.caps_at == Status.FALSIFIED and "2" in result.reason


def test_seed_replication_needs_two_seeds():
    result = gates.seed_replication(paired_rows(0.9, 0.1, seeds=(0,)))
    assert not result.passed and result.caps_at == Status.INSUFFICIENT


def test_seed_replication_refuses_seeds_that_redraw_the_same_prompts():
    # §6.8: "seeds" that resample one small pool re-measure the same prompts.
    rows = [EvidenceRow(**{**r.__dict__, "prompt_id": r.prompt_id.replace(f"-s{r.seed}-", "-")})
            for r in paired_rows(0.9, 0.1)]
    result = gates.seed_replication(rows)
    assert not result.passed and "re-measurement" in result.reason


def test_position_replication_survival_only_at_final_is_not_enough():
    final = effect_rows({"pos": 0.5, "ctl_a": 0.1}, position="final")
    previous = effect_rows({"pos": -0.1, "ctl_a": -0.2}, position="previous_occurrence")
    result = gates.replication(final + previous, axis="position", min_passing=2)
    assert not result.passed and result.value == 1 and result.caps_at == Status.INSUFFICIENT


# ---- unit controls ---------------------------------------------------------------------------------------------


def test_unit_controls_pass_against_each_control_set():
    rows = paired_rows(0.9, 0.1) + paired_rows(0.2, 0.1, unit_set="random_seed_7") \
        + paired_rows(0.3, 0.1, unit_set="density_matched_seed_7")
    result = gates.unit_controls(rows)
    assert result.passed and result.value == pytest.approx(3.0)
    assert result.details["strongest_control_set"] == "density_matched_seed_7"


def test_unit_controls_fail_when_a_control_set_moves_as_much():
    rows = paired_rows(0.9, 0.1) + paired_rows(0.95, 0.1, unit_set="density_matched_seed_7")
    result = gates.unit_controls(rows)
    assert not result.passed and result.caps_at == Status.FALSIFIED


def test_unit_controls_block_without_control_sets():
    assert gates.unit_controls(paired_rows(0.9, 0.1)).caps_at == Status.BLOCKED


# ---- norm drift ------------------------------------------------------------------------------------------------


def test_norm_drift_passes_clean():
    result = gates.norm_drift(paired_rows(0.9, 0.1, drift=0.05))
    assert result.passed and result.caps_at == Status.STRONG


def test_norm_drift_any_warning_denies_strong():
    rows = paired_rows(0.9, 0.1, drift=0.05)
    rows[0] = EvidenceRow(**{**rows[0].__dict__, "norm_drift": 0.9, "norm_warning": True})
    result = gates.norm_drift(rows)
    assert result.passed and result.caps_at == Status.CANDIDATE
    assert result.worst[0]["norm_drift"] == 0.9


def test_norm_drift_fails_when_warnings_dominate():
    result = gates.norm_drift(paired_rows(0.9, 0.1, drift=0.8, warning=True))
    assert not result.passed and result.value == 1.0 and result.caps_at == Status.INSUFFICIENT


def test_norm_drift_blocks_without_telemetry():
    rows = [EvidenceRow(unit="u", intervention="ablate", prompt_id="p", family="f", target_delta=1.0, control_delta=0.1)]
    assert gates.norm_drift(rows).caps_at == Status.BLOCKED


# ---- baseline calibration --------------------------------------------------------------------------------------


def _baseline(family, contrasts, direction="positive"):
    return [BaselineRow(f"{family}-{i}", family, c, direction) for i, c in enumerate(contrasts)]


def test_baseline_calibration_e002_pass_rate_fails():
    # E002: property 0/10, sentiment 5/10, state 2/10 -> 7/30 = 0.2333.
    rows = (_baseline("property", [-0.3] * 10) + _baseline("sentiment", [0.4] * 5 + [-0.4] * 5)
            + _baseline("state", [0.2] * 2 + [-0.2] * 8))
    result = gates.baseline_calibration(rows)
    assert not result.passed and result.value == pytest.approx(7 / 30)
    assert result.caps_at == Status.INSUFFICIENT
    assert result.details["per_family"]["property"] == {"kept": 0, "total": 10, "wrong_direction": 10,
                                                         "below_margin": 0}


def test_baseline_calibration_blocks_when_a_family_keeps_too_few_and_says_why():
    rows = (_baseline("property", [0.05] * 6 + [-0.3] * 4) + _baseline("sentiment", [0.9] * 10))
    result = gates.baseline_calibration(rows, min_margin=0.1, min_per_family=3)
    assert result.caps_at == Status.BLOCKED
    assert "property kept 0/10 (4 wrong direction, 6 below margin)" in result.reason
    assert len(result.details["excluded"]) == 10


def test_baseline_calibration_passes_and_respects_direction():
    rows = _baseline("neg", [-0.5] * 8, direction="negative") + _baseline("pos", [0.5] * 8)
    assert gates.baseline_calibration(rows, min_per_family=3).passed


def test_baseline_calibration_blocks_nonfinite():
    result = gates.baseline_calibration(_baseline("f", [0.5, math.nan]))
    assert result.caps_at == Status.BLOCKED and "non-finite" in result.reason


# ---- strong floor, null, paired test ---------------------------------------------------------------------------


def _strong_rows(target=0.9, control=0.1):
    families = ("f1", "f2", "f3")
    rows = []
    for op in ("ablate", "amplify"):
        rows += paired_rows(target, control, families=families, per_cell=4, intervention=op)
        for s in (7, 11, 13):
            rows += paired_rows(0.2, 0.1, families=families, per_cell=4, intervention=op, unit_set=f"random_seed_{s}",
                                jitter=0.01)
            rows += paired_rows(0.25, 0.1, families=families, per_cell=4, intervention=op,
                                unit_set=f"density_matched_seed_{s}", jitter=0.01)
    return rows


def test_strong_floor_counts_rows_actually_present():
    assert gates.strong_floor(_strong_rows()).passed
    ablate_only = [r for r in _strong_rows() if r.intervention == "ablate"]
    result = gates.strong_floor(ablate_only)
    assert not result.passed and "amplify" in result.reason and result.caps_at == Status.CANDIDATE


def test_strong_floor_fails_on_too_few_control_sets():
    rows = [r for r in _strong_rows() if not r.unit_set.startswith("density")]
    assert "0 density-matched" in gates.strong_floor(rows).reason


def test_empirical_null_percentile_rank():
    null = [i / 100 for i in range(40)]
    assert gates.empirical_null(0.5, null).passed
    low = gates.empirical_null(0.2, null)
    assert not low.passed and low.value == pytest.approx(20.5 / 40)
    too_small = gates.empirical_null(0.5, null[:10])
    assert not too_small.passed and "30" in too_small.reason


def test_paired_test_passes_and_fails_on_real_numbers():
    rows = _strong_rows()
    # jitter makes target-vs-control differences non-constant so Wilcoxon is defined
    rows = [EvidenceRow(**{**r.__dict__, "target_delta": r.target_delta + (hash(r.prompt_id) % 7) * 1e-3})
            for r in rows]
    result = gates.paired_test(rows)
    assert result.passed and result.value < 1e-6
    losing = [r for r in rows if r.unit_set == "target"] + [
        EvidenceRow(**{**r.__dict__, "unit_set": "random_seed_7", "target_delta": r.target_delta + 0.5})
        for r in rows if r.unit_set == "target"]
    failed = gates.paired_test(losing)
    assert not failed.passed and failed.details["per_set"]["random_seed_7"]["direction"] == "negative"


# ---- metric calibration ----------------------------------------------------------------------------------------


def _calib(family, role, values, domain=None):
    return [MetricCalibrationRow(f"{family}-{i}", family, role, v, token_domain=domain) for i, v in enumerate(values)]


def test_metric_calibration_local_mi_lab_needs_revision():
    # §2.9: weakest positive (word) 1.7428, hardest control (frequency trap) 3.2170 with fraction positive 1.0.
    rows = (_calib("calib_clean_repeat_number", "positive", [6.03] * 8, "number")
            + _calib("calib_clean_repeat_symbolic", "positive", [6.32] * 8, "symbolic")
            + _calib("calib_clean_repeat_word", "positive", [1.7428] * 8, "word")
            + _calib("calib_frequency_trap_control", "control", [3.2170] * 8)
            + _calib("calib_no_repeat_control", "control", [-1.0] * 8))
    result = gates.metric_calibration(rows)
    assert not result.passed and result.details["search_allowed"] is False
    assert result.details["status"] == "metric_needs_revision"
    assert "hardest control calib_frequency_trap_control" in result.reason
    assert result.caps_at == Status.FALSIFIED


def test_metric_calibration_passes_when_separated():
    rows = (_calib("pos_a", "positive", [3.0, 2.5, 2.8, 3.1]) + _calib("pos_b", "positive", [2.0, 2.2, 1.9, 2.4])
            + _calib("ctl_a", "control", [-0.5, -0.2, -0.9, -0.1]))
    result = gates.metric_calibration(rows)
    assert result.passed and result.details["search_allowed"] is True


def test_metric_calibration_flags_prompt_bank_when_a_domain_is_negative():
    rows = (_calib("pos_a", "positive", [3.0] * 4, "number") + _calib("pos_b", "positive", [-0.5] * 4, "word")
            + _calib("ctl", "control", [-1.0] * 4))
    result = gates.metric_calibration(rows)
    assert result.details["status"] == "prompt_bank_needs_revision" and result.caps_at == Status.FALSIFIED
    assert result.details["search_allowed"] is False


def test_family_minimum_signed_effect_catches_a_unit_that_hurts_one_family():
    # The unit restores family a (+0.8) and pushes family b the wrong way (-0.6): both *move*, so |delta| gaps pass.
    rows = [dataclasses.replace(r, target_delta=r.patched - r.corrupt, control_delta=0.05, control_suite="matched")
            for r in effect_rows({"a": 0.8, "b": -0.6})]
    assert gates.family_minimum(rows, direction="either").passed  # |delta| gaps: movement only
    directed = gates.family_minimum(rows)  # the default direction ("carries") sees b pushed the wrong way
    assert not directed.passed and directed.details["worst_family"] == "b"
    assert directed.value == pytest.approx(-1.2 - 0.05)
    signed = gates.family_minimum(rows, score="effect")
    assert not signed.passed and signed.details["worst_family"] == "b" and signed.value == pytest.approx(-0.6)


def test_family_minimum_rejects_unknown_score():
    with pytest.raises(gates.GateThresholdError, match="family_minimum: score='mean' is not allowed"):
        gates.family_minimum(paired_rows(0.9, 0.1), score="mean")
