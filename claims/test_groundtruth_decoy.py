"""Planted false claim: L1H1 has exactly L1H0's attention pattern and writes where nothing reads.

Its attention looks like an induction head; the evidence must reject it. The test passes only if it does.
"""

from claims.conftest import GROUNDTRUTH
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gt-decoy-L1H1", "L1H1 (same attention pattern as the induction head) is an induction head",
    "L1H1", GROUNDTRUTH, stages=("replication", "heldout"), expect="rejected").tests()
