"""The ``mechclaim`` handle a claim test uses: record evidence, optionally add gates, get one verdict.

It is a plain object given the claim spec (and the project's evidence policy); it never reads pytest's config, so it
is usable and testable without pytest:

    handle = MechClaim(spec, stage="heldout", nodeid="x")
    rows = handle.record(head_evidence(...))      # the only evidence the verdict reads
    handle.gate.specificity_gap(rows, min=0.1)    # optional: an author gate can only lower the verdict, and a
                                                  # stricter threshold than the policy's floor is adopted by it
    handle.verdict()                              # the policy runs its required gates on the recorded rows

Gates may only read recorded rows: passing rows that were never recorded is an error (``UnrecordedRowsError``).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Iterable

from . import gates as gate_functions
from .evidence import BaselineRow, EvidenceRow
from .gates import GateResult, MetricCalibrationRow
from .policy import DEFAULT_POLICY, Policy
from .spec import ClaimSpec
from .verdict import AuthorCall, Recorded, Verdict, judge

# Gates a claim test can call as ``mechclaim.gate.<name>(rows=None, **thresholds)``; gates added to
# pytest_mechclaim.gates later (by name, e.g. signed_effect) are found through ``_gate_function``.
GATES: tuple[str, ...] = (
    "specificity_gap", "positive_share", "family_minimum", "multi_control_minimum", "collateral_ratio",
    "norm_drift", "seed_replication", "replication", "baseline_calibration", "normalized_effect",
    "control_family_gap", "unit_controls", "strong_floor", "paired_test", "metric_calibration",
)
NOT_ROW_GATES = ("empirical_null", "percentile_rank", "normalized_effect_of")


class UnrecordedRowsError(ValueError):
    """A gate was given rows the claim never recorded: the verdict may read recorded rows only."""


def _gate_function(name: str) -> Callable[..., GateResult] | None:
    if name.startswith("_") or name in NOT_ROW_GATES:
        return None
    fn = getattr(gate_functions, name, None)
    if name in GATES or (callable(fn) and inspect.isfunction(fn) and
                         inspect.signature(fn).return_annotation in (GateResult, "GateResult")):
        return fn
    return None


class GateRunner:
    """``mechclaim.gate.<name>(...)``: run a gate on the recorded rows (or a recorded subset) and keep the result."""

    def __init__(self, claim: "MechClaim") -> None:
        self._claim = claim

    def __getattr__(self, name: str) -> Callable[..., GateResult]:
        fn = _gate_function(name)
        if fn is None:
            raise AttributeError(f"no gate named {name!r}; gates: {', '.join(dir(self))}")

        def run(rows: Iterable | None = None, **thresholds) -> GateResult:
            rows, all_rows = self._claim.recorded_input(name, rows)
            self._claim.note_call(name, fn, thresholds)
            result = fn(rows, **thresholds)
            self._claim.add_author_call(AuthorCall(name, dict(thresholds), result, all_rows))
            return result

        run.__name__ = name
        run.__doc__ = fn.__doc__
        return run

    def empirical_null(self, value: float, null: Iterable[float], **thresholds) -> GateResult:
        """An author's own null comparison (it can only lower the verdict; the policy's null is ``record_null``)."""
        self._claim.note_call("empirical_null", gate_functions.empirical_null, thresholds)
        result = gate_functions.empirical_null(value, list(null), **thresholds)
        self._claim.add_author_call(AuthorCall("empirical_null", dict(thresholds), result))
        return result

    def add(self, result: GateResult) -> GateResult:
        """Record a result computed elsewhere (an SAE compatibility check, a custom gate). It can only lower the
        verdict: it never stands in for a gate the policy requires."""
        if not isinstance(result, GateResult):
            raise TypeError(f"expected a GateResult, got {type(result).__name__}")
        self._claim.add_result(result)
        return result

    def __dir__(self):
        names = {n for n in dir(gate_functions) if _gate_function(n) is not None}
        return sorted(names | {"add", "empirical_null"})


class MechClaim:
    def __init__(self, spec: ClaimSpec, stage: str | None = None, nodeid: str = "",
                 on_result: Callable[[GateResult], None] | None = None, policy: Policy = DEFAULT_POLICY,
                 frozen=None) -> None:
        self.spec = spec
        self.stage = stage
        self.nodeid = nodeid
        self.policy = policy
        # The run's frozen candidate store (kinds.frozen.FrozenStore): discovery freezes into it, and the verdict of
        # a later stage checks the recorded rows against it (no added candidate, held-out disjoint from discovery).
        self.frozen = frozen
        self.rows: list[EvidenceRow] = []
        self.baseline_rows: list[BaselineRow] = []
        self.metric_rows: list[MetricCalibrationRow] = []
        self.null: dict | None = None
        self.custom: list[GateResult] = []
        self.author_calls: list[AuthorCall] = []
        self.artifacts: dict = {}
        self.inputs: dict = {}  # declared inputs: hashed into the spec (see declare)
        # Every gate call with its effective thresholds (defaults filled in): part of the claim's spec hash, so a
        # threshold moved after seeing results is visible in the ledger.
        self.gate_calls: list[dict] = []
        self._on_result = on_result
        self._verdict: Verdict | None = None
        self._ids: dict[str, set[int]] = {"rows": set(), "baseline": set(), "metric": set()}
        self.gate = GateRunner(self)

    @property
    def results(self) -> list[GateResult]:
        """The author's gate results in call order (the policy's own runs are in ``verdict().gates``)."""
        return [c.result for c in self.author_calls] + self.custom

    # -- recording -------------------------------------------------------------------------------------------------

    def _record(self, kind: str, target: list, rows, cls, method: str) -> list:
        self._check_open()
        rows = list(rows)
        for r in rows:
            if not isinstance(r, cls):
                raise TypeError(f"{method}() takes {cls.__name__} objects, got {type(r).__name__}")
        target.extend(rows)
        self._ids[kind].update(id(r) for r in rows)
        return rows

    def record(self, rows: Iterable[EvidenceRow]) -> list[EvidenceRow]:
        """Add evidence rows; returns them as a list so a test can pass them (or a subset) straight to a gate."""
        return self._record("rows", self.rows, rows, EvidenceRow, "record")

    def record_baseline(self, rows: Iterable[BaselineRow]) -> list[BaselineRow]:
        return self._record("baseline", self.baseline_rows, rows, BaselineRow, "record_baseline")

    def record_metric_calibration(self, rows: Iterable[MetricCalibrationRow]) -> list[MetricCalibrationRow]:
        """The unpatched metric on a calibration bank (local-mi-lab §2.6 I): what a metric-calibration stage reads."""
        return self._record("metric", self.metric_rows, rows, MetricCalibrationRow, "record_metric_calibration")

    def record_null(self, values: Iterable[float], search_size: int | None = None, **about) -> None:
        """The empirical null the policy compares the claim's mean specificity gap with (strong needs one)."""
        self._check_open()
        values = [float(v) for v in values]
        if search_size is not None and (not isinstance(search_size, int) or search_size < 1):
            raise ValueError(f"search_size must be a positive int, got {search_size!r}")
        self.null = {"values": values, "search_size": search_size, **about}
        self.artifacts["empirical_null"] = {"n": len(values), "search_size": search_size,
                                            "finite": all(math.isfinite(v) for v in values), **about}

    def recorded_input(self, gate: str, rows) -> tuple[list, bool]:
        """(the rows gate ``gate`` reads, whether they are all the recorded rows of their kind): the recorded ones by
        default; a given collection must consist of recorded rows."""
        kind = {"baseline_calibration": "baseline", "metric_calibration": "metric"}.get(gate, "rows")
        store = {"rows": self.rows, "baseline": self.baseline_rows, "metric": self.metric_rows}[kind]
        if rows is None:
            return list(store), True
        rows = list(rows)
        unrecorded = [r for r in rows if id(r) not in self._ids[kind]]
        if unrecorded:
            method = {"rows": "record", "baseline": "record_baseline", "metric": "record_metric_calibration"}[kind]
            raise UnrecordedRowsError(
                f"gate {gate} was given {len(unrecorded)} of {len(rows)} rows that this claim never recorded: "
                f"record them first with mechclaim.{method}(...); the verdict reads recorded rows only")
        return rows, {id(r) for r in rows} == self._ids[kind]

    def attach(self, name: str, value) -> None:
        """Keep a JSON-able *result* with the claim (a calibration table, a feature rationale ...): reported and
        stored, never part of the spec hash (measured numbers differ in their last digits between thread counts).
        (Lead: keep this and ``declare``; the spec hash in ledger.spec_fingerprint reads ``inputs``.)"""
        self.artifacts[name] = value

    def declare(self, name: str, value) -> None:
        """Record a JSON-able *input* that defines this test (a frozen candidate set, a selection rule, a data hash):
        part of the spec hash, so changing it after seeing results is visible in the ledger."""
        self._check_open()
        self.inputs[name] = value

    def freeze(self, units: Iterable[str], tasks, **about):
        """Discovery only: freeze the claim's candidate ``units`` with the discovery ``tasks`` (their prompts,
        families and seeds are what held-out must avoid). Declared, so the spec hash covers the frozen set."""
        if self.stage != "discovery":
            raise ValueError(f"freeze() belongs to a discovery stage (this test is stage {self.stage!r}): a later "
                             "stage cannot choose candidates")
        if self.frozen is None:
            raise RuntimeError("this handle has no frozen candidate store")
        record = self.frozen.freeze(self.spec.id, list(units), tasks, **about)
        self.declare("frozen_candidates", record.summary())
        return record

    # -- gate bookkeeping ------------------------------------------------------------------------------------------

    def note_call(self, name: str, fn: Callable, thresholds: dict) -> None:
        self._check_open()
        params = inspect.signature(fn).parameters
        effective = {k: p.default for k, p in list(params.items())[1:] if p.default is not inspect.Parameter.empty}
        effective.update(thresholds)
        self.gate_calls.append({"gate": name, "thresholds": effective})

    def add_author_call(self, call: AuthorCall) -> None:
        self._check_open()
        self.author_calls.append(call)
        if self._on_result is not None:
            self._on_result(call.result)

    def add_result(self, result: GateResult) -> GateResult:
        self._check_open()
        self.custom.append(result)
        if self._on_result is not None:
            self._on_result(result)
        return result

    def verdict(self) -> Verdict:
        """The claim's verdict, computed once from the policy, the recorded rows and the author's gate results."""
        if self._verdict is None:
            if self.frozen is not None:
                for result in self.frozen.check(self.spec.id, self.stage, self.rows):
                    self.add_result(result)
            recorded = Recorded(self.rows, self.baseline_rows, self.metric_rows, self.null)
            self._verdict = judge(self.spec, self.stage, recorded, self.author_calls, self.custom, self.policy)
        return self._verdict

    @property
    def concluded(self) -> bool:
        return self._verdict is not None

    def _check_open(self) -> None:
        if self._verdict is not None:
            raise RuntimeError("the verdict was already computed; record evidence and run gates before reading it")
