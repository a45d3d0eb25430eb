"""Run records: one directory per pytest session that judged a claim, never overwritten.

    .mechclaim/runs/<run_id>/
        run.json            run id, status (incomplete -> complete | interrupted), start/finish, argv, exit status
        config.json         how the session was invoked: args, selection, mechclaim options and ini values
        provenance.json     machine, python, git commit + dirty flag + diff hash, library versions
        verdicts.json       every claim test's payload (claim, stage, outcome, verdict with all gate results)
        ledger-check.json   the comparison with the committed ledger (changes, refusals, what was written)
        claims/<claim_id>/<ledger key>/   (a key that is not a plain name gets a hash suffix: claim_dir_name)
            rows.jsonl      every evidence row the test recorded (written by the process that ran the test)
            baseline.jsonl  baseline rows, when any
            report.md, report.json, figure.png

The controller creates the directory (``mkdir`` without ``exist_ok``: an existing run id is an error, so a run can
never overwrite another) and marks it incomplete; only a session that reaches its end marks it complete, so a run
killed mid-way is recognisable. Workers write only their own per-claim-test directories.

Every file is written atomically: a temporary file in the same directory, flushed and fsynced, then ``os.replace``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,119}$")
# Distributions whose versions decide what a verdict means (models, SAEs, numerics, the test runner).
VERSIONED = ("pytest-mechclaim", "pytest", "pytest-xdist", "torch", "transformer-lens", "sae-lens", "numpy",
             "scipy", "matplotlib", "transformers", "tokenizers", "gguf", "safetensors", "huggingface-hub")
HEADER_FILES = ("run.json", "config.json", "provenance.json")
RUN_STATUSES = ("complete", "interrupted", "crashed", "incomplete")
# Test hook: seconds to sleep between writing a temporary file and moving it into place (crash-safety tests
# kill the process inside this window).
WRITE_DELAY_ENV = "MECHCLAIM_TEST_WRITE_DELAY"


class RunRecordError(Exception):
    """A run directory that cannot be created (id collision, malformed id)."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """UTC start time to the microsecond, then a random suffix: name order is start order (retention and
    ``--mechclaim-compare`` pick runs by it), even for sessions started within one second."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "_" + secrets.token_hex(4)


def atomic_write_bytes(path: Path, data: bytes, delay_env: bool = False) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if delay_env and os.environ.get(WRITE_DELAY_ENV):
            import time

            time.sleep(float(os.environ[WRITE_DELAY_ENV]))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, delay_env: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), delay_env=delay_env)


def atomic_write_texts(files: list[tuple[Path, str]], delay_env: bool = False) -> None:
    """Write several files that belong together (the ledger and its Markdown view): every temporary file is
    written and fsynced first, so nothing is moved into place unless all of them could be written; then they are
    moved in the given order, back to back. Each writer removes only its own temporary files."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        if delay_env and os.environ.get(WRITE_DELAY_ENV):
            import time

            time.sleep(float(os.environ[WRITE_DELAY_ENV]))
        for tmp, path in temps:
            os.replace(tmp, path)
        for parent in {path.parent for _, path in temps}:
            _fsync_dir(parent)
    except BaseException:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable (a power cut after ``os.replace`` must not bring the old file back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _git(rootdir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=rootdir, capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace")


def commit_info(rootdir: Path) -> dict:
    """HEAD commit, branch, and whether the tree is dirty (with a hash of the diff, so two dirty runs of different
    edits are told apart). All None outside a git checkout."""
    commit = _git(rootdir, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "branch": None, "dirty": None, "diff_hash": None}
    status = _git(rootdir, "status", "--porcelain", "--untracked-files=no") or ""
    dirty = bool(status.strip())
    diff = _git(rootdir, "diff", "HEAD", "--binary") if dirty else None
    return {
        "commit": commit.strip(),
        "branch": (_git(rootdir, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "dirty": dirty,
        "diff_hash": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


def library_versions() -> dict:
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def provenance(rootdir: Path) -> dict:
    return {
        "machine": {"node": platform.node(), "system": platform.system(), "release": platform.release(),
                    "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "git": commit_info(rootdir),
        "versions": library_versions(),
    }


# One path component per claim id / ledger key: at most this long, so a long parametrize id cannot exceed NAME_MAX.
MAX_DIR_NAME = 100
SAFE_DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HASHED_DIR_NAME = re.compile(r"-[0-9a-f]{8}$")


def claim_dir_name(text: str) -> str:
    """A file-system-safe, length-bounded directory name for a claim id or ledger key, distinct for distinct keys.

    A safe key (letters, digits, ``._-``, starting with a letter or digit, <= MAX_DIR_NAME) is its own name. Any
    other key is sanitized, cut and suffixed with 8 hex digits of its SHA-256: ``heldout[a/b]``, ``heldout[a_b]``,
    ``heldout[a b]`` and ``heldout[a:b]`` all sanitize to ``heldout_a_b_`` but get different suffixes. A safe key
    that itself ends like a suffix is suffixed too, so it cannot take another key's name.
    """
    if SAFE_DIR_NAME.match(text) and len(text) <= MAX_DIR_NAME and not HASHED_DIR_NAME.search(text):
        return text
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    safe = re.sub(r"^[._-]+", lambda m: "_" * len(m.group()), safe)  # never ".", ".." or a hidden directory
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:MAX_DIR_NAME - 9] or '_'}-{digest}"


class RunRecord:
    """One run directory. ``create`` reserves it (collision = error); ``finish`` marks it complete."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id

    @classmethod
    def create(cls, runs_dir: Path, run_id: str, config: dict, prov: dict) -> "RunRecord":
        if not RUN_ID.match(run_id):
            raise RunRecordError(f"run id {run_id!r} is malformed: use 1-120 letters, digits, '.', '_' or '-'")
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        path = runs_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise RunRecordError(f"run id {run_id!r} already exists at {path}; run records are never overwritten. "
                                 "Choose another --mechclaim-run-id (or leave it out for a fresh one).") from None
        record = cls(path, run_id)
        write_json(path / "run.json", {"run_id": run_id, "status": "incomplete", "started_at": utc_now(),
                                       "finished_at": None, "exitstatus": None, "argv": sys.argv})
        write_json(path / "config.json", config)
        write_json(path / "provenance.json", prov)
        return record

    def read(self, name: str):
        return json.loads((self.path / name).read_text())

    def finish(self, exitstatus: int, status: str) -> None:
        """``status``: complete | interrupted (Ctrl-C) | crashed (INTERNALERROR, a lost xdist worker) |
        incomplete (claim results lost). A run killed outright stays ``incomplete`` from ``create``."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        run = self.read("run.json")
        run.update(status=status, finished_at=utc_now(), exitstatus=int(exitstatus))
        write_json(self.path / "run.json", run)

    def discard_if_unused(self) -> bool:
        """Remove a reserved run directory that no claim test wrote into (a run of plain tests, ``--help``)."""
        names = {p.name for p in self.path.iterdir()}
        if names - set(HEADER_FILES):
            return False
        shutil.rmtree(self.path)
        # A project without claims keeps no trace: the runs dir (and a .mechclaim parent) go too when empty.
        runs_dir = self.path.parent
        for folder in (runs_dir, runs_dir.parent) if runs_dir.parent.name == ".mechclaim" else (runs_dir,):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break
        return True


# A run still marked incomplete this long after it started is a killed session, not one in progress.
STALE_INCOMPLETE_SECONDS = 24 * 3600


def prune_runs(runs_dir: Path, keep_last: int, keep: str | None = None) -> list[str]:
    """Remove the oldest run records beyond the newest ``keep_last`` (0: keep all). Never ``keep`` (this session's),
    never a run that may still be in progress elsewhere (incomplete and younger than a day): another session, with
    its own lock-free run directory, could be writing into it. Returns the removed run ids."""
    if keep_last <= 0 or not Path(runs_dir).is_dir():
        return []
    import time

    runs = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and RUN_ID.match(p.name))
    removed = []
    for path in runs[:max(len(runs) - keep_last, 0)]:
        if path.name == keep:
            continue
        try:
            status = json.loads((path / "run.json").read_text()).get("status")
        except (OSError, ValueError):
            status = None
        if status in (None, "incomplete") and time.time() - path.stat().st_mtime < STALE_INCOMPLETE_SECONDS:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def claim_test_dir(run_dir: Path, claim_id: str, key: str) -> Path:
    return Path(run_dir) / "claims" / claim_dir_name(claim_id) / claim_dir_name(key)


def write_jsonl(path: Path, records) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records))


def write_claim_test(run_dir: Path, run_id: str, payload: dict, rows, baseline_rows=(), figure: bool = True) -> dict:
    """Write one claim test's evidence and reports into its own directory; returns the paths, relative to the
    run directory. Called by the process that ran the test (an xdist worker writes only its own tests' files)."""
    from .figures import claim_figure
    from .report import claim_report_data, claim_report_markdown

    rows, baseline_rows = list(rows), list(baseline_rows)
    out = claim_test_dir(run_dir, payload["claim"]["id"], payload["key"])
    out.mkdir(parents=True, exist_ok=True)
    files = {"rows": out / "rows.jsonl", "report_json": out / "report.json", "report_md": out / "report.md"}
    write_jsonl(files["rows"], (r.to_dict() for r in rows))
    if baseline_rows:
        files["baseline"] = out / "baseline.jsonl"
        write_jsonl(files["baseline"], (r.to_dict() for r in baseline_rows))
    data = claim_report_data(payload, rows, baseline_rows, run_id)
    if figure and payload.get("verdict") is not None:
        stage = f" [{payload['stage']}]" if payload.get("stage") else ""
        files["figure"] = claim_figure(
            rows, f"{payload['claim']['id']}{stage}: {payload['verdict']['status']}", out / "figure.png",
            payload=payload)
    write_json(files["report_json"], data)
    atomic_write_text(files["report_md"], claim_report_markdown(data, files["figure"].name if "figure" in files else None))
    return {k: str(Path(v).relative_to(run_dir)) for k, v in files.items()}
