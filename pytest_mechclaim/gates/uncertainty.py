"""Prompt-clustered bootstrap intervals and multiple-comparison adjustment (pure numpy, deterministic).

Rows of one prompt are not independent evidence (one target delta is repeated per control suite, per position):
the bootstrap resamples *prompts* with replacement and keeps every row of a drawn prompt together; the statistic
is the row mean over the drawn prompts, the same mean the gate reports. Clusters are sorted by prompt id and the
generator is seeded, so the interval depends on the rows only, never on their order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Iterable, Sequence

import numpy as np

from ..evidence import EvidenceRow

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
METHOD = "prompt-clustered percentile bootstrap"


def clustered_ci(rows: Iterable[EvidenceRow], score: Callable[[EvidenceRow], float | None],
                 confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """``{"mean", "ci_low", "ci_high", "confidence", "n_prompts", "method"}`` for the row mean of ``score``.

    Fewer than 2 prompts give no interval (``ci_low``/``ci_high`` None): one prompt cannot show its own spread.
    """
    clusters: dict = defaultdict(list)
    for r in rows:
        s = score(r)
        if s is not None:
            clusters[r.prompt_id].append(s)
    keys = sorted(clusters)
    out = {"mean": None, "ci_low": None, "ci_high": None, "confidence": confidence, "n_prompts": len(keys),
           "n_resamples": n_resamples, "method": METHOD}
    if not keys:
        return out
    # fsum over sorted values: the same sums, bit for bit, whatever the row order.
    sums = np.array([math.fsum(sorted(clusters[k])) for k in keys])
    sizes = np.array([len(clusters[k]) for k in keys], dtype=float)
    out["mean"] = math.fsum(sums) / float(sizes.sum())
    if len(keys) < 2:
        return out
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(keys), size=(n_resamples, len(keys)))
    stats = sums[draw].sum(axis=1) / sizes[draw].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    # A constant score gives a constant bootstrap: the interval is the mean itself, exactly.
    out["ci_low"], out["ci_high"] = min(float(low), out["mean"]), max(float(high), out["mean"])
    return out


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order (for a module that tests several units
    chosen by one search and has all their p-values)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
