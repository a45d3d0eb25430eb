"""The engine's fast path on the real Gemma-3-270M (TransformerBridge, compatibility mode: QK norms, sandwich norms,
RMSNorm weights as ``1 + weight``, local (window 512, rotary base 1e4) and global (base 1e6) layers, 4 query / 1 KV
heads of d_head 256, gated GELU-tanh MLP, sqrt(d_model) embedding scale) against the plain ``run_with_hooks``
reference path.

Kept small (a Gemma forward costs ~2.5 SmolLM2 ones, and the reference path unembeds all 262,144 logits): three
induction-style prompts of single-token words with one control each, heads in a local, a global and the last layer.
"""

from __future__ import annotations

import random
import warnings

import pytest

from pytest_mechclaim.engine import ActivationCache, head_evidence, resid_evidence
from pytest_mechclaim.tasks import PromptPair, Task
from tests.test_engine import assert_same_rows

HEADS = ("L2H1", "L5H2", "L17H3")  # local, global (the first), global (the last layer)
GLOBAL_LAYERS = (5, 11, 17)
WORDS = ("apple river stone cloud green music paper table window garden silver orange happy winter ocean forest "
         "yellow mountain pencil rabbit doctor bridge candle castle dragon engine farmer guitar hammer island").split()


@pytest.fixture(scope="module")
def tasks(gemma3):
    tokenizer = gemma3.tokenizer
    ids = [tokenizer.encode(" " + w, add_special_tokens=False) for w in WORDS]
    vocab = [i[0] for i in ids if len(i) == 1]
    bos = tokenizer.bos_token_id
    rng = random.Random(0)
    out = []
    for i in range(3):
        words = rng.sample(vocab, 12)
        r, s = words[:6], words[6:]
        pair = PromptPair(f"ind-{i}", "induction", [bos] + r + r[:3], [bos] + r + s[:3], r[3], r[0],
                          alt_targets=(r[4],), positions=(("previous_occurrence", 3),) if i < 2 else ())
        control = PromptPair(f"ind-{i}-no_repeat", "no_repeat", [bos] + s + r[:3][::-1], [bos] + s + s[:3], r[3],
                             r[0], family_role="control", positions=(("previous_occurrence", 3),))
        out.append(Task(pair, (("no_repeat", control),)))
    return out


def test_the_tail_math_reads_gemmas_parts(gemma3, tasks):
    import torch

    cache = ActivationCache()
    arch = cache.arch(gemma3)
    hf_attn = gemma3.blocks[0].attn.original_component
    for l, layer in enumerate(arch.layers):
        assert layer.window == (None if l in GLOBAL_LAYERS else 512)
        assert layer.attn_scale == 16.0  # query_pre_attn_scalar 256
        assert {layer.q_norm.kind, layer.k_norm.kind, layer.ln1_post.kind, layer.ln2_post.kind} == {"RMS"}
    assert torch.equal(arch.layers[0].q_norm.w, 1 + hf_attn.q_norm.original_component.weight.detach())
    acts = cache.get(gemma3, [tasks[0].pair.clean])[tuple(tasks[0].pair.clean)]
    tables = {id(c) for c in acts.cos}
    assert len(tables) == 2 and len({id(acts.cos[l]) for l in GLOBAL_LAYERS}) == 1


def test_auto_path_is_the_fast_path_on_gemma(gemma3, tasks):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the reference path warns
        rows = head_evidence(gemma3, tasks, ["L9H3"], ("zero",), cache=ActivationCache())
    assert rows.meta["path"] == "fast"


def test_head_fast_path_equals_reference_on_gemma(gemma3, tasks):
    ops, positions = ("clean_to_corrupt", "zero", "mean"), ("final", "previous_occurrence")
    fast = head_evidence(gemma3, tasks, HEADS, ops, positions, path="fast")
    assert_same_rows(fast, head_evidence(gemma3, tasks, HEADS, ops, positions, path="reference"))
    assert sum(r.ok for r in fast) == len(HEADS) * 3 * 2 * 3 - len(HEADS) * 3  # task 2 lacks the label
    assert max(abs(r.target_delta) for r in fast if r.ok) > 0.1  # the patches do move the metric


def test_probability_metric_fast_path_equals_reference_on_gemma(gemma3, tasks):
    assert_same_rows(head_evidence(gemma3, tasks, ["L9H3"], ("clean_to_corrupt", "zero"), metric="prob_gap",
                                   path="fast"),
                     head_evidence(gemma3, tasks, ["L9H3"], ("clean_to_corrupt", "zero"), metric="prob_gap",
                                   path="reference"))


def test_resid_and_all_positions_fast_path_equals_reference_on_gemma(gemma3, tasks):
    assert_same_rows(resid_evidence(gemma3, tasks, [0, 8, 17], path="fast"),
                     resid_evidence(gemma3, tasks, [0, 8, 17], path="reference"))
    assert_same_rows(head_evidence(gemma3, tasks[:2], ["L5H2"], ("clean_to_corrupt",), ("all",), path="fast"),
                     head_evidence(gemma3, tasks[:2], ["L5H2"], ("clean_to_corrupt",), ("all",),
                                   path="reference"))
