"""pytest glue: options, markers, the ``mechclaim`` fixture, verdict reporting. Knows nothing about models.

State lives on ``config.stash`` (one ClaimSession) and ``item.stash`` (the claim spec, the handle). Each claim
test's verdict travels on its report as ``user_properties`` (JSON-able, so JUnit XML and xdist carry it); the
controller collects them in ``pytest_runtest_logreport`` and prints one summary table.
"""

from __future__ import annotations

import json

import pytest

from .fixture import MechClaim
from .report import claim_report, table
from .spec import STAGE_HELP, STAGES, ClaimSpec, ClaimSpecError, parse_claim_marker
from .status import Status

PAYLOAD_KEY = "mechclaim"
KNOWN_DEPRECATIONS = (
    "HookedTransformer is deprecated",
    "The 'sae_lens.util' module",
)


session_key = pytest.StashKey["ClaimSession"]()
spec_key = pytest.StashKey[ClaimSpec]()
stage_key = pytest.StashKey["str | None"]()
handle_key = pytest.StashKey[MechClaim]()


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
    parser.addini("mechclaim_device", "device for claim models: auto, cpu or cuda", default="auto")
    parser.addini("mechclaim_threads", "torch CPU threads per process (0: cores / xdist workers)", type="int", default=0)
    parser.addini("mechclaim_cache_dir", "cache for converted models and trained SAEs", default=".mechclaim/cache")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "claim(id, statement, level='candidate', expect='supported', units=(), model=None, hook=None, sae=None): "
        "the mechanism claim this test module or test asserts",
    )
    for stage in STAGES:
        config.addinivalue_line("markers", f"{stage}: claim stage - {STAGE_HELP[stage]}")
    # TL 3.9 deprecates HookedTransformer in favour of TL 4's bridge, but sae-lens 6 needs TL < 4: filter exactly
    # these notices, nothing else.
    for message in KNOWN_DEPRECATIONS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")
    session = ClaimSession(config)
    config.stash[session_key] = session
    config.pluginmanager.register(session, "mechclaim-session")


def _claim_marker_problem(item: pytest.Item) -> str | None:
    markers = list(item.iter_markers("claim"))
    if not markers:
        return None
    # The closest marker wins (a test may refine its module's claim); more than one on one node is ambiguous.
    try:
        item.stash[spec_key] = parse_claim_marker(markers[0].args, markers[0].kwargs)
    except ClaimSpecError as exc:
        return str(exc)
    stages = [s for s in STAGES if item.get_closest_marker(s) is not None]
    if len(stages) > 1:
        return f"claim test {item.name} has several stage markers {stages}; a test is one stage of its claim"
    item.stash[stage_key] = stages[0] if stages else None
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    problems: list[str] = []
    claim_files: dict[str, str] = {}
    for item in items:
        problem = _claim_marker_problem(item)
        path = item.path.relative_to(config.rootpath) if item.path.is_relative_to(config.rootpath) else item.path
        if problem:
            problems.append(f"{path}: {problem}")
            continue
        spec = item.stash.get(spec_key, None)
        if spec is None:
            continue
        first = claim_files.setdefault(spec.id, str(path))
        if first != str(path):
            problems.append(f"{path}: claim id {spec.id!r} is already declared in {first}; claim ids must be unique")
    if problems:
        raise pytest.UsageError("malformed claim marker(s):\n  " + "\n  ".join(dict.fromkeys(problems)))


@pytest.fixture
def mechclaim(request: pytest.FixtureRequest, record_property) -> MechClaim:
    """The claim's evidence handle: ``record(rows)``, ``gate.<name>(...)``; the verdict is judged after the test."""
    item = request.node
    spec = item.stash.get(spec_key, None)
    if spec is None:
        raise pytest.UsageError(f"{item.nodeid}: the mechclaim fixture needs a claim marker on the test or module")
    handle = MechClaim(spec, item.stash.get(stage_key, None), item.nodeid)
    item.stash[handle_key] = handle
    return handle


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    handle = item.stash.get(handle_key, None)
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
        report.longrepr = call.excinfo.value.report
    elif handle is not None and handle.concluded and report.when == "call":
        report.sections.append(("mechclaim", claim_report(spec, handle.stage, handle.verdict(), item.nodeid)))
    # One payload per claim test: from the call phase, or from whichever phase failed before a verdict existed.
    if report.when == "call" or (report.failed and report.when == "setup"):
        payload = {
            "claim": spec.to_dict(),
            "stage": item.stash.get(stage_key, None),
            "nodeid": item.nodeid,
            "outcome": report.outcome,
            "verdict": handle.verdict().to_dict() if handle is not None and handle.concluded else None,
            "artifacts": handle.artifacts if handle is not None else {},
        }
        if payload["verdict"] is None:
            payload["error"] = (f"{call.excinfo.typename}: {call.excinfo.value}"[:500] if call.excinfo
                                else "the test never used the mechclaim fixture")
        report.user_properties.append((PAYLOAD_KEY, json.dumps(payload, default=str)))
    return report


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
        verdict = rec["verdict"]
        status = verdict["status"] if verdict else "error"
        failing = ", ".join(g["name"] for g in verdict["gates"] if not g["passed"]) if verdict else rec.get("error", "")
        claimed = "rejected" if rec["claim"]["expect"] == "rejected" else rec["claim"]["level"]
        rows.append([rec["claim"]["id"], rec["stage"] or "-", claimed, status,
                     "ok" if rec["outcome"] == "passed" else "FAIL", failing or "-"])
    return rows


class ClaimSession:
    """Collects every claim test's payload (on the xdist controller too) and prints the verdict table."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = verdict_of(report)
        if payload is not None:
            self.records.append(payload)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.records or self.config.getoption("mechclaim_no_summary"):
            return
        terminalreporter.write_sep("=", f"mechclaim: {len(self.records)} claim verdicts")
        for line in table(["claim", "stage", "claimed", "verdict", "test", "failing gates"],
                          summary_rows(self.records)):
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None and config.pluginmanager.is_registered(session):
        config.pluginmanager.unregister(session)
