"""SmolLM2-135M-Instruct: L23H2, the fifth induction-attention head (0.43).

Claim: it writes the induction completion at the final position, head-specifically, across seeds,
held-out families and characterization families. Its attention score is only the descriptive prior.
"""

import pytest

from claims import induction_recipe as recipe

pytestmark = pytest.mark.claim(
    "smollm2-induction-L23H2",
    statement="L23H2 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    units=["L23H2"],
    model="smollm2-135m-instruct",
    hook="blocks.23.attn.hook_z",
)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L23H2", "smollm2", "smollm2_induction")
