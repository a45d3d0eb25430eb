"""Cross-model replication: the gate over per-model verdicts, the mechanisms table, the policy's across-claims debt,
the marker, and the kind's check that each model's unit is what the mechanism's rule chose there."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mechclaim.gates import GateThresholdError, ModelVerdict, cross_model_replication
from pytest_mechclaim.kinds import AttentionPrior, InductionBank, Mechanism, Preregistered
from pytest_mechclaim.ledger_markdown import render_markdown
from pytest_mechclaim.mechanisms import claims_from_records, mechanism_table, summary_lines
from pytest_mechclaim.spec import ClaimSpecError, parse_claim_marker
from pytest_mechclaim.status import Status

A, B = "smollm2-135m-instruct", "gemma-3-270m"


def judged(a, b, pending=(False, False)):
    return cross_model_replication({A: ModelVerdict("a", a, pending[0]), B: ModelVerdict("b", b, pending[1])})


# ------------------------------------------------------------------------------------------------------- the gate
def test_candidate_in_two_models_is_a_cross_model_candidate():
    result = judged("candidate", "candidate")
    assert result.passed and result.caps_at == Status.CANDIDATE and result.value == 2.0


def test_strong_needs_every_model_strong_but_for_this_requirement():
    assert judged("candidate", "candidate", (True, True)).caps_at == Status.STRONG
    assert judged("candidate", "candidate", (True, False)).caps_at == Status.CANDIDATE


@pytest.mark.parametrize("a, b, cap", [
    ("candidate", "falsified", Status.FALSIFIED),  # does not replicate in the second family
    ("candidate", "insufficient", Status.INSUFFICIENT),
    ("candidate", "blocked", Status.BLOCKED),  # fail closed: not judgeable there is not support
    ("candidate", None, Status.INSUFFICIENT),  # the second model's held-out stage was never judged
])
def test_a_model_where_it_does_not_hold_caps_the_mechanism(a, b, cap):
    result = judged(a, b)
    assert not result.passed and result.caps_at == cap, result.reason


def test_one_model_is_never_cross_model_support():
    result = cross_model_replication({A: ModelVerdict("a", "strong", True)})
    assert not result.passed and result.caps_at == Status.INSUFFICIENT and "1 of 1" in result.reason


def test_a_cross_model_floor_below_two_models_is_refused():
    with pytest.raises(GateThresholdError):
        cross_model_replication({A: ModelVerdict("a", "candidate")}, min_models=1)


# ----------------------------------------------------------------------------------------------- the table
def block(model, heldout, mechanism="m", pending=None, units=("L1H0",)):
    stage = {"status": heldout}
    if pending:
        stage["strong_pending"] = pending
    return {"mechanism": mechanism, "model": model, "units": list(units),
            "stages": {"replication": {"status": "candidate"}, "heldout": stage}}


def test_the_table_puts_each_models_claim_side_by_side_and_judges_the_weakest():
    table = mechanism_table({"a": block(A, "candidate"), "b": block(B, "falsified", units=("L5H1",)),
                             "unrelated": {"model": A, "stages": {"heldout": {"status": "candidate"}}}})
    assert list(table) == ["m"]
    assert table["m"]["models"][B] == {"claim": "b", "units": ["L5H1"], "heldout": "falsified",
                                       "stages": {"heldout": "falsified", "replication": "candidate"}}
    assert table["m"]["verdict"]["caps_at"] == "falsified"
    assert summary_lines(table) == [f"mechanism m: cross-model falsified ({B} b heldout falsified, "
                                    f"{A} a heldout candidate)"]


def test_two_claims_of_one_mechanism_on_one_model_block_it():
    table = mechanism_table({"a": block(A, "candidate"), "a2": block(A, "candidate"), "b": block(B, "candidate")})
    assert table["m"]["verdict"]["caps_at"] == "blocked" and "a, a2" in table["m"]["verdict"]["reason"]


def test_the_run_records_give_the_same_table_as_the_ledger_blocks():
    records = [{"claim": {"id": cid, "mechanism": "m", "model": model, "units": ["L1H0"]}, "key": key,
                "verdict": {"status": status, "support": {}}}
               for cid, model in (("a", A), ("b", B))
               for key, status in (("replication", "candidate"), ("heldout", "candidate"))]
    records.append({"claim": {"id": "c", "model": A}, "key": "heldout", "verdict": None})
    from_runs = mechanism_table(claims_from_records(records))
    assert from_runs == mechanism_table({"a": block(A, "candidate"), "b": block(B, "candidate")})
    assert from_runs["m"]["verdict"]["caps_at"] == "candidate"


def test_the_ledger_markdown_shows_the_mechanisms_table():
    ledger = {"claims": {}, "runs": {}}
    for cid, model, status in (("a", A, "candidate"), ("b", B, "insufficient")):
        ledger["claims"][cid] = dict(block(model, status), statement="s", claimed="candidate", status=status,
                                     allowed=[], forbidden=[])
        for e in ledger["claims"][cid]["stages"].values():
            e.update(test={"nodeid": "t", "outcome": "passed"}, failing_gates=[], spec_hash="h", metrics={},
                     run={"id": "r", "date": "d"})
    md = render_markdown(ledger)
    assert "## Mechanisms across models" in md and "### m: **insufficient**" in md
    assert f"| {B} | b | L1H0 | candidate | insufficient | - |" in md


# ------------------------------------------------------------------------------------------------ the marker
def test_a_mechanism_claim_must_name_its_model_and_a_valid_id():
    with pytest.raises(ClaimSpecError, match="must name its model"):
        parse_claim_marker(("c",), {"statement": "s", "mechanism": "m"})
    with pytest.raises(ClaimSpecError, match="mechanism must be a mechanism id"):
        parse_claim_marker(("c",), {"statement": "s", "mechanism": "no spaces", "model": A})
    spec = parse_claim_marker(("c",), {"statement": "s", "mechanism": "m", "model": A})
    assert spec.to_dict()["mechanism"] == "m"


# ------------------------------------------------------------------------------------------ the kind's check
@dataclasses.dataclass(frozen=True)
class Declared:
    bank: object
    candidates: object


MECHANISM = Mechanism("m", "s", InductionBank(), AttentionPrior(top=5, negatives=3))


def test_the_unit_must_be_what_the_rule_chose_on_that_model():
    declared = Declared(InductionBank(), AttentionPrior(top=5, negatives=3))
    assert MECHANISM.check(declared, ["L5H1", "L11H2"], "L5H1").passed
    swapped = MECHANISM.check(declared, ["L5H1", "L11H2"], "L11H2")
    assert not swapped.passed and swapped.caps_at == Status.BLOCKED and "chose L5H1 at rank 0" in swapped.reason


@pytest.mark.parametrize("declared, says", [
    (Declared(InductionBank((("discovery", 8),)), AttentionPrior(top=5, negatives=3)), "bank"),
    (Declared(InductionBank(), AttentionPrior(top=3, negatives=3)), "selection"),
    (Declared(InductionBank(), Preregistered(("L5H1",))), "selection"),
])
def test_another_bank_or_rule_is_not_the_same_mechanism(declared, says):
    result = MECHANISM.check(declared, ["L5H1"], "L5H1")
    assert not result.passed and result.caps_at == Status.BLOCKED and says in result.reason


# ------------------------------------------------------------------------ end to end, in an empty project
pytest_plugins = ["pytester"]
TWO_MODELS = '''
from functools import partial

import pytest

from pytest_mechclaim.groundtruth import build_induction_model
from pytest_mechclaim.kinds import GroundTruthBank, HeadClaim, HeadDiscovery, Mechanism, Preregistered

RULE = Preregistered(("L1H0", "L1H1"))
MECHANISM = Mechanism("gt-induction-head", "the preregistered head copies by induction", GroundTruthBank(), RULE)
FIRST = HeadDiscovery("groundtruth:induction", RULE, GroundTruthBank(), load="groundtruth_model")
SECOND = HeadDiscovery("groundtruth:induction-cancelling", RULE, GroundTruthBank(),
                       load=partial(build_induction_model, variant="cancelling"))

TestFirst = HeadClaim("first-L1H0", "L1H0 is an induction head", "L1H0", FIRST, stages=("heldout",),
                      mechanism=MECHANISM).tests()
TestSecond = HeadClaim("second-L1H0", "L1H0 is an induction head", "L1H0", SECOND, stages=("heldout",),
                       mechanism=MECHANISM).tests()
TestSwapped = HeadClaim("swapped-L1H1", "L1H1 is the mechanism's head", "L1H1", SECOND, stages=("heldout",),
                        mechanism=Mechanism("other", "s", GroundTruthBank(), RULE)).tests()
'''


def test_two_models_of_one_mechanism_are_shown_and_judged_side_by_side(pytester):
    pytester.makepyfile(test_claims=TWO_MODELS)
    pytester.makeini("[pytest]\nstrict = true\nmechclaim_figures = false\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")
    result.assert_outcomes(passed=2, errors=1)  # the swapped claim is blocked: a blocked verdict never passes
    result.stdout.fnmatch_lines([
        "mechanism gt-induction-head: cross-model candidate (groundtruth:induction first-L1H0 heldout candidate, "
        "groundtruth:induction-cancelling second-L1H0 heldout candidate)",
        # L1H1 is rank 1 of the rule, not the mechanism's rank-0 unit: blocked before any scoring
        "mechanism other: cross-model blocked (groundtruth:induction-cancelling swapped-L1H1 heldout blocked)"])
    index = next((pytester.path / ".mechclaim" / "runs").glob("*/index.md")).read_text()
    assert "### gt-induction-head: **candidate**" in index
    assert "| groundtruth:induction-cancelling | second-L1H0 | L1H0 | - | candidate | - |" in index
