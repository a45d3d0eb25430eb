"""The claim ledger's Markdown view (``mechclaim-ledger.md``), rendered from the JSON on every write.

Everything that comes from a claim (statement, ids, nodeids, reasons) is escaped: HTML entities for ``<>&`` and
backslashes for Markdown's inline syntax, one line per value, so a statement cannot inject a tag, a link or a table
row into the view.
"""

from __future__ import annotations

import html
import re
from pathlib import Path


def markdown_path(path: Path) -> Path:
    return Path(path).with_suffix(".md")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]()#|~!{}])")
_MD_LINE_START = re.compile(r"^(\s*)([-+>=]|\d+[.)])")


def md_text(value) -> str:
    """Plain text for the Markdown view: one line (a newline in a statement cannot end its quote or table row),
    HTML escaped (no tag or entity from a claim gets rendered), Markdown's inline syntax backslash-escaped."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def md_code(value) -> str:
    """A code span (nodeids, hashes, run ids); text with a backtick falls back to escaped plain text."""
    text = " ".join(str(value).split())
    if "`" in text:
        return md_text(text)
    return "`" + text.replace("|", "\\|") + "`"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return md_text(value)


def _thresholds_line(thresholds: dict) -> str:
    def one(value) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{md_text(k)} {_cell(v)}" for k, v in sorted(value.items())) or "defaults"
        return _cell(value)

    return "; ".join(f"{md_text(name)} {one(value)}" for name, value in sorted(thresholds.items()))


def render_markdown(ledger: dict, json_name: str = "mechclaim-ledger.json") -> str:
    claims = ledger["claims"]
    lines = [
        "# Claim ledger",
        "",
        f"Rendered from {md_code(json_name)} by pytest-mechclaim. Do not edit either file by hand: "
        "`pytest --mechclaim-update-ledger` rewrites both.",
        "",
        "| claim | status | claimed | stages |",
        "|---|---|---|---|",
    ]
    for claim_id, c in sorted(claims.items()):
        planted = " (planted false claim: expect rejected)" if c.get("expect") == "rejected" else ""
        claimed = f"{c['claimed']}{planted}"
        stages = ", ".join(f"{md_text(k)}: {e['status']}" for k, e in sorted(c["stages"].items()))
        lines.append(f"| [{md_text(claim_id)}](#{claim_id.lower()}) | **{c['status']}** | {claimed} | {stages} |")
    from .mechanisms import markdown_lines, mechanism_table

    mechanisms = markdown_lines(mechanism_table(claims), md_text)
    if mechanisms:
        lines += [""] + mechanisms[:-1]
    for claim_id, c in sorted(claims.items()):
        lines += ["", f"## {md_text(claim_id)}", "", f"> {md_text(c['statement'])}", "",
                  f"- status: **{c['status']}** (the weakest recorded stage)",
                  f"- claimed: {c['claimed']}, expect {c.get('expect', 'supported')}"]
        for key in ("model", "hook", "sae", "mechanism"):
            if c.get(key):
                lines.append(f"- {key}: {md_code(c[key])}")
        if c.get("units"):
            lines.append(f"- units: {', '.join(md_text(u) for u in c['units'])}")
        lines += ["", "| stage | status | test | failing gates | spec hash | run | date | commit |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, e in sorted(c["stages"].items()):
            run = e["run"]
            commit = (run.get("commit") or "-")[:10]
            lines.append(f"| {md_text(key)} | {e['status']} | {md_code(e['test']['nodeid'])} "
                         f"({md_text(e['test']['outcome'])}) | "
                         f"{', '.join(md_text(g) for g in e['failing_gates']) or '-'} | {md_code(e['spec_hash'])} | "
                         f"{md_code(run['id'])} | {md_text(run['date'])} | {md_text(commit)} |")
        thresholds = [(k, e["thresholds"]) for k, e in sorted(c["stages"].items()) if e.get("thresholds")]
        if thresholds:
            lines += ["", "Gate thresholds:"] + [f"- {md_text(k)}: {_thresholds_line(t)}" for k, t in thresholds]
        gate_names = sorted({g for e in c["stages"].values() for g in e["metrics"]})
        if gate_names:
            keys = sorted(c["stages"])
            lines += ["", "| gate | " + " | ".join(md_text(k) for k in keys) + " |", "|---|" + "---|" * len(keys)]
            for g in gate_names:
                lines.append(f"| {md_text(g)} | "
                             + " | ".join(_cell(c["stages"][k]["metrics"].get(g)) for k in keys) + " |")
        lines += ["", "Allowed wording: " + ", ".join(f'"{md_text(p)}"' for p in c["allowed"]),
                  "", "Forbidden wording: " + ", ".join(f'"{md_text(p)}"' for p in c["forbidden"])]
        acks = [(k, a) for k, e in sorted(c["stages"].items()) for a in e.get("acknowledged_spec_changes", [])]
        if acks:
            lines += ["", "Acknowledged changes (status rose while the spec changed, or entered as a related stage "
                          "vanished):"]
            for k, a in acks:
                what = ", ".join(md_text(p) for p in a["changed_parts"])
                if a.get("replaces"):
                    what = "; ".join(filter(None, (what, "replaces " + ", ".join(md_text(r) for r in a["replaces"]))))
                lines.append(f"- {md_text(k)}: {a['from_status'] or 'new'} -> {a['to_status']} ({what or '-'}), "
                             f"run {md_code(a['run'])} {md_text(a['date'])}: {md_text(a['reason'])}")
    if ledger.get("runs"):
        lines += ["", "## Runs", "", "| run | date | commit | dirty | python | torch | transformer-lens | sae-lens |",
                  "|---|---|---|---|---|---|---|---|"]
        for run_id, r in sorted(ledger["runs"].items()):
            v = r.get("versions") or {}
            lines.append(f"| {md_code(run_id)} | {_cell(r.get('date'))} | {md_text((r.get('commit') or '-')[:10])} | "
                         f"{_cell(r.get('dirty'))} | {_cell(r.get('python'))} | {_cell(v.get('torch'))} | "
                         f"{_cell(v.get('transformer-lens'))} | {_cell(v.get('sae-lens'))} |")
    return "\n".join(lines) + "\n"
