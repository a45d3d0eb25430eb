"""Human-readable per-claim reports: the failure message, the terminal summary table."""

from __future__ import annotations

import math
import re
import shlex

from .evidence import COORDINATES
from .gates import GateResult, normalized_effect_of
from .spec import ClaimSpec
from .verdict import Verdict

MAX_WORST_ROWS = 5


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]


def gate_table(gates: tuple[GateResult, ...]) -> list[str]:
    rows = [[g.name, _fmt(g.value), f"{g.comparison} {_fmt(g.threshold)}", "pass" if g.passed else "FAIL",
             g.caps_at.label if g.caps_at.label != "strong" else "-", g.details.get("run_by", "author")]
            for g in gates]
    return table(["gate", "value", "threshold", "result", "caps at", "run by"], rows)


def policy_lines(policy: dict, debts) -> list[str]:
    """The evidence policy as applied to this claim stage, and the debts it left (verdict.Debt or their dicts)."""
    if not policy:
        return []
    debts = [d if isinstance(d, dict) else d.to_dict() for d in debts]
    gates = ", ".join(f"{l['gate']}" + (f"({', '.join(f'{k}={v!r}' for k, v in l['floors'].items())})"
                                       if l["floors"] else "") for l in policy.get("lines", []))
    lines = [f"policy: kind {policy['kind']}, stage {policy['stage'] or 'unstaged'}, level {policy['level']}, "
             f"direction {policy['direction']}; requires {gates or 'nothing'}"]
    if policy.get("tightenings"):
        lines.append(f"  project tightenings: {', '.join(policy['tightenings'])}")
    lines += [f"  DEBT {d['gate']} ({d['kind']}): {d['reason']}" for d in debts]
    return lines


def _row_line(row: dict) -> str:
    coords = [f"{k}={row[k]}" for k in COORDINATES if k in row]
    numbers = [f"{k}={_fmt(v)}" for k, v in row.items() if k not in COORDINATES and k not in ("prompt", "control_prompt")]
    text = " ".join(coords + numbers)
    if "prompt" in row:
        text += f"\n      prompt: {row['prompt']!r}"
    if "control_prompt" in row:
        text += f"\n      control: {row['control_prompt']!r}"
    return text


def claim_report(spec: ClaimSpec, stage: str | None, verdict: Verdict, nodeid: str = "") -> str:
    head = f"claim {spec.id}" + (f" [{stage}]" if stage else "")
    expectation = "expected rejected" if spec.expect == "rejected" else f"claimed {spec.level.label}"
    lines = [
        f"{head}: verdict {verdict.status.label.upper()} ({expectation})",
        f"statement: {spec.statement}",
        "",
        "why:" if verdict.reasons else "why: every gate passed",
    ]
    lines += [f"  - {r}" for r in verdict.reasons]
    if verdict.policy:
        lines += ["", *policy_lines(verdict.policy, verdict.debts)]
    lines += ["", *gate_table(verdict.gates)]
    acc = verdict.row_accounting
    if acc:
        lines += ["", f"rows: {acc['n_rows']} total, {acc['n_ok']} ok, {acc['n_invalid']} invalid, "
                      f"{acc['n_not_applicable']} not applicable" +
                      (f"; reasons {acc['reason_counts']}" if acc["reason_counts"] else "")]
    for g in verdict.gates:
        if g.passed or not g.worst:
            continue
        lines += ["", f"worst rows for {g.name}:"]
        lines += [f"  {_row_line(row)}" for row in g.worst[:MAX_WORST_ROWS]]
    if nodeid:
        lines += ["", f"rerun: {rerun_command(nodeid)}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Per-claim-test reports for the run directory (Markdown and JSON): breakdowns, counterexamples, failure taxonomy.
# Everything here is computed over ALL recorded rows, never a sample.
# ------------------------------------------------------------------------------------------------------------------

# Counterexamples listed in full in the JSON report / Markdown report (the counts always cover every row).
JSON_COUNTEREXAMPLES = 100
MARKDOWN_COUNTEREXAMPLES = 10
# The normalized-effect denominator floor the breakdowns use (the gates' default).
DENOMINATOR_FLOOR = 0.1
NO_MOVEMENT = 1e-6  # |delta| at or below this is "did not move" (the gates' MIN_ABS_DELTA)
TARGET_SWAP_MARKERS = ("target_swap", "wrong_target")


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _effect(row) -> float | None:
    return normalized_effect_of(row, DENOMINATOR_FLOOR)[0]


def claimed_unit_rows(rows) -> list:
    return [r for r in rows if r.unit_set == "target" and r.ok]


def positive_score(row) -> float | None:
    """How much a positive-family row supports the claim: its specificity gap, else its normalized effect."""
    return row.specificity_gap if row.paired else _effect(row)


def suite_breakdown(rows) -> list[dict]:
    """Family x control suite, target unit rows: how much the target and its matched control moved."""
    groups: dict = {}
    for r in claimed_unit_rows(rows):
        groups.setdefault((r.family, r.family_role, r.control_suite or "-"), []).append(r)
    out = []
    for (family, role, suite), group in sorted(groups.items()):
        paired = [r for r in group if r.paired]
        effects = [e for r in group if (e := _effect(r)) is not None]
        out.append({
            "family": family, "family_role": role, "control_suite": suite, "n": len(group),
            "target_abs_delta_mean": _mean(abs(r.target_delta) for r in paired),
            "control_abs_delta_mean": _mean(abs(r.control_delta) for r in paired),
            "gap_mean": _mean(r.specificity_gap for r in paired),
            "positive_gap_share": _mean(1.0 if r.specificity_gap > 0 else 0.0 for r in paired),
            "normalized_effect_mean": _mean(effects),
        })
    return out


def unit_set_breakdown(rows) -> list[dict]:
    """Each unit set (the claimed units and every control set) on positive-family rows: how much it moves the metric."""
    groups: dict = {}
    for r in rows:
        if r.ok and r.family_role == "positive":
            groups.setdefault(r.unit_set, []).append(r)
    return [{"unit_set": s, "units": sorted({r.unit for r in g}), "n": len(g),
             "target_abs_delta_mean": _mean(abs(r.target_delta) for r in g if r.target_delta is not None),
             "normalized_effect_mean": _mean(e for r in g if (e := _effect(r)) is not None)}
            for s, g in sorted(groups.items(), key=lambda kv: (kv[0] != "target", kv[0]))]


def seed_breakdown(rows, gates: list[dict]) -> list[dict]:
    """Per seed: the gap distribution of the target rows and, when a seed replication gate ran, its call."""
    per_group = {}
    for g in gates:
        if g["name"] == "seed_replication":
            per_group = g.get("details", {}).get("per_group", {})
    groups: dict = {}
    for r in claimed_unit_rows(rows):
        groups.setdefault(r.seed, []).append(r)
    out = []
    for seed, group in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        scores = [s for r in group if r.family_role == "positive" and (s := positive_score(r)) is not None]
        out.append({"seed": seed, "n": len(group), "score_mean": _mean(scores),
                    "score_min": min(scores) if scores else None,
                    "positive_share": _mean(1.0 if s > 0 else 0.0 for s in scores),
                    "replication_status": per_group.get(str(seed), {}).get("status")})
    return out


def _counterexample(row) -> tuple[float, str] | None:
    """(severity score, why) when a target row speaks against the claim; lower scores are worse."""
    if row.family_role == "control":
        effect = _effect(row)
        if effect is not None and effect > 0:
            return -effect, "control family moved in the claimed direction"
        return None
    if row.paired:
        gap = row.specificity_gap
        if gap > 0:
            return None
        if abs(row.target_delta) <= NO_MOVEMENT and abs(row.control_delta) <= NO_MOVEMENT:
            return gap, "neither the target nor its control moved"
        return gap, "matched control moved at least as much as the target"
    effect = _effect(row)
    if effect is not None and effect <= 0:
        return effect, "no positive effect"
    return None


def counterexamples(rows) -> tuple[int, list[dict]]:
    """Every target row that speaks against the claim, worst first: (count, rows with coordinates and prompts)."""
    found = [(s, why, r) for r in claimed_unit_rows(rows) if (c := _counterexample(r)) is not None for s, why in [c]]
    found.sort(key=lambda t: (t[0], repr(sorted(t[2].coordinates().items()))))
    out = []
    for score, why, r in found:
        view = {k: getattr(r, k) for k in ("family", "control_suite", "seed", "intervention", "position", "unit",
                                           "prompt_id", "family_role")}
        view.update(score=score, why=why, target_delta=r.target_delta, control_delta=r.control_delta,
                    effect=_effect(r), prompt=r.prompt, control_prompt=r.control_prompt)
        out.append(view)
    return len(found), out


def _sign_flip(rows, axis: str) -> dict:
    """Mean score per value of ``axis`` over positive-family target rows; a flip is both signs among the means."""
    groups: dict = {}
    for r in claimed_unit_rows(rows):
        if r.family_role == "positive" and (s := positive_score(r)) is not None:
            groups.setdefault(getattr(r, axis), []).append(s)
    means = {str(k): _mean(v) for k, v in sorted(groups.items(), key=lambda kv: repr(kv[0]))}
    if len(means) < 2:
        return {"status": "not_measured", "groups": means, "rows": 0, "of": sum(map(len, groups.values())),
                "why": f"fewer than two {axis} values"}
    negative = [k for k, m in means.items() if m < 0]
    flipped = bool(negative) and any(m > 0 for m in means.values())
    implicated = sum(len(v) for k, v in groups.items() if str(k) in negative) if flipped else 0
    return {"status": "detected" if flipped else "not_detected", "groups": means, "rows": implicated,
            "of": sum(map(len, groups.values())),
            "why": (f"mean score is negative at {', '.join(negative)} and positive elsewhere" if flipped
                    else f"mean score has one sign across {axis} values")}


def failure_taxonomy(rows) -> dict:
    """local-mi-lab's failure modes (reference/seed-systems.md §2.7), counted over ALL target rows, no fallback
    labels: a mode is either detected in the rows, not detected, or not measured (the rows cannot show it)."""
    target = claimed_unit_rows(rows)
    paired = [r for r in target if r.paired and r.family_role == "positive"]
    control_family = [r for r in target if r.family_role == "control" and _effect(r) is not None]
    moved = [r for r in paired if abs(r.control_delta) >= abs(r.target_delta) and abs(r.control_delta) > NO_MOVEMENT]
    moved += [r for r in control_family if _effect(r) > 0]
    by_suite: dict = {}
    for r in moved:
        by_suite[r.control_suite or r.family] = by_suite.get(r.control_suite or r.family, 0) + 1
    eligible = len(paired) + len(control_family)
    modes = {
        "controls_moved": {
            "status": "not_measured" if not eligible else ("detected" if moved else "not_detected"),
            "rows": len(moved), "of": eligible, "by_suite": dict(sorted(by_suite.items())),
            "why": "matched control moved at least as much as the target (paired rows), or a control family "
                   "moved in the claimed direction"},
    }
    swap = [r for r in paired + control_family
            if any(m in f"{r.family} {r.control_suite or ''}" for m in TARGET_SWAP_MARKERS)]
    leaked = [r for r in swap if r in moved]
    modes["target_swap_leak"] = {
        "status": "not_measured" if not swap else ("detected" if leaked else "not_detected"), "rows": len(leaked),
        "of": len(swap), "why": "target-swap / wrong-target controls moved" if swap
        else "no target-swap or wrong-target control in the rows"}
    still = [r for r in paired if abs(r.target_delta) <= NO_MOVEMENT]
    modes["no_target_effect"] = {
        "status": "not_measured" if not paired else ("detected" if still else "not_detected"), "rows": len(still),
        "of": len(paired), "why": "the intervention does not move the target metric at all"}
    modes["domain_or_length_flip"] = dict(_sign_flip(rows, "family"), axis="family")
    modes["intervention_disagreement"] = dict(_sign_flip(rows, "intervention"), axis="intervention")
    modes["position_mismatch"] = dict(_sign_flip(rows, "position"), axis="position")
    return {"n_target_rows": len(target), "modes": modes}


def rerun_command(nodeid: str) -> str:
    """A shell command that reruns one test; the node id is quoted, so a parametrize id cannot inject a command."""
    return shlex.join(["python", "-m", "pytest", nodeid])


def claim_report_data(payload: dict, rows, baseline_rows=(), run_id: str | None = None) -> dict:
    """The JSON report of one claim test: everything the Markdown report shows, as data."""
    verdict = payload.get("verdict")
    gates = verdict["gates"] if verdict else []
    n_counter, examples = counterexamples(rows)
    claim = payload["claim"]
    from .report_schema import REPORT_SCHEMA, validate_report

    # Validated before anyone writes it: a malformed report is refused, never stored.
    return validate_report({
        "schema": REPORT_SCHEMA,
        "claim": claim, "stage": payload.get("stage"), "key": payload.get("key"), "nodeid": payload["nodeid"],
        "outcome": payload["outcome"], "run_id": run_id,
        "spec_hash": payload.get("fingerprint", {}).get("hash"),
        "spec_parts": payload.get("fingerprint", {}).get("parts"),
        "verdict": verdict, "error": payload.get("error"),
        "suite_breakdown": suite_breakdown(rows),
        "unit_sets": unit_set_breakdown(rows),
        "seeds": seed_breakdown(rows, gates),
        "failure_taxonomy": failure_taxonomy(rows),
        "counterexamples": {"count": n_counter, "listed": examples[:JSON_COUNTEREXAMPLES]},
        "n_baseline_rows": len(list(baseline_rows)),
        "rerun": rerun_command(payload["nodeid"]),
    })


# Characters Markdown or HTML would interpret inline; CommonMark renders any backslash-escaped ASCII punctuation
# literally, so claim text (statements, prompts, reasons) cannot add links, images, HTML or table cells.
MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~<>&])")


def md_text(value) -> str:
    """Inline Markdown showing ``value`` literally: special characters escaped, line breaks as spaces."""
    return MD_SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines()))


def md_code(value) -> str:
    """``value`` as an inline code span (HTML inside is literal); the fence is longer than any backtick run in it."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_table(headers: list[str], rows: list[list]) -> list[str]:
    cell = lambda v: md_text(_fmt(v))
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
           ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]


def claim_report_markdown(data: dict, figure_name: str | None = "figure.png") -> str:
    claim, verdict = data["claim"], data["verdict"]
    stage = f" [{data['stage']}]" if data["stage"] else ""
    status = verdict["status"].upper() if verdict else "NOT JUDGED"
    if claim["expect"] == "rejected":
        expectation = "planted false claim: the test passes only if the evidence rejects it"
    else:
        expectation = f"claimed {claim['level']}"
    lines = [f"# Claim {md_text(claim['id'])}{stage}: {status}", "", f"> {md_text(claim['statement'])}", "",
             f"- {expectation}; test **{data['outcome']}**",
             f"- test: {md_code(data['nodeid'])}",
             f"- run: {md_code(data['run_id'])}, spec hash {md_code(data['spec_hash'])}",
             f"- report schema: {md_code(data.get('schema'))}"]
    for key in ("model", "hook", "sae"):
        if claim.get(key):
            lines.append(f"- {key}: {md_code(claim[key])}")
    if claim.get("units"):
        lines.append(f"- units: {', '.join(md_text(u) for u in claim['units'])}")
    if claim.get("mechanism"):
        lines.append(f"- mechanism: {md_code(claim['mechanism'])} (judged across models in the run's `index.md` "
                     "and the ledger)")
    lines += ["", f"Rerun: {md_code(data['rerun'])}", ""]
    if verdict is None:
        lines += ["## Not judged", "", f"The test never reached a verdict: {md_text(data.get('error'))}", ""]
        return "\n".join(lines)
    lines += ["## Verdict", ""]
    lines += [f"- {md_text(r)}" for r in verdict["reasons"]] or ["- every gate passed"]
    if verdict.get("policy"):
        pol = verdict["policy"]
        lines += ["", "## Evidence policy", "",
                  f"Kind {md_code(pol['kind'])}, stage {md_code(pol['stage'] or 'unstaged')}, level "
                  f"{md_code(pol['level'])}, direction {md_code(pol['direction'])}"
                  + (f"; project tightenings: {md_text(', '.join(pol['tightenings']))}"
                     if pol.get("tightenings") else "") + ".", ""]
        lines += _md_table(["required gate", "floors", "needs", "source"],
                           [[l["gate"], ", ".join(f"{k}={v!r}" for k, v in {**l["floors"], **l["fixed"]}.items()),
                             ", ".join(l["needs"]), l["source"]] for l in pol.get("lines", [])])
        lines += ["", f"### Debts ({len(verdict.get('debts', []))}; each caps the verdict at insufficient)", ""]
        lines += (_md_table(["gate", "kind", "reason"], [[d["gate"], d["kind"], d["reason"]]
                                                         for d in verdict["debts"]])
                  if verdict.get("debts") else ["None."])
    lines += ["", "## Gates", ""]
    lines += _md_table(["gate", "value", "threshold", "result", "caps at", "run by", "reason"],
                       [[g["name"], g["value"], f"{g['comparison']} {_fmt(g['threshold'])}",
                         "pass" if g["passed"] else "**FAIL**", g["caps_at"] if g["caps_at"] != "strong" else "-",
                         g.get("details", {}).get("run_by", "author"), g["reason"]] for g in verdict["gates"]])
    acc = verdict.get("row_accounting") or {}
    if acc:
        lines += ["", f"Rows: {acc['n_rows']} total, {acc['n_ok']} ok, {acc['n_invalid']} invalid, "
                      f"{acc['n_not_applicable']} not applicable"
                  + (f"; reasons {acc['reason_counts']}" if acc.get("reason_counts") else "") + "."]
    lines += ["", "## Family x control suite (claimed units)", ""]
    lines += _md_table(["family", "role", "control suite", "rows", "mean |target delta|", "mean |control delta|",
                        "mean gap", "share gap > 0", "mean normalized effect"],
                       [[b["family"], b["family_role"], b["control_suite"], b["n"], b["target_abs_delta_mean"],
                         b["control_abs_delta_mean"], b["gap_mean"], b["positive_gap_share"],
                         b["normalized_effect_mean"]] for b in data["suite_breakdown"]])
    lines += ["", "## Unit sets (positive families)", ""]
    lines += _md_table(["unit set", "units", "rows", "mean |target delta|", "mean normalized effect"],
                       [[u["unit_set"], ", ".join(u["units"]), u["n"], u["target_abs_delta_mean"],
                         u["normalized_effect_mean"]] for u in data["unit_sets"]])
    lines += ["", "## Seeds", ""]
    lines += _md_table(["seed", "rows", "mean score", "min score", "share > 0", "replication call"],
                       [[s["seed"], s["n"], s["score_mean"], s["score_min"], s["positive_share"],
                         s["replication_status"]] for s in data["seeds"]])
    lines += ["", "Score: the row's specificity gap |target delta| - |control delta| (its normalized effect when it has "
                  "no paired control)."]
    tax = data["failure_taxonomy"]
    lines += ["", f"## Failure taxonomy (all {tax['n_target_rows']} target rows)", ""]
    lines += _md_table(["mode", "status", "rows", "of", "detail"],
                       [[name, m["status"], m["rows"], m["of"],
                         m["why"] + (f"; by suite {m['by_suite']}" if m.get("by_suite") else "")
                         + ("; means " + ", ".join(f"{k}: {_fmt(v)}" for k, v in m["groups"].items())
                            if m.get("groups") else "")]
                        for name, m in tax["modes"].items()])
    ce = data["counterexamples"]
    lines += ["", f"## Counterexamples ({ce['count']} rows speak against the claim; worst "
                  f"{min(ce['count'], MARKDOWN_COUNTEREXAMPLES)} shown, all in rows.jsonl)", ""]
    if ce["listed"]:
        lines += _md_table(["family", "suite", "seed", "intervention", "position", "unit", "prompt id", "score", "why",
                            "prompt", "control prompt"],
                           [[c["family"], c["control_suite"], c["seed"], c["intervention"], c["position"], c["unit"],
                             c["prompt_id"], c["score"], c["why"], c["prompt"], c["control_prompt"]]
                            for c in ce["listed"][:MARKDOWN_COUNTEREXAMPLES]])
    else:
        lines.append("None: every target row supports the claim.")
    if figure_name:
        lines += ["", "## Figure", "", "Movement in the predicted direction, specificity gap, normalized effect and "
                  "per-seed scores: bars are means with 95% prompt-clustered bootstrap intervals; red dashed lines are "
                  "the floors the verdict's gates used.", "",
                  f"![movement, specificity gap, normalized effect and per-seed scores]({figure_name})"]
    return "\n".join(lines) + "\n"
