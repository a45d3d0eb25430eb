"""Clean and corrupt runs computed once per prompt and reused across units, interventions, seeds and claims.

Keyed by the model (weakly: a collected model drops its entries), the identity and in-place version counter of
every parameter (editing a weight invalidates the cache), and the prompt's token ids. Each entry keeps what a tail
recompute starts from: the residual stream entering every block and the final residual, every layer's ``hook_z``,
the rotated keys and values of every layer, each layer's rotary table, and the model's own final-position logit
row.

Every newly cached batch is checked against the model's own forward: the tail recompute of the unpatched final
position from the embeddings up must reproduce the model's final logits (``SELF_CHECK_ATOL``). A model the tail
math does not reproduce raises ``FastPathMismatch`` and the engine falls back to its reference path.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from .arch import Arch, FastPathUnsupported

# Max |logit difference| between the tail recompute and the model's own forward on an unpatched prompt.
SELF_CHECK_ATOL = 1e-3
DEFAULT_MAX_BYTES = 2 << 30


class FastPathMismatch(FastPathUnsupported):
    """The tail recompute does not reproduce this model's forward."""


@dataclass
class PromptActs:
    tokens: tuple[int, ...]
    resid: object  # [n_layers + 1, n, d_model]: input of each block, then the final residual
    z: object  # [n_layers, n, head, d_head]
    final_logits: object  # [d_vocab], the model's own forward at the last position
    k: object = None  # [n_layers, n, kv_head, d_head], rotated
    v: object = None
    cos: tuple | None = None  # per layer [n, rotary_dim] (layers sharing a table share the tensor)
    sin: tuple | None = None

    def rotary(self, l: int, start: int = 0):
        """Layer l's (cos, sin) from position ``start`` on, or (None, None) without rotary embeddings."""
        if self.cos is None:
            return None, None
        return self.cos[l][start:], self.sin[l][start:]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.resid, self.z, self.final_logits, self.k, self.v)
                   if t is not None)


def hook_names(n_layers: int) -> list[str]:
    return ([f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
            + [f"blocks.{l}.attn.hook_z" for l in range(n_layers)])


def run_base(model, tokens, arch: Arch | None = None) -> list[PromptActs]:
    """One batched forward over equal-length prompts, kept per prompt (used by both paths; with ``arch``, also the
    rotary tables the tail recompute needs)."""
    import torch

    n_layers = model.cfg.n_layers
    names = set(hook_names(n_layers))
    if arch is not None and arch.rotary_hooks:
        names |= {name for pair in arch.rotary_hooks for name in pair}
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        resid = torch.stack([cache[f"blocks.{l}.hook_resid_pre"] for l in range(n_layers)]
                            + [cache[f"blocks.{n_layers - 1}.hook_resid_post"]], dim=1)
        z = torch.stack([cache[f"blocks.{l}.attn.hook_z"] for l in range(n_layers)], dim=1)
    out = [PromptActs(tuple(tokens[i].tolist()), resid[i].clone(), z[i].clone(), logits[i, -1].clone())
           for i in range(tokens.shape[0])]
    if arch is not None and arch.rotary:
        cos, sin = arch.rotary_tables(model, cache, tokens.shape[1])
        for a in out:
            a.cos, a.sin = cos, sin
    return out


class _ModelEntry:
    def __init__(self, fingerprint):
        self.fingerprint = fingerprint
        self.arch: Arch | None = None
        self.unsupported: str | None = None
        self.prompts: dict[tuple[int, ...], PromptActs] = {}


class ActivationCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._models.clear()

    @staticmethod
    def _fingerprint(model):
        return tuple((id(p), p._version) for p in model.parameters())

    def _entry(self, model) -> _ModelEntry:
        fp = self._fingerprint(model)
        entry = self._models.get(model)
        if entry is None or entry.fingerprint != fp:
            entry = _ModelEntry(fp)
            self._models[model] = entry
        return entry

    def arch(self, model) -> Arch:
        """The model's tail math; raises FastPathUnsupported (remembered) when the model has unsupported parts."""
        entry = self._entry(model)
        if entry.unsupported:
            raise FastPathUnsupported(entry.unsupported)
        if entry.arch is None:
            try:
                entry.arch = Arch(model)
            except FastPathUnsupported as exc:
                entry.unsupported = str(exc)
                raise
        return entry.arch

    def get(self, model, sequences, batch_size: int = 16) -> dict[tuple[int, ...], PromptActs]:
        """Cached activations for every token sequence (computing the missing ones, batched by length)."""
        import torch

        arch = self.arch(model)
        entry = self._entry(model)
        wanted = list(dict.fromkeys(tuple(s) for s in sequences))
        missing = [s for s in wanted if s not in entry.prompts]
        self.hits += len(wanted) - len(missing)
        self.misses += len(missing)
        by_len: dict[int, list] = {}
        for s in missing:
            by_len.setdefault(len(s), []).append(s)
        device = model.cfg.device
        for seqs in by_len.values():
            for i in range(0, len(seqs), batch_size):
                chunk = seqs[i:i + batch_size]
                acts = run_base(model, torch.tensor(chunk, device=device), arch)
                with torch.no_grad():
                    for a in acts:
                        kv = [arch.keys_values(l, a.resid[l], *a.rotary(l)) for l in range(arch.n_layers)]
                        a.k = torch.stack([k for k, _ in kv])
                        a.v = torch.stack([v for _, v in kv])
                    _self_check(arch, acts)
                for a in acts:
                    entry.prompts[a.tokens] = a
        out = {s: entry.prompts[s] for s in wanted}
        self._evict(entry, keep=set(wanted))
        return out

    def _evict(self, entry: _ModelEntry, keep: set) -> None:
        total = sum(a.nbytes for a in entry.prompts.values())
        for key in list(entry.prompts):
            if total <= self.max_bytes:
                break
            if key not in keep:
                total -= entry.prompts.pop(key).nbytes


def _self_check(arch: Arch, acts: list[PromptActs]) -> None:
    """Recompute each prompt's last position from the embeddings up with cached prefix keys/values."""
    from .tail import final_resid_unpatched

    import torch

    recomputed = arch.final_normed(final_resid_unpatched(arch, acts))
    logits = recomputed @ arch.W_U + arch.b_U
    model_logits = torch.stack([a.final_logits for a in acts])
    err = float((logits - model_logits).abs().max())
    if not err <= SELF_CHECK_ATOL:
        raise FastPathMismatch(f"tail recompute differs from the model's forward by {err:.3g} in the logits "
                               f"(tolerance {SELF_CHECK_ATOL})")


ACTIVATION_CACHE = ActivationCache()
