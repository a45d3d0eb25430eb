"""Planted false claim: the true induction head, claimed to act at the wrong position.

L1H0 reads the previous occurrence through its *key*; its output matters only where it is written, at the final
position. Patching or ablating its z at the previous occurrence cannot move the final prediction.
"""

import pytest

from claims.groundtruth_common import DISCOVERY_SEEDS, record_head_claim, run_candidate_gates, tasks_for

pytestmark = pytest.mark.claim(
    "gt-wrong-position-L1H0",
    statement="L1H0 drives the induction prediction through its output at the previous-occurrence position",
    level="candidate",
    expect="rejected",
    units=["L1H0"],
    model="groundtruth:induction",
)


@pytest.mark.replication
def test_replication(mechclaim, groundtruth_model):
    rows = record_head_claim(mechclaim, groundtruth_model, "L1H0", tasks_for(DISCOVERY_SEEDS),
                             positions=("previous_occurrence",))
    run_candidate_gates(mechclaim, rows)
