"""SmolLM2-135M-Instruct: L18H8, a negative control: among the three lowest induction-attention heads, in L18H6's layer.

A negative control frozen with the candidates: the suite must show it rejected.
"""

import pytest

from claims import induction_recipe as recipe

CLAIM = dict(
    statement="L18H8 writes the induction completion at the final position (head-specific, replicated, held out)",
    level="candidate",
    expect="rejected",
    units=["L18H8"],
    model="smollm2-135m-instruct",
    hook="blocks.18.attn.hook_z",
)
pytestmark = pytest.mark.claim("smollm2-induction-L18H8", **CLAIM)

test_replication, test_heldout, test_characterization = recipe.stage_tests("L18H8", "smollm2", "smollm2_induction")
