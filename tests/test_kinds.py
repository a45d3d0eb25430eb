"""Claim kinds (pytest_mechclaim/kinds/): declarations that generate a claim's stage tests, and the plugin-enforced
frozen candidate store (a later stage never adds a candidate; held-out is disjoint from discovery).

The pytester tests write claims in an empty project (only the installed plugin and its fixtures) on the hand-set
model and SAE, whose mechanisms are known: the true claims must pass and the planted false ones be rejected."""

from __future__ import annotations

import json
import warnings

import pytest
import transformer_lens  # noqa: F401  (imported here: inner sessions drop modules they import, and datasets, which

with warnings.catch_warnings():  # TL and SAELens import, cannot register its pyarrow types twice in one process)
    warnings.filterwarnings("ignore", "The 'utils' module has been deprecated", DeprecationWarning)
    import sae_lens  # noqa: F401

from pytest_mechclaim.banks.heldout import FrozenSetError
from pytest_mechclaim.fixture import MechClaim
from pytest_mechclaim.fixtures.banks import groundtruth_tasks
from pytest_mechclaim.kinds import FrozenStore
from pytest_mechclaim.spec import parse_claim_marker
from pytest_mechclaim.status import Status
from tests.rowkit import effect_rows

pytest_plugins = ["pytester"]
INNER_ARGS = ("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", "-rA")

HEAD_CLAIMS = '''
from pytest_mechclaim.kinds import GroundTruthBank, HeadClaim, HeadDiscovery, Preregistered

HAND_SET = HeadDiscovery("groundtruth:induction", Preregistered(("L1H0", "L1H1")), GroundTruthBank(),
                         load="groundtruth_model")

TestInduction = HeadClaim("gt-induction-L1H0", "L1H0 is an induction head", "L1H0", HAND_SET,
                          stages=("replication", "heldout")).tests()

TestDecoy = HeadClaim("gt-decoy-L1H1", "L1H1, with L1H0's attention pattern, is an induction head", "L1H1",
                      HAND_SET, stages=("replication",), expect="rejected").tests()
'''

SAE_CLAIMS = '''
from pytest_mechclaim.kinds import GroundTruthBank, SAEFeatureClaim, SAEStudy

TOKENS = (1, 2, 3, 4, 5)  # hand-set SAE feature t: "the previous token is t"

def repeating_a_claimed_token(tasks):
    return [t for t in tasks if t.pair.clean[-1] in TOKENS]

HAND_SET = SAEStudy("groundtruth_model", "groundtruth_sae", positions=("all",),
                    bank=GroundTruthBank(n_per_family=40, transform=repeating_a_claimed_token))

TestPrevToken = SAEFeatureClaim("gt-sae-prev-token", "Features 1-5 carry induction after tokens 1-5", HAND_SET,
                                features=TOKENS, heldout=True).tests()

TestWrongFeatures = SAEFeatureClaim("gt-sae-other-tokens", "Features 6-10 carry induction after tokens 1-5",
                                    HAND_SET, features=(6, 7, 8, 9, 10), expect="rejected").tests()
'''


def run_claims(pytester, source: str):
    pytester.makepyfile(test_claims=source)
    pytester.makeini("[pytest]\nstrict = true\n")
    return pytester.runpytest(*INNER_ARGS)


def verdicts(result) -> dict[str, str]:
    lines = [l for l in result.outlines if l.startswith("claim ") and ": verdict " in l]
    return {l.split(": verdict ")[0][len("claim "):]: l.split(": verdict ")[1].split()[0] for l in lines}


def test_head_claims_declared_in_an_empty_project_get_the_known_verdicts(pytester):
    result = run_claims(pytester, HEAD_CLAIMS)
    result.assert_outcomes(passed=3)
    assert verdicts(result) == {"gt-induction-L1H0 [replication]": "CANDIDATE",
                                "gt-induction-L1H0 [heldout]": "CANDIDATE", "gt-decoy-L1H1 [replication]": "FALSIFIED"}
    frozen = list((pytester.path / ".mechclaim" / "runs").glob("*/frozen/gt-induction-L1H0.json"))
    assert len(frozen) == 1 and json.loads(frozen[0].read_text())["units"] == ["L1H0", "L1H1"]
    # The kind records control units, seeds, suites and interventions, so every policy line runs (none is a debt),
    # and the plugin's frozen-set checks ran on the held-out rows.
    report = next((pytester.path / ".mechclaim" / "runs").glob("*/claims/gt-induction-L1H0/heldout/report.json"))
    verdict = json.loads(report.read_text())["verdict"]
    assert verdict["debts"] == []
    assert {"unit_controls", "seed_replication", "intervention_replication", "multi_control_minimum",
            "frozen_candidate", "heldout_disjoint", "heldout_tasks_disjoint"} <= {g["name"] for g in verdict["gates"]}


def test_sae_claims_declared_in_an_empty_project_get_the_known_verdicts(pytester):
    result = run_claims(pytester, SAE_CLAIMS)
    result.assert_outcomes(passed=3)
    found = verdicts(result)
    assert found["gt-sae-prev-token [discovery]"] == found["gt-sae-prev-token [heldout]"] == "CANDIDATE"
    assert found["gt-sae-other-tokens [discovery]"] in ("FALSIFIED", "INSUFFICIENT")


# ------------------------------------------------------------------------------------- the frozen candidate store
def handle(stage: str, store: FrozenStore, claim_id: str = "c") -> MechClaim:
    spec = parse_claim_marker((claim_id,), {"statement": "L1H0 is an induction head", "units": ["L1H0"]})
    return MechClaim(spec, stage, frozen=store)


def rows_at(seeds, families=("repeat_short", "repeat_long"), unit="L1H0"):
    return effect_rows({f: 0.9 for f in families}, seeds=seeds, unit=unit)


def frozen_gates(claim: MechClaim) -> dict:
    return {g.name: g for g in claim.verdict().gates if g.name in ("frozen_candidate", "heldout_disjoint")}


def test_freezing_is_idempotent_refuses_a_different_set_and_detects_edits(tmp_path):
    store, tasks = FrozenStore(tmp_path), groundtruth_tasks("discovery")
    first = store.freeze("c", ["L1H0"], tasks)
    assert store.freeze("c", ["L1H0"], tasks).content_hash == first.content_hash
    with pytest.raises(FrozenSetError, match="cannot change the frozen set"):
        store.freeze("c", ["L1H0", "L0H1"], tasks)
    data = json.loads(store.path("c").read_text())
    store.path("c").write_text(json.dumps(dict(data, units=["L0H1"])))
    with pytest.raises(FrozenSetError, match="content hash"):
        store.get("c")


def test_freeze_belongs_to_discovery(tmp_path):
    with pytest.raises(ValueError, match="a later stage cannot choose candidates"):
        handle("heldout", FrozenStore(tmp_path)).freeze(["L1H0"], groundtruth_tasks("discovery"))
    discovery = handle("discovery", FrozenStore(tmp_path))
    discovery.freeze(["L1H0"], groundtruth_tasks("discovery"))
    assert discovery.inputs["frozen_candidates"]["units"] == ["L1H0"]


def test_a_later_stage_row_of_an_unfrozen_unit_blocks_and_a_frozen_one_passes(tmp_path):
    store = FrozenStore(tmp_path)
    store.freeze("c", ["L1H0"], groundtruth_tasks("discovery"))
    added = handle("replication", store)
    added.record(rows_at((0, 1, 2)) + rows_at((0, 1, 2), unit="L0H1"))
    assert frozen_gates(added)["frozen_candidate"].caps_at == Status.BLOCKED
    assert added.verdict().status == Status.BLOCKED
    kept = handle("replication", store)
    kept.record(rows_at((0, 1, 2)))
    assert frozen_gates(kept)["frozen_candidate"].passed


@pytest.mark.parametrize("leak", ["seeds", "families", "prompts"])
def test_heldout_rows_reusing_discovery_data_block(tmp_path, leak):
    store = FrozenStore(tmp_path)
    store.freeze("c", ["L1H0"], groundtruth_tasks("discovery"))
    claim = handle("heldout", store)
    seeds = (0, 11) if leak == "seeds" else (10, 11)
    families = ("repeat_short", "repeat_mid") if leak == "families" else ("repeat_mid", "repeat_tail")
    rows = rows_at(seeds, families)
    if leak == "prompts":  # a discovery prompt renamed into a held-out family and seed
        import dataclasses

        rows[0] = dataclasses.replace(rows[0], prompt_id="repeat_short-s0-0")
    claim.record(rows)
    gate = frozen_gates(claim)["heldout_disjoint"]
    assert gate.caps_at == Status.BLOCKED and leak in gate.reason, gate.reason


def test_disjoint_heldout_rows_pass_and_a_hand_written_heldout_without_a_freeze_is_left_to_the_policy(tmp_path):
    store = FrozenStore(tmp_path)
    store.freeze("c", ["L1H0"], groundtruth_tasks("discovery"))
    claim = handle("heldout", store)
    claim.record(rows_at((10, 11), ("repeat_mid", "repeat_tail")))
    assert frozen_gates(claim)["heldout_disjoint"].passed
    assert store.check_tasks("c", groundtruth_tasks("heldout")).passed
    assert not store.check_tasks("c", groundtruth_tasks("discovery")[:3]).passed
    # Nothing frozen for this claim (a hand-written held-out test whose discovery never froze): no store check,
    # the marker's units bound what can support it. A kind's held-out stage blocks instead (heldout_tasks_disjoint).
    unfrozen = handle("heldout", store, claim_id="never-frozen")
    unfrozen.record(rows_at((10, 11), ("repeat_mid", "repeat_tail")))
    assert "heldout_disjoint" not in frozen_gates(unfrozen)
    assert not store.check_tasks("never-frozen", groundtruth_tasks("heldout")).passed


# ----------------------------------------------------------------------------------------- head candidate rules
def test_a_causal_search_runs_only_where_calibration_permits_it(groundtruth_model):
    from pytest_mechclaim.gates import GateResult
    from pytest_mechclaim.kinds import CausalSearch

    tasks = groundtruth_tasks("discovery")
    refused = CausalSearch(top=1, negatives=1).choose(groundtruth_model, tasks, None, None)
    assert refused[:2] == ([], []) and "refused" in refused[3]
    failed = GateResult("metric_calibration", False, 0.1, 0.25, ">", Status.BLOCKED, "gap 0.1 <= 0.25",
                        details={"search_allowed": False})
    assert CausalSearch().choose(groundtruth_model, tasks, failed, None)[0] == []
    allowed = GateResult("metric_calibration", True, 1.0, 0.25, ">", Status.STRONG, "calibrated",
                         details={"search_allowed": True})
    candidates, negatives, scores, _ = CausalSearch(top=1, negatives=1).choose(groundtruth_model, tasks, allowed, None)
    assert candidates == ["L1H0"] and negatives != candidates and set(scores) == {"L0H0", "L0H1", "L1H0", "L1H1"}


def test_a_frozen_negative_control_never_supports_a_claim_and_an_unfrozen_unit_is_never_scored():
    from pytest_mechclaim.kinds.head import Discovery, frozen_role

    discovery = Discovery(None, {}, "preregistered", ["L1H0"], ["L0H1"], {})
    assert frozen_role(discovery, "L1H0").passed
    assert frozen_role(discovery, "L0H1").caps_at == Status.INSUFFICIENT
    assert frozen_role(discovery, "L1H1").caps_at == Status.BLOCKED


HAND_WRITTEN = '''
import pytest
from pytest_mechclaim.engine import head_evidence

pytestmark = pytest.mark.claim("hand-L1H0", statement="L1H0 is an induction head", level="candidate", units=["L1H0"])


def record(mechclaim, model, tasks, heads):
    mechclaim.record(head_evidence(model, tasks, heads))
    mechclaim.record(head_evidence(model, tasks, ["L0H0", "L0H1"], unit_set="random_comparison"))


@pytest.mark.discovery
def test_discovery(mechclaim, groundtruth_model, discovery_tasks):
    mechclaim.freeze(["L1H0"], discovery_tasks)
    record(mechclaim, groundtruth_model, discovery_tasks, ["L1H0"])


@pytest.mark.heldout
def test_heldout(mechclaim, groundtruth_model, {heldout}):
    record(mechclaim, groundtruth_model, {heldout}, {units})
'''


@pytest.mark.parametrize("heldout, units, gate", [
    ("heldout_tasks", '["L1H0"]', None),
    ("discovery_tasks", '["L1H0"]', "heldout_disjoint"),        # "held-out" prompts discovery already saw
    ("heldout_tasks", '["L1H0", "L1H1"]', "frozen_candidate"),  # a later stage adds a candidate
], ids=["disjoint", "leaking", "new-candidate"])
def test_the_plugin_checks_a_hand_written_heldout_stage_against_its_discovery_freeze(pytester, heldout, units, gate):
    pytester.makepyfile(test_claims=HAND_WRITTEN.format(heldout=heldout, units=units))
    pytester.makeini("[pytest]\nstrict = true\nmechclaim_figures = false\n")
    result = pytester.runpytest(*INNER_ARGS)
    if gate is None:
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, errors=1)  # discovery passes; held-out is BLOCKED (an error, never a pass)
        assert verdicts(result)["hand-L1H0 [heldout]"] == "BLOCKED"
        assert f"{gate}: " in result.stdout.str()
