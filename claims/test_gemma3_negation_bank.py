"""Gemma-3-270M x SELF-GROUND's negation bank (E003's rule), calibrated on Gemma's own tokenizer and baseline.

Whether the model does the contrasts before any intervention ("The movie was not good. The movie was" -> " bad"
over " good", >= 10 tasks per family with margin 0.1): the precondition of any negation-feature claim. No SAE claim
follows on Gemma: training one on a Gemma residual layer does not fit this CPU budget (measured in the README).
"""

from claims.conftest import GEMMA3_NEGATION
from pytest_mechclaim.kinds import SAEFeatureClaim
from pytest_mechclaim.models import GEMMA3

TestNegationBank = SAEFeatureClaim(
    "gemma3-negation-bank",
    "Gemma-3-270M does the negation bank's contrasts before any intervention (>= 10 tasks per family in the "
    "intended direction with margin 0.1), on its own tokenizer", GEMMA3_NEGATION, calibration=("e003", "heldout"),
    model=GEMMA3.name).tests()
