"""The engine's fast path on the real SmolLM2 (TransformerBridge, compatibility mode: folded RMSNorm, rotary with
the HF rotary tables, 9 query / 3 KV heads, gated SiLU MLP) against the plain ``run_with_hooks`` reference path.

Kept small: three short induction-style prompts with one control each, a few heads in early/middle/last layers."""

from __future__ import annotations

import random

import pytest

from pytest_mechclaim.engine import head_evidence, resid_evidence, sae_evidence
from pytest_mechclaim.tasks import PromptPair, Task
from tests.test_engine import assert_same_rows

HEADS = ("L0H0", "L18H6", "L29H8")


@pytest.fixture(scope="module")
def tasks():
    rng = random.Random(0)
    out = []
    for i in range(3):
        r = rng.sample(range(1000, 20000), 6)
        s = rng.sample([t for t in range(1000, 20000) if t not in r], 6)
        pair = PromptPair(f"ind-{i}", "induction", [1] + r + r[:3], [1] + r + s[:3], r[3], r[0],
                          alt_targets=(r[4],), positions=(("previous_occurrence", 3),) if i < 2 else ())
        control = PromptPair(f"ind-{i}-no_repeat", "no_repeat", [1] + s + r[:3][::-1], [1] + s + s[:3], r[3], r[0],
                             family_role="control", positions=(("previous_occurrence", 3),))
        out.append(Task(pair, (("no_repeat", control),)))
    return out


def test_head_fast_path_equals_reference_on_smollm2(smollm2, tasks):
    fast = head_evidence(smollm2, tasks, HEADS, ("clean_to_corrupt", "zero", "mean", "resample"),
                         ("final", "previous_occurrence"), path="fast")
    ref = head_evidence(smollm2, tasks, HEADS, ("clean_to_corrupt", "zero", "mean", "resample"),
                        ("final", "previous_occurrence"), path="reference")
    assert_same_rows(fast, ref)
    assert sum(r.ok for r in fast) == len(HEADS) * 4 * 2 * 3 - len(HEADS) * 4  # task 2 lacks the label
    assert max(abs(r.target_delta) for r in fast if r.ok) > 0.1  # the patches do move the metric


def test_probability_metric_fast_path_equals_reference_on_smollm2(smollm2, tasks):
    assert_same_rows(head_evidence(smollm2, tasks, ["L18H6"], ("clean_to_corrupt", "zero"), metric="prob_gap",
                                   path="fast"),
                     head_evidence(smollm2, tasks, ["L18H6"], ("clean_to_corrupt", "zero"), metric="prob_gap",
                                   path="reference"))


def test_resid_and_all_positions_fast_path_equals_reference_on_smollm2(smollm2, tasks):
    assert_same_rows(resid_evidence(smollm2, tasks, [0, 15, 29], path="fast"),
                     resid_evidence(smollm2, tasks, [0, 15, 29], path="reference"))
    assert_same_rows(head_evidence(smollm2, tasks[:2], ["L18H6"], ("clean_to_corrupt",), ("all",), path="fast"),
                     head_evidence(smollm2, tasks[:2], ["L18H6"], ("clean_to_corrupt",), ("all",),
                                   path="reference"))


def test_sae_fast_path_equals_reference_on_smollm2(smollm2, tasks):
    """A SAELens TopK SAE of random weights on ``blocks.15.hook_resid_post`` (timing-grade, not a trained one)."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=576, d_sae=512, k=32,
                                metadata=SAEMetadata(hook_name="blocks.15.hook_resid_post")))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.05)
        sae.W_dec.normal_(0, 0.05)
    sets = {"a": [0, 1, 2, 3, 4], "b": [100, 200, 300, 400, 500]}
    for mode in ("delta", "replace"):
        fast = sae_evidence(smollm2, tasks, sae, sets, ("ablate", ("amplify", 4.0)), mode=mode, path="fast")
        ref = sae_evidence(smollm2, tasks, sae, sets, ("ablate", ("amplify", 4.0)), mode=mode, path="reference")
        assert_same_rows(fast, ref)


def test_rank_delta_agrees_up_to_float_ties_on_smollm2(smollm2, tasks):
    """rank is a step function of the logits: among 49,152 logits a neighbour within float32 noise (~1e-5) of the
    target's can swap places between two evaluation orders, so the paths agree to one rank, not 1e-4."""
    fast = head_evidence(smollm2, tasks, ["L18H6"], ("clean_to_corrupt", "zero"), metric="rank_delta", path="fast")
    ref = head_evidence(smollm2, tasks, ["L18H6"], ("clean_to_corrupt", "zero"), metric="rank_delta",
                        path="reference")
    assert all(abs(f.patched - r.patched) <= 1 for f, r in zip(fast, ref))
    assert all(f.clean == r.clean for f, r in zip(fast, ref))
