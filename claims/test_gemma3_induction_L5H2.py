"""Gemma-3-270M: L5H2, the third induction-attention head (0.53). Its attention score is only the prior.

Measured: rejected at every stage (the signed effect is not positive and matched controls move more).
"""

from claims.conftest import GEMMA3_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gemma3-induction-L5H2",
    "L5H2 writes the induction completion at the final position (head-specific, replicated, held out)",
    "L5H2", GEMMA3_INDUCTION, expect="rejected").tests()
