"""Metrics read at the final position: what a row's ``clean``, ``corrupt`` and ``patched`` numbers mean.

* ``logit_contrast`` (the default, SELF-GROUND's token contrast): mean logit over the target tokens minus mean
  logit over the foil tokens; ``logit_contrast_max`` reduces with max instead. The tokens are the pair's
  ``target``/``foil`` plus its ``alt_targets``/``alt_foils``.
* ``logit_diff`` (local-mi-lab's true-vs-control logit diff): logit[target] - logit[foil].
* ``prob_gap``: p(target) - p(foil) under the softmax over the whole vocabulary.
* ``rank_delta``: rank(foil) - rank(target), rank = 1 + #{tokens with a larger logit}.

The first three read only the target/foil columns of the unembedding; the last two need the whole vocabulary row
(its log-sum-exp, or how many logits beat a token), still at the final position only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..tasks import PromptPair

METRICS = ("logit_contrast", "logit_contrast_max", "logit_diff", "prob_gap", "rank_delta")
DEFAULT_METRIC = "logit_contrast"
_FULL_VOCAB = ("prob_gap", "rank_delta")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        from . import EngineError

        raise EngineError(f"unknown metric {metric!r}; known: {list(METRICS)}")


def needs_full_vocab(metric: str) -> bool:
    return metric in _FULL_VOCAB


def columns(pair: PromptPair) -> tuple[int, ...]:
    """The unembedding columns a metric reads for this pair: targets first, then foils."""
    return (pair.target, *pair.alt_targets, pair.foil, *pair.alt_foils)


@dataclass(frozen=True)
class FinalReadout:
    """What one final-position logit row contributes: the pair's columns, and (full-vocab metrics only) the row's
    log-sum-exp and how many logits exceed the primary target's and foil's."""

    cols: tuple[float, ...]
    logsumexp: float | None = None
    above_target: int | None = None
    above_foil: int | None = None


def readout_from_row(row, pair: PromptPair, full: bool) -> FinalReadout:
    """Readout of one full logit row (a 1-D tensor over the vocabulary)."""
    import torch

    cols = tuple(row[list(columns(pair))].tolist())
    if not full:
        return FinalReadout(cols)
    return FinalReadout(cols, float(torch.logsumexp(row, -1)), int((row > row[pair.target]).sum()),
                        int((row > row[pair.foil]).sum()))


def value(metric: str, pair: PromptPair, r: FinalReadout) -> float:
    n_targets = 1 + len(pair.alt_targets)
    targets, foils = r.cols[:n_targets], r.cols[n_targets:]
    if metric == "logit_contrast":
        return sum(targets) / len(targets) - sum(foils) / len(foils)
    if metric == "logit_contrast_max":
        return max(targets) - max(foils)
    if metric == "logit_diff":
        return targets[0] - foils[0]
    if metric == "prob_gap":
        return math.exp(targets[0] - r.logsumexp) - math.exp(foils[0] - r.logsumexp)
    if metric == "rank_delta":
        return float((1 + r.above_foil) - (1 + r.above_target))
    check_metric(metric)
    raise AssertionError(metric)
