"""The intervention engine: (model, tasks, units, interventions, positions) -> evidence rows.

Head interventions act on ``blocks.L.attn.hook_z`` ([batch, pos, head, d_head]), one query head at a time, so
every row's scope is ``single_head_z``:

* ``clean_to_corrupt``: run the corrupt prompt with the head's z at the position replaced by the clean run's;
  the row's ``run`` is "corrupt" and its delta is patched - corrupt;
* ``zero``: run the clean prompt with the head's z at the position set to 0; ``run`` is "clean", delta is
  patched - clean.

The metric is the token contrast logit[target] - logit[foil] at the final position. The same intervention is
applied to each matched control pair (its own clean/corrupt/target/foil) for the paired control delta.

Telemetry: the residual stream right after the intervened layer (``blocks.L.hook_resid_post``) at the intervened
position, patched vs unpatched: relative norm drift |‖x'‖ - ‖x‖| / ‖x‖ and delta ratio ‖x' - x‖ / ‖x‖, each
warned above its threshold (0.5 by default, SELF-GROUND's).

This is the plain reference path: one batched ``run_with_hooks`` per (unit, intervention, position).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from .evidence import EvidenceRow
from .tasks import PromptPair, Task

HEAD = re.compile(r"^L(\d+)H(\d+)$")
HEAD_INTERVENTIONS = ("clean_to_corrupt", "zero")
EPS = 1e-12


class EngineError(ValueError):
    pass


def parse_head(unit: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    match = HEAD.match(unit)
    if not match:
        raise EngineError(f"unit {unit!r} is not a head name like 'L1H0'")
    layer, head = int(match.group(1)), int(match.group(2))
    if layer >= n_layers or head >= n_heads:
        raise EngineError(f"unit {unit} does not exist: the model has {n_layers} layers x {n_heads} heads")
    return layer, head


@dataclass
class _Measured:
    metric: float | None = None
    drift: float | None = None
    delta_ratio: float | None = None
    reason: str | None = None


def _contrast(logits, pairs: Sequence[PromptPair]):
    import torch

    final = logits[:, -1, :]
    idx = torch.arange(len(pairs))
    target = torch.tensor([p.target for p in pairs])
    foil = torch.tensor([p.foil for p in pairs])
    return (final[idx, target] - final[idx, foil]).tolist()


def _measure_group(model, pairs: list[PromptPair], heads: list[tuple[str, int, int]], interventions: Sequence[str],
                   positions: Sequence[str]) -> tuple[dict, dict]:
    """Baselines and patched metrics for a group of equal-length pairs: one batched run per cell."""
    import torch

    device = model.cfg.device
    clean = torch.tensor([p.clean for p in pairs], device=device)
    corrupt = torch.tensor([p.corrupt for p in pairs], device=device)
    layers = sorted({layer for _, layer, _ in heads})
    names = {f"blocks.{l}.attn.hook_z" for l in layers} | {f"blocks.{l}.hook_resid_post" for l in layers}
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n in names)
        corrupt_logits, corrupt_cache = model.run_with_cache(corrupt, names_filter=lambda n: n in names)
    baselines = {"clean": _contrast(clean_logits, pairs), "corrupt": _contrast(corrupt_logits, pairs)}
    patched: dict = {}
    for unit, layer, head in heads:
        z_name, resid_name = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_resid_post"
        for label in positions:
            pos = [p.position(label) for p in pairs]
            have = [i for i, q in enumerate(pos) if q is not None]
            sub = torch.tensor(have, device=device, dtype=torch.long)
            local = torch.arange(len(have), device=device)
            pos_idx = torch.tensor([pos[i] for i in have], device=device, dtype=torch.long)
            for op in interventions:
                measured = [_Measured(reason=f"position_unavailable:{label}") for _ in pairs]
                patched[(unit, op, label)] = measured
                if not have:
                    continue
                base_tokens, base_cache = (corrupt, corrupt_cache) if op == "clean_to_corrupt" else (clean, clean_cache)
                source = clean_cache[z_name][sub, pos_idx, head] if op == "clean_to_corrupt" else 0.0
                seen = {}

                def set_z(z, hook, source=source, head=head, pos_idx=pos_idx):
                    z = z.clone()
                    z[local, pos_idx, head] = source
                    return z

                def keep_resid(x, hook):
                    seen["resid"] = x[local, pos_idx].detach()

                with torch.no_grad():
                    logits = model.run_with_hooks(base_tokens[sub], fwd_hooks=[(z_name, set_z), (resid_name, keep_resid)])
                metric = _contrast(logits, [pairs[i] for i in have])
                orig = base_cache[resid_name][sub, pos_idx]
                new = seen["resid"]
                orig_norm = orig.norm(dim=-1)
                drift = ((new.norm(dim=-1) - orig_norm).abs() / (orig_norm + EPS)).tolist()
                ratio = ((new - orig).norm(dim=-1) / (orig_norm + EPS)).tolist()
                for j, i in enumerate(have):
                    measured[i] = _Measured(metric[j], drift[j], ratio[j])
    return baselines, patched


def _measure(model, pairs: list[PromptPair], heads, interventions, positions) -> dict:
    """Per distinct pair: its clean/corrupt baselines and every cell's measurement."""
    by_shape = defaultdict(list)
    for p in pairs:
        by_shape[(len(p.clean), len(p.corrupt))].append(p)
    out = {}
    for (n_clean, n_corrupt), group in sorted(by_shape.items()):
        if n_clean != n_corrupt:
            for p in group:
                out[p] = None  # rows for these pairs are invalid: position-aligned patching needs equal lengths
            continue
        baselines, patched = _measure_group(model, group, heads, interventions, positions)
        for i, p in enumerate(group):
            out[p] = (baselines["clean"][i], baselines["corrupt"][i], {k: v[i] for k, v in patched.items()})
    return out


def head_evidence(model, tasks: Iterable[Task], heads: Sequence[str],
                  interventions: Sequence[str] = HEAD_INTERVENTIONS, positions: Sequence[str] = ("final",),
                  unit_set: str = "target", drift_warning: float = 0.5, delta_ratio_warning: float = 0.5
                  ) -> list[EvidenceRow]:
    """One row per task x control suite x head x intervention x position (a task without controls gives one row
    per cell, without a control delta)."""
    tasks = list(tasks)
    unknown = [op for op in interventions if op not in HEAD_INTERVENTIONS]
    if unknown:
        raise EngineError(f"unknown head interventions {unknown}; known: {list(HEAD_INTERVENTIONS)}")
    parsed = [(u, *parse_head(u, model.cfg.n_layers, model.cfg.n_heads)) for u in heads]
    pairs = list(dict.fromkeys([t.pair for t in tasks] + [c for t in tasks for _, c in t.controls]))
    measured = _measure(model, pairs, parsed, interventions, positions)

    def delta(pair, op, m: _Measured):
        clean, corrupt, _ = measured[pair]
        return m.metric - (corrupt if op == "clean_to_corrupt" else clean)

    rows = []
    for task in tasks:
        pair = task.pair
        controls = list(task.controls) or [(None, None)]
        for unit, _, _ in parsed:
            for label in positions:
                for op in interventions:
                    for suite, control in controls:
                        common = dict(unit=unit, intervention=op, prompt_id=pair.prompt_id, family=pair.family,
                                      family_role=pair.family_role, unit_set=unit_set, control_suite=suite,
                                      position=label, seed=pair.seed, scope="single_head_z",
                                      run="corrupt" if op == "clean_to_corrupt" else "clean", prompt=pair.text,
                                      control_prompt=control.text if control is not None else None)
                        if measured[pair] is None or (control is not None and measured[control] is None):
                            rows.append(EvidenceRow(**common, status="invalid", reason="clean_corrupt_length_mismatch"))
                            continue
                        clean, corrupt, cells = measured[pair]
                        m = cells[(unit, op, label)]
                        mc = measured[control][2][(unit, op, label)] if control is not None else None
                        missing = m.reason or (mc.reason if mc is not None else None)
                        if missing:
                            rows.append(EvidenceRow(**common, clean=clean, corrupt=corrupt, status="not_applicable",
                                                    reason=missing))
                            continue
                        drifts = [m.drift] + ([mc.drift] if mc is not None else [])
                        ratios = [m.delta_ratio] + ([mc.delta_ratio] if mc is not None else [])
                        rows.append(EvidenceRow(
                            **common, clean=clean, corrupt=corrupt, patched=m.metric,
                            target_delta=delta(pair, op, m),
                            control_delta=delta(control, op, mc) if mc is not None else None,
                            norm_drift=sum(drifts) / len(drifts), decoded_delta_ratio=max(ratios),
                            norm_warning=max(drifts) > drift_warning or max(ratios) > delta_ratio_warning,
                        ))
    return rows
