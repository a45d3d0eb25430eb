"""A ledger CI can trust: tamper detection, the versioned schema, escaping, I/O errors, renames and moves from
pytest, and concurrent writers with different runs dirs.

Claim modules here are planted false claims (``expect="rejected"``) on synthetic rows: their tests pass whether the
evidence reads ``falsified`` (controls move more than the target) or ``insufficient``, so each inner run's exit
status is the ledger's verdict alone, and a rise is falsified -> insufficient.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pytest_mechclaim import draftguard, ledger as L

from .test_ledger import fake, ledger_with

pytest_plugins = ["pytester"]

CLAIM = '''
import pytest
from pytest_mechclaim.evidence import EvidenceRow

pytestmark = pytest.mark.claim("{claim}", statement="{statement}", level="insufficient", expect="rejected")


def rows():
    return [EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"{{f}}-{{s}}-{{i}}", family=f,
                        control_suite=suite, seed=s, target_delta={target}, control_delta={control},
                        norm_drift=0.05, prompt=f"prompt {{f}} {{s}} {{i}}")
            for f in ("h1", "h2") for s in (10, 11) for suite in ("matched", "lexical") for i in range(3)]


@pytest.mark.{stage}
def test_heldout(mechclaim):
    ev = mechclaim.record(rows())
    mechclaim.gate.specificity_gap(ev, min={min})
    mechclaim.gate.collateral_ratio(ev)
'''
GOOD = dict(target=0.9, control=0.1)  # insufficient (capped by the policy's debts)
BAD = dict(target=0.1, control=0.9)  # falsified


@pytest.fixture
def project(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nmechclaim_figures = false\n")

    def write(claim="claim-a", module="test_a", stage="heldout", statement=None, min=0.1, **numbers):
        values = dict(GOOD, **numbers)
        pytester.makepyfile(**{module: CLAIM.format(claim=claim, stage=stage, min=min, statement=statement or
                                                    f"{claim} moves the target", **values)})

    return write


def ledger_file(pytester):
    return pytester.path / "mechclaim-ledger.json"


def stages(pytester) -> dict:
    data = json.loads(ledger_file(pytester).read_text())
    return {(c, k): e["status"] for c, claim in data["claims"].items() for k, e in claim["stages"].items()}


def out(result) -> str:
    return result.stdout.str() + result.stderr.str()


# -- integrity and schema (files on disk) ---------------------------------------------------------------------------


def saved(tmp_path, ledger) -> "os.PathLike":
    path = tmp_path / "mechclaim-ledger.json"
    L.write(path, ledger)
    return path


def test_a_hand_raised_or_deleted_entry_is_tampering_naming_the_claim(tmp_path):
    path = saved(tmp_path, ledger_with(fake("a", status="falsified"), fake("b", key="replication")))
    assert L.load(path)["claims"]["a"]["status"] == "falsified"  # untouched: it loads
    good = json.loads(path.read_text())

    raised = json.loads(path.read_text())
    raised["claims"]["a"]["stages"]["heldout"]["status"] = raised["claims"]["a"]["status"] = "candidate"
    path.write_text(json.dumps(raised))
    with pytest.raises(L.LedgerError, match="tampered with: claim 'a' does not match its digest"):
        L.load(path)
    deleted = dict(good, claims={"b": good["claims"]["b"]})
    path.write_text(json.dumps(deleted))
    with pytest.raises(L.LedgerError, match="a claim block was added or deleted by hand"):
        L.load(path)
    # Run-specific fields are outside the digests: another run's date is not tampering.
    redated = json.loads(json.dumps(good))
    redated["claims"]["a"]["stages"]["heldout"]["run"]["date"] = "2030-01-01T00:00:00Z"
    path.write_text(json.dumps(redated))
    assert L.load(path)["claims"]["a"]["stages"]["heldout"]["run"]["date"].startswith("2030")


def test_duplicate_keys_are_rejected_so_a_claim_id_cannot_appear_twice(tmp_path):
    path = saved(tmp_path, ledger_with(fake("a")))
    text = path.read_text()
    block = text[text.index('    "a": {'):text.index('\n  },\n  "claims_digest"')]
    path.write_text(text.replace(block, block + ",\n" + block, 1))
    with pytest.raises(L.LedgerError, match="is not valid JSON \\(duplicate key 'a'\\)"):
        L.load(path)


def test_nothing_is_written_unless_the_ledger_validates_and_renders(tmp_path, monkeypatch):
    path = saved(tmp_path, ledger_with(fake("a")))
    before = (path.read_text(), L.markdown_path(path).read_text())
    broken = ledger_with(fake("a", status="candidate"))
    del broken["claims"]["a"]["forbidden"]  # what the old validate() let through and the renderer needs
    with pytest.raises(L.LedgerError, match="does not validate .*'forbidden': Field required"):
        L.write(path, broken)
    monkeypatch.setattr("pytest_mechclaim.ledger_schema.render_markdown", lambda *a: {}["no such field"])
    with pytest.raises(L.LedgerError, match="its Markdown view does not render"):
        L.write(path, ledger_with(fake("a", status="candidate")))
    assert (path.read_text(), L.markdown_path(path).read_text()) == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_statements_are_escaped_in_the_markdown_view():
    evil = "<script>alert(1)</script> | **bold** [link](http://x)\n# heading & more"
    text = L.render_markdown(ledger_with(fake("a", statement=evil)))
    quote = next(line for line in text.splitlines() if line.startswith("> "))
    assert quote == ("> &lt;script&gt;alert\\(1\\)&lt;/script&gt; \\| \\*\\*bold\\*\\* \\[link\\]\\(http://x\\) "
                     "\\# heading &amp; more")
    assert "<script>" not in text and "\n# heading" not in text
    plain = L.render_markdown(ledger_with(fake("a", statement="L1H0 copies the next token")))
    assert "> L1H0 copies the next token\n" in plain


def test_io_errors_are_one_ledger_error_naming_the_path(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(L.LedgerError, match="adir is a directory, not a file"):
        L.load(tmp_path / "adir")
    path = saved(tmp_path, ledger_with(fake("a")))
    path.chmod(0o444)
    with pytest.raises(L.LedgerError, match=f"{path} is read-only \\(mode 444\\)"):
        L.check_writable(path)
    path.chmod(0o644)
    L.check_writable(path)
    (tmp_path / "afile").write_text("")
    under_a_file = tmp_path / "afile" / "ledger.json"
    with pytest.raises(L.LedgerError, match=f"the claim ledger {under_a_file} could not be checked: Not a directory"):
        L.reconcile(under_a_file, None, [fake()], set(), set(), [], tmp_path, True, {}, dict(run_id="r", date="d"))


def test_only_stale_temp_files_are_removed(tmp_path):
    path = tmp_path / "mechclaim-ledger.json"
    fresh, old = tmp_path / ".mechclaim-ledger.json.live.tmp", tmp_path / ".mechclaim-ledger.md.dead.tmp"
    fresh.write_text("another writer's")
    old.write_text("killed hours ago")
    hours_ago = time.time() - L.STALE_TEMP_SECONDS - 60
    os.utime(old, (hours_ago, hours_ago))
    assert L.remove_stale_temp_files(path) == [old]
    assert fresh.exists() and not old.exists()


def test_the_draft_guard_refuses_a_tampered_ledger(tmp_path):
    path = saved(tmp_path, ledger_with(fake("a", status="falsified")))
    draft = tmp_path / "draft.md"
    draft.write_text("We find strong evidence [claim:a].\n")
    assert draftguard.main(["--ledger", str(path), str(draft)]) == 1  # the overclaim is found
    data = json.loads(path.read_text())
    data["claims"]["a"]["forbidden"] = []  # silence the guard by hand
    path.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "pytest_mechclaim.draftguard", "--ledger", str(path), str(draft)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "tampered with: claim 'a' does not match its digest" in proc.stderr and "Traceback" not in proc.stderr


# -- from pytest ----------------------------------------------------------------------------------------------------


def test_a_rename_with_better_evidence_is_refused_until_acknowledged_and_pruned(project, pytester):
    project("claim-a", **BAD)
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    assert stages(pytester) == {("claim-a", "heldout"): "falsified"}
    project("claim-z", statement="claim-a moves the target", **GOOD)  # same test, new id, better evidence
    result = pytester.runpytest("--mechclaim-update-ledger", "--mechclaim-prune-ledger")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert ("REFUSED  claim-z [heldout]: (new) -> insufficient entered in the same run as claim-a [heldout] "
            "(test_a.py::test_heldout) vanished") in out(result)
    assert "--mechclaim-ack-spec-change=claim-z:REASON" in out(result)
    assert stages(pytester) == {("claim-a", "heldout"): "falsified"}
    result = pytester.runpytest("--mechclaim-update-ledger", "--mechclaim-prune-ledger",
                                "--mechclaim-ack-spec-change=claim-z:renamed after review")
    assert result.ret == pytest.ExitCode.OK, out(result)
    assert stages(pytester) == {("claim-z", "heldout"): "insufficient"}


def test_a_stage_moved_to_another_marker_is_refused_and_a_plain_new_claim_is_not(project, pytester):
    project("claim-a", **BAD)
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    project("claim-b", module="test_b", **GOOD)  # a new claim, nothing vanished: recorded as usual
    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.OK, out(result)
    assert stages(pytester)[("claim-b", "heldout")] == "insufficient"
    project("claim-a", stage="characterization", **GOOD)
    result = pytester.runpytest("--mechclaim-update-ledger", "--mechclaim-prune-ledger")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "REFUSED  claim-a [characterization]: (new) -> insufficient entered" in out(result)
    assert "REFUSED  claim-a [heldout]: recorded falsified, no longer collected (test_a.py::test_heldout); not " \
           "pruned while claim-a [characterization], which replaces it, is refused" in out(result)


def test_a_hand_raised_status_is_caught_at_load_whichever_modules_run(project, pytester):
    project("claim-a", **BAD)
    project("claim-b", module="test_b")
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    data = json.loads(ledger_file(pytester).read_text())
    data["claims"]["claim-a"]["stages"]["heldout"]["status"] = data["claims"]["claim-a"]["status"] = "candidate"
    ledger_file(pytester).write_text(json.dumps(data, indent=2))
    for args in (("test_b.py",), ("test_b.py", "--mechclaim-update-ledger")):
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "tampered with: claim 'claim-a' does not match its digest" in out(result)
    assert json.loads(ledger_file(pytester).read_text()) == data


def test_a_ledger_missing_a_rendered_field_is_never_overwritten(project, pytester):
    project("claim-a")
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    data = json.loads(ledger_file(pytester).read_text())
    del data["claims"]["claim-a"]["allowed"]
    L.seal(data)  # digests recomputed: this is a schema error, not tampering
    ledger_file(pytester).write_text(json.dumps(data))
    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is malformed: claim 'claim-a' 'allowed': Field required" in out(result)
    assert json.loads(ledger_file(pytester).read_text()) == data


def test_io_errors_are_one_clear_line_never_a_traceback(project, pytester):
    project("claim-a")
    (pytester.path / "adir").mkdir()
    result = pytester.runpytest("--mechclaim-ledger=adir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "adir is a directory, not a file" in out(result)
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    ledger_file(pytester).chmod(0o444)
    before = ledger_file(pytester).read_text()
    project("claim-a", **BAD)
    result = pytester.runpytest("--mechclaim-update-ledger")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "mechclaim-ledger.json is read-only (mode 444)" in out(result)
    assert ledger_file(pytester).read_text() == before
    for text in (out(result),):
        assert "Traceback" not in text and "INTERNALERROR" not in text
    ledger_file(pytester).chmod(0o644)
    assert pytester.runpytest("--mechclaim-prune-ledger").ret == pytest.ExitCode.USAGE_ERROR


def _spawn(cwd, *args, delay="0.3"):
    env = dict(os.environ, MECHCLAIM_TEST_WRITE_DELAY=delay)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_writers_with_different_runs_dirs_lose_no_update(project, pytester):
    """20 trials; each writer updates its own claim while the other may sit inside its (widened) write window."""
    project("claim-a", module="test_a")
    project("claim-b", module="test_b")
    assert pytester.runpytest("--mechclaim-update-ledger").ret == pytest.ExitCode.OK
    lost = []
    for trial in range(20):
        target = 0.9 - 0.01 * (trial + 1)  # new metrics each trial: each stage entry must be rewritten
        project("claim-a", module="test_a", target=target)
        project("claim-b", module="test_b", target=target)
        procs = [_spawn(pytester.path, "--mechclaim-update-ledger", f"test_{x}.py", f"--mechclaim-run-id={x}{trial}",
                        f"--mechclaim-runs-dir=runs-{x}") for x in ("a", "b")]
        for proc in procs:
            output = proc.communicate(timeout=120)[0].decode()
            assert proc.returncode == 0, output
        ledger = L.load(ledger_file(pytester))
        got = {c: ledger["claims"][c]["stages"]["heldout"]["run"]["id"] for c in ("claim-a", "claim-b")}
        if got != {"claim-a": f"a{trial}", "claim-b": f"b{trial}"}:
            lost.append((trial, got))
        assert L.markdown_is_current(ledger_file(pytester), ledger)
    assert lost == []
    assert (pytester.path / "mechclaim-ledger.json.lock").exists()
    assert not (pytester.path / "runs-a" / ".locks").exists()
