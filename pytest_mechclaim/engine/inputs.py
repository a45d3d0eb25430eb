"""Engine input checks, run before any forward pass: a bad token id, an over-long prompt or a labelled position
outside its prompt is one clear error naming the prompt, the value and the allowed range.

Why here and not in ``PromptPair``: the vocabulary and context size belong to the model. TransformerLens indexes
``W_E``/``W_pos`` with the ids as given, so a negative id wraps to a real token (-1 is the last token) and the run
measures a prompt nobody wrote; an id >= d_vocab or a prompt > n_ctx crashes deep inside the forward pass.
"""

from __future__ import annotations

from typing import Iterable

from ..tasks import PromptPair, Task


def model_limits(model) -> tuple[int | None, int | None, int | None]:
    """(d_vocab, d_vocab_out, n_ctx) of a model's config; None where the config does not say."""
    cfg = model.cfg
    d_vocab = getattr(cfg, "d_vocab", None)
    d_vocab_out = getattr(cfg, "d_vocab_out", None)
    if d_vocab_out is None or d_vocab_out < 0:  # TL's -1 means "same as d_vocab"
        d_vocab_out = d_vocab
    return d_vocab, d_vocab_out, getattr(cfg, "n_ctx", None)


def pair_problems(pair: PromptPair, d_vocab: int | None, d_vocab_out: int | None, n_ctx: int | None) -> list[str]:
    problems = []
    for side in ("clean", "corrupt"):
        tokens = getattr(pair, side)
        if n_ctx is not None and len(tokens) > n_ctx:
            problems.append(f"prompt {pair.prompt_id!r} ({side}) has {len(tokens)} tokens; the model's context "
                            f"holds at most n_ctx={n_ctx}")
        if d_vocab is not None:
            bad = [(i, t) for i, t in enumerate(tokens) if not 0 <= t < d_vocab]
            if bad:
                shown = ", ".join(f"{t} at index {i}" for i, t in bad[:5]) + (" ..." if len(bad) > 5 else "")
                problems.append(f"prompt {pair.prompt_id!r} ({side}): token id(s) {shown} outside the model's "
                                f"vocabulary [0, {d_vocab})")
    if d_vocab_out is not None:
        scored = [("target", pair.target), ("foil", pair.foil)] + [("alt_target", t) for t in pair.alt_targets] \
            + [("alt_foil", t) for t in pair.alt_foils]
        for name, t in scored:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < d_vocab_out:
                problems.append(f"prompt {pair.prompt_id!r}: {name} token {t!r} outside the model's output "
                                f"vocabulary [0, {d_vocab_out})")
    return problems


def task_problems(model, tasks: Iterable[Task]) -> list[str]:
    """Every problem of every pair (positives and controls) against this model; the engine raises them as one
    ``EngineError``."""
    d_vocab, d_vocab_out, n_ctx = model_limits(model)
    problems: list[str] = []
    seen: set[int] = set()
    for task in tasks:
        if not isinstance(task, Task):
            return [f"tasks must be Task objects, got {type(task).__name__}"]
        for pair in (task.pair, *(c for _, c in task.controls)):
            if id(pair) not in seen:
                seen.add(id(pair))
                problems += pair_problems(pair, d_vocab, d_vocab_out, n_ctx)
    return problems
