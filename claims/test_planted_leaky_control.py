"""Planted false claim: a specificity claim whose control leaks the mechanism.

"L1H0 copies low-numbered tokens and not their mirror tokens" is false: each mirror token's code is the negation of
its twin's, and the model computes exactly the same contrast on the mirrored prompt. The mirrored control suite
therefore carries the claimed mechanism itself and moves exactly as much as the target.
"""

from pytest_mechclaim.groundtruth import mirror_pair
from pytest_mechclaim.kinds import GroundTruthBank, HeadClaim, HeadDiscovery, Preregistered
from pytest_mechclaim.tasks import Task


def mirrored(tasks):
    return [Task(t.pair, (("mirror_tokens", mirror_pair(t.pair, "mirror_tokens")),
                          ("no_repeat", dict(t.controls)["no_repeat"]))) for t in tasks]


MIRRORED = HeadDiscovery("groundtruth:induction", Preregistered(("L1H0",)),
                         GroundTruthBank(token_range=(1, 16), exclude_tokens=(16,), transform=mirrored),
                         load="groundtruth_model")

TestClaim = HeadClaim(
    "gt-leaky-control-L1H0", "L1H0 copies tokens 1-15 and not their mirror tokens 17-31",
    "L1H0", MIRRORED, stages=("replication",), expect="rejected").tests()
