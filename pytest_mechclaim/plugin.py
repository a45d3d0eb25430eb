"""pytest glue: options, markers, the ``mechclaim`` fixture, verdict reporting. Knows nothing about models.

State lives on ``config.stash`` (one ClaimSession) and ``item.stash`` (the claim spec, the handle). Each claim
test's verdict travels on its report as ``user_properties`` (JSON-able, so JUnit XML and xdist carry it); the
controller collects them in ``pytest_runtest_logreport`` and prints one summary table.

Run records and the ledger: the controller reserves a run directory in ``pytest_configure`` and hands its path to
xdist workers (``pytest_configure_node`` -> ``workerinput``). Whichever process runs a claim test writes that
test's rows, reports and figure into its own directory there. Workers also return what they collected and judged
through ``workeroutput`` (read in ``pytest_testnodedown``, on a class registered only when xdist is loaded). Only the
controller compares with and writes the ledger, in ``pytest_sessionfinish``, and fails the session through
``session.exitstatus`` when a status changed without ``--mechclaim-update-ledger``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from types import SimpleNamespace
from pathlib import Path

import pytest

from . import ledger as ledger_mod
from .fixture import MechClaim
from .policy import DEFAULT_POLICY, Policy, PolicyError, check_spec, policy_from_lines
from .report import claim_report, table
from .runs import (RunRecord, RunRecordError, new_run_id, provenance, prune_runs, utc_now, write_claim_test,
                   write_json)
from .spec import STAGE_HELP, STAGES, ClaimSpec, ClaimSpecError, parse_claim_marker, spec_differences
from .status import Status
from .mechanisms import claims_from_records, mechanism_table
from .mechanisms import summary_lines as mechanism_summary
from .terminal import verdict_longrepr
from .compare import Comparison, compare_session, parse_drift_check
from .progress import PROGRESS_MODES, TerminalProgress
from .progress import logger as progress_logger

PAYLOAD_KEY = "mechclaim"
DEFAULT_LEDGER = "mechclaim-ledger.json"


session_key = pytest.StashKey["ClaimSession"]()
spec_key = pytest.StashKey[ClaimSpec]()
stage_key = pytest.StashKey["str | None"]()
handle_key = pytest.StashKey[MechClaim]()
policy_key = pytest.StashKey[Policy]()
ledger_key_key = pytest.StashKey[str]()
collection_key = pytest.StashKey["ClaimCollection"]()
WORKER_INPUT_KEY = "mechclaim_run"
WORKER_OUTPUT_KEY = "mechclaim"


class ClaimNotJudged(Exception):
    """A claim test that never used the mechclaim fixture: there is nothing to judge, and that is not a pass."""


class ClaimVerdictFailure(Exception):
    """The claim's verdict is below its claimed level (or a planted false claim was not rejected)."""

    def __init__(self, report: str, status: Status) -> None:
        super().__init__(report)
        self.report = report
        self.status = status


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechclaim", "mechanistic-interpretability claims as tests")
    group.addoption("--mechclaim-device", default=None, choices=("auto", "cpu", "cuda"),
                    help="device for claim models: auto (cuda when present), cpu or cuda. ini: mechclaim_device")
    group.addoption("--mechclaim-threads", type=int, default=None,
                    help="torch CPU threads per process (default: cores / xdist workers). ini: mechclaim_threads")
    group.addoption("--mechclaim-offline", action="store_true", default=False,
                    help="never attempt a network connection; claims that need a model hub are skipped")
    group.addoption("--mechclaim-cache-dir", default=None,
                    help="where converted models and trained SAEs are cached. ini: mechclaim_cache_dir")
    group.addoption("--mechclaim-no-summary", action="store_true", default=False,
                    help="do not print the claim verdict table at the end of the run")
    group.addoption("--mechclaim-ledger", default=None, metavar="PATH",
                    help="the claim ledger (JSON, committed) to compare with. ini: mechclaim_ledger")
    group.addoption("--mechclaim-update-ledger", action="store_true", default=False,
                    help="record new and changed claim statuses in the ledger instead of failing")
    group.addoption("--mechclaim-prune-ledger", action="store_true", default=False,
                    help="with --mechclaim-update-ledger: also remove ledger stages that are no longer collected "
                         "(without it the update refuses to delete them)")
    group.addoption("--mechclaim-ack-spec-change", action="append", default=[], type=parse_ack,
                    metavar="CLAIM_ID:REASON",
                    help="allow CLAIM_ID's status to rise although its spec (thresholds, data, controls) changed in "
                         "this run, or a stage of it to enter while a related ledger stage vanished (rename, moved "
                         "stage); the reason is stored in the ledger. Repeatable")
    group.addoption("--mechclaim-runs-dir", default=None, metavar="DIR",
                    help="where run records are written. ini: mechclaim_runs_dir")
    group.addoption("--mechclaim-strict", action="store_true", default=None,
                    help="fail the session when a claim stage was not judged: skipped without declaring "
                         "requires=('hub'|'cuda'), a missing offline model or package. ini: mechclaim_strict")
    group.addoption("--mechclaim-compare", nargs="?", const="", default=None, metavar="RUN|ledger",
                    help="print how each claim stage's metrics moved against an earlier run (default: the newest "
                         "finished one), a run id, or 'ledger'")
    group.addoption("--mechclaim-compare-fail", action="append", default=[], type=parse_drift_check,
                    metavar="METRIC:TOL",
                    help="fail the session when METRIC moved by more than TOL (a number, or a percentage like 5%%) "
                         "against the --mechclaim-compare baseline (default: the newest finished run). Repeatable")
    group.addoption("--mechclaim-progress", default=None, choices=PROGRESS_MODES,
                    help="report long steps (model conversion, SAE build and checks, nulls): lines (one line per "
                         "finished step, default), live (also when a step starts), off. ini: mechclaim_progress")
    group.addoption("--mechclaim-run-id", default=None, metavar="ID",
                    help="name this run's record (default: UTC time + random suffix); an existing id is an error")
    parser.addini("mechclaim_device", "device for claim models: auto, cpu or cuda", default="auto")
    parser.addini("mechclaim_threads", "torch CPU threads per process (0: cores / xdist workers)", type="int", default=0)
    parser.addini("mechclaim_cache_dir", "cache for converted models and trained SAEs", default=".mechclaim/cache")
    # No default value here, so an ini that names the ledger is told apart from the default path (which may be absent
    # in a new project; an explicitly configured one must exist).
    parser.addini("mechclaim_ledger", f"the claim ledger file, relative to the ini file (default {DEFAULT_LEDGER})",
                  default="")
    parser.addini("mechclaim_runs_dir", "where run records are written, relative to the ini file",
                  default=".mechclaim/runs")
    parser.addini("mechclaim_keep_runs", "run records kept in the runs dir; older finished ones are removed "
                  "(0: keep all)", type="int", default=20)
    parser.addini("mechclaim_progress", "progress of long steps: lines, live or off", default="lines")
    parser.addini("mechclaim_strict", "fail the session when a claim stage was not judged (see --mechclaim-strict)",
                  type="bool", default=False)
    parser.addini("mechclaim_figures", "draw a figure (PNG) for every claim test's report", type="bool", default=True)
    parser.addini("mechclaim_policy_tighten", "evidence policy tightenings, one a line: 'gate.arg = value' raises a "
                  "floor, a bare gate name requires that gate (python -m pytest_mechclaim.policy prints the policy)",
                  type="linelist", default=[])


def parse_ack(text: str) -> tuple[str, str]:
    """``CLAIM_ID:reason`` for --mechclaim-ack-spec-change; both parts required."""
    claim_id, sep, reason = text.partition(":")
    if not sep or not claim_id.strip() or not reason.strip():
        raise argparse.ArgumentTypeError(f"expected CLAIM_ID:REASON with a non-empty reason, got {text!r}")
    return claim_id.strip(), reason.strip()


def _configured_path(config: pytest.Config, option: str, ini: str, default: str = "") -> Path:
    """A CLI path is relative to the invocation directory, an ini path to the ini file (or the rootdir)."""
    value = config.getoption(option)
    if value:
        return (config.invocation_params.dir / value).resolve()
    base = config.inipath.parent if config.inipath else config.rootpath
    return (base / (config.getini(ini) or default)).resolve()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "claim(id, statement, level='candidate', expect='supported', units=(), model=None, hook=None, sae=None): "
        "the mechanism claim this test module or test asserts",
    )
    for stage in STAGES:
        config.addinivalue_line("markers", f"{stage}: claim stage - {STAGE_HELP[stage]}")
    try:
        config.stash[policy_key] = policy_from_lines(config.getini("mechclaim_policy_tighten"))
    except PolicyError as exc:
        raise pytest.UsageError(f"mechclaim_policy_tighten: {exc}") from None
    session = ClaimSession(config)
    config.stash[session_key] = session
    config.pluginmanager.register(session, "mechclaim-session")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(ClaimXdistHooks(session), "mechclaim-xdist")
    session.start_run()


def _where(node) -> str:
    if isinstance(node, pytest.Module):
        return f"module {node.name}"
    if isinstance(node, pytest.Class):
        return f"class {node.name}"
    return "the test itself" if isinstance(node, pytest.Item) else node.nodeid


def _claim_marker_problem(item: pytest.Item) -> str | None:
    marked = list(item.iter_markers_with_node("claim"))
    if not marked:
        return None
    # One claim per test: a test may repeat its module's or class's claim marker, never change it (the ledger keeps
    # one spec per claim id: a refined marker would silently stand for every stage of the claim).
    specs = []
    for node, mark in marked:
        try:
            specs.append((node, parse_claim_marker(mark.args, mark.kwargs)))
        except ClaimSpecError as exc:
            return str(exc) + (f" (the claim marker on {_where(node)})" if len(marked) > 1 else "")
    (first_node, spec), rest = specs[0], specs[1:]
    for node, other in rest:
        if other != spec:
            where = f"on {_where(first_node)}" + ("" if node is first_node else f" and on {_where(node)}")
            return (f"{item.name} has claim markers that disagree, {where} ({'; '.join(spec_differences(spec, other))})"
                    ": one claim marker per test; drop one or make them the same spec")
    item.stash[spec_key] = spec
    problem = check_spec(spec, item.config.stash.get(policy_key, DEFAULT_POLICY))
    if problem:
        return problem
    stages = [s for s in STAGES if item.get_closest_marker(s) is not None]
    if len(stages) > 1:
        return f"claim test {item.name} has several stage markers {stages}; a test is one stage of its claim"
    item.stash[stage_key] = stages[0] if stages else None
    item.stash[ledger_key_key] = ledger_key(item)
    return None


def ledger_key(item: pytest.Item) -> str:
    """Where an item's status goes in the ledger: its stage (plus the parametrization id of a parametrized test);
    a test without a stage marker is recorded under its own name."""
    stages = [s for s in STAGES if item.get_closest_marker(s) is not None]
    if not stages:
        return item.name
    callspec = getattr(item, "callspec", None)
    return "+".join(stages) + (f"[{callspec.id}]" if callspec is not None else "")


class ClaimCollection:
    """The claims collection has seen so far, across every collector of the session: claim id -> (file, node id,
    spec) and (claim id, ledger key) -> node id."""

    def __init__(self) -> None:
        self.claims: dict[str, tuple[str, str, ClaimSpec]] = {}
        self.keys: dict[tuple[str, str], str] = {}

    def problems(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        problems: list[str] = []
        for item in items:
            path = item.path.relative_to(config.rootpath) if item.path.is_relative_to(config.rootpath) else item.path
            problem = _claim_marker_problem(item)
            if problem:
                problems.append(f"{path}: {problem}")
                continue
            spec = item.stash.get(spec_key, None)
            if spec is None:
                continue
            first_path, first_node, first_spec = self.claims.setdefault(spec.id, (str(path), item.nodeid, spec))
            if first_path != str(path):
                problems.append(f"{path}: claim id {spec.id!r} is already declared in {first_path}; claim ids must "
                                "be unique")
            elif first_spec != spec:
                problems.append(f"{path}: claim {spec.id!r} has conflicting specs in {item.nodeid.split('::', 1)[-1]} "
                                f"and {first_node.split('::', 1)[-1]} ({'; '.join(spec_differences(spec, first_spec))})"
                                ": one claim id has one spec")
            key = item.stash[ledger_key_key]
            other = self.keys.setdefault((spec.id, key), item.nodeid)
            if other != item.nodeid:
                problems.append(f"{path}: {item.name} and {other.rpartition('::')[2]} are both stage {key!r} of claim "
                                f"{spec.id!r}; the ledger records one status per claim stage: give each its own stage "
                                "marker or parametrize one test")
        return list(dict.fromkeys(problems))


def _claim_collection(config: pytest.Config) -> ClaimCollection:
    return config.stash.setdefault(collection_key, ClaimCollection())


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    # Claim markers are checked as each collector's items arrive, so a malformed one fails that file's collection:
    # the same clear error serially and in an xdist worker (where a UsageError raised while collecting is an
    # INTERNALERROR on the controller).
    report = yield
    items = [n for n in report.result if isinstance(n, pytest.Item)] if report.passed else []
    problems = _claim_collection(collector.config).problems(collector.config, items) if items else []
    if problems:
        report.outcome = "failed"
        report.longrepr = "malformed claim marker(s):\n  " + "\n  ".join(problems)
        report.result = []
    return report


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The collect reports checked every collected item; an item without a stashed spec whose claim marker came later
    # (another plugin's add_marker) is checked here, where a UsageError is the only way left to refuse it.
    late = [item for item in items if spec_key not in item.stash and item.get_closest_marker("claim") is not None]
    problems = _claim_collection(config).problems(config, late) if late else []
    if problems:
        raise pytest.UsageError("malformed claim marker(s):\n  " + "\n  ".join(problems))


@pytest.fixture
def mechclaim(request: pytest.FixtureRequest) -> MechClaim:
    """The claim's evidence handle: ``record(rows)``, ``gate.<name>(...)``; the verdict is judged after the test."""
    item = request.node
    spec = item.stash.get(spec_key, None)
    if spec is None:
        raise pytest.UsageError(f"{item.nodeid}: the mechclaim fixture needs a claim marker on the test or module")
    from .kinds.frozen import frozen_store  # lazily: the kinds import the engine (torch)

    # Every staged claim test gets the run's frozen-candidate store, hand-written ones too: a later stage's rows are
    # checked against what discovery froze (no new candidate; held-out disjoint from discovery).
    handle = MechClaim(spec, item.stash.get(stage_key, None), item.nodeid,
                       policy=item.config.stash.get(policy_key, DEFAULT_POLICY), frozen=frozen_store(item.config))
    item.stash[handle_key] = handle
    return handle


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    handle = item.stash.get(handle_key, None)
    if handle is None and item.stash.get(spec_key, None) is not None:
        # A claim test that never asked for its evidence handle recorded nothing: passing it would be a silent pass.
        raise ClaimNotJudged(f"{item.nodeid} carries claim {item.stash[spec_key].id!r} but never used the mechclaim "
                             "fixture: a claim test must record its evidence with mechclaim.record(...)")
    if handle is not None:
        verdict = handle.verdict()
        spec = handle.spec
        for g in verdict.gates:
            item.user_properties.append((f"mechclaim.gate.{g.name}.value", g.value))
            item.user_properties.append((f"mechclaim.gate.{g.name}.passed", g.passed))
        item.user_properties.append(("mechclaim.verdict", verdict.status.label))
        if not spec.passes(verdict.status):
            raise ClaimVerdictFailure(claim_report(spec, handle.stage, verdict, item.nodeid), verdict.status)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report: pytest.TestReport = yield
    spec = item.stash.get(spec_key, None)
    if spec is None:
        return report
    handle = item.stash.get(handle_key, None)
    if call.excinfo is not None and isinstance(call.excinfo.value, ClaimVerdictFailure):
        report.longrepr = verdict_longrepr(item.config.option.tbstyle, call.excinfo.value.report, spec,
                                           handle.stage, handle.verdict(), (item.location[0], item.location[1] or 0))
    elif handle is not None and handle.concluded and report.when == "call":
        report.sections.append(("mechclaim", claim_report(spec, handle.stage, handle.verdict(), item.nodeid)))
    # One payload per claim test: from the call phase, or from whichever phase failed before a verdict existed.
    if report.when == "call" or (report.when == "setup" and not report.passed):
        payload = {
            "claim": spec.to_dict(),
            "stage": item.stash.get(stage_key, None),
            "key": item.stash.get(ledger_key_key, None) or ledger_key(item),
            "nodeid": item.nodeid,
            "outcome": report.outcome,
            "verdict": handle.verdict().to_dict() if handle is not None and handle.concluded else None,
            "artifacts": handle.artifacts if handle is not None else {},
            # The claim's evidence debts (policy.py), for the ledger: what it could not show, or waived.
            "debts": (handle.verdict().to_dict()["debts"] if handle is not None and handle.concluded else []),
        }
        if payload["verdict"] is None:
            payload["error"] = (f"{call.excinfo.typename}: {call.excinfo.value}"[:500] if call.excinfo
                                else "the test never used the mechclaim fixture")
        if report.skipped:
            longrepr = report.longrepr
            payload["skip_reason"] = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr))[:500]
        verdict = payload["verdict"] or {"gates": []}
        payload["fingerprint"] = ledger_mod.spec_fingerprint(
            payload["claim"], payload["stage"], handle.gate_calls if handle is not None else (), verdict["gates"],
            handle.rows if handle is not None else (), handle.baseline_rows if handle is not None else (),
            handle.inputs if handle is not None else {}, verdict.get("policy"), _model_identity(spec.model))
        session = item.config.stash[session_key]
        if session.run_dir is not None:
            payload["files"] = write_claim_test(session.run_dir, session.run_id, payload,
                                                handle.rows if handle is not None else (),
                                                handle.baseline_rows if handle is not None else (),
                                                figure=item.config.getini("mechclaim_figures"))
            if report.failed and isinstance(report.longrepr, str):
                report.longrepr += f"\nfull report: {session.run_dir / payload['files']['report_md']}"
        report.user_properties.append((PAYLOAD_KEY, json.dumps(payload, default=str)))
    return report


def _model_identity(name: str | None) -> dict | None:
    """The claim's model as loaded in this process (weights hash, processing, numerics versions), for its spec hash.
    Read only when the models module is already in use, so the plugin itself never imports torch."""
    models = sys.modules.get("pytest_mechclaim.models")
    if name is None or models is None:
        return None
    return models.loaded_identity(name)


def verdict_of(report: pytest.TestReport) -> dict | None:
    for name, value in getattr(report, "user_properties", ()):
        if name == PAYLOAD_KEY:
            return json.loads(value)
    return None


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    payload = verdict_of(report)
    if payload and payload["verdict"] and report.failed and payload["verdict"]["status"] == "blocked":
        # A blocked claim could not be judged: it is an error, not a failure and never a pass.
        return "error", "B", "BLOCKED"
    return None


def summary_rows(records: list[dict]) -> list[list[str]]:
    rows = []
    for rec in sorted(records, key=lambda r: (r["claim"]["id"], r["stage"] or "", r["nodeid"])):
        verdict, skipped = rec["verdict"], rec["outcome"] == "skipped"
        # A skipped claim (its model cannot be had here) has no verdict, and is neither an error nor a pass.
        status = verdict["status"] if verdict else "skipped" if skipped else "error"
        failing = ", ".join([g["name"] for g in verdict["gates"] if not g["passed"]]
                            + [f"debt:{d['gate']}" for d in verdict.get("debts", [])]) if verdict \
            else rec.get("error", "")
        claimed = "rejected" if rec["claim"]["expect"] == "rejected" else rec["claim"]["level"]
        test = "ok" if rec["outcome"] == "passed" else "skip" if skipped else "FAIL"
        rows.append([rec["claim"]["id"], rec["stage"] or "-", claimed, status, test, failing or "-"])
    return rows


class ClaimSession:
    """Collects every claim test's payload (on the xdist controller too), prints the verdict table, keeps the run
    record and, on the controller, reconciles the verdicts with the ledger."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict] = []
        self.is_worker = hasattr(config, "workerinput")
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        self.run: RunRecord | None = None
        self.provenance: dict = {}
        # Claim stages and modules seen at collection, before any deselection: (claim id, ledger key), module ids.
        self.inventory: set[tuple[str, str]] = set()
        self.modules: set[str] = set()
        self._started_modules: set[str] = set()
        self.worker_judged: dict[str, list[str]] = {}
        self.crashed_workers: list[str] = []
        self.reconciliation: ledger_mod.Reconciliation | None = None
        self.problems: list[str] = []
        self.ledger_skipped: str | None = None
        self.internal_error = False
        self.strict = bool(config.getoption("mechclaim_strict") or config.getini("mechclaim_strict"))
        self.strict_failures: list[str] = []
        self.comparison: Comparison | None = None
        self.progress_handler: TerminalProgress | None = None

    # -- run record -------------------------------------------------------------------------------------------

    def start_run(self) -> None:
        config = self.config
        if self.is_worker:
            info = config.workerinput.get(WORKER_INPUT_KEY)
            if info:
                self.run_id, self.run_dir = info["run_id"], Path(info["run_dir"])
            return
        self.ledger_path = _configured_path(config, "mechclaim_ledger", "mechclaim_ledger", DEFAULT_LEDGER)
        explicit = config.getoption("mechclaim_ledger") or config.getini("mechclaim_ledger")
        if explicit and not self.ledger_path.exists() and not config.getoption("mechclaim_update_ledger"):
            # A misspelt path must not silently disable gating (exit 0 with nothing compared).
            raise pytest.UsageError(
                f"the claim ledger {self.ledger_path} does not exist (configured by "
                f"{'--mechclaim-ledger' if config.getoption('mechclaim_ledger') else 'the mechclaim_ledger ini key'});"
                " fix the path, or start a new ledger with --mechclaim-update-ledger")
        if config.getoption("mechclaim_prune_ledger") and not config.getoption("mechclaim_update_ledger"):
            raise pytest.UsageError("--mechclaim-prune-ledger only works with --mechclaim-update-ledger")
        try:
            ledger_mod.load(self.ledger_path)  # a corrupt ledger stops the run before anything is judged
            if config.getoption("mechclaim_update_ledger"):
                ledger_mod.check_writable(self.ledger_path)  # before the claims run, not after
        except ledger_mod.LedgerError as exc:
            raise pytest.UsageError(str(exc)) from None
        runs_dir = _configured_path(config, "mechclaim_runs_dir", "mechclaim_runs_dir")
        self.provenance = provenance(config.rootpath)
        options = {name: config.getoption(name) for name in
                   ("mechclaim_device", "mechclaim_threads", "mechclaim_offline", "mechclaim_cache_dir",
                    "mechclaim_update_ledger", "mechclaim_prune_ledger", "mechclaim_ack_spec_change",
                    "mechclaim_run_id")}
        run_config = {
            "args": list(config.invocation_params.args), "invocation_dir": str(config.invocation_params.dir),
            "rootdir": str(config.rootpath), "inifile": str(config.inipath) if config.inipath else None,
            "markexpr": config.getoption("markexpr", ""), "keyword": config.getoption("keyword", ""),
            "ledger": str(self.ledger_path), "options": options,
            "ini": {name: config.getini(name) for name in
                    ("mechclaim_device", "mechclaim_threads", "mechclaim_cache_dir", "mechclaim_ledger",
                     "mechclaim_runs_dir", "mechclaim_figures")},
        }
        run_id = config.getoption("mechclaim_run_id") or new_run_id()
        try:
            self.run = RunRecord.create(runs_dir, run_id, run_config, self.provenance)
        except RunRecordError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.run_id, self.run_dir = run_id, self.run.path
        # Beside the ledger, not in the runs dir: sessions with different --mechclaim-runs-dir share it.
        self.lock_path = ledger_mod.lock_path_for(self.ledger_path)

    # -- collection inventory (before deselection; used to tell a deselected stage from a removed one) -----------

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        if isinstance(collector, pytest.Module):
            self._started_modules.add(collector.nodeid)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.passed and report.nodeid in self._started_modules:
            self.modules.add(report.nodeid)
        for node in report.result:
            if not isinstance(node, pytest.Item):
                continue
            marker = node.get_closest_marker("claim")
            if marker is not None and marker.args and isinstance(marker.args[0], str):
                self.inventory.add((marker.args[0], ledger_key(node)))

    # -- results --------------------------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = verdict_of(report)
        if payload is not None:
            self.records.append(payload)

    def merge_worker(self, worker_id: str, output: dict) -> None:
        self.inventory |= {tuple(k) for k in output["inventory"]}
        self.modules |= set(output["modules"])
        self.worker_judged[worker_id] = output["judged"]

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        mode = self.config.getoption("mechclaim_progress") or self.config.getini("mechclaim_progress")
        if mode not in PROGRESS_MODES:
            raise pytest.UsageError(f"mechclaim_progress must be one of {list(PROGRESS_MODES)}, got {mode!r}")
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if mode != "off" and reporter is not None:
            self.progress_handler = TerminalProgress(
                reporter, self.config.pluginmanager.get_plugin("capturemanager"), mode)
            progress_logger.addHandler(self.progress_handler)
            if progress_logger.level == logging.NOTSET or progress_logger.level > logging.INFO:
                progress_logger.setLevel(logging.INFO)

    def pytest_internalerror(self, excrepr, excinfo) -> None:
        self.internal_error = True

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            self.config.workeroutput[WORKER_OUTPUT_KEY] = json.dumps({
                "inventory": sorted(self.inventory), "modules": sorted(self.modules),
                "judged": [r["nodeid"] for r in self.records]})
            return
        if self.run is None:
            return
        self.problems += missing_results(self.worker_judged, self.records)
        if self.crashed_workers:
            self.problems.append(f"xdist worker(s) {', '.join(self.crashed_workers)} went down: the claims they had "
                                 "not finished were not judged")
        interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
        crashed = self.internal_error or session.exitstatus == pytest.ExitCode.INTERNAL_ERROR
        judged = [r for r in self.records if r["verdict"] is not None]
        check: dict = {"judged": len(judged), "not_judged": [r["nodeid"] for r in self.records if r["verdict"] is None]}
        if self.strict and not (interrupted or crashed):
            self.strict_failures = strict_failures(self.records)
        if interrupted:
            self.ledger_skipped = "session interrupted: the ledger was neither compared nor updated"
        elif crashed:
            self.ledger_skipped = "internal error: the ledger was neither compared nor updated"
        elif self.problems:
            self.ledger_skipped = "the session lost claim results: the ledger was neither compared nor updated"
        elif self.records:
            try:
                self.reconciliation = ledger_mod.reconcile(
                    self.ledger_path, self.lock_path, judged, self.inventory, self.modules, self._scope(),
                    self.config.rootpath, self.config.getoption("mechclaim_update_ledger"),
                    dict(self.config.getoption("mechclaim_ack_spec_change")), self._run_info(),
                    prune=self.config.getoption("mechclaim_prune_ledger"))
                check.update(self.reconciliation.to_dict())
            except ledger_mod.LedgerError as exc:
                self.problems.append(str(exc))
        check.update(problems=self.problems, skipped=self.ledger_skipped, strict_failures=self.strict_failures)
        wanted = self.config.getoption("mechclaim_compare")
        drift_checks = self.config.getoption("mechclaim_compare_fail")
        if (wanted is not None or drift_checks) and judged and not (interrupted or crashed):
            self.comparison = compare_session(judged, wanted or "", drift_checks, self.run.path.parent, self.run_id,
                                              self._committed_ledger())
        drifted = bool(self.comparison and self.comparison.failed)
        if self.problems or self.strict_failures or drifted or \
                (self.reconciliation is not None and self.reconciliation.failed):
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.records:
            write_json(self.run.path / "verdicts.json",
                       sorted(self.records, key=lambda r: (r["claim"]["id"], r["key"] or "", r["nodeid"])))
            from .run_index import write_run_index  # index.md: every claim test with its figure

            write_run_index(self.run.path, self.records)
            write_json(self.run.path / "ledger-check.json", check)
        if self.records or self.inventory:
            status = ("interrupted" if interrupted else "crashed" if crashed or self.crashed_workers
                      else "incomplete" if self.problems else "complete")
            self.run.finish(session.exitstatus, status)
            prune_runs(self.run.path.parent, self.config.getini("mechclaim_keep_runs"), keep=self.run_id)

    def _committed_ledger(self) -> dict | None:
        try:
            return ledger_mod.load(self.ledger_path)
        except ledger_mod.LedgerError:
            return None

    def _scope(self) -> list[Path]:
        return [self.config.invocation_params.dir / a.split("::")[0] for a in self.config.args]

    def _run_info(self) -> dict:
        prov = self.provenance
        return {"run_id": self.run_id, "date": utc_now(), "commit": prov["git"]["commit"],
                "dirty": prov["git"]["dirty"], "branch": prov["git"]["branch"], "versions": prov["versions"],
                "python": prov["python"]["version"], "platform": f"{prov['machine']['system']}-{prov['machine']['machine']}"}

    # -- terminal -------------------------------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter) -> None:
        verbosity = self.config.get_verbosity()
        if self.records and not self.config.getoption("mechclaim_no_summary"):
            rows = summary_rows(self.records)
            terminalreporter.write_sep("=", f"mechclaim: {len(self.records)} claim verdicts")
            # -q lists only the stages whose test did not pass; -qq only counts them.
            shown = rows if verbosity >= 0 else [r for r in rows if r[4] != "ok"]
            if verbosity >= -1 and shown:
                for line in table(["claim", "stage", "claimed", "verdict", "test", "failing gates"], shown):
                    terminalreporter.write_line(line)
            if verbosity < 0:
                counts = Counter(r[3] for r in rows)
                terminalreporter.write_line(", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
                                            + f"; {sum(r[4] == 'ok' for r in rows)} of {len(rows)} tests ok")
            if verbosity >= -1:
                for line in mechanism_summary(mechanism_table(claims_from_records(self.records))):
                    terminalreporter.write_line(line)
        if self.comparison is not None:
            label = self.comparison.baseline or "-"
            terminalreporter.write_sep("=", f"mechclaim compare against {label}"
                                       + (": FAILED" if self.comparison.failed else ""),
                                       red=bool(self.comparison.failed), bold=bool(self.comparison.failed))
            for line in self.comparison.lines():
                terminalreporter.write_line(line)
            if self.comparison.failed:
                terminalreporter.stats.setdefault("metric-drift", []).extend(
                    SimpleNamespace(kind="metric-drift") for _ in self.comparison.failed)
        lines = self.ledger_lines()
        if lines:
            rec = self.reconciliation
            failed = bool(self.problems) or bool(self.strict_failures) or (rec is not None and rec.failed)
            terminalreporter.write_sep("=", "mechclaim ledger" + (": FAILED" if failed else ""),
                                       red=failed, bold=failed)
            for line in lines if verbosity >= -1 else [l for l in lines if not l.startswith("run record")]:
                terminalreporter.write_line(line)
            # The closing line says why the run failed when every test passed ("3 passed, 3 ledger-changed").
            failures = {"ledger-changed": len(rec.changes) if rec is not None and rec.failed and not rec.update
                        else 0,
                        "ledger-refused": len(rec.refused) if rec is not None and rec.update else 0,
                        "ledger-errors": len(self.problems), "strict-not-judged": len(self.strict_failures)}
            for key, n in failures.items():
                if n:
                    # Objects, not strings: other plugins read ``report.__dict__`` of every stats entry.
                    terminalreporter.stats.setdefault(key, []).extend(SimpleNamespace(kind=key) for _ in range(n))

    def ledger_lines(self) -> list[str]:
        if self.is_worker or self.run is None or not self.records:
            return []
        lines = [f"ERROR {p}" for p in self.problems]
        lines += [f"STRICT   {f}" for f in self.strict_failures]
        not_judged = [r for r in self.records if r["verdict"] is None]
        if not_judged:
            declared = sum(1 for r in not_judged if r["outcome"] == "skipped" and r["claim"].get("requires"))
            lines.append(f"{len(not_judged)} claim test(s) not judged ({declared} skipped for a declared requirement"
                         f"{'' if self.strict else '; --mechclaim-strict fails the others'}): the ledger compares "
                         "only judged stages")
        if self.ledger_skipped:
            lines.append(self.ledger_skipped)
        rec = self.reconciliation
        if rec is not None:
            lines += rec.lines(_display(rec.path, self.config))  # the wording lives with the rules (ledger.py)
        lines.append(f"run record: {_display(self.run.path, self.config)}")
        return lines


def _display(path: Path, config: pytest.Config) -> str:
    try:
        return str(Path(path).relative_to(config.invocation_params.dir))
    except ValueError:
        return str(path)


def strict_failures(records: list[dict]) -> list[str]:
    """Claim tests that were selected and not judged, except skips for what the claim declares it needs
    (``requires=("hub",)``: a model hub or a GPU this machine lacks). A missing offline model or package, a
    fixture error, an undeclared skip: each fails a strict session, so CI never reads "all match" over nothing."""
    out = []
    for rec in sorted(records, key=lambda r: r["nodeid"]):
        if rec["verdict"] is not None:
            continue
        if rec["outcome"] == "skipped" and rec["claim"].get("requires"):
            continue
        why = rec.get("skip_reason") or rec.get("error") or rec["outcome"]
        out.append(f"{rec['nodeid']} was not judged ({rec['outcome']}: {why})")
    return out


def missing_results(worker_judged: dict[str, list[str]], records: list[dict]) -> list[str]:
    """Claim tests a worker says it judged whose payload never reached the controller (the ledger must not be
    written from an incomplete set)."""
    received = {r["nodeid"] for r in records}
    return [f"worker {w} judged {nodeid} but its verdict never reached the controller"
            for w, judged in sorted(worker_judged.items()) for nodeid in judged if nodeid not in received]


class ClaimXdistHooks:
    """Controller-side xdist hooks (registered only when xdist is loaded: its hook names are unknown otherwise)."""

    def __init__(self, session: ClaimSession) -> None:
        self.session = session

    def pytest_configure_node(self, node) -> None:
        if self.session.run_dir is not None:
            node.workerinput[WORKER_INPUT_KEY] = {"run_id": self.session.run_id, "run_dir": str(self.session.run_dir)}

    def pytest_testnodedown(self, node, error) -> None:
        worker_id = node.gateway.id
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if output is not None:
            self.session.merge_worker(worker_id, json.loads(output))
        if error:
            self.session.crashed_workers.append(worker_id)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is None:
        return
    if session.progress_handler is not None:
        progress_logger.removeHandler(session.progress_handler)
    # A run that collected no claim leaves no record; one interrupted during a claim test keeps it (marked).
    if session.run is not None and not session.records and not session.inventory:
        session.run.discard_if_unused()
    for plugin in (session, config.pluginmanager.get_plugin("mechclaim-xdist")):
        if plugin is not None and config.pluginmanager.is_registered(plugin):
            config.pluginmanager.unregister(plugin)
