"""The versioned schema of a claim test's report.json, checked before the file is written.

``REPORT_SCHEMA`` names the layout; a reader that sees another name knows the fields may differ. The model pins
what a reader relies on (identity, outcome, verdict status and gate results, the breakdown tables) and forbids
unknown top-level keys, so a misspelt or half-built report is refused instead of written. Nested gate details and
the evidence policy stay open: gates add their own details fields.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .status import LEVELS

REPORT_SCHEMA = "pytest-mechclaim/report/1"

Status = Literal[LEVELS]  # type: ignore[valid-type]  # blocked, falsified, insufficient, candidate, strong


class ReportSchemaError(ValueError):
    """A report dict that does not match ``REPORT_SCHEMA``: the message names every offending field."""


# strict: a "yes" is not a passed gate and "3" is not a row count (lax mode would coerce both).
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Claim(_Open):
    id: str = Field(min_length=1)
    statement: str
    level: Status
    expect: Literal["supported", "rejected"]


class Gate(_Open):
    name: str = Field(min_length=1)
    value: Optional[float]
    threshold: Optional[float]
    comparison: str
    passed: bool
    caps_at: Status
    reason: str
    details: dict[str, Any] = {}
    worst: list[dict[str, Any]] = []


class Verdict(_Open):
    status: Status
    reasons: list[str]
    gates: list[Gate]
    row_accounting: dict[str, Any] = {}
    debts: list[dict[str, Any]] = []
    policy: dict[str, Any] = {}


class SuiteCell(_Open):
    family: str
    family_role: Literal["positive", "control"]
    control_suite: str
    n: int = Field(ge=0)


class UnitSet(_Open):
    unit_set: str
    units: list[str]
    n: int = Field(ge=0)


class Seed(_Open):
    n: int = Field(ge=0)


class Taxonomy(_Open):
    n_target_rows: int = Field(ge=0)
    modes: dict[str, dict[str, Any]]


class Counterexamples(_Closed):
    count: int = Field(ge=0)
    listed: list[dict[str, Any]]


class Report(_Closed):
    schema_: Literal[REPORT_SCHEMA] = Field(alias="schema")  # type: ignore[valid-type]
    claim: Claim
    stage: Optional[str]
    key: Optional[str]
    nodeid: str = Field(min_length=1)
    outcome: Literal["passed", "failed", "skipped"]
    run_id: Optional[str]
    spec_hash: Optional[str]
    spec_parts: Optional[dict[str, Any]]
    verdict: Optional[Verdict]
    error: Optional[str]
    suite_breakdown: list[SuiteCell]
    unit_sets: list[UnitSet]
    seeds: list[Seed]
    failure_taxonomy: Taxonomy
    counterexamples: Counterexamples
    n_baseline_rows: int = Field(ge=0)
    rerun: str


def validate_report(data: dict) -> dict:
    """``data`` unchanged when it matches ``REPORT_SCHEMA``; else ReportSchemaError listing each problem."""
    if not isinstance(data, dict):
        raise ReportSchemaError(f"a report must be a dict, got {type(data).__name__}")
    try:
        Report.model_validate(data)
    except ValidationError as exc:
        where = data.get("claim", {}).get("id") if isinstance(data.get("claim"), dict) else None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<report>'}: {e['msg']}"
                             for e in exc.errors())
        raise ReportSchemaError(f"report.json{f' of claim {where!r}' if where else ''} does not match "
                                f"{REPORT_SCHEMA} ({exc.error_count()} problem(s)): {problems}") from None
    return data
