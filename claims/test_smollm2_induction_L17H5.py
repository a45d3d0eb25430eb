"""SmolLM2-135M-Instruct: L17H5, the fourth induction-attention head (0.65).

Claim: it writes the induction completion at the final position, head-specifically, across seeds,
held-out families and characterization families. Its attention score is only the descriptive prior.
"""

import pytest

from claims import induction_recipe as recipe

pytestmark = pytest.mark.claim(
    "smollm2-induction-L17H5",
    statement="L17H5 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    units=["L17H5"],
    model="smollm2-135m-instruct",
    hook="blocks.17.attn.hook_z",
)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L17H5", "smollm2", "smollm2_induction")
