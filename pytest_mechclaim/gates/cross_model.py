"""Cross-model replication: one mechanism (kinds.Mechanism: kind, task, rule for choosing units) declared on several
models, judged over each model's held-out verdict. The only gate that reads verdicts instead of rows: one claim's
rows cannot show that the mechanism holds in another model family (policy line ``cross_model_replication``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..status import Status
from ._core import GateResult
from .thresholds import check_thresholds


@dataclass(frozen=True)
class ModelVerdict:
    """One model's claim of the mechanism: its held-out status (None: no held-out stage was judged) and whether it
    is strong but for this cross-model requirement (``support["strong_pending"]``)."""

    claim: str
    heldout: str | None
    strong_pending: bool = False


def cross_model_replication(per_model: Mapping[str, ModelVerdict], min_models: int = 2) -> GateResult:
    """The mechanism's status across models: the weakest model's held-out verdict, and never above
    ``insufficient`` with fewer than ``min_models`` models judged. ``strong`` only when every model is strong but
    for this requirement; ``falsified`` when the mechanism fails held-out in any model (it does not replicate);
    ``blocked`` when any model's held-out stage could not be judged."""
    check_thresholds("cross_model_replication", min_models=min_models)
    statuses = {m: Status.parse(v.heldout) for m, v in per_model.items() if v.heldout is not None}
    unjudged = sorted(m for m, v in per_model.items() if v.heldout is None)
    holding = sorted(m for m, s in statuses.items() if s >= Status.CANDIDATE)
    details = {"models": {m: {"claim": v.claim, "heldout": v.heldout, "strong_pending": v.strong_pending}
                          for m, v in sorted(per_model.items())}, "unjudged": unjudged}
    result = lambda passed, caps, reason: GateResult("cross_model_replication", passed, float(len(holding)),
                                                     float(min_models), ">=", caps, reason, details=details)
    if not statuses:
        return result(False, Status.BLOCKED, "no model of the mechanism has a judged held-out stage")
    weakest = min(statuses, key=lambda m: (statuses[m], m))
    if statuses[weakest] == Status.BLOCKED:  # fail closed: a model where it could not be judged is not support
        blocked = sorted(m for m, s in statuses.items() if s == Status.BLOCKED)
        return result(False, Status.BLOCKED, f"held-out stage blocked in {', '.join(blocked)}")
    if statuses[weakest] == Status.FALSIFIED:
        failing = sorted(m for m, s in statuses.items() if s == Status.FALSIFIED)
        return result(False, Status.FALSIFIED, f"held out in {len(holding)} of {len(per_model)} models; falsified "
                                               f"in {', '.join(failing)}: the mechanism does not replicate")
    if len(holding) < min_models or unjudged or statuses[weakest] < Status.CANDIDATE:
        missing = sorted(set(statuses) - set(holding)) + unjudged
        return result(False, Status.INSUFFICIENT,
                      f"held out in {len(holding)} of {len(per_model)} models (needs >= {min_models}"
                      + (f"; not yet in {', '.join(missing)}" if missing else "") + ")")
    if all(per_model[m].strong_pending or statuses[m] == Status.STRONG for m in holding):
        return result(True, Status.STRONG, f"held out in {len(holding)} models, each strong but for this requirement")
    return result(True, Status.CANDIDATE, f"held out at candidate in {len(holding)} of {len(per_model)} models "
                                          "(strong needs every model strong but for this requirement)")
