"""The allowed range of every gate threshold, and the one error a threshold outside it raises.

A threshold is not evidence: a NaN, an infinity, a negative minimum where the seed rule is ``> 0`` / ``>= 0``, a
share outside [0, 1], an alpha outside (0, 1) or a count below 1 would make a gate fail open, so the gate refuses
to run (``GateThresholdError``) instead of returning a verdict. The policy may import ``RANGES`` for its floors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

INF = math.inf


class GateThresholdError(ValueError):
    """A gate was called with a threshold (or option) outside its allowed range."""

    def __init__(self, gate: str, argument: str, value, allowed: str, rule: str = "") -> None:
        self.gate, self.argument, self.value, self.allowed, self.rule = gate, argument, value, allowed, rule
        super().__init__(f"{gate}: {argument}={value!r} is not allowed; allowed: {allowed}"
                         + (f" (seed rule: {rule})" if rule else ""))


@dataclass(frozen=True)
class Range:
    low: float
    high: float = INF
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False  # None is allowed (the check is off)
    rule: str = ""

    def describe(self) -> str:
        if self.integer:
            text = f"an integer >= {self.low:g}" + ("" if self.high == INF else f" and <= {self.high:g}")
        else:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open or self.high == INF else "]"
            high = "inf" if self.high == INF else f"{self.high:g}"
            text = f"a finite number in {left}{self.low:g}, {high}{right}"
        return text + (" or None" if self.optional else "")

    def contains(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.integer and v != int(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below


SHARE = Range(0.0, 1.0)
COUNT = Range(1, integer=True)
DENOMINATOR_FLOOR = Range(0.0, low_open=True, rule="clean - corrupt below a positive floor is noise (§6)")
GAP_MIN = Range(0.0, rule="gap > 0 (§1.9, §5, DPT014)")
CONFIDENCE = Range(0.5, 1.0, high_open=True)
RESAMPLES = Range(100, 1_000_000, integer=True)

# gate -> argument -> allowed range. Every threshold argument of every gate is listed here.
RANGES: dict[str, dict[str, Range]] = {
    "specificity_gap": {"min": GAP_MIN, "confidence": CONFIDENCE, "n_resamples": RESAMPLES},
    "positive_share": {"min": Range(0.0, 1.0, low_open=True, rule="a share >= 0 always holds")},
    "multi_control_minimum": {"min": Range(0.0, rule="every suite's gap > 0 (§1.9 multi_control)"),
                              "min_suites": Range(1, integer=True, rule=">= 2 distinct suites (§1.9)")},
    "collateral_ratio": {"max": Range(0.0, 1.0, rule="<= 1.0 candidate (§1.9)"),
                         "strong_max": Range(0.0, 1.0, rule="<= 0.5 strong (§1.9)")},
    "signed_effect": {"min": GAP_MIN, "confidence": CONFIDENCE, "n_resamples": RESAMPLES},
    "stratum_minimum": {"min": GAP_MIN, "min_prompts": COUNT},
    "normalized_effect": {"min": Range(0.0, rule="positive effect (§2.6)"), "denominator_floor": DENOMINATOR_FLOOR,
                          "max_unusable_share": SHARE, "confidence": CONFIDENCE, "n_resamples": RESAMPLES},
    "control_family_gap": {"min": Range(0.0, rule="gap > 0 (§2.6 A)"), "denominator_floor": DENOMINATOR_FLOOR},
    "family_minimum": {"min": Range(0.0, rule="family min gap > 0 (E004), >= 0 (DPT017)"),
                       "min_families": Range(1, integer=True, rule=">= 2 families for a candidate (§1.9)"),
                       "denominator_floor": DENOMINATOR_FLOOR, "confidence": CONFIDENCE, "n_resamples": RESAMPLES},
    "replication": {"min_passing": Range(1, integer=True, rule=">= 2 seeds survive (§2.6 C)"),
                    "min": Range(0.0, rule="gap > 0 (§2.6 B)"), "denominator_floor": DENOMINATOR_FLOOR},
    "unit_controls": {"min_ratio": Range(1.0, low_open=True, rule="top_vs_control_ratio >= 1.05 (§1.9)"),
                      "denominator_floor": DENOMINATOR_FLOOR},
    "norm_drift": {"max_warning_rate": Range(0.0, 1.0, rule="warning rate < 0.5 (§1.9)"),
                   "max_mean": Range(0.0, rule="mean drift <= 0.5 for strong (§1.9)"),
                   "warn_above": Range(0.0, rule="row warning above 0.5 (§1.7)")},
    "decoded_delta_ratio": {"max": Range(0.0, rule="row warning above 0.5 (§1.7)"),
                            "max_warning_rate": Range(0.0, 1.0, rule="warning rate < 0.5 (§1.9)")},
    "baseline_calibration": {"min_pass_rate": Range(0.0, 1.0, low_open=True, rule="pass rate >= 0.5 (§1.9)"),
                             "min_margin": Range(0.0, optional=True, rule="|margin| >= 0.1 (E003)"),
                             "min_per_family": Range(1, integer=True, optional=True, rule=">= 10 per family (E003)")},
    # Density-matched control *features* are an SAE notion: a head claim's strong floor asks for none (0).
    "strong_floor": {"min_tasks": COUNT, "min_families": COUNT, "min_random_sets": COUNT,
                     "min_density_sets": Range(0, integer=True)},
    "empirical_null": {"min_percentile": Range(0.0, 1.0, low_open=True, rule="percentile >= 0.95 (DPT008)"),
                       "min_null_sets": Range(1, integer=True, rule=">= 30 null sets (DPT007)"),
                       "search_size": Range(1, integer=True, optional=True)},
    "paired_test": {"alpha": Range(0.0, 1.0, low_open=True, high_open=True, rule="p <= 0.05 (DPT011)"),
                    "min_pairs": Range(1, integer=True, rule=">= 10 pairs (DPT010)"), "n_comparisons": COUNT},
    "cross_model_replication": {"min_models": Range(2, integer=True, rule="a mechanism in >= 2 models (issue 15)")},
    "metric_calibration": {"min_gap": Range(0.0, rule="gap > 0.25 (§2.6 I)"), "min_positive_fraction": SHARE,
                           "max_control_fraction": SHARE},
}


def check_thresholds(gate: str, _label: str | None = None, **values) -> None:
    """Raise ``GateThresholdError`` for the first argument outside ``RANGES[gate]`` (``_label``: the gate's shown
    name when it differs from its table key, e.g. ``seed_replication``)."""
    table = RANGES[gate]
    for argument, value in values.items():
        allowed = table[argument]
        if value is None and allowed.optional:
            continue
        # bool is an int in Python; True as a count or a minimum is a mistake, not a number.
        if isinstance(value, bool) or not isinstance(value, Real) or not allowed.contains(float(value)):
            raise GateThresholdError(_label or gate, argument, value, allowed.describe(), allowed.rule)


def check_choice(gate: str, argument: str, value, choices) -> None:
    if value not in choices:
        raise GateThresholdError(gate, argument, value, "one of " + ", ".join(map(repr, choices)))
