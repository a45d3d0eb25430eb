"""Fault injection for the claim ledger: kill ``pytest --mechclaim-update-ledger`` at random moments, check the ledger.

    python scripts/fault_inject_ledger.py [--trials 100] [--seed 0] [--xdist-share 0.08] [--keep DIR]

A temporary project holds three planted false claims on synthetic rows (no model, no torch work): each trial
rewrites their evidence (a new target value every trial, so every stage entry changes), starts an update run and sends it SIGKILL or SIGINT (to its process
group, as Ctrl-C would) at a random moment: anywhere in the run, inside the ledger's write window (widened with
MECHCLAIM_TEST_WRITE_DELAY, the kill lands while the temp files exist), or after it finished. Some trials run
under ``-n 2``. After each trial the ledger must:

* load: valid JSON, schema ``pytest-mechclaim/ledger/2``, every digest matching (``ledger.load``);
* be the old ledger byte for byte or entirely the new one (every claim's status and metric from this trial's
  evidence): a mix is a torn update;
* be the new one when the run finished by itself (exit status 0) before the signal: a lost update;
* have a Markdown view equal to the rendering of the JSON (a stale view is counted separately: only a kill between
  the two back-to-back renames can leave one, and the next update renders it again).

Prints one summary line: trials, kills by kind, invalid ledgers, torn and lost updates, stale views. Exit status 1
when any ledger was invalid, torn or lost.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_mechclaim import ledger as L  # noqa: E402

CLAIMS = ("fi-a", "fi-b", "fi-c")
MODULE = '''
import pytest
from pytest_mechclaim.evidence import EvidenceRow

pytestmark = pytest.mark.claim("{claim}", statement="{claim}: L1H0 moves the target", level="insufficient",
                               expect="rejected")


@pytest.mark.heldout
def test_heldout(mechclaim):
    ev = mechclaim.record([EvidenceRow(unit="L1H0", intervention="zero", prompt_id=f"{{f}}-{{s}}-{{i}}", family=f,
                                       control_suite=suite, seed=s, target_delta={target}, control_delta={control},
                                       norm_drift=0.05, prompt=f"prompt {{f}} {{s}} {{i}}")
                           for f in ("h1", "h2") for s in (10, 11) for suite in ("matched", "lexical")
                           for i in range(3)])
    mechclaim.gate.specificity_gap(ev, min=0.1)
    mechclaim.gate.collateral_ratio(ev)
'''


def write_project(root: Path, state: dict) -> None:
    for claim, (target, control) in state.items():
        (root / f"test_{claim.replace('-', '_')}.py").write_text(
            MODULE.format(claim=claim, target=target, control=control))


def expected(state: dict) -> dict:
    """claim -> (status, specificity gap) that a completed update records for ``state``."""
    return {c: ("insufficient" if t > ctl else "falsified", L._round(t - ctl)) for c, (t, ctl) in state.items()}


def recorded(ledger: dict) -> dict:
    return {c: (b["stages"]["heldout"]["status"], b["stages"]["heldout"]["metrics"].get("specificity_gap"))
            for c, b in ledger["claims"].items()}


def spawn(root: Path, xdist: bool, delay: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    if delay:
        env["MECHCLAIM_TEST_WRITE_DELAY"] = delay
    else:
        env.pop("MECHCLAIM_TEST_WRITE_DELAY", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mechclaim-update-ledger"]
    args += ["-p", "xdist", "-n", "2"] if xdist else ["-p", "no:xdist"]
    return subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def reap(proc: subprocess.Popen) -> None:
    """Wait for the run (SIGINT lets pytest unwind); whatever is left after 30 s is SIGKILLed, workers too."""
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        proc.wait()
    kill_group(proc, signal.SIGKILL)  # stray xdist workers of a killed controller


def temps(root: Path) -> list[Path]:
    return list(root.glob(".mechclaim-ledger.*.tmp"))


def trial(root: Path, rng: random.Random, run_seconds: float, xdist: bool) -> dict:
    path = root / "mechclaim-ledger.json"
    old_text = path.read_text()
    # Statuses stay put (a flip falsified <-> insufficient moves the spec hash's gate part today, and a rise with a
    # spec change is refused); the metrics change every trial, so every entry is rewritten.
    state = {c: (round(rng.uniform(0.3, 0.95), 4), 0.1) for c in CLAIMS}
    write_project(root, state)
    sig = rng.choice((signal.SIGKILL, signal.SIGINT))
    moment = rng.choices(("anywhere", "write-window", "after-exit"), weights=(35, 45, 20))[0]
    before = set(temps(root))
    delay = f"{rng.uniform(0.2, 0.6):.2f}" if moment == "write-window" else None
    proc = spawn(root, xdist, delay)
    finished_first = False
    if moment == "anywhere":
        time.sleep(rng.uniform(0.0, run_seconds * (2.0 if xdist else 1.2)))
    elif moment == "write-window":
        deadline = time.monotonic() + 60
        while not (set(temps(root)) - before) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, float(delay)))
    else:
        proc.wait(120)
    if proc.poll() is not None:
        finished_first = proc.returncode == 0
    inside = proc.poll() is None and bool(set(temps(root)) - before)  # this run's temp files exist right now
    kill_group(proc, sig)
    reap(proc)
    result = {"signal": signal.Signals(sig).name, "moment": moment, "xdist": xdist, "finished_first": finished_first,
              "inside_write": inside, "invalid": False, "torn": False,
              "lost": False, "stale_md": False, "changed": False}
    try:
        ledger = L.load(path)
    except L.LedgerError as exc:
        result.update(invalid=True, error=str(exc)[:300])
        return result
    new_text = path.read_text()
    result["changed"] = new_text != old_text
    if result["changed"] and recorded(ledger) != expected(state):
        result["torn"] = True
    if finished_first and recorded(ledger) != expected(state):
        result["lost"] = True
    result["stale_md"] = not L.markdown_is_current(path, ledger)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xdist-share", type=float, default=0.08, help="share of trials run under -n 2")
    parser.add_argument("--keep", default=None, metavar="DIR", help="build the project in DIR and keep it")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mechclaim-fault-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "tox.ini").write_text("[pytest]\nmechclaim_figures = false\n")
    write_project(root, {c: (0.9, 0.1) for c in CLAIMS})
    start = time.monotonic()
    first = spawn(root, False, None)
    if first.wait(300) != 0:
        print("fault_inject_ledger: the initial update run failed; is pytest-mechclaim installed?", file=sys.stderr)
        return 2
    run_seconds = time.monotonic() - start
    results = []
    try:
        for n in range(args.trials):
            results.append(trial(root, rng, run_seconds, rng.random() < args.xdist_share))
            bad = results[-1]
            if bad["invalid"] or bad["torn"] or bad["lost"]:
                print(f"trial {n}: {json.dumps(bad)}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    kinds = collections.Counter(f"{r['signal']}@{r['moment']}" for r in results)
    summary = {
        "trials": len(results),
        "kills": dict(sorted(kinds.items())),
        "xdist_trials": sum(r["xdist"] for r in results),
        "finished_before_signal": sum(r["finished_first"] for r in results),
        "signalled_inside_write": sum(r["inside_write"] for r in results),
        "ledger_changed": sum(r["changed"] for r in results),
        "invalid_ledgers": sum(r["invalid"] for r in results),
        "torn_updates": sum(r["torn"] for r in results),
        "lost_updates": sum(r["lost"] for r in results),
        "stale_markdown": sum(r["stale_md"] for r in results),
        "seconds": round(time.monotonic() - start, 1),
    }
    print("fault_inject_ledger: " + json.dumps(summary))
    return 1 if summary["invalid_ledgers"] or summary["torn_updates"] or summary["lost_updates"] else 0


if __name__ == "__main__":
    sys.exit(main())
