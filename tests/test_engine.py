"""The intervention engine on models whose numbers are cheap: the hand-set induction model and tiny random
HookedTransformers (rotary, RMSNorm, gated MLP, GQA; LayerNorm, biases, GELU). Every fast path is checked against
the plain ``run_with_hooks`` reference path, and the hypotheses a correct engine must satisfy are checked on both."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mechclaim.engine import (ActivationCache, EngineError, head_evidence, resid_evidence, sae_evidence)
from pytest_mechclaim.engine.execute import measure_fast, measure_reference
from pytest_mechclaim.engine.plan import Cell, SourceSets, recipe
from pytest_mechclaim.groundtruth import build_induction_model, induction_tasks
from pytest_mechclaim.tasks import PromptPair, Task

TOL = 1e-4
GT_HEADS = ("L0H0", "L0H1", "L1H0", "L1H1")
COMPARED = ("clean", "corrupt", "patched", "target_delta", "control_delta", "norm_drift", "decoded_delta_ratio")


def assert_same_rows(fast, reference, tol=TOL):
    assert fast.meta["path"] == "fast" and reference.meta["path"] == "reference"
    assert len(fast) == len(reference) > 0
    for f, r in zip(fast, reference):
        assert f.coordinates() == r.coordinates() and f.status == r.status and f.reason == r.reason
        for name in COMPARED:
            a, b = getattr(f, name), getattr(r, name)
            assert (a is None) == (b is None), name
            if a is not None:
                assert abs(a - b) <= tol, (name, f.coordinates(), a, b)
    for tf, tr in zip(fast.telemetry, reference.telemetry):
        assert (tf is None) == (tr is None)
        if tf is not None:
            for k, v in tf["target"].items():
                assert abs(v - tr["target"][k]) <= tol * max(1.0, abs(v)), k


def both_paths(fn, *args, **kwargs):
    return fn(*args, path="fast", **kwargs), fn(*args, path="reference", **kwargs)


@pytest.fixture(scope="module")
def gt_model(mechclaim_runtime):  # the runtime fixture sets the session's torch thread count
    return build_induction_model()


@pytest.fixture(scope="module")
def gt_tasks():
    """Two seeds' tasks; every other positive pair carries a ``previous_occurrence`` label and the rest (and every
    control) none, so that position is missing on part of the set."""
    tasks = []
    for i, t in enumerate(induction_tasks(0, n_per_family=3) + induction_tasks(1, n_per_family=3)):
        k = len(t.pair.clean) - len(t.pair.clean) // 2  # any earlier position works as a label
        pair = replace(t.pair, positions=(("previous_occurrence", k),) if i % 2 == 0 else ())
        tasks.append(Task(pair, tuple((suite, replace(c, positions=())) for suite, c in t.controls)))
    return tasks


# -------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("metric", ["logit_contrast", "prob_gap", "rank_delta"])
def test_head_fast_path_equals_reference_on_groundtruth(gt_model, gt_tasks, metric):
    fast, ref = both_paths(head_evidence, gt_model, gt_tasks, GT_HEADS,
                           ("clean_to_corrupt", "zero", "mean", "resample"), ("final", "previous_occurrence"),
                           metric=metric)
    assert_same_rows(fast, ref)
    assert {r.status for r in fast} == {"ok", "not_applicable"}


def test_head_all_positions_and_resid_fast_equal_reference(gt_model, gt_tasks):
    assert_same_rows(*both_paths(head_evidence, gt_model, gt_tasks, GT_HEADS, ("clean_to_corrupt", "zero"),
                                 ("all",)))
    fast, ref = both_paths(resid_evidence, gt_model, gt_tasks, [0, 1], ("final", "previous_occurrence"))
    assert_same_rows(fast, ref)
    assert {r.scope for r in fast} == {"full_resid_post_layer"}


def _tiny_model(**overrides):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = dict(n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=40, n_ctx=32, act_fn="silu",
               normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8, gated_mlp=True,
               n_key_value_heads=2, seed=0, default_prepend_bos=False)
    cfg.update(overrides)
    model = HookedTransformer(HookedTransformerConfig(**cfg))
    with torch.no_grad():  # TL initialises biases and norm weights to 0/1: randomise them so they matter
        for name, p in model.named_parameters():
            if name.endswith(("b_Q", "_b_K", "b_K", "_b_V", "b_V", "b_O", "b_in", "b_out", "b_U", ".w", ".b")):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _random_tasks(n_tasks=4, length=9, vocab=40, seed=0):
    rng = random.Random(seed)
    tasks = []
    for i in range(n_tasks):
        clean = rng.sample(range(vocab), length)
        corrupt = clean[:-3] + rng.sample([t for t in range(vocab) if t not in clean], 3)
        target, foil, *alt = rng.sample(range(vocab), 4)
        pair = PromptPair(f"r{i}", "rand", clean, corrupt, target, foil, alt_targets=alt[:1], alt_foils=alt[1:],
                          positions=(("distractor", 2),))
        control = PromptPair(f"r{i}-c", "rand_control", corrupt, clean, target, foil, family_role="control")
        tasks.append(Task(pair, (("swap", control),)))
    return tasks


@pytest.mark.parametrize("overrides", [
    {},  # rotary (rotate-half, partial dims), RMSNorm, gated SiLU MLP, grouped-query attention
    dict(normalization_type="LN", positional_embedding_type="standard", gated_mlp=False, act_fn="gelu_new",
         n_key_value_heads=None, rotary_dim=None),
    dict(rotary_adjacent_pairs=True, act_fn="gelu", final_rms=True, normalization_type="LN"),
], ids=["rotary-rms-gated-gqa", "layernorm-gelu-biases", "adjacent-rotary-final-rms"])
@pytest.mark.parametrize("metric", ["logit_contrast_max", "prob_gap"])
def test_fast_path_equals_reference_on_tiny_architectures(overrides, metric):
    model = _tiny_model(**overrides)
    tasks = _random_tasks()
    heads = [f"L{l}H{h}" for l in range(3) for h in (0, 3)]
    assert_same_rows(*both_paths(head_evidence, model, tasks, heads, ("clean_to_corrupt", "zero", "mean"),
                                 ("final", "distractor"), metric=metric, cache=ActivationCache()))
    assert_same_rows(*both_paths(resid_evidence, model, tasks, [0, 2], ("final", "all"), metric=metric,
                                 cache=ActivationCache()))


# ----------------------------------------------------------------------------------------------- hypotheses
def test_zero_ablating_the_head_that_writes_nothing_changes_nothing(gt_model, gt_tasks):
    for path in ("fast", "reference"):
        rows = head_evidence(gt_model, gt_tasks, ["L0H1"], ("zero",), ("final", "all"), path=path)
        assert len(rows) == len(gt_tasks) * 2 * 2 and all(r.ok for r in rows)
        assert max(abs(r.target_delta) for r in rows) < 1e-6
        assert max(abs(r.control_delta) for r in rows) < 1e-6
    # the same intervention on the induction head does move the metric (the test above can fail)
    moved = head_evidence(gt_model, gt_tasks, ["L1H0"], ("zero",))
    assert max(abs(r.target_delta) for r in moved) > 1.0


@settings(max_examples=15, deadline=None)
@given(unit=st.sampled_from([("z", 0, 0), ("z", 0, 1), ("z", 1, 0), ("z", 1, 1), ("resid", 0, None),
                             ("resid", 1, None), ("resid", 2, None)]),
       position=st.sampled_from(["final", "all", "previous_occurrence"]), task_seed=st.integers(0, 50))
def test_patching_clean_into_clean_changes_nothing(gt_model, unit, position, task_seed):
    site, index, head = unit
    tasks = induction_tasks(task_seed, n_per_family=2)
    tasks = [Task(PromptPair(t.pair.prompt_id, t.pair.family, t.pair.clean, t.pair.corrupt, t.pair.target,
                             t.pair.foil, positions=(("previous_occurrence", 3),))) for t in tasks]
    pairs = [t.pair for t in tasks]
    if site == "z":
        cell = Cell(f"L{index}H{head}", "clean_to_clean", "clean", position, "single_head_z", "clean",
                    f"blocks.{index}.attn.hook_z", index, "z", head=head)
    else:
        cell = Cell(f"r{index}", "clean_to_clean", "clean", position, "full_resid", "clean",
                    f"blocks.{index}.hook_resid_pre" if index < 2 else "blocks.1.hook_resid_post", index - 1,
                    "resid", resid_index=index)
    sources = SourceSets(pairs)
    recipes = {(p, cell): recipe(p, cell, sources) for p in pairs}
    for result in (measure_fast(gt_model, pairs, [cell], recipes, "logit_contrast", sources, ActivationCache()),
                   measure_reference(gt_model, pairs, [cell], recipes, "logit_contrast", sources)):
        baselines, measured = result
        for p in pairs:
            m = measured[(p, cell)]
            assert abs(m.metric - baselines[p][0]) < 1e-5
            assert m.drift < 1e-6 and m.delta_ratio < 1e-6


# -------------------------------------------------------------------------------------------------- SAEs
def _sae(kind="standard", d_in=64, d_sae=48, hook="blocks.0.hook_resid_post", seed=0, **kw):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    if kind == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8, metadata=SAEMetadata(hook_name=hook)), **kw)
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook)), **kw)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn_like(sae.W_enc) * 0.5)
        sae.W_dec.copy_(torch.randn_like(sae.W_dec) * 0.1)
        sae.b_enc.copy_(torch.randn_like(sae.b_enc) * 0.1)
    return sae.eval()


FEATURE_SETS = {"top": [0, 1, 2, 3, 4], "random_seed_7": [10, 20, 30, 40, 47]}


@pytest.mark.parametrize("kind", ["standard", "topk"])
@pytest.mark.parametrize("mode,error_term,scope", [("delta", None, "sae_features"),
                                                   ("replace", False, "sae_reconstruction_replace"),
                                                   ("replace", True, "sae_features")])
def test_sae_fast_path_equals_reference(gt_model, gt_tasks, kind, mode, error_term, scope):
    sae = _sae(kind)
    fast, ref = both_paths(sae_evidence, gt_model, gt_tasks, sae, FEATURE_SETS, ("ablate", ("amplify", 3.0)),
                           mode=mode, error_term=error_term, positions=("final", "previous_occurrence"))
    assert_same_rows(fast, ref)
    assert {r.scope for r in fast} == {scope}
    assert {(r.intervention, r.factor) for r in fast} == {("ablate", None), ("amplify", 3.0)}
    assert fast.meta["sae"]["error_term"] == ("kept" if scope == "sae_features" else "dropped")


def test_sae_replace_with_error_term_equals_delta_mode(gt_model, gt_tasks):
    sae = _sae()
    delta = sae_evidence(gt_model, gt_tasks, sae, FEATURE_SETS, mode="delta")
    replace_kept = sae_evidence(gt_model, gt_tasks, sae, FEATURE_SETS, mode="replace", error_term=True)
    replace_dropped = sae_evidence(gt_model, gt_tasks, sae, FEATURE_SETS, mode="replace", error_term=False)
    assert max(abs(a.patched - b.patched) for a, b in zip(delta, replace_kept)) < 1e-5
    # a random SAE reconstructs badly: dropping its error term must change the numbers
    assert max(abs(a.patched - b.patched) for a, b in zip(delta, replace_dropped)) > 1e-2


@settings(max_examples=10, deadline=None)
@given(eps=st.floats(1e-3, 0.5) | st.floats(-0.45, -1e-3), features=st.sets(st.integers(0, 47), min_size=1,
                                                                          max_size=6))
def test_amplify_by_one_plus_eps_scales_the_decoded_change_with_eps(gt_model, eps, features):
    sae, tasks = _sae(), induction_tasks(3, n_per_family=2)
    sets = {"s": sorted(features)}
    small = sae_evidence(gt_model, tasks, sae, sets, [("amplify", 1 + eps)])
    double = sae_evidence(gt_model, tasks, sae, sets, [("amplify", 1 + 2 * eps)])
    for a, b in zip(small, double):
        if a.decoded_delta_ratio > 1e-9:  # features inactive on this prompt decode no change at all
            assert b.decoded_delta_ratio == pytest.approx(2 * a.decoded_delta_ratio, rel=1e-3)
            assert a.norm_drift <= a.decoded_delta_ratio + 1e-6  # |‖x+d‖-‖x‖| <= ‖d‖


def test_nonfinite_sae_output_makes_rows_invalid(gt_model, gt_tasks):
    sae = _sae()
    assert all(r.ok for r in sae_evidence(gt_model, gt_tasks, sae, {"s": [0]}, ["ablate"]))
    with torch.no_grad():
        sae.W_dec[0, 0] = float("inf")
    rows = sae_evidence(gt_model, gt_tasks, sae, {"s": [0]}, ["ablate"])
    assert rows and all(r.status == "invalid" and r.reason.startswith("nonfinite") for r in rows)


# ------------------------------------------------------------------------------------- telemetry, positions
def test_missing_position_gives_not_applicable_rows_not_dropped_rows(gt_model, gt_tasks):
    rows = head_evidence(gt_model, gt_tasks, ["L1H0"], ("zero",), ("previous_occurrence",))
    assert len(rows) == sum(len(t.controls) for t in gt_tasks)
    # every control lacks the label, so every row is not applicable, with the reason
    assert {(r.status, r.reason) for r in rows} == {("not_applicable", "position_unavailable:previous_occurrence")}


def test_norm_warnings_follow_their_thresholds(gt_model, gt_tasks):
    loud = head_evidence(gt_model, gt_tasks, ["L1H0"], ("zero",), drift_warning=1e-9, delta_ratio_warning=1e-9)
    quiet = head_evidence(gt_model, gt_tasks, ["L1H0"], ("zero",), drift_warning=1e9, delta_ratio_warning=1e9)
    assert all(r.norm_warning for r in loud) and not any(r.norm_warning for r in quiet)
    assert all(t["warnings"] == ["norm_drift>1e-09", "decoded_delta_ratio>1e-09"] for t in loud.telemetry)
    t = loud.telemetry[0]["target"]
    assert t["norm_drift"] == pytest.approx(abs(t["patched_norm"] - t["activation_norm"]) / t["activation_norm"])


def test_mean_and_resample_record_their_sources(gt_model, gt_tasks):
    rows = head_evidence(gt_model, gt_tasks, ["L1H0"], ("mean", "resample"), resample_seed=3)
    assert {r.intervention for r in rows} == {f"mean[source=clean,n={len(gt_tasks)}]", "resample[seed=3]"}
    assert rows.meta["mean_source"]["final"]["n"] == len(gt_tasks)
    other_seed = head_evidence(gt_model, gt_tasks, ["L1H0"], ("resample",), resample_seed=4)
    same_seed = head_evidence(gt_model, gt_tasks, ["L1H0"], ("resample",), resample_seed=3)
    resampled = [r for r in rows if r.intervention.startswith("resample")]
    assert [r.patched for r in same_seed] == [r.patched for r in resampled]
    assert [r.patched for r in other_seed] != [r.patched for r in resampled]


def test_metrics_read_the_models_own_logits(gt_model):
    tasks = _random_tasks(vocab=32)
    for metric in ("logit_contrast", "logit_contrast_max", "logit_diff", "prob_gap", "rank_delta"):
        rows = head_evidence(gt_model, tasks, ["L1H0"], ("zero",), metric=metric)
        for task, row in zip(tasks, rows):
            p = task.pair
            with torch.no_grad():
                logits = gt_model(torch.tensor([p.clean]))[0, -1]
            t, f = logits[[p.target, *p.alt_targets]], logits[[p.foil, *p.alt_foils]]
            probs = logits.softmax(-1)
            expected = {"logit_contrast": t.mean() - f.mean(), "logit_contrast_max": t.max() - f.max(),
                        "logit_diff": t[0] - f[0], "prob_gap": probs[p.target] - probs[p.foil],
                        "rank_delta": (logits > logits[p.foil]).sum() - (logits > logits[p.target]).sum()}[metric]
            assert row.clean == pytest.approx(float(expected), abs=1e-5), metric


# ------------------------------------------------------------------------------------------- cache, fallback
def test_cache_reuses_runs_and_notices_weight_edits(gt_tasks):
    model, cache = build_induction_model(), ActivationCache()
    first = head_evidence(model, gt_tasks, ["L1H0"], ("zero",), cache=cache)
    misses = cache.misses
    again = head_evidence(model, gt_tasks, ["L1H1", "L0H0"], ("clean_to_corrupt",), cache=cache)
    assert cache.misses == misses and cache.hits > 0 and len(again) > 0
    with torch.no_grad():
        model.blocks[1].attn.W_O[0].zero_()  # in place: the induction head now writes nothing
    edited = head_evidence(model, gt_tasks, ["L1H0"], ("zero",), cache=cache)
    assert cache.misses > misses
    assert max(abs(r.clean) for r in edited) < max(abs(r.clean) for r in first)
    assert max(abs(r.target_delta) for r in edited) < 1e-6


def test_unsupported_model_falls_back_to_the_reference_path():
    model = _tiny_model(parallel_attn_mlp=True)
    tasks = _random_tasks(n_tasks=2)
    with pytest.warns(UserWarning, match="fast path unavailable"):
        auto = head_evidence(model, tasks, ["L0H0"], ("zero",), cache=ActivationCache())
    assert auto.meta["path"].startswith("reference (fast path: parallel")
    ref = head_evidence(model, tasks, ["L0H0"], ("zero",), path="reference")
    assert [r.patched for r in auto] == [r.patched for r in ref]
    with pytest.raises(EngineError, match="fast path unavailable"):
        head_evidence(model, tasks, ["L0H0"], ("zero",), path="fast", cache=ActivationCache())


@pytest.mark.parametrize("call,match", [
    (lambda m, t: head_evidence(m, t, ["L1H0"], ("ablate",)), "unknown head interventions"),
    (lambda m, t: head_evidence(m, t, ["L2H0"]), "does not exist"),
    (lambda m, t: head_evidence(m, t, ["L1H0"], ("mean",), ("all",)), "position 'all'"),
    (lambda m, t: head_evidence(m, t, ["L1H0"], metric="kl"), "unknown metric"),
    (lambda m, t: head_evidence(m, [], ["L1H0"]), "no tasks"),
    (lambda m, t: resid_evidence(m, t, [2]), "layers must be"),
    (lambda m, t: sae_evidence(m, t, _sae(), {"s": [1]}, [("amplify", 1.0)]), "factor"),
    (lambda m, t: sae_evidence(m, t, _sae(), {"s": [1]}, [("amplify", -2.0)]), "> 0"),
    (lambda m, t: sae_evidence(m, t, _sae(), {"s": [1, 1]}), "distinct indices"),
    (lambda m, t: sae_evidence(m, t, _sae(), {"s": [48]}), r"\[0, 48\)"),
    (lambda m, t: sae_evidence(m, t, _sae(hook="blocks.0.attn.hook_z"), {"s": [1]}), "not a residual hook"),
    (lambda m, t: sae_evidence(m, t, _sae(d_in=32), {"s": [1]}), "d_in=32"),
    (lambda m, t: sae_evidence(m, t, _sae(), {"s": [1]}, mode="patch"), "mode"),
])
def test_bad_requests_fail_with_one_clear_error(gt_model, gt_tasks, call, match):
    with pytest.raises(EngineError, match=match):
        call(gt_model, gt_tasks)


def test_length_mismatch_makes_corrupt_run_rows_invalid(gt_model):
    pair = PromptPair("m", "odd", [0, 1, 2, 3, 1, 2], [0, 1, 2, 3, 4], 3, 2)
    rows = head_evidence(gt_model, [Task(pair)], ["L1H0"], ("clean_to_corrupt", "zero"))
    by_op = {r.intervention: r for r in rows}
    assert by_op["clean_to_corrupt"].status == "invalid"
    assert by_op["clean_to_corrupt"].reason == "clean_corrupt_length_mismatch"
    assert by_op["zero"].ok and math.isfinite(by_op["zero"].patched)
