"""The negation task bank (SELF-GROUND E003's generator, with pools large enough that seeds differ).

Three required families. In each, the negated prompt should make the model prefer the antonym of the negated word,
and the matched control (the same frame without the negation) scores the swapped contrast:

* ``sentiment_negation``: "The movie was not good. The movie was" -> " bad" (foil " good");
  control "The movie was good. The movie was" -> " good" (foil " bad");
* ``property_negation``: the same copula frames over physical subjects and properties ("The road was not wet.");
* ``state_negation``: "The engine did not start. Instead, it" -> " stopped" (foil " started");
  control "The engine did start. Indeed, it" -> " started" (foil " stopped").

Each family's candidate pool is subjects x antonym pairs x both orientations x frames (hundreds of distinct
prompts); a seed shuffles the pool and takes ``per_family`` of them, so different seeds give different prompts and
no prompt repeats within a bank (E002's 30 tasks were 12 prompts cycled). Words that are not one token for the
claim's tokenizer are rejected by validation, with reasons, never silently.
"""

from __future__ import annotations

import itertools
import random

from .schema import BankTask, task_id

FAMILIES = ("sentiment_negation", "property_negation", "state_negation")

SENTIMENT_SUBJECTS = (
    "movie", "book", "song", "meal", "trip", "show", "game", "party", "concert", "play", "story", "album", "dinner",
    "hotel", "class", "lecture", "speech", "film", "novel", "painting", "restaurant", "service", "weekend",
    "holiday", "coffee", "pizza", "wine", "performance", "interview", "museum",
)
SENTIMENT_PAIRS = (
    ("good", "bad"), ("great", "terrible"), ("nice", "awful"), ("exciting", "boring"), ("interesting", "dull"),
    ("wonderful", "horrible"), ("pleasant", "unpleasant"), ("beautiful", "ugly"), ("excellent", "poor"),
    ("happy", "sad"), ("fun", "tedious"), ("perfect", "disappointing"),
)
PROPERTY_SUBJECTS = (
    "box", "room", "road", "bag", "glass", "table", "river", "house", "car", "coat", "ball", "rope", "stone",
    "wall", "door", "window", "bottle", "shirt", "street", "field",
)
PROPERTY_PAIRS = (
    ("hot", "cold"), ("big", "small"), ("long", "short"), ("heavy", "light"), ("wet", "dry"), ("open", "closed"),
    ("full", "empty"), ("clean", "dirty"), ("old", "new"), ("hard", "soft"), ("fast", "slow"), ("dark", "bright"),
    ("high", "low"), ("thick", "thin"), ("wide", "narrow"), ("loud", "quiet"), ("rough", "smooth"),
    ("strong", "weak"), ("tall", "short"), ("safe", "dangerous"), ("warm", "cool"), ("deep", "shallow"),
)
STATE_SUBJECTS = (
    "machine", "engine", "door", "team", "company", "price", "boat", "plant", "train", "car", "market", "project",
    "plan", "store", "computer", "river", "fire", "light", "program", "business",
)
# (base verb, its past tense, the opposite event's past tense)
STATE_PAIRS = (
    ("start", "started", "stopped"), ("stop", "stopped", "started"), ("open", "opened", "closed"),
    ("close", "closed", "opened"), ("rise", "rose", "fell"), ("fall", "fell", "rose"), ("win", "won", "lost"),
    ("lose", "lost", "won"), ("grow", "grew", "shrank"), ("increase", "increased", "decreased"),
    ("succeed", "succeeded", "failed"), ("fail", "failed", "succeeded"),
)
COPULA_FRAMES = {
    "past": ("The {s} was not {foil}. The {s} was", "The {s} was {foil}. The {s} was"),
    "present": ("The {s} is not {foil}. The {s} is", "The {s} is {foil}. The {s} is"),
}
STATE_FRAMES = {
    "instead": ("The {s} did not {verb}. Instead, it", "The {s} did {verb}. Indeed, it"),
    "so": ("The {s} did not {verb}, so it", "The {s} did {verb}, so it"),
}


def _copula_candidates(family: str, subjects, pairs) -> list[BankTask]:
    out = []
    for frame, (negated, control) in COPULA_FRAMES.items():
        for a, b in pairs:
            for target, foil in ((b, a), (a, b)):  # "not good -> bad" and "not bad -> good"
                for s in subjects:
                    prompt = negated.format(s=s, foil=foil)
                    out.append(BankTask(
                        id=task_id(family, prompt, " " + target, " " + foil), family=family, prompt=prompt,
                        target=" " + target, foil=" " + foil, control_prompt=control.format(s=s, foil=foil),
                        control_target=" " + foil, control_foil=" " + target,
                        metadata={"subject": s, "frame": frame, "negated_word": foil, "antonym": target},
                    ))
    return out


def _state_candidates() -> list[BankTask]:
    family, out = "state_negation", []
    for frame, (negated, control) in STATE_FRAMES.items():
        for (verb, happened, opposite), s in itertools.product(STATE_PAIRS, STATE_SUBJECTS):
            prompt = negated.format(s=s, verb=verb)
            out.append(BankTask(
                id=task_id(family, prompt, " " + opposite, " " + happened), family=family, prompt=prompt,
                target=" " + opposite, foil=" " + happened, control_prompt=control.format(s=s, verb=verb),
                control_target=" " + happened, control_foil=" " + opposite,
                metadata={"subject": s, "frame": frame, "negated_word": verb, "antonym": opposite},
            ))
    return out


def candidate_pool(family: str) -> list[BankTask]:
    """Every candidate task of a family, in a fixed order (before any seed)."""
    if family == "sentiment_negation":
        return _copula_candidates(family, SENTIMENT_SUBJECTS, SENTIMENT_PAIRS)
    if family == "property_negation":
        return _copula_candidates(family, PROPERTY_SUBJECTS, PROPERTY_PAIRS)
    if family == "state_negation":
        return _state_candidates()
    raise ValueError(f"unknown negation family {family!r}; families: {FAMILIES}")


def negation_bank(seed: int, per_family: int = 80, families=FAMILIES) -> list[BankTask]:
    """``per_family`` distinct candidate tasks per family, drawn from the shuffled pool by ``seed``.

    Raises when a family's pool is smaller than ``per_family`` (no task is ever repeated to fill a quota)."""
    bank = []
    for family in families:
        pool = candidate_pool(family)
        if per_family > len(pool):
            raise ValueError(f"{family}: asked for {per_family} tasks, the pool holds {len(pool)} distinct ones")
        random.Random(f"negation:{family}:{seed}").shuffle(pool)
        bank.extend(pool[:per_family])
    return bank
