"""SmolLM2-135M-Instruct: L18H6, the top induction-attention head (0.83). Its attention score is only the prior.

Two claims, because the evidence splits: ``smollm2-induction-L18H6`` (replication and held-out families and seeds)
reaches candidate; its characterization is a claim of its own, recorded as rejected: the signed effect is negative
on the multi-distractor characterization family.
"""

from claims.conftest import INDUCTION_TOP_HEAD, SMOLLM2_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "smollm2-induction-L18H6",
    "L18H6 writes the induction completion at the final position (head-specific, replicated, held out)",
    "L18H6", SMOLLM2_INDUCTION, stages=("replication", "heldout"), mechanism=INDUCTION_TOP_HEAD).tests()

TestCharacterization = HeadClaim(
    "smollm2-induction-L18H6-characterization",
    "L18H6's zero ablation lowers the induction completion in every characterization family (seeds 20-22), "
    "head-specifically, with its attention to the source aligned with its effect",
    "L18H6", SMOLLM2_INDUCTION, stages=("characterization",), expect="rejected").tests()
