"""Calibrated task banks and controls: token-validated tasks, induction and negation banks, baseline and metric
calibration, control prompt suites, control feature sets with empirical nulls, and held-out discipline.

One module per concern: ``schema`` (tasks, strict validation, JSONL rejections), ``negation`` and ``induction``
(the banks), ``calibration`` (unpatched scoring -> the pure calibration gates), ``controls`` (control prompt
suites), ``feature_sets`` (control feature sets and nulls, numpy only), ``heldout`` (frozen candidates,
disjointness). Torch is imported only where a model is run (``calibration``).
"""
