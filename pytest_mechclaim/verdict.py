"""The verdict: one status from gate results and row accounting, with the reasons that set it.

Decision procedure (the first three are SELF-GROUND's report gate and MechLedger's additions, minus their bugs):
1. No gate ran, or every evidence row was skipped or invalid: ``blocked`` (nothing to judge is not a pass).
2. Each gate caps the status at ``caps_at`` (blocked for unusable input, falsified when controls move as much as
   the target or the sign is wrong, insufficient when a candidate threshold is missed, candidate when only a
   strong threshold is missed). The verdict is the lowest cap.
3. Any invalid row (non-finite, engine error) caps at ``insufficient``: a skipped row never supports a candidate.
4. ``strong`` also needs the strong floor, the empirical null and the paired test to have run and passed
   (``gates.STRONG_REQUIRES``); otherwise the verdict stops at ``candidate`` and says which are missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .evidence import EvidenceRow
from .gates import STRONG_REQUIRES, GateResult
from .status import Status


@dataclass(frozen=True)
class Verdict:
    status: Status
    reasons: tuple[str, ...]
    gates: tuple[GateResult, ...]
    row_accounting: dict = field(default_factory=dict)

    @property
    def failing_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)

    def to_dict(self) -> dict:
        return {
            "status": self.status.label,
            "reasons": list(self.reasons),
            "gates": [g.to_dict() for g in self.gates],
            "row_accounting": self.row_accounting,
        }


def account_rows(rows: Iterable[EvidenceRow]) -> dict:
    rows = list(rows)
    counts = Counter(r.status for r in rows)
    reasons = Counter(r.reason for r in rows if not r.ok)
    return {
        "n_rows": len(rows),
        "n_ok": counts.get("ok", 0),
        "n_invalid": counts.get("invalid", 0),
        "n_not_applicable": counts.get("not_applicable", 0),
        "reason_counts": dict(sorted(reasons.items())),
    }


def decide(gates: Sequence[GateResult], rows: Sequence[EvidenceRow] = ()) -> Verdict:
    gates = tuple(gates)
    accounting = account_rows(rows)
    caps: list[tuple[Status, str]] = []
    if not gates:
        caps.append((Status.BLOCKED, "no gate ran: a claim with no evidence gate is not a pass"))
    if rows and accounting["n_ok"] == 0:
        caps.append((Status.BLOCKED, f"all {accounting['n_rows']} evidence rows were skipped or invalid: "
                                     f"{accounting['reason_counts']}"))
    elif accounting["n_invalid"]:
        caps.append((Status.INSUFFICIENT, f"{accounting['n_invalid']} evidence rows are invalid "
                                          f"({accounting['reason_counts']}): a skipped row never supports a candidate"))
    for g in gates:
        if g.caps_at < Status.STRONG:
            caps.append((g.caps_at, f"{g.name}: {g.reason}"))
    strong_gates = {g.name: g for g in gates if g.name in STRONG_REQUIRES}
    missing = [n for n in STRONG_REQUIRES if n not in strong_gates]
    if missing:
        caps.append((Status.CANDIDATE, f"strong needs {', '.join(missing)}, which did not run"))
    status = min((c for c, _ in caps), default=Status.STRONG)
    # Reasons: the ones that set the status first, then the rest of what holds the claim back.
    reasons = [r for c, r in caps if c == status] + [r for c, r in caps if c != status]
    return Verdict(status, tuple(reasons), gates, accounting)
