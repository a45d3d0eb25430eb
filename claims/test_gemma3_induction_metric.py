"""Gemma-3-270M: is the logit contrast logit[S[-1]] - logit[S[0]] a calibrated induction metric?

The same calibration as ``test_smollm2_induction_metric.py`` (local-mi-lab §2.6 I, on its 72-example seed bank and
on the discovery bank), tokenized with Gemma's own tokenizer. When it fails, no causal search over heads may run.
"""

from claims.conftest import GEMMA3_INDUCTION

TestClaim = GEMMA3_INDUCTION.metric_claim(
    "gemma3-induction-metric",
    "The target-minus-foil logit contrast separates induction positives from controls on Gemma-3-270M",
    expect="rejected")
