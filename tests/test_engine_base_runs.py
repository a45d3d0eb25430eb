"""The fast path's base runs (``engine/cache.py``): lean (the forward stops after the last block, one logit row per
prompt, keys and values from the forward's own hooks) without changing what they hold, and self-checked against a
full forward once per model and prompt length."""

from __future__ import annotations

import pytest
import torch

from pytest_mechclaim.engine import ActivationCache, head_evidence
from pytest_mechclaim.engine import cache as cache_module
from pytest_mechclaim.engine.arch import Arch
from pytest_mechclaim.engine.cache import run_base, run_fast_base
from tests.test_engine import _random_tasks, _tiny_model, assert_same_rows, both_paths


def _tokens(model, n=9, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.d_vocab, (batch, n), generator=g)


def test_a_lean_base_run_holds_what_a_full_forward_holds_and_leaves_no_hooks():
    model = _tiny_model()
    arch, tokens = Arch(model), _tokens(model)
    unembedded = []
    handle = model.unembed.register_forward_hook(lambda module, args, out: unembedded.append(tuple(args[0].shape)))
    lean = run_fast_base(model, tokens, arch, full_forward=False)
    handle.remove()
    full = run_fast_base(model, tokens, arch, full_forward=True)
    assert unembedded == [(3, 1, model.cfg.d_model)]  # the last position only, once
    assert not any(hp.fwd_hooks for hp in model.hook_dict.values())  # the stopping raise removed its hooks too
    for a, b in zip(lean, full):
        assert a.tokens == b.tokens
        for name in ("resid", "z", "k", "v"):  # the same forward up to the last block
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert all(torch.equal(c, d) for c, d in zip(a.cos, b.cos))
        # The model's own ln_final and unembed on one row: equal to its full forward's row up to the matmul's
        # summation order, which can depend on the batch shape (bit-equal on SmolLM2 and Gemma in practice).
        assert torch.allclose(a.final_logits, b.final_logits, rtol=0, atol=1e-6)
    for a, b in zip(full, run_base(model, tokens)):  # the reference path's plain run
        assert torch.equal(a.final_logits, b.final_logits) and torch.equal(a.resid, b.resid)


@pytest.mark.parametrize("overrides,recomputed", [
    ({}, 0),  # rotated keys from hook_rot_k, [n, kv_head, d_head] as the tail caches them
    (dict(ungroup_grouped_query_attention=True), 3),  # hook_rot_k holds the keys repeated per query head
    (dict(positional_embedding_type="standard", rotary_dim=None, use_qk_norm=True), 3),  # hook_k precedes the norm
], ids=["from-hooks", "ungrouped-gqa", "qk-norm-without-rotary"])
def test_keys_and_values_come_from_the_forward_where_it_exposes_them(monkeypatch, overrides, recomputed):
    model, tasks = _tiny_model(**overrides), _random_tasks()
    calls = []
    keys_values = Arch.keys_values
    monkeypatch.setattr(Arch, "keys_values", lambda self, l, *a: calls.append(l) or keys_values(self, l, *a))
    acts = run_fast_base(model, _tokens(model), Arch(model), full_forward=False)
    assert len(calls) == recomputed
    kv_shape = (model.cfg.n_layers, 9, model.cfg.n_key_value_heads or model.cfg.n_heads, model.cfg.d_head)
    assert acts[0].k.shape == acts[0].v.shape == kv_shape
    assert_same_rows(*both_paths(head_evidence, model, tasks, ["L0H1", "L2H3"], ("clean_to_corrupt", "zero"),
                                 ("final", "distractor"), cache=ActivationCache()))


def test_the_self_check_runs_once_per_model_and_prompt_length(monkeypatch):
    model, cache = _tiny_model(), ActivationCache()
    checked = []
    self_check = cache_module._self_check
    monkeypatch.setattr(cache_module, "_self_check", lambda arch, acts: checked.append(
        (len(acts), len(acts[0].tokens))) or self_check(arch, acts))
    full = []
    run = cache_module.run_fast_base
    monkeypatch.setattr(cache_module, "run_fast_base", lambda model, tokens, arch, full_forward: full.append(
        (tokens.shape[0], full_forward)) or run(model, tokens, arch, full_forward))
    cache.get(model, _tokens(model, n=9, batch=5).tolist(), batch_size=2)
    # one prompt's full forward carries the check; the other four run lean, two at a time
    assert full == [(1, True), (2, False), (2, False)]
    cache.get(model, _tokens(model, n=9, batch=4, seed=1).tolist() + _tokens(model, n=7, batch=2).tolist())
    assert checked == [(1, 9), (1, 7)]
    with torch.no_grad():
        model.blocks[0].attn.W_O.mul_(0.5)  # new weights: a new entry, checked again
    cache.get(model, _tokens(model, n=9, batch=2, seed=2).tolist())
    assert checked == [(1, 9), (1, 7), (1, 9)]
    cache.clear_activations()  # runs again, lean, without a second check
    full[:] = []
    cache.get(model, _tokens(model, n=9, batch=2, seed=2).tolist())
    assert checked == [(1, 9), (1, 7), (1, 9)] and full == [(2, False)] and cache.misses == 15
