"""SmolLM2-135M-Instruct: L17H3, the second induction-attention head (0.70). Its attention score is only the prior.

Measured: rejected at every stage (random comparison heads move the metric nearly as much; the signed effect is
not positive on every held-out family; characterization falsifies it).
"""

from claims.conftest import SMOLLM2_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "smollm2-induction-L17H3",
    "L17H3 writes the induction completion at the final position (head-specific, replicated, held out)",
    "L17H3", SMOLLM2_INDUCTION, expect="rejected").tests()
