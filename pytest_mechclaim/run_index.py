"""The per-run index: ``.mechclaim/runs/<run id>/index.md``, one page listing every claim test of the run.

Written by the controller at session end from the same payload dicts it writes to verdicts.json: a table (claim,
stage, claimed, verdict, test outcome, failing gates, link to report.md), then each claim test's figure inline.
Links are relative to the run directory, so the page renders wherever the run directory is copied.
"""

from __future__ import annotations

from pathlib import Path

from .report import md_code, md_text
from .runs import atomic_write_text

INDEX_NAME = "index.md"
MAX_FAILING_SHOWN = 6  # the table cell stays one line; report.md lists every gate


def _sort_key(record: dict) -> tuple:
    return (record["claim"]["id"], record.get("key") or "", record["nodeid"])


def _claimed(claim: dict) -> str:
    return "planted false (expect rejected)" if claim.get("expect") == "rejected" else str(claim.get("level"))


def _failing(verdict: dict | None) -> str:
    if verdict is None:
        return "-"
    names = [g["name"] for g in verdict.get("gates", []) if not g.get("passed")]
    if not names:
        return "none"
    shown = ", ".join(md_text(n) for n in names[:MAX_FAILING_SHOWN])
    return f"{shown} (+{len(names) - MAX_FAILING_SHOWN} more)" if len(names) > MAX_FAILING_SHOWN else shown


def _link(path: str | None, text: str) -> str:
    # Run-relative paths are claim_dir_name()-safe (letters, digits, ._-); <...> keeps any other character literal.
    return f"[{text}](<{path}>)" if path else "-"


def run_index_markdown(run_id: str, records: list[dict]) -> str:
    records = sorted(records, key=_sort_key)
    judged = [r for r in records if r.get("verdict") is not None]
    failed = [r for r in records if r.get("outcome") == "failed"]
    lines = [f"# Run {md_code(run_id)}", "",
             f"{len(records)} claim test(s): {len(judged)} judged, {len(records) - len(judged)} not judged; "
             f"{len(failed)} test(s) failed.", "",
             "| claim | stage | claimed | verdict | test | failing gates | report |", "|---|---|---|---|---|---|---|"]
    for r in records:
        verdict = r.get("verdict")
        status = verdict["status"].upper() if verdict else "NOT JUDGED"
        files = r.get("files") or {}
        lines.append(f"| {md_text(r['claim']['id'])} | {md_text(r.get('stage') or '-')} | {md_text(_claimed(r['claim']))} "
                     f"| **{status}** | {md_text(r.get('outcome'))} | {_failing(verdict)} "
                     f"| {_link(files.get('report_md'), 'report.md')} |")
    from .mechanisms import claims_from_records, markdown_lines, mechanism_table

    mechanisms = markdown_lines(mechanism_table(claims_from_records(records)), md_text)
    if mechanisms:
        lines += [""] + mechanisms[:-1]
    for r in records:
        verdict, files = r.get("verdict"), r.get("files") or {}
        name = md_text(r["claim"]["id"] + (f" [{r['stage']}]" if r.get("stage") else ""))
        status = verdict["status"].upper() if verdict else "NOT JUDGED"
        lines += ["", f"## {name}: {status}", "",
                  f"> {md_text(r['claim'].get('statement', ''))}", "",
                  f"Test {md_code(r['nodeid'])}: **{md_text(r.get('outcome'))}**; "
                  f"{_link(files.get('report_md'), 'full report')}.", ""]
        if files.get("figure"):
            lines.append(f"![figure of {name}](<{files['figure']}>)")
        elif verdict is None:
            lines.append(f"Not judged: {md_text(r.get('error') or r.get('skip_reason') or 'no verdict')}")
        else:
            lines.append("No figure (figures are off: mechclaim_figures = false).")
    return "\n".join(lines) + "\n"


def write_run_index(run_dir: Path, records: list[dict]) -> Path:
    """Write ``index.md`` into ``run_dir`` (atomically) and return its path."""
    path = Path(run_dir) / INDEX_NAME
    atomic_write_text(path, run_index_markdown(Path(run_dir).name, records))
    return path
