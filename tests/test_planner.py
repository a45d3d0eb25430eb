"""Evidence measured together: ``engine.head_evidence_many`` (several head requests over one task list, one executor
call) and the session planner that uses it (``kinds/planner.py``: the head claims of one discovery measure each
stage together, when the first of them runs)."""

from __future__ import annotations

import json

import pytest

from pytest_mechclaim.engine import ActivationCache, EngineError, HeadRequest, head_evidence, head_evidence_many
from pytest_mechclaim.engine import tail as tail_module
from tests.test_engine import _random_tasks, _tiny_model, assert_same_rows, gt_model, gt_tasks  # noqa: F401
from tests.test_kinds import HEAD_CLAIMS, INNER_ARGS, verdicts

pytest_plugins = ["pytester"]

REQUESTS = (HeadRequest(("L1H0",), ("clean_to_corrupt", "zero"), ("final", "previous_occurrence")),
            HeadRequest(("L0H0", "L1H1", "L1H0"), ("zero", "mean"), ("final",), "random_comparison"),
            HeadRequest(("L1H1",), ("resample", "clean_to_corrupt"), ("final",)))


def _count_tail_passes(monkeypatch) -> list:
    passes = []
    run = tail_module.TailGroup.run
    monkeypatch.setattr(tail_module.TailGroup, "run",
                        lambda self, entries, rel: passes.append(len(entries)) or run(self, entries, rel))
    return passes


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_requests_measured_together_give_each_request_the_rows_it_gets_alone(gt_model, gt_tasks, path,
                                                                            monkeypatch):
    passes = _count_tail_passes(monkeypatch)
    alone = [head_evidence(gt_model, gt_tasks, r.heads, r.interventions, r.positions, r.unit_set, path=path,
                           cache=ActivationCache()) for r in REQUESTS]
    passes_alone, passes[:] = list(passes), []
    together = head_evidence_many(gt_model, gt_tasks, REQUESTS, path=path, cache=ActivationCache())
    reference = [head_evidence(gt_model, gt_tasks, r.heads, r.interventions, r.positions, r.unit_set,
                               path="reference", cache=ActivationCache()) for r in REQUESTS]
    for a, t, ref in zip(alone, together, reference):
        assert [r.coordinates() for r in a] == [r.coordinates() for r in t]  # the same rows, in the same order
        assert [r.to_dict() for r in a] == [r.to_dict() for r in t]
        assert {r.unit_set for r in t} == {"random_comparison" if t is together[1] else "target"}
        if path == "fast":
            assert_same_rows(t, ref)  # and both still equal the reference path's
        # 4 + 6 + 2 cells, L1H0 zero at the final position in requests 0 and 1: measured once for both
        assert t.meta["measured_with"] == 11
    if path == "fast":  # fewer passes, and only the union's variants
        assert len(passes) < len(passes_alone) and sum(passes) < sum(passes_alone)


def test_requests_measured_together_run_fewer_bigger_tail_passes(monkeypatch):
    model, tasks = _tiny_model(), _random_tasks()
    requests = [HeadRequest((f"L{l}H{h}",), ("clean_to_corrupt", "zero")) for l in range(3) for h in range(4)]
    passes = _count_tail_passes(monkeypatch)
    for r in requests:
        head_evidence(model, tasks, r.heads, r.interventions, cache=ActivationCache())
    separate, passes[:] = list(passes), []
    head_evidence_many(model, tasks, requests, cache=ActivationCache())
    assert sum(separate) == sum(passes) == 24  # the same variants...
    assert len(passes) == 2 < len(separate) == 24  # ...in one pass per run instead of one per request and run


def test_bad_requests_fail_before_any_forward_pass(gt_model, gt_tasks, monkeypatch):
    passes = _count_tail_passes(monkeypatch)
    with pytest.raises(EngineError, match="no head requests"):
        head_evidence_many(gt_model, gt_tasks, [])
    with pytest.raises(EngineError, match="unknown head interventions"):
        head_evidence_many(gt_model, gt_tasks, [REQUESTS[0], HeadRequest(("L1H0",), ("shuffle",))])
    with pytest.raises(EngineError, match="positions must be non-empty"):
        head_evidence_many(gt_model, gt_tasks, [REQUESTS[0], HeadRequest(("L1H0",), ("zero",), ())])
    with pytest.raises(EngineError, match="does not exist"):
        head_evidence_many(gt_model, gt_tasks, [REQUESTS[0], HeadRequest(("L9H0",))])
    assert passes == []


# ----------------------------------------------------------------------------------------------- the planner
CALL_LOG = '''
import json
import pytest
from pytest_mechclaim.kinds import planner

CALLS = []

@pytest.fixture(autouse=True)
def _log_engine_calls(monkeypatch, request):
    many = planner.head_evidence_many
    def logged(model, tasks, requests, *a, **k):
        CALLS.append({"test": request.node.nodeid, "requests": [[list(r.heads), r.unit_set] for r in requests]})
        return many(model, tasks, requests, *a, **k)
    monkeypatch.setattr(planner, "head_evidence_many", logged)

def pytest_sessionfinish(session):
    with open("calls.json", "w") as f:
        json.dump(CALLS, f)
'''


def _run(pytester, *args):
    result = pytester.runpytest(*INNER_ARGS, *args)
    calls = json.loads((pytester.path / "calls.json").read_text())
    rows = {}
    for path in (pytester.path / ".mechclaim" / "runs").glob("*/claims/*/*/rows.jsonl"):
        rows[(path.parent.parent.name, path.parent.name)] = path.read_text()
    return result, calls, rows


def test_head_claims_of_one_discovery_measure_each_stage_in_one_engine_call(pytester):
    pytester.makepyfile(test_claims=HEAD_CLAIMS)
    pytester.makeconftest(CALL_LOG)
    pytester.makeini("[pytest]\nstrict = true\n")
    result, calls, rows = _run(pytester)
    result.assert_outcomes(passed=3)
    assert verdicts(result) == {"gt-induction-L1H0 [replication]": "CANDIDATE",
                                "gt-induction-L1H0 [heldout]": "CANDIDATE", "gt-decoy-L1H1 [replication]": "FALSIFIED"}
    # replication: the first replication test measures both claims (head + comparison heads each); the decoy's
    # replication test then makes no engine call. heldout: only L1H0 declares it.
    assert [(c["test"].split("::")[1], [u for _, u in c["requests"]]) for c in calls] == [
        ("TestInduction", ["target", "random_comparison", "target", "random_comparison"]),
        ("TestInduction", ["target", "random_comparison"])]
    assert calls[0]["requests"][0][0] == ["L1H0"] and calls[0]["requests"][2][0] == ["L1H1"]

    # Selection is respected (-k): the decoy alone is measured alone, and its rows are the ones it got planned.
    (pytester.path / ".mechclaim" / "runs").rename(pytester.path / "planned-runs")
    alone, calls_alone, rows_alone = _run(pytester, "-k", "Decoy")
    alone.assert_outcomes(passed=1)
    assert [[u for _, u in c["requests"]] for c in calls_alone] == [["target", "random_comparison"]]
    planned = {p.parent.parent.name: p.read_text()
               for p in (pytester.path / "planned-runs").glob("*/claims/*/*/rows.jsonl")}
    (decoy,) = [text for (claim, _), text in rows_alone.items() if claim.startswith("gt-decoy")]
    assert decoy == next(text for claim, text in planned.items() if claim.startswith("gt-decoy")) and decoy
