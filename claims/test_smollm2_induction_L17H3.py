"""SmolLM2-135M-Instruct: L17H3, the second induction-attention head (0.70).

Claim: it writes the induction completion at the final position, head-specifically, across seeds,
held-out families and characterization families. Its attention score is only the descriptive prior.
"""

import pytest

from claims import induction_recipe as recipe

pytestmark = pytest.mark.claim(
    "smollm2-induction-L17H3",
    statement="L17H3 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    units=["L17H3"],
    model="smollm2-135m-instruct",
    hook="blocks.17.attn.hook_z",
)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L17H3", "smollm2", "smollm2_induction")
