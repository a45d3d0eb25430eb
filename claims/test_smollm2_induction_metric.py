"""SmolLM2-135M-Instruct: is the logit contrast logit[S[-1]] - logit[S[0]] a calibrated induction metric?

local-mi-lab's gate (seed-systems §2.6 I): positive families must beat the hardest control family by > 0.25, the
hardest control must stay below the weakest positive, >= 80% of positive examples and <= 20% of each control
family's examples score > 0. Scored unpatched on local-mi-lab's 72-example calibration bank and on the discovery
bank the head claims use. When it fails, no causal search over heads may run (``search_permission``), which is why
the head claims test attention-ranked heads instead of searching.
"""

from claims.conftest import SMOLLM2_INDUCTION

TestClaim = SMOLLM2_INDUCTION.metric_claim(
    "smollm2-induction-metric",
    "The target-minus-foil logit contrast separates induction positives from controls on SmolLM2",
    expect="rejected")
