"""Tasks the engine scores: a clean/corrupt prompt pair with a target/foil token, and its matched controls.

Token ids, not strings: the tokenizer-aware banks build these (and validate every token string as exactly one
token); the hand-set ground-truth model has no tokenizer at all.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        object.__setattr__(self, "clean", tuple(int(t) for t in self.clean))
        object.__setattr__(self, "corrupt", tuple(int(t) for t in self.corrupt))
        if not self.clean or not self.corrupt:
            raise TaskError(f"{self.prompt_id}: empty prompt")
        if self.clean == self.corrupt:
            raise TaskError(f"{self.prompt_id}: identical clean and corrupt prompts cannot measure a causal effect")
        if self.target == self.foil:
            raise TaskError(f"{self.prompt_id}: target and foil are the same token ({self.target})")
        object.__setattr__(self, "alt_targets", tuple(int(t) for t in self.alt_targets))
        object.__setattr__(self, "alt_foils", tuple(int(t) for t in self.alt_foils))
        shared = {self.target, *self.alt_targets} & {self.foil, *self.alt_foils}
        if shared:
            raise TaskError(f"{self.prompt_id}: tokens {sorted(shared)} are both target and foil")
        if self.family_role not in ("positive", "control"):
            raise TaskError(f"{self.prompt_id}: family_role must be positive or control")

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
