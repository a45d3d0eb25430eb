"""Baseline and metric calibration on the real SmolLM2 (small slices; full-size: scripts/calibrate_banks.py).

The tables are printed (run with ``-s``); the assertions are about the gates' behaviour on these real numbers,
never about what the numbers happen to be.
"""

import dataclasses

import pytest

from pytest_mechclaim import gates
from pytest_mechclaim.banks import induction, negation
from pytest_mechclaim.banks.calibration import (SearchNotAllowed, calibrate_baseline, calibrate_metric,
                                                require_search_allowed, search_permission)
from pytest_mechclaim.banks.schema import Tokenizer
from pytest_mechclaim.gates import MetricCalibrationRow
from pytest_mechclaim.report import table
from pytest_mechclaim.status import Status
from pytest_mechclaim.verdict import decide


@pytest.fixture(scope="module")
def negation_calibration(smollm2):
    # 6 candidates per family, with one multi-token task planted so token validation has something to report.
    bank = negation.negation_bank(seed=0, per_family=6)
    bank[0] = dataclasses.replace(bank[0], id="planted_multi_token", target=" unbelievably")
    return calibrate_baseline(smollm2, bank, negation.FAMILIES, min_pass_rate=0.5, min_margin=0.1)


@pytest.fixture(scope="module")
def metric_slice(smollm2, metric_calibration_bank):
    # The short base sequence of each domain: 3 bases x 8 families.
    return calibrate_metric(smollm2, [ex for ex in metric_calibration_bank if ex.length_bucket == "short"])


def test_tl_and_hf_tokenizers_agree(smollm2, smollm2_tokenizer):
    tl = Tokenizer(smollm2)
    for s in (" good", " unbelievably", "The movie was not good.", "\n P E K", "14695"):
        assert tl.ids(s) == smollm2_tokenizer.ids(s)
    assert tl.bos_id == smollm2_tokenizer.bos_id == 1


def test_baseline_calibration_table(negation_calibration):
    cal = negation_calibration
    print("\nbaseline calibration (negation bank, seed 0, 6 per family, margin 0.1):")
    print("\n".join(table(cal.TABLE_HEADER, cal.table())))
    print("gate:", cal.gate.caps_at.label, "-", cal.gate.reason)
    rows = {r[0]: r for r in cal.table()}
    assert set(rows) == set(negation.FAMILIES)
    for family, _, invalid, wrong, margin, kept, _ in rows.values():
        assert int(wrong) + int(margin) + int(kept) + int(invalid) == 6
    excluded = {e["task_id"]: e["reason"] for e in cal.excluded()}
    assert excluded["planted_multi_token"] == "token_validation_failed"
    assert len(cal.kept) + len(excluded) == 18
    assert all(r.finite for r in cal.rows)


def test_too_few_tasks_per_family_after_calibration_blocks(negation_calibration):
    cal = negation_calibration
    kept = {f: c["kept"] for f, c in cal.gate.details["per_family"].items()}
    for need in range(1, max(kept.values()) + 2):
        result = gates.baseline_calibration(cal.rows, min_pass_rate=0.5, min_margin=0.1, min_per_family=need,
                                            families=negation.FAMILIES)
        short = [f for f, k in kept.items() if k < need]
        assert (result.caps_at == Status.BLOCKED) == bool(short), (need, kept, result.reason)
        for f in short:
            assert f in result.reason
        if short:
            assert "wrong direction" in result.reason and "below margin" in result.reason
            verdict = decide([result])
            assert verdict.status == Status.BLOCKED and short[0] in verdict.reasons[0]
            assert {e["task_id"] for e in result.details["excluded"]} == {
                r.task_id for r in cal.rows if not r.intended_direction_pass or abs(r.contrast) < 0.1}


def test_a_required_family_with_no_valid_task_blocks(smollm2):
    bank = [t for t in negation.negation_bank(seed=0, per_family=2) if t.family != "state_negation"]
    cal = calibrate_baseline(smollm2, bank, negation.FAMILIES, min_per_family=1)
    assert cal.blocked and "state_negation kept 0/0" in cal.gate.reason


def test_metric_calibration_table(metric_slice):
    print("\nmetric calibration (short base sequences, 24 examples):")
    print("\n".join(table(metric_slice.TABLE_HEADER, metric_slice.table())))
    print("gate:", metric_slice.gate.caps_at.label, "-", metric_slice.gate.reason)
    assert len(metric_slice.rows) == 24 and not metric_slice.rejected
    assert metric_slice.search_allowed == metric_slice.gate.passed
    if metric_slice.search_allowed:
        require_search_allowed(metric_slice)
    else:
        with pytest.raises(SearchNotAllowed, match="metric calibration does not allow a search"):
            require_search_allowed(metric_slice)
        assert search_permission(metric_slice).caps_at == Status.BLOCKED


def test_a_multi_token_example_blocks_metric_calibration(smollm2_tokenizer, metric_calibration_bank):
    broken = dataclasses.replace(metric_calibration_bank[0], target=" 1234")
    result = calibrate_metric(None, [broken] + metric_calibration_bank[1:], tokenizer=smollm2_tokenizer)
    assert result.gate.caps_at == Status.BLOCKED and not result.search_allowed
    assert result.gate.reason.startswith("blocked_tokenization: 1 examples")
    with pytest.raises(SearchNotAllowed):
        require_search_allowed(result)


def test_search_guard_passes_only_a_calibrated_metric():
    rows = [MetricCalibrationRow(f"p{i}", f"pos{i % 2}", "positive", 3.0 + i % 3) for i in range(10)]
    rows += [MetricCalibrationRow(f"c{i}", f"ctl{i % 2}", "control", -1.0 - i % 2) for i in range(10)]
    good = gates.metric_calibration(rows)
    assert require_search_allowed(good) is good and search_permission(good).passed
    trap = rows + [MetricCalibrationRow(f"t{i}", "frequency_trap", "control", 4.0) for i in range(5)]
    bad = gates.metric_calibration(trap)
    assert not bad.details["search_allowed"]
    with pytest.raises(SearchNotAllowed, match="frequency_trap"):
        require_search_allowed(bad)
    with pytest.raises(SearchNotAllowed, match="needs a metric_calibration result"):
        require_search_allowed(gates.specificity_gap([]))


def test_induction_tasks_run_through_the_engine(smollm2, induction_bank):
    from pytest_mechclaim.engine import head_evidence

    build = induction_bank["discovery"]
    tasks = build.tasks[:1]
    evidence = head_evidence(smollm2, tasks, ["L18H6"], interventions=("clean_to_corrupt",),
                             positions=("final", "previous_occurrence"))
    rows = list(evidence)
    suites = {s for t in tasks for s, _ in t.controls}
    assert {r.control_suite for r in rows} == suites
    assert len(rows) == len(suites) * 2
    # no_repeat has no earlier occurrence of its last token: not applicable there, never dropped or invented.
    skipped = [r for r in rows if not r.ok]
    assert skipped and all(r.control_suite == "no_repeat" and r.position == "previous_occurrence" for r in skipped)
    assert all(r.paired for r in rows if r.ok)
