"""Control prompt suites on validated negation tasks (real SmolLM2 tokenizer)."""

import dataclasses

import pytest

from pytest_mechclaim.banks import negation
from pytest_mechclaim.banks.controls import (SUITE_BUILDERS, SUITES, DuplicateSuiteError, build_control_suites,
                                             check_distinct_suites)
from pytest_mechclaim.banks.schema import validate_tasks
from pytest_mechclaim.status import Status


@pytest.fixture(scope="module")
def valid_tasks(smollm2_tokenizer):
    return validate_tasks(negation.negation_bank(seed=3, per_family=6), smollm2_tokenizer).valid


def test_five_distinct_suites_for_every_task(valid_tasks, smollm2_tokenizer):
    suites = build_control_suites(valid_tasks, smollm2_tokenizer)
    print("control cases per family and suite:", suites.counts())
    assert suites.coverage().passed and suites.coverage().caps_at == Status.STRONG
    for task_id, cases in suites.by_task().items():
        assert set(cases) == set(SUITES)
        assert len({c.content for c in cases.values()}) == len(SUITES)
        matched, hard = cases["matched_non_negation"], cases["hard_negative"]
        assert hard.prompt != matched.prompt and " not " in hard.prompt
        assert (hard.target, hard.foil) == (matched.target, matched.foil)
        assert cases["semantic_unrelated"].prompt not in {t.task.control_prompt for t in valid_tasks
                                                         if t.id == task_id}
    unrelated = [c.prompt for c in suites.cases if c.suite == "semantic_unrelated"]
    assert len(set(unrelated)) > len(unrelated) // 2  # a rotation, not the first task of a family repeated


def test_the_seeds_byte_identical_hard_negative_is_refused(valid_tasks, smollm2_tokenizer):
    seed_systems_suites = dict(SUITE_BUILDERS, hard_negative=SUITE_BUILDERS["matched_non_negation"])
    with pytest.raises(DuplicateSuiteError, match="'matched_non_negation' and 'hard_negative' have identical"):
        build_control_suites(valid_tasks, smollm2_tokenizer, suites=seed_systems_suites)


def test_duplicate_check_is_per_task(valid_tasks, smollm2_tokenizer):
    cases = build_control_suites(valid_tasks, smollm2_tokenizer).cases
    check_distinct_suites(cases)  # semantic_unrelated reuses other tasks' matched controls: allowed
    dup = [c for c in cases if c.suite == "lexical_identity"][0]
    with pytest.raises(DuplicateSuiteError):
        check_distinct_suites(cases + [dataclasses.replace(dup, suite="extra_lexical")])


def test_missing_controls_block(valid_tasks, smollm2_tokenizer):
    one_family = [t for t in valid_tasks if t.family == "sentiment_negation"]
    suites = build_control_suites(one_family, smollm2_tokenizer)
    assert {r.reasons[0] for r in suites.excluded} == {"unbuildable:semantic_unrelated needs a second task family"}
    gate = suites.coverage()
    assert not gate.passed and gate.caps_at == Status.BLOCKED
    assert "semantic_unrelated" in gate.reason


def test_unknown_suite_name_is_an_error(valid_tasks, smollm2_tokenizer):
    with pytest.raises(ValueError, match="unknown control suites"):
        build_control_suites(valid_tasks, smollm2_tokenizer, suites=["matched_non_negation", "hard_negatives"])
