"""Planted false claim: L1H1 has exactly L1H0's attention pattern and writes where nothing reads.

Its attention looks like an induction head; the evidence must reject it. The test passes only if it does.
"""

import pytest

from claims.groundtruth_common import (DISCOVERY_SEEDS, HELDOUT_FAMILIES, HELDOUT_SEEDS, record_head_claim,
                                       run_candidate_gates, tasks_for)

pytestmark = pytest.mark.claim(
    "gt-decoy-L1H1",
    statement="L1H1 (same attention pattern as the induction head) is an induction head",
    level="candidate",
    expect="rejected",
    units=["L1H1"],
    model="groundtruth:induction",
)


@pytest.mark.replication
def test_replication(mechclaim, groundtruth_model):
    rows = record_head_claim(mechclaim, groundtruth_model, "L1H1", tasks_for(DISCOVERY_SEEDS))
    run_candidate_gates(mechclaim, rows)


@pytest.mark.heldout
def test_heldout(mechclaim, groundtruth_model):
    rows = record_head_claim(mechclaim, groundtruth_model, "L1H1",
                             tasks_for(HELDOUT_SEEDS, families=HELDOUT_FAMILIES))
    run_candidate_gates(mechclaim, rows)
