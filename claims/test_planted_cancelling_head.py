"""Planted false claim: a head whose effect cancels across families.

In the ``cancelling`` variant L1H1 copies the source token with weight +1 for target indices 0-11 and -0.5 for
12-15: ablating it moves every target a lot (so movement-based gaps pass), helping most families and hurting the
rest. Only the per-family signed effect shows it.
"""

from functools import partial

from pytest_mechclaim.groundtruth import CANCEL_SPLIT, build_induction_model
from pytest_mechclaim.kinds import GroundTruthBank, HeadClaim, HeadDiscovery, Preregistered

CANCELLING = HeadDiscovery("groundtruth:induction-cancelling", Preregistered(("L1H1",)),
                           GroundTruthBank(n_per_family=12, split_by_target_index=CANCEL_SPLIT),
                           load=partial(build_induction_model, variant="cancelling"))

TestClaim = HeadClaim(
    "gt-cancelling-L1H1", "L1H1 of the cancelling variant supports the induction prediction across sequence families",
    "L1H1", CANCELLING, stages=("replication",), expect="rejected").tests()
