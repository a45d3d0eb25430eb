"""Gates that cannot be fooled: each measured defect bites on concrete numbers, and the honest case still passes."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from pytest_mechclaim import gates
from pytest_mechclaim.evidence import BaselineRow, EvidenceRow
from pytest_mechclaim.gates import GateThresholdError, MetricCalibrationRow
from pytest_mechclaim.status import Status

from .rowkit import effect_rows, paired_rows


def _row(pid, t, c=None, *, family="f1", suite="matched", run="corrupt", position="final", intervention="ablate",
         strata=(), **kw):
    return EvidenceRow(unit="u", intervention=intervention, prompt_id=pid, family=family, control_suite=suite,
                       run=run, position=position, target_delta=t, control_delta=c, strata=strata, **kw)


# ---- 1. thresholds fail closed ---------------------------------------------------------------------------------


def test_a_negative_minimum_no_longer_passes_a_negative_gap():
    rows = paired_rows(0.1, 0.3)  # gap -0.2 in every row
    with pytest.raises(GateThresholdError) as err:
        gates.specificity_gap(rows, min=-1.0)
    message = str(err.value)
    assert "specificity_gap" in message and "min=-1.0" in message and "[0, inf)" in message
    assert err.value.gate == "specificity_gap" and err.value.argument == "min" and err.value.value == -1.0
    legal = gates.specificity_gap(rows, min=0.0)
    assert not legal.passed and legal.value == pytest.approx(-0.2) and legal.caps_at == Status.FALSIFIED


BAD_THRESHOLDS = [
    (lambda **k: gates.specificity_gap([], **k), "min", math.nan),
    (lambda **k: gates.specificity_gap([], **k), "confidence", 1.0),
    (lambda **k: gates.specificity_gap([], **k), "n_resamples", 5),
    (lambda **k: gates.positive_share([], **k), "min", -0.1),
    (lambda **k: gates.positive_share([], **k), "min", 1.5),
    (lambda **k: gates.positive_share([], **k), "min", 0.0),
    (lambda **k: gates.family_minimum([], **k), "min", -math.inf),
    (lambda **k: gates.family_minimum([], **k), "min_families", 0),
    (lambda **k: gates.family_minimum([], **k), "denominator_floor", 0.0),
    (lambda **k: gates.multi_control_minimum([], **k), "min", -0.5),
    (lambda **k: gates.multi_control_minimum([], **k), "min_suites", 0),
    (lambda **k: gates.multi_control_minimum([], **k), "min_suites", True),
    (lambda **k: gates.unit_controls([], **k), "min_ratio", 0.5),
    (lambda **k: gates.unit_controls([], **k), "min_ratio", 1.0),
    (lambda **k: gates.baseline_calibration([], **k), "min_pass_rate", -1.0),
    (lambda **k: gates.baseline_calibration([], **k), "min_margin", -0.1),
    (lambda **k: gates.baseline_calibration([], **k), "min_per_family", 0),
    (lambda **k: gates.norm_drift([], **k), "max_warning_rate", math.nan),
    (lambda **k: gates.norm_drift([], **k), "max_warning_rate", math.inf),
    (lambda **k: gates.norm_drift([], **k), "max_mean", -0.1),
    (lambda **k: gates.decoded_delta_ratio([], **k), "max", math.inf),
    (lambda **k: gates.paired_test([], **k), "alpha", math.inf),
    (lambda **k: gates.paired_test([], **k), "alpha", 1.0),
    (lambda **k: gates.paired_test([], **k), "alpha", 0.0),
    (lambda **k: gates.paired_test([], **k), "n_comparisons", 0),
    (lambda **k: gates.empirical_null(0.5, [], **k), "min_percentile", -1.0),
    (lambda **k: gates.empirical_null(0.5, [], **k), "min_null_sets", 2.5),
    (lambda **k: gates.collateral_ratio([], **k), "max", 1.5),
    (lambda **k: gates.seed_replication([], **k), "min_passing", 0),
    (lambda **k: gates.normalized_effect([], **k), "max_unusable_share", 1.2),
    (lambda **k: gates.strong_floor([], **k), "min_tasks", 0),
    (lambda **k: gates.metric_calibration([], **k), "min_positive_fraction", 2.0),
    (lambda **k: gates.signed_effect([], **k), "min", "0.1"),
    (lambda **k: gates.stratum_minimum([], **k), "min_prompts", 0),
]


@pytest.mark.parametrize("call, argument, value", BAD_THRESHOLDS,
                         ids=[f"{i}-{a}={v!r}" for i, (_, a, v) in enumerate(BAD_THRESHOLDS)])
def test_every_out_of_range_threshold_raises_naming_gate_argument_value_and_range(call, argument, value):
    with pytest.raises(GateThresholdError) as err:
        call(**{argument: value})
    assert err.value.argument == argument and "allowed:" in str(err.value) and repr(value) in str(err.value)


def test_every_threshold_argument_of_every_gate_is_in_the_table():
    import inspect
    callables = {"replication": gates.replication}
    for gate, table in gates.RANGES.items():
        fn = callables.get(gate) or getattr(gates, gate)
        params = inspect.signature(fn).parameters
        assert set(table) <= set(params), gate
        numeric = {n for n, p in params.items() if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)
                   and n not in ("value",)}
        assert numeric <= set(table), (gate, numeric - set(table))


def test_the_floor_itself_is_allowed():
    assert gates.specificity_gap(paired_rows(0.9, 0.3), min=0.0).passed
    assert gates.paired_test([], alpha=0.05).caps_at == Status.BLOCKED


# ---- 2. no rows at all is blocked ------------------------------------------------------------------------------

ROW_GATES = [gates.specificity_gap, gates.positive_share, gates.multi_control_minimum, gates.collateral_ratio,
             gates.signed_effect, gates.stratum_minimum, gates.normalized_effect, gates.control_family_gap,
             gates.family_minimum, gates.replication, gates.seed_replication, gates.unit_controls, gates.norm_drift,
             gates.decoded_delta_ratio, gates.baseline_calibration, gates.strong_floor, gates.paired_test,
             gates.metric_calibration]


@pytest.mark.parametrize("gate", ROW_GATES, ids=lambda g: g.__name__)
def test_no_rows_at_all_is_blocked_with_a_reason(gate):
    result = gate([])
    assert result.caps_at == Status.BLOCKED and not result.passed and result.reason


def test_seed_replication_of_nothing_is_blocked_and_of_good_seeds_passes():
    empty = gates.seed_replication([])
    assert empty.caps_at == Status.BLOCKED and "no valid target rows" in empty.reason
    assert gates.seed_replication(paired_rows(0.9, 0.1)).passed


def test_an_empty_null_is_blocked():
    assert gates.empirical_null(0.9, []).caps_at == Status.BLOCKED
    assert gates.empirical_null(0.9, [i / 100 for i in range(40)]).passed


# ---- 3. direction: a unit that pushes the wrong way ------------------------------------------------------------


def test_a_head_pushing_the_wrong_way_passes_abs_gaps_but_not_the_directed_ones():
    # Patching the head into the corrupt run *lowers* target - foil by 0.9 (it should raise it); controls move 0.1.
    rows = paired_rows(-0.9, 0.1)
    either = gates.specificity_gap(rows, direction="either")
    assert either.passed and either.details["direction_checked"] is False and "not checked" in either.reason
    assert gates.family_minimum(rows, direction="either").passed
    assert gates.multi_control_minimum(rows, direction="either").passed
    directed = gates.specificity_gap(rows)
    assert not directed.passed and directed.caps_at == Status.FALSIFIED and directed.value == pytest.approx(-1.0)
    assert "wrong way" in directed.reason
    signed = gates.signed_effect(rows)
    assert signed.caps_at == Status.FALSIFIED and signed.details["n_wrong_sign"] == len(rows)
    assert signed.value == pytest.approx(-0.9)  # CI is [-0.9, -0.9]: wholly on the wrong side, shown as ci_high
    for gate in (gates.family_minimum, gates.multi_control_minimum, gates.collateral_ratio, gates.positive_share,
                 gates.seed_replication):
        assert not gate(rows).passed, gate.__name__


def test_an_explicit_decrease_prediction_passes_the_same_rows():
    rows = paired_rows(-0.9, 0.1)
    assert gates.signed_effect(rows, direction="decrease").passed
    assert gates.specificity_gap(rows, direction="decrease").value == pytest.approx(0.8)
    mapped = gates.specificity_gap(rows, direction={"ablate": "decrease"})
    assert mapped.passed and mapped.details["direction"] == "ablate:decrease"


def test_carries_predicts_a_decrease_for_ablations_of_the_clean_run_and_an_increase_for_amplify():
    ablated = paired_rows(-0.9, 0.1, run="clean")
    assert gates.signed_effect(ablated).passed
    amplified = [dataclasses.replace(r, intervention="amplify", factor=2.0) for r in paired_rows(0.9, 0.1, run="clean")]
    assert gates.signed_effect(amplified).passed
    assert gates.signed_effect([dataclasses.replace(r, target_delta=-0.9) for r in amplified]).caps_at == Status.FALSIFIED


def test_a_mapping_that_misses_an_intervention_blocks_and_either_is_refused_by_the_signed_gate():
    rows = paired_rows(0.9, 0.1)
    missing = gates.signed_effect(rows, direction={"zero": "decrease"})
    assert missing.caps_at == Status.BLOCKED and "ablate" in missing.reason
    with pytest.raises(GateThresholdError, match="direction"):
        gates.signed_effect(rows, direction="either")
    with pytest.raises(GateThresholdError, match="direction"):
        gates.specificity_gap(rows, direction="up")


def test_signed_effect_mean_on_the_right_side_with_a_wide_ci_is_insufficient():
    # 10 prompts: +2.0 on half, -1.6 on the other half: mean +0.2, the interval crosses 0.
    rows = [_row(f"p{i}", 2.0 if i % 2 else -1.6) for i in range(10)]
    result = gates.signed_effect(rows)
    assert not result.passed and result.caps_at == Status.INSUFFICIENT
    assert result.details["ci_low"] < 0 < result.details["ci_high"] and result.value == result.details["ci_low"]
    tight = [_row(f"p{i}", 0.2 + 0.01 * (i % 3)) for i in range(10)]
    assert gates.signed_effect(tight).passed


# ---- 4. within-family strata -----------------------------------------------------------------------------------


def _token_rows(effect_by_token, per_token=6, families=("f1", "f2"), length_bin="9-16"):
    rows = []
    for family in families:
        for token, t in effect_by_token.items():
            for i in range(per_token):
                strata = (("target_token", token),) + ((("length_bin", length_bin),) if length_bin else ())
                rows.append(_row(f"{family}-{token.strip()}-{i}", t, 0.05, family=family, strata=strata))
    return rows


def test_a_head_that_works_for_only_part_of_the_target_tokens_is_caught():
    rows = _token_rows({" a": 0.9, " b": 0.9, " c": 0.9, " d": -0.05})
    assert gates.specificity_gap(rows).passed and gates.family_minimum(rows).passed
    assert gates.signed_effect(rows).passed
    result = gates.stratum_minimum(rows)
    assert not result.passed and result.caps_at == Status.INSUFFICIENT
    assert result.value == pytest.approx(-0.05) and "target_token= d" in result.reason
    assert all(w["strata"]["target_token"] == " d" for w in result.worst)
    assert result.details["worst_stratum"] in ("*|target_token= d", "f1|target_token= d", "f2|target_token= d")


def test_a_token_thin_in_every_family_is_judged_pooled_over_the_families():
    """Two prompts per family and token are below min_prompts=3 in each family; pooled over three families the
    dead token has six prompts and the gate sees it."""
    rows = _token_rows({" a": 0.9, " b": 0.9, " d": 0.0}, per_token=2, families=("f1", "f2", "f3"), length_bin=None)
    result = gates.stratum_minimum(rows)
    assert not result.passed and result.details["worst_stratum"] == "*|target_token= d"
    assert "f1|target_token= d" in result.details["thin_strata"]
    live = gates.stratum_minimum(_token_rows({" a": 0.9, " b": 0.8}, per_token=2, families=("f1", "f2", "f3"),
                                             length_bin=None))
    assert live.passed and live.value == pytest.approx(0.8)


def test_a_head_that_works_for_every_token_passes_the_stratum_minimum():
    result = gates.stratum_minimum(_token_rows({" a": 0.9, " b": 0.7, " c": 0.8, " d": 0.6}))
    assert result.passed and result.value == pytest.approx(0.6)


def test_thin_strata_are_reported_and_rows_without_strata_block():
    rows = _token_rows({" a": 0.9, " b": 0.9}, per_token=2, families=("f1",), length_bin=None)
    thin = gates.stratum_minimum(rows, min_prompts=3)
    assert thin.caps_at == Status.INSUFFICIENT and thin.details["thin_strata"]["f1|target_token= a"] == 2
    assert gates.stratum_minimum(rows, min_prompts=2).passed
    assert gates.stratum_minimum(paired_rows(0.9, 0.1)).caps_at == Status.BLOCKED


def test_strata_round_trip_through_json_and_are_coordinates():
    row = _row("p", 0.5, 0.1, strata={"target_token": " cat", "domain": "animals"})
    assert row.strata == (("domain", "animals"), ("target_token", " cat"))
    back = EvidenceRow.from_dict(json.loads(json.dumps(row.to_dict())))
    assert back == row and back.coordinates()["strata"] == {"domain": "animals", "target_token": " cat"}
    assert "strata" not in _row("q", 0.5).to_dict()
    with pytest.raises(ValueError, match="twice"):
        _row("p", 0.5, strata=(("k", "a"), ("k", "b")))


def test_the_engine_fills_strata_and_separate_warning_flags():
    pytest.importorskip("transformer_lens")
    from pytest_mechclaim.engine import head_evidence
    from pytest_mechclaim.groundtruth import build_induction_model, induction_tasks

    rows = head_evidence(build_induction_model(), induction_tasks(0, n_per_family=2), ["L1H0"],
                         interventions=("clean_to_corrupt",))
    strata = dict(rows[0].strata)
    assert strata["target_token"].startswith("id:") and "-" in strata["length_bin"]
    assert all(r.drift_warning is not None and r.delta_ratio_warning is not None for r in rows if r.ok)


# ---- 5. prompt-clustered uncertainty ---------------------------------------------------------------------------


def test_specificity_gap_with_a_ci_crossing_the_floor_is_insufficient():
    rows = [_row(f"p{i}", 2.0 if i % 2 else 0.4, 0.9) for i in range(10)]  # gaps +1.1 / -0.5, mean +0.3
    result = gates.specificity_gap(rows)
    assert result.caps_at == Status.INSUFFICIENT and result.value == result.details["ci_low"] <= 0
    assert result.details["confidence"] == 0.95 and "CI lower bound" in result.reason
    assert gates.specificity_gap(paired_rows(0.9, 0.3, jitter=0.01)).passed


def test_the_bootstrap_resamples_prompts_not_rows():
    # Repeating every prompt's row under 6 control suites adds rows, not evidence: the interval must not shrink.
    base = [_row(f"p{i}", 2.0 if i % 3 else -0.5, 0.1, suite="s0") for i in range(9)]
    repeated = [dataclasses.replace(r, control_suite=f"s{k}") for r in base for k in range(6)]
    a, b = gates.specificity_gap(base).details, gates.specificity_gap(repeated).details
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((b["ci_low"], b["ci_high"]))
    assert b["n_prompts"] == 9


def test_the_interval_is_deterministic_under_row_order():
    rows = [_row(f"p{i}", 0.3 + 0.2 * ((i * 7) % 5), 0.1) for i in range(20)]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert gates.specificity_gap(rows).to_dict() == gates.specificity_gap(shuffled).to_dict()


def test_family_minimum_needs_every_family_ci_above_the_floor():
    steady = [_row(f"a{i}", 0.9, 0.1, family="a") for i in range(8)]
    # Family b: gaps +1.1 / -0.9 alternating, mean +0.1 > 0, but its interval reaches below 0.
    noisy = [_row(f"b{i}", 1.2 if i % 2 else -0.8, 0.1, family="b") for i in range(8)]
    result = gates.family_minimum(steady + noisy)
    assert not result.passed and result.caps_at == Status.INSUFFICIENT and "family b" in result.reason
    assert result.value == result.details["per_family_ci"]["b"][0] <= 0
    assert result.details["per_family"]["b"] == pytest.approx(0.1)
    calm = [_row(f"b{i}", 0.6 if i % 2 else 0.5, 0.1, family="b") for i in range(8)]
    assert gates.family_minimum(steady + calm).passed


def test_normalized_effect_with_a_wide_ci_is_insufficient():
    rows = effect_rows({"pos": {0: 0.9, 1: -0.7}}, seeds=(0, 1), per_family=3)
    result = gates.normalized_effect(rows)
    assert result.caps_at == Status.INSUFFICIENT and result.details["ci_low"] <= 0 < result.details["ci_high"]
    assert gates.normalized_effect(effect_rows({"pos": 0.7})).passed


def _paired_sets(n_prompts, suites):
    rows = []
    for i in range(n_prompts):
        for s in suites:
            rows.append(_row(f"p{i}", 0.9 + 0.01 * i, 0.1, suite=s))
            rows.append(dataclasses.replace(rows[-1], unit_set="random_seed_7", target_delta=0.2 + 0.003 * i))
    return rows


def test_paired_test_counts_prompts_not_rows():
    few = gates.paired_test(_paired_sets(6, ("a", "b", "c")))  # 18 rows per set, 6 prompts
    assert not few.passed and few.details["per_set"]["random_seed_7"]["n_pairs"] == 6
    enough = gates.paired_test(_paired_sets(12, ("a", "b", "c")))
    assert enough.passed and enough.details["per_set"]["random_seed_7"]["n_pairs"] == 12
    assert "no multiplicity correction" in enough.reason


def test_paired_test_bonferroni_for_several_units_of_one_search():
    rows = _paired_sets(12, ("a",))
    # 12 prompts all positive: p = 2 / 2**12 = 4.9e-4 on both tests; x 1000 comparisons it is not significant.
    corrected = gates.paired_test(rows, n_comparisons=1000)
    assert not corrected.passed and "Bonferroni over 1000" in corrected.reason
    assert gates.paired_test(rows, n_comparisons=2).passed
    assert gates.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


# ---- 6. norm drift and decoded-delta ratio are two quantities --------------------------------------------------


def _telemetry_rows(drift, ratio, n=10, **flags):
    return [_row(f"p{i}", 0.9, 0.1, norm_drift=drift, decoded_delta_ratio=ratio, norm_warning=True, **flags)
            for i in range(n)]


def test_a_true_head_with_small_drift_and_a_large_decoded_ratio_is_not_rejected_for_drift():
    rows = _telemetry_rows(0.09, 0.70, drift_warning=False, delta_ratio_warning=True)
    drift = gates.norm_drift(rows)
    assert drift.passed and drift.caps_at == Status.STRONG and "0.09" in drift.reason
    ratio = gates.decoded_delta_ratio(rows)
    assert not ratio.passed and ratio.caps_at == Status.INSUFFICIENT and "decoded-delta ratio > 0.5" in ratio.reason
    assert gates.decoded_delta_ratio(rows, max=0.8).passed


def test_norm_drift_still_bites_on_drift():
    flagged = gates.norm_drift(_telemetry_rows(0.8, 0.1, drift_warning=True))
    assert not flagged.passed and "shove the norm" in flagged.reason
    legacy = gates.norm_drift(_telemetry_rows(0.8, 0.1))  # rows without the engine's flag: the drift decides
    assert not legacy.passed


# ---- 7. uninformative control suites ---------------------------------------------------------------------------


def _suite_rows(identical_target=0.0):
    rows = []
    for i in range(8):
        rows.append(_row(f"p{i}", 0.9, 0.2, suite="matched"))
        rows.append(_row(f"p{i}", 0.9, 0.3, suite="lexical"))
        # At this position clean and corrupt do not differ: nothing is patched, both deltas are exactly 0.
        rows.append(_row(f"p{i}", identical_target, 0.0, suite="identical", position="previous_occurrence"))
    return rows


def test_an_uninformative_suite_is_excluded_not_counted_as_a_zero_gap():
    rows = _suite_rows()
    result = gates.multi_control_minimum(rows)
    assert result.passed and result.value == pytest.approx(0.6)
    assert result.details["uninformative_control_cells"] == ["identical|ablate@previous_occurrence"]
    assert sorted(result.details["suites"]) == ["lexical", "matched"]
    too_few = gates.multi_control_minimum(rows, min_suites=3)
    assert too_few.caps_at == Status.INSUFFICIENT and "uninformative" in too_few.reason
    assert (too_few.value, too_few.threshold, too_few.comparison) == (2.0, 3.0, ">=")


def test_an_ablation_control_that_moves_exactly_zero_is_perfect_specificity_not_uninformative():
    rows = [_row(f"p{i}", -0.9, 0.0, suite=s, run="clean") for i in range(8) for s in ("a", "b")]
    result = gates.multi_control_minimum(rows)
    assert result.passed and result.details["uninformative_control_cells"] == []


# ---- 8. the table shows the quantity that decided ---------------------------------------------------------------


def test_seed_replication_failing_a_sub_check_shows_that_sub_check():
    rows = [dataclasses.replace(r, prompt_id=r.prompt_id.replace(f"-s{r.seed}-", "-")) for r in paired_rows(0.9, 0.1)]
    result = gates.seed_replication(rows)
    assert not result.passed and "re-measurement" in result.reason
    assert (result.value, result.threshold, result.comparison) == (3.0, 0.0, "==")
    assert {c["name"]: c["passed"] for c in result.details["checks"]}["surviving_seeds"] is True


def test_composite_failures_never_show_a_passing_comparison():
    strong = gates.strong_floor(paired_rows(0.9, 0.1, families=("f1",), per_cell=20))
    assert not strong.passed and strong.shown_comparison_holds() is False and strong.comparison == ">="
    assert strong.value == 1.0 and strong.threshold == 3.0  # families, not the 60 tasks that passed
    calib = gates.baseline_calibration([BaselineRow(f"a{i}", "a", 0.5) for i in range(10)]
                                       + [BaselineRow(f"b{i}", "b", 0.5 if i < 2 else -0.5) for i in range(10)],
                                       min_per_family=3)
    assert calib.caps_at == Status.BLOCKED and (calib.value, calib.threshold) == (2.0, 3.0)
    metric = gates.metric_calibration(
        [MetricCalibrationRow(f"p{i}", "pos", "positive", 3.0 if i < 6 else -1.0) for i in range(10)]
        + [MetricCalibrationRow(f"c{i}", "ctl", "control", -1.0) for i in range(10)])
    assert not metric.passed and metric.shown_comparison_holds() is False
    assert metric.details["checks"][1]["passed"] and metric.value == pytest.approx(0.6)  # the positive fraction
    gap = gates.control_family_gap(effect_rows({"pos": -0.1, "ctl_a": -0.5}))
    assert gap.caps_at == Status.FALSIFIED and gap.value == pytest.approx(-0.1) and gap.shown_comparison_holds() is False


def test_a_collateral_ratio_of_exactly_one_is_shown_against_the_hard_limit():
    # max=1.0 would print "1 <= 1 FAIL"; the gate shows the rule that failed: controls must move less than the target.
    result = gates.collateral_ratio(paired_rows(0.5, 0.5), max=1.0)
    assert not result.passed and (result.value, result.comparison, result.threshold) == (1.0, "<", 1.0)
    assert gates.collateral_ratio(paired_rows(0.5, 0.2), max=1.0).passed
