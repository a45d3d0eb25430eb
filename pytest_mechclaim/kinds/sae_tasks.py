"""SAE feature-set claims on an engine task bank (``kinds.banks``) with preregistered features: no tokenizer needed.

The features are named by the claim before any scoring; the kind builds the rest as for a ranked claim: baseline
rows (each task's unpatched contrast, intended positive, with its first control's), control feature sets outside
the claimed features (3 random and 3 density-matched, seeds 7/11/13, and the bottom-active set: density from the
activations at every position of the discovery prompts), ablation in delta mode at the claim's positions, the
discovery set frozen with the discovery tasks, and held-out on the bank's held-out tasks.
"""

from __future__ import annotations

import numpy as np

from ..banks import feature_sets as fsets
from ..banks.calibration import final_contrasts
from ..evidence import BaselineRow
from . import _tests
from .sae_select import CONTROL_SEEDS, evaluate, order_scores


def baseline_rows(model, tasks) -> list[BaselineRow]:
    pairs = [t.pair for t in tasks]
    controls = [t.controls[0][1] if t.controls else None for t in tasks]
    clean = final_contrasts(model, [p.clean for p in pairs], [p.target for p in pairs], [p.foil for p in pairs])
    with_control = [c for c in controls if c is not None]
    scored = iter(final_contrasts(model, [c.clean for c in with_control], [c.target for c in with_control],
                                  [c.foil for c in with_control]) if with_control else [])
    return [BaselineRow(p.prompt_id, p.family, v, "positive", next(scored) if c is not None else None)
            for p, v, c in zip(pairs, clean, controls)]


def all_position_activations(model, sae, tasks) -> np.ndarray:
    """[positions, d_sae]: ``sae.encode`` at the SAE's hook over every position of every clean prompt."""
    import torch

    hook = sae.cfg.metadata.hook_name
    out = []
    with torch.no_grad():
        for t in tasks:
            _, cache = model.run_with_cache(torch.tensor([t.pair.clean], device=model.cfg.device),
                                            names_filter=lambda n: n == hook)
            out.append(sae.encode(cache[hook][0].to(sae.device, sae.dtype)).float().cpu().numpy())
    return np.concatenate(out)


def preregistered_sets(acts: np.ndarray, features) -> list:
    """The claimed features (label ``top``) first, the rest ranked by mean activation; then the control sets."""
    k, mean = len(features), acts.mean(0)
    rest = [int(f) for f in np.lexsort((np.arange(len(mean)), -mean)) if int(f) not in features]
    scores = order_scores(np.array(list(features) + rest))
    return ([fsets.top_set(scores, k)] + [fsets.random_set(scores, k, s) for s in CONTROL_SEEDS]
            + [fsets.density_matched_set(acts, scores, k, s) for s in CONTROL_SEEDS]
            + [fsets.bottom_active_set(acts, mean, k)])


def record_stage(claim, mechclaim, request, stage: str) -> None:
    """Discovery or held-out of a preregistered-feature claim (``SAEFeatureClaim(features=...)``)."""
    study = claim.study
    model, sae = _tests.load(request, study.model), _tests.load(request, study.sae)
    bank, store = study.bank, _tests.use_store(mechclaim, request)
    discovery = _tests.cached(request, ("sae-tasks", study, "discovery"), lambda: bank.tasks(model, "discovery"))
    sets = _tests.cached(request, ("sae-sets", study, claim.features), lambda: preregistered_sets(
        all_position_activations(model, sae, discovery), claim.features))
    about = {"detail": {"features": list(claim.features), "feature_sets": [
        {"label": s.label, "kind": s.kind, "features": list(s.features), "seed": s.seed} for s in sets]}}
    if stage == "discovery":
        mechclaim.freeze(["top"], discovery, **about)
        tasks = discovery
    else:
        mechclaim.declare("frozen_candidates", store.freeze(claim.id, ["top"], discovery, **about).summary())
        tasks = bank.tasks(model, stage)
        if not mechclaim.gate.add(store.check_tasks(claim.id, tasks)).passed:
            return
    mechclaim.attach("feature_sets", [s.to_dict() for s in sets])
    mechclaim.record_baseline(baseline_rows(model, tasks))
    mechclaim.record(evaluate(model, sae, tasks, sets, claim.operations, positions=study.positions))
    mechclaim.gate.positive_share()
