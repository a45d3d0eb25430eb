"""SmolLM2-135M-Instruct: L18H6, the top induction-attention head (0.83).

Claim: it writes the induction completion at the final position, head-specifically, across seeds,
held-out families and characterization families. Its attention score is only the descriptive prior.
"""

import pytest

from claims import induction_recipe as recipe

pytestmark = pytest.mark.claim(
    "smollm2-induction-L18H6",
    statement="L18H6 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    units=["L18H6"],
    model="smollm2-135m-instruct",
    hook="blocks.18.attn.hook_z",
)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L18H6", "smollm2", "smollm2_induction")
