"""Draft guard: check prose that cites claims against what the ledger allows one to say about them.

    python -m pytest_mechclaim.draftguard [--ledger mechclaim-ledger.json] paper.md notes/*.md

A claim is cited with a tag, ``[claim:gt-induction-L1H0]`` (or ``<!-- claim:ID -->``). For every tag the guard
reads the claim's current status and its ``forbidden`` phrases from the ledger and looks for them in the tag's
window: the sentence holding the tag and two sentences either side, inside the same paragraph (MechLedger's Draft
Guard, reference/seed-systems.md §3.8). A phrase matches word boundary to word boundary, with any non-word
characters between its words ("is the\\nmechanism" matches "is the mechanism").

Negated disclaimers do not count: a match is ignored when "do not claim", "do not assert", "not claiming",
"no claim of", "does not claim" or "we make no claim" stands within 240 characters before it *in the same
sentence* (MechLedger looked 240 characters back regardless of sentences, so a disclaimer in one sentence excused
an overclaim in the next).

Also reported: malformed tags and tags naming a claim the ledger does not know. Fenced code blocks are skipped.
Exit status: 0 clean, 1 findings, 2 no usable ledger. Phrase matching cannot catch paraphrases; it is a floor,
not a reviewer.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .ledger import LedgerError, load
from .spec import CLAIM_ID

TAG = re.compile(r"\[claim:([^\]]*)\]|<!--\s*claim:([^>]*?)\s*-->", re.IGNORECASE)
DISCLAIMERS = re.compile(r"\b(do not claim|do not assert|not claiming|no claim of|does not claim|we make no claim)\b",
                         re.IGNORECASE)
DISCLAIMER_REACH = 240
WINDOW_SENTENCES = 2
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str  # forbidden_language | unknown_claim | malformed_tag
    claim: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.message}"


def _phrase_pattern(phrase: str) -> re.Pattern:
    words = re.findall(r"\w+", phrase)
    return re.compile(r"\b" + r"\W+".join(map(re.escape, words)) + r"\b", re.IGNORECASE)


def _blank_code(text: str) -> str:
    """Fenced code blocks become spaces (newlines kept, so line numbers and offsets stay valid)."""
    return FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of ``text``, within paragraphs (a blank line ends a paragraph);
    paragraph numbers are returned alongside so windows never cross one."""
    spans = []
    for para_no, para in enumerate(re.finditer(r"(?:[^\n]|\n(?![ \t]*\n))+", text)):
        start = para.start()
        for end_match in SENTENCE_END.finditer(para.group(0)):
            spans.append((para_no, start, para.start() + end_match.start()))
            start = para.start() + end_match.end()
        if start < para.end():
            spans.append((para_no, start, para.end()))
    return spans


def check_text(text: str, ledger: dict, path: str = "<text>") -> list[Finding]:
    text = _blank_code(text)
    line_of = lambda offset: text.count("\n", 0, offset) + 1
    sentences = _sentences(text)
    claims = ledger["claims"]
    findings: list[Finding] = []
    seen: set[tuple[int, str, str]] = set()
    for tag in TAG.finditer(text):
        claim_id = (tag.group(1) if tag.group(1) is not None else tag.group(2)).strip()
        if not CLAIM_ID.match(claim_id):
            findings.append(Finding(path, line_of(tag.start()), "malformed_tag", claim_id,
                                    f"malformed claim tag {tag.group(0)!r}: expected [claim:ID]"))
            continue
        claim = claims.get(claim_id)
        if claim is None:
            findings.append(Finding(path, line_of(tag.start()), "unknown_claim", claim_id,
                                    f"claim {claim_id!r} is not in the ledger"))
            continue
        here = next((i for i, (_, s, e) in enumerate(sentences) if s <= tag.start() < max(e, s + 1)), None)
        if here is None:
            continue
        para = sentences[here][0]
        window = [sentences[i] for i in range(max(0, here - WINDOW_SENTENCES),
                                              min(len(sentences), here + WINDOW_SENTENCES + 1))
                  if sentences[i][0] == para]
        for phrase in claim["forbidden"]:
            pattern = _phrase_pattern(phrase)
            for _, s, e in window:
                sentence = text[s:e]
                for m in pattern.finditer(sentence):
                    if DISCLAIMERS.search(sentence[max(0, m.start() - DISCLAIMER_REACH):m.start()]):
                        continue
                    key = (s + m.start(), claim_id, phrase)
                    if key in seen:
                        continue
                    seen.add(key)
                    findings.append(Finding(
                        path, line_of(s + m.start()), "forbidden_language", claim_id,
                        f"[claim:{claim_id}] is {claim['status']}: {m.group(0)!r} overstates it (forbidden: "
                        f"{phrase!r}); allowed wording: {', '.join(repr(a) for a in claim['allowed'])}"))
    return sorted(findings, key=lambda f: (f.line, f.kind, f.message))


def check_files(paths, ledger: dict) -> list[Finding]:
    findings = []
    for path in paths:
        findings += check_text(Path(path).read_text(encoding="utf-8"), ledger, str(path))
    return findings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mechclaim.draftguard",
                                     description="Check claim-tagged prose against the claim ledger's forbidden wording.")
    parser.add_argument("files", nargs="+", help="Markdown (or any text) files with [claim:ID] tags")
    parser.add_argument("--ledger", default="mechclaim-ledger.json", help="the claim ledger (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        ledger = load(Path(args.ledger))
    except LedgerError as exc:
        print(f"draftguard: {exc}", file=sys.stderr)
        return 2
    if ledger is None:
        print(f"draftguard: no claim ledger at {args.ledger} (run pytest --mechclaim-update-ledger first)",
              file=sys.stderr)
        return 2
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        print(f"draftguard: no such file(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    findings = check_files(args.files, ledger)
    for f in findings:
        print(f)
    n_files = len(args.files)
    print(f"draftguard: {len(findings)} finding(s) in {n_files} file(s)" if findings
          else f"draftguard: {n_files} file(s) clean")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
