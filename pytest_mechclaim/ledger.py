"""The claim ledger: every claim's current status per stage, committed in the user's repository.

Format: one JSON file (default ``mechclaim-ledger.json`` at the rootdir), rendered deterministically: keys sorted,
two-space indent, one claim per block under ``claims``, one stage per block under the claim, a trailing newline.
JSON because it parses strictly (a hand-mangled or half-merged file is detected, never half-read; duplicate keys
are rejected) and sorted, indented JSON diffs line by line in git. A Markdown view for people
(``mechclaim-ledger.md``) is rendered from it on every write. The schema (``ledger_schema``, pydantic) is
``pytest-mechclaim/ledger/2``:

    {"schema": "pytest-mechclaim/ledger/2", "claims_digest": "<digest of every claim's digest>",
     "claims": {"<claim id>": {"statement", "claimed", "expect", "units", "model", ..., "status",
                               "allowed", "forbidden", "digest",
                               "stages": {"<stage>": {"status", "spec_hash", "spec_parts", "thresholds", "metrics",
                                                      "rows", "failing_gates", "test", "run",
                                                      "acknowledged_spec_changes"}}}},
     "runs": {"<run id>": {"date", "commit", "dirty", "versions", ...}}}

Run-specific fields (``runs`` and every ``run`` / acknowledgement date) are the only parts that differ between two
runs of the same code on the same data; ``comparable`` strips them, and the digests leave them out.

Integrity: each claim block carries a digest of its fields (run-specific ones excepted) and the ledger a digest of
all claim digests; a block edited, renamed, added or deleted by hand is reported as tampering on load and the run
refuses to compare or update. The digests guard against hand edits and bad merges, not against someone who
recomputes them on purpose.

The ledger works like a snapshot (``reconcile``): a claim stage whose status or spec hash differs from the committed
ledger, a new claim stage, or one that disappeared fails the session unless it was started with
``--mechclaim-update-ledger``. Under update, three things are refused unless acknowledged:
a status rise in a run where the stage's spec hash changed (thresholds, controls, data or gates moved after seeing
results: ``--mechclaim-ack-spec-change=ID:REASON``); a stage that enters or rises in a run where a ledger stage of
the same test module, test function or statement vanished (a renamed claim, a moved stage: same flag); and
removing a stage that is no longer collected (``--mechclaim-prune-ledger``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

# The file format (schema, strict reading, digests, writing) and the Markdown view live in their own modules; the
# names are re-exported here because callers (plugin, draft guard, tests) use ``ledger.load`` etc.
from .ledger_markdown import markdown_path, render_markdown  # noqa: F401
from .ledger_schema import (SCHEMA, STALE_TEMP_SECONDS, LedgerError, check_writable, claim_digest,  # noqa: F401
                            claims_digest, load, lock_path_for, markdown_is_current, parse_json,
                            remove_stale_temp_files, seal, tampered, validate, write_files)
from .ledger_schema import _io_error
from .status import Status

METRIC_DIGITS = 6  # significant digits kept: the ledger should not diff on the last bits of a float

# What one may write about a claim at each status (draft guard reads ``forbidden``). Phrases of >= 2 words, matched
# word boundary to word boundary (reference: MechLedger's Draft Guard).
_OVERCLAIMS = ("proves that", "is the mechanism", "fully explains", "complete circuit", "causally demonstrates",
               "definitively shows")
_BEYOND_CANDIDATE = ("strong evidence", "strong candidate", "robust mechanism", "well established")
_SUPPORT = ("candidate evidence", "candidate mechanism", "evidence supports", "is supported by", "supports the claim")
_ANY_SUPPORT = ("weak evidence for", "suggestive evidence", "some evidence for", "partial evidence")
WORDING: dict[Status, dict[str, tuple[str, ...]]] = {
    Status.STRONG: {"allowed": ("strong candidate evidence", "passes the strong evidence floor", "candidate mechanism"),
                    "forbidden": _OVERCLAIMS},
    Status.CANDIDATE: {"allowed": ("candidate evidence", "candidate mechanism", "passes the candidate gates"),
                       "forbidden": _OVERCLAIMS + _BEYOND_CANDIDATE},
    Status.INSUFFICIENT: {"allowed": ("insufficient evidence", "not yet supported", "inconclusive"),
                          "forbidden": _OVERCLAIMS + _BEYOND_CANDIDATE + _SUPPORT},
    Status.FALSIFIED: {"allowed": ("falsified", "evidence against the claim", "controls move as much as the target"),
                       "forbidden": _OVERCLAIMS + _BEYOND_CANDIDATE + _SUPPORT + _ANY_SUPPORT},
    Status.BLOCKED: {"allowed": ("could not be evaluated", "blocked", "no usable evidence"),
                     "forbidden": _OVERCLAIMS + _BEYOND_CANDIDATE + _SUPPORT + _ANY_SUPPORT
                     + ("evidence against", "is falsified", "was falsified")},
}


# ------------------------------------------------------------------------------------------------------------------
# Canonical hashing: the spec fingerprint
# ------------------------------------------------------------------------------------------------------------------


def _jsonable(value):
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def canonical(value) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), default=str)


def digest(value) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:16]


def spec_fingerprint(claim: dict, stage: str | None, gate_calls: Iterable[dict], gates: Iterable[dict],
                     rows: Iterable, baseline_rows: Iterable = (), inputs: dict | None = None,
                     policy=None, model: dict | None = None) -> dict:
    """Everything that defines a claim test - its *inputs*, never a measured number - hashed in parts so a change
    can say *what* moved.

    * ``claim``: the marker (id, statement, level, expectation, units, model, hook, SAE, ...) and the stage;
    * ``gates``: each gate call with its effective thresholds (defaults included) and the name of each result
      added by hand;
    * ``coordinates``: the set of row coordinates (unit, unit set, intervention, factor, position, seed, family,
      family role, control suite, prompt id, scope) and baseline task ids: units, interventions, seeds, families,
      suites and prompts;
    * ``data``: prompt ids with their prompt and control texts (same ids, different tokens is a change);
    * ``inputs``: what the test declared (``mechclaim.declare``: frozen candidate sets, selection rules, data
      hashes); results it attached (``mechclaim.attach``: tables of measured numbers) are not hashed;
    * ``policy``: the evidence policy as applied to this claim stage (required gates, floors, waivers);
    * ``model``: the claim's model identity (name, weights sha256, processing, numerics libraries' versions).

    Measured numbers (row values, gate values, attached results) are metrics: compared with a tolerance, never
    hashed, so ``-n 0``, ``-n 2``, 1 or 2 threads give the same hash. Order-insensitive: rows, gate calls and
    results are hashed as sorted sets.
    """
    rows = list(rows)
    # Gate *calls* (with their effective thresholds) define the test; a result's shown threshold does not: a
    # composite gate shows its deciding sub-check, which moves with the evidence. Results the policy ran are
    # covered by ``policy``; a result added by hand (``gate.add``) is covered by its name.
    gate_part = sorted({canonical(c) for c in gate_calls}
                       | {canonical({"result": g["name"]}) for g in gates
                          if g.get("details", {}).get("run_by") != "policy"})
    coordinates = sorted({canonical(r.coordinates()) for r in rows}
                         | {canonical({"baseline": r.task_id, "family": r.family,
                                       "expected_direction": r.expected_direction}) for r in baseline_rows})
    data = sorted({canonical([r.prompt_id, r.prompt, r.control_prompt]) for r in rows
                   if r.prompt is not None or r.control_prompt is not None})
    parts = {
        "claim": digest({"claim": claim, "stage": stage}),
        "gates": digest(gate_part),
        "coordinates": digest(coordinates),
        "data": digest(data),
        "inputs": digest(inputs or {}),
        "policy": digest(_policy_rules(policy)),
        "model": digest(model),
    }
    readable = {"gates": _readable_thresholds(gate_calls), "model": model, "policy": policy}
    return {"hash": digest(parts), "parts": parts, "inputs": _jsonable(readable)}


def _policy_rules(policy):
    """The policy as applied, without its citations: rewording a line's ``source`` does not change a test."""
    if isinstance(policy, dict):
        return {k: _policy_rules(v) for k, v in policy.items() if k != "source"}
    if isinstance(policy, list):
        return [_policy_rules(v) for v in policy]
    return policy


def _readable_thresholds(gate_calls: Iterable[dict]) -> dict:
    """``{gate: thresholds}`` (a gate called with several settings: ``gate#2`` ...), in a stable order, for
    reviewers: ``git diff`` of the ledger shows ``positive_share min 0.5 -> 0.99``, not only a new hash."""
    out: dict = {}
    for call in sorted(gate_calls, key=canonical):
        name, n = call["gate"], 2
        while name in out:
            name, n = f"{call['gate']}#{n}", n + 1
        out[name] = call.get("thresholds", {})
    return out


# ------------------------------------------------------------------------------------------------------------------
# Entries
# ------------------------------------------------------------------------------------------------------------------


def _round(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return _jsonable(float(value))
        return float(f"{value:.{METRIC_DIGITS}g}")
    return value


def metrics_of(verdict: dict) -> dict:
    """Gate name -> value (rounded); a gate run twice gets ``name#2``."""
    out: dict = {}
    for g in verdict["gates"]:
        name, n = g["name"], 2
        while name in out:
            name, n = f"{g['name']}#{n}", n + 1
        out[name] = _round(g["value"])
    return out


def _unique(out: dict, name: str) -> str:
    key, n = name, 2
    while key in out:
        key, n = f"{name}#{n}", n + 1
    return key


def thresholds_of(gates_input) -> dict | None:
    """A readable gate -> thresholds map from the fingerprint's hashed gate inputs, so ``git diff`` of the ledger
    shows ``"min": 0.5`` -> ``"min": 0.99``. Accepts gate calls (``{"gate", "thresholds"}``), results
    (``{"result", "threshold", "comparison"}``), either as dicts or as their canonical JSON strings, or a ready map.
    None when there is nothing to show."""
    if not gates_input:
        return None
    if isinstance(gates_input, dict):
        return _jsonable(gates_input)
    calls: dict = {}
    results: dict = {}
    for item in gates_input:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except json.JSONDecodeError:
                continue
        if not isinstance(item, dict):
            continue
        if "gate" in item:
            calls[_unique(calls, str(item["gate"]))] = _jsonable(item.get("thresholds", {}))
        elif "result" in item:
            results[_unique(results, str(item["result"]))] = _jsonable(
                {k: item[k] for k in ("threshold", "comparison") if k in item})
    out = dict(calls)
    for name, value in results.items():  # results added by hand (no gate call of that name)
        if name not in out:
            out[name] = value
    return dict(sorted(out.items())) or None


def wording(status: Status) -> dict:
    w = WORDING[status]
    return {"allowed": list(w["allowed"]), "forbidden": list(w["forbidden"])}


def stage_entry(record: dict, run_ref: dict) -> dict:
    verdict = record["verdict"]
    acc = verdict.get("row_accounting") or {}
    entry = {
        "stage": record.get("stage"),
        "status": verdict["status"],
        "spec_hash": record["fingerprint"]["hash"],
        "spec_parts": record["fingerprint"]["parts"],
        "metrics": metrics_of(verdict),
        "failing_gates": sorted({g["name"] for g in verdict["gates"] if not g["passed"]}),
        "rows": {k: acc[k] for k in ("n_rows", "n_ok", "n_invalid", "n_not_applicable") if k in acc},
        "test": {"nodeid": record["nodeid"], "outcome": record["outcome"]},
        "run": dict(run_ref),
    }
    # Effective thresholds: the policy's floors for every gate it ran, overlaid by the author's own calls (which
    # can only be stricter: a looser one is a debt), so a reviewer sees every number the verdict was judged at.
    policy_lines = (verdict.get("policy") or {}).get("lines", [])
    thresholds = {line["gate"]: _jsonable(dict(line.get("floors", {}))) for line in policy_lines if "gate" in line}
    thresholds.update(thresholds_of((record["fingerprint"].get("inputs") or {}).get("gates")) or {})
    if thresholds:
        entry["thresholds"] = dict(sorted(thresholds.items()))
    pending = (verdict.get("support") or {}).get("strong_pending")
    if pending:
        entry["strong_pending"] = list(pending)
    return entry


def claim_status(stages: dict) -> str:
    """A claim is as good as its weakest recorded stage: a later stage can downgrade or kill, never add."""
    return min((Status.parse(e["status"]) for e in stages.values()), default=Status.BLOCKED).label


def _claim_block(spec: dict, stages: dict) -> dict:
    status = claim_status(stages)
    block = {k: v for k, v in spec.items() if k not in ("id", "level")}
    block.update(claimed=spec["level"], status=status, stages=stages, **wording(Status.parse(status)))
    return block


def empty_ledger() -> dict:
    return seal({"schema": SCHEMA, "claims": {}, "runs": {}})


def comparable(ledger: dict) -> dict:
    """The ledger without run-specific fields (run ids, dates, machine): equal for equal code and data."""
    out = copy.deepcopy(ledger)
    out.pop("runs", None)
    for claim in out.get("claims", {}).values():
        for entry in claim.get("stages", {}).values():
            entry.pop("run", None)
            for ack in entry.get("acknowledged_spec_changes", []):
                ack.pop("run", None)
                ack.pop("date", None)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Reading and writing
# ------------------------------------------------------------------------------------------------------------------


def dumps(ledger: dict) -> str:
    return json.dumps(_jsonable(ledger), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def normalized(ledger: dict) -> dict:
    """``ledger`` as its file would read back (JSON-native values), sealed with its digests."""
    return seal(parse_json(dumps(ledger)))


def write(path: Path, ledger: dict) -> None:
    """Validate, seal, render and write ``ledger`` and its Markdown view (``ledger_schema.write_files``)."""
    write_files(path, normalized(ledger))


def prepare(ledger: dict, name: str = "mechclaim-ledger.json") -> tuple[str, str]:
    """The JSON and Markdown texts ``write`` would write; LedgerError unless the ledger validates and renders."""
    from .ledger_schema import render_files

    return render_files(normalized(ledger), name)


# ------------------------------------------------------------------------------------------------------------------
# Comparison with the committed ledger
# ------------------------------------------------------------------------------------------------------------------


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def function_of(nodeid: str) -> str:
    """The test's nodeid without its parametrization (``m.py::test_x[seed-1]`` -> ``m.py::test_x``)."""
    head, sep, last = nodeid.rpartition("::")
    return head + sep + last.split("[")[0]


@dataclass(frozen=True)
class Change:
    kind: str  # new | status | spec | gone
    claim: str
    key: str
    old_status: str | None = None
    new_status: str | None = None
    changed_parts: tuple[str, ...] = ()
    nodeid: str = ""
    # Ledger stages (claim, key, nodeid) of the same module, test function or statement that vanished this run.
    replaces: tuple[tuple[str, str, str], ...] = ()
    held_by: str = ""  # a gone stage kept because the stage replacing it was refused

    @property
    def spec_changed(self) -> bool:
        return bool(self.changed_parts)

    @property
    def rise(self) -> bool:
        return (self.old_status is not None and self.new_status is not None
                and Status.parse(self.new_status) > Status.parse(self.old_status))

    @property
    def needs_ack(self) -> bool:
        """A status rise in the same run as a spec change (thresholds or data moved after seeing results?), or a
        stage that enters or rises while a related one vanished (a rename or move that would drop its history)."""
        return (self.rise and self.spec_changed) or (bool(self.replaces) and (self.kind == "new" or self.rise))

    @property
    def replaced(self) -> list[str]:
        return [f"{c} [{k}] ({n})" for c, k, n in self.replaces]

    def why(self) -> str:
        """Why this change needs an acknowledgement, as a clause after "rose"/"entered" ("" when it does not)."""
        reasons = []
        if self.rise and self.spec_changed:
            reasons.append(f"in the same run as a spec change ({', '.join(self.changed_parts)}): thresholds, data "
                           "or controls moved after seeing results")
        if self.replaces and (self.kind == "new" or self.rise):
            reasons.append(f"in the same run as {', '.join(self.replaced)} vanished (same test module, test or "
                           "statement): a renamed claim, a moved stage or a deleted entry must not carry a status "
                           "into the ledger unacknowledged")
        return "; ".join(reasons)

    @property
    def verb(self) -> str:
        return "entered" if self.kind == "new" else "rose"

    def line(self) -> str:
        where = f"{self.claim} [{self.key}]"
        parts = f" (spec changed: {', '.join(self.changed_parts)})" if self.changed_parts else ""
        if self.kind == "new":
            return f"NEW      {where}: {self.new_status} (not in the ledger)"
        if self.kind == "gone":
            return f"GONE     {where}: recorded {self.old_status}, no longer collected ({self.nodeid})"
        if self.kind == "spec":
            return f"SPEC     {where}: status {self.new_status} unchanged{parts}"
        return f"CHANGED  {where}: {self.old_status} -> {self.new_status}{parts}"

    def refusal(self) -> str:
        where = f"{self.claim} [{self.key}]"
        if self.kind == "gone" and self.held_by:
            return (f"REFUSED  {where}: recorded {self.old_status}, no longer collected ({self.nodeid}); not pruned "
                    f"while {self.held_by}, which replaces it, is refused")
        if self.kind == "gone":
            return (f"REFUSED  {where}: recorded {self.old_status}, no longer collected ({self.nodeid}); the ledger "
                    "keeps it. Remove it with --mechclaim-update-ledger --mechclaim-prune-ledger")
        old = self.old_status or "(new)"
        return (f"REFUSED  {where}: {old} -> {self.new_status} {self.verb} {self.why()}. Acknowledge with "
                f"--mechclaim-ack-spec-change={self.claim}:REASON")


def compare(ledger: dict, records: Iterable[dict], inventory: set[tuple[str, str]], collected_modules: set[str],
            scope: Iterable[Path], rootdir: Path) -> list[Change]:
    """What differs between the ledger and the claim tests judged in this session.

    Only judged claim tests are compared. A ledger entry counts as gone only when this session looked where it
    lives: its module was collected and no longer holds that claim stage, or its file is missing under a path the
    session was asked to collect. Deselected stages (``-m heldout``) are still collected, so they are never gone.
    A new or risen stage lists the ledger stages it may replace: those this session did not see at all (neither
    judged nor collected) that share its module, its test function or its claim's statement.
    """
    claims = ledger["claims"]
    records = sorted(records, key=lambda r: (r["claim"]["id"], r["key"]))
    judged = {(r["claim"]["id"], r["key"]) for r in records}
    vanished = [(claim_id, key, entry["test"]["nodeid"], claim.get("statement"))
                for claim_id, claim in sorted(claims.items()) for key, entry in sorted(claim["stages"].items())
                if (claim_id, key) not in judged and (claim_id, key) not in inventory]
    changes: list[Change] = []
    for rec in records:
        claim_id, key = rec["claim"]["id"], rec["key"]
        old = claims.get(claim_id, {}).get("stages", {}).get(key)
        new_status = rec["verdict"]["status"]
        nodeid = rec["nodeid"]
        replaces = tuple((c, k, n) for c, k, n, statement in vanished
                         if module_of(n) == module_of(nodeid) or function_of(n) == function_of(nodeid)
                         or statement == rec["claim"].get("statement"))
        if old is None:
            changes.append(Change("new", claim_id, key, None, new_status, nodeid=nodeid, replaces=replaces))
            continue
        new_parts = rec["fingerprint"]["parts"]
        changed = tuple(sorted(p for p, h in new_parts.items() if old.get("spec_parts", {}).get(p) != h))
        if old["spec_hash"] != rec["fingerprint"]["hash"] and not changed:
            changed = ("spec_hash",)
        if old["status"] != new_status:
            changes.append(Change("status", claim_id, key, old["status"], new_status, changed, nodeid, replaces))
        elif changed:
            changes.append(Change("spec", claim_id, key, old["status"], new_status, changed, nodeid))
    scope = [Path(s).resolve() for s in scope]
    for claim_id, key, nodeid, _ in vanished:
        file = (Path(rootdir) / module_of(nodeid)).resolve()
        missing_in_scope = not file.exists() and any(file == s or s in file.parents for s in scope)
        if module_of(nodeid) in collected_modules or missing_in_scope:
            changes.append(Change("gone", claim_id, key, claims[claim_id]["stages"][key]["status"], None,
                                  nodeid=nodeid))
    return changes


@dataclass
class Applied:
    ledger: dict
    refused: list[Change] = field(default_factory=list)
    acknowledged: list[Change] = field(default_factory=list)
    unused_acks: list[str] = field(default_factory=list)


def _ack_entry(change: Change, reason: str, old: dict | None, entry: dict, run_info: dict) -> dict:
    ack = {"reason": reason, "from_status": change.old_status, "to_status": change.new_status,
           "from_spec_hash": old["spec_hash"] if old else None, "to_spec_hash": entry["spec_hash"],
           "changed_parts": list(change.changed_parts), "run": run_info["run_id"], "date": run_info["date"]}
    if change.replaces:
        ack["replaces"] = change.replaced
    return ack


def apply(ledger: dict, changes: list[Change], records: Iterable[dict], run_info: dict,
          acks: dict[str, str], prune: bool = False) -> Applied:
    """The updated ledger: changed and new stages recorded, refused ones left as they were, gone ones removed only
    with ``prune`` (and kept while a stage that replaces them is refused: pruning first and adding later would
    slip the replacement in without acknowledgement).

    Stages whose entry is unchanged (same status, spec, metrics, rows, outcome) keep their old run reference, so
    rerunning unchanged claims does not churn the file.
    """
    new = copy.deepcopy(ledger)
    claims = new["claims"]
    out = Applied(new)
    by_key = {(c.claim, c.key): c for c in changes}
    run_ref = {"id": run_info["run_id"], "date": run_info["date"], "commit": run_info.get("commit")}
    used_acks = set()
    for rec in records:
        claim_id, key = rec["claim"]["id"], rec["key"]
        change = by_key.get((claim_id, key))
        old_claim = claims.get(claim_id, {})
        old = old_claim.get("stages", {}).get(key)
        entry = stage_entry(rec, run_ref)
        entry["acknowledged_spec_changes"] = list(old.get("acknowledged_spec_changes", [])) if old else []
        if change is not None and change.needs_ack:
            reason = acks.get(claim_id)
            if not reason:
                out.refused.append(change)
                continue
            used_acks.add(claim_id)
            out.acknowledged.append(change)
            entry["acknowledged_spec_changes"].append(_ack_entry(change, reason, old, entry, run_info))
        if not entry["acknowledged_spec_changes"]:
            del entry["acknowledged_spec_changes"]
        if old is not None and comparable({"claims": {"c": {"stages": {"s": old}}}}) == \
                comparable({"claims": {"c": {"stages": {"s": entry}}}}):
            continue
        stages = dict(old_claim.get("stages", {}))
        stages[key] = entry
        claims[claim_id] = _claim_block(rec["claim"], stages)
    held = {(c, k): f"{r.claim} [{r.key}]" for r in out.refused for c, k, _ in r.replaces}
    for change in changes:
        if change.kind != "gone":
            continue
        if not prune or (change.claim, change.key) in held:
            out.refused.append(dataclasses.replace(change, held_by=held.get((change.claim, change.key), "")
                                                   if prune else ""))
            continue
        stages = dict(claims[change.claim]["stages"])
        del stages[change.key]
        if stages:
            claims[change.claim] = dict(claims[change.claim], stages=stages, status=claim_status(stages),
                                        **wording(Status.parse(claim_status(stages))))
        else:
            del claims[change.claim]
    referenced = {e["run"]["id"] for c in claims.values() for e in c["stages"].values() if e.get("run")}
    runs = {k: v for k, v in new.get("runs", {}).items() if k in referenced}
    if run_info["run_id"] in referenced:
        runs[run_info["run_id"]] = {k: v for k, v in run_info.items() if k != "run_id"}
    new["runs"] = runs
    out.ledger = normalized(new)
    out.unused_acks = sorted(set(acks) - used_acks)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Reconciliation: compare, maybe update, under a file lock
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Reconciliation:
    path: Path
    existed: bool
    update: bool
    changes: list[Change] = field(default_factory=list)
    refused: list[Change] = field(default_factory=list)
    acknowledged: list[Change] = field(default_factory=list)
    unused_acks: list[str] = field(default_factory=list)
    written: bool = False
    markdown_repaired: bool = False

    @property
    def failed(self) -> bool:
        if self.update:
            return bool(self.refused)
        return self.existed and bool(self.changes)

    def to_dict(self) -> dict:
        change = lambda c: {"kind": c.kind, "claim": c.claim, "key": c.key, "old_status": c.old_status,
                            "new_status": c.new_status, "changed_parts": list(c.changed_parts), "nodeid": c.nodeid,
                            "replaces": c.replaced}
        return {"ledger": str(self.path), "existed": self.existed, "update": self.update, "failed": self.failed,
                "written": self.written, "markdown_repaired": self.markdown_repaired,
                "changes": [change(c) for c in self.changes],
                "refused": [change(c) for c in self.refused], "acknowledged": [change(c) for c in self.acknowledged],
                "unused_acks": self.unused_acks}

    def lines(self, shown_path: str) -> list[str]:
        """The terminal report of this reconciliation (the plugin adds problems and the run record)."""
        lines: list[str] = []
        if not self.existed and not self.update:
            return [f"no claim ledger at {shown_path}: statuses were not compared. Record them with "
                    "--mechclaim-update-ledger and commit the file."]
        if self.update:
            refused = {(c.claim, c.key): c for c in self.refused}
            for c in self.changes:
                lines.append(refused[(c.claim, c.key)].refusal() if (c.claim, c.key) in refused else c.line())
            for c in self.acknowledged:
                lines.append(f"ACK      {c.claim} [{c.key}]: {c.verb} {c.why()}: acknowledged and recorded")
            for claim_id in self.unused_acks:
                lines.append(f"note: --mechclaim-ack-spec-change for {claim_id} was not needed (no status rise "
                             "with a spec change, no stage replacing a vanished one)")
            if self.markdown_repaired:
                lines.append(f"note: the Markdown view of {shown_path} was stale (an interrupted write?) and was "
                             "rendered again")
            lines.append(f"ledger {shown_path} " + ("updated" if self.written else "unchanged")
                         + (f"; {len(self.refused)} change(s) refused" if self.refused else ""))
            return lines
        lines += [c.line() for c in self.changes]
        for c in self.changes:
            if c.needs_ack:
                lines.append(f"  note: {c.claim} [{c.key}] {c.verb} {c.why()}; even --mechclaim-update-ledger "
                             f"refuses it without --mechclaim-ack-spec-change={c.claim}:REASON")
            elif c.kind == "gone":
                lines.append(f"  note: --mechclaim-update-ledger removes {c.claim} [{c.key}] only with "
                             "--mechclaim-prune-ledger")
        if self.changes:
            lines.append(f"{len(self.changes)} claim stage(s) differ from the ledger {shown_path}: run with "
                         "--mechclaim-update-ledger to record them, then commit the ledger")
        else:
            lines.append(f"all judged claim stages match the ledger {shown_path}")
        return lines


def reconcile(path: Path, lock_path: Path | None, records: list[dict], inventory: set[tuple[str, str]],
              collected_modules: set[str], scope: Iterable[Path], rootdir: Path, update: bool,
              acks: dict[str, str], run_info: dict, lock_timeout: float = 600.0,
              prune: bool = False) -> Reconciliation:
    """Compare the judged claim tests with the ledger and, with ``update``, write the new ledger atomically.

    The whole read-compare-write of an update happens under one file lock beside the ledger (``lock_path``, None:
    ``<ledger>.lock``), so two sessions at once serialize instead of losing each other's updates, whatever their
    runs dirs. A comparison alone takes no lock (writes are atomic renames: a reader sees the old ledger or the new
    one). A missing ledger is created only with ``update``; without it nothing is gated. I/O failures are a
    LedgerError naming the path.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    if not update:
        current = load(path)
        result = Reconciliation(path, existed=current is not None, update=False)
        result.changes = compare(current or empty_ledger(), records, inventory, collected_modules, scope, rootdir)
        return result
    check_writable(path)
    lock_path = Path(lock_path) if lock_path is not None else lock_path_for(path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path), timeout=lock_timeout):
            current = load(path)
            result = Reconciliation(path, existed=current is not None, update=True)
            result.changes = compare(current or empty_ledger(), records, inventory, collected_modules, scope,
                                     rootdir)
            remove_stale_temp_files(path)
            applied = apply(current or empty_ledger(), result.changes, records, run_info, acks, prune)
            result.refused, result.acknowledged = applied.refused, applied.acknowledged
            result.unused_acks = applied.unused_acks
            if current is None or dumps(applied.ledger) != dumps(current):
                write(path, applied.ledger)
                result.written = True
            elif not markdown_is_current(path, current):
                write(path, current)
                result.markdown_repaired = True
            return result
    except Timeout:
        raise LedgerError(f"the claim ledger {path} is locked by another update (lock file {lock_path}) and stayed "
                          f"locked for {lock_timeout:.0f} s; it was not updated") from None
    except OSError as exc:
        raise _io_error(path, "updated", exc) from None
