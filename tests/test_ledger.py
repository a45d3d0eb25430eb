"""The ledger as plain functions: spec fingerprint, comparison, update rules, file format, Markdown view."""

from __future__ import annotations

import json
import random

import pytest

from pytest_mechclaim import ledger as L
from pytest_mechclaim.evidence import EvidenceRow
from pytest_mechclaim.fixture import MechClaim
from pytest_mechclaim.plugin import missing_results
from pytest_mechclaim.spec import parse_claim_marker
from pytest_mechclaim.status import Status


def rows(target=0.9, control=0.1, seeds=(0, 1, 2), families=("f1", "f2"), prompt="p"):
    return [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"{f}-{s}-{i}", family=f, control_suite=suite,
                        seed=s, target_delta=target, control_delta=control, norm_drift=0.05,
                        prompt=f"{prompt} {f} {s} {i}")
            for f in families for s in seeds for suite in ("matched", "lexical") for i in range(3)]


def record(claim_id="c", stage="heldout", evidence=None, min_gap=0.1, inputs=None, results=None, nodeid=None,
           **spec_kwargs):
    """A claim test's payload as the plugin builds it, from real gates on ``evidence``."""
    spec = parse_claim_marker((claim_id,), dict({"statement": "L1H0 moves the target", "level": "insufficient"},
                                                **spec_kwargs))
    handle = MechClaim(spec, stage, nodeid or f"test_{claim_id}.py::test_{stage}")
    ev = handle.record(rows() if evidence is None else evidence)
    handle.gate.specificity_gap(ev, min=min_gap)
    handle.gate.collateral_ratio(ev)
    for name, value in (inputs or {}).items():
        handle.declare(name, value)
    for name, value in (results or {}).items():
        handle.attach(name, value)
    verdict = handle.verdict().to_dict()
    return {"claim": spec.to_dict(), "stage": stage, "key": stage, "nodeid": handle.nodeid, "outcome": "passed",
            "verdict": verdict, "artifacts": handle.artifacts,
            "fingerprint": L.spec_fingerprint(spec.to_dict(), stage, handle.gate_calls, verdict["gates"], handle.rows,
                                              handle.baseline_rows, handle.inputs, verdict.get("policy"))}


RUN = {"run_id": "r1", "date": "2026-01-01T00:00:00Z", "commit": "abc", "dirty": False, "versions": {}}


def ledger_with(*records, run=RUN) -> dict:
    recs = list(records)
    changes = L.compare(L.empty_ledger(), recs, set(), set(), [], ".")
    return L.apply(L.empty_ledger(), changes, recs, run, {}).ledger


# -- spec fingerprint -------------------------------------------------------------------------------------------


def test_fingerprint_ignores_row_order_and_the_numbers_but_not_the_coordinates():
    base = record()["fingerprint"]
    shuffled = rows()
    random.Random(0).shuffle(shuffled)
    assert record(evidence=shuffled)["fingerprint"] == base
    assert record(evidence=rows(target=0.5, control=0.45))["fingerprint"] == base  # results are not the spec
    more_seeds = record(evidence=rows(seeds=(0, 1, 2, 3)))["fingerprint"]
    assert more_seeds["hash"] != base["hash"]
    assert {p for p in base["parts"] if base["parts"][p] != more_seeds["parts"][p]} == {"coordinates", "data"}


def test_fingerprint_names_the_part_that_moved():
    base = record()["fingerprint"]["parts"]

    def moved(**kwargs):
        parts = record(**kwargs)["fingerprint"]["parts"]
        return {p for p in base if base[p] != parts[p]}

    assert moved(min_gap=0.01) == {"gates"}
    assert moved(evidence=rows(prompt="other tokens")) == {"data"}
    assert moved(inputs={"frozen_candidates": ["L1H0"]}) == {"inputs"}
    # Measured results attached to the claim (a calibration table of floats) are never part of the spec: their last
    # digits differ between thread counts (a fresh clone's serial run vs the ledger's -n 2 run).
    assert moved(results={"baseline_table": [{"margin": 0.1234567891}]}) == set()
    assert moved(statement="L1H0 is the induction head") == {"claim"}
    assert moved(stage="replication") == {"claim"}


def test_effective_thresholds_include_defaults():
    """A gate called with its default spelled out is the same spec; a default that moves is not."""
    spec = parse_claim_marker(("c",), {"statement": "s"})
    implicit, explicit, moved = MechClaim(spec), MechClaim(spec), MechClaim(spec)
    implicit.gate.collateral_ratio(rows())
    explicit.gate.collateral_ratio(rows(), max=1.0, strong_max=0.5)
    moved.gate.collateral_ratio(rows(), strong_max=0.6)
    assert implicit.gate_calls == explicit.gate_calls == [
        {"gate": "collateral_ratio", "thresholds": {"max": 1.0, "strong_max": 0.5}}]
    assert moved.gate_calls != implicit.gate_calls


# -- comparison and update rules ----------------------------------------------------------------------------------


def test_unchanged_claim_has_no_change_and_keeps_its_run_reference():
    ledger = ledger_with(record())
    assert L.compare(ledger, [record()], set(), set(), [], ".") == []
    applied = L.apply(ledger, [], [record()], dict(RUN, run_id="r2"), {})
    assert applied.ledger == ledger  # no churn: the entry still points at r1


def test_status_change_and_spec_change_are_separate_kinds():
    ledger = ledger_with(record())
    (change,) = L.compare(ledger, [record(evidence=rows(0.5, 0.45))], set(), set(), [], ".")
    assert (change.kind, change.old_status, change.new_status, change.changed_parts) == (
        "status", "candidate", "insufficient", ())
    assert not change.needs_ack
    (spec_only,) = L.compare(ledger, [record(min_gap=0.2)], set(), set(), [], ".")
    assert (spec_only.kind, spec_only.changed_parts) == ("spec", ("gates",))


def test_rise_with_spec_change_is_refused_then_recorded_with_its_reason():
    ledger = ledger_with(record(evidence=rows(0.5, 0.45)))
    assert ledger["claims"]["c"]["status"] == "insufficient"
    rerun = record(evidence=rows(0.5, 0.45), min_gap=0.01)
    changes = L.compare(ledger, [rerun], set(), set(), [], ".")
    assert changes[0].needs_ack
    refused = L.apply(ledger, changes, [rerun], dict(RUN, run_id="r2"), {})
    assert refused.refused == changes and refused.ledger == ledger
    acked = L.apply(ledger, changes, [rerun], dict(RUN, run_id="r2"), {"c": "preregistered"})
    entry = acked.ledger["claims"]["c"]["stages"]["heldout"]
    assert entry["status"] == "candidate" and entry["run"]["id"] == "r2"
    assert entry["acknowledged_spec_changes"][0]["reason"] == "preregistered"
    assert set(acked.ledger["runs"]) == {"r2"}  # r1 is no longer referenced


def test_unused_acknowledgements_are_reported():
    ledger = ledger_with(record())
    applied = L.apply(ledger, [], [record()], RUN, {"c": "why", "typo-claim": "why"})
    assert applied.unused_acks == ["c", "typo-claim"]


def test_claim_status_is_its_weakest_stage():
    ledger = ledger_with(record(stage="replication"), record(stage="heldout", evidence=rows(0.1, 0.9)))
    claim = ledger["claims"]["c"]
    assert claim["stages"]["replication"]["status"] == "candidate"
    assert claim["stages"]["heldout"]["status"] == "falsified"
    assert claim["status"] == "falsified"
    assert claim["forbidden"] == list(L.WORDING[Status.FALSIFIED]["forbidden"])


def test_gone_only_where_the_session_looked(tmp_path):
    (tmp_path / "test_kept.py").write_text("")
    ledger = ledger_with(record("kept", nodeid="test_kept.py::test_heldout"),
                         record("deleted", nodeid="sub/test_deleted.py::test_heldout"))
    gone = lambda **kw: [(c.claim, c.key) for c in L.compare(ledger, [], rootdir=tmp_path, **kw)]
    # Module collected, stage absent from it -> gone; module collected and stage present (deselected) -> not gone.
    assert gone(inventory=set(), collected_modules={"test_kept.py"}, scope=[]) == [("kept", "heldout")]
    assert gone(inventory={("kept", "heldout")}, collected_modules={"test_kept.py"}, scope=[]) == []
    # A missing file is gone only under a path the session was asked to collect.
    assert gone(inventory=set(), collected_modules=set(), scope=[tmp_path / "sub"]) == [("deleted", "heldout")]
    assert gone(inventory=set(), collected_modules=set(), scope=[tmp_path / "elsewhere"]) == []
    changes = L.compare(ledger, [], set(), {"test_kept.py"}, [tmp_path], tmp_path)
    assert L.apply(ledger, changes, [], RUN, {}).ledger["claims"] == {}


def test_results_lost_between_worker_and_controller_are_named():
    judged = {"gw0": ["a.py::t1"], "gw1": ["b.py::t2"]}
    assert missing_results(judged, [{"nodeid": "a.py::t1"}, {"nodeid": "b.py::t2"}]) == []
    assert missing_results(judged, [{"nodeid": "a.py::t1"}]) == [
        "worker gw1 judged b.py::t2 but its verdict never reached the controller"]


# -- file format --------------------------------------------------------------------------------------------------


def test_dumps_is_deterministic_sorted_and_round_trips(tmp_path):
    ledger = ledger_with(record("zeta"), record("alpha"), record("alpha", stage="replication"))
    text = L.dumps(ledger)
    assert text.endswith("}\n") and text.index('"alpha"') < text.index('"zeta"')
    path = tmp_path / "ledger.json"
    path.write_text(text)
    assert L.dumps(L.load(path)) == text
    assert L.load(tmp_path / "missing.json") is None


def test_metrics_are_rounded_so_the_ledger_does_not_diff_on_float_noise():
    verdict = {"gates": [{"name": "g", "value": 0.1 + 0.2}, {"name": "g", "value": float("inf")},
                         {"name": "h", "value": None}]}
    assert L.metrics_of(verdict) == {"g": 0.3, "g#2": "inf", "h": None}


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"),
    ('{"schema": "other/2", "claims": {}}', "schema is 'other/2'"),
    ('{"schema": "pytest-mechclaim/ledger/1", "claims": {"c": {}}}', "claim 'c' has no 'stages' object"),
    ('{"schema": "pytest-mechclaim/ledger/1", "claims": {"c": {"stages": {"s": {"status": "candidate"}}}}}',
     "has no spec_hash"),
])
def test_malformed_ledgers_are_rejected_with_the_reason(tmp_path, text, message):
    path = tmp_path / "ledger.json"
    path.write_text(text)
    with pytest.raises(L.LedgerError, match=message) as info:
        L.load(path)
    assert "It was not modified" in str(info.value) and str(path) in str(info.value)


def test_comparable_drops_only_run_specific_fields():
    a = ledger_with(record())
    b = ledger_with(record(), run=dict(RUN, run_id="r9", date="2027-01-01T00:00:00Z", commit="def"))
    assert a != b and L.comparable(a) == L.comparable(b)
    c = ledger_with(record(evidence=rows(0.5, 0.45)))
    assert L.comparable(a) != L.comparable(c)


def test_markdown_view_lists_every_claim_with_its_wording():
    ledger = ledger_with(record("c1"), record("c2", evidence=rows(0.1, 0.9)))
    text = L.render_markdown(ledger)
    assert "## c1" in text and "## c2" in text
    assert "| [c2](#c2) | **falsified** |" in text
    assert '"suggestive evidence"' in text.split("## c2")[1]
    assert "| `r1` |" in text


def test_wording_is_monotone_down_the_ladder():
    """What a status forbids, every lower status forbids too; every phrase has two words at least."""
    ladder = sorted(Status, reverse=True)
    for higher, lower in zip(ladder, ladder[1:]):
        assert set(L.WORDING[higher]["forbidden"]) <= set(L.WORDING[lower]["forbidden"]), (higher, lower)
    for w in L.WORDING.values():
        assert all(len(p.split()) >= 2 for p in w["forbidden"])


def test_entry_changes_are_detected_field_by_field():
    rec = record()
    entry = L.stage_entry(rec, {"id": "r1", "date": "d", "commit": None})
    assert entry["failing_gates"] == [] and entry["rows"]["n_rows"] == 36
    weaker = L.stage_entry(record(evidence=rows(0.5, 0.45)), {"id": "r1", "date": "d", "commit": None})
    assert weaker["failing_gates"] == ["specificity_gap"]
    assert json.loads(json.dumps(weaker)) == weaker
