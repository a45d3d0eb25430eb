"""What to run: cells (one intervention on one unit at one position label) and where their patch values come from.

A cell's patch value for a prompt is a *recipe* (the same pair's clean activation, zero, a mean over a named source
set, another prompt's activation, or an SAE edit of the activation itself) so that the reference and the fast
executor resolve exactly the same values from their own activations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..tasks import PromptPair

POSITION_ALL = "all"
# Recipe refusals that make a row invalid (bad input), not merely not applicable (a position the prompt lacks).
INVALID_REASONS = ("clean_equals_corrupt", "clean_corrupt_length_mismatch")


@dataclass(frozen=True)
class SAEOp:
    """An SAE feature edit: ``ablate`` sets the features to 0, ``amplify`` multiplies them by ``factor``."""

    sae: object = field(compare=False, hash=False)
    sae_key: int  # id of the SAE object (identity, for grouping)
    features: tuple[int, ...]
    op: str
    factor: float | None
    mode: str  # delta | replace
    error_term: bool  # replace mode only: add SAELens' error term (x - decode(encode(x))) back

    def apply(self, x, acts=None, recons=None):
        """(patched activation, decoded delta) for activations x [..., d_in]; ``acts``/``recons`` are
        ``sae.encode(x)`` and ``sae.decode(acts)`` when the caller already has them."""
        acts = self.sae.encode(x) if acts is None else acts
        recons = self.sae.decode(acts) if recons is None else recons
        modified = acts.clone()
        idx = list(self.features)
        modified[..., idx] = 0.0 if self.op == "ablate" else modified[..., idx] * self.factor
        recons_modified = self.sae.decode(modified)
        decoded_delta = recons_modified - recons
        if self.mode == "delta":
            return x + decoded_delta, decoded_delta
        if self.error_term:
            return recons_modified + (x - recons), decoded_delta
        return recons_modified, decoded_delta


@dataclass(frozen=True)
class Cell:
    unit: str
    intervention: str  # the name rows carry
    source: str  # clean | zero | mean | resample | sae
    position: str
    scope: str
    run: str  # the run the patch edits: clean | corrupt
    hook: str  # the hook the reference path patches
    layer: int
    site: str  # z | resid
    head: int | None = None
    resid_index: int | None = None  # resid site: the input of block ``resid_index`` (n_layers: the final residual)
    factor: float | None = None
    sae_op: SAEOp | None = None


def resid_hook(r: int, n_layers: int) -> str:
    return f"blocks.{r}.hook_resid_pre" if r < n_layers else f"blocks.{n_layers - 1}.hook_resid_post"


def patch_positions(pair: PromptPair, label: str) -> list[int] | None:
    """Positions a cell patches in this pair's prompt, or None when the prompt has no such position."""
    if label == POSITION_ALL:
        return list(range(len(pair.clean)))
    pos = pair.position(label)
    return None if pos is None else [pos]


@dataclass(frozen=True)
class Recipe:
    """Where one (pair, cell)'s patch value comes from."""

    kind: str  # clean | zero | mean | resample | sae
    positions: tuple[int, ...]
    pool: tuple[tuple[PromptPair, int], ...] = ()  # mean: (source pair, position); resample: the one donor


@dataclass
class SourceSets:
    """The prompts mean and resample ablations draw from: the clean prompts of the tasks' own (positive) pairs."""

    pairs: list[PromptPair]
    resample_seed: int = 0

    def mean_pool(self, label: str) -> list[tuple[PromptPair, int]]:
        return [(p, p.position(label)) for p in self.pairs if p.position(label) is not None]

    def donor(self, pair: PromptPair, label: str) -> tuple[PromptPair, int] | None:
        pool = [(p, q) for p, q in self.mean_pool(label) if p.clean != pair.clean]
        if not pool:
            return None
        return random.Random(f"resample:{self.resample_seed}:{pair.prompt_id}:{label}").choice(pool)


def recipe(pair: PromptPair, cell: Cell, sources: SourceSets) -> Recipe | str:
    """The recipe, or the reason this pair cannot take the cell (a not-applicable or invalid row)."""
    if pair.identical:  # no causal effect to measure: patching clean into an identical corrupt run moves nothing
        return "clean_equals_corrupt"
    positions = patch_positions(pair, cell.position)
    if positions is None:
        return f"position_unavailable:{cell.position}"
    if cell.run == "corrupt" and len(pair.clean) != len(pair.corrupt):
        return "clean_corrupt_length_mismatch"
    if cell.source == "mean":
        pool = sources.mean_pool(cell.position)
        return Recipe("mean", tuple(positions), tuple(pool)) if pool else f"mean_source_empty:{cell.position}"
    if cell.source == "resample":
        donor = sources.donor(pair, cell.position)
        return Recipe("resample", tuple(positions), (donor,)) if donor else f"resample_source_empty:{cell.position}"
    return Recipe(cell.source, tuple(positions))
