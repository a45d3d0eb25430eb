"""SAE quality: the spliced losses run from the SAE's layer onward and give the full forwards' numbers."""

from __future__ import annotations

import copy

import pytest
import torch

import pytest_mechclaim.sae_quality as quality_module
from pytest_mechclaim.groundtruth import BOS, INDUCTION_SAE_HOOK
from pytest_mechclaim.saes import SMOLLM2_SAE_HOOK, offline_corpus, pack_tokens
from pytest_mechclaim.sae_quality import sae_quality, tail_start


@pytest.fixture
def tail_calls(monkeypatch):
    calls = []
    real = quality_module.tail_loss

    def counted(*args, **kwargs):
        calls.append(args[3])  # the block the tail starts at
        return real(*args, **kwargs)

    monkeypatch.setattr(quality_module, "tail_loss", counted)
    return calls


def induction_rows(n_rows: int = 6):
    return torch.tensor([[BOS] + list(range(3 + i, 13 + i)) * 2 for i in range(n_rows)])


def assert_same_quality(a, b):
    for key, value in a.to_dict().items():
        assert value == pytest.approx(b.to_dict()[key], rel=1e-5, abs=1e-9), key


def test_tail_starts_at_the_block_a_residual_hook_feeds(groundtruth_model):
    assert tail_start(groundtruth_model, "blocks.0.hook_resid_pre") == 0
    assert tail_start(groundtruth_model, "blocks.0.hook_resid_post") == 1
    assert tail_start(groundtruth_model, "blocks.1.hook_resid_post") == 2  # final norm and unembedding only
    assert tail_start(groundtruth_model, "blocks.2.hook_resid_pre") is None  # no such block
    assert tail_start(groundtruth_model, "blocks.0.attn.hook_z") is None  # inside a block: full forwards


def test_handset_model_tail_equals_full_forwards(groundtruth_model, groundtruth_sae, tail_calls):
    tokens = induction_rows()
    full = sae_quality(groundtruth_model, groundtruth_sae, tokens, INDUCTION_SAE_HOOK, batch_size=4,
                       special_token_ids=[BOS], start_at_hook=False)
    assert tail_calls == []
    tail = sae_quality(groundtruth_model, groundtruth_sae, tokens, INDUCTION_SAE_HOOK, batch_size=4,
                       special_token_ids=[BOS])
    # First batch: the clean check, SAE and zero tails; second batch: SAE and zero tails, all from block 1.
    assert tail_calls == [1] * 5
    assert_same_quality(tail, full)


def test_a_model_the_tail_does_not_reproduce_gets_full_forwards(groundtruth_model, groundtruth_sae, tail_calls):
    # The model's forward applies a logit soft cap that the tail (ln_final, unembed, loss) does not: the clean
    # check fails and every spliced loss comes from a full forward.
    capped = copy.deepcopy(groundtruth_model)
    capped.cfg.output_logits_soft_cap = 2.0
    tokens = induction_rows()
    full = sae_quality(capped, groundtruth_sae, tokens, INDUCTION_SAE_HOOK, special_token_ids=[BOS],
                       start_at_hook=False)
    checked = sae_quality(capped, groundtruth_sae, tokens, INDUCTION_SAE_HOOK, special_token_ids=[BOS])
    assert tail_calls == [1]
    assert_same_quality(checked, full)
    uncapped = sae_quality(groundtruth_model, groundtruth_sae, tokens, INDUCTION_SAE_HOOK, special_token_ids=[BOS])
    assert uncapped.ce_loss_clean != pytest.approx(checked.ce_loss_clean, rel=1e-3)


def test_bridge_tail_equals_full_forwards(smollm2, smollm2_sae_if_built, tail_calls):
    """TransformerBridge has no start_at_layer: the tail calls its blocks with the clean run's arguments."""
    _, held_out = offline_corpus().split()
    tokens = torch.tensor(pack_tokens(smollm2.tokenizer, held_out[:20], context_size=24)[:2])
    full = sae_quality(smollm2, smollm2_sae_if_built, tokens, SMOLLM2_SAE_HOOK, start_at_hook=False)
    tail = sae_quality(smollm2, smollm2_sae_if_built, tokens, SMOLLM2_SAE_HOOK)
    assert tail_calls == [16] * 3
    assert_same_quality(tail, full)
