"""The SAE compatibility gate: it blocks every mismatch on real models and real SAELens SAEs, and passes real fits."""

from __future__ import annotations

import copy

import pytest
import torch

from pytest_mechclaim.fixture import MechClaim
from pytest_mechclaim.groundtruth import induction_tasks
from pytest_mechclaim.saes import SMOLLM2_SAE_HOOK, offline_corpus, pack_tokens
from pytest_mechclaim.sae_compat import (
    GATE_NAME,
    check_sae_compatibility,
    metadata_problems,
    parse_hook,
)
from pytest_mechclaim.spec import parse_claim_marker
from pytest_mechclaim.status import Status


@pytest.fixture(scope="module")
def groundtruth_prompts():
    """The ground-truth induction claim's own clean prompts (one family: equal lengths)."""
    tasks = induction_tasks(0, n_per_family=6, families={"repeat_long": (12, 10)})
    return torch.tensor([t.pair.clean for t in tasks])


@pytest.fixture(scope="module")
def smollm2_prompts(smollm2):
    """Held-out English text (documents the SAEs never trained on), 4 rows of 64 tokens."""
    _, held_out = offline_corpus().split()
    return torch.tensor(pack_tokens(smollm2.tokenizer, held_out[:40], context_size=64)[:4])


def sae_declaring(sae, **metadata):
    out = copy.deepcopy(sae)
    for key, value in metadata.items():
        setattr(out.cfg.metadata, key, value)
    return out


def assert_blocked(result, *fragments):
    assert result.name == GATE_NAME and not result.passed and result.caps_at == Status.BLOCKED, result.reason
    for fragment in fragments:
        assert fragment in result.reason, result.reason


# ------------------------------------------------------------------------------------------ passes
def test_handset_sae_passes_on_its_own_model(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    result = check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts)
    assert result.passed and result.caps_at == Status.STRONG, result.reason
    quality = result.details["quality"]
    assert result.value == quality["explained_variance"] > 0.999
    assert quality["ce_loss_recovered"] > 0.999
    assert result.details["problems"] == {"structure": [], "metadata": [], "quality": []}


@pytest.mark.slow
def test_real_smollm2_sae_passes_and_reports_its_quality(smollm2, smollm2_sae_if_built, smollm2_prompts):
    result = check_sae_compatibility(smollm2, smollm2_sae_if_built, smollm2_prompts)
    q = result.details["quality"]
    print(f"\nSmolLM2 SAE at {SMOLLM2_SAE_HOOK} on {q['n_tokens']} held-out tokens: explained variance "
          f"{q['explained_variance']:.3f}, CE loss recovered {q['ce_loss_recovered']:.3f} (clean "
          f"{q['ce_loss_clean']:.3f}, with SAE {q['ce_loss_with_sae']:.3f}, zero-ablated "
          f"{q['ce_loss_zero_ablation']:.3f}), L0 {q['l0']:.1f}, dead share {q['dead_share']:.3f}")
    assert result.passed and result.caps_at == Status.STRONG, result.reason
    # The same SAE read one layer later is blocked.
    assert_blocked(check_sae_compatibility(smollm2, smollm2_sae_if_built, smollm2_prompts,
                                           hook_name="blocks.16.hook_resid_post"), "layer 15 != 16")


# ------------------------------------------------------------------------------------------ blocks: metadata
def test_blocks_a_different_checkpoint(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    # The names normalize (lowercase, after the last '/'): pythia-70m and pythia-70m-deduped are different models.
    wrong = sae_declaring(groundtruth_sae, model_name="EleutherAI/pythia-70m")
    assert_blocked(check_sae_compatibility(groundtruth_model, wrong, groundtruth_prompts,
                                           model_name="pythia-70m-deduped"),
                   "checkpoint mismatch", "'EleutherAI/pythia-70m' (pythia-70m)", "(pythia-70m-deduped)")
    right = sae_declaring(groundtruth_sae, model_name="EleutherAI/pythia-70m-deduped")
    assert check_sae_compatibility(groundtruth_model, right, groundtruth_prompts,
                                   model_name="pythia-70m-deduped").passed


def test_blocks_an_sae_without_declared_model_or_hook(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    anonymous = sae_declaring(groundtruth_sae, model_name=None)
    assert_blocked(check_sae_compatibility(groundtruth_model, anonymous, groundtruth_prompts),
                   "declares no model_name")
    hookless = sae_declaring(groundtruth_sae, hook_name=None)
    assert_blocked(check_sae_compatibility(groundtruth_model, hookless, groundtruth_prompts),
                   "declares no hook_name", "no hook to read")


def test_blocks_the_handset_sae_read_at_the_wrong_layer(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    result = check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts,
                                     hook_name="blocks.1.hook_resid_post")
    assert_blocked(result, "hook mismatch", "layer 0 != 1")


def test_blocks_a_real_sae_trained_on_another_layer(smollm2, smollm2_layer3_sae, smollm2_prompts):
    result = check_sae_compatibility(smollm2, smollm2_layer3_sae, smollm2_prompts, hook_name=SMOLLM2_SAE_HOOK)
    assert_blocked(result, "SAE trained on 'blocks.3.hook_resid_post'", "layer 3 != 15")
    diagnostic = check_sae_compatibility(smollm2, smollm2_layer3_sae, smollm2_prompts, hook_name=SMOLLM2_SAE_HOOK,
                                         allow_mismatch=True)
    assert not diagnostic.passed and diagnostic.caps_at == Status.INSUFFICIENT
    assert diagnostic.reason.startswith("diagnostic only") and "layer 3 != 15" in diagnostic.reason


def test_bridge_hook_aliases_resolve_to_the_same_hook_point(smollm2, smollm2_layer3_sae):
    # blocks.3.hook_out is the bridge's canonical name of blocks.3.hook_resid_post: no mismatch.
    assert metadata_problems(smollm2, smollm2_layer3_sae, "blocks.3.hook_out", None)[0] == []
    problems, _ = metadata_problems(smollm2, smollm2_layer3_sae, "blocks.4.hook_out", None)
    assert len(problems) == 1 and "hook mismatch" in problems[0]


def test_blocks_a_weight_processing_mismatch(smollm2, smollm2_layer3_sae, smollm2_prompts):
    # SAELens' runner default for HookedTransformer: trained on unprocessed weights, read on a centred model.
    unprocessed = sae_declaring(smollm2_layer3_sae, model_from_pretrained_kwargs={"center_writing_weights": False})
    problems, details = metadata_problems(smollm2, unprocessed, "blocks.3.hook_resid_post", None)
    assert problems == ["weight processing mismatch (SAE value, model value): center_writing_weights=False/True"]
    assert details["model_processing"]["center_writing_weights"] is True


# ------------------------------------------------------------------------------------------ blocks: structure
def test_blocks_a_width_mismatch_even_when_overridden(groundtruth_model, smollm2_layer3_sae, groundtruth_prompts):
    for allow in (False, True):
        result = check_sae_compatibility(groundtruth_model, smollm2_layer3_sae, groundtruth_prompts,
                                         hook_name="blocks.0.hook_resid_post", allow_mismatch=allow)
        assert_blocked(result, "width mismatch: SAE d_in 576 != activation width 64", "checkpoint mismatch")


def test_blocks_a_hook_the_model_does_not_have(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    assert_blocked(check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts,
                                           hook_name="blocks.7.hook_resid_post"),
                   "'blocks.7.hook_resid_post' does not exist")


def test_blocks_non_finite_weights_even_when_overridden(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    broken = copy.deepcopy(groundtruth_sae)
    with torch.no_grad():
        broken.W_dec[3, 20] = float("nan")
    for allow in (False, True):
        assert_blocked(check_sae_compatibility(groundtruth_model, broken, groundtruth_prompts, allow_mismatch=allow),
                       "non-finite SAE weights: W_dec")


# ------------------------------------------------------------------------------------------ blocks: quality
def test_blocks_a_matching_but_poor_sae_on_the_claims_prompts(smollm2, smollm2_layer3_sae, smollm2_prompts):
    result = check_sae_compatibility(smollm2, smollm2_layer3_sae, smollm2_prompts)
    assert result.details["problems"]["metadata"] == [] and result.details["problems"]["structure"] == []
    q = result.details["quality"]
    print(f"\n2k-token layer-3 SAE: EV {q['explained_variance']:.3f}, CE recovered {q['ce_loss_recovered']:.3f}, "
          f"L0 {q['l0']:.1f}, dead {q['dead_share']:.3f}")
    assert_blocked(result, "explained variance")


def test_quality_thresholds_are_real_floors(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    # The hand-set SAE reconstructs almost exactly; a dead-share ceiling below what it shows on these prompts and an
    # L0 ceiling below its L0 both block it.
    from pytest_mechclaim.sae_compat import SAECompatThresholds

    base = check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts).details["quality"]
    strict = SAECompatThresholds(max_dead_share=base["dead_share"] / 2, max_l0_fraction=base["l0"] / 88 / 2)
    assert_blocked(check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts,
                                           thresholds=strict), "dead-feature share", "L0")


def test_the_gate_table_shows_the_failing_quality_sub_check(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    """Explained variance passes (0.999+) but CE recovered misses an impossible floor: the shown value, threshold
    and comparison are CE recovered's, so the table never prints a passing number next to FAIL."""
    from pytest_mechclaim.sae_compat import SAECompatThresholds

    result = check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts,
                                     thresholds=SAECompatThresholds(min_ce_loss_recovered=1.5))
    assert not result.passed
    assert result.value == result.details["quality"]["ce_loss_recovered"] and result.threshold == 1.5
    assert result.comparison == ">=" and not result.value >= result.threshold
    assert [c["name"] for c in result.details["checks"] if not c["passed"]] == ["ce_loss_recovered"]


# ------------------------------------------------------------------------------------------ override and recording
def test_override_is_diagnostic_only_even_without_a_mismatch(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    result = check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts, allow_mismatch=True)
    assert not result.passed and result.caps_at == Status.INSUFFICIENT
    assert "no mismatch found, but the override was set" in result.reason


def test_a_claim_recording_a_blocked_result_is_blocked(groundtruth_model, groundtruth_sae, groundtruth_prompts):
    spec = parse_claim_marker(("gt-feature-22",), {"statement": "feature 22 carries the previous token 22"})
    handle = MechClaim(spec, nodeid="test")
    handle.gate.add(check_sae_compatibility(groundtruth_model, groundtruth_sae, groundtruth_prompts,
                                            hook_name="blocks.1.hook_resid_post"))
    verdict = handle.verdict()
    assert verdict.status == Status.BLOCKED and "sae_compatibility: hook mismatch" in verdict.reasons[0]


def test_parse_hook():
    assert parse_hook("blocks.15.hook_resid_post") == (15, "resid_post")
    assert parse_hook("blocks.3.attn.hook_z") == (3, "z")
    assert parse_hook("hook_embed") == (None, "hook_embed")
