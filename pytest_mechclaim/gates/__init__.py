"""Evidence gates: pure functions from rows to a GateResult. No torch, no pytest.

Every gate returns a result with its name, value, threshold, pass/fail, the highest status the claim can still
reach given this result (``caps_at``), a one-line reason, and the coordinates of its worst rows. A gate never
raises on bad evidence: missing or unusable input (no rows at all included) gives ``caps_at=BLOCKED`` with the
reason (fail closed). A threshold outside its allowed range (``thresholds.RANGES``: NaN, inf, a negative minimum,
a share outside [0, 1], ...) is not evidence but a mistake: the gate raises ``GateThresholdError``.

The value, threshold and comparison a result shows are the quantity that decided it: a composite gate that fails on
a sub-check shows that sub-check (all of them in ``details["checks"]``), never a passing-looking headline.

Which rows a gate reads:
* gates about the claimed unit read rows with ``unit_set == "target"`` and ``status == "ok"``; excluded rows are
  counted in ``details`` (the verdict's row accounting decides what they cost);
* ``unit_controls``, ``paired_test`` and ``strong_floor`` also read the control unit sets
  (``random_seed_*``, ``density_matched_seed_*``, ``bottom_active``, random comparison heads ...).

Movement gates take ``direction`` (``gates.direction``: the predicted sign; default ``"carries"``); gates with a
mean also report a prompt-clustered bootstrap CI and need its lower bound above the floor (``gates.uncertainty``).
Thresholds default to the seed systems' values (reference/seed-systems.md §1.9, §2.6, §3.5, §5).

Modules: specificity (paired controls), signed (signed effect, strata), family, replication (and unit controls),
telemetry (norm drift, decoded-delta ratio, baseline calibration), strong (floor, null, paired test), calibration
(metric calibration), cross_model (one mechanism's per-model verdicts, not rows).
"""

from ._core import MIN_ABS_DELTA, WORST_K, GateResult, first_failing
from ._core import check as sub_check
from .calibration import MetricCalibrationRow, metric_calibration
from .cross_model import ModelVerdict, cross_model_replication
from .direction import DIRECTIONS, directed_effect, directed_gap, expected_sign, signed_delta
from .family import FAMILY_SCORES, control_family_gap, family_minimum, normalized_effect, normalized_effect_of
from .replication import REPLICATION_AXES, replication, seed_replication, unit_controls
from .signed import signed_effect, stratum_minimum
from .specificity import collateral_ratio, multi_control_minimum, positive_share, specificity_gap, uninformative_cells
from .strong import STRONG_REQUIRES, empirical_null, paired_test, percentile_rank, strong_floor
from .telemetry import baseline_calibration, decoded_delta_ratio, norm_drift
from .thresholds import RANGES, GateThresholdError, Range, check_thresholds
from .uncertainty import clustered_ci, holm_adjust

__all__ = [
    "ModelVerdict", "cross_model_replication",
    "DIRECTIONS",
    "FAMILY_SCORES",
    "GateResult",
    "GateThresholdError",
    "MIN_ABS_DELTA",
    "MetricCalibrationRow",
    "RANGES",
    "REPLICATION_AXES",
    "Range",
    "STRONG_REQUIRES",
    "WORST_K",
    "baseline_calibration",
    "check_thresholds",
    "clustered_ci",
    "collateral_ratio",
    "control_family_gap",
    "decoded_delta_ratio",
    "directed_effect",
    "directed_gap",
    "empirical_null",
    "expected_sign",
    "family_minimum",
    "first_failing",
    "holm_adjust",
    "metric_calibration",
    "multi_control_minimum",
    "norm_drift",
    "normalized_effect",
    "normalized_effect_of",
    "paired_test",
    "percentile_rank",
    "positive_share",
    "replication",
    "seed_replication",
    "signed_delta",
    "signed_effect",
    "specificity_gap",
    "stratum_minimum",
    "strong_floor",
    "sub_check",
    "uninformative_cells",
    "unit_controls",
]
