"""The ledger seen from pytest: snapshot gating, update, refused rises, selection, xdist, run records, crash safety.

Claim modules here record synthetic rows (no torch), so every inner run is quick. Numbers are chosen so a status
changes while the claim's test still passes (a planted false claim, expect="rejected", passes as falsified or as
insufficient), isolating the ledger's own verdict on the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pytest_mechclaim import ledger as ledger_mod

pytest_plugins = ["pytester"]

CLAIM = '''
import pytest
from pytest_mechclaim.evidence import EvidenceRow

TARGET, CONTROL, MIN = {target}, {control}, {min}


def rows(families, seeds):
    return [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"{{f}}-{{s}}-{{i}}", family=f,
                        control_suite=suite, seed=s, target_delta=TARGET, control_delta=CONTROL, norm_drift=0.05,
                        prompt=f"prompt {{f}} {{s}} {{i}}")
            for f in families for s in seeds for suite in ("matched", "lexical") for i in range(3)]


pytestmark = pytest.mark.claim("{claim}", statement="L1H0 moves the target more than its controls",
                               level="insufficient", expect="rejected")


@pytest.mark.replication
def test_replication(mechclaim):
    ev = mechclaim.record(rows(("f1", "f2"), (0, 1, 2)))
    mechclaim.gate.specificity_gap(ev, min=MIN)
    mechclaim.gate.seed_replication(ev, min_passing=2)


@pytest.mark.heldout
def test_heldout(mechclaim):
    ev = mechclaim.record(rows(("h1", "h2"), (10, 11)))
    mechclaim.gate.specificity_gap(ev, min=MIN)
    mechclaim.gate.collateral_ratio(ev)
'''
# Controls below the target: insufficient (the policy caps synthetic rows there). Controls above: falsified (same spec,
# other numbers).
STRONG_ROWS = dict(target=0.9, control=0.1, min=0.1)
WEAK_ROWS = dict(target=0.1, control=0.9, min=0.1)


@pytest.fixture
def project(pytester: pytest.Pytester):
    # Figures are tested in test_reports.py; here they would only cost time.
    pytester.makeini("[pytest]\nstrict = true\nmechclaim_figures = false\n")

    def write(claim="claim-a", module=None, **numbers):
        values = dict(STRONG_ROWS, **numbers)
        pytester.makepyfile(**{module or f"test_{claim.replace('-', '_')}": CLAIM.format(claim=claim, **values)})

    return write


def shows(output, *texts: str) -> None:
    """Every text appears in the output, in order (plain substrings: claim lines contain fnmatch's brackets)."""
    text = output.str()
    position = 0
    for expected in texts:
        found = text.find(expected, position)
        assert found >= 0, f"{expected!r} not found in order in:\n{text}"
        position = found + len(expected)


def read_ledger(pytester) -> dict:
    return json.loads((pytester.path / "mechclaim-ledger.json").read_text())


def stage_status(pytester, claim="claim-a", stage="heldout") -> str:
    return read_ledger(pytester)["claims"][claim]["stages"][stage]["status"]


def test_without_a_ledger_nothing_is_gated_and_update_creates_it(project, pytester):
    project()
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    shows(result.stdout, 'no claim ledger at mechclaim-ledger.json: statuses were not compared')
    assert not (pytester.path / "mechclaim-ledger.json").exists()

    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.OK
    shows(result.stdout, 'NEW      claim-a [heldout]: insufficient', 'ledger mechclaim-ledger.json updated')
    ledger = read_ledger(pytester)
    claim = ledger["claims"]["claim-a"]
    assert claim["status"] == "insufficient" and set(claim["stages"]) == {"heldout", "replication"}
    assert "strong evidence" in claim["forbidden"] and "insufficient evidence" in claim["allowed"]
    entry = claim["stages"]["heldout"]
    assert entry["metrics"]["specificity_gap"] == pytest.approx(0.8)
    assert entry["run"]["id"] in ledger["runs"] and ledger["runs"][entry["run"]["id"]]["versions"]["pytest"]
    assert (pytester.path / "mechclaim-ledger.md").read_text().count("## claim-a") == 1

    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    shows(result.stdout, 'all judged claim stages match the ledger')


def test_status_change_fails_the_run_until_the_ledger_is_updated(project, pytester):
    project()
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    before = (pytester.path / "mechclaim-ledger.json").read_text()

    project(**WEAK_ROWS)  # same spec, weaker evidence: insufficient -> falsified, the claim's test still passes
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    shows(result.stdout, 'mechclaim ledger: FAILED', 'CHANGED  claim-a [heldout]: insufficient -> falsified', 'CHANGED  claim-a [replication]: insufficient -> falsified', '2 claim stage(s) differ from the ledger', '--mechclaim-update-ledger')
    assert (pytester.path / "mechclaim-ledger.json").read_text() == before

    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.OK
    assert stage_status(pytester) == "falsified"
    assert read_ledger(pytester)["claims"]["claim-a"]["status"] == "falsified"
    assert "candidate evidence" in read_ledger(pytester)["claims"]["claim-a"]["forbidden"]
    assert pytester.runpytest().ret == pytest.ExitCode.OK


def test_threshold_change_with_a_status_rise_is_refused_unless_acknowledged(project, pytester):
    project(**WEAK_ROWS)
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    assert stage_status(pytester) == "falsified"

    project(**dict(STRONG_ROWS, min=0.01))  # lower the bar in the run the evidence improved: falsified -> insufficient
    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    shows(result.stdout, 'REFUSED  claim-a [heldout]: falsified -> insufficient rose in the same run as a spec change (gates)', '--mechclaim-ack-spec-change=claim-a:REASON')
    assert stage_status(pytester) == "falsified"

    without_update = pytester.runpytest()
    assert without_update.ret == pytest.ExitCode.TESTS_FAILED
    shows(without_update.stdout, 'CHANGED  claim-a [heldout]: falsified -> insufficient (spec changed: gates)',
          'rose in the same run as a spec change')

    result = pytester.runpytest("--mechclaim-update-ledger",
                                "--mechclaim-ack-spec-change=claim-a:preregistered 0.01 in docs/prereg.md")
    assert result.ret == pytest.ExitCode.OK
    shows(result.stdout, 'ACK      claim-a [heldout]')
    entry = read_ledger(pytester)["claims"]["claim-a"]["stages"]["heldout"]
    assert entry["status"] == "insufficient"
    (ack,) = entry["acknowledged_spec_changes"]
    assert ack["reason"] == "preregistered 0.01 in docs/prereg.md"
    assert (ack["from_status"], ack["to_status"], ack["changed_parts"]) == ("falsified", "insufficient", ["gates"])


def test_a_status_drop_with_a_spec_change_is_recorded_without_acknowledgement(project, pytester):
    project()
    pytester.runpytest("--mechclaim-update-ledger")
    project(**dict(WEAK_ROWS, min=5.0))  # a stricter bar and worse evidence: insufficient -> falsified
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    assert stage_status(pytester) == "falsified"


def test_malformed_ack_is_a_usage_error(project, pytester):
    project()
    result = pytester.runpytest("--mechclaim-ack-spec-change=claim-a")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    shows(result.stderr, 'expected CLAIM_ID:REASON with a non-empty reason')


def test_only_claims_that_ran_are_compared_and_removed_ones_are_reported(project, pytester):
    project("claim-a")
    project("claim-b")
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK

    # -m heldout: the replication stages did not run, and are not "gone"; claim-b's file alone is not either.
    for args in (("-m", "heldout"), ("test_claim_a.py",), ("test_claim_a.py::test_heldout",)):
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.OK, (args, result.stdout.str())
        assert "GONE" not in result.stdout.str()

    # The heldout stage is deleted from claim-b's module, and claim-a's module is deleted.
    source = (pytester.path / "test_claim_b.py").read_text()
    (pytester.path / "test_claim_b.py").write_text(source[: source.index("@pytest.mark.heldout")])
    (pytester.path / "test_claim_a.py").unlink()
    result = pytester.runpytest("-m", "replication")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    shows(result.stdout, 'GONE     claim-a [heldout]: recorded insufficient, no longer collected (test_claim_a.py::test_heldout)', 'GONE     claim-a [replication]', 'GONE     claim-b [heldout]')
    # An update alone deletes nothing: removing recorded stages takes --mechclaim-prune-ledger.
    before = read_ledger(pytester)
    refused = pytester.runpytest("--mechclaim-update-ledger")
    assert refused.ret == pytest.ExitCode.TESTS_FAILED
    shows(refused.stdout, 'REFUSED  claim-a [heldout]: recorded insufficient, no longer collected',
          'the ledger keeps it. Remove it with --mechclaim-update-ledger --mechclaim-prune-ledger')
    assert read_ledger(pytester)["claims"] == before["claims"]
    assert pytester.runpytest("--mechclaim-update-ledger", "--mechclaim-prune-ledger").ret == pytest.ExitCode.OK
    claims = read_ledger(pytester)["claims"]
    assert set(claims) == {"claim-b"} and set(claims["claim-b"]["stages"]) == {"replication"}


def test_a_new_claim_fails_a_gated_run(project, pytester):
    project("claim-a")
    pytester.runpytest("--mechclaim-update-ledger")
    project("claim-c")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    shows(result.stdout, 'NEW      claim-c [heldout]: insufficient (not in the ledger)')


def test_two_tests_on_one_claim_stage_are_a_collection_error(pytester):
    pytester.makepyfile(test_dup='''
        import pytest
        pytestmark = pytest.mark.claim("dup", statement="s")

        @pytest.mark.heldout
        def test_a(mechclaim):
            pass

        @pytest.mark.heldout
        def test_b(mechclaim):
            pass
    ''')
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error of test_dup.py
    shows(result.stdout, "test_b and test_a are both stage 'heldout' of claim 'dup'")


def test_corrupt_ledger_is_a_clear_error_and_is_never_overwritten(project, pytester):
    project()
    path = pytester.path / "mechclaim-ledger.json"
    corrupt = '{"schema": "pytest-mechclaim/ledger/1", "claims": {"claim-a": \n<<<<<<< HEAD\n'
    path.write_text(corrupt)
    for args in ((), ("--mechclaim-update-ledger",)):
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        shows(result.stderr, 'the claim ledger ', 'mechclaim-ledger.json is not valid JSON', 'It was not modified')
        assert path.read_text() == corrupt
    assert not list((pytester.path / ".mechclaim" / "runs").glob("*"))
    path.unlink()
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    data = json.loads(path.read_text())
    data["claims"]["claim-a"]["stages"]["heldout"]["status"] = "great"
    path.write_text(json.dumps(ledger_mod.seal(data)))  # digests match: the schema has to catch it
    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    shows(result.stderr, "claim 'claim-a' stage 'heldout' 'status': Input should be 'blocked', 'falsified'")


def test_run_records_are_complete_and_never_overwritten(project, pytester):
    project()
    result = pytester.runpytest("--mechclaim-run-id=first")
    assert result.ret == pytest.ExitCode.OK
    run = pytester.path / ".mechclaim" / "runs" / "first"
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    prov = json.loads((run / "provenance.json").read_text())
    assert set(prov) == {"machine", "python", "git", "versions"}
    claim_dir = run / "claims" / "claim-a" / "heldout"
    assert {p.name for p in claim_dir.iterdir()} == {"rows.jsonl", "report.md", "report.json"}
    assert len((claim_dir / "rows.jsonl").read_text().splitlines()) == 2 * 2 * 2 * 3
    verdicts = json.loads((run / "verdicts.json").read_text())
    assert [(v["claim"]["id"], v["key"]) for v in verdicts] == [("claim-a", "heldout"), ("claim-a", "replication")]
    stamp = (run / "run.json").stat().st_mtime_ns

    result = pytester.runpytest("--mechclaim-run-id=first")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    shows(result.stderr, "run id 'first' already exists", 'never overwritten')
    assert (run / "run.json").stat().st_mtime_ns == stamp


def test_a_session_without_claims_leaves_no_run_record(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    assert pytester.runpytest().ret == pytest.ExitCode.OK
    assert not list((pytester.path / ".mechclaim" / "runs").glob("*"))


def test_xdist_and_serial_runs_write_identical_ledgers(project, pytester):
    for name in ("claim-a", "claim-b", "claim-c"):
        project(name)
    project("claim-d", **WEAK_ROWS)
    ledgers = []
    for args in (("-p", "xdist", "-n", "0"), ("-p", "xdist", "-n", "2")):
        ledger_file = pytester.path / "mechclaim-ledger.json"
        ledger_file.unlink(missing_ok=True)
        result = pytester.runpytest_subprocess("--mechclaim-update-ledger", *args)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        ledgers.append(json.loads(ledger_file.read_text()))
    serial, parallel = ledgers
    assert serial["runs"].keys() != parallel["runs"].keys()
    assert ledger_mod.comparable(serial) == ledger_mod.comparable(parallel)
    assert len(serial["claims"]) == 4 and serial["claims"]["claim-d"]["status"] == "falsified"
    # The xdist run's evidence was written by the workers, one directory per claim test.
    run_dir = pytester.path / ".mechclaim" / "runs" / next(iter(parallel["runs"]))
    assert len(list(run_dir.glob("claims/*/*/rows.jsonl"))) == 8
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"

    # Workers report what they collected: a deselected stage is not gone, a deleted one is (this needs the
    # workers' collection inventory; the controller collects nothing under xdist).
    source = (pytester.path / "test_claim_b.py").read_text()
    (pytester.path / "test_claim_b.py").write_text(source[: source.index("@pytest.mark.heldout")])
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "-m", "replication")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.stdout.str().count("GONE") == 1
    shows(result.stdout, "GONE     claim-b [heldout]: recorded insufficient, no longer collected")


def _spawn(pytester, *args, delay: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    if delay:
        env["MECHCLAIM_TEST_WRITE_DELAY"] = delay
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=pytester.path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sigkill_inside_the_ledger_write_leaves_the_old_ledger_and_an_incomplete_run(project, pytester):
    project()
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    path = pytester.path / "mechclaim-ledger.json"
    before = path.read_text()
    project(**WEAK_ROWS)

    proc = _spawn(pytester, "--mechclaim-update-ledger", "--mechclaim-run-id=killed", delay="60")
    try:
        _wait_for(lambda: list(pytester.path.glob(".mechclaim-ledger.json.*.tmp")))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_text() == before
    ledger_mod.load(path)
    run = json.loads((pytester.path / ".mechclaim" / "runs" / "killed" / "run.json").read_text())
    assert run["status"] == "incomplete" and run["finished_at"] is None

    # The next run records the change. It leaves the dead writer's fresh temporary files alone (no writer removes
    # another's; only temps older than STALE_TEMP_SECONDS are removed) and the ledger and its view agree.
    left = sorted(pytester.path.glob(".mechclaim-ledger.*.tmp"))
    assert [p.name.split(".")[2] for p in left] == ["json", "md"]
    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.OK
    assert stage_status(pytester) == "falsified"
    assert sorted(pytester.path.glob(".mechclaim-ledger.*.tmp")) == left
    assert ledger_mod.markdown_is_current(path, ledger_mod.load(path))


def test_concurrent_updates_serialize_on_the_lock(project, pytester):
    project("claim-a")
    project("claim-b")
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    project("claim-a", **WEAK_ROWS)
    project("claim-b", **WEAK_ROWS)
    # The first holds the lock while it sleeps inside its write; the second must wait, then merge onto its result.
    first = _spawn(pytester, "--mechclaim-update-ledger", "test_claim_a.py", delay="2")
    _wait_for(lambda: list(pytester.path.glob(".mechclaim-ledger.json.*.tmp")))
    second = _spawn(pytester, "--mechclaim-update-ledger", "test_claim_b.py")
    assert first.wait(60) == 0, first.stdout.read().decode()
    assert second.wait(60) == 0, second.stdout.read().decode()
    first.stdout.close()
    second.stdout.close()
    claims = read_ledger(pytester)["claims"]
    assert claims["claim-a"]["status"] == claims["claim-b"]["status"] == "falsified"


ABORTING_TEST = '''
import os
import pytest

pytestmark = pytest.mark.claim("aborting", statement="s", level="insufficient")


@pytest.mark.heldout
def test_heldout(mechclaim):
    {abort}
'''


def test_an_interrupted_session_does_not_touch_the_ledger(project, pytester):
    project()
    pytester.makepyfile(test_zz_abort=ABORTING_TEST.format(abort="raise KeyboardInterrupt"))
    result = pytester.runpytest_subprocess("--mechclaim-update-ledger", "--mechclaim-run-id=stopped")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    shows(result.stdout, "session interrupted: the ledger was neither compared nor updated")
    assert not (pytester.path / "mechclaim-ledger.json").exists()
    run = json.loads((pytester.path / ".mechclaim" / "runs" / "stopped" / "run.json").read_text())
    assert run["status"] == "interrupted"


def test_a_crashed_xdist_worker_leaves_the_ledger_untouched(project, pytester):
    project()
    pytester.makepyfile(test_zz_abort=ABORTING_TEST.format(abort="os._exit(3)"))
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    shows(result.stdout, "went down", "the session lost claim results: the ledger was neither compared nor updated")
    assert not (pytester.path / "mechclaim-ledger.json").exists()
