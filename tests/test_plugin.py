"""The plugin seen from pytest: markers, collection errors, verdict -> outcome, reports, JUnit, -m, xdist."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

ROWS = '''
from pytest_mechclaim.evidence import EvidenceRow

def rows(target, control, families=("f1", "f2"), seeds=(0, 1, 2), unit="L1H0", unit_set="target"):
    # Head evidence as the engine writes it: clean_to_corrupt raises target - foil by ``target`` (corrupt run),
    # zero ablation lowers it (clean run); matched controls move by ``control``; strata for the worst-stratum gate.
    out = []
    for f in families:
        for s in seeds:
            for suite in ("matched", "lexical"):
                for i in range(3):
                    for op, run, sign in (("clean_to_corrupt", "corrupt", 1), ("zero", "clean", -1)):
                        base = 0.0 if run == "corrupt" else 2.0
                        out.append(EvidenceRow(
                            unit=unit, unit_set=unit_set, intervention=op, run=run, prompt_id=f"{f}-{s}-{i}",
                            family=f, control_suite=suite, seed=s, clean=2.0, corrupt=0.0,
                            patched=base + sign * target, target_delta=sign * target, control_delta=control,
                            norm_drift=0.05, decoded_delta_ratio=0.05, prompt=f"prompt {f} {s} {i}",
                            strata=(("length_bin", "short" if i % 2 else "long"),)))
    return out

def comparison(families=("f1", "f2"), seeds=(0, 1, 2)):
    return rows(0.02, 0.02, families, seeds, unit="L0H1", unit_set="random_comparison")
'''

CLAIM_TEMPLATE = '''
import pytest
from rowkit_local import comparison, rows

pytestmark = pytest.mark.claim({claim_args}, units=["L1H0"])

@pytest.mark.replication
def test_replication(mechclaim):
    ev = mechclaim.record(rows({target}, {control}))
    mechclaim.record(comparison())
    mechclaim.gate.specificity_gap(ev, min=0.0)
    mechclaim.gate.family_minimum(ev, min=0.0)

@pytest.mark.heldout
def test_heldout(mechclaim):
    mechclaim.record(rows({target}, {control}, families=("h1", "h2"), seeds=(10, 11)))
    mechclaim.record(comparison(families=("h1", "h2"), seeds=(10, 11)))
'''


@pytest.fixture
def project(pytester: pytest.Pytester):
    pytester.makepyfile(rowkit_local=ROWS)
    pytester.makeini("[pytest]\nstrict = true\njunit_family = xunit1\n")

    def claim(name, claim_args, target=0.9, control=0.1):
        pytester.makepyfile(**{name: CLAIM_TEMPLATE.format(claim_args=claim_args, target=target, control=control)})

    return claim


def test_options_and_markers_are_registered(pytester):
    help_text = pytester.runpytest("--help").stdout.str()
    for option in ("--mechclaim-device", "--mechclaim-threads", "--mechclaim-offline", "--mechclaim-cache-dir"):
        assert option in help_text
    markers = pytester.runpytest("--markers").stdout.str()
    for marker in ("@pytest.mark.claim(", "@pytest.mark.heldout", "@pytest.mark.discovery",
                   "@pytest.mark.calibration", "@pytest.mark.replication", "@pytest.mark.characterization"):
        assert marker in markers


def test_supported_claim_passes_in_strict_mode_and_prints_the_table(project, pytester):
    project("test_true_claim.py", '"true-claim", statement="L1H0 does it", level="candidate"')
    result = pytester.runpytest("--strict-markers", "-W", "error::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mechclaim: 2 claim verdicts*", "*true-claim*heldout*candidate*candidate*ok*",
                                 "*true-claim*replication*candidate*candidate*ok*"])


def test_claim_below_its_level_fails_with_a_report(project, pytester):
    project("test_weak.py", '"weak-claim", statement="L1H0 does it", level="candidate"', target=0.3, control=0.5)
    result = pytester.runpytest("-k", "replication")
    result.assert_outcomes(failed=1, deselected=1)
    out = result.stdout.str()
    assert "claim weak-claim [replication]: verdict FALSIFIED (claimed candidate)" in out
    assert "specificity_gap: controls move at least as much as the target" in out
    assert "gate" in out and "threshold" in out and "caps at" in out
    assert "worst rows for specificity_gap:" in out
    assert "family=f1" in out and "control_suite=" in out and "seed=0" in out and "prompt: 'prompt f1 0 0'" in out
    assert "rerun: python -m pytest test_weak.py::test_replication" in out
    # The report is the failure message itself, not a traceback through plugin internals.
    assert "pytest_runtest_call" not in out


def test_planted_false_claim_passes_only_when_rejected(project, pytester):
    project("test_decoy.py", '"decoy", statement="the decoy does it", expect="rejected"', target=0.0, control=0.0)
    pytester.runpytest().assert_outcomes(passed=2)


def test_planted_false_claim_that_is_not_rejected_fails(project, pytester):
    project("test_decoy.py", '"decoy", statement="the decoy does it", expect="rejected"', target=0.9, control=0.1)
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    assert "verdict CANDIDATE (expected rejected)" in result.stdout.str()


def test_blocked_claim_is_an_error_not_a_failure_or_pass(pytester):
    pytester.makeini("[pytest]\nstrict = true\n")
    pytester.makepyfile(test_blocked='''
        import pytest
        from pytest_mechclaim.evidence import EvidenceRow
        pytestmark = pytest.mark.claim("blocked-claim", statement="s", level="insufficient", units=["L1H1"])

        def test_layer_patch_for_a_head(mechclaim):
            # A residual-stream patch is never head evidence: nothing supports the claim.
            ev = mechclaim.record([EvidenceRow(unit="L1H1", intervention="clean_to_corrupt", prompt_id="p",
                                               family="f", scope="full_resid_post_layer", target_delta=1.0,
                                               control_delta=0.0)])
            mechclaim.gate.specificity_gap(ev)

        def test_no_gates(mechclaim):
            mechclaim.record([])
    ''')
    result = pytester.runpytest("-v")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*test_layer_patch_for_a_head BLOCKED*", "*test_no_gates BLOCKED*",
                                 "*blocked-claim*blocked*FAIL*"])
    assert "no recorded row supports this head claim" in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_missing_controls_are_a_debt_not_a_block(pytester):
    # Formerly blocked; the policy records what the rows cannot show as a debt capping the verdict at insufficient.
    pytester.makepyfile(test_nocontrols='''
        import pytest
        from pytest_mechclaim.evidence import EvidenceRow
        pytestmark = pytest.mark.claim("no-controls", statement="s", level="candidate", units=["L1H0"])

        def test_no_controls(mechclaim):
            mechclaim.record([EvidenceRow(unit="L1H0", intervention="zero", run="clean", prompt_id=f"p{i}",
                                          family="f", target_delta=-1.0) for i in range(4)])
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "verdict INSUFFICIENT" in out
    assert "DEBT specificity_gap (rows_cannot_show): no supporting row has a paired control delta" in out


def test_junit_xml_carries_gate_values(project, pytester):
    project("test_true_claim.py", '"true-claim", statement="s"')
    pytester.runpytest("--junitxml=out.xml")
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="mechclaim.gate.specificity_gap.value" value="0.8' in xml
    assert 'name="mechclaim.verdict" value="candidate"' in xml


def test_marker_expression_selects_heldout_stages(project, pytester):
    project("test_true_claim.py", '"true-claim", statement="s"')
    result = pytester.runpytest("-m", "heldout", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_heldout PASSED*"])


@pytest.mark.parametrize(
    "claim_args, message",
    [
        ('statement="no id"', "needs exactly one positional argument, the claim id"),
        ('"bad level", statement="s", level="certain"', "malformed"),
        ('"ok-id", statement="s", level="certain"', "unknown level 'certain'"),
        ('"ok-id", level="candidate"', "statement= is required"),
        ('"ok-id", statement="s", levle="candidate"', "unknown marker arguments ?'levle'?"),
        ('"ok-id", statement="s", expect="maybe"', "expect must be one of"),
        ('"ok-id", statement="s", waive={"unit_controls": ""}', "the waiver of 'unit_controls' needs a reason"),
        ('"ok-id", statement="s", waive={"no_such_gate": "why"}', "waive= names gates the policy does not require"),
        ('"ok-id", statement="s", direction="sideways"', "direction must be one of"),
    ],
)
def test_malformed_claim_marker_is_one_clear_collection_error(project, pytester, claim_args, message):
    project("test_bad.py", claim_args)
    result = pytester.runpytest()
    # A collection error of that file (the same under xdist: tests/test_input_validation.py).
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*", "*malformed claim marker*",
                                 f"*test_bad.py: *{message}*"])


def test_duplicate_claim_id_across_modules_is_an_error(project, pytester):
    project("test_one.py", '"same-id", statement="s"')
    project("test_two.py", '"same-id", statement="s"')
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*test_two.py: claim id 'same-id' is already declared in test_one.py*"])


def test_a_claim_test_that_never_uses_mechclaim_fails(pytester):
    pytester.makepyfile(test_lazy='''
        import pytest
        pytestmark = pytest.mark.claim("lazy", statement="s", units=["L1H0"])

        def test_forgot_the_fixture():
            assert True
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    assert "never used the mechclaim fixture" in result.stdout.str()


def test_debts_and_the_policy_are_in_the_report_and_the_run_record(project, pytester):
    project("test_waived.py", '"waived-claim", statement="s", waive={"unit_controls": "no comparison heads"}')
    result = pytester.runpytest("-k", "replication")
    result.assert_outcomes(failed=1, deselected=1)
    out = result.stdout.str()
    assert "verdict INSUFFICIENT (claimed candidate)" in out
    assert "policy: kind head, stage replication, level candidate, direction carries" in out
    assert "DEBT unit_controls (waived): waived by the claim: no comparison heads" in out
    assert "debt:unit_controls" in out  # the summary table
    import json
    (verdicts,) = pytester.path.glob(".mechclaim/runs/*/verdicts.json")
    (record,) = json.loads(verdicts.read_text())
    assert record["debts"] == [{"gate": "unit_controls", "kind": "waived", "caps_at": "insufficient",
                                "reason": "waived by the claim: no comparison heads"}]
    assert record["verdict"]["policy"]["kind"] == "head"


def test_the_policy_can_be_tightened_in_ini_never_loosened(project, pytester):
    project("test_true_claim.py", '"true-claim", statement="s"')
    pytester.makeini("[pytest]\nmechclaim_policy_tighten =\n    specificity_gap.min = 0.85\n")
    result = pytester.runpytest("-k", "replication")
    result.assert_outcomes(failed=1, deselected=1)
    assert "project tightenings: specificity_gap.min = 0.85" in result.stdout.str()
    pytester.makeini("[pytest]\nmechclaim_policy_tighten = specificity_gap.min = -1\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mechclaim_policy_tighten*would loosen*"])


def test_fixture_without_claim_marker_is_an_error(pytester):
    pytester.makepyfile(test_nomark="def test_x(mechclaim):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    assert "needs a claim marker" in result.stdout.str()


def test_a_claim_that_crashes_before_its_verdict_still_appears_in_the_table(pytester):
    pytester.makepyfile(test_crash='''
        import pytest
        pytestmark = pytest.mark.claim("crashy", statement="s")

        def test_crash(mechclaim):
            raise RuntimeError("model exploded")
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*crashy*error*FAIL*RuntimeError: model exploded*"])


def test_a_skipped_claim_is_listed_as_skipped_not_as_an_error(pytester):
    pytester.makepyfile(test_skip='''
        import pytest
        pytestmark = pytest.mark.claim("hub-only", statement="s")

        def test_needs_hub(mechclaim):
            pytest.skip("model 'gpt2-small' needs the model hub")
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*hub-only*candidate*skipped*skip*Skipped: model 'gpt2-small' needs the model hub*"])


def test_gates_after_the_verdict_are_refused():
    from pytest_mechclaim.fixture import MechClaim
    from pytest_mechclaim.spec import parse_claim_marker

    handle = MechClaim(parse_claim_marker(("c",), {"statement": "s"}))
    handle.verdict()
    with pytest.raises(RuntimeError, match="already computed"):
        handle.gate.specificity_gap([])


def test_xdist_controller_table_is_complete(project, pytester):
    for i in range(3):
        project(f"test_claim_{i}.py", f'"claim-{i}", statement="s"')
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    assert "mechclaim: 6 claim verdicts" in out
    for i in range(3):
        assert out.count(f"claim-{i} ") == 2
