"""The two executors. Both take the same pairs, cells and recipes and return the same numbers:

* ``measure_reference``: the plain computation, one batched ``run_with_hooks`` full forward per (cell, prompt
  length), full logits, patch values resolved from plain ``run_with_cache`` runs. It is the definition of what a
  number means; the fast path is tested against it.
* ``measure_fast``: cached clean/corrupt runs (``cache.ACTIVATION_CACHE``), variants stacked along the batch axis,
  tail recompute from the patched layer and position only, unembedding only the columns the metric reads.
"""

from __future__ import annotations

from collections import defaultdict

from . import metrics as M
from .cache import ActivationCache, run_base
from .plan import Cell, Recipe, SourceSets, patch_positions
from .tail import Measured, TailGroup, memory_budget, readouts, source_value, telemetry


def _base_tokens(pair, cell: Cell):
    return pair.clean if cell.run == "clean" else pair.corrupt


def _sae_features(cell: Cell, x, cache: dict):
    """SAE activations and reconstruction of x, computed once per (SAE, activation) within a batch."""
    key = (cell.sae_op.sae_key, id(x))
    if key not in cache:
        acts = cell.sae_op.sae.encode(x)
        cache[key] = (x, acts, cell.sae_op.sae.decode(acts))  # x kept alive so its id stays unique
    return cache[key][1:]


def _measured(metric, pair, readout, tel, i, c) -> Measured:
    """``tel``: the four telemetry quantities as nested lists [prompt][variant]."""
    norm, pnorm, drift, ratio = (float(t[i][c]) for t in tel)
    return Measured(M.value(metric, pair, readout), norm, pnorm, drift, ratio)


# ------------------------------------------------------------------------------------------------------- fast
def measure_fast(model, pairs, cells: list[Cell], recipes: dict, metric: str, sources: SourceSets,
                 cache: ActivationCache):
    import torch

    arch = cache.arch(model)
    full = M.needs_full_vocab(metric)
    seqs = [p.clean for p in pairs] + [p.corrupt for p in pairs] + [p.clean for p in sources.pairs]
    acts = cache.get(model, seqs)
    baselines = {p: tuple(M.value(metric, p, M.readout_from_row(acts[s].final_logits, p, full))
                          for s in (p.clean, p.corrupt)) for p in pairs}
    measured = {}
    budget = memory_budget(model.cfg.device)
    by_run_label = defaultdict(list)
    for cell in cells:
        by_run_label[(cell.run, cell.position)].append(cell)
    with torch.no_grad():
        for (run, label), group_cells in by_run_label.items():
            shapes = defaultdict(list)
            for p in pairs:
                if any(isinstance(recipes[(p, c)], Recipe) for c in group_cells):
                    shapes[(len(_base_tokens(p, group_cells[0])), patch_positions(p, label)[0])].append(p)
            for (n, p0), ps in shapes.items():
                group = TailGroup(arch, [acts[_base_tokens(p, group_cells[0])] for p in ps], p0)
                rel = [q - p0 for q in patch_positions(ps[0], label)]
                chunk = max(1, budget // group.bytes_per_variant())
                for start in range(0, len(group_cells), chunk):
                    _fast_chunk(arch, group, ps, group_cells[start:start + chunk], rel, recipes, acts, metric,
                                measured)
    return baselines, measured


def _fast_chunk(arch, group: TailGroup, ps, cells, rel, recipes, acts, metric, measured):
    import torch

    entries, sae_cache = [], {}
    for cell in cells:
        if cell.site == "z":
            like = group.base_z(cell.layer)[:, rel, cell.head]  # [N, R, d_head]
        else:
            like = group.resid[:, cell.resid_index][:, rel]
        if cell.source == "sae":
            def edit(x, cell=cell):
                f, recons = _sae_features(cell, x, sae_cache)
                return cell.sae_op.apply(x, f, recons)
            entries.append(("resid", cell.resid_index, edit))
            continue
        values = torch.stack([
            source_value(recipes[(p, cell)], cell, p, acts, like[i]) if isinstance(recipes[(p, cell)], Recipe)
            else torch.zeros_like(like[i]) for i, p in enumerate(ps)])
        if cell.site == "z":
            entries.append(("z", cell.layer, cell.head, values))
        else:
            entries.append(("resid", cell.resid_index, lambda x, v=values: (v, v - x)))
    normed, tel = group.run(entries, rel)
    tel = [t.tolist() for t in tel]  # one conversion, not a tensor index per number
    reads = readouts(arch, normed, ps, metric)
    for i, p in enumerate(ps):
        for c, cell in enumerate(cells):
            if isinstance(recipes[(p, cell)], Recipe):
                measured[(p, cell)] = _measured(metric, p, reads[i][c], tel, i, c)


# -------------------------------------------------------------------------------------------------- reference
def _plain_runs(model, sequences, batch_size: int = 16) -> dict:
    import torch

    by_len = defaultdict(list)
    for s in dict.fromkeys(sequences):
        by_len[len(s)].append(s)
    out = {}
    for seqs in by_len.values():
        for i in range(0, len(seqs), batch_size):
            for a in run_base(model, torch.tensor(seqs[i:i + batch_size], device=model.cfg.device)):
                out[a.tokens] = a
    return out


def measure_reference(model, pairs, cells: list[Cell], recipes: dict, metric: str, sources: SourceSets):
    import torch

    full = M.needs_full_vocab(metric)
    acts = _plain_runs(model, [p.clean for p in pairs] + [p.corrupt for p in pairs]
                       + [p.clean for p in sources.pairs])
    baselines = {p: tuple(M.value(metric, p, M.readout_from_row(acts[s].final_logits, p, full))
                          for s in (p.clean, p.corrupt)) for p in pairs}
    measured = {}
    device = model.cfg.device
    for cell in cells:
        by_len = defaultdict(list)
        for p in pairs:
            if isinstance(recipes[(p, cell)], Recipe):
                by_len[len(_base_tokens(p, cell))].append(p)
        for ps in by_len.values():
            tokens = torch.tensor([_base_tokens(p, cell) for p in ps], device=device)
            base = [acts[_base_tokens(p, cell)] for p in ps]
            positions = [list(recipes[(p, cell)].positions) for p in ps]
            tel = [None] * len(ps)

            def edit(act, hook):
                act = act.clone()
                for i, p in enumerate(ps):
                    pos = positions[i]
                    if cell.site == "z":
                        act[i, pos, cell.head] = source_value(recipes[(p, cell)], cell, p, acts,
                                                              act[i, pos, cell.head])
                        continue
                    before = act[i, pos].clone()
                    if cell.source == "sae":
                        patched, delta = cell.sae_op.apply(before)
                    else:
                        patched = source_value(recipes[(p, cell)], cell, p, acts, before)
                        delta = patched - before
                    act[i, pos] = patched
                    tel[i] = telemetry(before, patched, delta)
                return act

            def read_post(act, hook):
                for i in range(len(ps)):
                    before = base[i].resid[cell.layer + 1, positions[i]]
                    after = act[i, positions[i]]
                    tel[i] = telemetry(before, after, after - before)

            hooks = [(cell.hook, edit)]
            if cell.site == "z":
                hooks.append((f"blocks.{cell.layer}.hook_resid_post", read_post))
            with torch.no_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            for i, p in enumerate(ps):
                readout = M.readout_from_row(logits[i, -1], p, full)
                measured[(p, cell)] = _measured(metric, p, readout, [[[float(x)]] for x in tel[i]], 0, 0)
    return baselines, measured
