"""Planted false claim: a specificity claim whose control leaks the mechanism.

"L1H0 copies low-numbered tokens and not their mirror tokens" is false: each mirror token's code is the negation of
its twin's, and the model computes exactly the same contrast on the mirrored prompt. The mirrored control suite
therefore carries the claimed mechanism itself and moves exactly as much as the target.
"""

import pytest

from claims.groundtruth_common import DISCOVERY_SEEDS, record_head_claim, run_candidate_gates, tasks_for
from pytest_mechclaim.groundtruth import mirror_pair
from pytest_mechclaim.tasks import Task

pytestmark = pytest.mark.claim(
    "gt-leaky-control-L1H0",
    statement="L1H0 copies tokens 1-15 and not their mirror tokens 17-31",
    level="candidate",
    expect="rejected",
    units=["L1H0"],
    model="groundtruth:induction",
)


def mirrored_tasks(seeds):
    tasks = tasks_for(seeds, token_range=(1, 16), exclude_tokens=(16,))
    return [Task(t.pair, (("mirror_tokens", mirror_pair(t.pair, "mirror_tokens")),
                          ("no_repeat", dict(t.controls)["no_repeat"]))) for t in tasks]


@pytest.mark.replication
def test_replication(mechclaim, groundtruth_model):
    rows = record_head_claim(mechclaim, groundtruth_model, "L1H0", mirrored_tasks(DISCOVERY_SEEDS))
    run_candidate_gates(mechclaim, rows)
