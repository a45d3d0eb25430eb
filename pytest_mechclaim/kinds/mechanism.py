"""One mechanism declared on several models: the same kind, task and rule for choosing the unit.

    INDUCTION_TOP_HEAD = Mechanism("induction-top-attention-head", "...", InductionBank(), AttentionPrior(5, 3))
    HeadClaim("smollm2-induction-L18H6", ..., "L18H6", SMOLLM2, mechanism=INDUCTION_TOP_HEAD)
    HeadClaim("gemma3-induction-L5H1", ..., "L5H1", GEMMA3, mechanism=INDUCTION_TOP_HEAD)

Each model's claim names its unit (the marker must say which head it asserts), and the kind checks, before any
scoring, that the unit is what the mechanism's rule chose on that model from the same task bank: a claim cannot
swap in a better-looking head and still count for the mechanism. The per-model verdicts are judged together by
``gates.cross_model_replication`` (pytest_mechclaim/mechanisms.py); ``strong`` needs >= 2 models (policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gates import GateResult
from ..status import Status


@dataclass(frozen=True)
class Mechanism:
    id: str
    statement: str
    bank: object  # the task: the bank every model's discovery must use (e.g. InductionBank())
    rule: object  # the rule for choosing units (AttentionPrior, CausalSearch); its rank-th candidate is the unit
    rank: int = 0
    kind: str = "head"

    def declaration(self) -> dict:
        """What the claims share, hashed into each claim's spec (mechclaim.declare)."""
        return {"id": self.id, "statement": self.statement, "kind": self.kind, "task": repr(self.bank),
                "rule": repr(self.rule), "rank": self.rank}

    def check(self, discovery_declaration, candidates: list, unit: str) -> GateResult:
        """``mechanism_unit``: blocked unless the claim's discovery uses the mechanism's bank and rule and the rule
        chose ``unit`` at ``rank`` on this model."""
        problems = []
        if discovery_declaration.bank != self.bank:
            problems.append(f"the claim's bank {discovery_declaration.bank!r} is not the mechanism's {self.bank!r}")
        if discovery_declaration.candidates != self.rule:
            problems.append(f"the claim's selection {discovery_declaration.candidates!r} is not the mechanism's rule "
                            f"{self.rule!r}")
        chosen = candidates[self.rank] if len(candidates) > self.rank else None
        if chosen != unit:
            problems.append(f"the rule chose {chosen} at rank {self.rank} on this model, not {unit}")
        if problems:
            return GateResult("mechanism_unit", False, None, None, "==", Status.BLOCKED,
                              f"not a claim of mechanism {self.id!r}: " + "; ".join(problems))
        return GateResult("mechanism_unit", True, float(self.rank), float(self.rank), "==", Status.STRONG,
                          f"{unit} is the rule's rank-{self.rank} unit on this model (mechanism {self.id!r})")
