"""Planted false claim: the true induction head, claimed to act at the wrong position.

L1H0 reads the previous occurrence through its *key*; its output matters only where it is written, at the final
position. Patching or ablating its z at the previous occurrence cannot move the final prediction.
"""

from claims.conftest import GROUNDTRUTH
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gt-wrong-position-L1H0",
    "L1H0 drives the induction prediction through its output at the previous-occurrence position",
    "L1H0", GROUNDTRUTH, stages=("replication",), expect="rejected", positions=("previous_occurrence",)).tests()
