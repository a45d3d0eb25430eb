"""The intervention engine: (model, tasks, units, interventions, positions) -> evidence rows.

Three kinds of unit, each row recording its actual patch ``scope``:

* heads (``head_evidence``), on ``blocks.L.attn.hook_z`` one query head at a time (``single_head_z``; with GQA a
  query head's z is its own even when its keys/values are shared):
  ``clean_to_corrupt`` (corrupt run, the head's z at the position replaced by the clean run's; delta = patched -
  corrupt), ``zero``, ``mean`` and ``resample`` (clean run; delta = patched - clean). Mean and resample draw from
  the clean prompts of the tasks' own pairs at the same position label; the row's intervention name records the
  source and its size (``mean[source=clean,n=24]``) or the resample seed (``resample[seed=0]``);
* residual-stream layers (``resid_evidence``): ``blocks.L.hook_resid_post`` at the position, clean -> corrupt
  (``full_resid_post_layer``, never head-specific);
* SAE feature sets (``sae_evidence``) on a SAELens ``SAE`` at its own hook (``blocks.L.hook_resid_pre/post``):
  ``ablate`` (features set to 0) and ``amplify`` (multiplied by ``factor`` > 0, != 1) on the clean run, in ``delta``
  mode (x + decode(modified) - decode(original), the default: the SAE's reconstruction error stays in) or
  ``replace`` mode (decode(modified), plus the error term x - decode(encode(x)) when ``error_term``, by default the
  SAE's own ``use_error_term``). Scope ``sae_features`` when the reconstruction error is kept, and
  ``sae_reconstruction_replace`` when the whole activation is replaced by the SAE's reconstruction.

Positions: ``final``, any label a prompt carries (``previous_occurrence``, ``distractor``, ...), or ``all``. A prompt
without the position gives a ``not_applicable`` row with the reason, never a dropped row.

Inputs are checked before any forward pass (``inputs.py``): token ids in [0, d_vocab), target/foil ids in
[0, d_vocab_out), prompts at most n_ctx long, else one ``EngineError`` naming each prompt, value and range. A pair
whose clean and corrupt prompts are identical measures nothing: its rows are ``invalid`` (``clean_equals_corrupt``),
so the verdict is ``blocked`` when every row is, and capped at ``insufficient`` otherwise; such a pair is never a
mean/resample source.

Every intervention is applied to each matched control pair as well (its own clean/corrupt/target/foil) for the
paired control delta. Telemetry on every intervention (SELF-GROUND's): activation norm ‖x‖ and patched norm ‖x'‖
at the intervened site and positions (for a head: the residual right after its layer), relative norm drift
|‖x'‖ - ‖x‖| / ‖x‖ and decoded-delta ratio ‖Δ‖ / ‖x‖ (Δ = decode(modified) - decode(original) for SAEs, x' - x
otherwise), each warned above its threshold (0.5 by default). Rows carry the mean drift and the max ratio of target
and control; ``Evidence.telemetry`` keeps all of them per row. Non-finite telemetry makes the row invalid.

Metrics: see ``metrics.py`` (default: the target - foil logit contrast).

Two paths compute the same numbers: ``reference`` (plain ``run_with_hooks`` per cell) and ``fast`` (cached runs,
stacked variants, tail recompute; see ``tail.py``). ``path="auto"`` (the default) takes the fast path unless the
model has parts the tail recompute does not reproduce, or its self-check against the model's own forward fails;
``Evidence.meta["path"]`` says which ran and why.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..evidence import EvidenceRow
from ..tasks import Task
from .arch import FastPathUnsupported
from .cache import ACTIVATION_CACHE, ActivationCache
from .inputs import task_problems
from .metrics import DEFAULT_METRIC, METRICS, check_metric
from .plan import INVALID_REASONS, POSITION_ALL, Cell, Recipe, SAEOp, SourceSets, recipe


class EngineError(ValueError):
    pass


HEAD = re.compile(r"^L(\d+)H(\d+)$")
SAE_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
HEAD_INTERVENTIONS = ("clean_to_corrupt", "zero", "mean", "resample")
SAE_OPERATIONS = ("ablate", "amplify")
PATHS = ("auto", "fast", "reference")

__all__ = ["ACTIVATION_CACHE", "EngineError", "Evidence", "HEAD_INTERVENTIONS", "HeadRequest", "METRICS",
           "head_evidence", "head_evidence_many", "parse_head", "resid_evidence", "sae_evidence"]


class Evidence(list):
    """Evidence rows (a plain list of EvidenceRow) plus ``telemetry`` (one dict per row, same order) and ``meta``
    (which path ran, the metric, mean/resample sources, SAE mode and error-term handling, thresholds)."""

    def __init__(self, rows=(), telemetry=(), meta=None):
        super().__init__(rows)
        self.telemetry = list(telemetry)
        self.meta = dict(meta or {})


def parse_head(unit: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    match = HEAD.match(unit)
    if not match:
        raise EngineError(f"unit {unit!r} is not a head name like 'L1H0'")
    layer, head = int(match.group(1)), int(match.group(2))
    if layer >= n_layers or head >= n_heads:
        raise EngineError(f"unit {unit} does not exist: the model has {n_layers} layers x {n_heads} heads")
    return layer, head


def _check_common(model, tasks, positions, metric, path):
    if not tasks:
        raise EngineError("no tasks given")
    problems = task_problems(model, tasks)
    if problems:  # before any forward pass: a wrapped negative id or an over-long prompt would run silently/crash
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise EngineError("engine input cannot be run:\n  " + "\n  ".join(shown))
    _check_positions(positions)
    check_metric(metric)
    if path not in PATHS:
        raise EngineError(f"path must be one of {PATHS}, got {path!r}")


def _check_positions(positions):
    if not positions or any(not isinstance(p, str) or not p for p in positions):
        raise EngineError(f"positions must be non-empty labels, got {positions!r}")


# ------------------------------------------------------------------------------------------------ public API
@dataclass(frozen=True)
class HeadRequest:
    """One set of head cells for ``head_evidence_many``: heads x positions x interventions, rows labelled
    ``unit_set``."""

    heads: tuple[str, ...]
    interventions: tuple[str, ...] = ("clean_to_corrupt", "zero")
    positions: tuple[str, ...] = ("final",)
    unit_set: str = "target"


def head_evidence(model, tasks: Iterable[Task], heads: Sequence[str],
                  interventions: Sequence[str] = ("clean_to_corrupt", "zero"), positions: Sequence[str] = ("final",),
                  unit_set: str = "target", drift_warning: float = 0.5, delta_ratio_warning: float = 0.5, *,
                  metric: str = DEFAULT_METRIC, resample_seed: int = 0, path: str = "auto",
                  cache: ActivationCache = ACTIVATION_CACHE) -> Evidence:
    """One row per task x control suite x head x position x intervention (a task without controls gives one row
    per cell, without a control delta)."""
    request = HeadRequest(tuple(heads), tuple(interventions), tuple(positions), unit_set)
    return head_evidence_many(model, tasks, [request], drift_warning, delta_ratio_warning, metric=metric,
                              resample_seed=resample_seed, path=path, cache=cache)[0]


def head_evidence_many(model, tasks: Iterable[Task], requests: Sequence[HeadRequest], drift_warning: float = 0.5,
                       delta_ratio_warning: float = 0.5, *, metric: str = DEFAULT_METRIC, resample_seed: int = 0,
                       path: str = "auto", cache: ActivationCache = ACTIVATION_CACHE) -> list[Evidence]:
    """``head_evidence`` for several requests over the same tasks, measured together: the union of their cells
    runs in one executor call (one batched tail pass per prompt group, however many requests share it; a cell two
    requests share is measured once). Each request's Evidence has exactly the rows, in the order, that
    ``head_evidence`` gives it alone; ``meta["measured_with"]`` counts the cells measured in the same call."""
    tasks = list(tasks)
    if not requests:
        raise EngineError("no head requests given")
    _check_common(model, tasks, requests[0].positions, metric, path)
    for r in requests[1:]:
        _check_positions(r.positions)
    sources = SourceSets(_source_pairs(tasks), resample_seed)
    per_request, metas = [], []
    for r in requests:
        unknown = [op for op in r.interventions if op not in HEAD_INTERVENTIONS]
        if unknown:
            raise EngineError(f"unknown head interventions {unknown}; known: {list(HEAD_INTERVENTIONS)}")
        if POSITION_ALL in r.positions and {"mean", "resample"} & set(r.interventions):
            raise EngineError("mean and resample ablation take their source at one labelled position; "
                              "position 'all' is only defined for clean_to_corrupt and zero")
        per_request.append(_head_cells(model, r, sources, resample_seed))
        metas.append({"mean_source": {label: {"source": "clean prompts of the tasks' own pairs",
                                              "n": len(sources.mean_pool(label))} for label in r.positions}
                      if "mean" in r.interventions else None,
                      "resample_seed": resample_seed if "resample" in r.interventions else None})
    union = list(dict.fromkeys(c for cells in per_request for c in cells))
    measured = _measure_cells(model, tasks, union, metric, sources, path, cache)
    return [_rows(model, tasks, cells, r.unit_set, metric, measured, drift_warning, delta_ratio_warning,
                  {**meta, "measured_with": len(union)})
            for r, cells, meta in zip(requests, per_request, metas)]


def _head_cells(model, r: HeadRequest, sources: SourceSets, resample_seed: int) -> list[Cell]:
    cells = []
    for unit in r.heads:
        layer, head = parse_head(unit, model.cfg.n_layers, model.cfg.n_heads)
        for label in r.positions:
            for op in r.interventions:
                name = {"mean": f"mean[source=clean,n={len(sources.mean_pool(label))}]",
                        "resample": f"resample[seed={resample_seed}]"}.get(op, op)
                cells.append(Cell(unit, name, "clean" if op == "clean_to_corrupt" else op, label, "single_head_z",
                                  "corrupt" if op == "clean_to_corrupt" else "clean", f"blocks.{layer}.attn.hook_z",
                                  layer, "z", head=head))
    return cells


def resid_evidence(model, tasks: Iterable[Task], layers: Sequence[int], positions: Sequence[str] = ("final",),
                   unit_set: str = "target", drift_warning: float = 0.5, delta_ratio_warning: float = 0.5, *,
                   metric: str = DEFAULT_METRIC, path: str = "auto",
                   cache: ActivationCache = ACTIVATION_CACHE) -> Evidence:
    """Clean -> corrupt patches of the whole residual stream after layer L (unit ``L{L}.resid_post``)."""
    tasks = list(tasks)
    _check_common(model, tasks, positions, metric, path)
    n_layers = model.cfg.n_layers
    bad = [l for l in layers if not isinstance(l, int) or not 0 <= l < n_layers]
    if bad or not layers:
        raise EngineError(f"layers must be ints in [0, {n_layers}), got {list(layers)!r}")
    cells = [Cell(f"L{l}.resid_post", "clean_to_corrupt", "clean", label, "full_resid_post_layer", "corrupt",
                  f"blocks.{l}.hook_resid_post", l, "resid", resid_index=l + 1)
             for l in layers for label in positions]
    sources = SourceSets(_source_pairs(tasks))
    return _evidence(model, tasks, cells, unit_set, metric, sources, drift_warning, delta_ratio_warning, path,
                     cache, {})


def sae_evidence(model, tasks: Iterable[Task], sae, feature_sets: Mapping[str, Sequence[int]],
                 operations: Sequence = ("ablate", ("amplify", 2.0)), mode: str = "delta",
                 error_term: bool | None = None, positions: Sequence[str] = ("final",), unit_set: str = "target",
                 drift_warning: float = 0.5, delta_ratio_warning: float = 0.5, *, metric: str = DEFAULT_METRIC,
                 path: str = "auto", cache: ActivationCache = ACTIVATION_CACHE) -> Evidence:
    """One row per task x control suite x feature set x position x operation. ``feature_sets`` maps a label (the
    rows' unit, e.g. ``top`` or ``random_seed_7``) to SAE feature indices; ``operations`` holds ``"ablate"`` and/or
    ``("amplify", factor)``."""
    tasks = list(tasks)
    _check_common(model, tasks, positions, metric, path)
    layer, resid_index, hook = _sae_site(model, sae)
    if mode not in ("delta", "replace"):
        raise EngineError(f"SAE mode must be 'delta' or 'replace', got {mode!r}")
    if error_term is None:
        error_term = bool(getattr(sae, "use_error_term", False))
    if not feature_sets:
        raise EngineError("no SAE feature sets given")
    d_sae = sae.cfg.d_sae
    for label, feats in feature_sets.items():
        feats = list(feats)
        if not feats or len(set(feats)) != len(feats) or any(not 0 <= int(f) < d_sae for f in feats):
            raise EngineError(f"feature set {label!r} must be distinct indices in [0, {d_sae}), got {feats}")
    ops = [_sae_operation(op) for op in operations]
    if not ops:
        raise EngineError("no SAE operations given")
    kept = mode == "delta" or error_term
    scope = "sae_features" if kept else "sae_reconstruction_replace"
    cells = [Cell(label, op, "sae", pos, scope, "clean", hook, layer, "resid", resid_index=resid_index,
                  factor=factor, sae_op=SAEOp(sae, id(sae), tuple(int(f) for f in feats), op, factor, mode,
                                              bool(error_term)))
             for label, feats in feature_sets.items() for pos in positions for op, factor in ops]
    sources = SourceSets(_source_pairs(tasks))
    meta = {"sae": {"hook": hook, "d_sae": d_sae, "mode": mode,
                    "error_term": "kept" if kept else "dropped",
                    "architecture": type(sae).__name__, "feature_sets": {k: list(v) for k, v in feature_sets.items()}}}
    return _evidence(model, tasks, cells, unit_set, metric, sources, drift_warning, delta_ratio_warning, path,
                     cache, meta)


def _sae_site(model, sae) -> tuple[int, int, str]:
    metadata = getattr(sae.cfg, "metadata", None)
    hook = getattr(metadata, "hook_name", None)
    match = SAE_HOOK.match(hook or "")
    if not match:
        raise EngineError(f"the SAE's hook {hook!r} is not a residual hook 'blocks.L.hook_resid_pre/post'")
    layer = int(match.group(1))
    if layer >= model.cfg.n_layers:
        raise EngineError(f"the SAE's hook {hook} is beyond the model's {model.cfg.n_layers} layers")
    if sae.cfg.d_in != model.cfg.d_model:
        raise EngineError(f"the SAE reads d_in={sae.cfg.d_in}, the model's residual is d_model={model.cfg.d_model}")
    if getattr(sae.cfg, "reshape_activations", "none") != "none":
        raise EngineError(f"SAE reshape_activations={sae.cfg.reshape_activations!r} is not a residual SAE")
    return layer, layer + (match.group(2) == "post"), hook


def _sae_operation(op) -> tuple[str, float | None]:
    if op == "ablate":
        return "ablate", None
    if isinstance(op, (tuple, list)) and len(op) == 2 and op[0] == "amplify":
        factor = float(op[1])
        if not (math.isfinite(factor) and factor > 0 and factor != 1.0):
            raise EngineError(f"amplify factor must be finite, > 0 and != 1, got {op[1]!r}")
        return "amplify", factor
    raise EngineError(f"SAE operations are 'ablate' or ('amplify', factor), got {op!r}")


def _source_pairs(tasks) -> list:
    """The pairs mean/resample draw from: the tasks' own, except identical clean/corrupt pairs (their rows are
    invalid, so they contribute nothing to the valid rows either)."""
    return [p for p in dict.fromkeys(t.pair for t in tasks) if not p.identical]


# ------------------------------------------------------------------------------------------------- the rows
def _measure(model, pairs, cells, recipes, metric, sources, path, cache):
    from .execute import measure_fast, measure_reference

    if path == "reference":
        return measure_reference(model, pairs, cells, recipes, metric, sources), "reference"
    try:
        return measure_fast(model, pairs, cells, recipes, metric, sources, cache), "fast"
    except FastPathUnsupported as exc:
        if path == "fast":
            raise EngineError(f"fast path unavailable for this model: {exc}") from exc
        warnings.warn(f"mechclaim engine: fast path unavailable ({exc}); using the reference path", stacklevel=3)
        return measure_reference(model, pairs, cells, recipes, metric, sources), f"reference (fast path: {exc})"


def _side(m) -> dict:
    return {"activation_norm": m.activation_norm, "patched_norm": m.patched_norm, "norm_drift": m.drift,
            "decoded_delta_ratio": m.delta_ratio}


LENGTH_BINS = (8, 16, 32, 64)  # prompt length in tokens: <=8, 9-16, 17-32, 33-64, >64


def _pair_strata(model, pair, cache: dict) -> tuple:
    """Where a row sits inside its family, for ``gates.stratum_minimum``: the target token (its string when the
    model has a tokenizer, else ``id:N``), the clean prompt's length bin, and the pair's domain when it has one."""
    if pair not in cache:
        tokenizer = getattr(model, "tokenizer", None)
        token = tokenizer.decode([pair.target]) if tokenizer is not None else f"id:{pair.target}"
        n = len(pair.clean)
        low = max([0] + [b for b in LENGTH_BINS if b < n])
        high = next((b for b in LENGTH_BINS if n <= b), None)
        length = f"{low + 1}-{high}" if high is not None else f">{LENGTH_BINS[-1]}"
        strata = {"target_token": token, "length_bin": length}
        if isinstance(getattr(pair, "domain", None), str):
            strata["domain"] = pair.domain
        cache[pair] = tuple(sorted(strata.items()))
    return cache[pair]


def _measure_cells(model, tasks, cells, metric, sources, path, cache) -> dict:
    """Everything rows are built from: the pairs (tasks' and their controls'), each (pair, cell)'s recipe, the
    baselines and measurements, and which path ran."""
    pairs = list(dict.fromkeys([t.pair for t in tasks] + [c for t in tasks for _, c in t.controls]))
    recipes = {(p, c): recipe(p, c, sources) for p in pairs for c in cells}
    (baselines, measured), used = _measure(model, pairs, cells, recipes, metric, sources, path, cache)
    return {"recipes": recipes, "baselines": baselines, "measured": measured, "path": used}


def _evidence(model, tasks, cells, unit_set, metric, sources, drift_warning, delta_ratio_warning, path, cache,
              meta) -> Evidence:
    measured = _measure_cells(model, tasks, cells, metric, sources, path, cache)
    return _rows(model, tasks, cells, unit_set, metric, measured, drift_warning, delta_ratio_warning, meta)


def _rows(model, tasks, cells, unit_set, metric, results: dict, drift_warning, delta_ratio_warning,
          meta) -> Evidence:
    recipes, baselines, measured = results["recipes"], results["baselines"], results["measured"]
    rows, tel, strata_cache = [], [], {}
    for task in tasks:
        pair = task.pair
        for cell in cells:
            for suite, control in (list(task.controls) or [(None, None)]):
                common = dict(unit=cell.unit, intervention=cell.intervention, factor=cell.factor,
                              prompt_id=pair.prompt_id, family=pair.family, family_role=pair.family_role,
                              unit_set=unit_set, control_suite=suite, position=cell.position, seed=pair.seed,
                              scope=cell.scope, run=cell.run, prompt=pair.text,
                              control_prompt=control.text if control is not None else None,
                              clean=baselines[pair][0], corrupt=baselines[pair][1],
                              strata=_pair_strata(model, pair, strata_cache))
                problems = [r for r in (recipes[(pair, cell)],
                                        recipes[(control, cell)] if control is not None else None)
                            if isinstance(r, str)]
                if problems:
                    status = "invalid" if problems[0] in INVALID_REASONS else "not_applicable"
                    rows.append(EvidenceRow(**common, status=status, reason=problems[0]))
                    tel.append(None)
                    continue
                m = measured[(pair, cell)]
                mc = measured[(control, cell)] if control is not None else None
                sides = [m] + ([mc] if mc is not None else [])
                base = lambda p: baselines[p][0 if cell.run == "clean" else 1]
                drifts, ratios = [s.drift for s in sides], [s.delta_ratio for s in sides]
                warned = []
                if max(drifts) > drift_warning:
                    warned.append(f"norm_drift>{drift_warning}")
                if max(ratios) > delta_ratio_warning:
                    warned.append(f"decoded_delta_ratio>{delta_ratio_warning}")
                row_tel = {"target": _side(m), "control": _side(mc) if mc is not None else None,
                           "warnings": warned}
                nonfinite = sorted({k for s in sides for k, v in _side(s).items() if not math.isfinite(v)})
                extra = {"status": "invalid", "reason": "nonfinite_telemetry:" + ",".join(nonfinite)} \
                    if nonfinite else {}
                rows.append(EvidenceRow(
                    **common, patched=m.metric, target_delta=m.metric - base(pair),
                    control_delta=mc.metric - base(control) if mc is not None else None,
                    norm_drift=sum(drifts) / len(drifts), decoded_delta_ratio=max(ratios),
                    norm_warning=bool(warned), drift_warning=bool(max(drifts) > drift_warning),
                    delta_ratio_warning=bool(max(ratios) > delta_ratio_warning), **extra))
                tel.append(row_tel)
    meta = {k: v for k, v in meta.items() if v is not None}
    meta.update(path=results["path"], metric=metric,
                thresholds={"norm_drift": drift_warning, "decoded_delta_ratio": delta_ratio_warning})
    return Evidence(rows, tel, meta)
