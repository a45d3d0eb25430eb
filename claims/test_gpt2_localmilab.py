"""Seed study (local-mi-lab) on GPT-2 small: L7H7 as an induction head.

Runs where the hub is reachable (written for CUDA; skipped here with the reason). The write-ups' outcome, which a
user should see: L7H7 replicates over discovery seeds 0-2 (gaps 0.0884 / 0.0893 / 0.0641) and is falsified on the
held-out families and seeds 10-12; characterization (seeds 20-22) falsifies every primary head; the metric
calibration ends `metric_needs_revision` (search not allowed) because the frequency-trap control scores above the
weakest positive family. The candidate set is frozen from the write-up's replicated heads (a replication study, not a
new search); random comparison heads come from layers (0, 2, 4, 7, 9, 11) as in local-mi-lab's sweep.
"""

from claims.conftest import GPT2_INDUCTION
from pytest_mechclaim.kinds import HeadClaim

TestClaim = HeadClaim(
    "gpt2-localmilab-L7H7",
    "GPT-2 small L7H7 is a head-specific induction head that survives held-out families and seeds",
    "L7H7", GPT2_INDUCTION, stages=("calibration", "replication", "heldout", "characterization"),
    requires=("hub",),  # GPT-2 small comes from the model hub: strict mode accepts its skip where none is reachable
).tests()
