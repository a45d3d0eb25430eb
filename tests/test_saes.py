"""SAEs: the offline corpus, SAELens training/saving/reloading, the build cache, the hub boundary, the hand-set SAE."""

from __future__ import annotations

import random
import socket

import pytest
import torch

from fixtures.saes import SMALL_SAE_SPEC
from pytest_mechclaim import models
from pytest_mechclaim.groundtruth import (
    BOS,
    CURRENT_TOKEN_FEATURES,
    D_VOCAB,
    INDUCTION_SAE_HOOK,
    PREV_TOKEN_FEATURES,
    build_induction_model,
)
from pytest_mechclaim.models import SMOLLM2_NAME, ModelUnavailable
from pytest_mechclaim.saes import (
    cached_sae_dir,
    load_sae_from_disk,
    load_sae_from_hub,
    offline_corpus,
    pack_tokens,
    sae_provenance,
    sae_quality,
    train_sae,
)


@pytest.fixture(scope="module")
def corpus():
    return offline_corpus()


# ------------------------------------------------------------------------------------------ corpus
def test_offline_corpus_is_deterministic_english_text_with_a_held_out_split(corpus):
    again = offline_corpus.__wrapped__()
    assert again.sha256 == corpus.sha256 and again.documents == corpus.documents
    assert len(corpus.documents) > 1500 and sum(map(len, corpus.documents)) > 1_000_000
    train, held_out = corpus.split()
    assert set(train).isdisjoint(held_out) and len(train) + len(held_out) == len(corpus.documents)
    assert 0.05 < len(held_out) / len(corpus.documents) < 0.15
    assert corpus.provenance()["sha256"] == corpus.sha256


def test_pack_tokens_makes_bos_led_rows_of_the_context_size(smollm2, corpus):
    tokenizer = smollm2.tokenizer
    rows = pack_tokens(tokenizer, corpus.documents[:20], context_size=64)
    assert rows and all(len(r) == 64 and r[0] == tokenizer.bos_token_id for r in rows)
    # Every document's tokens appear, in order, separated by BOS.
    first = tokenizer(corpus.documents[0], add_special_tokens=False)["input_ids"]
    assert rows[0][1: 1 + min(63, len(first))] == first[:63]


# ------------------------------------------------------------------------------------------ training
def test_trained_sae_is_saved_reloaded_and_carries_its_provenance(smollm2_layer3_sae, corpus):
    sae = smollm2_layer3_sae
    meta = sae.cfg.metadata
    assert meta.model_name == SMOLLM2_NAME and meta.hook_name == SMALL_SAE_SPEC.hook_name
    assert meta.exclude_special_tokens is True
    assert meta.model_from_pretrained_kwargs["compatibility_mode"] is True
    assert meta.dataset_path.endswith(corpus.sha256[:16])
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (576, SMALL_SAE_SPEC.d_sae, SMALL_SAE_SPEC.k)


def test_training_records_corpus_quality_and_is_reproducible_from_the_seed(smollm2, smollm2_layer3_sae, tmp_path,
                                                                           corpus):
    again = train_sae(smollm2, SMOLLM2_NAME, SMALL_SAE_SPEC, tmp_path / "again", corpus=corpus,
                      processing=smollm2.mechclaim_provenance.processing, quality_rows=2)
    assert torch.equal(again.W_enc, smollm2_layer3_sae.W_enc)
    assert torch.equal(again.W_dec, smollm2_layer3_sae.W_dec)
    info = sae_provenance(tmp_path / "again")
    assert info["corpus"]["sha256"] == corpus.sha256
    assert info["spec"]["seed"] == SMALL_SAE_SPEC.seed
    quality = info["quality_heldout"]
    assert set(quality) >= {"explained_variance", "ce_loss_recovered", "l0", "dead_share"}
    assert quality["l0"] == pytest.approx(SMALL_SAE_SPEC.k)  # TopK: exactly k features per token
    assert all(isinstance(v, (int, float)) for v in quality.values())


def test_load_from_disk_refuses_a_folder_without_an_sae(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json missing"):
        load_sae_from_disk(tmp_path)


# ------------------------------------------------------------------------------------------ build cache
def test_cache_builds_once_and_never_publishes_a_failed_build(tmp_path):
    calls = []

    def failing(tmp):
        tmp.mkdir()
        (tmp / "half-written").write_text("x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        cached_sae_dir(tmp_path, "sae-x", failing)
    assert not (tmp_path / "saes" / "sae-x").exists()
    assert [p.name for p in (tmp_path / "saes").iterdir() if p.is_dir()] == []

    def build(tmp):
        calls.append(tmp)
        tmp.mkdir()
        (tmp / "cfg.json").write_text("{}")

    first = cached_sae_dir(tmp_path, "sae-x", build)
    second = cached_sae_dir(tmp_path, "sae-x", build)
    assert first == second == tmp_path / "saes" / "sae-x"
    assert len(calls) == 1 and (first / "cfg.json").is_file()


# ------------------------------------------------------------------------------------------ the hub boundary
def test_hub_sae_is_unavailable_offline_without_any_connection_attempt(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network refused by the test")

    for target, name in ((socket.socket, "connect"), (socket, "getaddrinfo"), (socket, "create_connection")):
        monkeypatch.setattr(target, name, refuse)
    monkeypatch.setattr(models, "_hub_probe", {})
    with pytest.raises(ModelUnavailable, match="SAE gpt2-small-res-jb/blocks.8.hook_resid_pre needs the model hub: "
                                               "offline mode"):
        load_sae_from_hub("gpt2-small-res-jb", "blocks.8.hook_resid_pre", offline=True)
    assert attempts == []
    with pytest.raises(ModelUnavailable, match="unreachable"):
        load_sae_from_hub("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert len(attempts) == 1  # one probe, no download attempt


# ------------------------------------------------------------------------------------------ the hand-set SAE
def induction_sequences(seed: int, n: int, length: int = 24, must_contain: int | None = None):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        r = rng.sample(range(1, D_VOCAB), length)
        if must_contain is None or must_contain in r:
            out.append([BOS] + r + r)
    return torch.tensor(out)


def test_handset_sae_is_a_real_saelens_sae_that_reconstructs_the_residual(groundtruth_model, groundtruth_sae,
                                                                         tmp_path):
    from sae_lens import SAE

    assert isinstance(groundtruth_sae, SAE)
    tokens = induction_sequences(0, 8)
    quality = sae_quality(groundtruth_model, groundtruth_sae, tokens, INDUCTION_SAE_HOOK, special_token_ids=[BOS])
    assert quality.explained_variance > 0.999 and quality.ce_loss_recovered > 0.999
    groundtruth_sae.save_model(str(tmp_path))
    reloaded = SAE.load_from_disk(str(tmp_path))
    with torch.no_grad():
        _, cache = groundtruth_model.run_with_cache(tokens, names_filter=INDUCTION_SAE_HOOK)
        x = cache[INDUCTION_SAE_HOOK]
        assert torch.equal(reloaded.encode(x), groundtruth_sae.encode(x))


def test_handset_feature_t_fires_exactly_when_the_previous_token_is_t(groundtruth_model, groundtruth_sae):
    tokens = induction_sequences(1, 16)
    with torch.no_grad():
        _, cache = groundtruth_model.run_with_cache(tokens, names_filter=INDUCTION_SAE_HOOK)
        feats = groundtruth_sae.encode(cache[INDUCTION_SAE_HOOK])
    prev_feats = feats[:, 1:, PREV_TOKEN_FEATURES.start: PREV_TOKEN_FEATURES.stop]
    expected = torch.nn.functional.one_hot(tokens[:, :-1], D_VOCAB).bool()
    assert torch.equal(prev_feats > 0, expected)
    cur_feats = feats[:, :, CURRENT_TOKEN_FEATURES.start: CURRENT_TOKEN_FEATURES.stop]
    assert torch.equal(cur_feats > 0, torch.nn.functional.one_hot(tokens, D_VOCAB).bool())


def ablate_feature(sae, feature: int):
    """Remove one feature's contribution, keeping the SAE's error term (x + decode(f') - decode(f))."""
    def hook(x, hook):
        feats = sae.encode(x)
        ablated = feats.clone()
        ablated[..., feature] = 0.0
        return x + sae.decode(ablated) - sae.decode(feats)
    return hook


def test_ablating_feature_22_breaks_only_the_predictions_after_token_22(groundtruth_model, groundtruth_sae):
    model = build_induction_model()  # a private copy: hooks below must not leak into the session model
    tokens = induction_sequences(2, 12, must_contain=22)
    with torch.no_grad():
        clean = model(tokens).argmax(-1)
        ablated = model.run_with_hooks(tokens, fwd_hooks=[(INDUCTION_SAE_HOOK, ablate_feature(groundtruth_sae, 22))])
        ablated = ablated.argmax(-1)
    half = (tokens.shape[1] - 1) // 2
    second = slice(half + 1, tokens.shape[1] - 1)  # positions that predict the repeated copy's next token
    targets = tokens[:, second.start + 1: second.stop + 1]
    assert (clean[:, second] == targets).float().mean() == 1.0
    changed = ablated != clean
    at_22 = tokens == 22
    assert changed[:, second][at_22[:, second]].all(), "every prediction made at token 22 breaks"
    assert not changed[:, second][~at_22[:, second]].any(), "no other prediction changes"
    # A sequence without token 22 is untouched.
    without = induction_sequences(3, 8)
    without = without[(without != 22).all(-1)]
    with torch.no_grad():
        assert torch.equal(
            model(without).argmax(-1),
            model.run_with_hooks(without, fwd_hooks=[(INDUCTION_SAE_HOOK, ablate_feature(groundtruth_sae, 22))])
            .argmax(-1))

