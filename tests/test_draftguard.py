"""Draft guard: claim-tagged prose against the ledger's forbidden wording, with the negated-disclaimer rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_mechclaim import draftguard, ledger as L
from pytest_mechclaim.status import Status

from .test_ledger import fake, ledger_with


def claim(status: Status) -> dict:
    return {"statement": "s", "claimed": "candidate", "expect": "supported", "status": status.label,
            "stages": {}, **L.wording(status)}


LEDGER = {"schema": L.SCHEMA, "runs": {},
          "claims": {"ind": claim(Status.CANDIDATE), "decoy": claim(Status.FALSIFIED), "top": claim(Status.STRONG)}}


def kinds(text: str) -> list[tuple[str, str, int]]:
    return [(f.kind, f.claim, f.line) for f in draftguard.check_text(text, LEDGER)]


def test_overclaim_next_to_the_tag_is_found_and_allowed_wording_passes():
    assert kinds("L1H0 is the mechanism for induction [claim:ind].") == [("forbidden_language", "ind", 1)]
    assert kinds("We find candidate evidence that L1H0 copies tokens [claim:ind].") == []
    # The same words are fine for a claim whose status allows them, and forbidden for a falsified one.
    assert kinds("This is strong evidence [claim:top].") == []
    assert kinds("This is strong evidence [claim:decoy].") == [("forbidden_language", "decoy", 1)]
    (finding,) = draftguard.check_text("There is suggestive evidence for\nit [claim:decoy].", LEDGER)
    assert "is falsified" in finding.message and "'falsified'" in finding.message


def test_phrases_match_across_line_breaks_and_punctuation_but_not_inside_words():
    assert kinds("L1H0 is the\nmechanism [claim:ind].") == [("forbidden_language", "ind", 1)]
    assert kinds("L1H0 is the -- mechanism [claim:ind].") == [("forbidden_language", "ind", 1)]
    assert kinds("L1H0 is the mechanisms' cousin [claim:ind].") == []


def test_negated_disclaimer_in_the_same_sentence_is_not_a_finding():
    assert kinds("We do not claim that L1H0 is the mechanism [claim:ind].") == []
    assert kinds("We are not claiming it fully explains induction [claim:ind].") == []


def test_a_disclaimer_in_another_sentence_does_not_excuse_an_overclaim():
    text = "We do not claim completeness. L1H0 is the mechanism [claim:ind]."
    assert kinds(text) == [("forbidden_language", "ind", 1)]


def test_window_is_two_sentences_either_side_within_the_paragraph():
    near = "L1H0 is the mechanism. One. Two [claim:ind]."
    far = "L1H0 is the mechanism. One. Two. Three [claim:ind]."
    other_paragraph = "L1H0 is the mechanism.\n\nIt copies tokens [claim:ind]."
    assert kinds(near) == [("forbidden_language", "ind", 1)]
    assert kinds(far) == []
    assert kinds(other_paragraph) == []


def test_unknown_and_malformed_tags_and_code_blocks():
    assert kinds("See [claim:nope].") == [("unknown_claim", "nope", 1)]
    assert kinds("See [claim:bad id!].") == [("malformed_tag", "bad id!", 1)]
    assert kinds("x\n<!-- claim: ind -->\nL1H0 is the mechanism.") == [("forbidden_language", "ind", 3)]
    assert kinds("```\nL1H0 is the mechanism [claim:ind].\n```\n") == []


def test_cli_exit_status_and_messages(tmp_path):
    ledger_path = tmp_path / "mechclaim-ledger.json"
    # A recorded (schema-valid, sealed) ledger with the same statuses as LEDGER.
    L.write(ledger_path, ledger_with(fake("ind", status="candidate"), fake("decoy", status="falsified"),
                                     fake("top", status="strong")))
    clean, dirty = tmp_path / "clean.md", tmp_path / "dirty.md"
    clean.write_text("# Results\n\nCandidate evidence that L1H0 copies tokens [claim:ind].\n")
    dirty.write_text("# Results\n\nThe decoy head shows suggestive evidence\nof induction [claim:decoy].\n")
    run = lambda *args: subprocess.run([sys.executable, "-m", "pytest_mechclaim.draftguard", *args],
                                       capture_output=True, text=True, cwd=tmp_path)
    ok = run("clean.md")
    assert ok.returncode == 0 and "1 file(s) clean" in ok.stdout
    bad = run("--ledger", str(ledger_path), "clean.md", "dirty.md")
    assert bad.returncode == 1
    assert "dirty.md:3: forbidden_language: [claim:decoy] is falsified" in bad.stdout
    ledger_path.write_text("{broken")
    broken = run("clean.md")
    assert broken.returncode == 2 and "is not valid JSON" in broken.stderr
    ledger_path.write_text(L.dumps(LEDGER))  # a hand-written ledger with no digests or stages: not trusted
    unsealed = run("clean.md")
    assert unsealed.returncode == 2 and "is malformed" in unsealed.stderr and "Traceback" not in unsealed.stderr
    assert run("--ledger", "none.json", "clean.md").returncode == 2


@pytest.mark.parametrize("status", list(Status))
def test_every_forbidden_phrase_is_caught_for_its_status(status):
    ledger = dict(LEDGER, claims={"c": claim(status)})
    for phrase in L.WORDING[status]["forbidden"]:
        findings = draftguard.check_text(f"Our result {phrase} here [claim:c].", ledger)
        assert [f.kind for f in findings] == ["forbidden_language"], phrase
