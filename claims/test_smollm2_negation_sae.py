"""SmolLM2-135M-Instruct x its blocks.15 residual SAE: SELF-GROUND's negation path (E002 -> E003 -> E004).

The claim in all three forms: a handful of SAE features at ``blocks.15.hook_resid_post`` carries negation, so
editing them at the final position moves a negated prompt's antonym contrast ("The movie was not good. The movie
was" -> " bad" vs " good") more than it moves matched non-negated controls, in every family, and more than control
feature sets do. Every threshold, bank, seed and selection rule is fixed in claims/negation_recipe.py; none was
changed after seeing a result.

* ``smollm2-negation-bank``: the calibration stages: token validation, the baseline calibration table (E003's rule)
  and SAE compatibility on the discovery and held-out banks;
* ``smollm2-negation-sae-L15-uncalibrated`` (E002): 10 tasks per family, no calibration, top-5 features by
  activation gap, ablation, matched controls;
* ``smollm2-negation-sae-L15`` (E003): the baseline-calibrated bank, the same evaluation, then the frozen feature
  sets on a held-out bank seed;
* ``smollm2-negation-sae-L15-multicontrol`` (E004): the calibrated bank under all five control suites, ablate and
  amplify x2, one cell per selection mode; the ``top`` cell adds the label-permutation null (the strong floor's
  null, paired test and floor are computed in every cell, the null only where it is affordable here).

Recorded outcome (SAE spec ``cbd11c8c``; compatibility EV 0.60-0.61 on these prompts): the bank calibrates (69 of
120 candidates kept, 71 held-out); the uncalibrated claim reaches ``candidate`` on its 30 tasks; on the calibrated
bank, its held-out bank and every E004 cell the selected features have a positive specificity gap in every family
and control suite, yet the bottom-active control set moves the negated prompts' contrast 2.7x-6.3x more (while
moving its controls even more), so ``unit_controls`` falsifies them; the ``top`` cell's score ranks at the 83rd
percentile of the label-permutation null.
"""

import pytest

from claims import negation_recipe as recipe
from fixtures.saes import SAE_SEED
from pytest_mechclaim.models import SMOLLM2_NAME
from pytest_mechclaim.saes import SMOLLM2_SAE_HOOK, smollm2_sae_spec

MODEL = SMOLLM2_NAME
HOOK = SMOLLM2_SAE_HOOK
SAE = "mechclaim-trained:" + smollm2_sae_spec(SAE_SEED).dirname(SMOLLM2_NAME)
MAIN_CLAIM = "smollm2-negation-sae-L15"


class TestNegationBank:
    pytestmark = pytest.mark.claim(
        "smollm2-negation-bank",
        statement="SmolLM2 does the negation bank's contrasts before any intervention (>= 10 tasks per family in "
                  "the intended direction with margin 0.1), and the blocks.15 SAE fits those prompts",
        level="candidate", model=MODEL, hook=HOOK, sae=SAE,
    )

    @pytest.mark.calibration
    @pytest.mark.parametrize("bank", ["e003", "heldout"])
    def test_calibration(self, mechclaim, smollm2_negation, bank):
        recipe.record_calibration_stage(mechclaim, smollm2_negation, bank)


class TestUncalibrated:
    pytestmark = pytest.mark.claim(
        "smollm2-negation-sae-L15-uncalibrated",
        statement="On an uncalibrated negation bank, ablating the 5 blocks.15 SAE features most active on negated "
                  "prompts moves their antonym contrast more than matched controls' in every family",
        level="candidate", model=MODEL, hook=HOOK, sae=SAE,
    )

    @pytest.mark.discovery
    def test_discovery(self, mechclaim, smollm2_negation):
        recipe.record_discovery_stage(mechclaim, smollm2_negation, "e002", "top")


class TestCalibrated:
    pytestmark = pytest.mark.claim(
        MAIN_CLAIM,
        statement="On the baseline-calibrated negation bank, ablating the 5 blocks.15 SAE features most active on "
                  "negated prompts moves their antonym contrast more than matched controls' and than control "
                  "feature sets do, in every family, and again on a held-out bank",
        level="candidate", expect="rejected", model=MODEL, hook=HOOK, sae=SAE,
    )

    @pytest.mark.discovery
    def test_discovery(self, mechclaim, smollm2_negation):
        recipe.record_discovery_stage(mechclaim, smollm2_negation, "e003", "top", freeze_as=MAIN_CLAIM)

    @pytest.mark.heldout
    def test_heldout(self, mechclaim, smollm2_negation):
        recipe.record_heldout_stage(mechclaim, smollm2_negation, MAIN_CLAIM, "e003", "top")


class TestMultiControl:
    pytestmark = pytest.mark.claim(
        "smollm2-negation-sae-L15-multicontrol",
        statement="Some preregistered selection of 5 blocks.15 SAE features, ablated or amplified x2, moves negated "
                  "prompts' antonym contrast more than every control suite's and every family's controls",
        level="candidate", expect="rejected", model=MODEL, hook=HOOK, sae=SAE,
    )

    @pytest.mark.discovery
    @pytest.mark.parametrize("mode", recipe.SELECTION_MODES)
    def test_discovery(self, mechclaim, smollm2_negation, mode):
        recipe.record_discovery_stage(mechclaim, smollm2_negation, "e003", mode, suites=recipe.SUITES,
                                      operations=recipe.ABLATE_AMPLIFY, with_null=mode == "top")
