"""Human-readable per-claim reports: the failure message, the terminal summary table."""

from __future__ import annotations

import math

from .evidence import COORDINATES
from .gates import GateResult
from .spec import ClaimSpec
from .verdict import Verdict

MAX_WORST_ROWS = 5


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def gate_table(gates: tuple[GateResult, ...]) -> list[str]:
    rows = [[g.name, _fmt(g.value), f"{g.comparison} {_fmt(g.threshold)}", "pass" if g.passed else "FAIL",
             g.caps_at.label if g.caps_at.label != "strong" else "-"] for g in gates]
    return table(["gate", "value", "threshold", "result", "caps at"], rows)


def _row_line(row: dict) -> str:
    coords = [f"{k}={row[k]}" for k in COORDINATES if k in row]
    numbers = [f"{k}={_fmt(v)}" for k, v in row.items() if k not in COORDINATES and k not in ("prompt", "control_prompt")]
    text = " ".join(coords + numbers)
    if "prompt" in row:
        text += f"\n      prompt: {row['prompt']!r}"
    if "control_prompt" in row:
        text += f"\n      control: {row['control_prompt']!r}"
    return text


def claim_report(spec: ClaimSpec, stage: str | None, verdict: Verdict, nodeid: str = "") -> str:
    head = f"claim {spec.id}" + (f" [{stage}]" if stage else "")
    expectation = "expected rejected" if spec.expect == "rejected" else f"claimed {spec.level.label}"
    lines = [
        f"{head}: verdict {verdict.status.label.upper()} ({expectation})",
        f"statement: {spec.statement}",
        "",
        "why:" if verdict.reasons else "why: every gate passed",
    ]
    lines += [f"  - {r}" for r in verdict.reasons]
    lines += ["", *gate_table(verdict.gates)]
    acc = verdict.row_accounting
    if acc:
        lines += ["", f"rows: {acc['n_rows']} total, {acc['n_ok']} ok, {acc['n_invalid']} invalid, "
                      f"{acc['n_not_applicable']} not applicable" +
                      (f"; reasons {acc['reason_counts']}" if acc["reason_counts"] else "")]
    for g in verdict.gates:
        if g.passed or not g.worst:
            continue
        lines += ["", f"worst rows for {g.name}:"]
        lines += [f"  {_row_line(row)}" for row in g.worst[:MAX_WORST_ROWS]]
    if nodeid:
        lines += ["", f"rerun: pytest '{nodeid}'"]
    return "\n".join(lines)
