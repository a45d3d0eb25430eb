"""Induction banks for the SmolLM2 tokenizer: families, controls, engine tasks, exclusions (no model run)."""

import dataclasses
from types import SimpleNamespace

import pytest

from pytest_mechclaim.banks import induction
from pytest_mechclaim.banks.induction import (DuplicateControlError, bank_summary, build_tasks, licenses,
                                              metric_calibration_bank)
from pytest_mechclaim.tasks import PromptPair, Task, TaskError


def test_every_stage_builds_engine_tasks_with_controls(induction_bank):
    for stage, build in induction_bank.items():
        print(stage, len(build.tasks), "tasks; suites", build.suites(), "; excluded", build.excluded_counts())
        assert build.tasks
        for task in build.tasks:
            assert isinstance(task, Task) and isinstance(task.pair, PromptPair)
            assert len(task.pair.clean) == len(task.pair.corrupt)
            for suite, control in task.controls:
                assert len(control.clean) == len(task.pair.clean), (suite, control.prompt_id)
                assert control.family_role == "control"


def test_positives_carry_the_previous_occurrence_position(induction_bank, smollm2_tokenizer):
    task = induction_bank["discovery"].tasks[0]
    pos = task.pair.position("previous_occurrence")
    # The token at the previous occurrence is the prompt's last token, and the one after it is the target.
    assert task.pair.clean[pos] == task.pair.clean[-1]
    assert task.pair.clean[pos + 1] == task.pair.target
    multi = [t for t in induction_bank["characterization"].tasks if t.pair.family == "char_multi_distractor"][0]
    d = multi.pair.position("distractor")
    assert multi.pair.clean[d] == multi.pair.clean[-1] and multi.pair.clean[d + 1] == multi.pair.foil


def test_identical_clean_and_corrupt_controls_are_reported_not_built(induction_bank):
    for stage in ("discovery", "heldout"):
        build = induction_bank[stage]
        same = [r for r in build.excluded if r.reasons[0].startswith("clean_equals_corrupt")]
        assert len(same) == len(build.tasks)  # one wrong_target_same_prompt per positive
        assert all("wrong_target_same_prompt" in r.family for r in same)
        assert "wrong_target_same_prompt" not in build.suites()
        assert build.suites()["wrong_target"] == len(build.tasks)  # the usable wrong-target control stays


def test_controls_never_license_the_target_and_positives_do(induction_bank, smollm2_tokenizer):
    for build in induction_bank.values():
        for task in build.tasks:
            assert licenses(task.pair.clean, task.pair.target)
            assert not licenses(task.pair.corrupt, task.pair.target)
            for suite, c in task.controls:
                if suite not in ("wrong_target", "target_swap"):
                    assert not licenses(c.clean, c.target), (suite, c.prompt_id)


def test_banks_report_distinct_prompts_and_seeds_draw_new_ones(smollm2_tokenizer):
    seed0 = induction.induction_bank("discovery", 0, tokenizer=smollm2_tokenizer)
    seed1 = induction.induction_bank("discovery", 1, tokenizer=smollm2_tokenizer)
    summary = bank_summary(seed0)
    print("discovery seed 0:", summary)
    assert all(v["distinct_prompts"] == v["n"] for v in summary.values())
    positives = lambda bank: {ex.tokens for ex in bank if ex.family_role == "positive"}
    assert not positives(seed0) & positives(seed1)


def test_a_duplicated_control_suite_is_an_error(smollm2_tokenizer):
    bank = induction.induction_bank("discovery", 0, n_per_family=1, tokenizer=smollm2_tokenizer)
    no_repeat = next(ex for ex in bank if ex.suite == "no_repeat")
    copy = dataclasses.replace(no_repeat, example_id=no_repeat.example_id + "-copy", suite="hard_negative")
    with pytest.raises(DuplicateControlError, match="'no_repeat' and 'hard_negative' have identical"):
        build_tasks(bank + [copy], smollm2_tokenizer)


def test_multi_token_strings_exclude_the_task_and_its_controls(smollm2_tokenizer):
    bank = induction.induction_bank("discovery", 0, n_per_family=1, tokenizer=smollm2_tokenizer)
    first = bank[0]
    assert first.family_role == "positive"
    broken = dataclasses.replace(first, tokens=first.tokens[:-1] + (" 1234",))
    build = build_tasks([broken] + bank[1:], smollm2_tokenizer)
    reasons = {r.id: r.reasons[0] for r in build.excluded}
    assert reasons[first.example_id].startswith("positive_unusable:not_single_token")
    paired = [ex.example_id for ex in bank if ex.paired_positive_id == first.example_id]
    assert paired and all(reasons[i] == "paired_positive_excluded" for i in paired)
    assert len(build.tasks) == 1  # the other family's positive is untouched


def test_prompt_pair_flags_identical_prompts_and_the_bank_refuses_them():
    # The pair is built (the engine marks its rows invalid, tests/test_input_validation.py); a bank excludes it.
    assert PromptPair("x", "f", (1, 2, 3), (1, 2, 3), 4, 5).identical
    assert not PromptPair("x", "f", (1, 2, 3), (1, 2, 4), 4, 5).identical
    enc = induction.EncodedExample(SimpleNamespace(example_id="x"), (1, 2, 3), (1, 2, 3), 4, 5)
    with pytest.raises(TaskError, match="identical clean and corrupt"):
        induction._pair(enc)


def test_metric_calibration_bank_is_nine_bases_by_eight_families(metric_calibration_bank):
    summary = bank_summary(metric_calibration_bank)
    assert len(metric_calibration_bank) == 72
    assert len({ex.base_sequence_id for ex in metric_calibration_bank}) == 9
    assert sum(v["n"] for k, v in summary.items() if k.startswith("calib_clean_repeat_") and "format" not in k) == 9
    controls = {ex.family for ex in metric_calibration_bank if ex.family_role == "control"}
    assert {f: summary[f]["n"] for f in controls} == {f: 9 for f in induction.CALIBRATION_CONTROLS}
    other_seed = metric_calibration_bank_tokens(1)
    assert not {ex.tokens for ex in metric_calibration_bank} & other_seed


def metric_calibration_bank_tokens(seed):
    return {ex.tokens for ex in metric_calibration_bank(seed)}
