"""The session's evidence planner: stages that measure the same tasks on the same model are measured together.

Head claims that share a discovery (one model, one bank) share each stage's tasks, so when the first of them needs
its evidence at a stage, the cells of every such claim this process will run (each claim's head and its comparison
heads) go to the engine in one call (``engine.head_evidence_many``). Each batched tail pass then carries every
claim's variants, matmuls of hundreds of rows instead of a few, and a head two claims both patch is measured once.
The other claims pick their evidence up when their own stage runs; nothing is recorded before that.

Which stages will run is read off ``session.items`` (after selection: ``-m heldout``, ``-k``), from the plan each
kind leaves on its stage tests (``_tests.PLAN_ATTR``). An xdist worker runs whatever items the scheduler sends it,
so it plans only the item it is running: its stages are measured as they would be alone. Rows are the same either
way (the engine builds each request's rows from the shared measurements exactly as it would alone); planning moves
when cells are computed, never what a row holds.
"""

from __future__ import annotations

from typing import Callable

from ..engine import head_evidence_many
from . import _tests


def planned(request, wanted: Callable[[object], bool]) -> list:
    """The plans of the stage tests this process will run, in run order, for which ``wanted(plan)`` holds."""
    items = [request.node] if hasattr(request.config, "workerinput") else request.session.items
    plans = []
    for item in items:
        plan = getattr(getattr(item, "function", None), _tests.PLAN_ATTR, None)
        if plan is not None and wanted(plan) and plan not in plans:
            plans.append(plan)
    return plans


def head_stage_evidence(request, claim, stage: str) -> list:
    """``claim``'s Evidence at ``stage`` (one per ``claim.evidence_requests``), measured with every planned claim
    of the same discovery and stage that will be scored (``claim.scored``) and has not had its evidence yet."""
    decl = claim.discovery
    ready = _tests.session_cache(request.config).setdefault(("planned-head-evidence", decl, stage), {})
    if claim not in ready:
        discovery = decl.compute(request)
        same = planned(request, lambda p: p[1] == stage and type(p[0]) is type(claim) and p[0].discovery == decl)
        claims = [claim] + [c for c, _ in same if c not in ready and c != claim and c.scored(discovery)]
        requests = {c: c.evidence_requests(discovery, stage) for c in claims}
        evidence = iter(head_evidence_many(discovery.model, decl.stage_tasks(request, stage),
                                           [r for rs in requests.values() for r in rs]))
        for c, rs in requests.items():
            ready[c] = [next(evidence) for _ in rs]
    return ready.pop(claim)
