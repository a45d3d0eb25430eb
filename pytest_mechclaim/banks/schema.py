"""Token-contrast tasks, validated strictly against the claim's tokenizer.

A ``BankTask`` is one prompt with a target/foil next-token contrast, plus its matched control prompt with its own
target/foil (SELF-GROUND's ``BehavioralTask``). Validation never drops a task silently: every task ends up either
``valid`` (with its token ids) or ``rejected`` with its reasons, and the rejections can be written as JSONL.

Rules (seed-systems §1.2): every target/foil string is exactly one token; target != foil and control target !=
control foil; prompts are non-empty; unknown fields are rejected.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

DIRECTIONS = ("positive", "negative", "unknown")
TOKEN_FIELDS = ("target", "foil", "control_target", "control_foil")
PROMPT_FIELDS = ("prompt", "control_prompt")


class SchemaError(ValueError):
    """A task record that does not fit the schema (unknown or missing fields, wrong types)."""


class Tokenizer:
    """The claim's tokenizer, from a TransformerLens model (``to_tokens(s, prepend_bos=False)``) or an HF tokenizer
    (``encode(s, add_special_tokens=False)``)."""

    def __init__(self, source) -> None:
        self.source = source
        if hasattr(source, "to_tokens"):
            hf = getattr(source, "tokenizer", None)
            self._encode = lambda s: tuple(int(t) for t in source.to_tokens(s, prepend_bos=False)[0].tolist())
        elif hasattr(source, "encode"):
            hf = source
            self._encode = lambda s: tuple(int(t) for t in source.encode(s, add_special_tokens=False))
        else:
            raise TypeError(f"need a TransformerLens model or an HF tokenizer, got {type(source).__name__}")
        if hf is None or hf.bos_token_id is None:
            raise TypeError("the tokenizer has no BOS token id")
        self.bos_id = int(hf.bos_token_id)
        self._hf = hf
        self._cache: dict[str, tuple[int, ...]] = {}

    def ids(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without BOS."""
        if text == "":
            return ()
        if text not in self._cache:
            self._cache[text] = self._encode(text)
        return self._cache[text]

    def single(self, text: str) -> int | None:
        """The id when ``text`` is exactly one token, else None."""
        ids = self.ids(text)
        return ids[0] if len(ids) == 1 else None

    def decode(self, ids: Sequence[int]) -> str:
        return self._hf.decode(list(ids))


def as_tokenizer(source) -> Tokenizer:
    """``source`` itself when it is already a ``Tokenizer``, else a ``Tokenizer`` around it."""
    return source if isinstance(source, Tokenizer) else Tokenizer(source)


def task_id(family: str, prompt: str, target: str, foil: str) -> str:
    """Content id: the same prompt and contrast always get the same id, so duplicates are visible."""
    digest = hashlib.sha256("|".join((family, prompt, target, foil)).encode()).hexdigest()[:12]
    return f"{family}_{digest}"


@dataclass(frozen=True)
class BankTask:
    id: str
    family: str
    prompt: str
    target: str
    foil: str
    control_prompt: str
    control_target: str
    control_foil: str
    expected_baseline_direction: str = "positive"
    control_type: str = "matched_non_negation"
    metadata: Mapping = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_dict(cls, record: Mapping) -> "BankTask":
        """Validate a raw record with the bank's pydantic schema (``BankTaskRecord``); SchemaError names every
        unknown, missing or mistyped field."""
        from pydantic import ValidationError

        if not isinstance(record, Mapping):
            raise SchemaError(f"a task record must be a mapping, got {type(record).__name__}")
        try:
            valid = _record_model().model_validate(dict(record))
        except ValidationError as exc:
            raise SchemaError(_schema_problems(exc)) from None
        return cls(**valid.model_dump())

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["metadata"] = dict(self.metadata)
        return out


@functools.cache
def _record_model():
    """The pydantic model of one raw task record (built once, on first use: pydantic stays out of import time)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class BankTaskRecord(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        id: str
        family: str
        prompt: str
        target: str
        foil: str
        control_prompt: str
        control_target: str
        control_foil: str
        expected_baseline_direction: Literal[DIRECTIONS] = "positive"  # type: ignore[valid-type]
        control_type: str = "matched_non_negation"
        metadata: dict = Field(default_factory=dict)

    return BankTaskRecord


def _schema_problems(exc) -> str:
    by_kind: dict[str, list[str]] = {}
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "record"
        if error["type"] == "extra_forbidden":
            by_kind.setdefault("unknown task fields", []).append(name)
        elif error["type"] == "missing":
            by_kind.setdefault("missing task fields", []).append(name)
        elif name == "expected_baseline_direction":
            by_kind.setdefault(f"expected_baseline_direction must be one of {DIRECTIONS}", [])
        elif name.startswith("metadata"):
            by_kind.setdefault("metadata must be a mapping", [])
        else:
            by_kind.setdefault("fields must be strings", []).append(f"field {name} must be a string, got "
                                                                  f"{type(error.get('input')).__name__}")
    return "; ".join(f"{kind} {sorted(names)}" if kind.endswith("fields") else
                     (", ".join(names) if names else kind) for kind, names in by_kind.items())


@dataclass(frozen=True)
class ValidTask:
    """A task that passed validation, with its token ids (prompts start with BOS)."""

    task: BankTask
    prompt_ids: tuple[int, ...]
    control_ids: tuple[int, ...]
    target_id: int
    foil_id: int
    control_target_id: int
    control_foil_id: int

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def family(self) -> str:
        return self.task.family


@dataclass(frozen=True)
class Rejection:
    """A task (or raw record) that cannot be used, and why."""

    id: str
    family: str | None
    reasons: tuple[str, ...]
    record: Mapping = field(hash=False, compare=False, default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "family": self.family, "reasons": list(self.reasons), "record": dict(self.record)}


def write_jsonl(path: str | Path, records: Iterable) -> Path:
    """One JSON object per line (``to_dict()`` for dataclasses); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for r in records:
            fh.write(json.dumps(r.to_dict() if hasattr(r, "to_dict") else r, sort_keys=True) + "\n")
    return path


@dataclass
class Validation:
    valid: list[ValidTask]
    rejected: list[Rejection]

    def counts(self, families: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Per family: valid and rejected counts (required families with nothing appear with zeros)."""
        fams = list(families) if families is not None else sorted(
            {v.family for v in self.valid} | {r.family for r in self.rejected if r.family is not None})
        valid = Counter(v.family for v in self.valid)
        rejected = Counter(r.family for r in self.rejected)
        return {f: {"valid": valid.get(f, 0), "rejected": rejected.get(f, 0)} for f in fams}

    def reason_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(why.split(":")[0] for r in self.rejected for why in r.reasons).items()))

    def write_rejections(self, path: str | Path) -> Path:
        return write_jsonl(path, self.rejected)


def _task_problems(task: BankTask, tok: Tokenizer) -> tuple[list[str], dict]:
    problems, ids = [], {}
    for name in PROMPT_FIELDS:
        if not getattr(task, name).strip():
            problems.append(f"empty_prompt:{name}")
    for name in TOKEN_FIELDS:
        text = getattr(task, name)
        n = len(tok.ids(text))
        if n != 1:
            problems.append(f"not_single_token:{name}={text!r} is {n} tokens")
        else:
            ids[name] = tok.ids(text)[0]
    if "target" in ids and ids.get("target") == ids.get("foil"):
        problems.append("target_equals_foil")
    if "control_target" in ids and ids.get("control_target") == ids.get("control_foil"):
        problems.append("control_target_equals_control_foil")
    return problems, ids


def validate_tasks(tasks: Iterable[BankTask | Mapping], tokenizer) -> Validation:
    """Split tasks into valid (with token ids) and rejected (with reasons). Raw mappings are parsed strictly: a
    record that does not fit the schema is rejected with the schema error, not raised, so nothing is lost."""
    tok = as_tokenizer(tokenizer)
    valid, rejected, seen = [], [], {}
    for i, item in enumerate(tasks):
        if not isinstance(item, BankTask):
            try:
                item = BankTask.from_dict(item)
            except SchemaError as exc:
                record = dict(item) if isinstance(item, Mapping) else {"value": repr(item)}
                rejected.append(Rejection(str(record.get("id", f"record_{i}")), record.get("family"),
                                          (f"schema:{exc}",), record))
                continue
        if item.id in seen:
            rejected.append(Rejection(item.id, item.family, (f"duplicate_task_id:first at index {seen[item.id]}",),
                                      item.to_dict()))
            continue
        seen[item.id] = i
        problems, ids = _task_problems(item, tok)
        if problems:
            rejected.append(Rejection(item.id, item.family, tuple(problems), item.to_dict()))
            continue
        valid.append(ValidTask(item, (tok.bos_id, *tok.ids(item.prompt)), (tok.bos_id, *tok.ids(item.control_prompt)),
                               ids["target"], ids["foil"], ids["control_target"], ids["control_foil"]))
    return Validation(valid, rejected)


def read_tasks_jsonl(path: str | Path) -> list[dict]:
    """Raw records (validate them with ``validate_tasks``, which rejects bad ones with reasons)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def distinct_prompts(tasks: Iterable[BankTask | ValidTask]) -> int:
    """How many different prompts a bank really holds (E002's 30 tasks were 12 prompts)."""
    return len({(t.task if isinstance(t, ValidTask) else t).prompt for t in tasks})
