"""Hypothesis properties of the gates: order invariance, controls that move as much never pass, scale invariance."""

from __future__ import annotations

import random

from hypothesis import given, settings
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
                                norm_drift=abs(t) / 20, norm_warning=abs(t) > 9))
    return rows


ROW_GATES = (gates.specificity_gap, gates.positive_share, gates.family_minimum, gates.multi_control_minimum,
             gates.collateral_ratio, gates.norm_drift, gates.seed_replication)
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
