"""The planted-claim corpus: claims with a known truth on hand-set and tracr-compiled models, judged through the real
``MechClaim`` handle under three author behaviours, and the confusion matrix of their verdicts.

Behaviours: ``recommended`` (the candidate gate set the repository's ground-truth claims called before the plugin
ran the policy itself: ``run_candidate_gates`` below), ``single:<gate>`` (one gate of the author's choice, at its defaults)
and ``none`` (rows recorded, no gate called). A false claim must never reach ``candidate`` under any of them; a
true claim must reach it under the recommended set (and, once the plugin runs the policy's gates itself, under the
others too: the verdict must not depend on the author's diligence).

Run ``python -m tests.planted.corpus`` to print the matrix.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from pytest_mechclaim import spec as spec_module
from pytest_mechclaim.fixture import MechClaim
from pytest_mechclaim.groundtruth import (CANCEL_SPLIT, CURRENT_TOKEN_FEATURES, INDUCTION_SAE_HOOK,
                                          POSITION_FEATURES, PREV_TOKEN_FEATURES, build_induction_sae)
from pytest_mechclaim.status import Status

from . import evidence as ev
from . import models as m

HELDOUT_SEEDS = (10, 11, 12)
# Held-out families: sequence lengths and prefixes never used in discovery.
HELDOUT_FAMILIES = {"repeat_mid": (9, 7), "repeat_tail": (14, 13)}


def run_candidate_gates(mechclaim, rows):
    """The full recommended author gate set at the seeds' default thresholds (behaviour ``recommended``)."""
    gate = mechclaim.gate
    gate.specificity_gap(rows, min=0.0)
    gate.positive_share(rows, min=0.5)
    gate.family_minimum(rows, min=0.0, min_families=2)
    gate.family_minimum(rows, min=0.0, min_families=2, score="effect")
    gate.multi_control_minimum(rows, min=0.0, min_suites=2)
    gate.collateral_ratio(rows, max=1.0, strong_max=0.5)
    gate.normalized_effect(rows, min=0.0)
    gate.norm_drift(rows)
    gate.seed_replication(rows, min_passing=2)
    gate.unit_controls(min_ratio=1.05)


SINGLE_GATES = ("specificity_gap", "normalized_effect", "positive_share", "collateral_ratio", "unit_controls",
                "seed_replication")
BEHAVIOURS = ("recommended",) + tuple(f"single:{g}" for g in SINGLE_GATES) + ("none",)
STATUSES = tuple(s.label for s in Status)


@dataclass(frozen=True)
class Planted:
    id: str
    true: bool
    why: str  # the failure mode (false claims) or the known truth (true claims), in one line
    statement: str
    rows: Callable[[], list]  # the evidence the author records
    units: tuple[str, ...] = ()
    kind: str = "head"
    stage: str = "replication"
    positions: tuple[str, ...] = ("final",)
    marker: dict = field(default_factory=dict)

    def spec(self):
        kwargs = dict(statement=self.statement, level="candidate", expect="supported" if self.true else "rejected",
                      units=list(self.units), kind=self.kind, positions=list(self.positions), **self.marker)
        # Only what this version's marker knows (kind=/positions= arrived with the evidence policy).
        allowed = spec_module.ALLOWED_KWARGS
        return spec_module.parse_claim_marker((self.id,), {k: v for k, v in kwargs.items() if k in allowed})


@functools.cache
def sae():
    return build_induction_sae()


def _sets(prefix, pool, size, seeds=(0, 1, 2)):
    """Seeded control feature sets of ``size`` drawn from ``pool``, labelled like banks.feature_sets'."""
    return {f"{prefix}_seed_{s}": sorted(random.Random(f"planted:{prefix}:{s}").sample(list(pool), size))
            for s in seeds}


SAE_MARKER = dict(sae="groundtruth:induction-sae", hook=INDUCTION_SAE_HOOK, model="groundtruth:induction")
PREV22, CUR22 = PREV_TOKEN_FEATURES[22], CURRENT_TOKEN_FEATURES[22]
# Single-feature controls for feature 22: any feature but 22's own two (ablating "current token is 22" everywhere
# breaks the same prediction through the query, so it is not a control for the claim).
SINGLE_CONTROLS = _sets("random", [f for f in range(88) if f not in (PREV22, CUR22)], 1)
ALL_CURRENT = list(CURRENT_TOKEN_FEATURES)
LOW_CURRENT = [CURRENT_TOKEN_FEATURES[t] for t in range(1, 9)]
D = ev.DISCOVERY_SEEDS


def _tracr(unit, interventions):
    model, meta = m.tracr_prev_token()
    return ev.head_rows(model, unit, ev.tracr_tasks(meta), interventions=interventions)


FALSE = [
    Planted("decoy-L1H1", False, "decoy: L1H0's attention pattern, output written where nothing reads",
            "L1H1 (same attention pattern as the induction head) is an induction head",
            lambda: ev.head_rows(m.standard(), "L1H1", ev.tasks_for()), ("L1H1",)),
    Planted("prev-token-as-induction-L0H0", False,
            "upstream previous-token head claimed as the induction head (all-position ablation breaks induction)",
            "L0H0 is the induction head: it writes the induction prediction",
            lambda: ev.head_rows(m.standard(), "L0H0", ev.tasks_for(), positions=("all",)), ("L0H0",),
            positions=("all",)),
    Planted("tiny-effect-L1H1", False, "a real effect 1e-3 of the true head's, claimed as the induction head",
            "L1H1 of the tiny variant is the induction head",
            lambda: ev.head_rows(m.tiny(), "L1H1", ev.tasks_for()), ("L1H1",)),
    Planted("layer-patch-for-head-L1H1", False, "a whole-layer residual patch offered as evidence for one head",
            "L1H1 writes the induction prediction (shown by patching blocks.1.hook_resid_post)",
            lambda: ev.layer_rows(m.standard(), "L1H1", ev.tasks_for(), 1), ("L1H1",)),
    Planted("partial-tokens-L1H1", False, "works for 10 of 16 target indices, nothing for the rest (a stratum)",
            "L1H1 of the split variant is the induction head for every target token",
            # 16 prompts per family and seed: every target token appears often enough to be judged as a stratum.
            lambda: ev.head_rows(m.split(), "L1H1", ev.tasks_for(n_per_family=16)), ("L1H1",)),
    Planted("norm-shove-L1H1", False, "ablation moves the target by shoving the residual norm ~15x",
            "L1H1 of the norm-shove variant is an induction head, shown by ablation and patching",
            lambda: ev.head_rows(m.norm_shove(), "L1H1", ev.tasks_for()), ("L1H1",)),
    Planted("leaky-control-L1H0", False, "the control suite (mirrored tokens) carries the mechanism itself",
            "L1H0 copies tokens 1-15 and not their mirror tokens 17-31",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.mirrored()), ("L1H0",)),
    Planted("cancelling-L1H1", False, "helps target indices 0-11, hurts 12-15 (families split by index)",
            "L1H1 of the cancelling variant supports the induction prediction across sequence families",
            lambda: ev.head_rows(m.cancelling(), "L1H1",
                                 ev.tasks_for(split_by_target_index=CANCEL_SPLIT, n_per_family=12)), ("L1H1",)),
    Planted("wrong-position-L1H0", False, "the true head, claimed at the previous-occurrence position",
            "L1H0 drives the induction prediction through its output at the previous-occurrence position",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.tasks_for(), positions=("previous_occurrence",)),
            ("L1H0",), positions=("previous_occurrence",)),
    Planted("wrong-sign-L1H1", False, "an anti-induction head: it lowers the target (|delta| gates see movement)",
            "L1H1 of the wrong-sign variant supports the induction prediction",
            lambda: ev.head_rows(m.wrong_sign(), "L1H1", ev.tasks_for()), ("L1H1",)),
    Planted("foil-writer-L1H1", False, "writes the foil (the current token): pushes against the prediction",
            "L1H1 of the foil-writer variant pushes the induction target over the current token",
            lambda: ev.head_rows(m.foil_writer(), "L1H1", ev.foil_is_current_token()), ("L1H1",)),
    Planted("moving-control-suite-L1H0", False, "one control suite (near repeats) moves as much as the target",
            "L1H0 responds to exact repeats only, not to a second copy whose earlier tokens differ",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.with_near_repeat()), ("L1H0",)),
    Planted("one-seed-L1H1", False, "one seed (of tokens the partial head happens to handle)",
            "L1H1 of the split variant is the induction head",
            lambda: ev.head_rows(m.split(), "L1H1", ev.index_tasks(range(m.SPLIT_AT), seeds=(0,))), ("L1H1",)),
    Planted("mislabeled-unit-L1H1", False, "rows of L1H0 recorded for a claim about L1H1 (compared to layer 0)",
            "L1H1 is an induction head",
            lambda: ev.head_rows(m.standard(), "L1H1", ev.tasks_for(), comparison=("L0H0", "L0H1"),
                                 target_unit="L1H0"), ("L1H1",)),
    Planted("no-controls-L1H0", False, "a specificity claim recorded without any control prompt",
            "L1H0 copies tokens 1-15 and not their mirror tokens 17-31",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.mirrored(controls=False)), ("L1H0",)),
    Planted("sae-controls-move-as-much", False, "density-matched control features move as much as the set",
            "SAE features 33-40 (current token is 1-8) carry the induction prediction",
            lambda: ev.sae_rows(m.standard(), sae(), ev.tasks_for(), LOW_CURRENT,
                                _sets("density_matched", [f for f in ALL_CURRENT if f not in LOW_CURRENT], 8)),
            kind="sae_features", marker=SAE_MARKER),
    Planted("sae-decoy-features", False, "position features, which layer 1 never reads",
            "SAE position features 64-87 carry the induction prediction at the final position",
            lambda: ev.sae_rows(m.standard(), sae(), ev.tasks_for(), list(POSITION_FEATURES),
                                _sets("random", [f for f in range(88) if f not in POSITION_FEATURES], 24)),
            kind="sae_features", marker=SAE_MARKER),
    Planted("sae-wrong-position-f22", False, "the true feature, ablated only where it is not read (final)",
            "Ablating feature 22 at the final position breaks predictions made at token 22",
            lambda: ev.sae_rows(m.standard(), sae(), ev.ending_on(22), [PREV22], SINGLE_CONTROLS),
            kind="sae_features", marker=SAE_MARKER),
    Planted("tracr-zero-ablation-artifact-L0H1", False,
            "tracr decoy head (value unused); zero/mean ablation breaks the MLP's lookup: off-distribution",
            "L0H1 of the compiled program (the token two back) carries the output",
            lambda: _tracr("L0H1", ("zero", "mean")), ("L0H1",), marker=dict(model="tracr:prev-token")),
    Planted("tracr-decoy-L0H1", False, "tracr decoy head under in-distribution interventions: no effect",
            "L0H1 of the compiled program (the token two back) carries the output",
            lambda: _tracr("L0H1", ("clean_to_corrupt", "resample")), ("L0H1",),
            marker=dict(model="tracr:prev-token")),
]

TRUE = [
    Planted("induction-L1H0", True, "L1H0 is the induction head by construction",
            "L1H0 copies the token after the previous occurrence of the current token into the logits",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.tasks_for()), ("L1H0",)),
    Planted("induction-heldout-L1H0", True, "the same head on held-out lengths and seeds",
            "L1H0 is the induction head on held-out sequence lengths",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.tasks_for(HELDOUT_SEEDS, families=HELDOUT_FAMILIES)),
            ("L1H0",), stage="heldout"),
    Planted("induction-resample-L1H0", True, "the same head under mean and resample ablation",
            "L1H0 carries the induction prediction (mean and resample ablation)",
            lambda: ev.head_rows(m.standard(), "L1H0", ev.tasks_for(), interventions=("mean", "resample")),
            ("L1H0",)),
    Planted("cancelling-model-L1H0", True, "L1H0 is still the full copier next to a cancelling L1H1",
            "L1H0 of the cancelling variant is an induction head",
            lambda: ev.head_rows(m.cancelling(), "L1H0", ev.tasks_for()), ("L1H0",)),
    Planted("wrong-sign-model-L1H0", True, "L1H0 is the copier next to an anti-induction L1H1",
            "L1H0 of the wrong-sign variant is an induction head",
            lambda: ev.head_rows(m.wrong_sign(), "L1H0", ev.tasks_for()), ("L1H0",)),
    Planted("norm-shove-model-L1H0", True, "L1H0 copies; the shove is L1H1's",
            "L1H0 of the norm-shove variant is an induction head",
            lambda: ev.head_rows(m.norm_shove(), "L1H0", ev.tasks_for()), ("L1H0",)),
    Planted("split-model-L1H0-high", True, "in the split variant L1H0 is the only copier of indices 10-15",
            "L1H0 of the split variant is the induction head for targets with index 10-15",
            lambda: ev.head_rows(m.split(), "L1H0", ev.index_tasks(range(m.SPLIT_AT, 16))), ("L1H0",)),
    Planted("sae-prev-token-f22", True, "feature 22 is the key the induction head matches at token 22",
            "Ablating feature 22 (previous token is 22) breaks the predictions made at token 22",
            lambda: ev.sae_rows(m.standard(), sae(), ev.ending_on(22), [PREV22], SINGLE_CONTROLS,
                                positions=("all",)),
            kind="sae_features", positions=("all",), marker=SAE_MARKER),
    Planted("sae-current-token-features", True, "the current-token features are the induction query",
            "SAE current-token features 32-63 carry the induction prediction at the final position",
            lambda: ev.sae_rows(m.standard(), sae(), ev.tasks_for(), ALL_CURRENT,
                                _sets("random", [f for f in range(88) if f not in ALL_CURRENT], 32)),
            kind="sae_features", marker=SAE_MARKER),
    # A bank of only the tokens the partial head handles cannot show what it does elsewhere: stated for the whole
    # vocabulary, that claim is unfalsifiable from its rows (no gate sees tokens the bank never holds), so the claim
    # is narrowed to where its bank reaches (DESIGN: narrowing is a new claim, with its own spec) - and it is true.
    Planted("narrowed-to-its-bank-L1H1", True, "the partial head, claimed only for the tokens its bank holds",
            f"L1H1 of the split variant is the induction head for target indices below {m.SPLIT_AT}",
            lambda: ev.head_rows(m.split(), "L1H1", ev.index_tasks(range(m.SPLIT_AT))), ("L1H1",)),
    Planted("tracr-prev-token-L0H0", True, "tracr compiled L0H0 as the previous-token head the output copies",
            "L0H0 of the compiled program copies the previous token into the output",
            lambda: _tracr("L0H0", ("clean_to_corrupt", "resample")), ("L0H0",),
            marker=dict(model="tracr:prev-token")),
]
CLAIMS = {c.id: c for c in FALSE + TRUE}
assert len(CLAIMS) == len(FALSE) + len(TRUE), "claim ids must be unique"


@functools.cache
def recorded_rows(claim_id: str) -> tuple:
    return tuple(CLAIMS[claim_id].rows())


def judge(claim: Planted, behaviour: str):
    """The claim's verdict when its author records the rows and behaves as ``behaviour``."""
    handle = MechClaim(claim.spec(), stage=claim.stage, nodeid=f"tests/planted::{claim.id}[{behaviour}]")
    rows = handle.record(recorded_rows(claim.id))
    handle.record_baseline(ev.baseline_rows(rows))
    if behaviour == "recommended":
        run_candidate_gates(handle, rows)
    elif behaviour.startswith("single:"):
        getattr(handle.gate, behaviour.split(":", 1)[1])(rows)
    elif behaviour != "none":
        raise ValueError(f"unknown behaviour {behaviour!r}")
    return handle.verdict()


@functools.cache
def verdicts() -> dict:
    """{(claim id, behaviour): Verdict} for the whole corpus."""
    return {(c.id, b): judge(c, b) for c in CLAIMS.values() for b in BEHAVIOURS}


def matrix(results=None) -> dict:
    """{(truth, behaviour): Counter(status label)}; truth is "true" or "false"."""
    results = verdicts() if results is None else results
    out = {(t, b): Counter() for t in ("true", "false") for b in BEHAVIOURS}
    for (cid, b), v in results.items():
        out[("true" if CLAIMS[cid].true else "false", b)][v.status.label] += 1
    return out


def offenders(truth: str, behaviour: str, statuses) -> list[str]:
    """Claims of ``truth`` under ``behaviour`` whose verdict is in ``statuses``, with the verdict's first reason."""
    out = []
    for (cid, b), v in verdicts().items():
        if b == behaviour and CLAIMS[cid].true == (truth == "true") and v.status.label in statuses:
            out.append(f"{cid}: {v.status.label} ({v.reasons[0] if v.reasons else 'no reason'})")
    return out


def format_matrix(mat=None) -> str:
    mat = matrix() if mat is None else mat
    width = max(len(b) for b in BEHAVIOURS) + 8
    lines = [f"{'claims x behaviour':<{width}}" + "".join(f"{s:>14}" for s in STATUSES)]
    for (truth, b), counts in mat.items():
        lines.append(f"{truth + ' x ' + b:<{width}}" + "".join(f"{counts.get(s, 0):>14}" for s in STATUSES))
    return "\n".join(lines)


def print_confusion_matrix() -> None:
    print(format_matrix())
    for truth, bad in (("false", ("candidate", "strong")), ("true", ("blocked", "falsified", "insufficient"))):
        for b in BEHAVIOURS:
            for line in offenders(truth, b, bad):
                print(f"  {truth} claim under {b}: {line}")


if __name__ == "__main__":
    print_confusion_matrix()
