"""Metric drift between runs (pytest-benchmark's ``--benchmark-compare`` / ``--benchmark-compare-fail``, for claims).

A claim stage's metrics are its gates' values (``ledger.metrics_of``). They are never part of the spec hash, so a key
number can move from run to run while every status holds; this module says how far:

    --mechclaim-compare            this run against the newest earlier finished run in the runs dir
    --mechclaim-compare=RUN_ID     ... against that run;  --mechclaim-compare=ledger  ... against the ledger
    --mechclaim-compare-fail=specificity_gap:0.05     fail when |change| > 0.05
    --mechclaim-compare-fail=normalized_effect:10%    fail when |change| > 10% of the earlier value
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .ledger import metrics_of

LEDGER = "ledger"


@dataclass(frozen=True)
class DriftCheck:
    metric: str
    tolerance: float
    relative: bool

    def fails(self, old: float, new: float) -> bool:
        limit = self.tolerance * abs(old) if self.relative else self.tolerance
        return abs(new - old) > limit

    def describe(self) -> str:
        return f"{self.metric}:{self.tolerance * 100:g}%" if self.relative else f"{self.metric}:{self.tolerance:g}"


def parse_drift_check(text: str) -> DriftCheck:
    """``METRIC:TOL`` with TOL a non-negative number or percentage (argparse ``type=``: errors stop the run early)."""
    metric, sep, tol = text.rpartition(":")
    relative = tol.endswith("%")
    try:
        value = float(tol[:-1] if relative else tol)
    except ValueError:
        value = math.nan
    if not sep or not metric or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected METRIC:TOLERANCE (a number >= 0, or a percentage like 5%), "
                                         f"got {text!r}")
    return DriftCheck(metric, value / 100 if relative else value, relative)


@dataclass(frozen=True)
class MetricChange:
    claim: str
    key: str
    metric: str
    old: float
    new: float

    @property
    def delta(self) -> float:
        return self.new - self.old

    def line(self, failed_by: DriftCheck | None = None) -> str:
        rel = f" ({self.delta / abs(self.old):+.1%})" if self.old else ""
        tail = f"  FAIL {failed_by.describe()}" if failed_by else ""
        return f"{self.claim} [{self.key}] {self.metric}: {self.old:.6g} -> {self.new:.6g} ({self.delta:+.3g}){rel}{tail}"


def metrics_by_stage(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(claim id, ledger key) -> {metric: value} for every judged claim test in a run's verdict payloads."""
    return {(r["claim"]["id"], r["key"]): metrics_of(r["verdict"]) for r in records if r.get("verdict")}


def ledger_metrics(ledger: dict) -> dict[tuple[str, str], dict]:
    return {(cid, key): dict(entry.get("metrics", {})) for cid, claim in ledger.get("claims", {}).items()
            for key, entry in claim.get("stages", {}).items()}


def changes(old: dict[tuple[str, str], dict], new: dict[tuple[str, str], dict]) -> list[MetricChange]:
    """Numeric metrics present on both sides whose values differ (stages or metrics on one side only are not
    drift: the ledger's NEW/GONE lines report those)."""
    out = []
    for stage in sorted(set(old) & set(new)):
        for metric in sorted(set(old[stage]) & set(new[stage])):
            a, b = old[stage][metric], new[stage][metric]
            if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) \
                    or not isinstance(b, (int, float)) or not (math.isfinite(a) and math.isfinite(b)):
                continue
            if a != b:
                out.append(MetricChange(stage[0], stage[1], metric, float(a), float(b)))
    return out


def failures(found: list[MetricChange], checks: list[DriftCheck]) -> list[tuple[MetricChange, DriftCheck]]:
    """Each change beyond the tolerance of a check on its metric (``name#2`` counts as ``name``)."""
    return [(c, chk) for c in found for chk in checks
            if c.metric.split("#")[0] == chk.metric and chk.fails(c.old, c.new)]


def earlier_run(runs_dir: Path, current: str, wanted: str | None) -> Path | None:
    """The run to compare with: ``wanted`` by id, else the newest finished run other than ``current`` that has
    verdicts. Run ids start with their UTC start time, so name order is time order."""
    runs_dir = Path(runs_dir)
    if wanted:
        path = runs_dir / wanted
        return path if (path / "verdicts.json").is_file() else None
    for path in sorted((p for p in runs_dir.iterdir() if p.is_dir() and p.name != current), reverse=True):
        try:
            status = json.loads((path / "run.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
        if status == "complete" and (path / "verdicts.json").is_file():
            return path
    return None


def run_metrics(run_dir: Path) -> dict[tuple[str, str], dict]:
    return metrics_by_stage(json.loads((Path(run_dir) / "verdicts.json").read_text()))


@dataclass
class Comparison:
    """This session's metrics against a baseline (an earlier run or the ledger)."""

    baseline: str | None            # what was compared with (a run id, "ledger"), None when nothing was found
    note: str = ""                  # why nothing was compared
    found: tuple[MetricChange, ...] = ()
    failed: tuple[tuple[MetricChange, DriftCheck], ...] = ()

    def lines(self) -> list[str]:
        if self.baseline is None:
            return [f"nothing to compare with: {self.note}"]
        failed = {id(c): chk for c, chk in self.failed}
        out = [c.line(failed.get(id(c))) for c in self.found]
        return out or [f"no metric changed against {self.baseline}"]


def compare_session(records: list[dict], wanted: str, checks: list[DriftCheck], runs_dir: Path, current: str,
                    ledger: dict | None) -> Comparison:
    """``wanted``: "" (the newest earlier finished run), a run id, or "ledger"."""
    new = metrics_by_stage(records)
    if wanted == LEDGER:
        if ledger is None:
            return Comparison(None, "there is no ledger")
        old, label = ledger_metrics(ledger), LEDGER
    else:
        path = earlier_run(runs_dir, current, wanted or None)
        if path is None:
            return Comparison(None, f"run {wanted!r} has no verdicts in {runs_dir}" if wanted
                              else f"no earlier finished run in {runs_dir}")
        old, label = run_metrics(path), path.name
    found = changes(old, new)
    return Comparison(label, found=tuple(found), failed=tuple(failures(found, checks)))
