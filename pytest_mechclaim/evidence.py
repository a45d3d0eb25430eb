"""Evidence rows: one per prompt x unit x intervention x seed, numbers plus the coordinates that locate them.

Rows are plain frozen dataclasses so gates can be pure functions over them (no torch here). Two kinds of numbers
can sit on a row, and a row may carry both:

* patching numbers ``clean``, ``corrupt``, ``patched``: the metric on the clean run, the corrupt run, and the run
  the intervention edited (``run`` says which of the two). They give the normalized effect.
* paired deltas ``target_delta`` and ``control_delta``: how much the intervention moved the metric on the target
  prompt and on its matched control prompt (``control_suite`` names where that control came from). They give the
  specificity gap |target_delta| - |control_delta|.

``strata`` places the row inside its family: ``(("domain", "animals"), ("length_bin", "9-16"), ("target_token",
" cat"))``, sorted by key, so a gate can ask whether the effect holds in the worst stratum, not just on average.
``drift_warning`` / ``delta_ratio_warning`` say which telemetry warning fired (``norm_warning`` is their OR).

A row with a non-finite number is kept and marked ``invalid`` with the field named: never dropped silently.
A row the engine could not build for a structural reason (a position the prompt lacks) is ``not_applicable``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Literal

RowStatus = Literal["ok", "invalid", "not_applicable"]
FAMILY_ROLES = ("positive", "control")
RUNS = ("corrupt", "clean")

# The fields that say *where* a number came from; reports show them for every counterexample.
COORDINATES = (
    "unit",
    "unit_set",
    "intervention",
    "factor",
    "position",
    "seed",
    "family",
    "family_role",
    "control_suite",
    "prompt_id",
    "scope",
)
NUMBERS = (
    "clean",
    "corrupt",
    "patched",
    "target_delta",
    "control_delta",
    "norm_drift",
    "decoded_delta_ratio",
)


@dataclass(frozen=True)
class EvidenceRow:
    unit: str
    intervention: str
    prompt_id: str
    family: str
    family_role: str = "positive"
    unit_set: str = "target"
    control_suite: str | None = None
    position: str = "final"
    seed: int | None = None
    scope: str = "single_head_z"
    factor: float | None = None
    run: str = "corrupt"
    clean: float | None = None
    corrupt: float | None = None
    patched: float | None = None
    target_delta: float | None = None
    control_delta: float | None = None
    norm_drift: float | None = None
    decoded_delta_ratio: float | None = None
    norm_warning: bool = False
    status: RowStatus = "ok"
    reason: str | None = None
    prompt: str | None = None
    control_prompt: str | None = None
    strata: tuple[tuple[str, str], ...] = ()
    drift_warning: bool | None = None
    delta_ratio_warning: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strata", _strata(self.strata))
        if self.family_role not in FAMILY_ROLES:
            raise ValueError(f"family_role must be one of {FAMILY_ROLES}, got {self.family_role!r}")
        if self.run not in RUNS:
            raise ValueError(f"run must be one of {RUNS}, got {self.run!r}")
        if self.status not in ("ok", "invalid", "not_applicable"):
            raise ValueError(f"unknown row status {self.status!r}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a {self.status} row needs a reason")
        nonfinite = [
            name for name in NUMBERS if (v := getattr(self, name)) is not None and not math.isfinite(v)
        ]
        if nonfinite and self.status == "ok":
            object.__setattr__(self, "status", "invalid")
            object.__setattr__(self, "reason", "nonfinite:" + ",".join(nonfinite))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def paired(self) -> bool:
        return self.target_delta is not None and self.control_delta is not None

    @property
    def specificity_gap(self) -> float | None:
        """|target movement| - |matched control movement| for this row; None without a paired control."""
        if not self.paired:
            return None
        return abs(self.target_delta) - abs(self.control_delta)

    def coordinates(self) -> dict:
        coords = {name: getattr(self, name) for name in COORDINATES if getattr(self, name) is not None}
        if self.strata:
            coords["strata"] = dict(self.strata)
        return coords

    def to_dict(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.strata:
            out["strata"] = [list(kv) for kv in self.strata]
        else:
            del out["strata"]  # rows without strata serialize as before
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "EvidenceRow":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown evidence row fields: {sorted(unknown)}")
        return cls(**data)


def _strata(value) -> tuple[tuple[str, str], ...]:
    """Canonical strata: a tuple of (key, value) string pairs sorted by key, each key once (a dict is accepted)."""
    items = list(value.items()) if isinstance(value, dict) else list(value or ())
    pairs = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not all(isinstance(x, str) for x in item):
            raise ValueError(f"strata must be (key, value) string pairs, got {item!r}")
        pairs.append((item[0], item[1]))
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a stratum key appears twice: {keys}")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class BaselineRow:
    """One task's unpatched score: the only thing baseline calibration may read."""

    task_id: str
    family: str
    contrast: float
    expected_direction: str = "positive"  # positive | negative | unknown
    control_contrast: float | None = None

    def __post_init__(self) -> None:
        if self.expected_direction not in ("positive", "negative", "unknown"):
            raise ValueError(f"expected_direction must be positive/negative/unknown, got {self.expected_direction!r}")

    @property
    def finite(self) -> bool:
        values = [self.contrast] + ([self.control_contrast] if self.control_contrast is not None else [])
        return all(math.isfinite(v) for v in values)

    @property
    def intended_direction_pass(self) -> bool:
        if self.expected_direction == "positive":
            return self.contrast > 0
        if self.expected_direction == "negative":
            return self.contrast < 0
        return True

    def coordinates(self) -> dict:
        return {"task_id": self.task_id, "family": self.family}

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def ok_rows(rows: Iterable[EvidenceRow]) -> list[EvidenceRow]:
    return [r for r in rows if r.ok]
