"""Gemma-3-270M: L11H2, the second induction-attention head (0.59). Its attention score is only the prior."""

from claims.conftest import GEMMA3_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gemma3-induction-L11H2",
    "L11H2 writes the induction completion at the final position (head-specific, replicated, held out)",
    "L11H2", GEMMA3_INDUCTION).tests()
