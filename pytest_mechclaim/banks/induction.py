"""Induction prompt banks for a real tokenizer (local-mi-lab's families, rebuilt for SmolLM2).

Every prompt is a sequence of single-token strings (letters " A".." Z", words " apple", digits "0".."9": SmolLM2
splits numbers into digits, so a number sequence is a digit string). A positive prompt is a prefix ``S`` and a
newline (``S, S`` for the double repeat) followed by ``S[:-1]``: the next token the induction rule licenses is
``S[-1]``, scored against the foil ``S[0]`` (in context, but not licensed). Its corrupt prompt keeps the prefix and replaces
the repeat with filler tokens ``X`` that share nothing with ``S``, so it licenses nothing.

Each positive comes with controls built from the same ``S`` (same length, so position-aligned patching works), all
scored on the positive's target and foil unless said otherwise; a control's clean prompt must not license the
target, which the builder checks on every example:

* ``no_repeat``: S + unrelated filler;
* ``shuffled_repeat``: S + a permutation of the repeat that does not continue to the target;
* ``distractor_repeat``: a partial repeat that continues to S[j+1], not the target;
* ``same_token_frequency``: filler + S[-2], S[0], S[1] (the target's predecessor is present, not last);
* ``wrong_target``: the positive's own clean/corrupt pair scored on a token absent from both prompts;
* ``wrong_target_same_prompt``: local-mi-lab's wrong-target control, whose clean prompt is the paired positive's
  and whose corrupt prompt is its own, i.e. the same prompt. It is kept for unpatched metric checks; as a causal
  task it is refused (clean == corrupt measures nothing, seed-systems §6.6) and reported by ``build_tasks``;
* held-out: ``no_structure_same_tokens`` (the same token bag with no repeat structure);
* characterization: ``reversed`` (S + reversed repeat) and ``target_swap`` (the positive scored on S[1]).

Labelled positions (index with BOS): ``previous_occurrence`` is the earlier occurrence of the final token (where an
induction head's source lies) whenever the prompt has one; ``distractor`` marks the misleading earlier occurrence
in the multi-distractor family. Controls without an earlier occurrence have no such label: none is invented.

Stages use disjoint families and seeds: discovery (letters and nouns, 4-6 tokens, seeds 0-2), held-out (8 letters,
adjectives, digits, double repeats, seeds 10-12), characterization (short/long per domain, multi-distractor,
seeds 20-22). Every item draws from ``random.Random(f"{stage}:{seed}:{family}:{i}")`` over pools of 26 letters,
~230 nouns, 76 adjectives and 10 digits, so seeds give different prompts (seed-systems §6.8).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..tasks import PromptPair, Task, TaskError
from .schema import Rejection, Tokenizer, as_tokenizer

LETTERS = tuple(f" {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = tuple("0123456789")
NOUNS = tuple(" " + w for w in """
apple banana cherry grape lemon mango melon orange peach pear plum lime berry olive onion carrot potato tomato
pepper bean corn rice bread cheese butter honey sugar salt milk tea coffee juice water soup cake cookie pie dog cat
horse cow pig sheep goat duck chicken bird fish whale shark snake frog bear wolf fox deer lion tiger monkey mouse
rabbit owl eagle bee ant spider stone wood glass paper cloth wool silk cotton leather chair table desk bed sofa lamp
door window wall floor roof stairs kitchen garden house school church bank hotel office shop market farm city town
village river lake sea ocean island mountain hill valley forest desert beach road bridge street car bus train plane
ship boat bike truck taxi hammer knife spoon fork plate cup bowl bottle box bag key lock clock watch phone camera
radio book pen pencil letter card map ticket coin gift ring hat shirt coat shoe sock glove dress belt button king
queen prince doctor nurse teacher student farmer driver pilot soldier judge artist writer singer dancer baker piano
guitar drum violin flute trumpet Monday Tuesday Friday Sunday January March April June July August October winter
summer spring autumn morning evening night north south east west circle square triangle star moon sun cloud rain
snow wind storm fire ice iron steel copper silver gold""".split())
ADJECTIVES = tuple(" " + w for w in """
happy sad angry calm brave shy proud quiet loud gentle kind cruel honest clever silly wise foolish rich poor young
old tall short big small huge tiny heavy light fast slow hot cold warm cool wet dry soft hard smooth rough sharp dull
bright dark clean dirty fresh empty full thick thin wide narrow deep shallow strong weak sweet sour bitter spicy salty
round flat early late simple strange famous busy lazy careful lucky safe dangerous""".split())
POOLS = {"symbolic": LETTERS, "word": NOUNS, "adjective": ADJECTIVES, "number": DIGITS}
# Domain label of each pool (metric calibration reports means per domain).
DOMAIN = {"symbolic": "symbolic", "word": "word", "adjective": "word", "number": "number"}

DISCOVERY_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (10, 11, 12)
CHARACTERIZATION_SEEDS = (20, 21, 22)
NEWLINE = "\n"


class BankError(ValueError):
    """A bank that cannot be built as specified (a pool too small, a control that licenses the target)."""


class DuplicateControlError(TaskError):
    """Two control suites of one task have identical content: one control counted twice."""


@dataclass(frozen=True)
class InductionExample:
    example_id: str
    stage: str
    family: str
    family_role: str  # positive | control
    tokens: tuple[str, ...]  # the clean prompt, one string per token, BOS not included
    corrupt: tuple[str, ...] | None  # the same-length prompt a causal patch runs on; None: unpatched scoring only
    target: str
    foil: str
    token_domain: str
    length_bucket: str
    base_sequence_id: str
    seed: int | None = None
    positions: tuple[tuple[str, int], ...] = ()  # index into tokens (BOS not included)
    paired_positive_id: str | None = None
    suite: str | None = None  # for controls: the control suite this example fills
    note: str = ""

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def licenses(tokens: Sequence[str], token: str) -> bool:
    """Does the induction rule (an earlier occurrence of the last token, followed by ``token``) predict ``token``?"""
    last = tokens[-1]
    return any(tokens[i] == last and tokens[i + 1] == token for i in range(len(tokens) - 1))


def previous_occurrence(tokens: Sequence[str]) -> int | None:
    """Index of the latest earlier occurrence of the last token, or None."""
    for i in range(len(tokens) - 2, -1, -1):
        if tokens[i] == tokens[-1]:
            return i
    return None


def _draw(rng: random.Random, pool: Sequence[str], n: int, exclude: Iterable[str] = ()) -> list[str]:
    excluded = set(exclude)
    available = [t for t in pool if t not in excluded]
    if len(available) < n:
        raise BankError(f"pool of {len(pool)} tokens has {len(available)} left after exclusions, need {n}")
    return rng.sample(available, n)


def _bucket(n: int) -> str:
    return "short" if n <= 4 else "medium" if n <= 6 else "long"


def _example_id(stage: str, family: str, seed, i: int, tokens, target: str) -> str:
    digest = hashlib.sha256("|".join((stage, family, str(seed), str(i), "".join(tokens), target)).encode()).hexdigest()
    return f"{stage}-{family}-s{seed}-{i}-{digest[:8]}"


# --------------------------------------------------------------------------------------------------------------
# Control constructions (all return the clean prompt; the caller checks the target is not licensed)
# --------------------------------------------------------------------------------------------------------------


def _permutation_without(rng: random.Random, prefix: list[str], suffix: list[str], target: str,
                         avoid: Sequence[Sequence[str]] = (), whole: bool = False) -> list[str]:
    """A permutation of ``suffix`` (or of the whole prompt's tokens, separators kept in place) whose result does
    not license ``target`` and equals no prompt in ``avoid`` (the other controls of the same item)."""
    original = prefix + suffix
    movable = [i for i, t in enumerate(original) if t != NEWLINE] if whole else \
        list(range(len(prefix), len(original)))
    for _ in range(200):
        candidate = list(original)
        for i, j in zip(movable, rng.sample(movable, len(movable))):
            candidate[i] = original[j]
        if candidate != original and not licenses(candidate, target) and candidate not in avoid:
            return candidate
    raise BankError(f"no permutation of {original} avoids licensing {target!r}")


def _controls(kind: str, rng: random.Random, S: list[str], prefix: list[str], suffix: list[str], X: list[str],
              Y: list[str], W: str, avoid: Sequence[Sequence[str]] = ()) -> dict:
    """The control of ``kind`` for a positive ``prefix + suffix`` over sequence ``S`` (fields of InductionExample)."""
    n, L = len(S), len(suffix)
    target, foil = S[-1], S[0]
    positive, corrupt = prefix + suffix, prefix + X[:L]
    if kind == "no_repeat":
        return dict(tokens=prefix + Y[:L], corrupt=corrupt, target=target, foil=foil)
    if kind == "shuffled_repeat":
        return dict(tokens=_permutation_without(rng, prefix, suffix, target, avoid), corrupt=corrupt, target=target,
                    foil=foil)
    if kind == "distractor_repeat":
        j = rng.randrange(0, min(n - 2, L))  # the partial repeat ends on S[j]; it continues to S[j+1] != target
        return dict(tokens=prefix + X[:L - j - 1] + S[:j + 1], corrupt=corrupt, target=target, foil=foil)
    if kind == "same_token_frequency":
        tail = [S[-2], S[0], S[1]] if n >= 4 else [S[-2], S[0]]
        return dict(tokens=prefix + X[:L - len(tail)] + tail, corrupt=corrupt, target=target, foil=foil)
    if kind == "wrong_target":
        return dict(tokens=positive, corrupt=corrupt, target=W, foil=foil)
    if kind == "wrong_target_same_prompt":
        return dict(tokens=positive, corrupt=positive, target=W, foil=foil,
                    note="local-mi-lab construction: clean is the paired positive's prompt, corrupt its own")
    if kind == "no_structure_same_tokens":
        return dict(tokens=_permutation_without(rng, [], positive, target, avoid, whole=True), corrupt=corrupt,
                    target=target, foil=foil)
    if kind == "reversed":
        return dict(tokens=prefix + suffix[::-1], corrupt=corrupt, target=target, foil=foil)
    if kind == "target_swap":
        return dict(tokens=positive, corrupt=corrupt, target=S[1], foil=foil)
    raise BankError(f"unknown control kind {kind!r}")


_PERMUTATIONS = ("shuffled_repeat", "no_structure_same_tokens")
# Target-specificity controls score a token other than the induction target: licensing is about *their* target.
_SCORES_OTHER_TOKEN = ("wrong_target", "wrong_target_same_prompt", "target_swap")


@dataclass(frozen=True)
class PositiveFamily:
    name: str
    pool: str
    lengths: tuple[int, ...]
    shape: str = "repeat"  # repeat | double_repeat | multi_distractor
    controls: tuple[str, ...] = ()
    corrupt: str = "filler"  # filler | reversed
    # Between copies of S. SmolLM2 barely treats " P E K N P E K" as a repeat (metric calibration: mean logit
    # diff 0.7 for letters, -1 to 3 for words) but does " P E K N\n P E K" (4-6): the banks use the newline.
    separator: tuple[str, ...] = (NEWLINE,)


DISCOVERY_CONTROLS = ("no_repeat", "shuffled_repeat", "distractor_repeat", "same_token_frequency", "wrong_target",
                      "wrong_target_same_prompt")
HELDOUT_CONTROLS = ("no_structure_same_tokens", "wrong_target", "wrong_target_same_prompt")
CHARACTERIZATION_CONTROLS = ("reversed", "target_swap")

DISCOVERY_FAMILIES = (
    PositiveFamily("repeat_symbolic", "symbolic", (4, 5, 6), controls=DISCOVERY_CONTROLS),
    PositiveFamily("repeat_word", "word", (4, 5, 6), controls=DISCOVERY_CONTROLS),
)
HELDOUT_FAMILIES = (
    PositiveFamily("heldout_symbolic_longer", "symbolic", (8,), controls=HELDOUT_CONTROLS),
    PositiveFamily("heldout_word_sequences", "adjective", (4,), controls=HELDOUT_CONTROLS),
    PositiveFamily("heldout_number_sequences", "number", (5,), controls=HELDOUT_CONTROLS),
    PositiveFamily("heldout_double_repeat", "symbolic", (5,), shape="double_repeat", controls=HELDOUT_CONTROLS),
)
CHARACTERIZATION_FAMILIES = (
    PositiveFamily("char_symbolic_short", "symbolic", (4,), controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
    PositiveFamily("char_symbolic_long", "symbolic", (8,), controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
    PositiveFamily("char_word_short", "word", (4,), controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
    PositiveFamily("char_word_long", "adjective", (8,), controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
    PositiveFamily("char_number_short", "number", (3,), controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
    PositiveFamily("char_number_long", "number", (5,), controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
    PositiveFamily("char_multi_distractor", "symbolic", (5,), shape="multi_distractor",
                   controls=CHARACTERIZATION_CONTROLS, corrupt="reversed"),
)
STAGES = {
    "discovery": (DISCOVERY_FAMILIES, DISCOVERY_SEEDS),
    "heldout": (HELDOUT_FAMILIES, HELDOUT_SEEDS),
    "characterization": (CHARACTERIZATION_FAMILIES, CHARACTERIZATION_SEEDS),
}
CONTROL_FAMILY_PREFIX = {"discovery": "", "heldout": "heldout_", "characterization": "char_"}


def _shape(fam: PositiveFamily, S: list[str]) -> tuple[list[str], list[str], list[tuple[str, int]]]:
    """(prefix, suffix, positions) of a positive prompt; positions index the whole prompt without BOS."""
    n, sep = len(S), list(fam.separator)
    if fam.shape == "repeat":
        return S + sep, S[:-1], [("previous_occurrence", n - 2)]
    if fam.shape == "double_repeat":
        prefix = S + sep + S + sep
        return prefix, S[:-1], [("previous_occurrence", len(S + sep) + n - 2)]
    if fam.shape == "multi_distractor":
        # S + S[:-1] + S[0] + S[-2]: S[-2] occurs twice before, once followed by the target (first copy) and once by
        # the foil S[0] (second copy): the second is the distractor.
        prefix = S + sep
        return prefix, S[:-1] + [S[0], S[-2]], [("previous_occurrence", n - 2), ("distractor", len(prefix) + n - 2)]
    raise BankError(f"unknown shape {fam.shape!r}")


def pool_for(name: str, tokenizer: Tokenizer | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(usable, dropped): the pool's strings that are exactly one token for the tokenizer (all when None)."""
    pool = POOLS[name]
    if tokenizer is None:
        return pool, ()
    usable = tuple(t for t in pool if tokenizer.single(t) is not None)
    return usable, tuple(t for t in pool if t not in usable)


def _family_items(stage: str, fam: PositiveFamily, seed: int, n_items: int, tokenizer) -> list[InductionExample]:
    pool, _ = pool_for(fam.pool, tokenizer)
    prefix_name = CONTROL_FAMILY_PREFIX[stage]
    out = []
    for i in range(n_items):
        rng = random.Random(f"{stage}:{seed}:{fam.name}:{i}")
        n = rng.choice(fam.lengths)
        S = _draw(rng, pool, n)
        prefix, suffix, positions = _shape(fam, S)
        L = len(suffix)
        X = _draw(rng, pool, L, exclude=S)
        Y = _draw(rng, pool, L, exclude=S)
        while Y == X:
            Y = _draw(rng, pool, L, exclude=S)
        # The wrong target is absent from both prompts; ten digits can all be in use, then a letter serves.
        in_use = set(S) | set(X)
        W = _draw(rng, pool if set(pool) - in_use else LETTERS, 1, exclude=in_use)[0]
        base = f"{stage}-{fam.name}-s{seed}-{i}"
        tokens = prefix + suffix
        corrupt = prefix + (X[:L] if fam.corrupt == "filler" else suffix[::-1])
        common = dict(stage=stage, token_domain=DOMAIN[fam.pool], length_bucket=_bucket(n), base_sequence_id=base,
                      seed=seed)
        if not licenses(tokens, S[-1]) or licenses(corrupt, S[-1]):
            raise BankError(f"{base}: the positive does not license its target or the corrupt prompt does")
        pos_id = _example_id(stage, fam.name, seed, i, tokens, S[-1])
        out.append(InductionExample(pos_id, family=fam.name, family_role="positive", tokens=tuple(tokens),
                                    corrupt=tuple(corrupt), target=S[-1], foil=S[0], positions=tuple(positions),
                                    **common))
        built = {}
        # Permutation controls last, so they can avoid coinciding with a fixed construction (for n = 4 a shuffle
        # of the repeat can equal the same-token-frequency tail).
        for kind in sorted(fam.controls, key=lambda k: k in _PERMUTATIONS):
            built[kind] = _controls(kind, rng, S, prefix, suffix, X, Y, W, [c["tokens"] for c in built.values()])
        for kind in fam.controls:
            c = built[kind]
            if kind not in _SCORES_OTHER_TOKEN and licenses(c["tokens"], c["target"]):
                raise BankError(f"{base}: control {kind} licenses the target {c['target']!r}")
            if c["corrupt"] != c["tokens"] and licenses(c["corrupt"], c["target"]):
                raise BankError(f"{base}: control {kind}'s corrupt prompt licenses the target")
            if len(c["tokens"]) != len(tokens) or len(c["corrupt"]) != len(tokens):
                raise BankError(f"{base}: control {kind} is not the positive's length")
            prev = previous_occurrence(c["tokens"])
            family = prefix_name + kind
            out.append(InductionExample(
                _example_id(stage, family, seed, i, c["tokens"], c["target"]), family=family, family_role="control",
                tokens=tuple(c["tokens"]), corrupt=tuple(c["corrupt"]), target=c["target"], foil=c["foil"],
                positions=(("previous_occurrence", prev),) if prev is not None else (), paired_positive_id=pos_id,
                suite=kind, note=c.get("note", ""), **common))
    return out


def induction_bank(stage: str, seed: int, n_per_family: int = 8, tokenizer=None) -> list[InductionExample]:
    """Positives and their paired controls for one stage and seed (``n_per_family`` positives per family).

    With a tokenizer, every pool is first restricted to strings that are exactly one token for it (see
    ``pool_for`` for what was dropped)."""
    if stage not in STAGES:
        raise BankError(f"unknown stage {stage!r}; stages: {sorted(STAGES)}")
    tok = None if tokenizer is None else as_tokenizer(tokenizer)
    families, _ = STAGES[stage]
    return [ex for fam in families for ex in _family_items(stage, fam, seed, n_per_family, tok)]


# --------------------------------------------------------------------------------------------------------------
# local-mi-lab's metric calibration bank: 9 base sequences x 8 families, unpatched scoring only
# --------------------------------------------------------------------------------------------------------------

CALIBRATION_LENGTHS = {"symbolic": (4, 6, 8), "word": (4, 6, 8), "number": (3, 4, 5)}
CALIBRATION_POSITIVES = ("calib_clean_repeat_symbolic", "calib_clean_repeat_word", "calib_clean_repeat_number",
                         "calib_clean_repeat_format_variant")
CALIBRATION_CONTROLS = ("calib_wrong_target_same_prompt", "calib_target_swap_control",
                        "calib_same_token_frequency_control", "calib_reversed_order_control",
                        "calib_no_repeat_control", "calib_frequency_trap_control")


def metric_calibration_bank(seed: int = 0, tokenizer=None) -> list[InductionExample]:
    """9 base sequences (symbolic/word/number x short/medium/long) x 8 families = 72 examples.

    Positives: S + S[:-1] (per domain) and the format variant S + newline + S[:-1], scored S[-1] vs S[0].
    Controls: the positive scored with target and foil swapped (wrong target); the positive scored S[1] vs S[0]
    (target swap); S + S[-2], S[0], S[1] (same token frequency); S + reversed(S[:-1]); S + filler (no repeat);
    S + S[-1] x (n-1) (frequency trap: the target is simply frequent)."""
    tok = None if tokenizer is None else as_tokenizer(tokenizer)
    out = []
    for domain, lengths in CALIBRATION_LENGTHS.items():
        pool, _ = pool_for(domain, tok)
        for n in lengths:
            rng = random.Random(f"metric_calibration:{seed}:{domain}:{n}")
            S = _draw(rng, pool, n)
            X = _draw(rng, pool, n - 1, exclude=S)
            base = f"calib-{domain}-{n}-s{seed}"
            rep = S + S[:-1]
            tail = [S[-2], S[0], S[1]] if n >= 4 else [S[-2], S[0]]
            rows = [
                (f"calib_clean_repeat_{domain}", "positive", rep, S[-1], S[0]),
                ("calib_clean_repeat_format_variant", "positive", S + [NEWLINE] + S[:-1], S[-1], S[0]),
                ("calib_wrong_target_same_prompt", "control", rep, S[0], S[-1]),
                ("calib_target_swap_control", "control", rep, S[1], S[0]),
                ("calib_same_token_frequency_control", "control", S + tail, S[-1], S[0]),
                ("calib_reversed_order_control", "control", S + S[:-1][::-1], S[-1], S[0]),
                ("calib_no_repeat_control", "control", S + X, S[-1], S[0]),
                ("calib_frequency_trap_control", "control", S + [S[-1]] * (n - 1), S[-1], S[0]),
            ]
            for family, role, tokens, target, foil in rows:
                prev = previous_occurrence(tokens)
                out.append(InductionExample(
                    _example_id("metric_calibration", family, seed, n, tokens, target), stage="metric_calibration",
                    family=family, family_role=role, tokens=tuple(tokens), corrupt=None, target=target, foil=foil,
                    token_domain=domain, length_bucket=("short", "medium", "long")[lengths.index(n)],
                    base_sequence_id=base, seed=seed,
                    positions=(("previous_occurrence", prev),) if prev is not None else ()))
    return out


# --------------------------------------------------------------------------------------------------------------
# Token ids and engine tasks
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    example: InductionExample
    ids: tuple[int, ...]  # BOS + tokens
    corrupt_ids: tuple[int, ...] | None
    target_id: int
    foil_id: int


def encode_example(example: InductionExample, tokenizer) -> EncodedExample | Rejection:
    """Token ids (with BOS) when every string is exactly one token and the joined text tokenizes back to the same
    ids (so the text shown in reports is what the model saw); a Rejection with reasons otherwise."""
    tok = as_tokenizer(tokenizer)
    problems = []
    strings = set(example.tokens) | set(example.corrupt or ()) | {example.target, example.foil}
    multi = sorted(s for s in strings if tok.single(s) is None)
    if multi:
        problems.append("not_single_token:" + ",".join(repr(s) for s in multi))
    elif example.target == example.foil:
        problems.append("target_equals_foil")
    if not problems:
        ids = tuple(tok.single(s) for s in example.tokens)
        corrupt = tuple(tok.single(s) for s in example.corrupt) if example.corrupt is not None else None
        for label, seq, strs in (("clean", ids, example.tokens), ("corrupt", corrupt, example.corrupt)):
            if seq is not None and tok.ids("".join(strs)) != seq:
                problems.append(f"retokenization_mismatch:{label}")
    if problems:
        return Rejection(example.example_id, example.family, tuple(problems), example.to_dict())
    return EncodedExample(example, (tok.bos_id, *ids), (tok.bos_id, *corrupt) if corrupt is not None else None,
                          tok.single(example.target), tok.single(example.foil))


def _pair(enc: EncodedExample) -> PromptPair:
    ex = enc.example
    if enc.corrupt_ids is None:
        raise TaskError(f"{ex.example_id}: an unpatched-scoring example has no corrupt prompt")
    if enc.ids == enc.corrupt_ids:  # PromptPair accepts it (the engine marks its rows invalid); a bank excludes it
        raise TaskError(f"{ex.example_id}: identical clean and corrupt prompts cannot measure a causal effect")
    return PromptPair(ex.example_id, ex.family, enc.ids, enc.corrupt_ids, enc.target_id, enc.foil_id,
                      family_role=ex.family_role, seed=ex.seed,
                      positions=tuple((label, i + 1) for label, i in ex.positions), text=ex.text)


@dataclass
class TaskBuild:
    """Engine tasks and everything that could not become one, with reasons (nothing is dropped silently)."""

    tasks: list[Task]
    excluded: list[Rejection]

    def excluded_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f"{r.family}: {r.reasons[0].split(':')[0]}" for r in self.excluded).items()))

    def suites(self) -> dict[str, int]:
        return dict(sorted(Counter(s for t in self.tasks for s, _ in t.controls).items()))


def _check_distinct_controls(pair: PromptPair, controls: list[tuple[str, PromptPair]]) -> None:
    seen: dict = {}
    for suite, c in controls:
        key = (c.clean, c.corrupt, c.target, c.foil)
        if key in seen:
            raise DuplicateControlError(f"{pair.prompt_id}: control suites {seen[key]!r} and {suite!r} have identical "
                                        "prompts and tokens; one control would be counted twice")
        seen[key] = suite


def build_tasks(examples: Iterable[InductionExample], tokenizer) -> TaskBuild:
    """Engine ``Task``s: each positive's (clean, corrupt) pair with its controls as (suite, PromptPair).

    A control the engine cannot use (clean == corrupt, a token that is not one token ...) is excluded with its
    reason; two controls of one task with identical content raise ``DuplicateControlError``."""
    tok = as_tokenizer(tokenizer)
    examples = list(examples)
    controls_of = defaultdict(list)
    for ex in examples:
        if ex.family_role == "control":
            controls_of[ex.paired_positive_id].append(ex)
    positive_ids = {ex.example_id for ex in examples if ex.family_role == "positive"}
    excluded = [Rejection(ex.example_id, ex.family, ("unpaired_control:no positive with id "
                                                     f"{ex.paired_positive_id!r} in this bank",), ex.to_dict())
                for ex in examples if ex.family_role == "control" and ex.paired_positive_id not in positive_ids]
    tasks = []
    for ex in examples:
        if ex.family_role != "positive":
            continue
        enc = encode_example(ex, tok)
        try:
            if isinstance(enc, Rejection):
                raise TaskError(enc.reasons[0])
            pair = _pair(enc)
        except TaskError as exc:
            excluded.append(Rejection(ex.example_id, ex.family, (f"positive_unusable:{exc}",), ex.to_dict()))
            excluded += [Rejection(c.example_id, c.family, ("paired_positive_excluded",), c.to_dict())
                         for c in controls_of[ex.example_id]]
            continue
        controls = []
        for c in controls_of[ex.example_id]:
            enc_c = encode_example(c, tok)
            if isinstance(enc_c, Rejection):
                excluded.append(enc_c)
                continue
            try:
                controls.append((c.suite, _pair(enc_c)))
            except TaskError as exc:
                why = "clean_equals_corrupt" if enc_c.ids == enc_c.corrupt_ids else "task_error"
                excluded.append(Rejection(c.example_id, c.family, (f"{why}:{exc}",), c.to_dict()))
        _check_distinct_controls(pair, controls)
        tasks.append(Task(pair, tuple(controls)))
    return TaskBuild(tasks, excluded)


def bank_summary(examples: Iterable[InductionExample]) -> dict[str, dict[str, int]]:
    """Per family: examples and distinct clean prompts (a bank that cycles a small pool shows it here)."""
    by_family = defaultdict(list)
    for ex in examples:
        by_family[ex.family].append(ex.tokens)
    return {f: {"n": len(v), "distinct_prompts": len(set(v))} for f, v in sorted(by_family.items())}
