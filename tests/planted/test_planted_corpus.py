"""The planted-claim corpus as tests: soundness (no false claim reaches candidate, whatever its author does),
completeness (true claims reach candidate), the confusion matrix cell by cell, and each variant's known truth.

Not marked xfail on purpose: a failing cell is the measurement (see tests/planted/corpus.py).
"""

from __future__ import annotations

import math
from statistics import fmean

import pytest

from tests.planted import corpus as c
from tests.planted import evidence as ev
from tests.planted import models as m

NOT_CANDIDATE = ("blocked", "falsified", "insufficient")
CANDIDATE_UP = ("candidate", "strong")


def _rows(claim_id, unit_set="target", intervention=None):
    return [r for r in c.recorded_rows(claim_id) if r.unit_set == unit_set and r.ok
            and (intervention is None or r.intervention.startswith(intervention))]


# ----------------------------------------------------------------------------------------------- the corpus
def test_corpus_has_twenty_false_claims_over_twelve_failure_modes_and_eight_true_claims():
    assert len(c.FALSE) >= 20 and len(c.TRUE) >= 8
    assert len({p.why for p in c.FALSE}) >= 12
    assert all(not p.true for p in c.FALSE) and all(p.true for p in c.TRUE)
    assert any(p.id.startswith("tracr-") for p in c.FALSE) and any(p.id.startswith("tracr-") for p in c.TRUE)


@pytest.mark.parametrize("behaviour", c.BEHAVIOURS)
@pytest.mark.parametrize("claim_id", [p.id for p in c.FALSE])
def test_false_claim_never_reaches_candidate(claim_id, behaviour):
    verdict = c.verdicts()[(claim_id, behaviour)]
    assert verdict.status.label in NOT_CANDIDATE, f"{c.CLAIMS[claim_id].why}: {verdict.reasons}"


@pytest.mark.parametrize("behaviour", c.BEHAVIOURS)
@pytest.mark.parametrize("claim_id", [p.id for p in c.TRUE])
def test_true_claim_reaches_candidate(claim_id, behaviour):
    # Under "recommended" this is the brief's completeness requirement; under a single gate or none it is the
    # design's (the plugin runs the policy's gates on the recorded rows, so diligence must not matter either way).
    verdict = c.verdicts()[(claim_id, behaviour)]
    assert verdict.status.label in CANDIDATE_UP, f"{c.CLAIMS[claim_id].why}: {verdict.reasons}"


CELLS = [("false", b, s) for b in c.BEHAVIOURS for s in CANDIDATE_UP] + \
        [("true", b, s) for b in c.BEHAVIOURS for s in NOT_CANDIDATE]


@pytest.mark.parametrize("truth,behaviour,status", CELLS)
def test_confusion_matrix_cell_is_empty(truth, behaviour, status):
    """false x any behaviour x candidate/strong must be 0; true x any behaviour x blocked/falsified/insufficient
    must be 0."""
    count = c.matrix()[(truth, behaviour)][status]
    assert count == 0, "\n".join(c.offenders(truth, behaviour, (status,)))


def test_confusion_matrix_counts_every_verdict_once(capsys):
    mat = c.matrix()
    for (truth, _), counts in mat.items():
        assert sum(counts.values()) == len(c.FALSE if truth == "false" else c.TRUE)
    c.print_confusion_matrix()
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-5:] == list(c.STATUSES)
    assert all(f"{t} x {b}" in out for t in ("true", "false") for b in c.BEHAVIOURS)


# ------------------------------------------------------------------------------------ each variant's known truth
def test_decoy_never_moves_the_metric():
    assert max(abs(r.target_delta) for r in _rows("decoy-L1H1")) < 1e-4


def test_tiny_head_moves_the_metric_a_thousandth_of_the_true_head():
    tiny = fmean(abs(r.target_delta) for r in _rows("tiny-effect-L1H1"))
    true = fmean(abs(r.target_delta) for r in c.recorded_rows("tiny-effect-L1H1")
                 if r.unit == "L1H0" and r.ok)
    assert 0.5e-3 < tiny / true < 2e-3


@pytest.mark.parametrize("claim_id", ["wrong-sign-L1H1", "foil-writer-L1H1"])
def test_ablating_a_head_that_pushes_the_wrong_way_raises_target_minus_foil(claim_id):
    zero = _rows(claim_id, intervention="zero")
    assert all(r.target_delta > 1.0 for r in zero)


def test_split_heads_each_copy_only_their_own_target_indices():
    import torch

    model = m.split()
    for t in ev.tasks_for(seeds=(0,)):
        ids = torch.tensor([t.pair.clean])
        zeroed = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", _zero_head(1))])[0, -1]
        contrast = float(zeroed[t.pair.target] - zeroed[t.pair.foil])  # 10 when intact, ~0 when broken
        assert (contrast < 1.0) == (t.pair.target % 16 < m.SPLIT_AT), (t.pair.prompt_id, contrast)


def _zero_head(head):
    def hook(z, hook):
        z[:, :, head] = 0.0
        return z
    return hook


def test_layer_patch_rows_are_not_head_rows():
    assert {r.scope for r in _rows("layer-patch-for-head-L1H1")} == {"full_resid_post_layer"}


def test_tracr_weights_reproduce_the_program_without_jax():
    import torch

    model, meta = m.tracr_prev_token()
    enc, dec = meta["input_encoding"], meta["output_decoding"]
    x = [1, 2, 3, 4, 5, 2, 1]
    logits = model(torch.tensor([[enc["BOS"]] + [enc[str(t)] for t in x]]))[0]
    assert [dec[str(int(i))] for i in logits[2:].argmax(-1)] == x[:-1]
    assert meta["heads"] == {"L0H0": [meta["heads"]["L0H0"][0]], "L0H1": [meta["heads"]["L0H1"][0]]}
    assert m.TRACR_WEIGHTS.stat().st_size < 2_000_000


def test_tracr_decoy_head_is_inert_in_distribution_and_breaks_off_distribution():
    patched = _rows("tracr-decoy-L0H1", intervention="clean_to_corrupt")
    zeroed = _rows("tracr-zero-ablation-artifact-L0H1", intervention="zero")
    assert max(abs(r.target_delta) for r in patched) < 1e-4
    assert all(math.isclose(r.clean - r.patched, 1.0, abs_tol=1e-3) for r in zeroed)
