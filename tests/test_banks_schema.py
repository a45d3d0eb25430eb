"""Task schema, strict token validation and the negation bank, on the real SmolLM2 tokenizer (no model run)."""

import json

import pytest

from pytest_mechclaim.banks import negation
from pytest_mechclaim.banks.schema import (BankTask, SchemaError, distinct_prompts, read_tasks_jsonl, task_id,
                                           validate_tasks)


def make_task(**overrides) -> dict:
    record = dict(id="t1", family="sentiment_negation", prompt="The movie was not good. The movie was", target=" bad",
                  foil=" good", control_prompt="The movie was good. The movie was", control_target=" good",
                  control_foil=" bad")
    record.update(overrides)
    return record


def test_a_valid_task_gets_its_token_ids(smollm2_tokenizer):
    result = validate_tasks([make_task()], smollm2_tokenizer)
    assert not result.rejected
    (task,) = result.valid
    assert task.prompt_ids[0] == smollm2_tokenizer.bos_id
    assert task.target_id == smollm2_tokenizer.single(" bad") != task.foil_id
    assert smollm2_tokenizer.decode(task.prompt_ids[1:]) == "The movie was not good. The movie was"


@pytest.mark.parametrize("overrides, reason", [
    ({"target": " unbelievably"}, "not_single_token:target"),
    ({"control_foil": " 42"}, "not_single_token:control_foil"),
    ({"foil": " bad"}, "target_equals_foil"),
    ({"control_target": " bad"}, "control_target_equals_control_foil"),
    ({"prompt": "   "}, "empty_prompt:prompt"),
    ({"colour": "red"}, "schema:unknown task fields ['colour']"),
    ({"expected_baseline_direction": "sideways"}, "schema:expected_baseline_direction"),
])
def test_invalid_tasks_are_rejected_with_the_reason(smollm2_tokenizer, overrides, reason):
    result = validate_tasks([make_task(), make_task(id="t2", **overrides)], smollm2_tokenizer)
    assert [v.id for v in result.valid] == ["t1"]
    (rejected,) = result.rejected
    assert rejected.id == "t2"
    assert any(r.startswith(reason) for r in rejected.reasons), rejected.reasons


def test_a_multi_token_word_reports_how_many_tokens_it_is(smollm2_tokenizer):
    n = len(smollm2_tokenizer.ids(" unbelievably"))
    assert n > 1
    (rejected,) = validate_tasks([make_task(target=" unbelievably")], smollm2_tokenizer).rejected
    assert f"is {n} tokens" in rejected.reasons[0]


def test_from_dict_refuses_unknown_and_missing_fields():
    with pytest.raises(SchemaError, match="unknown task fields"):
        BankTask.from_dict(make_task(extra="x"))
    record = make_task()
    del record["foil"]
    with pytest.raises(SchemaError, match="missing task fields"):
        BankTask.from_dict(record)


def test_rejections_are_written_as_jsonl_and_read_back(tmp_path, smollm2_tokenizer):
    result = validate_tasks([make_task(), make_task(id="t2", target=" 123")], smollm2_tokenizer)
    path = result.write_rejections(tmp_path / "excluded.jsonl")
    (line,) = read_tasks_jsonl(path)
    assert line["id"] == "t2" and line["record"]["target"] == " 123"
    assert line["reasons"][0].startswith("not_single_token:target")
    json.dumps(line)  # round-trips as plain JSON


def test_a_duplicate_task_is_rejected_not_counted_twice(smollm2_tokenizer):
    result = validate_tasks([make_task(), make_task()], smollm2_tokenizer)
    assert len(result.valid) == 1
    assert result.rejected[0].reasons[0].startswith("duplicate_task_id")


def test_counts_list_required_families_even_when_empty(smollm2_tokenizer):
    result = validate_tasks([make_task()], smollm2_tokenizer)
    assert result.counts(negation.FAMILIES)["state_negation"] == {"valid": 0, "rejected": 0}


def test_negation_bank_has_no_repeated_prompt_and_seeds_differ():
    bank = negation.negation_bank(seed=0, per_family=80)
    other = negation.negation_bank(seed=1, per_family=80)
    assert len(bank) == 240
    assert distinct_prompts(bank) == 240  # E002: 30 tasks were 12 prompts
    shared = {t.prompt for t in bank} & {t.prompt for t in other}
    pools = {f: len(negation.candidate_pool(f)) for f in negation.FAMILIES}
    print("negation candidate pools:", pools, "prompts shared by seeds 0 and 1:", len(shared))
    assert min(pools.values()) >= 400
    assert len(shared) < 60  # ~80 * 80 / pool per family expected by chance
    for family in negation.FAMILIES:
        tasks = [t for t in bank if t.family == family]
        assert len({t.metadata["subject"] for t in tasks}) >= 15
        assert len({(t.target, t.foil) for t in tasks}) >= 10


def test_negation_bank_refuses_to_repeat_tasks_to_fill_a_quota():
    with pytest.raises(ValueError, match="pool holds"):
        negation.negation_bank(seed=0, per_family=10_000)


def test_negation_bank_validation_reports_every_rejection(smollm2_tokenizer, negation_bank):
    result = validate_tasks(negation_bank, smollm2_tokenizer)
    assert len(result.valid) + len(result.rejected) == len(negation_bank)
    print("negation bank validation:", result.counts(negation.FAMILIES), result.reason_counts())
    for r in result.rejected:
        assert r.reasons and r.reasons[0].startswith("not_single_token")
    assert task_id("f", "p", " a", " b") == task_id("f", "p", " a", " b") != task_id("f", "p", " b", " a")
