"""Gemma-3-270M: L5H1, the top induction-attention head (0.79). Its attention score is only the prior.

The cross-model replication of ``smollm2-induction-L18H6``: the same mechanism (``INDUCTION_TOP_HEAD``: bank,
attention prior, rank 0), whose unit the kind checks is what the rule chose on this model.

Measured: rejected at every stage. Zero-ablating or patching L5H1 moves the matched control prompts (reversed,
target-swapped) more than the positives (specificity gap < 0 in every family), and random comparison heads move
the metric as much: the head with the cleanest induction attention is not a head-specific induction writer here.
So the mechanism does not replicate across models (cross-model falsified).
"""

from claims.conftest import GEMMA3_INDUCTION, INDUCTION_TOP_HEAD
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gemma3-induction-L5H1",
    "L5H1 writes the induction completion at the final position (head-specific, replicated, held out)",
    "L5H1", GEMMA3_INDUCTION, stages=("replication", "heldout"), mechanism=INDUCTION_TOP_HEAD,
    expect="rejected").tests()

TestCharacterization = HeadClaim(
    "gemma3-induction-L5H1-characterization",
    "L5H1's zero ablation lowers the induction completion in every characterization family (seeds 20-22), "
    "head-specifically, with its attention to the source aligned with its effect",
    "L5H1", GEMMA3_INDUCTION, stages=("characterization",), expect="rejected").tests()
