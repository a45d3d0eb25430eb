"""The claim figure (error bars, gate floors, signed effects, normalized-effect panel), the per-run index, and the
versioned report.json schema. Concrete synthetic rows; no torch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer

from pytest_mechclaim import report
from pytest_mechclaim.evidence import EvidenceRow
from pytest_mechclaim.figures import claim_figure, figure_for, panel_floors
from pytest_mechclaim.gates import clustered_ci, directed_effect
from pytest_mechclaim.report_schema import REPORT_SCHEMA, ReportSchemaError, validate_report
from pytest_mechclaim.run_index import run_index_markdown, write_run_index
from tests.rowkit import effect_rows

pytest_plugins = ["pytester"]


def paired(i, target, control, *, family="f1", suite="matched", seed=0, intervention="zero", run="clean", unit="L1H0",
           unit_set="target"):
    """An ablation row (run=clean: "carries" predicts a decrease) with patching numbers too."""
    return EvidenceRow(unit=unit, unit_set=unit_set, intervention=intervention, prompt_id=f"{family}-{seed}-{i}",
                       family=family, control_suite=suite, seed=seed, run=run, target_delta=target,
                       control_delta=control, clean=2.0, corrupt=0.0, patched=2.0 + target)


def rows_for_claim():
    rows = []
    for family in ("short", "long"):
        for suite in ("matched", "lexical"):
            for seed in (0, 1):
                for i in range(6):
                    rows.append(paired(i, -1.0 - 0.1 * (i % 3), 0.2 * (i % 2), family=family, suite=suite,
                                       seed=seed))
                    rows.append(paired(i, -0.1, 0.0, family=family, suite=suite, seed=seed, unit="L0H0",
                                       unit_set="random_comparison"))
    return rows


def gate(name, value, threshold, passed, comparison=">", **details):
    return {"name": name, "value": value, "threshold": threshold, "comparison": comparison, "passed": passed,
            "caps_at": "strong" if passed else "falsified", "reason": "r", "details": details, "worst": []}


def payload(status="candidate", direction="carries", gates=None, outcome="passed", expect="supported", files=None):
    return {"claim": {"id": "c", "statement": "L1H0 carries it", "level": "candidate", "expect": expect},
            "stage": "heldout", "key": "heldout", "nodeid": "claims/test_c.py::test_heldout", "outcome": outcome,
            "verdict": {"status": status, "reasons": [], "row_accounting": {}, "debts": [],
                        "policy": {"kind": "head", "stage": "heldout", "level": "candidate", "lines": [],
                                   "direction": direction} if direction else {},
                        "gates": gates if gates is not None else [
                            gate("signed_effect", 1.1, 0.05, True, ci_low=1.0, ci_high=1.2, confidence=0.95),
                            gate("specificity_gap", 1.0, 0.25, True),
                            gate("family_minimum[effect]", 0.5, 0.4, True, kind="normalized effect"),
                            gate("normalized_effect", 0.55, 0.3, False),
                            # A prompt-count sub-check is another quantity: never drawn as a floor.
                            gate("stratum_minimum", 1.0, 2.0, False, comparison=">="),
                            gate("seed_replication", 2.0, 2.0, True, comparison=">=")]},
            "fingerprint": {"hash": "h", "parts": {}}, "artifacts": {}, "files": files}


def floor_lines(ax) -> dict[float, str]:
    return {line.get_ydata()[0]: line.get_label() for line in ax.get_lines()
            if line.get_linestyle() == "--" and line.get_label().startswith("floor")}


def bars(ax) -> list:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def whiskers(ax) -> list:
    return [c for c in ax.collections if isinstance(c, LineCollection)]


def test_figure_has_error_bars_and_the_gates_floors_on_their_own_panels():
    fig = figure_for(rows_for_claim(), payload())
    movement, gap, effect, seeds = fig.axes[:4]
    assert floor_lines(movement) == {0.05: "floor 0.05: signed_effect pass"}
    assert floor_lines(gap) == {0.25: "floor 0.25: specificity_gap pass"}
    assert floor_lines(effect) == {0.3: "floor 0.3: normalized_effect FAIL", 0.4: "floor 0.4: family_minimum[effect] pass"}
    assert 2.0 not in floor_lines(movement)  # the '>=' prompt-count sub-check of stratum_minimum
    for ax in (movement, gap, effect, seeds):
        assert whiskers(ax), ax.get_title()  # every panel's bars carry confidence intervals
    assert "Normalized effect" in effect.get_title() and effect.get_ylabel() == "normalized effect"
    assert "seed_replication 2 >= 2 seeds" in seeds.get_title()
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "c [heldout]: verdict CANDIDATE (claimed candidate; test passed)" in texts
    assert "failing gates (2 of 6): normalized_effect, stratum_minimum" in texts
    assert "metric: not recorded with the rows" in texts and "predicted direction: carries" in texts


def test_error_bars_are_the_prompt_clustered_interval():
    rows = rows_for_claim()
    fig = figure_for(rows, payload())
    movement = fig.axes[0]
    claimed = [r for r in rows if r.unit_set == "target" and r.family == "long"]
    ci = clustered_ci(claimed, lambda r: directed_effect(r, "carries"))
    bar = bars(movement)[0]  # claimed units, first family ("long")
    assert bar.patches[0].get_height() == pytest.approx(ci["mean"])
    segments = whiskers(movement)[0].get_segments()
    assert segments[0][0][1] == pytest.approx(ci["ci_low"]) and segments[0][1][1] == pytest.approx(ci["ci_high"])


def test_movement_is_signed_when_the_claim_has_a_direction_and_absolute_without_one():
    rows = rows_for_claim()  # ablations that lower the metric: "carries" predicts exactly that
    signed = figure_for(rows, payload(direction="carries")).axes[0]
    assert bars(signed)[0].patches[0].get_height() > 0.9
    wrong_way = figure_for(rows, payload(direction="increase")).axes[0]
    assert bars(wrong_way)[0].patches[0].get_height() < -0.9  # moved against the prediction: below zero
    unsigned = figure_for(rows, payload(direction=None)).axes[0]
    assert bars(unsigned)[0].patches[0].get_height() > 0.9 and "no direction" in unsigned.get_ylabel()


def test_metric_is_named_when_the_claim_records_it():
    p = payload()
    p["artifacts"] = {"metric": "logit_diff"}
    texts = " ".join(t.get_text() for t in figure_for(rows_for_claim(), p).texts)
    assert "metric logit_diff (target - foil logit difference)" in texts


def test_floors_skip_other_quantities_and_merge_nothing_across_panels():
    p = payload(gates=[gate("family_minimum", 0.0, 0.0, False, kind="effect minus hardest control"),
                       gate("family_minimum", 0.1, 0.2, True, kind="specificity gap")])
    assert panel_floors(p, "effect") == {}
    assert panel_floors(p, "gap") == {0.2: ["family_minimum pass"]}
    assert panel_floors(None, "gap") == {}


def test_effect_only_rows_draw_without_a_gap_panel(tmp_path):
    rows = effect_rows({"pos": 0.8, "ctl_a": 0.05})
    fig = figure_for(rows, payload(gates=[]))
    gap_texts = [t.get_text() for t in fig.axes[1].texts]
    assert any("no paired control" in t for t in gap_texts)
    assert whiskers(fig.axes[2]) and "(control family)" in " ".join(t.get_text() for t in fig.axes[2].get_xticklabels())
    assert fig.axes[3].get_ylabel() == "normalized effect"


def test_figure_png_is_deterministic(tmp_path):
    rows = rows_for_claim()
    a = claim_figure(rows, "c", tmp_path / "a.png", payload=payload()).read_bytes()
    b = claim_figure(list(reversed(rows)), "c", tmp_path / "b.png", payload=payload()).read_bytes()
    assert a == b and a.startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------------------------------------
# report.json schema
# ------------------------------------------------------------------------------------------------------------------

def report_data():
    rows = rows_for_claim()
    return report.claim_report_data(payload(), rows, run_id="r1")


def test_report_json_carries_the_schema_version_and_validates():
    data = report_data()
    assert data["schema"] == REPORT_SCHEMA == "pytest-mechclaim/report/1"
    assert validate_report(json.loads(json.dumps(data, default=str))) is not None
    assert f"report schema: `{REPORT_SCHEMA}`" in report.claim_report_markdown(data)


@pytest.mark.parametrize("breaks, message", [
    (lambda d: d.pop("schema"), "schema: Field required"),
    (lambda d: d.update(schema="pytest-mechclaim/report/0"), "schema: Input should be 'pytest-mechclaim/report/1'"),
    (lambda d: d["verdict"].update(status="probably"), "verdict.status: Input should be"),
    (lambda d: d["verdict"]["gates"][0].update(passed="yes"), "verdict.gates.0.passed: Input should be a valid boolean"),
    (lambda d: d.update(outcome="xpassed"), "outcome: Input should be 'passed', 'failed' or 'skipped'"),
    (lambda d: d.update(extra_field=1), "extra_field: Extra inputs are not permitted"),
    (lambda d: d["counterexamples"].update(count=-1), "counterexamples.count: Input should be greater than"),
])
def test_a_malformed_report_is_refused_with_the_field_named(breaks, message):
    data = copy.deepcopy(report_data())
    breaks(data)
    with pytest.raises(ReportSchemaError, match="report.json of claim 'c' does not match pytest-mechclaim/report/1") \
            as err:
        validate_report(data)
    assert message in str(err.value)


def test_claim_report_data_refuses_a_payload_it_cannot_report():
    bad = payload()
    bad["outcome"] = "maybe"
    with pytest.raises(ReportSchemaError, match="outcome"):
        report.claim_report_data(bad, rows_for_claim())
    with pytest.raises(ReportSchemaError, match="must be a dict"):
        validate_report([])


# ------------------------------------------------------------------------------------------------------------------
# per-run index
# ------------------------------------------------------------------------------------------------------------------

def records():
    files = lambda c, s: {"report_md": f"claims/{c}/{s}/report.md", "figure": f"claims/{c}/{s}/figure.png"}
    true = payload(files=files("c", "heldout"))
    false = payload(status="falsified", expect="rejected", files=files("d", "heldout"),
                    gates=[gate("specificity_gap", -0.2, 0.0, False), gate("norm_drift", 0.1, 0.5, True, "<")])
    false["claim"] = dict(false["claim"], id="d")
    false["nodeid"] = "claims/test_d.py::test_heldout"
    broken = payload(outcome="failed", files={"report_md": "claims/e/-/report.md"})
    broken.update(claim=dict(broken["claim"], id="e"), stage=None, key="test_e", verdict=None,
                  nodeid="claims/test_e.py::test_e", error="RuntimeError: model missing")
    return [false, broken, true]


def test_run_index_lists_every_claim_test_with_its_figure(tmp_path):
    path = write_run_index(tmp_path / "run-1", records())
    text = path.read_text()
    assert path.name == "index.md" and text.startswith("# Run `run-1`")
    assert "3 claim test(s): 2 judged, 1 not judged; 1 test(s) failed." in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in table] == ["| c", "| d", "| e"]  # sorted by claim, like verdicts.json
    assert "| c | heldout | candidate | **CANDIDATE** | passed | normalized\\_effect, stratum\\_minimum |" in text
    assert "| d | heldout | planted false \\(expect rejected\\) | **FALSIFIED** | passed | specificity\\_gap |" in text
    assert "| e | - | candidate | **NOT JUDGED** | failed | - | [report.md](<claims/e/-/report.md>) |" in text
    for claim in ("c", "d"):
        assert f"![figure of {claim} \\[heldout\\]](<claims/{claim}/heldout/figure.png>)" in text
        assert f"[report.md](<claims/{claim}/heldout/report.md>)" in text
    assert "Not judged: RuntimeError: model missing" in text


def test_run_index_says_why_a_judged_test_has_no_figure():
    rec = payload(files={"report_md": "claims/c/heldout/report.md"})
    assert "No figure (figures are off: mechclaim_figures = false)." in run_index_markdown("r", [rec])


def test_run_index_escapes_claim_text():
    rec = payload()
    rec["claim"] = dict(rec["claim"], id="x|y", statement="<img src=x> [a](b)")
    text = run_index_markdown("r", [rec])
    assert "| x\\|y |" in text and "\\<img src=x\\> \\[a\\]\\(b\\)" in text


def test_write_claim_test_stores_a_validated_report_and_a_figure(tmp_path):
    from pytest_mechclaim.runs import write_claim_test

    files = write_claim_test(tmp_path, "r1", payload(), rows_for_claim())
    data = json.loads((tmp_path / files["report_json"]).read_text())
    assert data["schema"] == REPORT_SCHEMA and validate_report(data) is data
    assert (tmp_path / files["figure"]).read_bytes().startswith(b"\x89PNG")


def test_the_controller_writes_index_md_listing_every_claim_test(pytester):
    pytester.makeini("[pytest]\nstrict = true\n")
    pytester.makepyfile(test_two='''
        import pytest
        from pytest_mechclaim.evidence import EvidenceRow

        def rows(target, control):
            return [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{i}", family="f",
                                control_suite="matched", seed=i % 2, target_delta=target, control_delta=control)
                    for i in range(8)]

        @pytest.mark.claim("weak", statement="L1H0 moves the target", level="candidate")
        def test_weak(mechclaim):
            mechclaim.gate.specificity_gap(mechclaim.record(rows(0.1, 0.9)), direction="either")

        @pytest.mark.claim("planted", statement="L1H0 moves the target", level="candidate", expect="rejected")
        def test_planted(mechclaim):
            mechclaim.gate.specificity_gap(mechclaim.record(rows(0.1, 0.9)), direction="either")
    ''')
    result = pytester.runpytest("--mechclaim-run-id=r")
    result.assert_outcomes(passed=1, failed=1)
    run = pytester.path / ".mechclaim" / "runs" / "r"
    index = (run / "index.md").read_text()
    assert "2 claim test(s): 2 judged, 0 not judged; 1 test(s) failed." in index
    for claim in ("weak", "planted"):
        assert index.count(f"| {claim} | - |") == 1
        figure = f"claims/{claim}/test_{claim}/figure.png"
        assert f"](<{figure}>)" in index and (run / figure).is_file()


def test_drawing_never_imports_pyplot(tmp_path):
    """pyplot would pick a global backend (a GUI one on a desktop) and keep every figure alive in its registry."""
    import subprocess
    import sys

    code = ("import sys; from tests.test_figures import rows_for_claim, payload; "
            "from pytest_mechclaim.figures import claim_figure; "
            f"claim_figure(rows_for_claim(), 'c', {str(tmp_path / 'f.png')!r}, payload=payload()); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
