"""Claim specs: the ``claim`` marker, parsed and validated strictly.

    pytestmark = pytest.mark.claim(
        "gt-induction-L1H0",
        statement="L1H0 copies the token after the previous occurrence of the current token",
        level="candidate",        # the status this claim asserts
        units=["L1H0"],
    )

``expect="rejected"`` turns a claim into a planted false claim: its test passes only when the evidence rejects it
(``falsified`` or ``insufficient``), which proves the gates bite. A ``blocked`` verdict never passes either way.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .status import LEVELS, Status

STAGES = ("calibration", "discovery", "replication", "heldout", "characterization")
STAGE_HELP = {
    "calibration": "baseline and metric calibration of a claim's tasks (before any intervention)",
    "discovery": "search and candidate selection; the candidate set is frozen here",
    "replication": "the frozen candidates re-scored on new seeds",
    "heldout": "held-out prompt families and seeds, disjoint from discovery",
    "characterization": "how the mechanism works: attention/effect alignment, positions, OV/QK",
}
EXPECTATIONS = ("supported", "rejected")
CLAIM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
ALLOWED_KWARGS = ("statement", "level", "expect", "units", "model", "hook", "sae", "requires",
                  "kind", "direction", "positions", "waive", "mechanism")
# The evidence policy's claim kinds and predicted directions (policy.py, gates/direction.py).
KINDS = ("head", "sae_features", "other")
DIRECTIONS = ("carries", "increase", "decrease")
# What a claim may declare it needs beyond this package: strict mode accepts a skip for want of one of these only.
REQUIREMENTS = ("hub", "cuda")


class ClaimSpecError(ValueError):
    """A malformed claim marker."""


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    statement: str
    level: Status
    expect: str = "supported"
    units: tuple[str, ...] = ()
    model: str | None = None
    hook: str | None = None
    sae: str | None = None
    requires: tuple[str, ...] = ()
    kind: str | None = None  # None: inferred by policy.claim_kind
    direction: str | tuple[tuple[str, str], ...] | None = None  # None: "carries"
    positions: tuple[str, ...] = ()  # the positions the claim asserts; () = every recorded position
    waive: tuple[tuple[str, str], ...] = ()  # (policy gate, reason): each one a debt
    # The id of a mechanism declared on several models (kinds.Mechanism): its per-model claims are judged together
    # for cross-model replication (mechanisms.py, policy line cross_model_replication).
    mechanism: str | None = None
    extra: dict = field(default_factory=dict)

    def passes(self, verdict: Status) -> bool:
        """Does this verdict pass the claim's test?"""
        if verdict == Status.BLOCKED:
            return False
        if self.expect == "rejected":
            return verdict < Status.CANDIDATE
        return verdict >= self.level

    def to_dict(self) -> dict:
        out = {"id": self.id, "statement": self.statement, "level": self.level.label, "expect": self.expect}
        for key in ("units", "model", "hook", "sae", "requires"):
            value = getattr(self, key)
            if value:
                out[key] = list(value) if isinstance(value, tuple) else value
        # Policy kwargs appear only when declared, so a claim that declares none keeps its spec hash.
        for key in ("kind", "direction", "positions", "waive", "mechanism"):
            value = getattr(self, key)
            if value:
                out[key] = (list(value) if key == "positions" else dict(value) if isinstance(value, tuple)
                            else value)
        return out


def spec_differences(a: ClaimSpec, b: ClaimSpec) -> list[str]:
    """The fields two claim specs disagree on, as ``field: a_value != b_value``."""
    shown = lambda v: repr(v.label) if isinstance(v, Status) else repr(v)
    return [f"{f.name}: {shown(getattr(a, f.name))} != {shown(getattr(b, f.name))}"
            for f in dataclasses.fields(ClaimSpec) if getattr(a, f.name) != getattr(b, f.name)]


def parse_claim_marker(args: tuple, kwargs: dict) -> ClaimSpec:
    """Build a ClaimSpec from ``claim(*args, **kwargs)``; raise ClaimSpecError naming the problem."""
    if len(args) != 1:
        raise ClaimSpecError(
            f"claim marker needs exactly one positional argument, the claim id (got {len(args)}): "
            'pytest.mark.claim("my-claim-id", statement=..., level="candidate")'
        )
    claim_id = args[0]
    if not isinstance(claim_id, str) or not CLAIM_ID.match(claim_id):
        raise ClaimSpecError(
            f"claim id {claim_id!r} is malformed: use 1-120 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    unknown = sorted(set(kwargs) - set(ALLOWED_KWARGS))
    if unknown:
        raise ClaimSpecError(f"claim {claim_id!r}: unknown marker arguments {unknown}; allowed: {list(ALLOWED_KWARGS)}")
    statement = kwargs.get("statement")
    if statement is not None and not isinstance(statement, str):
        raise ClaimSpecError(f"claim {claim_id!r}: statement must be a string, got {statement!r}")
    if not statement or not statement.strip():
        raise ClaimSpecError(f"claim {claim_id!r}: statement= is required (what the claim asserts, in one sentence)")
    level_raw = kwargs.get("level", "candidate")
    try:
        level = Status.parse(level_raw)
    except ValueError:
        raise ClaimSpecError(f"claim {claim_id!r}: unknown level {level_raw!r}; expected one of {list(LEVELS)}") from None
    if level < Status.INSUFFICIENT:
        raise ClaimSpecError(f"claim {claim_id!r}: level {level.label!r} is not something a claim can assert; "
                             "use insufficient, candidate or strong")
    expect = kwargs.get("expect", "supported")
    if expect not in EXPECTATIONS:
        raise ClaimSpecError(f"claim {claim_id!r}: expect must be one of {list(EXPECTATIONS)}, got {expect!r}")
    units = kwargs.get("units", ())
    # A list or tuple only: a set or dict has no order (the spec hash would vary), None or a number is a typo.
    if not isinstance(units, (list, tuple)) or not all(isinstance(u, str) and u.strip() for u in units):
        raise ClaimSpecError(f"claim {claim_id!r}: units must be a list of non-empty strings (e.g. ['L1H0']), "
                             f"got {units!r}")
    for key in ("model", "hook", "sae"):
        if kwargs.get(key) is not None and (not isinstance(kwargs[key], str) or not kwargs[key].strip()):
            raise ClaimSpecError(f"claim {claim_id!r}: {key} must be a non-empty string, got {kwargs[key]!r}")
    requires = kwargs.get("requires", ())
    if isinstance(requires, str) or not isinstance(requires, (list, tuple)) or \
            not all(r in REQUIREMENTS for r in requires):
        raise ClaimSpecError(f"claim {claim_id!r}: requires must be a list drawn from {list(REQUIREMENTS)}, "
                             f"got {requires!r}")
    kind, direction, positions, waive = _policy_kwargs(claim_id, kwargs)
    mechanism = kwargs.get("mechanism")
    if mechanism is not None:
        if not isinstance(mechanism, str) or not CLAIM_ID.match(mechanism):
            raise ClaimSpecError(f"claim {claim_id!r}: mechanism must be a mechanism id (letters, digits, '.', '_', "
                                 f"'-'), got {mechanism!r}")
        if not kwargs.get("model"):
            raise ClaimSpecError(f"claim {claim_id!r}: a claim of mechanism {mechanism!r} must name its model= "
                                 "(cross-model replication compares the mechanism's claims by model)")
    return ClaimSpec(claim_id, statement.strip(), level, expect, tuple(units), kwargs.get("model"),
                     kwargs.get("hook"), kwargs.get("sae"), tuple(requires), kind, direction, positions, waive,
                     mechanism)


def _policy_kwargs(claim_id: str, kwargs: dict) -> tuple:
    """kind=, direction=, positions=, waive= (the evidence policy's marker kwargs), validated."""
    kind = kwargs.get("kind")
    if kind is not None and kind not in KINDS:
        raise ClaimSpecError(f"claim {claim_id!r}: kind must be one of {list(KINDS)}, got {kind!r}")
    direction = kwargs.get("direction")
    if isinstance(direction, dict):
        if not direction or any(not isinstance(k, str) or v not in ("increase", "decrease")
                                for k, v in direction.items()):
            raise ClaimSpecError(f"claim {claim_id!r}: a direction mapping maps intervention names to 'increase' or "
                                 f"'decrease', got {direction!r}")
        direction = tuple(sorted(direction.items()))
    elif direction is not None and direction not in DIRECTIONS:
        raise ClaimSpecError(f"claim {claim_id!r}: direction must be one of {list(DIRECTIONS)} or a mapping "
                             f"intervention -> 'increase'/'decrease', got {direction!r}")
    positions = kwargs.get("positions", ())
    if isinstance(positions, str) or not isinstance(positions, (list, tuple)) or \
            not all(isinstance(p, str) and p for p in positions):
        raise ClaimSpecError(f"claim {claim_id!r}: positions must be a list of position labels, got {positions!r}")
    waive = kwargs.get("waive", {})
    if not isinstance(waive, dict):
        raise ClaimSpecError(f"claim {claim_id!r}: waive must be a dict {{gate: reason}}, got {waive!r}")
    for gate, reason in waive.items():
        if not isinstance(gate, str) or not gate:
            raise ClaimSpecError(f"claim {claim_id!r}: waive keys must be policy gate names, got {gate!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise ClaimSpecError(f"claim {claim_id!r}: the waiver of {gate!r} needs a reason (a non-empty string): "
                                 "a waived gate is a debt, recorded with why")
    return kind, direction, tuple(positions), tuple(sorted((g, r.strip()) for g, r in waive.items()))
