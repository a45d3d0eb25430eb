"""Regenerate docs/examples/ from a real run of the ground-truth claims (no SmolLM2, no GPU; about a minute).

    python scripts/make_examples.py            # from the repository root

Runs claims/test_groundtruth_induction.py and claims/test_groundtruth_decoy.py into a temporary runs directory,
then copies each chosen claim test's report.md, report.json and figure.png to docs/examples/<claim>/<stage>/ and
the run's index.md to docs/examples/index.md (its links rewritten for that layout). rows.jsonl is left out
(~0.5 MB per test). The committed ledger is neither read for updates nor written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
CLAIM_FILES = ("claims/test_groundtruth_induction.py", "claims/test_groundtruth_decoy.py")
# The true induction head and the planted false claim (a decoy head with the same attention pattern).
CHOSEN = ("gt-induction-L1H0", "gt-decoy-L1H1")
COPIED = ("report.md", "report.json", "figure.png")
RUN_ID = "docs-examples"


def run_claims(runs_dir: Path) -> Path:
    cmd = [sys.executable, "-m", "pytest", *CLAIM_FILES, "-p", "no:cacheprovider", "-q",
           f"--mechclaim-runs-dir={runs_dir}", f"--mechclaim-run-id={RUN_ID}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    run_dir = runs_dir / RUN_ID
    if not (run_dir / "verdicts.json").is_file():
        sys.exit(f"the claims wrote no verdicts (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    if done.returncode != 0:
        print(f"note: pytest exited {done.returncode}; the examples show whatever the claims concluded",
              file=sys.stderr)
    return run_dir


def copy_examples(run_dir: Path) -> list[Path]:
    records = json.loads((run_dir / "verdicts.json").read_text())
    chosen = [r for r in records if r["claim"]["id"] in CHOSEN]
    missing = sorted(set(CHOSEN) - {r["claim"]["id"] for r in chosen})
    if missing:
        sys.exit(f"the run has no claim tests for {missing}")
    for claim in CHOSEN:
        shutil.rmtree(EXAMPLES / claim, ignore_errors=True)  # no stale stage folders
    written = []
    for r in chosen:
        source = run_dir / Path(r["files"]["report_md"]).parent
        target = EXAMPLES / source.relative_to(run_dir / "claims")
        target.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            shutil.copyfile(source / name, target / name)
            written.append(target / name)
    # The index links claims/<claim>/<stage>/...; the examples keep <claim>/<stage>/ directly under docs/examples.
    index = (run_dir / "index.md").read_text().replace("](<claims/", "](<")
    (EXAMPLES / "index.md").write_text(index)
    written.append(EXAMPLES / "index.md")
    return written


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mechclaim-examples-") as tmp:
        run_dir = run_claims(Path(tmp))
        for path in copy_examples(run_dir):
            print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
