"""Clean and corrupt runs computed once per prompt and reused across units, interventions, seeds and claims.

Keyed by the model (weakly: a collected model drops its entries), the identity and in-place version counter of
every parameter (editing a weight invalidates the cache), and the prompt's token ids. Each entry keeps what a tail
recompute starts from: the residual stream entering every block and the final residual, every layer's ``hook_z``,
the rotated keys and values of every layer, each layer's rotary table, and the model's own final-position logit
row.

The fast path's base runs are lean: the forward stops once the last block's output is captured (nothing after it
is read), only the final position is unembedded, by the model's own ``ln_final`` and ``unembed`` (the full
forward's row up to the matmul's summation order), and keys and values are taken from the forward's own hooks
where they come in the tail's layout (recomputed from the residual otherwise). Once per model and prompt length,
one prompt's base run is instead a full normal forward, and the tail recompute of its unpatched final position from
the embeddings up, using the cached keys and values, must reproduce that forward's logits (``SELF_CHECK_ATOL``):
what is checked is the tail's math at that length (masks, sliding windows, rotary tables, final norm, readout),
which one prompt carries, without unembedding the whole vocabulary at every position of a whole batch. A
model the tail math does not reproduce raises ``FastPathMismatch`` and the engine falls back to its reference
path, whose runs (``run_base``) stay plain full forwards.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
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


class _FinalResidual(Exception):
    """Raised by the hook that captures the last activation a forward is run for: nothing after it is needed."""


def hook_names(n_layers: int) -> list[str]:
    return ([f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]
            + [f"blocks.{l}.attn.hook_z" for l in range(n_layers)])


def _prompt_acts(tokens, acts, last_logits, n_layers: int) -> list[PromptActs]:
    import torch

    resid = torch.stack([acts[f"blocks.{l}.hook_resid_pre"] for l in range(n_layers)]
                        + [acts[f"blocks.{n_layers - 1}.hook_resid_post"]], dim=1)
    z = torch.stack([acts[f"blocks.{l}.attn.hook_z"] for l in range(n_layers)], dim=1)
    return [PromptActs(tuple(tokens[i].tolist()), resid[i].clone(), z[i].clone(), last_logits[i].clone())
            for i in range(tokens.shape[0])]


def run_base(model, tokens) -> list[PromptActs]:
    """One plain batched forward over equal-length prompts (full logits), kept per prompt: the reference path's
    runs."""
    import torch

    n_layers = model.cfg.n_layers
    names = set(hook_names(n_layers))
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
        return _prompt_acts(tokens, cache, logits[:, -1], n_layers)


def _kv_hooks(arch: Arch, l: int, available) -> tuple[str, str] | None:
    """The model's hooks carrying layer l's keys (rotated) and values: ``hook_rot_k``, or ``hook_k`` when nothing
    follows it (TL and the bridge fire ``hook_k`` before a QK norm); None where the model has no such hooks."""
    if arch.rotary:
        hooks = f"blocks.{l}.attn.hook_rot_k", f"blocks.{l}.attn.hook_v"
    elif arch.layers[l].k_norm.kind is None:
        hooks = f"blocks.{l}.attn.hook_k", f"blocks.{l}.attn.hook_v"
    else:
        return None
    return hooks if all(name in available for name in hooks) else None


def _layer_kv(arch: Arch, l: int, acts, hooks, cos, sin):
    """Layer l's keys and values [batch, n, kv_head, d_head]: the forward's own where its hooks carry them in that
    layout, else recomputed from the residual (e.g. TL's ungrouped GQA repeats them per query head)."""
    resid = acts[f"blocks.{l}.hook_resid_pre"]
    want = tuple(resid.shape[:2]) + tuple(arch.layers[l].W_K.shape[::2])
    if hooks and all(tuple(acts[h].shape) == want for h in hooks):
        return acts[hooks[0]], acts[hooks[1]]
    return arch.keys_values(l, resid, cos, sin)


def captured(model, tokens, names: set, stop_after: str) -> dict:
    """The activations at the hooks ``names`` of a forward that stops once ``stop_after`` (one of them) is captured:
    nothing after it is computed (later blocks, the unembedding of every position)."""
    available = model.hook_dict
    carried = defaultdict(list)  # hook point -> the names it fires for (a bridge's aliases share one point)
    for name in names:
        carried[id(available[name])].append(name)
    acts = {}

    def save(tensor, hook):
        for name in carried[id(hook)]:
            acts[name] = tensor
        if stop_after in acts:
            raise _FinalResidual

    try:  # one filter, not one hook per name: a bridge rebuilds its hook dict for every named hook it adds
        model.run_with_hooks(tokens, fwd_hooks=[(lambda name: name in names, save)])
    except _FinalResidual:  # run_with_hooks removes its hooks on the way out, this raise included
        pass
    return acts


def _lean_forward(model, tokens, names: set, final: str):
    """The captured ``names`` and the final logit rows of a forward that stops once ``final`` (the last block's
    output) is captured; the last position alone is unembedded, by the model's own ``ln_final`` and ``unembed``."""
    acts = captured(model, tokens, names, final)
    x = acts[final][:, -1:]
    ln_final = getattr(model, "ln_final", None)
    return acts, model.unembed(x if ln_final is None else ln_final(x))[:, 0]


def final_logit_rows(model, tokens):
    """[batch, d_vocab] logits at the last position of equal-length ``tokens``: the forward stops after the last
    block and the last position alone is unembedded (``_lean_forward``), instead of the whole vocabulary at every
    position (the unembedding is most of a forward on a large-vocabulary model such as Gemma's 262k)."""
    import torch

    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    with torch.no_grad():
        return _lean_forward(model, tokens, {final}, final)[1]


def run_fast_base(model, tokens, arch: Arch, full_forward: bool) -> list[PromptActs]:
    """The fast path's base run of equal-length prompts, with each layer's keys, values and rotary table.

    ``full_forward``: a normal forward, whose final logit rows are the model's own (the self-check compares with
    them); otherwise a lean one (``_lean_forward``)."""
    import torch

    L = arch.n_layers
    final = f"blocks.{L - 1}.hook_resid_post"
    available = model.hook_dict  # a bridge rebuilds it on every access
    kv_hooks = [_kv_hooks(arch, l, available) for l in range(L)]
    names = set(hook_names(L)) | {name for h in kv_hooks if h for name in h}
    names |= {name for pair in arch.rotary_hooks or () for name in pair}
    with torch.no_grad():
        if full_forward:
            logits, acts = model.run_with_cache(tokens, names_filter=lambda name: name in names)
            last = logits[:, -1]
        else:
            acts, last = _lean_forward(model, tokens, names, final)
        out = _prompt_acts(tokens, acts, last, L)
        cos, sin = arch.rotary_tables(model, acts, tokens.shape[1]) if arch.rotary else ((None,) * L,) * 2
        kv = [_layer_kv(arch, l, acts, h, cos[l], sin[l]) for l, h in enumerate(kv_hooks)]
        k, v = torch.stack([k for k, _ in kv], dim=1), torch.stack([v for _, v in kv], dim=1)
    for i, a in enumerate(out):
        a.k, a.v = k[i].clone(), v[i].clone()
        if arch.rotary:
            a.cos, a.sin = cos, sin
    return out


class _ModelEntry:
    def __init__(self, fingerprint):
        self.fingerprint = fingerprint
        self.arch: Arch | None = None
        self.unsupported: str | None = None
        self.prompts: dict[tuple[int, ...], PromptActs] = {}
        self.checked_lengths: set[int] = set()  # prompt lengths whose self-check passed


class ActivationCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._models.clear()

    def clear_activations(self) -> None:
        """Drop every cached prompt run, keeping what is known about each model (its parts, the prompt lengths
        whose self-check passed): a benchmark's cold call, or memory back, without probing a model again."""
        for entry in self._models.values():
            entry.prompts.clear()

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
        for n, seqs in by_len.items():
            if n not in entry.checked_lengths:
                acts = run_fast_base(model, torch.tensor(seqs[:1], device=device), arch, full_forward=True)
                _self_check(arch, acts)
                entry.checked_lengths.add(n)
                entry.prompts[acts[0].tokens], seqs = acts[0], seqs[1:]
            for i in range(0, len(seqs), batch_size):
                for a in run_fast_base(model, torch.tensor(seqs[i:i + batch_size], device=device), arch, False):
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
