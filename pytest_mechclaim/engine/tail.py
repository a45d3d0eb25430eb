"""The fast executor: patched variants stacked along a batch axis, recomputed only from the patched layer and
position onward, against the cached clean/corrupt runs.

For a group of prompts of equal length whose patch starts at the same position p0, variants live in a tensor
``[prompts, variants, n - p0, d_model]``. A variant joins the stack where its patch lands: a ``hook_z`` patch at
layer L after block L's attention (its patched z and the clean residual go through that block's output projection
and MLP in the same matmuls as the variants already stacked), a residual/SAE patch at the input of block r there; so
every block runs once over all variants that have joined. Positions before p0 are never recomputed: their keys
and values come from the cache and are shared by all variants of a prompt. At the end only the final position is
normed and unembedded, and only the columns the metric reads (or the whole vocabulary row for probability/rank
metrics).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from . import metrics as M
from .cache import PromptActs
from .plan import Cell, Recipe


@dataclass
class Measured:
    metric: float | None = None
    activation_norm: float | None = None
    patched_norm: float | None = None
    drift: float | None = None
    delta_ratio: float | None = None
    reason: str | None = None


EPS = 1e-12


def telemetry(base, patched, delta):
    """Per-variant norms, flattened over the patched positions: tensors [..., R, d] -> lists of floats."""
    norm = base.flatten(-2).norm(dim=-1)
    pnorm = patched.flatten(-2).norm(dim=-1)
    norm = norm.expand_as(pnorm)
    drift = (pnorm - norm).abs() / (norm + EPS)
    ratio = delta.flatten(-2).norm(dim=-1) / (norm + EPS)
    return norm, pnorm, drift, ratio


def memory_budget(device) -> int:
    """Bytes the stacked variants may use: a quarter of what is free, at most 1 GiB on CPU."""
    import torch

    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free // 4
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = 4 << 30
    return min(avail // 4, 1 << 30)


def final_resid_unpatched(arch, acts: list[PromptActs]):
    """[N, d_model] final residual of each prompt's last position, recomputed from the embeddings up."""
    import torch

    n = len(acts[0].tokens)
    x = torch.stack([a.resid[0, n - 1:] for a in acts])[:, None]
    for l in range(arch.n_layers):
        pk = torch.stack([a.k[l, :n - 1] for a in acts])
        pv = torch.stack([a.v[l, :n - 1] for a in acts])
        x = arch.block(l, x, pk, pv, *acts[0].rotary(l, n - 1))
    return x[:, 0, -1]


def source_value(recipe: Recipe, cell: Cell, pair, acts: dict, like):
    """The patch value for one pair, shaped like ``like`` (the base activation at the patched positions:
    [R, d_head] for a head's z, [R, d_model] for the residual). ``acts`` maps clean token ids to PromptActs."""
    import torch

    def at(p, positions):
        a = acts[p.clean]
        return a.z[cell.layer, positions, cell.head] if cell.site == "z" else a.resid[cell.resid_index, positions]

    if recipe.kind == "zero":
        return torch.zeros_like(like)
    if recipe.kind == "clean":
        return at(pair, list(recipe.positions))
    if recipe.kind in ("mean", "resample"):
        return torch.stack([at(p, [q])[0] for p, q in recipe.pool]).mean(0).expand_as(like)
    raise AssertionError(recipe.kind)


class TailGroup:
    """Prompts of one length, patched from one start position, edited on one run (clean or corrupt)."""

    def __init__(self, arch, base: list[PromptActs], p0: int):
        import torch

        self.arch, self.base, self.p0 = arch, base, p0
        self.n = len(base[0].tokens)
        self.resid = torch.stack([a.resid[:, p0:] for a in base])  # [N, L+1, P, d]
        self._past = {}

    def past(self, l):
        import torch

        if l not in self._past:
            self._past[l] = (torch.stack([a.k[l, :self.p0] for a in self.base]),
                             torch.stack([a.v[l, :self.p0] for a in self.base]))
        return self._past[l]

    def bytes_per_variant(self) -> int:
        arch = self.arch
        N, P = len(self.base), self.n - self.p0
        d = arch.W_U.shape[0]
        d_mlp = max((lay.mlp[0].shape[-1] for lay in arch.layers if lay.mlp is not None), default=0)
        per_row = 8 * d + 3 * d_mlp + 3 * arch.n_heads * (self.n + arch.d_head)
        return N * P * per_row * self.resid.element_size()

    def run(self, entries, rel):
        """Final-position normed residuals [N, C, d] and telemetry ([N, C] tensors) for C variants, in order.

        Each entry is ``("z", layer, head, values [N, R, d_head])`` (layer's hook_z of that head replaced at the
        patched positions) or ``("resid", r, fn)`` with fn(x [N, R, d]) -> (patched, decoded delta) editing the
        input of block r (r = n_layers: the final residual). ``rel``: patched positions relative to p0.
        """
        import torch

        arch, L = self.arch, self.arch.n_layers
        z_joins = defaultdict(list)  # layer -> [(variant id, head, values)]: they join at that block's output
        for i, e in enumerate(entries):
            if e[0] == "z":
                z_joins[e[1]].append((i, e[2], e[3]))
        resid_joins = defaultdict(list)  # resid index -> [(variant id, patched [N, 1, P, d], telemetry)]
        at_rel = {}  # one tensor per residual index, so edits can share work on it (SAE encodes)
        for i, e in enumerate(entries):
            if e[0] == "resid":
                x_base = self.resid[:, e[1]]
                if e[1] not in at_rel:
                    at_rel[e[1]] = x_base[:, rel]
                patched, delta = e[2](at_rel[e[1]])
                x = x_base.clone()
                x[:, rel] = patched
                tel = telemetry(at_rel[e[1]], patched, delta)
                resid_joins[e[1]].append((i, x[:, None], tuple(t[:, None] for t in tel)))
        x, ids, tels = None, [], []
        for r in range(min([*z_joins, *resid_joins]), L + 1):
            for vid, xr, tr in resid_joins.get(r, ()):
                x = xr if x is None else torch.cat((x, xr), 1)
                ids.append(vid)
                tels.append(tr)
            if r == L:
                break
            z = None if x is None else arch.attention_z(r, x, *self.past(r), *self.base[0].rotary(r, self.p0))
            if r in z_joins:  # layer r's own patched variants finish the block in the same matmuls
                items = z_joins[r]
                z_new = self.base_z(r)[:, None].repeat(1, len(items), 1, 1, 1)
                for c, (_, head, values) in enumerate(items):
                    z_new[:, c, rel, head] = values
                x_new = self.resid[:, r][:, None].expand(-1, len(items), -1, -1)
                z = z_new if z is None else torch.cat((z, z_new), 1)
                x = x_new if x is None else torch.cat((x, x_new), 1)
            x = arch.finish_block(r, x, z)
            if r in z_joins:
                post, base_post = x[:, -len(items):, rel], self.resid[:, r + 1][:, None, rel]
                tels.append(telemetry(base_post, post, post - base_post))
                ids += [i for i, _, _ in items]
        back = torch.tensor([ids.index(i) for i in range(len(entries))], device=x.device)
        normed = arch.final_normed(x[:, back, -1])
        return normed, tuple(torch.cat(t, 1)[:, back] for t in zip(*tels))

    def base_z(self, layer):
        import torch

        return torch.stack([a.z[layer, self.p0:] for a in self.base])


def readouts(arch, normed, pairs, metric: str) -> list[list[M.FinalReadout]]:
    """[N][C] readouts from the final normed residuals [N, C, d]."""
    import torch

    if not M.needs_full_vocab(metric):
        union = sorted({c for p in pairs for c in M.columns(p)})
        index = {c: i for i, c in enumerate(union)}
        logits = normed @ arch.W_U[:, union] + arch.b_U[union]
        out = []
        for i, p in enumerate(pairs):
            cols = logits[i][:, [index[c] for c in M.columns(p)]].tolist()
            out.append([M.FinalReadout(tuple(row)) for row in cols])
        return out
    out = []
    for i, p in enumerate(pairs):
        logits = normed[i] @ arch.W_U + arch.b_U  # [C, vocab]
        lse = torch.logsumexp(logits, -1).tolist()
        cols = logits[:, list(M.columns(p))]
        above_t = (logits > logits[:, p.target, None]).sum(-1).tolist()
        above_f = (logits > logits[:, p.foil, None]).sum(-1).tolist()
        out.append([M.FinalReadout(tuple(c), s, t, f) for c, s, t, f in zip(cols.tolist(), lse, above_t, above_f)])
    return out
