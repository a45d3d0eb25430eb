"""The batched peer of the head sweep: exact final-position clean -> corrupt patching of ``hook_z``, written with
plain torch on the model's own TransformerLens weights (``W_Q``, ``W_K``, ... of a HookedTransformer or of a
TransformerBridge in compatibility mode), none of ``pytest_mechclaim.engine``.

One forward over the clean and corrupt prompts together (all positions; keeps each layer's keys/values, the
final position's z and mid-block residual), then one batched tail per layer with heads in the sweep, one variant
per head: the layer's attention output at the final position moves by the patched head's (z_clean - z_corrupt) @
W_O[head], then its MLP and every later block run at the final position only, attending to the corrupt run's
cached keys/values, and only the target and foil columns are unembedded.

Supports what the benchmarks run: RMS/LayerNorm or none, rotary (the model's own tables) or learned positions,
grouped-query attention, plain or gated MLPs or attention only, no soft caps.
"""

from __future__ import annotations

import math

import torch


class PeerWeights:
    """The model's weights and config, read (detached) once per sweep."""

    def __init__(self, model):
        from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

        cfg = model.cfg
        assert not getattr(cfg, "rotary_adjacent_pairs", False) and not cfg.output_logits_soft_cap > 0
        assert cfg.positional_embedding_type in ("standard", "rotary")
        self.model, self.cfg = model, cfg
        self.kind = cfg.normalization_type
        self.final_kind = "RMS" if getattr(cfg, "final_rms", False) else self.kind
        self.scale = cfg.attn_scale if cfg.attn_scale and cfg.attn_scale > 0 else math.sqrt(cfg.d_head)
        self.act = None if cfg.attn_only else SUPPORTED_ACTIVATIONS[cfg.act_fn]
        self.layers = [self._layer(block) for block in model.blocks]
        self.ln_final = self._norm(getattr(model, "ln_final", None))
        self.W_U = model.W_U.detach()
        self.b_U = _param(model, "b_U")

    @staticmethod
    def _norm(module):
        """(weight, bias) of a norm: ``w``/``b`` on a HookedTransformer, ``weight``/``bias`` on a bridge."""
        if module is None:
            return None, None
        w, b = _param(module, "w"), _param(module, "b")
        return (_param(module, "weight") if w is None else w), (_param(module, "bias") if b is None else b)

    def _layer(self, block):
        attn = block.attn
        # A grouped-query HookedTransformer keeps its kv_head weights under _W_K/_W_V (W_K repeats them per head).
        kv = {name: _param(attn, "_" + name) if _param(attn, "_" + name) is not None else _param(attn, name)
              for name in ("W_K", "b_K", "W_V", "b_V")}
        mlp = None if self.cfg.attn_only else tuple(_param(block.mlp, name)
                                                     for name in ("W_in", "b_in", "W_gate", "W_out", "b_out"))
        return {"ln1": self._norm(getattr(block, "ln1", None)), "ln2": self._norm(getattr(block, "ln2", None)),
                "W_Q": _param(attn, "W_Q"), "b_Q": _param(attn, "b_Q"), "W_O": _param(attn, "W_O"),
                "b_O": _param(attn, "b_O"), "mlp": mlp, **kv}

    def norm(self, x, wb, kind):
        if kind is None:
            return x
        if kind.startswith("LN"):
            x = x - x.mean(-1, keepdim=True)
        x = x * (x.pow(2).mean(-1, keepdim=True) + self.cfg.eps).rsqrt()
        w, b = wb
        return _add(x if w is None else x * w, b)

    def rotary(self, n: int, like):
        """cos, sin [n, rotary_dim] from the model's own tables (None, None without rotary embeddings)."""
        if self.cfg.positional_embedding_type != "rotary":
            return None, None
        attn = self.model.blocks[0].attn
        if hasattr(attn, "rotary_cos"):  # HookedTransformer
            return attn.rotary_cos[:n], attn.rotary_sin[:n]
        cos, sin = self.model.rotary_emb(like, torch.arange(n, device=like.device)[None])  # bridge: HF's module
        return cos[0], sin[0]


def _param(module, name):
    value = getattr(module, name, None)
    return None if value is None else value.detach()


def _add(x, b):
    return x if b is None else x + b


def rotate(x, cos, sin):
    """Rotate-half rotary embedding of x [..., P, head, d] with cos/sin [P, rotary_dim] (P = 1 broadcasts)."""
    if cos is None:
        return x
    rd = cos.shape[-1]
    rot, rest = x[..., :rd], x[..., rd:]
    flipped = torch.cat((-rot[..., rd // 2:], rot[..., :rd // 2]), -1)
    return torch.cat((rot * cos[:, None] + flipped * sin[:, None], rest), -1)


def mlp_out(w: PeerWeights, layer, x):
    if layer["mlp"] is None:
        return 0
    W_in, b_in, W_gate, W_out, b_out = layer["mlp"]
    xn = w.norm(x, layer["ln2"], w.kind)
    hidden = w.act(xn @ W_gate) * _add(xn @ W_in, b_in) if W_gate is not None else w.act(_add(xn @ W_in, b_in))
    return _add(hidden @ W_out, b_out)


def base_runs(w: PeerWeights, tokens, cos, sin):
    """Forward over all positions of tokens [B, n]: per layer, rotated keys/values [B, n, kv_head, d], the final
    position's z [B, head, d] and mid-block residual [B, d]; and the final position's normed residual [B, d]."""
    model = w.model
    x = model.embed(tokens)
    if w.cfg.positional_embedding_type == "standard":
        x = x + model.pos_embed(tokens)
    n = tokens.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
    keys, values, z_final, mid_final = [], [], [], []
    for layer in w.layers:
        xn = w.norm(x, layer["ln1"], w.kind)
        q = rotate(_add(torch.einsum("bpm,hmd->bphd", xn, layer["W_Q"]), layer["b_Q"]), cos, sin)
        k = rotate(_add(torch.einsum("bpm,kmd->bpkd", xn, layer["W_K"]), layer["b_K"]), cos, sin)
        v = _add(torch.einsum("bpm,kmd->bpkd", xn, layer["W_V"]), layer["b_V"])
        B, _, H, D = q.shape
        G = k.shape[2]
        scores = torch.einsum("bpkgd,bqkd->bkgpq", q.view(B, n, G, H // G, D), k) / w.scale
        pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
        z = torch.einsum("bkgpq,bqkd->bpkgd", pattern, v).reshape(B, n, H, D)
        mid = _add(x + torch.einsum("bphd,hdm->bpm", z, layer["W_O"]), layer["b_O"])
        x = mid + mlp_out(w, layer, mid)
        keys.append(k)
        values.append(v)
        z_final.append(z[:, -1])
        mid_final.append(mid[:, -1])
    return keys, values, z_final, mid_final, w.norm(x[:, -1], w.ln_final, w.final_kind)


def final_block(w: PeerWeights, layer, x, past_k, past_v, cos, sin):
    """One block at the final position for x [N, V, d] (V variants per prompt) attending to the prompt's cached
    keys/values [N, S, kv_head, d] of the positions before it and to its own."""
    xn = w.norm(x, layer["ln1"], w.kind)
    q = rotate(_add(torch.einsum("nvm,hmd->nvhd", xn, layer["W_Q"]), layer["b_Q"]), cos, sin)
    k = rotate(_add(torch.einsum("nvm,kmd->nvkd", xn, layer["W_K"]), layer["b_K"]), cos, sin)
    v = _add(torch.einsum("nvm,kmd->nvkd", xn, layer["W_V"]), layer["b_V"])
    N, V, H, D = q.shape
    G = k.shape[2]
    q = q.view(N, V, G, H // G, D)
    past = torch.einsum("nvkgd,nskd->nvkgs", q, past_k)
    own = (q * k[:, :, :, None]).sum(-1, keepdim=True)
    pattern = (torch.cat((past, own), -1) / w.scale).softmax(-1)
    z = torch.einsum("nvkgs,nskd->nvkgd", pattern[..., :-1], past_v) + pattern[..., -1:] * v[:, :, :, None]
    mid = _add(x + torch.einsum("nvhd,hdm->nvm", z.reshape(N, V, H, D), layer["W_O"]), layer["b_O"])
    return mid + mlp_out(w, layer, mid)


def peer_sweep(model, clean, corrupt, target, foil, cells):
    """Patched target - foil logit [len(cells), N] for cells (layer, head), plus the clean and corrupt baselines
    [N] each; clean/corrupt [N, n] token tensors of one length, target/foil [N] ids."""
    w = PeerWeights(model)
    N, n = clean.shape
    with torch.no_grad():
        cos, sin = w.rotary(n, w.W_U)
        keys, values, z_final, mid_final, normed = base_runs(w, torch.cat((clean, corrupt)), cos, sin)
        W_t, W_f = w.W_U[:, target], w.W_U[:, foil]  # [d, N]: only the columns the metric reads
        b_tf = torch.zeros(N) if w.b_U is None else w.b_U[target] - w.b_U[foil]

        def metric(x):  # x [N, d] or [N, V, d] -> target - foil logit [N] or [N, V]
            bias = b_tf.view(N, *[1] * (x.dim() - 2))
            return torch.einsum("n...d,dn->n...", x, W_t) - torch.einsum("n...d,dn->n...", x, W_f) + bias

        baselines = metric(normed[:N]), metric(normed[N:])
        cos, sin = (None, None) if cos is None else (cos[n - 1:], sin[n - 1:])
        out = torch.empty(len(cells), N)
        by_layer = {}
        for i, (l, h) in enumerate(cells):
            by_layer.setdefault(l, []).append((i, h))
        for l, items in sorted(by_layer.items()):
            heads = [h for _, h in items]
            delta_z = z_final[l][:N, heads] - z_final[l][N:, heads]  # [N, V, d_head]
            x = mid_final[l][N:, None] + torch.einsum("nvd,vdm->nvm", delta_z, w.layers[l]["W_O"][heads])
            x = x + mlp_out(w, w.layers[l], x)
            for r in range(l + 1, len(w.layers)):
                x = final_block(w, w.layers[r], x, keys[r][N:, :-1], values[r][N:, :-1], cos, sin)
            out[[i for i, _ in items]] = metric(w.norm(x, w.ln_final, w.final_kind)).T
    return out, baselines
