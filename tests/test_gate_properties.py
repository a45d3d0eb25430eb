"""Hypothesis properties of the gates: order invariance, controls that move as much never pass, scale invariance,
thresholds below their floor raise, wrong-sign rows never pass a signed gate, the shown comparison matches pass/FAIL."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytest_mechclaim import gates
from pytest_mechclaim.evidence import EvidenceRow

delta = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)
cell = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), delta, delta)


def _rows(cells, transform=lambda t, c: (t, c)):
    rows = []
    for i, (family, suite, seed, t, c) in enumerate(cells):
        t, c = transform(t, c)
        rows.append(EvidenceRow(unit="u", intervention="ablate", prompt_id=f"p{i}-s{seed}", family=f"f{family}",
                                control_suite=f"suite{suite}", seed=seed, target_delta=t, control_delta=c,
                                norm_drift=abs(t) / 20, norm_warning=abs(t) > 9, decoded_delta_ratio=abs(c) / 10,
                                strata=(("target_token", f"t{i % 3}"),)))
    return rows


ROW_GATES = (gates.specificity_gap, gates.positive_share, gates.family_minimum, gates.multi_control_minimum,
             gates.collateral_ratio, gates.norm_drift, gates.seed_replication, gates.signed_effect,
             gates.stratum_minimum, gates.decoded_delta_ratio, gates.unit_controls)
SPECIFICITY_GATES = (gates.specificity_gap, gates.positive_share, gates.family_minimum, gates.multi_control_minimum,
                     gates.collateral_ratio, gates.seed_replication)


@given(st.lists(cell, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_gates_are_invariant_to_row_order(cells, rnd):
    rows = _rows(cells)
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    for gate in ROW_GATES:
        assert gate(rows).to_dict() == gate(shuffled).to_dict(), gate.__name__


@given(st.lists(cell, min_size=1, max_size=40))
def test_no_specificity_gate_passes_when_every_control_moves_at_least_as_much(cells):
    # Make every control at least as large as its target in absolute value.
    rows = _rows(cells, lambda t, c: (t, (abs(c) + abs(t)) * (1 if c >= 0 else -1)))
    assert all(abs(r.control_delta) >= abs(r.target_delta) for r in rows)
    for gate in SPECIFICITY_GATES:
        assert not gate(rows).passed, gate.__name__


@given(st.lists(cell, min_size=1, max_size=40), st.floats(min_value=1e-3, max_value=1e3))
def test_scaling_target_and_control_by_the_same_factor_keeps_the_specificity_sign(cells, factor):
    rows = _rows(cells)
    scaled = _rows(cells, lambda t, c: (t * factor, c * factor))
    for gate in (gates.specificity_gap, gates.family_minimum, gates.multi_control_minimum):
        a, b = gate(rows), gate(scaled)
        assert a.passed == b.passed, gate.__name__
        if a.value is not None and abs(a.value) > 1e-9:
            assert (a.value > 0) == (b.value > 0), gate.__name__
    assert gates.positive_share(rows).value == gates.positive_share(scaled).value


# ---- thresholds below their floor raise -------------------------------------------------------------------------

_CALLS = {"replication": lambda **k: gates.replication([], **k),
          "empirical_null": lambda **k: gates.empirical_null(0.5, [], **k)}
_ARGUMENTS = sorted((gate, arg) for gate, table in gates.RANGES.items() for arg in table)


def _call(gate, **kwargs):
    return _CALLS.get(gate, lambda **k: getattr(gates, gate)([], **k))(**kwargs)


@pytest.mark.parametrize("gate, argument", _ARGUMENTS, ids=[f"{g}.{a}" for g, a in _ARGUMENTS])
@settings(max_examples=15, deadline=None)
@given(below=st.floats(min_value=1e-9, max_value=1e6), special=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_loosening_a_threshold_below_its_floor_raises(gate, argument, below, special):
    allowed = gates.RANGES[gate][argument]
    for value in (allowed.low - below, special) + ((allowed.high + below,) if allowed.high != math.inf else ()):
        with pytest.raises(gates.GateThresholdError):
            _call(gate, **{argument: value})
    if allowed.integer:
        with pytest.raises(gates.GateThresholdError):
            _call(gate, **{argument: allowed.low + 0.5})


# ---- wrong-sign rows never pass a signed gate --------------------------------------------------------------------


@settings(deadline=None)
@given(st.lists(cell, min_size=1, max_size=40))
# Subnormal target deltas: per-row ratios of 1e308 once overflowed collateral_ratio's mean (a raw OverflowError).
@example([(0, 0, 0, 0.0, 0.0)] * 3 + [(0, 0, 0, 2.2250738585072014e-308, 2.0)] * 2)
def test_wrong_sign_rows_never_pass_a_signed_or_directed_gate(cells):
    # Rows patch the corrupt run, so "carries" predicts an increase: make every target movement <= 0.
    rows = _rows(cells, lambda t, c: (-abs(t), c))
    for gate in (gates.signed_effect, gates.stratum_minimum, gates.specificity_gap, gates.family_minimum,
                 gates.multi_control_minimum, gates.collateral_ratio, gates.positive_share, gates.seed_replication):
        assert not gate(rows).passed, gate.__name__
    assert not gates.signed_effect(rows, direction="increase").passed


# ---- the table never shows a passing comparison next to FAIL ------------------------------------------------------


@settings(deadline=None)
@given(st.lists(cell, min_size=0, max_size=40))
def test_the_shown_comparison_agrees_with_pass_or_fail(cells):
    rows = _rows(cells)
    for gate in ROW_GATES + (gates.paired_test, gates.strong_floor, gates.normalized_effect):
        result = gate(rows)
        assert result.shown_comparison_holds() in (None, result.passed), (gate.__name__, result)
