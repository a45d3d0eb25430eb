"""Control prompt suites for token-contrast tasks (SELF-GROUND's ``control_suites.py``, without its duplicate).

A suite says which control prompt is scored for isolation (how much an intervention moves what it should not):

* ``matched_non_negation``: the task's own control prompt and control target/foil;
* ``lexical_identity``: ``The word "{foil}" contrasts with the word``, scored with the task's target/foil;
* ``semantic_unrelated``: the control prompt and tokens of a task from another family (the k-th task of a family is
  paired with the k-th task of the next family, cyclically, so the suite is not one prompt repeated);
* ``shuffled_target``: the task's control prompt scored with the target/foil of another task of the same family
  whose two tokens differ from this task's (otherwise the "shuffle" would be the matched control again);
* ``hard_negative``: the matched control behind a clause that contains " not" without negating the predicate
  ("It was not surprising that the movie was good. The movie was"): a unit that merely reacts to the word "not"
  moves it; SELF-GROUND's hard negative was byte-identical to the matched control and counted it twice (§6.1).

Two suites with identical (prompt, target, foil) content for a task raise ``DuplicateSuiteError``: whatever its
name, a copy of a control is the same control.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ..gates import GateResult
from ..status import Status
from .schema import Rejection, ValidTask, as_tokenizer

SUITES = ("matched_non_negation", "lexical_identity", "semantic_unrelated", "shuffled_target", "hard_negative")
HARD_NEGATIVE_LEAD = "It was not surprising that "


class DuplicateSuiteError(ValueError):
    """Two control suites hold the same prompts and tokens."""


@dataclass(frozen=True)
class ControlCase:
    case_id: str
    task_id: str
    family: str
    suite: str
    prompt: str
    target: str
    foil: str
    prompt_ids: tuple[int, ...]  # BOS + prompt
    target_id: int
    foil_id: int

    @property
    def content(self) -> tuple:
        return (self.prompt, self.target, self.foil)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Context:
    """What suites may look at besides the task: the other tasks, by family, in a fixed order."""

    def __init__(self, tasks: Sequence[ValidTask]) -> None:
        self.by_family: dict[str, list[ValidTask]] = defaultdict(list)
        for t in sorted(tasks, key=lambda t: (t.family, t.id)):
            self.by_family[t.family].append(t)
        self.families = sorted(self.by_family)

    def index(self, task: ValidTask) -> int:
        return self.by_family[task.family].index(task)


def _matched(task: ValidTask, ctx: _Context):
    t = task.task
    return t.control_prompt, t.control_target, t.control_foil


def _lexical(task: ValidTask, ctx: _Context):
    t = task.task
    return f'The word "{t.foil.strip()}" contrasts with the word', t.target, t.foil


def _semantic_unrelated(task: ValidTask, ctx: _Context):
    others = [f for f in ctx.families if f != task.family]
    if not others:
        return "semantic_unrelated needs a second task family"
    family = ctx.families[(ctx.families.index(task.family) + 1) % len(ctx.families)]
    pool = ctx.by_family[family]
    other = pool[ctx.index(task) % len(pool)].task
    return other.control_prompt, other.control_target, other.control_foil


def _shuffled_target(task: ValidTask, ctx: _Context):
    pool = ctx.by_family[task.family]
    own = {task.target_id, task.foil_id}
    start = ctx.index(task)
    for k in range(1, len(pool)):
        other = pool[(start + k) % len(pool)]
        if {other.target_id, other.foil_id} != own:
            return task.task.control_prompt, other.task.target, other.task.foil
    return f"no other task in {task.family} has a different target/foil pair"


def _hard_negative(task: ValidTask, ctx: _Context):
    t = task.task
    control = t.control_prompt
    return HARD_NEGATIVE_LEAD + control[:1].lower() + control[1:], t.control_target, t.control_foil


SUITE_BUILDERS: dict[str, Callable] = {
    "matched_non_negation": _matched,
    "lexical_identity": _lexical,
    "semantic_unrelated": _semantic_unrelated,
    "shuffled_target": _shuffled_target,
    "hard_negative": _hard_negative,
}


@dataclass
class ControlSuites:
    cases: list[ControlCase]
    excluded: list[Rejection]
    suites: tuple[str, ...]
    families: tuple[str, ...]

    def by_task(self) -> dict[str, dict[str, ControlCase]]:
        out: dict = defaultdict(dict)
        for c in self.cases:
            out[c.task_id][c.suite] = c
        return dict(out)

    def counts(self) -> dict[str, dict[str, int]]:
        """Cases per family and suite (zeros included)."""
        have = Counter((c.family, c.suite) for c in self.cases)
        return {f: {s: have.get((f, s), 0) for s in self.suites} for f in self.families}

    def coverage(self, min_cases_per_family: int = 1) -> GateResult:
        """``blocked`` unless every family has ``min_cases_per_family`` cases in every suite and nothing was
        excluded (a control that could not be built is a missing control)."""
        counts = self.counts()
        short = [f"{f}/{s} has {n}" for f, per in counts.items() for s, n in per.items() if n < min_cases_per_family]
        details = {"counts": counts, "n_cases": len(self.cases), "n_excluded": len(self.excluded),
                   "excluded": [r.to_dict() for r in self.excluded[:20]]}
        if short or self.excluded:
            reason = "; ".join(filter(None, [
                f"fewer than {min_cases_per_family} cases: " + ", ".join(short) if short else "",
                f"{len(self.excluded)} control cases could not be built "
                f"(first: {self.excluded[0].id}: {self.excluded[0].reasons[0]})" if self.excluded else ""]))
            return GateResult("control_suites", False, float(len(self.cases)), float(min_cases_per_family), ">=",
                              Status.BLOCKED, reason, (), details)
        return GateResult("control_suites", True, float(len(self.cases)), float(min_cases_per_family), ">=",
                          Status.STRONG, f"{len(self.suites)} distinct suites x {len(self.families)} families complete",
                          (), details)


def check_distinct_suites(cases: Sequence[ControlCase]) -> None:
    """Raise ``DuplicateSuiteError`` when one task has two suites with the same (prompt, target, foil).

    Per task, not per suite overall: ``semantic_unrelated`` rightly reuses other tasks' matched controls."""
    per_task: dict = defaultdict(dict)
    for c in cases:
        first = per_task[c.task_id].setdefault(c.content, c.suite)
        if first != c.suite:
            raise DuplicateSuiteError(f"task {c.task_id}: suites {first!r} and {c.suite!r} have identical prompt and "
                                      f"tokens ({c.prompt!r} -> {c.target!r} vs {c.foil!r}); one control would be "
                                      "counted twice")


def build_control_suites(tasks: Sequence[ValidTask], tokenizer,
                         suites: Sequence[str] | Mapping[str, Callable] = SUITES) -> ControlSuites:
    """One case per task and suite; a case that cannot be built (no donor task, a token that is not one token, an
    empty prompt) is excluded with its reason. ``suites`` names built-in suites or maps names to builders
    ``f(task, context) -> (prompt, target, foil) | reason``."""
    tok = as_tokenizer(tokenizer)
    builders = dict(suites) if isinstance(suites, Mapping) else {}
    if not builders:
        unknown = [s for s in suites if s not in SUITE_BUILDERS]
        if unknown:
            raise ValueError(f"unknown control suites {unknown}; known: {list(SUITE_BUILDERS)}")
        builders = {s: SUITE_BUILDERS[s] for s in suites}
    ctx = _Context(tasks)
    cases, excluded = [], []
    for task in tasks:
        for suite, build in builders.items():
            built = build(task, ctx)
            case_key = f"{task.id}_{suite}"
            if isinstance(built, str):
                excluded.append(Rejection(case_key, task.family, (f"unbuildable:{built}",), {"suite": suite}))
                continue
            prompt, target, foil = built
            problems = [] if prompt.strip() else ["empty_prompt"]
            ids = {name: tok.single(s) for name, s in (("target", target), ("foil", foil))}
            problems += [f"not_single_token:{n}={s!r}" for n, s in (("target", target), ("foil", foil)) if ids[n] is None]
            if not problems and ids["target"] == ids["foil"]:
                problems.append("target_equals_foil")
            if problems:
                excluded.append(Rejection(case_key, task.family, tuple(problems),
                                          {"suite": suite, "prompt": prompt, "target": target, "foil": foil}))
                continue
            digest = hashlib.sha256("|".join((task.id, suite, prompt, target, foil)).encode()).hexdigest()[:10]
            cases.append(ControlCase(f"{case_key}_{digest}", task.id, task.family, suite, prompt, target, foil,
                                     (tok.bos_id, *tok.ids(prompt)), ids["target"], ids["foil"]))
    check_distinct_suites(cases)
    return ControlSuites(cases, excluded, tuple(builders), tuple(ctx.families))
