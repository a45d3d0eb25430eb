"""Ground truth: L1H0 of the hand-set model is an induction head (it is, by construction)."""

from claims.conftest import GROUNDTRUTH
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gt-induction-L1H0",
    "L1H0 copies the token that followed the previous occurrence of the current token into the logits",
    "L1H0", GROUNDTRUTH, stages=("replication", "heldout")).tests()
