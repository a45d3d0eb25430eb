"""SmolLM2-135M-Instruct x its blocks.15 residual SAE: SELF-GROUND's negation path (E002 -> E003 -> E004).

The claim in all three forms: a handful of SAE features at ``blocks.15.hook_resid_post`` carries negation, so
editing them at the final position moves a negated prompt's antonym contrast ("The movie was not good. The movie
was" -> " bad" vs " good") more than it moves matched non-negated controls, in every family, and more than control
feature sets do. Every threshold, bank, seed and selection rule is fixed by the SAE kind
(pytest_mechclaim/kinds/sae*.py); none was changed after seeing a result.

Recorded outcome (SAE spec ``cbd11c8c``; compatibility EV 0.60-0.61 on these prompts): the bank calibrates (69 of
120 candidates kept, 71 held-out). Under the evidence policy (signed effects with prompt-clustered intervals, the
worst stratum, unit controls) every feature claim is rejected: the uncalibrated E002-like cell, which reached
``candidate`` on unsigned |delta| gaps, has a signed effect of 0.0056 whose 95% interval reaches 0 against matched
controls' 0.025, and a density-matched control set moves the metric 0.048 (falsified); on the calibrated bank, its
held-out bank and every E004 cell the signed gates and ``unit_controls`` falsify the selected features (the
bottom-active set moves the negated prompts' contrast several times more). The claims assert that rejection.
"""

from functools import partial

from claims.conftest import SMOLLM2_NEGATION
from pytest_mechclaim.fixtures.saes import SMOLLM2_SAE_REF
from pytest_mechclaim.kinds import ABLATE_AMPLIFY, SELECTION_MODES, SUITES, SAEFeatureClaim
from pytest_mechclaim.models import SMOLLM2_NAME
from pytest_mechclaim.saes import SMOLLM2_SAE_HOOK

Claim = partial(SAEFeatureClaim, study=SMOLLM2_NEGATION, model=SMOLLM2_NAME, hook=SMOLLM2_SAE_HOOK, sae=SMOLLM2_SAE_REF)

TestNegationBank = Claim(
    "smollm2-negation-bank",
    "SmolLM2 does the negation bank's contrasts before any intervention (>= 10 tasks per family in the intended "
    "direction with margin 0.1), and the blocks.15 SAE fits those prompts", calibration=("e003", "heldout")).tests()

TestUncalibrated = Claim(
    "smollm2-negation-sae-L15-uncalibrated",
    "On an uncalibrated negation bank, ablating the 5 blocks.15 SAE features most active on negated prompts moves "
    "their antonym contrast more than matched controls' in every family", bank="e002", expect="rejected").tests()

TestCalibrated = Claim(
    "smollm2-negation-sae-L15",
    "On the baseline-calibrated negation bank, ablating the 5 blocks.15 SAE features most active on negated prompts "
    "moves their antonym contrast more than matched controls' and than control feature sets do, in every family, "
    "and again on a held-out bank", heldout=True, expect="rejected").tests()

TestMultiControl = Claim(
    "smollm2-negation-sae-L15-multicontrol",
    "Some preregistered selection of 5 blocks.15 SAE features, ablated or amplified x2, moves negated prompts' "
    "antonym contrast more than every control suite's and every family's controls", modes=SELECTION_MODES,
    suites=SUITES, operations=ABLATE_AMPLIFY, null_modes=("top",), expect="rejected").tests()
