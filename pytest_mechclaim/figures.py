"""The per-claim-test figure (matplotlib, Agg canvas; pyplot and the global backend are never touched).

Four panels over the claimed units' valid rows, each bar a mean with its 95% prompt-clustered bootstrap interval
(``gates.uncertainty.clustered_ci``, the interval the gates use) and, as red dashed lines, the floors the verdict's
gates used on that same quantity:

* movement per family: the target's metric change in the claim's predicted direction (signed; |delta| only when
  the claim declares no direction), each matched control suite's |delta|, the strongest control unit's movement;
* specificity gap per family x control suite (movement in the predicted direction - |control delta|);
* normalized effect per family (1 = the unit carries the whole clean - corrupt difference), positive and control
  families, next to the strongest control unit;
* per-seed score (gap, or normalized effect without paired controls), every row as a dot.

The title names the claim, stage, verdict, claimed level and test outcome; the line under it the failing gates.
"""

from __future__ import annotations

from pathlib import Path

from .gates import clustered_ci, directed_effect, directed_gap, normalized_effect_of
from .report import DENOMINATOR_FLOOR, NO_MOVEMENT, claimed_unit_rows

TARGET, CONTROL_UNIT = "#1f77b4", "#8c8c8c"
SUITE_COLORS = ("#ff7f0e", "#ffbb78", "#d62728", "#e6a86f", "#c49c94")
FLOOR_COLOR = "#d62728"
VERDICT_COLORS = {"strong": "#1a7f37", "candidate": "#1a7f37", "insufficient": "#b35900", "falsified": "#c62828",
                  "blocked": "#555555"}
# Which gates put a floor on which panel's quantity (family_minimum by its details["kind"]).
PANEL_GATES = {"movement": {"signed_effect", "stratum_minimum"},
               "gap": {"specificity_gap", "multi_control_minimum", "family_minimum:specificity gap"},
               "effect": {"normalized_effect", "family_minimum:normalized effect"}}
MAX_GROUPS = 14  # more family x suite cells than this are drawn per family only (labels stay readable)
METRIC_NAMES = {"logit_contrast": "mean target logit - mean foil logit", "logit_contrast_max": "max target logit - "
                "max foil logit", "logit_diff": "target - foil logit difference", "prob_gap": "p(target) - p(foil)",
                "rank_delta": "rank(foil) - rank(target)"}


def claim_direction(payload: dict | None):
    """The predicted sign the verdict judged (policy), else the claim's declared one; None: not declared."""
    if not payload:
        return None
    policy = (payload.get("verdict") or {}).get("policy") or {}
    return policy.get("direction") or payload.get("claim", {}).get("direction")


def metric_label(payload: dict | None) -> str:
    """What the rows' numbers measure. Rows do not carry the metric's name: a claim states it via
    ``mechclaim.attach("metric", name)``; otherwise the figure says it was not recorded (every engine metric is
    a target-vs-foil contrast, so the axes say that much)."""
    name = ((payload or {}).get("artifacts") or {}).get("metric") or (payload or {}).get("claim", {}).get("metric")
    if isinstance(name, str) and name:
        return f"metric {name}" + (f" ({METRIC_NAMES[name]})" if name in METRIC_NAMES else "")
    return "metric: not recorded with the rows (the engine's default is logit_contrast, target - foil logits)"


def panel_floors(payload: dict | None, panel: str) -> dict[float, list[str]]:
    """floor value -> the gates that used it on this panel's quantity (only their headline comparison '>':
    a sub-check such as 'n_prompts >= 2' is another quantity and is not drawn)."""
    floors: dict = {}
    for g in ((payload or {}).get("verdict") or {}).get("gates", []):
        base = g["name"].split("[", 1)[0]
        kind = (g.get("details") or {}).get("kind")
        if (base in PANEL_GATES[panel] or f"{base}:{kind}" in PANEL_GATES[panel]) and g.get("comparison") == ">" \
                and isinstance(g.get("threshold"), (int, float)):
            floors.setdefault(float(g["threshold"]), []).append(f"{g['name']} {'pass' if g['passed'] else 'FAIL'}")
    return floors


def _ci(rows, score) -> tuple[float | None, float, float]:
    """(mean, lower error, upper error) for a bar; no interval (one prompt) draws no whisker."""
    ci = clustered_ci(rows, score)
    if ci["mean"] is None:
        return None, 0.0, 0.0
    if ci["ci_low"] is None:
        return ci["mean"], 0.0, 0.0
    return ci["mean"], ci["mean"] - ci["ci_low"], ci["ci_high"] - ci["mean"]


def _strongest_control_unit(rows, score) -> tuple[str | None, list]:
    """The control unit (any non-target unit set) whose rows move ``score`` most: the one a reader compares to."""
    groups: dict = {}
    for r in rows:
        if r.ok and r.unit_set != "target" and r.family_role == "positive" and score(r) is not None:
            groups.setdefault((r.unit_set, r.unit), []).append(r)
    if not groups:
        return None, []
    key = max(sorted(groups), key=lambda k: sum(score(r) for r in groups[k]) / len(groups[k]))
    return f"{key[1]} [{key[0]}]", [r for r in rows if r.ok and (r.unit_set, r.unit) == key]


def _bars(ax, groups: list[str], series: list[tuple[str, str, list, dict]]) -> int:
    """Grouped bars with whiskers; ``series``: (label, color, rows per group, bar kwargs). Returns bars drawn."""
    n, drawn, largest = len(series), 0, 0.0
    width = 0.8 / max(n, 1)
    for k, (label, color, per_group, kw) in enumerate(series):
        xs, means, errs = [], [], ([], [])
        for i, (rows, score) in enumerate(per_group):
            mean, lo, hi = _ci(rows, score) if rows else (None, 0.0, 0.0)
            if mean is not None:
                xs.append(i - 0.4 + width * (k + 0.5))
                means.append(mean)
                errs[0].append(lo)
                errs[1].append(hi)
        if xs:
            ax.bar(xs, means, width=width * 0.92, color=color, label=label, yerr=[errs[0], errs[1]], capsize=3,
                   error_kw={"elinewidth": 1.1, "ecolor": "black"}, **kw)
            drawn += len(xs)
            largest = max(largest, *(abs(m) for m in means))
            # The number on each bar: a bar of exactly 0 (a unit that never moves) is otherwise invisible.
            for x, m, lo, hi in zip(xs, means, *errs):
                ax.annotate(f"{m:.3g}" if abs(m) >= 1e-3 or m == 0 else "\u22480", (x, m + hi if m >= 0 else m - lo), xytext=(0, 2 if m >= 0 else -2),
                            textcoords="offset points", ha="center", va="bottom" if m >= 0 else "top", fontsize=7)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    if drawn and largest <= NO_MOVEMENT:
        ax.text(0.5, 0.75, "every mean is 0: nothing moved", ha="center", transform=ax.transAxes, fontsize=10,
                color=FLOOR_COLOR)
    return drawn


def _floors(ax, floors: dict[float, list[str]]) -> None:
    ax.axhline(0, color="black", linewidth=0.6)
    merged: list[tuple[float, list[str]]] = []
    for value, names in sorted(floors.items()):
        # 0 and 1e-06 (a gate's "did it move at all" floor) are one line at any readable scale.
        if merged and value - merged[-1][0] <= 1e-6 * max(1.0, abs(value)):
            merged[-1] = (value, merged[-1][1] + names)
        else:
            merged.append((value, list(names)))
    for value, names in merged:
        ax.axhline(value, color=FLOOR_COLOR, linestyle="--", linewidth=1.4, zorder=4,
                   label=f"floor {value:g}: {', '.join(names)}")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555555")


def _legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.margins(y=0.12)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2 if len(handles) > 2 else 1,
                  frameon=False)


def _movement_panel(ax, rows, direction, payload) -> None:
    move = lambda r: directed_effect(r, direction)
    positives = [r for r in claimed_unit_rows(rows) if r.family_role == "positive"]
    families = sorted({r.family for r in positives})
    suites = sorted({r.control_suite for r in positives if r.paired and r.control_suite is not None})
    by_family = lambda rs, f: [r for r in rs if r.family == f]
    series = [("claimed units", TARGET, [(by_family(positives, f), move) for f in families], {})]
    for j, suite in enumerate(suites):
        in_suite = [r for r in positives if r.control_suite == suite and r.paired]
        series.append((f"matched control ({suite}), |\u0394|", SUITE_COLORS[j % len(SUITE_COLORS)],
                       [(by_family(in_suite, f), lambda r: abs(r.control_delta)) for f in families], {}))
    unit, control_rows = _strongest_control_unit(rows, move)
    if unit:
        series.append((f"{unit}: strongest control unit", CONTROL_UNIT,
                       [(by_family(control_rows, f), move) for f in families], {"hatch": "//"}))
    if not _bars(ax, families, series):
        _empty(ax, "no valid target rows")
    _floors(ax, panel_floors(payload, "movement"))
    signed = direction not in (None, "either")
    ax.set_ylabel("change in metric, predicted direction" if signed else "|change in metric| (no direction)",
                  fontsize=9)
    ax.set_title("How far the claimed units move the metric (per family)", fontsize=10)
    _legend(ax)


def _gap_panel(ax, rows, direction, payload) -> None:
    gap = lambda r: directed_gap(r, direction)
    paired = [r for r in claimed_unit_rows(rows) if r.family_role == "positive" and r.paired]
    cells = sorted({(r.family, r.control_suite or "-") for r in paired})
    if len(cells) > MAX_GROUPS:
        cells = sorted({(f, "all suites") for f, _ in cells})
    pick = lambda f, s: [r for r in paired if r.family == f and s in ("all suites", r.control_suite or "-")]
    groups = ["all rows"] + [f"{f}\n{s}" for f, s in cells]
    per_group = [(paired, gap)] + [(pick(f, s), gap) for f, s in cells]
    if not _bars(ax, groups, [("claimed units: movement - |matched control \u0394|", TARGET, per_group, {})]):
        _empty(ax, "no paired control prompts: no specificity gap")
    _floors(ax, panel_floors(payload, "gap"))
    ax.set_ylabel("specificity gap (metric units)", fontsize=9)
    ax.set_title("Specificity: target movement minus matched control movement", fontsize=10)
    _legend(ax)


def _effect_panel(ax, rows, payload) -> None:
    effect = lambda r: normalized_effect_of(r, DENOMINATOR_FLOOR)[0]
    claimed = claimed_unit_rows(rows)
    # Positive families first, control families (where the claim predicts no effect) after them.
    families = sorted({(r.family_role != "positive", r.family) for r in claimed})
    labels = [f"{f}\n(control family)" if is_control else f for is_control, f in families]
    pick = lambda rs, f: [r for r in rs if r.family == f]
    series = [("claimed units", TARGET, [(pick(claimed, f), effect) for _, f in families], {})]
    unit, control_rows = _strongest_control_unit(rows, effect)
    if unit:
        series.append((f"{unit}: strongest control unit", CONTROL_UNIT,
                       [(pick(control_rows, f), effect) for _, f in families], {"hatch": "//"}))
    if not _bars(ax, labels, series):
        _empty(ax, "no rows with clean / corrupt / patched numbers")
    _floors(ax, panel_floors(payload, "effect"))
    ax.axhline(1.0, color="#555555", linestyle=":", linewidth=1, label="1 = full clean - corrupt difference")
    ax.set_ylabel("normalized effect", fontsize=9)
    ax.set_title("Normalized effect per family", fontsize=10)
    _legend(ax)


def _seed_panel(ax, rows, direction, payload) -> None:
    claimed = [r for r in claimed_unit_rows(rows) if r.family_role == "positive"]
    paired = bool(claimed) and all(r.paired for r in claimed)
    score = (lambda r: directed_gap(r, direction)) if paired else \
        (lambda r: normalized_effect_of(r, DENOMINATOR_FLOOR)[0])
    seeds = sorted({r.seed for r in claimed}, key=repr)
    per_seed = [[r for r in claimed if r.seed == s and score(r) is not None] for s in seeds]
    for i, group in enumerate(per_seed):
        values = sorted(score(r) for r in group)
        ax.scatter([i + 0.5 * ((j % 9) / 8 - 0.5) for j in range(len(values))], values, s=7, alpha=0.35,
                   color=TARGET, zorder=1, label="one row" if i == 0 else None)
    drawn = _bars(ax, [str(s) for s in seeds], [("seed mean (95% CI)", "none", list(zip(per_seed, [score] * len(seeds))),
                                                  {"edgecolor": "black", "linewidth": 1.5, "zorder": 2})])
    if not drawn:
        _empty(ax, "no scored rows")
    _floors(ax, panel_floors(payload, "gap" if paired else "effect"))
    rep = next((g for g in ((payload or {}).get("verdict") or {}).get("gates", []) if g["name"] == "seed_replication"),
               None)
    note = f"; seed_replication {rep['value']:g} {rep['comparison']} {rep['threshold']:g} seeds" if rep and \
        isinstance(rep.get("value"), (int, float)) and isinstance(rep.get("threshold"), (int, float)) else ""
    ax.set_xlabel("seed", fontsize=9)
    ax.set_ylabel("specificity gap" if paired else "normalized effect", fontsize=9)
    ax.set_title(f"Per seed{note}", fontsize=10)
    _legend(ax)


def _headline(payload: dict | None, title: str) -> tuple[str, str, str]:
    """(title, subtitle, colour): claim, stage, verdict, expectation, outcome; then the failing gates."""
    if not payload or not payload.get("verdict"):
        return title, "", "black"
    claim, verdict = payload["claim"], payload["verdict"]
    stage = f" [{payload['stage']}]" if payload.get("stage") else ""
    expected = "planted false: expected rejected" if claim.get("expect") == "rejected" else \
        f"claimed {claim.get('level')}"
    head = f"{claim['id']}{stage}: verdict {verdict['status'].upper()} ({expected}; test {payload.get('outcome')})"
    failing = [g["name"] for g in verdict.get("gates", []) if not g.get("passed")]
    n = len(verdict.get("gates", []))
    sub = (f"failing gates ({len(failing)} of {n}): " + ", ".join(failing[:8]) + (" ..." if len(failing) > 8 else "")
           if failing else f"all {n} gates pass")
    return head, sub, VERDICT_COLORS.get(verdict["status"], "black")


def figure_for(rows, payload: dict | None = None, title: str = ""):
    """The claim test's figure as a matplotlib Figure (not saved): tests inspect its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)
    direction = claim_direction(payload) or "either"
    fig = Figure(figsize=(13, 10), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    _movement_panel(axes[0][0], rows, direction, payload)
    _gap_panel(axes[0][1], rows, direction, payload)
    _effect_panel(axes[1][0], rows, payload)
    _seed_panel(axes[1][1], rows, direction, payload)
    head, sub, color = _headline(payload, title)
    fig.text(0.5, 0.975, head, ha="center", va="top", fontsize=13, weight="bold", color=color)
    statement = (payload or {}).get("claim", {}).get("statement", "")
    lines = [f"\u201c{statement[:140]}{'...' if len(statement) > 140 else ''}\u201d" if statement else "", sub,
             f"{metric_label(payload)}; predicted direction: {direction}",
             "bars: mean; whiskers: 95% prompt-clustered bootstrap CI; red dashed: the floors the verdict's gates used"]
    fig.text(0.5, 0.945, "\n".join(l for l in lines if l), ha="center", va="top", fontsize=9, linespacing=1.5)
    # Fixed margins: tight_layout would draw the figure once more just to measure it.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.83, wspace=0.18, hspace=0.62)
    return fig


def claim_figure(rows, title: str, path: Path, payload: dict | None = None) -> Path:
    fig = figure_for(rows, payload, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)
    return path
