"""The predicted sign of an intervention's effect on the metric (target - foil), and the signed row scores.

Sign conventions (engine/__init__.py): ``target_delta = patched - corrupt`` for a patch into the corrupt run
(``run == "corrupt"``, e.g. clean_to_corrupt) and ``patched - clean`` for an edit of the clean run (zero, mean,
resample, SAE ablate/amplify; ``run == "clean"``). ``direction`` says which sign the claim predicts:

* ``"increase"`` / ``"decrease"``: every row's intervention raises / lowers target - foil;
* a mapping ``{intervention: "increase" | "decrease"}`` (an intervention such as ``mean[source=clean,n=24]`` is
  looked up by its full name, then by its base name ``mean``); a row whose intervention it does not name blocks;
* ``"carries"`` (the default): the unit carries the behaviour, so restoring it into the corrupt run raises the
  metric, removing it from the clean run lowers it, and amplifying it (factor > 1) raises it;
* ``"either"``: |target_delta| only, the sign unchecked. Kept for diagnostics; it is recorded in the result
  (``details["direction"]``) and the policy does not accept it as support. The signed gates refuse it.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from ..evidence import EvidenceRow
from .thresholds import GateThresholdError

DIRECTIONS = ("carries", "increase", "decrease", "either")
SIGNS = {"increase": 1, "decrease": -1}


def check_direction(gate: str, direction, allow_either: bool = True) -> None:
    allowed = [d for d in DIRECTIONS if allow_either or d != "either"]
    text = "one of " + ", ".join(map(repr, allowed)) + " or a mapping intervention -> 'increase'/'decrease'"
    if isinstance(direction, Mapping):
        if not direction or any(not isinstance(k, str) or v not in SIGNS for k, v in direction.items()):
            raise GateThresholdError(gate, "direction", dict(direction), text)
        return
    if direction not in allowed:
        raise GateThresholdError(gate, "direction", direction, text)


def describe(direction) -> str:
    return direction if isinstance(direction, str) else ",".join(f"{k}:{v}" for k, v in sorted(direction.items()))


def expected_sign(row: EvidenceRow, direction) -> int | None:
    """+1 / -1: the sign of target_delta the claim predicts on this row; None when the claim predicts none."""
    if isinstance(direction, Mapping):
        word = direction.get(row.intervention, direction.get(row.intervention.split("[", 1)[0]))
        return SIGNS.get(word)
    if direction == "carries":
        if row.run == "corrupt":
            return 1
        if row.intervention.startswith("amplify") and row.factor is not None:
            return 1 if row.factor > 1 else -1
        return -1
    return SIGNS.get(direction)


def signed_delta(row: EvidenceRow) -> float | None:
    """target_delta, or (without paired deltas) patched minus the baseline of the run the intervention edited."""
    if row.target_delta is not None:
        return row.target_delta
    if row.patched is None:
        return None
    base = row.corrupt if row.run == "corrupt" else row.clean
    return None if base is None else row.patched - base


def directed_effect(row: EvidenceRow, direction) -> float | None:
    """The target movement in the predicted direction (negative: it moved the wrong way); |delta| for "either"."""
    delta = signed_delta(row)
    if delta is None:
        return None
    if direction == "either":
        return abs(delta)
    sign = expected_sign(row, direction)
    return None if sign is None else sign * delta


def directed_gap(row: EvidenceRow, direction) -> float | None:
    """Movement of the target in the predicted direction minus |movement of its matched control|.

    With ``"either"`` this is the seeds' |target_delta| - |control_delta| (``EvidenceRow.specificity_gap``)."""
    if not row.paired:
        return None
    if direction == "either":
        return row.specificity_gap
    sign = expected_sign(row, direction)
    return None if sign is None else sign * row.target_delta - abs(row.control_delta)


def unpredicted(rows: Iterable[EvidenceRow], direction) -> list[str]:
    """Interventions among ``rows`` for which ``direction`` predicts no sign (a mapping that misses them)."""
    if not isinstance(direction, Mapping):
        return []
    return sorted({r.intervention for r in rows if expected_sign(r, direction) is None})


def direction_details(direction) -> dict:
    return {"direction": describe(direction), "direction_checked": direction != "either"}
