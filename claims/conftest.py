"""Session fixtures shared by the claims. Each model's discovery stage (calibration + frozen candidate set) runs
once per process; each xdist worker runs its own, deterministically, and freezes before any later stage scores."""

import pytest

from claims import induction_recipe as recipe

# local-mi-lab's `auto_even_6` layers on GPT-2 small (seed-systems §2.1) and its published replicated heads (§2.9);
# the negative controls are its held-out set's no-effect controls as far as the write-up names them.
GPT2_LAYERS = (0, 2, 4, 7, 9, 11)
GPT2_REPLICATED = ("L7H7", "L9H11", "L7H11", "L7H0", "L0H8")
GPT2_NEGATIVE_CONTROLS = ("L11H0",)


@pytest.fixture(scope="session")
def smollm2_induction(smollm2, tmp_path_factory):
    return recipe.select_by_attention(smollm2, "smollm2-induction", tmp_path_factory.mktemp("frozen-smollm2"))


@pytest.fixture(scope="session")
def gpt2_small(mechclaim_models):
    return mechclaim_models("gpt2-small")


@pytest.fixture(scope="session")
def gpt2_induction(gpt2_small, tmp_path_factory):
    return recipe.preregistered(gpt2_small, "gpt2-induction", tmp_path_factory.mktemp("frozen-gpt2"),
                                GPT2_REPLICATED, GPT2_NEGATIVE_CONTROLS,
                                source="local-mi-lab head-specific sweep, seeds 0-2 (seed-systems §2.9)",
                                n_per_family=8)
