"""The ``mechclaim`` handle a claim test uses: record evidence, run gates, get one verdict.

It is a plain object given the claim spec and a callback; it never reads pytest's config, so it is usable and
testable without pytest:

    handle = MechClaim(spec, stage="heldout", nodeid="x")
    handle.record(rows)
    handle.gate.specificity_gap(min=0.0)      # records the result, never raises on bad evidence
    handle.verdict()                          # computed once; gates after this are an error
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

from . import gates as gate_functions
from .evidence import BaselineRow, EvidenceRow
from .gates import GateResult
from .spec import ClaimSpec
from .verdict import Verdict, decide

# Gates a claim test can call as ``mechclaim.gate.<name>(rows=None, **thresholds)``.
GATES: dict[str, Callable[..., GateResult]] = {
    name: getattr(gate_functions, name)
    for name in (
        "specificity_gap",
        "positive_share",
        "family_minimum",
        "multi_control_minimum",
        "collateral_ratio",
        "norm_drift",
        "seed_replication",
        "replication",
        "baseline_calibration",
        "normalized_effect",
        "control_family_gap",
        "unit_controls",
        "strong_floor",
        "paired_test",
        "metric_calibration",
    )
}


class GateRunner:
    """``mechclaim.gate.<name>(...)``: run a gate on the recorded rows (or the rows given) and record the result."""

    def __init__(self, claim: "MechClaim") -> None:
        self._claim = claim

    def __getattr__(self, name: str) -> Callable[..., GateResult]:
        try:
            fn = GATES[name]
        except KeyError:
            raise AttributeError(f"no gate named {name!r}; gates: {', '.join(sorted(GATES))}") from None

        def run(rows: Iterable | None = None, **thresholds) -> GateResult:
            if rows is None:
                rows = self._claim.baseline_rows if name == "baseline_calibration" else self._claim.rows
                if name == "metric_calibration":
                    raise TypeError("metric_calibration needs its calibration rows passed explicitly")
            self._claim.note_call(name, fn, thresholds)
            return self._claim.add_result(fn(list(rows), **thresholds))

        run.__name__ = name
        run.__doc__ = fn.__doc__
        return run

    def empirical_null(self, value: float, null: Iterable[float], **thresholds) -> GateResult:
        self._claim.note_call("empirical_null", gate_functions.empirical_null, thresholds)
        return self._claim.add_result(gate_functions.empirical_null(value, list(null), **thresholds))

    def add(self, result: GateResult) -> GateResult:
        """Record a result computed elsewhere (an SAE compatibility check, a custom gate)."""
        if not isinstance(result, GateResult):
            raise TypeError(f"expected a GateResult, got {type(result).__name__}")
        return self._claim.add_result(result)

    def __dir__(self):
        return sorted(GATES) + ["add", "empirical_null"]


class MechClaim:
    def __init__(self, spec: ClaimSpec, stage: str | None = None, nodeid: str = "",
                 on_result: Callable[[GateResult], None] | None = None) -> None:
        self.spec = spec
        self.stage = stage
        self.nodeid = nodeid
        self.rows: list[EvidenceRow] = []
        self.baseline_rows: list[BaselineRow] = []
        self.results: list[GateResult] = []
        self.artifacts: dict = {}
        self.inputs: dict = {}
        # Every gate call with its effective thresholds (defaults filled in): part of the claim's spec hash, so a
        # threshold moved after seeing results is visible in the ledger.
        self.gate_calls: list[dict] = []
        self._on_result = on_result
        self._verdict: Verdict | None = None
        self.gate = GateRunner(self)

    def record(self, rows: Iterable[EvidenceRow]) -> list[EvidenceRow]:
        """Add evidence rows; returns them as a list so a test can pass them straight to a gate."""
        self._check_open()
        rows = list(rows)
        for r in rows:
            if not isinstance(r, EvidenceRow):
                raise TypeError(f"record() takes EvidenceRow objects, got {type(r).__name__}")
        self.rows.extend(rows)
        return rows

    def record_baseline(self, rows: Iterable[BaselineRow]) -> list[BaselineRow]:
        self._check_open()
        rows = list(rows)
        for r in rows:
            if not isinstance(r, BaselineRow):
                raise TypeError(f"record_baseline() takes BaselineRow objects, got {type(r).__name__}")
        self.baseline_rows.extend(rows)
        return rows

    def attach(self, name: str, value) -> None:
        """Keep a JSON-able *result* with the claim (a calibration table, a feature rationale ...): reported and
        stored, never part of the spec hash (measured numbers differ in their last digits between thread counts)."""
        self.artifacts[name] = value

    def declare(self, name: str, value) -> None:
        """Record a JSON-able *input* that defines this test (a frozen candidate set, a selection rule, a data hash):
        part of the spec hash, so changing it after seeing results is visible in the ledger."""
        self._check_open()
        self.inputs[name] = value

    def note_call(self, name: str, fn: Callable, thresholds: dict) -> None:
        self._check_open()
        params = inspect.signature(fn).parameters
        effective = {k: p.default for k, p in list(params.items())[1:] if p.default is not inspect.Parameter.empty}
        effective.update(thresholds)
        self.gate_calls.append({"gate": name, "thresholds": effective})

    def add_result(self, result: GateResult) -> GateResult:
        self._check_open()
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)
        return result

    def verdict(self) -> Verdict:
        """The claim's verdict, computed once from every gate result and every recorded row."""
        if self._verdict is None:
            self._verdict = decide(self.results, self.rows)
        return self._verdict

    @property
    def concluded(self) -> bool:
        return self._verdict is not None

    def _check_open(self) -> None:
        if self._verdict is not None:
            raise RuntimeError("the verdict was already computed; record evidence and run gates before reading it")
