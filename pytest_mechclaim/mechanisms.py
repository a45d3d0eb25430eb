"""Mechanisms across models: the claims that declare one ``mechanism=`` id, side by side by model, and the
cross-model verdict over their held-out stages (``gates.cross_model_replication``).

Computed from the ledger's claim blocks (or a run's records shaped like them), so the ledger's Markdown view, the
run index and the terminal summary show the same table, and nothing in it can disagree with the per-claim entries.
"""

from __future__ import annotations

from .gates import ModelVerdict, cross_model_replication
from .status import Status

HELDOUT = "heldout"
SHOWN_STAGES = ("replication", "heldout", "characterization")


def _heldout(stages: dict) -> tuple[str | None, bool]:
    """The weakest held-out stage (``heldout`` and ``heldout[case]``) and whether it is strong but for a requirement
    judged across claims."""
    entries = [e for key, e in stages.items() if key == HELDOUT or key.startswith(HELDOUT + "[")]
    if not entries:
        return None, False
    weakest = min(entries, key=lambda e: Status.parse(e["status"]))
    return weakest["status"], all(e.get("strong_pending") for e in entries)


def mechanism_table(claims: dict) -> dict:
    """{mechanism id: {"models": {model: {"claim", "units", "stages": {stage: status}, "heldout"}}, "verdict": gate
    result dict}} for every mechanism some claim declares. Two claims of one mechanism on one model are a
    declaration error, reported as a blocked verdict (which of them is the mechanism's is not decidable)."""
    grouped: dict[str, dict[str, list]] = {}
    for claim_id, block in sorted(claims.items()):
        if block.get("mechanism"):
            grouped.setdefault(block["mechanism"], {}).setdefault(block.get("model") or "?", []).append(
                (claim_id, block))
    table = {}
    for mechanism, by_model in sorted(grouped.items()):
        models, verdicts, duplicated = {}, {}, []
        for model, entries in sorted(by_model.items()):
            if len(entries) > 1:
                duplicated.append(f"{model}: {', '.join(c for c, _ in entries)}")
            claim_id, block = entries[0]
            heldout, pending = _heldout(block.get("stages", {}))
            models[model] = {"claim": claim_id, "units": list(block.get("units") or []), "heldout": heldout,
                             "stages": {k: e["status"] for k, e in sorted(block.get("stages", {}).items())}}
            verdicts[model] = ModelVerdict(claim_id, heldout, pending)
        verdict = cross_model_replication(verdicts).to_dict()
        if duplicated:
            verdict.update(passed=False, caps_at=Status.BLOCKED.label,
                           reason=f"one claim per model per mechanism; several on {'; '.join(duplicated)}")
        table[mechanism] = {"models": models, "verdict": verdict}
    return table


def claims_from_records(records) -> dict:
    """A run's judged records shaped like ledger claim blocks (only what ``mechanism_table`` reads)."""
    claims: dict = {}
    for r in records:
        verdict = r.get("verdict")
        if verdict is None or not r["claim"].get("mechanism"):
            continue
        block = claims.setdefault(r["claim"]["id"], {k: r["claim"].get(k) for k in ("mechanism", "model", "units")}
                                  | {"stages": {}})
        block["stages"][r.get("key") or r.get("stage") or "unstaged"] = {
            "status": verdict["status"], "strong_pending": (verdict.get("support") or {}).get("strong_pending")}
    return claims


def markdown_lines(table: dict, escape=str) -> list[str]:
    """The table as Markdown: one row per model, its claim, the shown stages and the cross-model verdict."""
    if not table:
        return []
    out = ["## Mechanisms across models", "",
           "Claims that declare the same mechanism (kind, task, rule for choosing units) on different models, side "
           "by side. The cross-model verdict is the weakest model's held-out status; `strong` needs >= 2 models "
           "(policy line `cross_model_replication`).", ""]
    for mechanism, entry in table.items():
        v = entry["verdict"]
        out += [f"### {escape(mechanism)}: **{v['caps_at']}**", "",
                f"{escape(v['reason'])}", "",
                "| model | claim | units | " + " | ".join(SHOWN_STAGES) + " |",
                "|---|---|---|" + "---|" * len(SHOWN_STAGES)]
        for model, m in entry["models"].items():
            cells = [m["stages"].get(s, "-") for s in SHOWN_STAGES]
            out.append(f"| {escape(model)} | {escape(m['claim'])} | {escape(', '.join(m['units']))} | "
                       + " | ".join(cells) + " |")
        out.append("")
    return out


def summary_lines(table: dict) -> list[str]:
    """One line per mechanism for the terminal: ``induction-top-head: cross-model insufficient (smollm2: ...)``."""
    lines = []
    for mechanism, entry in table.items():
        per_model = ", ".join(f"{model} {m['claim']} heldout {m['heldout'] or '-'}"
                              for model, m in entry["models"].items())
        lines.append(f"mechanism {mechanism}: cross-model {entry['verdict']['caps_at']} ({per_model})")
    return lines
