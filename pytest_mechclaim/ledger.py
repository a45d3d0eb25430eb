"""The claim ledger: every claim's current status per stage, committed in the user's repository.

Format: one JSON file (default ``mechclaim-ledger.json`` at the rootdir), rendered deterministically: keys sorted,
two-space indent, one claim per block under ``claims``, one stage per block under the claim, a trailing newline.
JSON because it needs nothing outside the standard library, it parses strictly (a hand-mangled or half-merged file
is detected, never half-read), and sorted, indented JSON diffs line by line in git. A Markdown view for people
(``mechclaim-ledger.md``) is rendered from it on every write.

    {"schema": "pytest-mechclaim/ledger/1",
     "claims": {"<claim id>": {"statement", "claimed", "expect", "units", "model", ..., "status",
                               "allowed", "forbidden",
                               "stages": {"<stage>": {"status", "spec_hash", "spec_parts", "metrics", "rows",
                                                      "failing_gates", "test", "run", "acknowledged_spec_changes"}}}},
     "runs": {"<run id>": {"date", "commit", "dirty", "versions", ...}}}

Run-specific fields (``runs`` and every ``run`` / acknowledgement date) are the only parts that differ between two
runs of the same code on the same data; ``comparable`` strips them.

The ledger works like a snapshot (``reconcile``): a claim stage whose status or spec hash differs from the committed
ledger, a new claim stage, or one that disappeared fails the session unless it was started with
``--mechclaim-update-ledger``; a status may not rise in a run where the stage's spec hash changed (thresholds,
controls, data or gates moved after seeing results) unless acknowledged with a reason, which is stored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .status import LEVELS, Status

SCHEMA = "pytest-mechclaim/ledger/1"
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


class LedgerError(Exception):
    """The ledger file cannot be trusted (not JSON, wrong schema, malformed entries). It is never overwritten."""


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
    * ``gates``: each gate call with its effective thresholds (defaults included) and each result's name,
      threshold and comparison (covers results added by hand);
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
    gate_part = sorted({canonical(c) for c in gate_calls}
                       | {canonical({"result": g["name"], "threshold": g["threshold"], "comparison": g["comparison"]})
                          for g in gates})
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
        "policy": digest(policy),
        "model": digest(model),
    }
    readable = {"gates": _readable_thresholds(gate_calls), "model": model, "policy": policy}
    return {"hash": digest(parts), "parts": parts, "inputs": _jsonable(readable)}


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


def wording(status: Status) -> dict:
    w = WORDING[status]
    return {"allowed": list(w["allowed"]), "forbidden": list(w["forbidden"])}


def stage_entry(record: dict, run_ref: dict) -> dict:
    verdict = record["verdict"]
    acc = verdict.get("row_accounting") or {}
    return {
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


def claim_status(stages: dict) -> str:
    """A claim is as good as its weakest recorded stage: a later stage can downgrade or kill, never add."""
    return min((Status.parse(e["status"]) for e in stages.values()), default=Status.BLOCKED).label


def _claim_block(spec: dict, stages: dict) -> dict:
    status = claim_status(stages)
    block = {k: v for k, v in spec.items() if k not in ("id", "level")}
    block.update(claimed=spec["level"], status=status, stages=stages, **wording(Status.parse(status)))
    return block


def empty_ledger() -> dict:
    return {"schema": SCHEMA, "claims": {}, "runs": {}}


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


def validate(data, path: Path | str = "ledger") -> dict:
    def bad(why: str):
        return LedgerError(f"the claim ledger {path} is malformed: {why}. It was not modified; fix it (or restore "
                           f"it from version control, e.g. `git checkout -- {path}`) and run again.")

    if not isinstance(data, dict):
        raise bad("the top level is not an object")
    if data.get("schema") != SCHEMA:
        raise bad(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    claims, runs = data.get("claims"), data.get("runs", {})
    if not isinstance(claims, dict) or not isinstance(runs, dict):
        raise bad("'claims' and 'runs' must be objects")
    for claim_id, claim in claims.items():
        if not isinstance(claim, dict) or not isinstance(claim.get("stages"), dict):
            raise bad(f"claim {claim_id!r} has no 'stages' object")
        for key, entry in claim["stages"].items():
            if not isinstance(entry, dict):
                raise bad(f"claim {claim_id!r} stage {key!r} is not an object")
            if entry.get("status") not in LEVELS:
                raise bad(f"claim {claim_id!r} stage {key!r} has status {entry.get('status')!r}; "
                          f"expected one of {list(LEVELS)}")
            if not isinstance(entry.get("spec_hash"), str):
                raise bad(f"claim {claim_id!r} stage {key!r} has no spec_hash")
            if not isinstance(entry.get("test"), dict) or not isinstance(entry["test"].get("nodeid"), str):
                raise bad(f"claim {claim_id!r} stage {key!r} has no test nodeid")
    return data


def load(path: Path) -> dict | None:
    """The ledger at ``path``; None when there is none. Raises LedgerError for anything unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LedgerError(f"the claim ledger {path} is not valid JSON ({exc}). It was not modified; fix it (or "
                          f"restore it from version control, e.g. `git checkout -- {path}`) and run again.") from None
    return validate(data, path)


def dumps(ledger: dict) -> str:
    return json.dumps(_jsonable(ledger), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def markdown_path(path: Path) -> Path:
    return Path(path).with_suffix(".md")


# ------------------------------------------------------------------------------------------------------------------
# Comparison with the committed ledger
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    kind: str  # new | status | spec | gone
    claim: str
    key: str
    old_status: str | None = None
    new_status: str | None = None
    changed_parts: tuple[str, ...] = ()
    nodeid: str = ""

    @property
    def spec_changed(self) -> bool:
        return bool(self.changed_parts)

    @property
    def rise(self) -> bool:
        return (self.old_status is not None and self.new_status is not None
                and Status.parse(self.new_status) > Status.parse(self.old_status))

    @property
    def needs_ack(self) -> bool:
        """A status rise in the same run as a spec change: thresholds or data moved after seeing results?"""
        return self.rise and self.spec_changed

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


def compare(ledger: dict, records: Iterable[dict], inventory: set[tuple[str, str]], collected_modules: set[str],
            scope: Iterable[Path], rootdir: Path) -> list[Change]:
    """What differs between the ledger and the claim tests judged in this session.

    Only judged claim tests are compared. A ledger entry counts as gone only when this session looked where it
    lives: its module was collected and no longer holds that claim stage, or its file is missing under a path the
    session was asked to collect. Deselected stages (``-m heldout``) are still collected, so they are never gone.
    """
    claims = ledger["claims"]
    changes: list[Change] = []
    judged = set()
    for rec in sorted(records, key=lambda r: (r["claim"]["id"], r["key"])):
        claim_id, key = rec["claim"]["id"], rec["key"]
        judged.add((claim_id, key))
        old = claims.get(claim_id, {}).get("stages", {}).get(key)
        new_status = rec["verdict"]["status"]
        if old is None:
            changes.append(Change("new", claim_id, key, None, new_status, nodeid=rec["nodeid"]))
            continue
        new_parts = rec["fingerprint"]["parts"]
        changed = tuple(sorted(p for p, h in new_parts.items() if old.get("spec_parts", {}).get(p) != h))
        if old["spec_hash"] != rec["fingerprint"]["hash"] and not changed:
            changed = ("spec_hash",)
        if old["status"] != new_status:
            changes.append(Change("status", claim_id, key, old["status"], new_status, changed, rec["nodeid"]))
        elif changed:
            changes.append(Change("spec", claim_id, key, old["status"], new_status, changed, rec["nodeid"]))
    scope = [Path(s).resolve() for s in scope]
    for claim_id, claim in sorted(claims.items()):
        for key, entry in sorted(claim["stages"].items()):
            if (claim_id, key) in judged or (claim_id, key) in inventory:
                continue
            nodeid = entry["test"]["nodeid"]
            module = nodeid.split("::")[0]
            file = (Path(rootdir) / module).resolve()
            missing_in_scope = not file.exists() and any(file == s or s in file.parents for s in scope)
            if module in collected_modules or missing_in_scope:
                changes.append(Change("gone", claim_id, key, entry["status"], None, nodeid=nodeid))
    return changes


@dataclass
class Applied:
    ledger: dict
    refused: list[Change] = field(default_factory=list)
    acknowledged: list[Change] = field(default_factory=list)
    unused_acks: list[str] = field(default_factory=list)


def apply(ledger: dict, changes: list[Change], records: Iterable[dict], run_info: dict,
          acks: dict[str, str]) -> Applied:
    """The updated ledger: changed and new stages recorded, gone ones removed, refused rises left as they were.

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
        if old is not None:
            entry["acknowledged_spec_changes"] = list(old.get("acknowledged_spec_changes", []))
        if change is not None and change.needs_ack:
            reason = acks.get(claim_id)
            if not reason:
                out.refused.append(change)
                continue
            used_acks.add(claim_id)
            out.acknowledged.append(change)
            entry["acknowledged_spec_changes"].append({
                "reason": reason, "from_status": change.old_status, "to_status": change.new_status,
                "from_spec_hash": old["spec_hash"], "to_spec_hash": entry["spec_hash"],
                "changed_parts": list(change.changed_parts), "run": run_info["run_id"], "date": run_info["date"]})
        if not entry.get("acknowledged_spec_changes"):
            entry.pop("acknowledged_spec_changes", None)
        if old is not None and comparable({"claims": {"c": {"stages": {"s": old}}}}) == \
                comparable({"claims": {"c": {"stages": {"s": entry}}}}):
            continue
        stages = dict(old_claim.get("stages", {}))
        stages[key] = entry
        claims[claim_id] = _claim_block(rec["claim"], stages)
    for change in changes:
        if change.kind == "gone":
            stages = dict(claims[change.claim]["stages"])
            del stages[change.key]
            if stages:
                claims[change.claim] = dict(claims[change.claim], stages=stages,
                                            status=claim_status(stages),
                                            **wording(Status.parse(claim_status(stages))))
            else:
                del claims[change.claim]
    referenced = {e["run"]["id"] for c in claims.values() for e in c["stages"].values() if e.get("run")}
    runs = {k: v for k, v in new.get("runs", {}).items() if k in referenced}
    if run_info["run_id"] in referenced:
        runs[run_info["run_id"]] = {k: v for k, v in run_info.items() if k != "run_id"}
    new["runs"] = runs
    out.unused_acks = sorted(set(acks) - used_acks)
    return out


# ------------------------------------------------------------------------------------------------------------------
# The Markdown view
# ------------------------------------------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def render_markdown(ledger: dict, json_name: str = "mechclaim-ledger.json") -> str:
    claims = ledger["claims"]
    lines = [
        "# Claim ledger",
        "",
        f"Rendered from `{json_name}` by pytest-mechclaim. Do not edit either file by hand: "
        "`pytest --mechclaim-update-ledger` rewrites both.",
        "",
        "| claim | status | claimed | stages |",
        "|---|---|---|---|",
    ]
    for claim_id, c in sorted(claims.items()):
        claimed = f"{c['claimed']}" + (" (planted false claim: expect rejected)" if c.get("expect") == "rejected" else "")
        stages = ", ".join(f"{k}: {e['status']}" for k, e in sorted(c["stages"].items()))
        lines.append(f"| [{claim_id}](#{claim_id.lower()}) | **{c['status']}** | {claimed} | {stages} |")
    for claim_id, c in sorted(claims.items()):
        lines += ["", f"## {claim_id}", "", f"> {c['statement']}", "",
                  f"- status: **{c['status']}** (the weakest recorded stage)",
                  f"- claimed: {c['claimed']}, expect {c.get('expect', 'supported')}"]
        for key in ("model", "hook", "sae"):
            if c.get(key):
                lines.append(f"- {key}: `{c[key]}`")
        if c.get("units"):
            lines.append(f"- units: {', '.join(c['units'])}")
        lines += ["", "| stage | status | test | failing gates | spec hash | run | date | commit |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, e in sorted(c["stages"].items()):
            run = e.get("run", {})
            commit = (run.get("commit") or "-")[:10]
            lines.append(f"| {key} | {e['status']} | `{e['test']['nodeid']}` ({e['test']['outcome']}) | "
                         f"{', '.join(e['failing_gates']) or '-'} | `{e['spec_hash']}` | `{run.get('id', '-')}` | "
                         f"{run.get('date', '-')} | {commit} |")
        gate_names = sorted({g for e in c["stages"].values() for g in e["metrics"]})
        if gate_names:
            keys = sorted(c["stages"])
            lines += ["", "| gate | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for g in gate_names:
                lines.append(f"| {g} | " + " | ".join(_cell(c["stages"][k]["metrics"].get(g)) for k in keys) + " |")
        lines += ["", "Allowed wording: " + ", ".join(f'"{p}"' for p in c["allowed"]),
                  "", "Forbidden wording: " + ", ".join(f'"{p}"' for p in c["forbidden"])]
        acks = [(k, a) for k, e in sorted(c["stages"].items()) for a in e.get("acknowledged_spec_changes", [])]
        if acks:
            lines += ["", "Acknowledged spec changes (status rose while the spec changed):"]
            lines += [f"- {k}: {a['from_status']} -> {a['to_status']} ({', '.join(a['changed_parts'])}), run "
                      f"`{a['run']}` {a['date']}: {a['reason']}" for k, a in acks]
    if ledger.get("runs"):
        lines += ["", "## Runs", "", "| run | date | commit | dirty | python | torch | transformer-lens | sae-lens |",
                  "|---|---|---|---|---|---|---|---|"]
        for run_id, r in sorted(ledger["runs"].items()):
            v = r.get("versions", {})
            lines.append(f"| `{run_id}` | {r.get('date', '-')} | {(r.get('commit') or '-')[:10]} | "
                         f"{_cell(r.get('dirty'))} | {_cell(r.get('python'))} | {_cell(v.get('torch'))} | "
                         f"{_cell(v.get('transformer-lens'))} | {_cell(v.get('sae-lens'))} |")
    return "\n".join(lines) + "\n"


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

    @property
    def failed(self) -> bool:
        if self.update:
            return bool(self.refused)
        return self.existed and bool(self.changes)

    def to_dict(self) -> dict:
        change = lambda c: {"kind": c.kind, "claim": c.claim, "key": c.key, "old_status": c.old_status,
                            "new_status": c.new_status, "changed_parts": list(c.changed_parts), "nodeid": c.nodeid}
        return {"ledger": str(self.path), "existed": self.existed, "update": self.update, "failed": self.failed,
                "written": self.written, "changes": [change(c) for c in self.changes],
                "refused": [change(c) for c in self.refused], "acknowledged": [change(c) for c in self.acknowledged],
                "unused_acks": self.unused_acks}


def remove_stale_temp_files(path: Path) -> None:
    """Temporary files of a writer that was killed before its ``os.replace`` (call only under the lock)."""
    for tmp in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        tmp.unlink(missing_ok=True)
    md = markdown_path(path)
    for tmp in md.parent.glob(f".{md.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def reconcile(path: Path, lock_path: Path, records: list[dict], inventory: set[tuple[str, str]],
              collected_modules: set[str], scope: Iterable[Path], rootdir: Path, update: bool,
              acks: dict[str, str], run_info: dict, lock_timeout: float = 600.0) -> Reconciliation:
    """Compare the judged claim tests with the ledger and, with ``update``, write the new ledger atomically.

    The whole read-compare-write happens under one file lock, so two sessions at once serialize instead of
    losing each other's updates. A missing ledger is created only with ``update``; without it nothing is gated.
    """
    from filelock import FileLock

    from .runs import atomic_write_text

    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=lock_timeout):
        current = load(path)
        result = Reconciliation(Path(path), existed=current is not None, update=update)
        result.changes = compare(current or empty_ledger(), records, inventory, collected_modules, scope, rootdir)
        if not update:
            return result
        remove_stale_temp_files(path)
        applied = apply(current or empty_ledger(), result.changes, records, run_info, acks)
        result.refused, result.acknowledged, result.unused_acks = applied.refused, applied.acknowledged, applied.unused_acks
        if current is None or dumps(applied.ledger) != dumps(current):
            atomic_write_text(Path(path), dumps(applied.ledger), delay_env=True)
            atomic_write_text(markdown_path(path), render_markdown(applied.ledger, Path(path).name))
            result.written = True
        return result
