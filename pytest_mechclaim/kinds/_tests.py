"""What every kind shares: the claim marker it sets, the test class it generates, per-process caches."""

from __future__ import annotations

from typing import Callable

import pytest

from ..spec import STAGES
from .frozen import frozen_store

cache_key = pytest.StashKey[dict]()
PLAN_ATTR = "mechclaim_plan"


def session_cache(config) -> dict:
    """One dict per session (per xdist worker) for a kind's deterministic, expensive computations."""
    return config.stash.setdefault(cache_key, {})


def cached(request, key, build: Callable):
    cache = session_cache(request.config)
    if key not in cache:
        cache[key] = build()
    return cache[key]


def use_store(mechclaim, request):
    """The handle's frozen store (the run's, when the plugin did not hand the handle one)."""
    if mechclaim.frozen is None:
        mechclaim.frozen = frozen_store(request.config)
    return mechclaim.frozen


def load(request, source):
    """A model or SAE from a fixture name, or from a zero-argument builder (a hand-set variant)."""
    return request.getfixturevalue(source) if isinstance(source, str) else source()


def stage_test(stage: str, body: Callable, cases: tuple | None = None, plan: object = None) -> Callable:
    """``body(mechclaim, request)`` as the ``stage`` test of a generated class; with ``cases``, one test per case
    (``body(mechclaim, request, case)``, ledger key ``stage[case]``). ``plan``: what the stage will measure, for the
    session's evidence planner (``kinds.planner``), kept on the test function as ``PLAN_ATTR``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    if cases is None:
        def test(self, mechclaim, request):
            body(mechclaim, request)
    else:
        @pytest.mark.parametrize("case", list(cases))
        def test(self, mechclaim, request, case):
            body(mechclaim, request, case)
    test.__name__ = test.__qualname__ = f"test_{stage}"
    if plan is not None:
        setattr(test, PLAN_ATTR, plan)
    return getattr(pytest.mark, stage)(test)


def claim_class(claim_id: str, marker: dict, tests: list[Callable], doc: str) -> type:
    """A ``Test...`` class holding the claim marker and one test per stage (bind it to a module-level name)."""
    body = {"pytestmark": [pytest.mark.claim(claim_id, **marker)], "__doc__": doc}
    for test in tests:
        body[test.__name__] = test
    return type("Test" + "".join(p.capitalize() for p in claim_id.replace(".", "-").split("-")), (), body)
