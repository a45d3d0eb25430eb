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
    # Evidence that flips the verdict (composite gates then show another deciding sub-check and threshold) is still
    # the same spec: a status may rise on new evidence without looking like a moved threshold.
    flipped = record(evidence=rows(target=0.5, control=0.99))
    assert flipped["verdict"]["status"] != record()["verdict"]["status"]
    assert flipped["fingerprint"] == base
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
    assert moved(stage="replication") == {"claim", "policy"}  # the evidence policy applied depends on the stage


def test_effective_thresholds_include_defaults():
    """A gate called with its default spelled out is the same spec; a default that moves is not."""
    spec = parse_claim_marker(("c",), {"statement": "s"})
    implicit, explicit, moved = MechClaim(spec), MechClaim(spec), MechClaim(spec)
    implicit.gate.collateral_ratio(implicit.record(rows()))
    explicit.gate.collateral_ratio(explicit.record(rows()), max=1.0, strong_max=0.5)
    moved.gate.collateral_ratio(moved.record(rows()), strong_max=0.6)
    assert implicit.gate_calls == explicit.gate_calls
    (call,) = implicit.gate_calls
    assert call["gate"] == "collateral_ratio" and {"max": 1.0, "strong_max": 0.5}.items() <= call["thresholds"].items()
    assert moved.gate_calls != implicit.gate_calls


# -- comparison and update rules ----------------------------------------------------------------------------------


def test_unchanged_claim_has_no_change_and_keeps_its_run_reference():
    ledger = ledger_with(record())
    assert L.compare(ledger, [record()], set(), set(), [], ".") == []
    applied = L.apply(ledger, [], [record()], dict(RUN, run_id="r2"), {})
    assert applied.ledger == ledger  # no churn: the entry still points at r1


def test_status_change_and_spec_change_are_separate_kinds():
    ledger = ledger_with(fake(status="candidate"))
    (change,) = L.compare(ledger, [fake(status="insufficient")], set(), set(), [], ".")
    assert (change.kind, change.old_status, change.new_status, change.changed_parts) == (
        "status", "candidate", "insufficient", ())
    assert not change.needs_ack
    (spec_only,) = L.compare(ledger, [fake(status="candidate", spec="h2")], set(), set(), [], ".")
    assert (spec_only.kind, spec_only.changed_parts) == ("spec", ("gates",))


def test_rise_with_spec_change_is_refused_then_recorded_with_its_reason():
    ledger = ledger_with(fake(status="insufficient"))
    assert ledger["claims"]["c"]["status"] == "insufficient"
    rerun = fake(status="candidate", spec="h2")  # the bar moved in the run the status rose
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
    ledger = ledger_with(fake(key="replication", status="candidate"), fake(key="heldout", status="falsified"))
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
    assert L.apply(ledger, changes, [], RUN, {}, prune=True).ledger["claims"] == {}
    # Without prune the update deletes nothing and refuses both removals.
    kept = L.apply(ledger, changes, [], RUN, {})
    assert set(kept.ledger["claims"]) == {"kept", "deleted"} and [c.kind for c in kept.refused] == ["gone", "gone"]


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
    ('{"schema": "other/2", "claims": {}}', "schema is 'other/2'; this version of pytest-mechclaim reads only "
                                            "'pytest-mechclaim/ledger/2'"),
    ('{"schema": "pytest-mechclaim/ledger/1", "claims": {}}', "reads only 'pytest-mechclaim/ledger/2'"),
    ('{"schema": "pytest-mechclaim/ledger/2", "claims": {"c": {}}, "runs": {}, "claims_digest": "x"}',
     "claim 'c' 'statement': Field required"),
    ('{"schema": "pytest-mechclaim/ledger/2", "claims": {}, "runs": {}}', "'claims_digest': Field required"),
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


# -- renames, moves and deletions (synthetic payloads: the rules read statuses and nodeids, not gates) -------------


def fake(claim_id="c", key="heldout", status="insufficient", spec="h1", nodeid=None, statement="s", gates=None):
    """A judged claim test's payload with a given status and spec hash (no gates run)."""
    return {"claim": {"id": claim_id, "statement": statement, "level": "insufficient", "expect": "supported"},
            "stage": key, "key": key, "nodeid": nodeid or f"test_m.py::test_{key}", "outcome": "passed",
            "verdict": {"status": status, "gates": [{"name": "g", "value": 0.25, "passed": True}],
                        "row_accounting": {"n_rows": 8}},
            "fingerprint": {"hash": spec, "parts": {"gates": spec},
                            "inputs": {"gates": gates if gates is not None else {"g": {"min": 0.5}}}}}


def step(ledger, recs, inventory, modules=("test_m.py",), acks=None, prune=True, scope=()):
    changes = L.compare(ledger, recs, set(inventory), set(modules), list(scope), ".")
    return changes, L.apply(ledger, changes, recs, dict(RUN, run_id="r2"), acks or {}, prune=prune)


def test_a_renamed_claim_needs_an_acknowledgement_and_keeps_the_old_stage_until_given_one():
    ledger = ledger_with(fake("old", status="falsified"))
    renamed = fake("new", status="candidate")  # same test, new id, better evidence
    changes, applied = step(ledger, [renamed], {("new", "heldout")})
    (new,) = [c for c in changes if c.kind == "new"]
    assert new.needs_ack and new.replaced == ["old [heldout] (test_m.py::test_heldout)"]
    assert [(c.kind, c.claim) for c in applied.refused] == [("new", "new"), ("gone", "old")]
    assert "not pruned while new [heldout], which replaces it, is refused" in applied.refused[1].refusal()
    assert set(applied.ledger["claims"]) == {"old"}  # pruning first would let the rename in on the next run
    _, acked = step(ledger, [renamed], {("new", "heldout")}, acks={"new": "renamed: old id was a typo"})
    assert set(acked.ledger["claims"]) == {"new"} and not acked.refused
    (ack,) = acked.ledger["claims"]["new"]["stages"]["heldout"]["acknowledged_spec_changes"]
    assert (ack["from_status"], ack["to_status"], ack["from_spec_hash"]) == (None, "candidate", None)
    assert ack["replaces"] == ["old [heldout] (test_m.py::test_heldout)"]


def test_a_stage_moved_to_another_marker_needs_an_acknowledgement():
    ledger = ledger_with(fake(key="heldout", status="falsified"))
    moved = fake(key="replication", status="candidate", nodeid="test_m.py::test_heldout")
    changes, applied = step(ledger, [moved], {("c", "replication")})
    assert [c.claim for c in applied.refused if c.kind == "new"] == ["c"]
    assert "vanished (same test module, test or statement)" in applied.refused[0].refusal()


def test_a_new_claim_with_a_vanished_claims_statement_needs_an_acknowledgement_even_from_another_module():
    ledger = ledger_with(fake("old", nodeid="test_gone.py::test_heldout", statement="L1H0 copies tokens"))
    same = fake("new", nodeid="test_other.py::test_heldout", statement="L1H0 copies tokens", status="candidate")
    changes, _ = step(ledger, [same], {("new", "heldout")}, modules=("test_other.py",))
    assert [c.kind for c in changes] == ["new"] and changes[0].needs_ack  # old's module not looked at: not gone
    other = fake("new", nodeid="test_other.py::test_heldout", statement="L2H1 suppresses", status="candidate")
    changes, applied = step(ledger, [other], {("new", "heldout")}, modules=("test_other.py",))
    assert not changes[0].needs_ack and not applied.refused and set(applied.ledger["claims"]) == {"old", "new"}


def test_a_rise_while_a_sibling_stage_vanished_needs_an_acknowledgement_and_a_plain_rise_does_not():
    ledger = ledger_with(fake(key="heldout", status="falsified"), fake(key="replication", status="falsified"))
    rise = fake(key="heldout", status="candidate")
    changes, applied = step(ledger, [rise], {("c", "heldout")})
    assert {(c.kind, c.key) for c in applied.refused} == {("status", "heldout"), ("gone", "replication")}
    changes, applied = step(ledger, [rise], {("c", "heldout"), ("c", "replication")})
    assert not applied.refused and applied.ledger["claims"]["c"]["stages"]["heldout"]["status"] == "candidate"


def test_thresholds_are_stored_readably_and_a_moved_floor_shows_in_the_diff():
    before = ledger_with(fake(gates={"positive_share": {"min": 0.5}}))
    entry = before["claims"]["c"]["stages"]["heldout"]
    assert entry["thresholds"] == {"positive_share": {"min": 0.5}}
    _, applied = step(before, [fake(spec="h2", gates={"positive_share": {"min": 0.99}})], {("c", "heldout")})
    diff = [line for line in L.dumps(applied.ledger).splitlines() if '"min"' in line]
    assert diff == ['              "min": 0.99']
    assert "- heldout: positive\\_share min 0.99" in L.render_markdown(applied.ledger)
    # Gate calls as the fingerprint hashes them (a list) read the same; no gate inputs, no thresholds key.
    assert L.thresholds_of([{"gate": "g", "thresholds": {"min": 1}}, {"gate": "g", "thresholds": {"min": 2}}]) == {
        "g": {"min": 1}, "g#2": {"min": 2}}
    assert "thresholds" not in ledger_with(fake(gates={}))["claims"]["c"]["stages"]["heldout"]


def test_the_policy_floors_a_stage_was_judged_at_are_stored_with_the_authors_stricter_calls():
    entry = ledger_with(record())["claims"]["c"]["stages"]["heldout"]
    # The policy ran signed_effect at its floor; the author called specificity_gap at 0.1 (stricter than 0.0).
    assert entry["thresholds"]["signed_effect"] == {"min": 0.0}
    assert entry["thresholds"]["specificity_gap"]["min"] == 0.1
