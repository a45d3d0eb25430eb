"""Ground truth: L1H0 of the hand-set model is an induction head (it is, by construction)."""

import pytest

from claims.groundtruth_common import (DISCOVERY_SEEDS, HELDOUT_FAMILIES, HELDOUT_SEEDS, record_head_claim,
                                       run_candidate_gates, tasks_for)

pytestmark = pytest.mark.claim(
    "gt-induction-L1H0",
    statement="L1H0 copies the token that followed the previous occurrence of the current token into the logits",
    level="candidate",
    units=["L1H0"],
    model="groundtruth:induction",
)


@pytest.mark.replication
def test_replication(mechclaim, groundtruth_model):
    rows = record_head_claim(mechclaim, groundtruth_model, "L1H0", tasks_for(DISCOVERY_SEEDS))
    run_candidate_gates(mechclaim, rows)


@pytest.mark.heldout
def test_heldout(mechclaim, groundtruth_model):
    rows = record_head_claim(mechclaim, groundtruth_model, "L1H0",
                             tasks_for(HELDOUT_SEEDS, families=HELDOUT_FAMILIES))
    run_candidate_gates(mechclaim, rows)
