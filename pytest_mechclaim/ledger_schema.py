"""The claim ledger file: its published schema (``pytest-mechclaim/ledger/2``, pydantic v2 models), strict
reading, integrity digests and safe writing. ``ledger`` builds ledgers; this module decides whether a file on disk
can be trusted and writes one only when it can.

Every ledger is validated as a whole before any of it is trusted (on load) and before it is written (the new
ledger must validate and render, or nothing is written). Version 2 differs from version 1 by a ``digest`` per claim
block and a ``claims_digest`` over all of them (tamper detection: ``claim_digest``, ``tampered``), optional
``thresholds`` per stage, and ``replaces`` on acknowledgements of a stage that entered while another vanished.
No other version is read or upgraded: a ledger of another schema is an error naming the supported one. The JSON
Schema is published by ``python -m pytest_mechclaim.ledger_schema``.

Strict models (``extra="forbid"``) for what this package writes itself (stages, acknowledgements, test and run
references); the claim block and run entries allow extra keys, because they carry the claim marker's and the
session's fields verbatim and those may grow without a ledger format change.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .ledger_markdown import markdown_path, render_markdown
from .spec import CLAIM_ID
from .status import Status

SCHEMA = "pytest-mechclaim/ledger/2"
Level = Literal["blocked", "falsified", "insufficient", "candidate", "strong"]
Metric = Union[bool, int, float, str, None]  # "nan" / "inf" / "-inf" are stored as strings
# A ledger temp file is written and moved into place within seconds by a writer holding the lock; one older than
# this belongs to a writer that was killed. Younger ones are left alone (they may belong to a live writer that
# reached this ledger through another lock, e.g. an older pytest-mechclaim); stray ones are harmless: they are
# dot-files next to the ledger that no reader looks at.
STALE_TEMP_SECONDS = 6 * 3600


class LedgerError(Exception):
    """The ledger file cannot be trusted (not JSON, wrong schema, malformed entries, hand-edited) or cannot be
    read or written. It is never overwritten."""


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class NodeRef(_Closed):
    nodeid: str = Field(min_length=1)
    outcome: str


class RunRef(_Closed):
    id: str
    date: str
    commit: Optional[str] = None


class Acknowledgement(_Closed):
    reason: str = Field(min_length=1)
    from_status: Optional[Level]
    to_status: Level
    from_spec_hash: Optional[str]
    to_spec_hash: str
    changed_parts: list[str]
    run: str
    date: str
    replaces: Optional[list[str]] = None  # "claim [stage] (nodeid)" of the vanished stages this one replaced


class Stage(_Closed):
    stage: Optional[str]
    status: Level
    spec_hash: str = Field(min_length=1)
    spec_parts: dict[str, str]
    metrics: dict[str, Metric]
    failing_gates: list[str]
    rows: dict[str, int]
    test: NodeRef
    run: RunRef
    thresholds: Optional[dict[str, Any]] = None
    # Strong but for requirements judged across claims (cross-model replication; verdict.support).
    strong_pending: Optional[list[str]] = Field(default=None, min_length=1)
    acknowledged_spec_changes: Optional[list[Acknowledgement]] = Field(default=None, min_length=1)


class Claim(_Open):
    statement: str
    claimed: Level
    expect: Literal["supported", "rejected"] = "supported"
    units: Optional[list[str]] = None
    model: Optional[str] = None
    hook: Optional[str] = None
    sae: Optional[str] = None
    mechanism: Optional[str] = None
    status: Level
    allowed: list[str]
    forbidden: list[str]
    stages: dict[str, Stage] = Field(min_length=1)
    digest: str = Field(min_length=1)

    @model_validator(mode="after")
    def _status_is_the_weakest_stage(self):
        weakest = min(Status.parse(s.status) for s in self.stages.values()).label
        if self.status != weakest:
            raise ValueError(f"status is {self.status!r} but its weakest stage is {weakest!r}")
        return self


class Run(_Open):
    date: str
    commit: Optional[str] = None


class Ledger(_Closed):
    # A plain str (not Literal) so a wrong version gets the clear message of ``check_version``, not pydantic's.
    schema_: str = Field(alias="schema")
    claims: dict[str, Claim]
    runs: dict[str, Run]
    claims_digest: str = Field(min_length=1)

    @field_validator("claims")
    @classmethod
    def _claim_ids(cls, claims: dict) -> dict:
        for claim_id in claims:
            if not CLAIM_ID.match(claim_id):
                raise ValueError(f"claim id {claim_id!r} is malformed")
        return claims


class DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str):
    """``json.loads`` that rejects duplicate keys (a claim id twice, a half-merged block) instead of keeping the
    last one silently."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def check_version(data) -> str | None:
    """Why ``data`` is not a ledger of the supported version (None when it is)."""
    if not isinstance(data, dict):
        return "the top level is not an object"
    if data.get("schema") != SCHEMA:
        return (f"schema is {data.get('schema')!r}; this version of pytest-mechclaim reads only {SCHEMA!r} and "
                "upgrades nothing silently (re-record: remove the file and run pytest --mechclaim-update-ledger)")
    return None


def _where(loc: tuple) -> str:
    parts = []
    for i, item in enumerate(loc):
        prev = loc[i - 1] if i else None
        if prev == "claims":
            parts.append(f"claim {item!r}")
        elif prev == "stages":
            parts.append(f"stage {item!r}")
        elif item not in ("claims", "stages"):
            parts.append(f"{item!r}" if isinstance(item, str) else f"[{item}]")
    return " ".join(parts) or "top level"


def schema_problems(data) -> list[str]:
    """Every way ``data`` fails the schema, one line each, naming the claim and stage; [] when it validates."""
    version = check_version(data)
    if version:
        return [version]
    try:
        Ledger.model_validate(data)
    except ValidationError as exc:
        return [f"{_where(err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)]
    return []


def json_schema() -> dict:
    """The published JSON Schema of the ledger (``python -m pytest_mechclaim.ledger_schema`` prints it)."""
    return Ledger.model_json_schema(by_alias=True)


# ------------------------------------------------------------------------------------------------------------------
# Integrity digests
# ------------------------------------------------------------------------------------------------------------------


def _digest(value) -> str:
    """sha256 of the canonical JSON of ``value`` (JSON-native data: what a ledger file parses to)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _without_run_fields(block: dict) -> dict:
    """A claim block minus its digest and its run-specific fields (tolerant of malformed input: it is also used
    on ledgers that have not been validated yet)."""
    out = {k: v for k, v in block.items() if k != "digest"}
    stages = out.get("stages")
    if isinstance(stages, dict):
        out["stages"] = {}
        for key, entry in stages.items():
            if isinstance(entry, dict):
                entry = {k: v for k, v in entry.items() if k != "run"}
                acks = entry.get("acknowledged_spec_changes")
                if isinstance(acks, list):
                    entry["acknowledged_spec_changes"] = [
                        {k: v for k, v in a.items() if k not in ("run", "date")} if isinstance(a, dict) else a
                        for a in acks]
            out["stages"][key] = entry
    return out


def claim_digest(claim_id: str, block: dict) -> str:
    """The digest of one claim block: its id and every field but the digest itself and run-specific fields."""
    return _digest({"id": claim_id, "claim": _without_run_fields(block)})


def claims_digest(claims: dict) -> str:
    """The digest of the set of claims (ids and their digests): a block added or deleted by hand changes it."""
    return _digest({claim_id: (c.get("digest") if isinstance(c, dict) else None) for claim_id, c in claims.items()})


def seal(ledger: dict) -> dict:
    """Set every claim's digest and the ledger's claims digest (in place; returns the ledger)."""
    for claim_id, block in ledger["claims"].items():
        block["digest"] = claim_digest(claim_id, block)
    ledger["claims_digest"] = claims_digest(ledger["claims"])
    return ledger


def tampered(ledger: dict) -> list[str]:
    """What in ``ledger`` does not match its digests, one line each ([] when every digest matches)."""
    claims = ledger.get("claims")
    if not isinstance(claims, dict):
        return []
    problems = [f"claim {claim_id!r} does not match its digest (a field, stage or status was edited by hand, or "
                "the id was renamed)"
                for claim_id, block in sorted(claims.items())
                if isinstance(block, dict) and isinstance(block.get("digest"), str)
                and block["digest"] != claim_digest(claim_id, block)]
    sealed = all(isinstance(b, dict) and isinstance(b.get("digest"), str) for b in claims.values())
    if not problems and sealed and isinstance(ledger.get("claims_digest"), str) \
            and ledger["claims_digest"] != claims_digest(claims):
        problems.append("the set of claims does not match the ledger's claims_digest (a claim block was added or "
                        "deleted by hand)")
    return problems


# ------------------------------------------------------------------------------------------------------------------
# Reading and writing
# ------------------------------------------------------------------------------------------------------------------


def _restore_hint(path) -> str:
    return (f"It was not modified; fix it (or restore it from version control, e.g. `git checkout -- {path}`) "
            "and run again.")


def validate(data, path: Path | str = "ledger") -> dict:
    """``data`` if it is a ledger of the supported schema whose digests all match; LedgerError otherwise."""
    problems = schema_problems(data) if not isinstance(data, dict) or data.get("schema") != SCHEMA else []
    if not problems:
        hand_edits = tampered(data)
        if hand_edits:
            raise LedgerError(f"the claim ledger {path} was tampered with: {'; '.join(hand_edits)}. The run refuses "
                              f"to compare with or update it. {_restore_hint(path)} (A merge of two recorded "
                              "ledgers: take one side and re-record the other's claims with "
                              "--mechclaim-update-ledger.)")
        problems = schema_problems(data)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise LedgerError(f"the claim ledger {path} is malformed: {shown}. {_restore_hint(path)}")
    return data


def _io_error(path, doing: str, exc: OSError) -> LedgerError:
    where = exc.filename if exc.filename else path
    return LedgerError(f"the claim ledger {path} could not be {doing}: {exc.strerror or exc} ({where})")


def load(path: Path) -> dict | None:
    """The ledger at ``path``; None when there is none. Raises LedgerError for anything unreadable."""
    path = Path(path)
    if path.is_dir():
        raise LedgerError(f"the claim ledger {path} is a directory, not a file; point --mechclaim-ledger (or the "
                          "mechclaim_ledger ini value) at a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise LedgerError(f"the claim ledger {path} is not valid JSON ({exc}). {_restore_hint(path)}") from None
    except OSError as exc:
        raise _io_error(path, "read", exc) from None
    try:
        data = parse_json(text)
    except (json.JSONDecodeError, DuplicateKeyError) as exc:
        raise LedgerError(f"the claim ledger {path} is not valid JSON ({exc}). {_restore_hint(path)}") from None
    return validate(data, path)


def lock_path_for(path: Path) -> Path:
    """The lock beside the ledger: every session writing this ledger takes it, whatever its runs dir."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def check_writable(path: Path) -> None:
    """LedgerError when an update could not write ``path``: a directory, or a file marked read-only (honoured even
    for root, who could replace it anyway: the mark says "do not rewrite")."""
    path = Path(path)
    if path.is_dir():
        raise LedgerError(f"the claim ledger {path} is a directory, not a file; point --mechclaim-ledger (or the "
                          "mechclaim_ledger ini value) at a JSON file")
    for target in (path, markdown_path(path)):
        try:
            mode = target.stat().st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _io_error(path, "checked", exc) from None
        if not mode & 0o222:
            raise LedgerError(f"the claim ledger file {target} is read-only (mode {mode & 0o777:o}): it was not "
                              f"updated. Make it writable (chmod u+w {target}) or run without "
                              "--mechclaim-update-ledger")


def render_files(data: dict, name: str = "mechclaim-ledger.json") -> tuple[str, str]:
    """The JSON and Markdown texts of the sealed, JSON-native ledger ``data``; LedgerError (nothing is written)
    unless it validates and renders."""
    problems = schema_problems(data) + tampered(data)
    if problems:
        raise LedgerError(f"refusing to write the claim ledger {name}: the new ledger does not validate "
                          f"({'; '.join(problems[:5])}); the old one was kept. This is a pytest-mechclaim bug.")
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        md = render_markdown(data, name)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LedgerError(f"refusing to write the claim ledger {name}: its Markdown view does not render "
                          f"({type(exc).__name__}: {exc}); the old one was kept") from None
    return text, md


def write_files(path: Path, data: dict) -> None:
    """Write the ledger and its Markdown view: both rendered and validated first, both temp files written and
    fsynced, then moved into place JSON first (the source of truth; a kill between the two moves leaves a stale
    view, which the next update renders again: ``markdown_is_current``)."""
    from .runs import atomic_write_texts

    path = Path(path)
    text, md = render_files(data, path.name)
    try:
        atomic_write_texts([(path, text), (markdown_path(path), md)], delay_env=True)
    except OSError as exc:
        raise _io_error(path, "written", exc) from None


def markdown_is_current(path: Path, ledger: dict) -> bool:
    md = markdown_path(path)
    try:
        return md.read_text(encoding="utf-8") == render_markdown(ledger, Path(path).name)
    except (OSError, UnicodeDecodeError):
        return False


def remove_stale_temp_files(path: Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Temporary files of writers killed before their ``os.replace`` (call only under the lock). Only those older
    than ``older_than`` seconds: a younger one may be a live writer's, and no writer removes another's."""
    removed = []
    now = time.time()
    for target in (Path(path), markdown_path(path)):
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            try:
                if now - tmp.stat().st_mtime > older_than:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:
                continue
    return removed



if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
