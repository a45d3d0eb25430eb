"""Builders for synthetic evidence rows: concrete numbers for gate and verdict tests (no torch)."""

from __future__ import annotations

import itertools

from pytest_mechclaim.evidence import EvidenceRow


def paired_rows(target, control, *, families=("f1", "f2"), suites=("matched", "lexical"), seeds=(0, 1, 2),
                per_cell=4, unit="top", unit_set="target", intervention="ablate", drift=0.1, warning=False,
                jitter=0.0, run="corrupt", strata=None):
    """Rows where every target delta is ``target`` and every control delta ``control`` (+/- jitter alternating).

    ``target``/``control`` may be dicts keyed by family or suite to vary them per cell. ``run="corrupt"`` (the
    default) makes the predicted direction of ``"carries"`` an increase; ``run="clean"`` (an ablation) a decrease.
    ``strata(family, i)`` may return the row's strata.
    """
    rows = []
    for family, suite, seed, i in itertools.product(families, suites, seeds, range(per_cell)):
        t = target[family] if isinstance(target, dict) and family in target else target
        c = control[suite] if isinstance(control, dict) and suite in control else control
        c = c[family] if isinstance(c, dict) else c
        t = t[suite] if isinstance(t, dict) else t
        sign = 1 if i % 2 == 0 else -1
        rows.append(EvidenceRow(
            unit=unit, unit_set=unit_set, intervention=intervention, prompt_id=f"{family}-s{seed}-{i}",
            family=family, control_suite=suite, seed=seed, scope="sae_features",
            target_delta=t + sign * jitter, control_delta=c + sign * jitter,
            norm_drift=drift, norm_warning=warning, run=run, strata=strata(family, i) if strata else (),
        ))
    return rows


def effect_rows(effects: dict, *, seeds=(0, 1, 2), per_family=4, unit="L7H7", unit_set="target",
                intervention="clean_to_corrupt", position="final", clean=2.0, corrupt=0.0):
    """Patching rows whose normalized effect is ``effects[family]``; families named ``ctl_*`` are controls."""
    rows = []
    for family, effect in effects.items():
        for seed, i in itertools.product(seeds, range(per_family)):
            e = effect[seed] if isinstance(effect, dict) else effect
            rows.append(EvidenceRow(
                unit=unit, unit_set=unit_set, intervention=intervention, position=position,
                prompt_id=f"{family}-s{seed}-{i}", family=family,
                family_role="control" if family.startswith("ctl_") else "positive", seed=seed,
                clean=clean, corrupt=corrupt, patched=corrupt + e * (clean - corrupt), norm_drift=0.05,
            ))
    return rows
