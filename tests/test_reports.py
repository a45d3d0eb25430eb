"""Per-claim reports: breakdowns, counterexamples and the failure taxonomy over ALL rows; Markdown, JSON, figure;
and the reports of the real ground-truth claims (a true induction head, a planted decoy)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pytest_mechclaim import report
from pytest_mechclaim.evidence import EvidenceRow
from pytest_mechclaim.figures import claim_figure
from pytest_mechclaim.report_schema import REPORT_SCHEMA, validate_report

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def row(i, target, control, family="f1", suite="matched", seed=0, intervention="zero", position="final", **kw):
    return EvidenceRow(unit="L1H0", intervention=intervention, prompt_id=f"{family}-{seed}-{i}", family=family,
                       control_suite=suite, seed=seed, position=position, target_delta=target, control_delta=control,
                       prompt=f"prompt {i}", control_prompt=f"control {i}", **kw)


def test_taxonomy_counts_every_row_not_a_top_k_sample():
    # 1000 rows; exactly 137 have a control that moves at least as much as the target.
    rows = [row(i, 1.0, 1.5 if i < 137 else 0.2, family=f"f{i % 4}", seed=i % 3) for i in range(1000)]
    tax = report.failure_taxonomy(rows)
    moved = tax["modes"]["controls_moved"]
    assert (moved["status"], moved["rows"], moved["of"]) == ("detected", 137, 1000)
    assert tax["modes"]["domain_or_length_flip"]["status"] == "not_detected"
    count, listed = report.counterexamples(rows)
    assert count == 137 and len(listed) == 137
    assert listed[0]["score"] == pytest.approx(-0.5) and listed[0]["prompt"].startswith("prompt")


def test_flips_are_detected_only_when_the_means_change_sign():
    agree = [row(i, 1.0, 0.2, intervention=op) for i in range(10) for op in ("zero", "mean")]
    assert report.failure_taxonomy(agree)["modes"]["intervention_disagreement"]["status"] == "not_detected"
    # Under "mean" ablation the controls move more: the interventions disagree. No fallback label elsewhere.
    flip = [row(i, 1.0, 0.2 if op == "zero" else 1.4, intervention=op) for i in range(10) for op in ("zero", "mean")]
    modes = report.failure_taxonomy(flip)["modes"]
    assert modes["intervention_disagreement"]["status"] == "detected"
    assert modes["intervention_disagreement"]["rows"] == 10
    assert modes["position_mismatch"]["status"] == "not_measured"
    assert modes["domain_or_length_flip"]["status"] == "not_measured"
    by_family = [row(i, 1.0, 0.2 if fam == "short" else 1.2, family=fam) for i in range(5) for fam in ("short", "long")]
    assert report.failure_taxonomy(by_family)["modes"]["domain_or_length_flip"]["groups"] == {
        "long": pytest.approx(-0.2), "short": pytest.approx(0.8)}


def test_target_swap_leak_is_measured_only_with_such_controls():
    plain = [row(i, 1.0, 0.2) for i in range(4)]
    assert report.failure_taxonomy(plain)["modes"]["target_swap_leak"]["status"] == "not_measured"
    swap = plain + [row(10 + i, 1.0, 1.1 if i < 3 else 0.1, suite="wrong_target") for i in range(5)]
    leak = report.failure_taxonomy(swap)["modes"]["target_swap_leak"]
    assert (leak["status"], leak["rows"], leak["of"]) == ("detected", 3, 5)


def test_a_unit_that_never_moves_is_not_called_controls_moved():
    still = [row(i, 0.0, 0.0) for i in range(6)]
    modes = report.failure_taxonomy(still)["modes"]
    assert modes["no_target_effect"]["status"] == "detected"
    assert modes["controls_moved"]["status"] == "not_detected"
    assert report.counterexamples(still)[1][0]["why"] == "neither the target nor its control moved"


def payload_for(rows, status="falsified", outcome="failed"):
    return {"claim": {"id": "c", "statement": "s", "level": "candidate", "expect": "supported"}, "stage": "heldout",
            "key": "heldout", "nodeid": "claims/test_c.py::test_heldout[a b]", "outcome": outcome,
            "verdict": {"status": status, "reasons": ["specificity_gap: controls move"], "row_accounting": {},
                        "gates": [{"name": "specificity_gap", "value": -0.1, "threshold": 0.0, "comparison": ">",
                                   "passed": False, "caps_at": "falsified", "reason": "controls move"}]},
            "fingerprint": {"hash": "h", "parts": {}}}


def test_markdown_and_json_reports_carry_the_breakdowns_and_a_rerun_line(tmp_path):
    rows = [row(i, 1.0, 1.5 if i % 2 else 0.1, family=fam, suite=suite, seed=seed)
            for i in range(4) for fam in ("short", "long") for suite in ("matched", "lexical") for seed in (0, 1)]
    data = report.claim_report_data(payload_for(rows), rows, run_id="r1")
    assert json.loads(json.dumps(data, default=str))["counterexamples"]["count"] == 16
    assert [(b["family"], b["control_suite"], b["n"]) for b in data["suite_breakdown"]] == [
        ("long", "lexical", 8), ("long", "matched", 8), ("short", "lexical", 8), ("short", "matched", 8)]
    assert [s["seed"] for s in data["seeds"]] == [0, 1]
    text = report.claim_report_markdown(data)
    for section in ("## Gates", "## Family x control suite", "## Seeds", "## Failure taxonomy (all 32 target rows)",
                    "## Counterexamples (16 rows", "![movement, specificity gap"):
        assert section in text
    assert "Rerun: `python -m pytest 'claims/test_c.py::test_heldout[a b]'`" in text


def test_figure_is_a_png_drawn_without_pyplot(tmp_path):
    rows = [row(i, 1.0, 0.3, seed=i % 3, family=f"f{i % 2}") for i in range(30)]
    path = claim_figure(rows, "c [heldout]: candidate", tmp_path / "figure.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    effects_only = [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{i}", family="f", clean=2.0,
                                corrupt=0.0, patched=1.0, run="corrupt", seed=i) for i in range(4)]
    assert claim_figure(effects_only, "c", tmp_path / "effects.png").read_bytes().startswith(PNG_SIGNATURE)


GROUNDTRUTH_CONFTEST = '''
import pytest

@pytest.fixture(scope="session")
def groundtruth_model():
    from pytest_mechclaim.groundtruth import build_induction_model
    return build_induction_model()
'''


def test_groundtruth_claim_reports(pytester, monkeypatch):
    """The real hand-set model: the induction head's report passes, the decoy's names why it is rejected."""
    # Other test modules import the repository's `claims` package; the copy below must not collide with it.
    for name in [m for m in sys.modules if m == "claims" or m.startswith("claims.")]:
        monkeypatch.delitem(sys.modules, name)
    pytester.makeini("[pytest]\nstrict = true\n")
    pytester.makeconftest(GROUNDTRUTH_CONFTEST)
    claims = pytester.mkdir("claims")
    # The claims' shared declarations live in claims/conftest.py (older layouts: groundtruth_common.py).
    for name in ("__init__.py", "conftest.py", "groundtruth_common.py", "test_groundtruth_induction.py",
                 "test_groundtruth_decoy.py"):
        if (REPO / "claims" / name).exists():
            shutil.copy(REPO / "claims" / name, claims / name)
    result = pytester.runpytest("claims", "-m", "heldout", "--mechclaim-run-id=gt")
    result.assert_outcomes(passed=2, deselected=2)
    run = pytester.path / ".mechclaim" / "runs" / "gt" / "claims"

    induction = json.loads((run / "gt-induction-L1H0" / "heldout" / "report.json").read_text())
    assert induction["verdict"]["status"] == "candidate"
    assert induction["failure_taxonomy"]["modes"]["controls_moved"]["rows"] < \
        induction["failure_taxonomy"]["n_target_rows"] / 10

    decoy = json.loads((run / "gt-decoy-L1H1" / "heldout" / "report.json").read_text())
    assert decoy["verdict"]["status"] in ("falsified", "insufficient")
    assert decoy["failure_taxonomy"]["modes"]["no_target_effect"]["status"] == "detected"
    assert decoy["counterexamples"]["count"] == decoy["failure_taxonomy"]["n_target_rows"]
    decoy_md = (run / "gt-decoy-L1H1" / "heldout" / "report.md").read_text()
    assert "planted false claim" in decoy_md and "Rerun: `python -m pytest" in decoy_md
    for name in ("gt-induction-L1H0", "gt-decoy-L1H1"):
        assert (run / name / "heldout" / "figure.png").read_bytes().startswith(PNG_SIGNATURE)
    # The controller's per-run index lists every claim test of the run with its figure inline.
    index = (run.parent / "index.md").read_text()
    for name, status in (("gt-decoy-L1H1", "FALSIFIED"), ("gt-induction-L1H0", "CANDIDATE")):
        assert f"## {name} \\[heldout\\]: {status}" in index
        assert f"](<claims/{name}/heldout/figure.png>)" in index
        assert f"[report.md](<claims/{name}/heldout/report.md>)" in index
    assert index.count("![figure of") == 2


def test_committed_examples_are_complete():
    examples = REPO / "docs" / "examples"
    for claim in ("gt-induction-L1H0", "gt-decoy-L1H1"):
        folder = examples / claim / "heldout"
        data = json.loads((folder / "report.json").read_text())
        assert data["claim"]["id"] == claim and "failure_taxonomy" in data
        assert validate_report(data)["schema"] == REPORT_SCHEMA  # regenerate: python scripts/make_examples.py
        assert (folder / "figure.png").read_bytes().startswith(PNG_SIGNATURE)
        assert "](figure.png)" in (folder / "report.md").read_text()


def test_a_failing_claim_points_at_its_full_report(pytester):
    pytester.makeini("[pytest]\nstrict = true\nmechclaim_figures = false\n")
    pytester.makepyfile(test_weak='''
        import pytest
        from pytest_mechclaim.evidence import EvidenceRow

        pytestmark = pytest.mark.claim("weak", statement="L1H0 moves the target", level="candidate")

        @pytest.mark.heldout
        def test_heldout(mechclaim):
            ev = mechclaim.record([EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{i}", family="f",
                                               control_suite="matched", seed=i % 2, target_delta=0.1,
                                               control_delta=0.9, prompt=f"prompt {i}") for i in range(8)])
            mechclaim.gate.specificity_gap(ev)
    ''')
    result = pytester.runpytest("--mechclaim-run-id=r")
    result.assert_outcomes(failed=1)
    report_md = pytester.path / ".mechclaim" / "runs" / "r" / "claims" / "weak" / "heldout" / "report.md"
    assert f"full report: {report_md}" in result.stdout.str()
    text = report_md.read_text()
    assert "# Claim weak [heldout]: FALSIFIED" in text and "## Counterexamples (8 rows" in text
    assert "Rerun: `python -m pytest test_weak.py::test_heldout`" in text
