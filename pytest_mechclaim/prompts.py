"""Tasks written as text: prompts and target/foil strings, tokenized with the claim model's own tokenizer.

``text_pair`` builds a ``PromptPair`` and ``text_task`` a ``Task`` with its matched controls. The target and foil
must each be exactly one token for that tokenizer (a logit contrast between two multi-token strings is not what the
metric measures): anything else is a ``TextPromptError`` naming the string and the tokens it became, so a task is
never silently re-scored on its first piece. Prompts start with the tokenizer's BOS unless ``prepend_bos=False``.

    from pytest_mechclaim.prompts import text_task
    task = text_task(model, "capital-fr", "capitals", clean="The capital of France is",
                     corrupt="The capital of Italy is", target=" Paris", foil=" Rome",
                     controls={"unrelated": ("The colour of grass is", "The colour of snow is", " Paris", " Rome")})
"""

from __future__ import annotations

from typing import Mapping

from .banks.schema import as_tokenizer
from .tasks import PromptPair, Task, TaskError


class TextPromptError(TaskError):
    """A text task that cannot become token ids: a target/foil that is not one token, an empty prompt."""


def _pieces(tok, ids) -> list[str]:
    return [tok.decode([i]) for i in ids]


def single_token(tokenizer, text: str, role: str, prompt_id: str = "") -> int:
    """The one token id of ``text``; ``TextPromptError`` naming ``text`` and its tokens when it is not one token."""
    tok = as_tokenizer(tokenizer)
    where = f"{prompt_id}: " if prompt_id else ""
    if not isinstance(text, str):
        raise TextPromptError(f"{where}{role} must be a string, got {type(text).__name__} {text!r}")
    ids = tok.ids(text)
    if len(ids) != 1:
        shown = f"{len(ids)} tokens {_pieces(tok, ids)!r} (ids {list(ids)})" if ids else "empty (no tokens)"
        hint = " (a word after a space usually needs its leading space, e.g. ' Paris')" if ids else ""
        raise TextPromptError(f"{where}{role} {text!r} is {shown} for this tokenizer; a {role} must be exactly "
                              f"one token{hint}")
    hf = getattr(tok.source, "tokenizer", None) or tok.source
    unk_id, unk = getattr(hf, "unk_token_id", None), getattr(hf, "unk_token", None)
    if unk_id is not None and ids[0] == unk_id and text != unk:
        # One token, but the unknown one: the metric could not tell this string from any other unknown string.
        raise TextPromptError(f"{where}{role} {text!r} is the tokenizer's unknown token {unk!r} (id {unk_id}); a "
                              f"{role} must be a token of the vocabulary")
    return ids[0]


def prompt_ids(tokenizer, text: str, role: str, prompt_id: str = "", prepend_bos: bool = True) -> tuple[int, ...]:
    tok = as_tokenizer(tokenizer)
    if not isinstance(text, str) or not text.strip():
        raise TextPromptError(f"{prompt_id}: the {role} prompt must be non-empty text, got {text!r}")
    return ((tok.bos_id,) if prepend_bos else ()) + tok.ids(text)


def text_pair(tokenizer, prompt_id: str, family: str, clean: str, corrupt: str, target: str, foil: str, *,
              family_role: str = "positive", seed: int | None = None, prepend_bos: bool = True) -> PromptPair:
    """A ``PromptPair`` from text. ``tokenizer``: a TransformerLens model, an HF tokenizer or a
    ``banks.schema.Tokenizer``; the metric reads logit(target) - logit(foil) at the final position."""
    tok = as_tokenizer(tokenizer)
    return PromptPair(prompt_id, family, prompt_ids(tok, clean, "clean", prompt_id, prepend_bos),
                      prompt_ids(tok, corrupt, "corrupt", prompt_id, prepend_bos),
                      single_token(tok, target, "target", prompt_id), single_token(tok, foil, "foil", prompt_id),
                      family_role=family_role, seed=seed, text=clean)


def text_task(tokenizer, prompt_id: str, family: str, clean: str, corrupt: str, target: str, foil: str, *,
              controls: Mapping[str, tuple[str, str, str, str]] | None = None, seed: int | None = None,
              prepend_bos: bool = True) -> Task:
    """A ``Task``: the positive ``text_pair`` and, per control suite, a control pair given as
    ``(clean, corrupt, target, foil)`` text (id ``<prompt_id>-<suite>``, family = the suite)."""
    tok = as_tokenizer(tokenizer)
    pair = text_pair(tok, prompt_id, family, clean, corrupt, target, foil, seed=seed, prepend_bos=prepend_bos)
    built = []
    for suite, spec in (controls or {}).items():
        if not isinstance(spec, (tuple, list)) or len(spec) != 4:
            raise TextPromptError(f"{prompt_id}: control {suite!r} must be (clean, corrupt, target, foil) text, "
                                  f"got {spec!r}")
        built.append((suite, text_pair(tok, f"{prompt_id}-{suite}", suite, *spec, family_role="control",
                                       seed=seed, prepend_bos=prepend_bos)))
    return Task(pair, tuple(built))
