"""Tasks the engine scores: a clean/corrupt prompt pair with a target/foil token, and its matched controls.

Token ids, not strings: the tokenizer-aware banks build these (and validate every token string as exactly one
token), and so do ``prompts.text_pair`` / ``prompts.text_task`` for tasks written as text; the hand-set
ground-truth model has no tokenizer at all. Whether the ids fit a model's vocabulary and
context is the engine's check (``engine/inputs.py``): the pair does not know the model.

A pair whose clean and corrupt prompts are identical is built (``identical`` is True) but measures nothing: the
engine gives each of its rows status ``invalid`` with reason ``clean_equals_corrupt``, so a claim made only of such
pairs is ``blocked`` and one with some of them is capped at ``insufficient`` (verdict.py), with the reason counted.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

RESERVED_POSITIONS = ("final", "all")  # the engine's own labels: a pair cannot carry them


def _ids(prompt_id: str, name: str, values) -> tuple[int, ...]:
    try:
        return tuple(operator.index(t) for t in values)
    except TypeError:
        raise TaskError(f"{prompt_id}: {name} must be integer token ids, got {values!r}") from None


class TaskError(ValueError):
    """A task that cannot enter a causal gate."""


@dataclass(frozen=True)
class PromptPair:
    prompt_id: str
    family: str
    clean: tuple[int, ...]
    corrupt: tuple[int, ...]
    target: int
    foil: int
    family_role: str = "positive"
    seed: int | None = None
    # Labelled positions besides "final" (always the last token), e.g. ("previous_occurrence", 12).
    positions: tuple[tuple[str, int], ...] = ()
    text: str | None = None
    # Further tokens the metric scores with target/foil (SELF-GROUND's several target tokens, mean/max reduced).
    alt_targets: tuple[int, ...] = ()
    alt_foils: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "clean", _ids(self.prompt_id, "clean", self.clean))
        object.__setattr__(self, "corrupt", _ids(self.prompt_id, "corrupt", self.corrupt))
        if not self.clean or not self.corrupt:
            raise TaskError(f"{self.prompt_id}: empty prompt")
        target_foil = _ids(self.prompt_id, "target and foil", (self.target, self.foil))
        object.__setattr__(self, "target", target_foil[0])
        object.__setattr__(self, "foil", target_foil[1])
        if self.target == self.foil:
            raise TaskError(f"{self.prompt_id}: target and foil are the same token ({self.target})")
        object.__setattr__(self, "alt_targets", _ids(self.prompt_id, "alt_targets", self.alt_targets))
        object.__setattr__(self, "alt_foils", _ids(self.prompt_id, "alt_foils", self.alt_foils))
        self._check_positions()
        shared = {self.target, *self.alt_targets} & {self.foil, *self.alt_foils}
        if shared:
            raise TaskError(f"{self.prompt_id}: tokens {sorted(shared)} are both target and foil")
        if self.family_role not in ("positive", "control"):
            raise TaskError(f"{self.prompt_id}: family_role must be positive or control")

    def _check_positions(self) -> None:
        labels = [label for label, _ in self.positions]
        if len(set(labels)) != len(labels):
            raise TaskError(f"{self.prompt_id}: a position label appears twice: {labels}")
        for label, pos in self.positions:
            if label in RESERVED_POSITIONS:
                raise TaskError(f"{self.prompt_id}: position label {label!r} is reserved (the engine defines it)")
            if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < len(self.clean):
                raise TaskError(f"{self.prompt_id}: position {label!r} = {pos!r} is outside the prompt: allowed "
                                f"[0, {len(self.clean)}) for its {len(self.clean)} clean tokens")

    @property
    def identical(self) -> bool:
        """Clean and corrupt are the same prompt: no causal effect can be measured on this pair."""
        return self.clean == self.corrupt

    def position(self, label: str) -> int | None:
        """Index of a labelled position in the prompt, or None when this prompt has no such position."""
        if label == "final":
            return len(self.clean) - 1
        return dict(self.positions).get(label)


@dataclass(frozen=True)
class Task:
    """A prompt pair and its matched controls, one per control suite."""

    pair: PromptPair
    controls: tuple[tuple[str, PromptPair], ...] = ()

    def __post_init__(self) -> None:
        suites = [s for s, _ in self.controls]
        if len(set(suites)) != len(suites):
            raise TaskError(f"{self.pair.prompt_id}: a control suite appears twice: {suites}")
