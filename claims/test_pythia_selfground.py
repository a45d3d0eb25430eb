"""Seed study (SELF-GROUND): negation x SAE features on Pythia-70M-deduped, with SELF-GROUND's verified SAE.

Model ``pythia-70m-deduped`` and the SAELens hub release ``pythia-70m-deduped-res-sm`` / ``blocks.2.hook_resid_post``.
Written to run on CUDA where the hub is reachable; without the hub the fixtures skip it with the reason. The path is
the SAE kind, the same code the SmolLM2 negation claims run (with E003's 80 candidates per family).

The write-ups' outcome, which a user should see (reference/seed-systems.md §1.14, seeds/000): all three stages stay
``insufficient_evidence`` on SELF-GROUND's ladder.
* E002 (10 per family, uncalibrated, top-5, 8 feature sets, seeds 7/11/13, ablation): top target movement 0.0342
  vs matched control 0.0547 (gap -0.0205); baseline intended-direction pass rate 7/30 = 0.233 (property 0/10,
  sentiment 5/10, state 2/10).
* E003 (240 candidates, intended direction + margin 0.1, >= 10 per family): calibration kept 69 of 240 (property 10,
  sentiment 36, state 23; 161 wrong direction, 10 below margin); evaluated target 0.628 vs control 0.719 (gap -0.091)
  at pass rate 1.0.
* E004 (multi-control, ablate + amplify, 5 selection modes x blocks 1-3): 15 cells, 0 candidates; the best cell
  (block 1, ensemble-specificity) had target 0.896 vs control 0.760 but multi-control minimum gap -0.0194 and family
  minimum gap -0.0900.
Differences a reader should expect: the bank is this project's negation bank (distinct prompts, no repeats; E002's
30 tasks were 12 prompts), not SELF-GROUND's generator, so counts and numbers differ; E004 here covers the SAE's own
layer (blocks.2) with three selection modes, each with the label-permutation null; and this ladder caps a
non-positive specificity gap, or a control feature set that moves the target as much, at ``falsified`` where
SELF-GROUND said ``insufficient_evidence``. Both are rejections: every claim below but the calibration one expects
``rejected``.
"""

from functools import partial

from claims.conftest import PYTHIA_NEGATION, PYTHIA_SAE_ID, PYTHIA_SAE_RELEASE
from pytest_mechclaim.kinds import ABLATE_AMPLIFY, SELECTION_MODES, SUITES, SAEFeatureClaim

Claim = partial(SAEFeatureClaim, study=PYTHIA_NEGATION, model="pythia-70m-deduped", hook=PYTHIA_SAE_ID,
                sae=f"{PYTHIA_SAE_RELEASE}/{PYTHIA_SAE_ID}", requires=("hub",))

TestNegationBank = Claim(
    "pythia70m-selfground-negation-bank",
    "Pythia-70M-deduped does the baseline-calibrated negation bank's contrasts (>= 10 tasks per family, margin 0.1) "
    "and SELF-GROUND's blocks.2 SAE fits those prompts (E003's calibration)", calibration=("e003",)).tests()

TestE002 = Claim(
    "pythia70m-selfground-e002",
    "On an uncalibrated negation bank, ablating the 5 blocks.2 SAE features most active on negated prompts moves "
    "their antonym contrast more than matched controls' in every family", bank="e002", expect="rejected").tests()

TestE003 = Claim(
    "pythia70m-selfground-e003",
    "On the baseline-calibrated negation bank, ablating the 5 blocks.2 SAE features most active on negated prompts "
    "moves their antonym contrast more than matched controls' and control sets do", expect="rejected").tests()

TestE004 = Claim(
    "pythia70m-selfground-e004",
    "Some preregistered selection of 5 blocks.2 SAE features, ablated or amplified x2, moves negated prompts' "
    "antonym contrast more than every control suite's and every family's controls", modes=SELECTION_MODES,
    suites=SUITES, operations=ABLATE_AMPLIFY, null_modes=SELECTION_MODES, expect="rejected").tests()
