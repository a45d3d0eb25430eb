"""Planted false claim: evidence from an intervention that shoves the residual norm.

In the ``norm_shove`` variant L1H1 copies like the induction head and also writes a vector ~15x the residual's norm
into dimensions nothing reads. Ablating it does move the prediction, but every intervention also changes the
residual norm by ~90%: such evidence is off-distribution and cannot support a candidate.
"""

import pytest

from claims.groundtruth_common import DISCOVERY_SEEDS, record_head_claim, run_candidate_gates, tasks_for
from pytest_mechclaim.groundtruth import build_induction_model

pytestmark = pytest.mark.claim(
    "gt-norm-shove-L1H1",
    statement="L1H1 of the norm-shove variant is an induction head, shown by ablation and patching",
    level="candidate",
    expect="rejected",
    units=["L1H1"],
    model="groundtruth:induction-norm-shove",
)


@pytest.mark.replication
def test_replication(mechclaim):
    model = build_induction_model(variant="norm_shove")
    rows = record_head_claim(mechclaim, model, "L1H1", tasks_for(DISCOVERY_SEEDS))
    run_candidate_gates(mechclaim, rows)
