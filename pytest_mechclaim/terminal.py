"""How a failing claim reads in the terminal, by ``--tb`` style (pytest's own conventions):

* ``--tb=line``: one line per failing claim stage: id, stage, verdict, the gate that decided with its value and
  threshold;
* ``--tb=short``: the verdict, its reasons and the gate table;
* default (``auto``/``long``): the full claim report (worst rows with coordinates, rerun command).

The representation is chosen where the report is made (an xdist worker has the same options), so what crosses
xdist is already the right one.
"""

from __future__ import annotations

from _pytest._code.code import ReprExceptionInfo, ReprFileLocation, ReprTraceback

from .report import _fmt, gate_table
from .spec import ClaimSpec
from .verdict import Verdict


def deciding_gate(verdict: Verdict):
    """The failing gate with the lowest cap (the one that set the verdict), else None."""
    failing = [g for g in verdict.gates if not g.passed]
    return min(failing, key=lambda g: g.caps_at) if failing else None


def claim_line(spec: ClaimSpec, stage: str | None, verdict: Verdict) -> str:
    head = f"{spec.id} [{stage or '-'}] {verdict.status.label.upper()}"
    claimed = "expected rejected" if spec.expect == "rejected" else f"claimed {spec.level.label}"
    gate = deciding_gate(verdict)
    if gate is not None:
        return (f"{head} ({claimed}): {gate.name} {_fmt(gate.value)} {gate.comparison} {_fmt(gate.threshold)} "
                f"caps at {gate.caps_at.label}")
    why = verdict.reasons[0] if verdict.reasons else "every gate passed"
    return f"{head} ({claimed}): {why}"


def claim_short(spec: ClaimSpec, stage: str | None, verdict: Verdict) -> str:
    claimed = "expected rejected" if spec.expect == "rejected" else f"claimed {spec.level.label}"
    lines = [f"claim {spec.id}" + (f" [{stage}]" if stage else "") +
             f": verdict {verdict.status.label.upper()} ({claimed})"]
    lines += [f"  - {r}" for r in verdict.reasons]
    return "\n".join(lines + ["", *gate_table(verdict.gates)])


def one_line_longrepr(path: str, lineno: int, line: str) -> ReprExceptionInfo:
    """A report pytest prints as exactly ``line`` under ``--tb=line`` (serial and xdist): an exception repr with no
    traceback entries whose crash location carries the claim line. (pytest reads ``reprcrash`` for ``--tb=line``;
    a plain string longrepr would be printed whole, then again cut at 50 characters.)"""
    return ReprExceptionInfo(reprtraceback=ReprTraceback([], None, "line"),
                             reprcrash=ReprFileLocation(path, lineno, line))


def verdict_longrepr(style: str, full_report: str, spec: ClaimSpec, stage: str | None, verdict: Verdict,
                     location: tuple[str, int]):
    if style == "line":
        return one_line_longrepr(location[0], location[1], claim_line(spec, stage, verdict))
    if style == "short":
        return claim_short(spec, stage, verdict)
    return full_report

