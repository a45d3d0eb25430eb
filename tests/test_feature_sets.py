"""Control feature sets and empirical nulls (numpy only; synthetic activation matrices with known statistics)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from pytest_mechclaim import gates
from pytest_mechclaim.banks.feature_sets import (FeatureSetError, activation_stats, best_of_n_null, bottom_active_set,
                                                 control_feature_sets, density_matched_set, excluded_rank_count,
                                                 random_set, random_set_null, ranking, top_set)
from pytest_mechclaim.evidence import EvidenceRow
from pytest_mechclaim.status import Status


def sparse_acts(seed: int, n: int = 200, d: int = 400) -> np.ndarray:
    """Per-feature density and scale spread over a range, like SAE features (many rare, some frequent)."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.01, 0.6, size=d)
    scale = rng.uniform(0.5, 5.0, size=d)
    active = rng.random((n, d)) < density
    return active * rng.exponential(scale, size=(n, d))


def test_random_sets_skip_the_top_ranks_and_differ_by_seed():
    scores = np.random.default_rng(0).normal(size=400)
    top_ranks = set(ranking(scores)[:excluded_rank_count(400, 8)].tolist())
    assert excluded_rank_count(400, 8) == 40 and excluded_rank_count(400, 60) == 60
    a, b = random_set(scores, 8, seed=7), random_set(scores, 8, seed=11)
    assert not top_ranks & set(a.features) and not top_ranks & set(b.features)
    assert a.features != b.features and a.label == "random_seed_7"


def test_density_matched_partners_are_within_tolerance_and_seeds_differ():
    acts = sparse_acts(0)
    scores = np.random.default_rng(1).normal(size=acts.shape[1])
    density, abs_mean = activation_stats(acts)
    sets = [density_matched_set(acts, scores, 8, seed=s) for s in (7, 11, 13)]
    for fs in sets:
        assert fs.details["stats_source"] == "per_example_activation_density"
        for p in fs.details["pairs"]:
            assert abs(p["density_match"] - p["density_top"]) <= fs.tolerance * p["density_top"] + 1e-12
            assert abs(p["abs_mean_match"] - p["abs_mean_top"]) <= fs.tolerance * p["abs_mean_top"] + 1e-12
        assert not set(fs.features) & set(top_set(scores, 8).features)
    assert len({fs.features for fs in sets}) == 3


def test_density_matching_says_when_it_relaxed():
    # Top feature 0 is active on 90% of examples with mean 10; every other feature is far from it.
    n, d = 100, 50
    acts = np.zeros((n, d))
    acts[:90, 0] = 10.0
    for j in range(1, d):
        acts[: 20 + j % 10, j] = 10.0 * (0.5 + 0.01 * j)
    scores = -np.arange(d, dtype=float)  # feature 0 ranks first
    fs = density_matched_set(acts, scores, 1, seed=0, rel_tol=0.05)
    assert fs.relaxed and fs.tolerance > 0.05 and fs.details["relaxations"] >= 1
    # An exact twin outside the top ranks is found without relaxing.
    acts[:, 40] = acts[:, 0]
    exact = density_matched_set(acts, scores, 1, seed=0, rel_tol=0.05)
    assert not exact.relaxed and exact.features == (40,)


def test_density_matching_refuses_rather_than_pretending():
    acts = np.zeros((100, 30))
    acts[:, 0] = 5.0  # always on, nothing else ever is
    scores = -np.arange(30, dtype=float)
    with pytest.raises(FeatureSetError, match="after 5 relaxations"):
        density_matched_set(acts, scores, 1, seed=0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), top_k=st.integers(1, 6), tol=st.sampled_from([0.02, 0.1, 0.3]))
def test_property_density_match_is_within_its_stated_tolerance_or_raises(seed, top_k, tol):
    acts = sparse_acts(seed, n=60, d=120)
    scores = np.random.default_rng(seed + 1).normal(size=120)
    try:
        fs = density_matched_set(acts, scores, top_k, seed=seed, rel_tol=tol)
    except FeatureSetError:
        return
    assert fs.relaxed == (fs.tolerance > tol)
    assert fs.tolerance == pytest.approx(tol * 2 ** fs.details["relaxations"])
    assert len(set(fs.features)) == top_k
    for p in fs.details["pairs"]:
        assert abs(p["density_match"] - p["density_top"]) <= fs.tolerance * p["density_top"] + 1e-9
        assert abs(p["abs_mean_match"] - p["abs_mean_top"]) <= fs.tolerance * p["abs_mean_top"] + 1e-9


def test_bottom_active_and_the_serious_run_sets():
    acts = sparse_acts(3)
    acts[:, 5] = 0.0  # dead: never a bottom-active feature
    scores = np.random.default_rng(4).normal(size=acts.shape[1])
    scores[5] = 1e-9
    bottom = bottom_active_set(acts, scores, 4)
    assert 5 not in bottom.features
    assert list(np.abs(scores[list(bottom.features)])) == sorted(np.abs(scores[list(bottom.features)]))
    labels = [fs.label for fs in control_feature_sets(acts, scores, 4)]
    assert labels == ["top", "random_seed_7", "random_seed_11", "random_seed_13", "density_matched_seed_7",
                      "density_matched_seed_11", "density_matched_seed_13", "bottom_active"]


def _null_claim_ranks(n_draws: int, search_size: int | None):
    """Percentile ranks of a claim that is itself random (a random set, or the best of a random search)."""
    ranks = []
    for draw in range(n_draws):
        rng = np.random.default_rng(draw)
        unit_scores = rng.normal(size=2000)  # per-feature effects under the null
        score_set = lambda fs: float(unit_scores[list(fs.features)].mean())
        ranking_scores = rng.normal(size=2000)  # the ranking carries no information about the effect
        if search_size is None:
            claim = score_set(random_set(ranking_scores, 5, seed=10_000 + draw))
            null = random_set_null(score_set, ranking_scores, 5, seeds=range(30))
        else:
            claim = float(rng.choice(unit_scores, size=search_size, replace=False).max())
            null = best_of_n_null(unit_scores, search_size, n_null=30, seed=20_000 + draw)
        ranks.append(null.percentile(claim))
    return np.array(ranks)


def _uniformity_p(ranks: np.ndarray) -> float:
    counts, _ = np.histogram(ranks, bins=5, range=(0, 1))
    return float(stats.chisquare(counts).pvalue)


def test_percentile_rank_is_uniform_for_a_null_claim():
    ranks = _null_claim_ranks(400, None)
    p_chi, p_ks = _uniformity_p(ranks), float(stats.kstest(ranks, "uniform").pvalue)
    print(f"null claim: mean rank {ranks.mean():.3f}, chi2 p {p_chi:.3f}, KS p {p_ks:.3f}, "
          f"share >= 0.95: {(ranks >= 0.95).mean():.3f}")
    assert p_chi > 0.01 and p_ks > 0.01
    assert (ranks >= 0.95).mean() < 0.1


def test_a_search_winner_needs_the_best_of_n_null():
    search = 50
    fair = _null_claim_ranks(300, search)
    print(f"best-of-{search} claim vs best-of-{search} null: chi2 p {_uniformity_p(fair):.3f}, "
          f"share >= 0.95: {(fair >= 0.95).mean():.3f}")
    assert _uniformity_p(fair) > 0.01
    # The same winners against single random units: almost all would "pass" the empirical null.
    rng = np.random.default_rng(0)
    unit_scores = rng.normal(size=2000)
    winners = [float(rng.choice(unit_scores, size=search, replace=False).max()) for _ in range(50)]
    single = best_of_n_null(unit_scores, 1, n_null=30, seed=1)
    naive = np.array([single.percentile(w) for w in winners])
    print(f"best-of-{search} claim vs single-unit null: share >= 0.95: {(naive >= 0.95).mean():.2f}")
    assert (naive >= 0.95).mean() > 0.8


def test_null_gate_says_which_null_it_used():
    unit_scores = np.random.default_rng(0).normal(size=500)
    null = best_of_n_null(unit_scores, 20, n_null=30)
    result = null.gate(value=10.0)
    assert result.passed and result.details["null_kind"] == "best_of_search_size_random_units"
    assert result.details["search_size"] == 20
    weak = null.gate(value=float(np.median(null.values)))
    assert not weak.passed and weak.caps_at == Status.CANDIDATE
    few = best_of_n_null(unit_scores, 20, n_null=10).gate(value=10.0)
    assert not few.passed and "strong needs 30" in few.reason
    with pytest.raises(FeatureSetError, match="search_size"):
        best_of_n_null(unit_scores[:10], 20)


def _rows(unit_set: str, gaps, seed_offset=0.0):
    return [EvidenceRow(unit="fs", intervention="ablate", prompt_id=f"p{i}", family="f", unit_set=unit_set,
                        control_suite="matched", target_delta=1.0 + g + seed_offset, control_delta=1.0)
            for i, g in enumerate(gaps)]


def test_paired_test_against_each_control_feature_set():
    rng = np.random.default_rng(0)
    top = rng.normal(0.5, 0.2, size=20)
    controls = {label: rng.normal(0.0, 0.2, size=20) for label in ("random_seed_7", "density_matched_seed_7")}
    rows = _rows("target", top) + [r for label, g in controls.items() for r in _rows(label, g)]
    result = gates.paired_test(rows)
    assert result.passed, result.reason
    assert set(result.details["per_set"]) == set(controls)
    # A top set no better than a density-matched set fails the paired test.
    rows_tied = _rows("target", top) + _rows("density_matched_seed_7", top + rng.normal(0, 0.01, size=20))
    tied = gates.paired_test(rows_tied)
    assert not tied.passed and "density_matched_seed_7" in tied.reason
