"""Planted false claim: a head whose effect cancels across families.

In the ``cancelling`` variant L1H1 copies the source token with weight +1 for target indices 0-11 and -0.5 for
12-15: ablating it moves every target a lot (so movement-based gaps pass), helping most families and hurting the
rest. Only the per-family signed effect shows it.
"""

import pytest

from claims.groundtruth_common import DISCOVERY_SEEDS, record_head_claim, run_candidate_gates, tasks_for
from pytest_mechclaim.groundtruth import CANCEL_SPLIT, build_induction_model

pytestmark = pytest.mark.claim(
    "gt-cancelling-L1H1",
    statement="L1H1 of the cancelling variant supports the induction prediction across sequence families",
    level="candidate",
    expect="rejected",
    units=["L1H1"],
    model="groundtruth:induction-cancelling",
)


@pytest.mark.replication
def test_replication(mechclaim):
    model = build_induction_model(variant="cancelling")
    tasks = tasks_for(DISCOVERY_SEEDS, split_by_target_index=CANCEL_SPLIT, n_per_family=12)
    rows = record_head_claim(mechclaim, model, "L1H1", tasks)
    run_candidate_gates(mechclaim, rows)
