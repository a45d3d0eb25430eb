"""SmolLM2-135M-Instruct: L17H3, the second induction-attention head (0.70).

Claim: it writes the induction completion at the final position, head-specifically, across seeds,
held-out families and characterization families. Its attention score is only the descriptive prior.

Measured: rejected at every stage (random comparison heads move the metric nearly as much; the signed effect is
not positive on every held-out family; characterization falsifies it).
"""

import pytest

from claims import induction_recipe as recipe

CLAIM = dict(
    statement="L17H3 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    expect="rejected",
    units=["L17H3"],
    model="smollm2-135m-instruct",
    hook="blocks.17.attn.hook_z",
)
pytestmark = pytest.mark.claim("smollm2-induction-L17H3", **CLAIM)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L17H3", "smollm2", "smollm2_induction")
