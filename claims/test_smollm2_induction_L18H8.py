"""SmolLM2-135M-Instruct: L18H8, a negative control: among the three lowest induction-attention heads, in L18H6's layer.

A negative control frozen with the candidates: the suite must show it rejected.
"""

from claims.conftest import SMOLLM2_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "smollm2-induction-L18H8",
    "L18H8 writes the induction completion at the final position (head-specific, replicated, held out)",
    "L18H8", SMOLLM2_INDUCTION, expect="rejected").tests()
