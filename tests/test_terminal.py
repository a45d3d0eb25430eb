"""Terminal conventions: --tb=line/short/long for failing claims, -q/-qq summary tables, the closing line naming a
ledger failure, -W error, and JUnit properties without warnings under xunit1 and xunit2."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

CLAIM = '''
import pytest
from pytest_mechclaim.evidence import EvidenceRow

pytestmark = pytest.mark.claim("c-term", statement="L1H0 moves the target", level="candidate", units=["L1H0"])


def rows(target, control):
    return [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{{f}}{{s}}{{i}}", family=f"f{{f}}",
                        control_suite="matched", seed=s, target_delta=target, control_delta=control,
                        prompt=f"prompt {{f}} {{s}} {{i}}")
            for f in range(2) for s in range(3) for i in range(4)]


@pytest.mark.heldout
def test_heldout(mechclaim):
    # Controls move far more than the target: falsified whatever else the policy asks for.
    mechclaim.record(rows(target={target}, control=0.9))


@pytest.mark.replication
def test_replication(mechclaim):
    mechclaim.record(rows(target={target}, control=0.9))
'''


@pytest.fixture
def project(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\n")
    pytester.makepyfile(test_claim=CLAIM.format(target=-0.1))
    return pytester


def failures_section(lines: list[str]) -> list[str]:
    start = next(i for i, l in enumerate(lines) if re.match(r"^=+ FAILURES =+$", l))
    end = next(i for i, l in enumerate(lines[start + 1:], start + 1) if re.match(r"^=+ .* =+$", l))
    # xdist heads each report with the worker's platform line ("[gw0] linux -- Python ..."): pytest's, not ours.
    return [l for l in lines[start + 1:end] if l.strip() and not l.startswith("[gw")]


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_tb_line_is_one_line_per_failing_claim_stage(project, xdist):
    result = project.runpytest_subprocess("--tb=line", "-p", "no:cacheprovider", *xdist)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    section = failures_section(result.outlines)
    assert len(section) == 2, section
    for line in section:
        assert re.search(r"test_claim\.py:\d+: c-term \[(heldout|replication)\] FALSIFIED \(claimed candidate\): "
                         r"\S+ -?[\d.e-]+ \S+ \S+ caps at falsified", line), line


def test_tb_short_is_verdict_reasons_and_gate_table(project):
    result = project.runpytest("--tb=short")
    text = result.stdout.str()
    section = failures_section(result.outlines)
    assert "verdict FALSIFIED (claimed candidate)" in text
    assert any(l.startswith("gate ") and "threshold" in l for l in section)
    assert "worst rows for" not in text and "rerun:" not in text
    assert len(section) < 60


def test_default_tb_is_the_full_report(project):
    result = project.runpytest()
    text = result.stdout.str()
    assert "worst rows for" in text and "rerun:" in text


def test_quiet_summary_tables(project):
    normal = project.runpytest("--tb=no")
    normal.stdout.fnmatch_lines(["*mechclaim: 2 claim verdicts*", "claim*stage*claimed*verdict*", "c-term*heldout*"])
    quiet = project.runpytest("--tb=no", "-qq")
    text = quiet.stdout.str()
    assert "claim  " not in text  # no table header
    quiet.stdout.fnmatch_lines(["2 falsified; 0 of 2 tests ok"])


def test_the_closing_line_states_a_ledger_failure(pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\n")
    pytester.makepyfile(test_claim=CLAIM.format(target=-0.1).replace('level="candidate"', 'level="candidate", '
                                                                       'expect="rejected"'))
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    # Same claim, other numbers: the tests still pass (still rejected) but the statuses moved.
    # (target 1.5 beats its controls: falsified -> insufficient, held there by the debts of this thin evidence)
    pytester.makepyfile(test_claim=CLAIM.format(target=1.5).replace('level="candidate"', 'level="candidate", '
                                                                      'expect="rejected"'))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    last = result.outlines[-1]
    assert re.search(r"2 passed.*, 2 ledger-changed", last), last


GT_CLAIM = '''
import pytest
from pytest_mechclaim.engine import head_evidence
from pytest_mechclaim.groundtruth import build_induction_model, induction_tasks

pytestmark = pytest.mark.claim("gt-w", statement="L1H0 is the induction head", level="insufficient",
                               units=["L1H0"], model="groundtruth:induction")


@pytest.mark.replication
def test_replication(mechclaim):
    model = build_induction_model()
    mechclaim.record(head_evidence(model, [t for s in (0, 1) for t in induction_tasks(s, n_per_family=4)], ["L1H0"]))
'''


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_warnings_as_errors_on_a_ground_truth_claim_and_junit_without_warnings(pytester, family):
    """TL's HookedTransformer deprecation is silenced around the plugin's own calls only, so ``-W error`` runs a
    ground-truth claim; the handle no longer requests ``record_property`` (xunit2 warned on every claim test)."""
    pytester.makeini(f"[pytest]\nmechclaim_figures = false\njunit_family = {family}\n")
    pytester.makepyfile(test_gt=GT_CLAIM)
    result = pytester.runpytest_subprocess("-W", "error", "--junitxml=out.xml", "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert "Warning" not in text, text
    assert result.ret == pytest.ExitCode.OK, text
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="mechclaim.verdict"' in xml


def test_users_still_see_the_deprecation_in_their_own_code(pytester):
    pytester.makepyfile(test_own='''
import warnings
from transformer_lens import HookedTransformer, HookedTransformerConfig

def test_builds_a_hooked_transformer():
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_ctx=4, d_vocab=5, attn_only=True,
                                  act_fn=None, normalization_type=None)
    HookedTransformer(cfg)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*DeprecationWarning: HookedTransformer is deprecated*"])


# -- run records: comparison, drift failure, retention -------------------------------------------------------------


def test_compare_prints_metric_changes_and_compare_fail_fails_only_beyond_the_tolerance(pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\n")
    rejected = CLAIM.replace('level="candidate"', 'level="candidate", expect="rejected"')
    pytester.makepyfile(test_claim=rejected.format(target=-0.1))
    assert pytester.runpytest().ret == pytest.ExitCode.OK
    pytester.makepyfile(test_claim=rejected.format(target=-0.12))
    shown = pytester.runpytest("--mechclaim-compare")
    assert shown.ret == pytest.ExitCode.OK
    shown.stdout.fnmatch_lines(["*mechclaim compare against 2026*", "c-term ?heldout] signed_effect: -0.1 -> -0.12*"])
    # The signed effect moved by 0.02: a tolerance of 0.05 passes, 0.01 (or 5%) fails the session.
    assert pytester.runpytest("--mechclaim-compare-fail=signed_effect:0.05").ret == pytest.ExitCode.OK
    pytester.makepyfile(test_claim=rejected.format(target=-0.14))
    failed = pytester.runpytest("--mechclaim-compare-fail=signed_effect:5%")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    failed.stdout.fnmatch_lines(["*signed_effect: -0.12 -> -0.14*FAIL signed_effect:5%*"])
    assert re.search(r"metric-drift", failed.outlines[-1])


def test_compare_fail_rejects_a_malformed_tolerance(pytester):
    result = pytester.runpytest("--mechclaim-compare-fail=signed_effect:-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*expected METRIC:TOLERANCE*"])


def test_retention_keeps_the_newest_runs_and_no_runs_dir_without_claims(pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\nmechclaim_keep_runs = 2\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    assert pytester.runpytest().ret == pytest.ExitCode.OK
    assert not (pytester.path / ".mechclaim").exists()
    pytester.makepyfile(test_claim=CLAIM.replace('level="candidate"', 'level="candidate", expect="rejected"')
                        .format(target=-0.1))
    for _ in range(4):
        pytester.runpytest()
    runs = sorted(p.name for p in (pytester.path / ".mechclaim" / "runs").iterdir())
    assert len(runs) == 2
