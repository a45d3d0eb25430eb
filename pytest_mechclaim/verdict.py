"""The verdict: one status from the evidence policy, gate results and recorded rows, with the reasons that set it.

``judge`` is what a claim test gets: it splits the recorded rows by the claim's kind and scope (policy.split_rows),
runs every policy line that applies on the supporting rows (policy.LINES), turns what cannot be shown into debts,
adds the author's own gate results (which can only lower the verdict) and hands everything to ``decide``.

``decide`` is the ladder itself (SELF-GROUND's report gate and MechLedger's additions, minus their bugs):
1. No gate ran, or every evidence row was skipped or invalid: ``blocked`` (nothing to judge is not a pass).
2. Each gate caps the status at ``caps_at`` (blocked for unusable input, falsified when controls move as much as
   the target or the sign is wrong, insufficient when a candidate threshold is missed, candidate when only a
   strong threshold is missed). The verdict is the lowest cap.
3. Any invalid row (non-finite, engine error) caps at ``insufficient``: a skipped row never supports a candidate.
4. Every debt caps at ``insufficient`` (MechLedger §3.5/§3.6: no clean candidate support with open debt), except
   one judged across claims (cross-model replication), which caps at ``candidate``: a claim strong in every other
   respect records ``support["strong_pending"]``, and only the mechanisms table (mechanisms.py) can lift it.
5. ``strong`` also needs the strong floor, the empirical null and the paired test to have run and passed
   (``gates.STRONG_REQUIRES``); otherwise the verdict stops at ``candidate`` and says which are missing.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections import Counter
from dataclasses import dataclass, field
from statistics import fmean
from typing import Iterable, Sequence

from . import gates as gate_module
from . import policy as policy_mod
from .evidence import EvidenceRow
from .gates import STRONG_REQUIRES, GateResult
from .status import Status

DEBT_KINDS = ("missing_gate", "rows_cannot_show", "waived", "loosened", "floor_not_applicable", "across_claims")


@dataclass(frozen=True)
class Debt:
    """What the claim could not show or chose not to (MechLedger §3.6): recorded, visible, caps the verdict."""

    gate: str
    kind: str  # one of DEBT_KINDS
    reason: str
    caps_at: Status = Status.INSUFFICIENT

    def to_dict(self) -> dict:
        return {"gate": self.gate, "kind": self.kind, "reason": self.reason, "caps_at": self.caps_at.label}

    def line(self) -> str:
        return f"debt {self.gate} ({self.kind}): {self.reason}"


@dataclass(frozen=True)
class Verdict:
    status: Status
    reasons: tuple[str, ...]
    gates: tuple[GateResult, ...]
    row_accounting: dict = field(default_factory=dict)
    debts: tuple[Debt, ...] = ()
    policy: dict = field(default_factory=dict)
    support: dict = field(default_factory=dict)

    @property
    def failing_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)

    def to_dict(self) -> dict:
        return {
            "status": self.status.label,
            "reasons": list(self.reasons),
            "gates": [g.to_dict() for g in self.gates],
            "row_accounting": self.row_accounting,
            "debts": [d.to_dict() for d in self.debts],
            "policy": self.policy,
            "support": self.support,
        }


def account_rows(rows: Iterable[EvidenceRow]) -> dict:
    rows = list(rows)
    counts = Counter(r.status for r in rows)
    reasons = Counter(r.reason for r in rows if not r.ok)
    return {
        "n_rows": len(rows),
        "n_ok": counts.get("ok", 0),
        "n_invalid": counts.get("invalid", 0),
        "n_not_applicable": counts.get("not_applicable", 0),
        "reason_counts": dict(sorted(reasons.items())),
    }


def decide(gates: Sequence[GateResult], rows: Sequence[EvidenceRow] = (), debts: Sequence[Debt] = (),
           extra_caps: Sequence[tuple[Status, str]] = (), policy: dict | None = None,
           support: dict | None = None, check_strong_requires: bool = True) -> Verdict:
    gates, debts = tuple(gates), tuple(debts)
    accounting = account_rows(rows)
    caps: list[tuple[Status, str]] = []
    if not gates and not any(c == Status.BLOCKED for c, _ in extra_caps):  # a blocked input says why already
        caps.append((Status.BLOCKED, "no gate ran: a claim with no evidence gate is not a pass"))
    if rows and accounting["n_ok"] == 0:
        caps.append((Status.BLOCKED, f"all {accounting['n_rows']} evidence rows were skipped or invalid: "
                                     f"{accounting['reason_counts']}"))
    elif accounting["n_invalid"]:
        caps.append((Status.INSUFFICIENT, f"{accounting['n_invalid']} evidence rows are invalid "
                                          f"({accounting['reason_counts']}): a skipped row never supports a candidate"))
    for g in gates:
        if g.caps_at < Status.STRONG:
            caps.append((g.caps_at, f"{g.name}: {g.reason}"))
    caps += [(d.caps_at, d.line()) for d in debts]
    caps += list(extra_caps)  # after the gates': a gate that blocks says more than "no recorded rows"
    strong_gates = {g.name for g in gates if g.name in STRONG_REQUIRES}
    missing = [n for n in STRONG_REQUIRES if n not in strong_gates]
    if missing and check_strong_requires:
        caps.append((Status.CANDIDATE, f"strong needs {', '.join(missing)}, which did not run"))
    status = min((c for c, _ in caps), default=Status.STRONG)
    # What is strong but for a requirement judged across claims: the mechanisms table can lift it (mechanisms.py).
    across = {d.line() for d in debts if d.kind == "across_claims"}
    if across and status == Status.CANDIDATE and min((c for c, r in caps if r not in across),
                                                      default=Status.STRONG) == Status.STRONG:
        support = dict(support or {}, strong_pending=sorted(d.gate for d in debts if d.kind == "across_claims"))
    # Reasons: the ones that set the status first, then the rest of what holds the claim back.
    reasons = [r for c, r in caps if c == status] + [r for c, r in caps if c != status]
    return Verdict(status, tuple(dict.fromkeys(reasons)), gates, accounting, debts, policy or {}, support or {})


# ---------------------------------------------------------------------------------------------- the policy run
@dataclass
class Recorded:
    """Everything a claim test recorded: the only inputs the verdict may read besides the policy and the spec."""

    rows: list = field(default_factory=list)
    baseline: list = field(default_factory=list)
    metric: list = field(default_factory=list)
    null: dict | None = None  # {"values": [...], "search_size": int | None}


@dataclass(frozen=True)
class AuthorCall:
    """One ``mechclaim.gate.<name>(...)`` call: the function, the thresholds given, the result it produced."""

    function: str
    thresholds: dict
    result: GateResult
    all_rows: bool = False  # it read every recorded row of its kind (not a subset the author chose)


def judge(spec, stage: str | None, recorded: Recorded, author: Sequence[AuthorCall] = (),
          custom: Sequence[GateResult] = (), policy: "policy_mod.Policy" = policy_mod.DEFAULT_POLICY) -> Verdict:
    kind = policy_mod.claim_kind(spec)
    direction, direction_source = policy_mod.claim_direction(spec)
    applied = dict(policy.describe(kind, stage, spec.level.label, direction), direction_source=direction_source)
    if isinstance(direction, dict):
        applied["direction"] = dict(sorted(direction.items()))
    target, controls, context = policy_mod.split_rows(spec, recorded.rows)
    support = {"kind": kind, "n_supporting": len(target), "n_control_units": len(controls),
               "n_context": len(context),
               "context_by_scope": dict(sorted(Counter(r.scope for r in context).items()))}
    # An author call of a gate the policy requires, on all recorded rows, is the policy's own run (its thresholds
    # feed the policy, see effective_thresholds); a call on a chosen subset, or of another gate, is an added check.
    required = {l.gate: l for l in policy.lines_for(kind, stage, spec.level.label)}
    author_results = [c.result for c in author if not _stands_for_policy_run(c, required)] + list(custom)
    caps: list[tuple[Status, str]] = []
    if not (recorded.rows or recorded.baseline or recorded.metric):
        caps.append((Status.BLOCKED, "no recorded rows: record evidence with mechclaim.record(...) (baseline or "
                                     "metric-calibration rows for a calibration stage); gates alone judge nothing"))
        return decide(author_results, (), (), caps, applied, support)
    if stage == policy_mod.CALIBRATION:
        if not (recorded.baseline or recorded.metric):
            caps.append((Status.BLOCKED, "a calibration stage is judged on baseline or metric-calibration rows "
                                         "(mechclaim.record_baseline / record_metric_calibration); none recorded"))
    elif not target:
        caps.append((Status.BLOCKED, _no_support_reason(spec, kind, len(recorded.rows), support)))
    if caps:
        return decide(author_results, recorded.rows, (), caps, applied, support)
    inputs = {"target": target, "controls": controls, "baseline": recorded.baseline, "metric": recorded.metric,
              "null": recorded.null}
    waived = dict(getattr(spec, "waive", ()) or ())
    results, debts = [], []
    for line in policy.lines_for(kind, stage, spec.level.label):
        if line.gate in waived:
            debts.append(Debt(line.gate, "waived", f"waived by the claim: {waived[line.gate]}"))
            continue
        if line.reads == "mechanism":
            debts.append(_across_claims_debt(spec, line))
            continue
        if line.if_recorded and not inputs[line.reads]:
            continue
        if line.carries_only and direction != "carries":
            # Its score is signed for "carries" only; signed_effect checks the declared direction instead.
            applied.setdefault("not_applied", []).append({"gate": line.gate, "why": f"direction {direction!r}"})
            continue
        unmet = [policy_mod.NEEDS[n][0] for n in line.needs if not policy_mod.NEEDS[n][1](inputs)]
        if unmet:
            debts.append(Debt(line.gate, "rows_cannot_show", "; ".join(unmet)))
            continue
        kwargs, loosened = effective_thresholds(line, [c for c in author if c.result.name == line.gate])
        debts += loosened
        outcome = run_line(line, kwargs, inputs, direction)
        (debts if isinstance(outcome, Debt) else results).append(outcome)
    if stage == policy_mod.CALIBRATION:
        caps.append((Status.CANDIDATE, "strong: a calibration stage has no strong line"))
    elif spec.level < Status.STRONG:
        strong = ", ".join(l.gate for l in policy.strong_lines(kind, stage))
        caps.append((Status.CANDIDATE, f"strong: the policy's strong lines ({strong}) run only for a claim at "
                                       "level 'strong'"))
    policy_dicts = [g.to_dict() for g in results]
    # An author call identical to the policy's own run adds nothing but a duplicate row in the report.
    extra = [g for g in author_results
             if dataclasses.replace(g, details=dict(g.details, run_by="policy")).to_dict() not in policy_dicts]
    gates = tuple(results) + tuple(extra)
    return decide(gates, recorded.rows, debts, caps, applied, support,
                  check_strong_requires=spec.level == Status.STRONG and stage != policy_mod.CALIBRATION)


def _across_claims_debt(spec, line) -> Debt:
    floors = dict(line.floors)
    where = (f"mechanism {spec.mechanism!r}: judged over each model's held-out verdict in the mechanisms table"
             if getattr(spec, "mechanism", None) else "the claim declares no mechanism= shared with another model")
    return Debt(line.gate, "across_claims", f"strong needs the same mechanism held out in >= "
                                            f"{floors.get('min_models', 2)} models; one claim's rows cannot show "
                                            f"it ({where})", caps_at=Status.CANDIDATE)


def _stands_for_policy_run(call: AuthorCall, required: dict) -> bool:
    """An author call is the policy's own run when it read every recorded row and gave only thresholds (or the line's
    fixed arguments): the policy adopts its stricter thresholds. Any other argument (``families=``, a different
    ``denominator_floor``) makes it a separate check, kept because it can only lower the verdict."""
    line = required.get(call.result.name)
    if line is None or not call.all_rows:
        return False
    return all(policy_mod.threshold_direction(arg) is not None or arg in dict(line.fixed) for arg in call.thresholds)


def _no_support_reason(spec, kind: str, n_rows: int, support: dict) -> str:
    wanted = {"head": f"single-head rows ({', '.join(policy_mod.HEAD_SCOPES)}) of units {list(spec.units)}",
              "sae_features": "sae_features rows" + (f" of feature sets {list(spec.units)}" if spec.units else ""),
              "other": f"target rows of units {list(spec.units)}" if spec.units else "target rows"}[kind]
    where = f" at positions {list(spec.positions)}" if getattr(spec, "positions", ()) else ""
    return (f"no recorded row supports this {kind} claim: it needs {wanted}{where}; all {n_rows} rows are context "
            f"(by scope: {support['context_by_scope']})")


def effective_thresholds(line, calls: Sequence[AuthorCall]) -> tuple[dict, list[Debt]]:
    """The line's floors, raised to the author's stricter values; every author value looser than a floor is a debt.
    Only thresholds (min*, max*, alpha) are adopted from the author; other arguments (``families``,
    ``denominator_floor``, ``required_interventions``, ``require_distinct_prompts``) could loosen a gate in ways no
    floor orders, so the policy runs with the gate's defaults and the line's fixed arguments."""
    floors = dict(line.floors)
    kwargs = dict(floors)
    debts = []
    for call in calls:
        for arg, value in call.thresholds.items():
            if arg in dict(line.fixed) or policy_mod.threshold_direction(arg) is None:
                continue
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                continue  # not a number: the gate itself rejects it in the author's own call
            # An argument without a policy floor has the gate's own default as its floor.
            floor = floors[arg] if arg in floors else policy_mod._signature_default(line.function, arg)
            if floor is policy_mod._NO_ARG:
                continue
            if policy_mod._looser(arg, value, floor):
                debts.append(Debt(line.gate, "loosened", f"the claim called {call.function} with {arg}={value!r}, "
                                                         f"looser than the policy floor {floor!r} "
                                                         f"({line.source or 'gate default'}); the policy ran at the "
                                                         "floor"))
            elif arg not in kwargs or policy_mod.stricter(arg, value, kwargs[arg]):
                kwargs[arg] = value
    return kwargs, debts


def run_line(line, kwargs: dict, inputs: dict, direction: str) -> GateResult | Debt:
    """Run one policy line through ``pytest_mechclaim.gates`` by name; a gate that does not exist (yet) or cannot
    take the floor is a debt, never a silent pass."""
    fn = getattr(gate_module, line.function, None)
    if not callable(fn):
        return Debt(line.gate, "missing_gate", f"the policy requires {line.function}, which pytest_mechclaim.gates "
                                               f"does not provide ({line.source})")
    params = inspect.signature(fn).parameters
    kwargs = dict(kwargs, **dict(line.fixed))
    if "direction" in params:
        kwargs["direction"] = direction
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return Debt(line.gate, "floor_not_applicable", f"{line.function} takes no argument {unknown}; the floors "
                                                       f"{dict(line.floors)} cannot be applied")
    try:
        if line.reads == "null":
            null = inputs["null"]
            result = fn(_null_score(inputs["target"], direction), list(null["values"]),
                        search_size=null.get("search_size"), **kwargs)
        else:
            source = inputs["target"] + inputs["controls"] if line.reads == "rows" else inputs[line.reads]
            result = fn(list(source), **kwargs)
    except gate_module.GateThresholdError as exc:  # the gate refuses the policy's own floor: a policy/gate mismatch
        return Debt(line.gate, "floor_not_applicable", f"{line.function} refuses the policy's arguments: {exc}")
    except (ValueError, TypeError) as exc:
        return GateResult(line.gate, False, None, None, "policy", Status.BLOCKED,
                          f"the policy line could not run: {type(exc).__name__}: {exc}")
    return dataclasses.replace(result, details=dict(result.details, run_by="policy"))


def _null_score(target_rows, direction) -> float:
    """The score an empirical null is compared with: the mean specificity gap of the supporting rows, the target's
    movement counted in the claim's predicted direction (gates.directed_gap) where the gates provide it."""
    directed = getattr(gate_module, "directed_gap", None)
    score = (lambda r: directed(r, direction)) if callable(directed) else (lambda r: r.specificity_gap)
    gaps = [g for r in target_rows if r.ok and r.paired and (g := score(r)) is not None]
    return fmean(gaps) if gaps else math.nan
