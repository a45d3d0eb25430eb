"""Gemma-3-270M: L11H2, the second induction-attention head (0.59, a global-attention layer). Its attention score is
only the prior.

Two claims, because the evidence splits: on discovery's families re-scored over seeds 0-2 (replication) L11H2 is a
head-specific ``candidate``; held out it is ``insufficient`` (the previous-occurrence position does not replicate
the final-position effect) and its characterization is falsified (a characterization family's effect is not
positive, and attention to the source is not aligned with the effect).
"""

from claims.conftest import GEMMA3_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestReplication = HeadClaim(
    "gemma3-induction-L11H2-replication",
    "L11H2 writes the induction completion at the final position on the discovery families, head-specifically, "
    "replicated over seeds 0-2 and over patching and zero ablation",
    "L11H2", GEMMA3_INDUCTION, stages=("replication",)).tests()

TestClaim = HeadClaim(
    "gemma3-induction-L11H2",
    "L11H2 writes the induction completion at the final position on held-out families and seeds, and its "
    "characterization (zero ablation in every characterization family, attention aligned with effect) holds",
    "L11H2", GEMMA3_INDUCTION, stages=("heldout", "characterization"), expect="rejected").tests()
