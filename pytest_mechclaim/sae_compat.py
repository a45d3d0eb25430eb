"""The SAE compatibility gate: an SAE is evidence about a model only if it was made for that model, at that hook.

Fail closed (SELF-GROUND's ``sae_compat``, reference/seed-systems.md §1.4), in three tiers:

* structure (never overridable: the SAE cannot even be run): the claim's prompts are usable (at least one, ids in
  [0, d_vocab), at most n_ctx long), the hook exists in the model (``model.hook_dict``, bridge aliases resolved to
  their hook point), ``d_in`` equals the activation width, encode gives ``[.., d_sae]``, decode gives the
  activation's shape, weights and reconstruction are finite;
* metadata: the SAE declares its model and hook; the checkpoint is the same (names normalized: lowercase, text
  after the last '/', TransformerLens aliases resolved, so ``pythia-70m`` != ``pythia-70m-deduped``); the hook's
  layer and type (``blocks.(\\d+).hook_(\\w+)``) match the claim's; the weight processing it was trained on
  (``model_from_pretrained_kwargs``) matches the model's (a folded/centred residual is a different coordinate system);
* quality on the claim's own prompts: explained variance, CE loss recovered, L0, dead-feature share.

Any failure gives ``caps_at=BLOCKED`` naming the mismatch. ``allow_mismatch=True`` is a deliberate diagnostic
override: metadata and quality failures no longer block, but the run is diagnostic-only and the claim is capped at
``insufficient`` (SELF-GROUND's rule), whether or not anything mismatched. Structural failures stay blocked.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from .gates import GateResult, first_failing, sub_check
from .models import canonical_model_name, model_provenance
from .status import Status

GATE_NAME = "sae_compatibility"
HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(?:attn\.|mlp\.)?hook_(\w+)$")


@dataclass(frozen=True)
class SAECompatThresholds:
    """Quality floors on the claim's own prompts.

    Dead share is measured on those prompts too: a handful of prompts leaves many healthy features silent, so its
    ceiling is loose; it catches dictionaries that are mostly dead.
    """

    min_explained_variance: float = 0.5
    min_ce_loss_recovered: float = 0.7
    min_l0: float = 1.0
    max_l0_fraction: float = 0.25    # of d_sae: a code this dense is not sparse
    max_dead_share: float = 0.95


def parse_hook(name: str) -> tuple[int | None, str]:
    """(layer, hook type) of a TL hook name; (None, name) for names outside ``blocks.L``."""
    match = HOOK_PATTERN.match(name)
    return (int(match.group(1)), match.group(2)) if match else (None, name)


def _hook_point(model, name: str):
    return model.hook_dict.get(name)


def _same_hook(model, a: str, b: str) -> bool:
    """Equal names, or two names (legacy alias and canonical bridge name) of one hook point."""
    if a == b:
        return True
    pa, pb = _hook_point(model, a), _hook_point(model, b)
    return pa is not None and pa is pb


def _declared(sae, key: str):
    value = sae.cfg.metadata.get(key) if hasattr(sae.cfg.metadata, "get") else None
    return value if value not in ("", None) else None


def metadata_problems(model, sae, hook_name: str | None, model_name: str | None) -> tuple[list[str], dict]:
    """Mismatches between what the SAE declares and the model/hook the claim uses."""
    problems: list[str] = []
    declared_model, declared_hook = _declared(sae, "model_name"), _declared(sae, "hook_name")
    prov = model_provenance(model)
    actual_name = model_name or (prov.name if prov else None)
    details = {"sae_model_name": declared_model, "sae_hook_name": declared_hook, "model_name": actual_name}
    if declared_model is None:
        problems.append("the SAE declares no model_name: its checkpoint cannot be checked")
    elif actual_name is None:
        problems.append("the model's checkpoint name is unknown (no provenance, no model_name given)")
    elif canonical_model_name(declared_model) != canonical_model_name(actual_name):
        problems.append(f"checkpoint mismatch: SAE trained on {declared_model!r} "
                        f"({canonical_model_name(declared_model)}), model is {actual_name!r} "
                        f"({canonical_model_name(actual_name)})")
    if declared_hook is None:
        problems.append("the SAE declares no hook_name")
    elif hook_name is not None and not _same_hook(model, declared_hook, hook_name):
        (d_layer, d_type), (c_layer, c_type) = parse_hook(declared_hook), parse_hook(hook_name)
        parts = []
        if d_layer != c_layer:
            parts.append(f"layer {d_layer} != {c_layer}")
        if d_type != c_type:
            parts.append(f"hook type {d_type!r} != {c_type!r}")
        problems.append(f"hook mismatch: SAE trained on {declared_hook!r}, claim reads {hook_name!r} "
                        f"({', '.join(parts) or 'different hook point'})")
    declared_processing = _declared(sae, "model_from_pretrained_kwargs") or {}
    if prov is not None and declared_processing:
        differing = {k: (v, prov.processing.get(k)) for k, v in declared_processing.items()
                     if k in prov.processing and prov.processing[k] != v}
        details["sae_processing"] = dict(declared_processing)
        details["model_processing"] = dict(prov.processing)
        if differing:
            problems.append("weight processing mismatch (SAE value, model value): "
                            + ", ".join(f"{k}={a}/{b}" for k, (a, b) in sorted(differing.items())))
    return problems, details


def structure_problems(model, sae, hook_name: str, tokens) -> tuple[list[str], dict]:
    """Can the SAE be run on this hook at all: hook exists, widths, shapes, finite weights and reconstruction."""
    import torch

    details: dict = {"d_in": int(sae.cfg.d_in), "d_sae": int(sae.cfg.d_sae)}
    point = _hook_point(model, hook_name)
    if point is None:
        return [f"hook {hook_name!r} does not exist in the model"], details
    details["hook_point"] = getattr(point, "name", None) or hook_name
    bad_params = [name for name, p in sae.named_parameters() if not torch.isfinite(p).all()]
    if bad_params:
        return [f"non-finite SAE weights: {', '.join(bad_params)}"], details
    with torch.no_grad():
        layer = parse_hook(hook_name)[0]
        stop = None if layer is None else layer + 1  # later layers cannot change this activation
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == hook_name, stop_at_layer=stop)
        if hook_name not in cache:
            return [f"hook {hook_name!r} did not fire on the claim's prompts"], details
        acts = cache[hook_name].to(sae.device, sae.dtype)
        details["activation_shape"] = list(acts.shape)
        if acts.shape[-1] != sae.cfg.d_in:
            return [f"width mismatch: SAE d_in {sae.cfg.d_in} != activation width {acts.shape[-1]} "
                    f"at {hook_name!r}"], details
        feats = sae.encode(acts)
        recon = sae.decode(feats)
    problems = []
    details["encoded_shape"], details["decoded_shape"] = list(feats.shape), list(recon.shape)
    if tuple(feats.shape) != (*acts.shape[:-1], sae.cfg.d_sae):
        problems.append(f"encode shape {list(feats.shape)} != {[*acts.shape[:-1], sae.cfg.d_sae]}")
    if recon.shape != acts.shape:
        problems.append(f"decode shape {list(recon.shape)} != activation shape {list(acts.shape)}")
    if not problems:
        err = (recon - acts).float()
        mse, max_abs = float((err ** 2).mean()), float(err.abs().max())
        rel_l2 = float(err.norm(dim=-1).mean() / (acts.float().norm(dim=-1).mean() + 1e-12))
        details.update(reconstruction_mse=mse, reconstruction_max_abs=max_abs, reconstruction_l2_relative=rel_l2)
        if not all(math.isfinite(x) for x in (mse, max_abs, rel_l2)):
            problems.append(f"non-finite reconstruction (mse={mse}, max_abs={max_abs})")
    return problems, details


def quality_checks(quality, d_sae: int, t: SAECompatThresholds) -> list[dict]:
    """Each quality floor as a sub-check (name, value, threshold, comparison, passed)."""
    return [sub_check("explained_variance", quality.explained_variance, t.min_explained_variance, ">="),
            sub_check("ce_loss_recovered", quality.ce_loss_recovered, t.min_ce_loss_recovered, ">="),
            sub_check("l0", quality.l0, t.min_l0, ">="),
            sub_check("l0", quality.l0, t.max_l0_fraction * d_sae, "<="),
            sub_check("dead_share", quality.dead_share, t.max_dead_share, "<=")]


def quality_problems(quality, d_sae: int, t: SAECompatThresholds) -> list[str]:
    problems = []
    if not quality.explained_variance >= t.min_explained_variance:
        problems.append(f"explained variance {quality.explained_variance:.3f} < {t.min_explained_variance}")
    if not quality.ce_loss_recovered >= t.min_ce_loss_recovered:
        problems.append(f"CE loss recovered {quality.ce_loss_recovered:.3f} < {t.min_ce_loss_recovered}")
    max_l0 = t.max_l0_fraction * d_sae
    if not t.min_l0 <= quality.l0 <= max_l0:
        problems.append(f"L0 {quality.l0:.1f} outside [{t.min_l0}, {max_l0:.0f}]")
    if not quality.dead_share <= t.max_dead_share:
        problems.append(f"dead-feature share {quality.dead_share:.3f} > {t.max_dead_share}")
    return problems


def token_problems(model, tokens) -> tuple[object, list[str]]:
    """(tokens as a [batch, pos] long tensor or None, problems): no prompts, ragged or non-integer input, ids outside
    the vocabulary (TL wraps a negative id to a real token) or prompts longer than the model's context."""
    import torch

    try:
        raw = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError) as exc:
        return None, [f"the claim's prompts are not a [batch, pos] array of token ids ({exc})"]
    if raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool:
        return None, [f"the claim's prompts must be integer token ids, got dtype {raw.dtype}"]
    if raw.ndim != 2:
        return None, [f"the claim's prompts must be [batch, pos] token ids, got shape {list(raw.shape)}"]
    if raw.shape[0] == 0 or raw.shape[1] == 0:
        return None, [f"no prompts to check the SAE on (shape {list(raw.shape)})"]
    tokens = raw.to(torch.long)
    problems = []
    d_vocab, n_ctx = getattr(model.cfg, "d_vocab", None), getattr(model.cfg, "n_ctx", None)
    if d_vocab is not None:
        bad = ((tokens < 0) | (tokens >= d_vocab)).nonzero().tolist()
        if bad:
            shown = ", ".join(f"{int(tokens[b, p])} (prompt {b}, position {p})" for b, p in bad[:5])
            problems.append(f"token id(s) outside the model's vocabulary [0, {d_vocab}): {shown}"
                            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        problems.append(f"prompts of {tokens.shape[1]} tokens exceed the model's context n_ctx={n_ctx}")
    return tokens, problems


def check_sae_compatibility(model, sae, tokens, *, hook_name: str | None = None, model_name: str | None = None,
                            thresholds: SAECompatThresholds = SAECompatThresholds(),
                            allow_mismatch: bool = False) -> GateResult:
    """The ``sae_compatibility`` gate for ``sae`` read at ``hook_name`` (default: its declared hook) of ``model``.

    ``tokens``: the claim's own prompts ([batch, pos] token ids). ``model_name`` overrides the checkpoint name from
    the model's provenance. Record the result with ``mechclaim.gate.add(result)``. Prompts that cannot be run (none,
    ragged, ids outside the vocabulary, longer than n_ctx) give a blocked result naming the problem.
    """
    from .sae_quality import sae_quality

    hook_name = hook_name or _declared(sae, "hook_name")
    tokens, inputs = token_problems(model, tokens)
    meta, details = metadata_problems(model, sae, hook_name, model_name)
    details.update(hook_name=hook_name, n_prompts=int(tokens.shape[0]) if tokens is not None else 0,
                   allow_mismatch=allow_mismatch, thresholds=asdict(thresholds))
    # Unusable prompts block like a structural failure (never overridable): nothing about the SAE can be measured.
    structural = list(inputs)
    if not hook_name:
        structural.append("no hook to read: the claim names none and the SAE declares none")
    if not structural:
        found, shape_details = structure_problems(model, sae, hook_name, tokens)
        structural += found
        details.update(shape_details)
    quality_found: list[str] = []
    quality = None
    if not structural:
        quality = sae_quality(model, sae, tokens, hook_name)
        details["quality"] = quality.to_dict()
        quality_found = quality_problems(quality, int(sae.cfg.d_sae), thresholds)
    details["problems"] = {"structure": structural, "metadata": meta, "quality": quality_found}
    # The table shows the quantity that decided: the first failing quality sub-check (e.g. CE recovered 0.666 >= 0.7
    # FAIL), never explained variance passing next to FAIL; a structural or metadata failure shows no number.
    checks = quality_checks(quality, int(sae.cfg.d_sae), thresholds) if quality is not None else []
    details["checks"] = checks
    shown = first_failing(checks) or (checks[0] if checks else None)
    if structural or meta or shown is None:
        shown = {"value": None, "threshold": None, "comparison": "=="}
    common = dict(name=GATE_NAME, value=shown["value"], threshold=shown["threshold"], comparison=shown["comparison"],
                  details=details)
    if structural:
        return GateResult(passed=False, caps_at=Status.BLOCKED,
                          reason="SAE cannot be used here: " + "; ".join(structural + meta), **common)
    if allow_mismatch:
        found = meta + quality_found
        return GateResult(passed=False, caps_at=Status.INSUFFICIENT,
                          reason="diagnostic only (allow_mismatch=True), not evidence: "
                                 + ("; ".join(found) if found else "no mismatch found, but the override was set"),
                          **common)
    if meta or quality_found:
        return GateResult(passed=False, caps_at=Status.BLOCKED, reason="; ".join(meta + quality_found), **common)
    q = quality
    return GateResult(passed=True, caps_at=Status.STRONG,
                      reason=f"SAE fits {details['model_name']} at {hook_name}: EV {q.explained_variance:.3f}, "
                             f"CE recovered {q.ce_loss_recovered:.3f}, L0 {q.l0:.1f}, dead {q.dead_share:.3f}",
                      **common)
