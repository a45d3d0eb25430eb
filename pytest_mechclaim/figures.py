"""The per-claim-test figure (matplotlib, Agg canvas; pyplot and the global backend are never touched).

Left: how much the target and its matched control moved, per family x control suite (mean |delta| of the claimed
units' rows), next to the strongest control unit set on the same cells (random / comparison units, when the test
recorded any); rows without paired controls show the mean normalized effect per family instead. Right: every
target row's score (specificity gap, or normalized effect) per seed, with the seed mean; the zero line is where
a control moves as much as the target.
"""

from __future__ import annotations

from pathlib import Path

from .report import claimed_unit_rows, positive_score, suite_breakdown, unit_set_breakdown


def _control_unit_movement(rows) -> tuple[str | None, dict]:
    """The control unit set that moves the metric most, and its mean |target delta| per (family, suite)."""
    sets = [u for u in unit_set_breakdown(rows) if u["unit_set"] != "target" and u["target_abs_delta_mean"] is not None]
    if not sets:
        return None, {}
    strongest = max(sets, key=lambda u: u["target_abs_delta_mean"])["unit_set"]
    cells: dict = {}
    for r in rows:
        if r.ok and r.unit_set == strongest and r.target_delta is not None:
            cells.setdefault((r.family, r.control_suite or "-"), []).append(abs(r.target_delta))
    return strongest, {k: sum(v) / len(v) for k, v in cells.items()}


def claim_figure(rows, title: str, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    cells = suite_breakdown(rows)
    paired = [c for c in cells if c["target_abs_delta_mean"] is not None]
    if paired:
        labels = [f"{c['family']}\n{c['control_suite']}" for c in paired]
        x = range(len(paired))
        control_set, control_units = _control_unit_movement(rows)
        width = 0.27 if control_set else 0.4
        left.bar([i - width / 2 * (2 if control_set else 1) for i in x], [c["target_abs_delta_mean"] for c in paired],
                 width=width, label="claimed units, target prompt", color="#1f77b4")
        left.bar([i + (0 if control_set else width / 2) for i in x], [c["control_abs_delta_mean"] for c in paired],
                 width=width, label="claimed units, matched control prompt", color="#ff7f0e")
        if control_set:
            left.bar([i + width for i in x],
                     [control_units.get((c["family"], c["control_suite"]), 0.0) for c in paired], width=width,
                     label=f"control units ({control_set}), target prompt", color="#999999", hatch="//")
        left.set_ylabel("mean |delta| of the metric")
        left.set_xticks(list(x), labels, fontsize=8)
        left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        left.set_title("target vs control movement per family / suite", fontsize=10)
    else:
        effects = [c for c in cells if c["normalized_effect_mean"] is not None]
        left.bar(range(len(effects)), [c["normalized_effect_mean"] for c in effects],
                 color=["#1f77b4" if c["family_role"] == "positive" else "#ff7f0e" for c in effects])
        left.set_xticks(range(len(effects)), [f"{c['family']}\n({c['family_role']})" for c in effects], fontsize=8)
        left.set_ylabel("mean normalized effect")
        left.set_title("normalized effect per family (positive blue, control orange)", fontsize=10)
    if not cells:
        left.text(0.5, 0.5, "no valid target rows", ha="center", va="center", transform=left.transAxes)
    left.axhline(0, color="black", linewidth=0.6)

    by_seed: dict = {}
    for r in claimed_unit_rows(rows):
        if r.family_role == "positive" and (s := positive_score(r)) is not None:
            by_seed.setdefault(r.seed, []).append(s)
    seeds = sorted(by_seed, key=repr)
    for i, seed in enumerate(seeds):
        scores = by_seed[seed]
        jitter = [i + 0.3 * ((j % 7) / 6 - 0.5) for j in range(len(scores))]
        right.scatter(jitter, scores, s=8, alpha=0.5, color="#1f77b4")
        right.hlines(sum(scores) / len(scores), i - 0.3, i + 0.3, color="black", linewidth=2)
    right.axhline(0, color="red", linewidth=0.8, linestyle="--")
    right.set_xticks(range(len(seeds)), [str(s) for s in seeds])
    right.set_xlabel("seed")
    right.set_ylabel("row score (gap, or normalized effect)")
    right.set_title("per-seed scores (bar: seed mean)", fontsize=10)
    if not seeds:
        right.text(0.5, 0.5, "no scored rows", ha="center", va="center", transform=right.transAxes)
    fig.suptitle(title, fontsize=11)
    # Fixed margins: tight_layout would draw the figure once more just to measure it.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.27, top=0.86, wspace=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)
    return path
