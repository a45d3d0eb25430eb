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


# Negation x SAE (SELF-GROUND's E002 -> E004, claims/negation_recipe.py): one study per model and SAE, its banks,
# rankings and evaluations computed once per process and shared by every stage of the negation claims.
# SmolLM2 on 2 CPU cores: 40 calibration candidates per family (~70 kept, E003 kept 69 of 240); the Pythia seed
# study, written for CUDA, keeps E003's 80.
SMOLLM2_NEGATION_CANDIDATES = 40
PYTHIA_SAE_RELEASE = "pythia-70m-deduped-res-sm"
PYTHIA_SAE_ID = "blocks.2.hook_resid_post"


@pytest.fixture(scope="session")
def smollm2_negation(smollm2, smollm2_sae, tmp_path_factory):
    from claims.negation_recipe import NegationStudy

    return NegationStudy(smollm2, smollm2_sae, tmp_path_factory.mktemp("frozen-smollm2-negation"),
                         candidates_per_family=SMOLLM2_NEGATION_CANDIDATES)


@pytest.fixture(scope="session")
def pythia_70m_deduped(mechclaim_models):
    return mechclaim_models("pythia-70m-deduped")


@pytest.fixture(scope="session")
def pythia_selfground_sae(pythia_70m_deduped, mechclaim_runtime):
    """SELF-GROUND's verified SAE (SAELens hub release); skipped with the reason when the hub cannot be reached."""
    from pytest_mechclaim.models import ModelUnavailable
    from pytest_mechclaim.saes import load_sae_from_hub

    try:
        return load_sae_from_hub(PYTHIA_SAE_RELEASE, PYTHIA_SAE_ID, device=mechclaim_runtime.device,
                                 offline=mechclaim_runtime.offline)
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def pythia_negation(pythia_70m_deduped, pythia_selfground_sae, tmp_path_factory):
    from claims.negation_recipe import NegationStudy

    return NegationStudy(pythia_70m_deduped, pythia_selfground_sae, tmp_path_factory.mktemp("frozen-pythia-negation"))
