"""The fast path reads a model's parts from its modules (``engine/parts.py``): Gemma-style parts (QK norm, sandwich
norms, sliding-window attention, a rotary table per layer) are reproduced exactly, and a part it does not reproduce
sends ``path="auto"`` to the reference path with the part named, before any self-check."""

from __future__ import annotations

import pytest
import torch

from pytest_mechclaim.engine import ActivationCache, EngineError, head_evidence, resid_evidence
from tests.test_engine import _random_tasks, _tiny_model, assert_same_rows, both_paths

GEMMA_LIKE = dict(use_qk_norm=True, use_normalization_before_and_after=True, use_local_attn=True,
                  attn_types=["local", "global", "local"], window_size=4, rotary_base_local=100)


@pytest.mark.parametrize("metric", ["logit_contrast", "prob_gap"])
def test_gemma_like_parts_fast_path_equals_reference(metric):
    """Prompts of 9 tokens against a window of 4: the local layers' queries at the end cannot see the start."""
    model, tasks = _tiny_model(**GEMMA_LIKE), _random_tasks()
    cache = ActivationCache()
    arch = cache.arch(model)
    assert [layer.window for layer in arch.layers] == [4, None, 4]
    assert {layer.q_norm.kind for layer in arch.layers} == {layer.ln2_post.kind for layer in arch.layers} == {"RMS"}
    acts = cache.get(model, [tasks[0].pair.clean])[tuple(tasks[0].pair.clean)]
    assert acts.cos[0] is acts.cos[2] and not torch.equal(acts.cos[0], acts.cos[1])  # local and global bases
    heads = [f"L{l}H{h}" for l in range(3) for h in (0, 3)]
    assert_same_rows(*both_paths(head_evidence, model, tasks, heads, ("clean_to_corrupt", "zero", "mean"),
                                 ("final", "distractor"), metric=metric, cache=cache))
    assert_same_rows(*both_paths(resid_evidence, model, tasks, [0, 2], ("final", "all"), metric=metric,
                                 cache=ActivationCache()))


class MeanAbsNorm(torch.nn.Module):
    """A norm by the mean absolute value: neither LayerNorm nor RMSNorm."""

    def __init__(self, d):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x / x.abs().mean(-1, keepdim=True) * self.w


def _custom_norm(model):
    model.blocks[1].ln2 = MeanAbsNorm(model.cfg.d_model)


def _doubled_mlp(model):
    mlp = model.blocks[0].mlp
    mlp.forward = lambda x, forward=mlp.forward: 2 * forward(x)


def _extra_part(model):
    block = model.blocks[2]
    block.adapter = torch.nn.Linear(model.cfg.d_model, model.cfg.d_model)
    block.register_forward_hook(lambda module, args, out: out + module.adapter(out))


def _subclassed_attention(model):
    from transformer_lens.components import GroupedQueryAttention

    attn = model.blocks[0].attn
    attn.__class__ = type("ScaledAttention", (GroupedQueryAttention,),
                          {"forward": lambda self, *a, **k: 2 * GroupedQueryAttention.forward(self, *a, **k)})


@pytest.mark.parametrize("edit,reason", [
    (_custom_norm, "blocks.1.ln2 (MeanAbsNorm) is a norm the fast path does not reproduce"),
    (_doubled_mlp, "blocks.0.mlp (GatedMLP) is an MLP the fast path does not reproduce"),
    (_extra_part, "blocks.2.adapter (Linear) is a part the fast path does not reproduce"),
    (_subclassed_attention, "blocks.0.attn: attention ScaledAttention is not one the fast path reproduces"),
], ids=["norm", "mlp", "block-part", "attention"])
def test_an_unreproduced_part_sends_auto_to_the_reference_path_with_its_name(edit, reason):
    model, tasks = _tiny_model(**GEMMA_LIKE), _random_tasks(n_tasks=2)
    assert head_evidence(model, tasks, ["L0H0"], ("zero",), cache=ActivationCache()).meta["path"] == "fast"
    with torch.no_grad():
        edit(model)
    with pytest.warns(UserWarning, match="fast path unavailable"):
        auto = head_evidence(model, tasks, ["L0H0"], ("zero",), cache=ActivationCache())
    assert auto.meta["path"].startswith(f"reference (fast path: {reason}")
    ref = head_evidence(model, tasks, ["L0H0"], ("zero",), path="reference")
    assert [r.patched for r in auto] == [r.patched for r in ref]
    with pytest.raises(EngineError, match="fast path unavailable"):
        head_evidence(model, tasks, ["L0H0"], ("zero",), path="fast", cache=ActivationCache())
