"""What CI can trust: a misspelt ledger path is an error, strict mode fails on claim stages that were not judged,
INTERNALERROR and interruptions never write the ledger, run records say truthfully how a session ended.

Inner projects record synthetic rows (no torch); their verdicts do not matter here, only what the session does.
"""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

CLAIM = '''
import os
import pytest
from pytest_mechclaim.evidence import EvidenceRow

pytestmark = pytest.mark.claim("c-{name}", statement="L1H0 moves the target", level="insufficient"{extra})


@pytest.fixture
def model():
    if os.environ.get("SKIP_MODEL"):
        pytest.skip("the offline model package is not installed")
    return "model"


@pytest.mark.heldout
def test_heldout(mechclaim, model):
    if os.environ.get("INTERRUPT"):
        raise KeyboardInterrupt
    if os.environ.get("HARD_EXIT"):
        os._exit(3)
    ev = mechclaim.record([EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"p{{i}}", family="f",
                                       control_suite="matched", seed=0, target_delta=0.9, control_delta=0.1,
                                       prompt=f"prompt {{i}}") for i in range(4)])
    mechclaim.gate.specificity_gap(ev, min=0.1)
'''


@pytest.fixture
def project(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\n")
    return pytester


def write_claim(pytester, name="a", extra=""):
    pytester.makepyfile(**{f"test_claim_{name}": CLAIM.format(name=name, extra=extra)})


def ledger_path(pytester):
    return pytester.path / "mechclaim-ledger.json"


def runs(pytester):
    root = pytester.path / ".mechclaim" / "runs"
    return [json.loads((d / "run.json").read_text()) for d in sorted(root.iterdir())] if root.exists() else []


# -- the ledger path ---------------------------------------------------------------------------------------------


def test_a_misspelt_ledger_path_is_an_error_not_a_silent_pass(project):
    write_claim(project)
    result = project.runpytest("--mechclaim-ledger", "mechclaim-ledgr.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*claim ledger*mechclaim-ledgr.json does not exist*--mechclaim-update-ledger*"])


def test_a_misspelt_ini_ledger_path_is_an_error_too(project):
    project.makeini("[pytest]\nmechclaim_figures = false\nmechclaim_ledger = ledgr.json\n")
    write_claim(project)
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ledgr.json does not exist (configured by the mechclaim_ledger ini key)*"])


def test_the_default_path_may_be_absent_and_the_run_says_nothing_was_compared(project):
    write_claim(project)
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*no claim ledger at mechclaim-ledger.json: statuses were not compared*"])


def test_an_explicit_new_ledger_path_is_fine_when_recording_it(project):
    write_claim(project)
    result = project.runpytest("--mechclaim-ledger", "new-ledger.json", "--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.OK
    assert (project.path / "new-ledger.json").is_file()


# -- strict mode -------------------------------------------------------------------------------------------------


def test_strict_mode_fails_a_claim_skipped_for_a_missing_offline_model(project, monkeypatch):
    write_claim(project)
    monkeypatch.setenv("SKIP_MODEL", "1")
    lenient = project.runpytest()
    assert lenient.ret == pytest.ExitCode.OK
    # Skipped in fixture setup, the claim is still in the verdict table and counted as not judged.
    lenient.stdout.fnmatch_lines(["*c-a*heldout*skipped*skip*", "*1 claim test(s) not judged*"])
    strict = project.runpytest("--mechclaim-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["*mechclaim ledger: FAILED*",
                                 "STRICT*test_claim_a.py::test_heldout was not judged (skipped: *offline model*"])


def test_strict_mode_from_ini(project, monkeypatch):
    project.makeini("[pytest]\nmechclaim_figures = false\nmechclaim_strict = true\n")
    write_claim(project)
    monkeypatch.setenv("SKIP_MODEL", "1")
    assert project.runpytest().ret == pytest.ExitCode.TESTS_FAILED


def test_strict_mode_accepts_a_skip_the_claim_declares(project, monkeypatch):
    write_claim(project, extra=', requires=["hub"]')
    monkeypatch.setenv("SKIP_MODEL", "1")
    result = project.runpytest("--mechclaim-strict")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 claim test(s) not judged (1 skipped for a declared requirement)*"])


def test_strict_mode_passes_when_every_claim_stage_was_judged(project):
    write_claim(project)
    assert project.runpytest("--mechclaim-strict").ret == pytest.ExitCode.OK


# -- sessions that do not finish ---------------------------------------------------------------------------------


def record_ledger(project):
    write_claim(project)
    assert project.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    return ledger_path(project).read_bytes()


def test_an_internal_error_never_writes_the_ledger(project):
    before = record_ledger(project)
    write_claim(project, name="b")  # a new claim stage the update would add
    project.makeconftest("def pytest_runtest_logfinish(nodeid, location):\n"
                         "    if 'claim_b' in nodeid:\n        raise RuntimeError('plugin bug')\n")
    result = project.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert ledger_path(project).read_bytes() == before
    assert sorted(r["status"] for r in runs(project)) == ["complete", "crashed"]


def test_an_interrupt_during_the_first_claim_test_keeps_the_run_record_and_not_the_ledger(project, monkeypatch):
    before = record_ledger(project)
    monkeypatch.setenv("INTERRUPT", "1")
    # In a subprocess: pytester's in-process run hands a KeyboardInterrupt on to the outer session.
    result = project.runpytest_subprocess("--mechclaim-update-ledger", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert ledger_path(project).read_bytes() == before
    assert sorted(r["status"] for r in runs(project)) == ["complete", "interrupted"]


def test_a_crashed_xdist_worker_marks_the_run_crashed_and_writes_no_ledger(project, monkeypatch):
    before = record_ledger(project)
    monkeypatch.setenv("HARD_EXIT", "1")
    result = project.runpytest_subprocess("-n", "2", "--mechclaim-update-ledger", "-p", "no:cacheprovider")
    assert result.ret != pytest.ExitCode.OK
    assert ledger_path(project).read_bytes() == before
    assert sorted(r["status"] for r in runs(project)) == ["complete", "crashed"]
