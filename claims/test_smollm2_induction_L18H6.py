"""SmolLM2-135M-Instruct: L18H6, the top induction-attention head (0.83).

Claim: it writes the induction completion at the final position, head-specifically, across seeds,
held-out families and characterization families. Its attention score is only the descriptive prior.

Measured: replication and held-out reach candidate; characterization is insufficient (the signed effect is
negative on the multi-distractor family), so that stage asserts the rejection.
"""

import pytest

from claims import induction_recipe as recipe

CLAIM = dict(
    statement="L18H6 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    units=["L18H6"],
    model="smollm2-135m-instruct",
    hook="blocks.18.attn.hook_z",
)
pytestmark = pytest.mark.claim("smollm2-induction-L18H6", **CLAIM)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L18H6", "smollm2", "smollm2_induction")
# The evidence at this stage does not support the claim (see the docstring): the test asserts the rejection.
test_characterization = pytest.mark.claim("smollm2-induction-L18H6", **{**CLAIM, "expect": "rejected"})(
    test_characterization)
