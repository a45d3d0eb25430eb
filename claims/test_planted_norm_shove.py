"""Planted false claim: evidence from an intervention that shoves the residual norm.

In the ``norm_shove`` variant L1H1 copies like the induction head and also writes a vector ~15x the residual's norm
into dimensions nothing reads. Ablating it does move the prediction, but every intervention also changes the
residual norm by ~90%: such evidence is off-distribution and cannot support a candidate.
"""

from functools import partial

from pytest_mechclaim.groundtruth import build_induction_model
from pytest_mechclaim.kinds import GroundTruthBank, HeadClaim, HeadDiscovery, Preregistered

NORM_SHOVE = HeadDiscovery("groundtruth:induction-norm-shove", Preregistered(("L1H1",)), GroundTruthBank(),
                           load=partial(build_induction_model, variant="norm_shove"))

TestClaim = HeadClaim(
    "gt-norm-shove-L1H1", "L1H1 of the norm-shove variant is an induction head, shown by ablation and patching",
    "L1H1", NORM_SHOVE, stages=("replication",), expect="rejected").tests()
