"""The transformer block math a tail recompute needs, read from the model's own (processed) weights.

A patch at layer L and positions p0..n-1 leaves every position before p0 untouched at every layer, so their keys
and values can be reused and only the block of positions p0..n-1 from layer L upward needs recomputing. This module
reads the weights once from a HookedTransformer or a TransformerBridge in compatibility mode (both expose
``W_Q``/``W_K``/... with LayerNorm folding already applied) and computes blocks on tensors shaped
``[pairs, variants, positions, d_model]``, attending to the cached prefix keys/values ``[pairs, prefix, kv_head, d]``
without copying them per variant.

Supported: LayerNorm / RMSNorm (with or without weights, folded or not), no norm; learned absolute or rotary position
embeddings (rotate-half or adjacent pairs, partial rotary dims); grouped-query attention; plain or gated MLPs with
TL's activation functions; attention-only models. Anything else raises ``FastPathUnsupported`` and the engine uses
its reference path; what is supported is still checked against the model's own forward on every new prompt group
(see ``cache.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class FastPathUnsupported(Exception):
    """The model has a feature the tail recompute does not reproduce."""


_NORMS = (None, "LN", "LNPre", "RMS", "RMSPre")


def _detach(t):
    return None if t is None else t.detach()


@dataclass
class Norm:
    kind: str | None
    w: object = None
    b: object = None
    eps: float = 1e-5

    def __call__(self, x):
        if self.kind is None:
            return x
        if self.kind.startswith("LN"):
            x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if self.w is not None:
            x = x * self.w
        if self.b is not None:
            x = x + self.b
        return x


def _norm(module, kind: str | None, eps: float) -> Norm:
    if kind is None:
        return Norm(None)
    w, b = getattr(module, "w", None), getattr(module, "b", None)
    if w is None and b is None:  # bridge components wrap the HF module's weight/bias
        for name, p in module.named_parameters():
            if name.endswith("weight"):
                w = p
            elif name.endswith("bias"):
                b = p
    if kind.endswith("Pre"):
        w = b = None
    return Norm(kind, _detach(w), None if kind.startswith("RMS") else _detach(b), eps)


@dataclass
class Layer:
    ln1: Norm
    ln2: Norm
    W_Q: object
    b_Q: object
    W_K: object
    b_K: object
    W_V: object
    b_V: object
    W_O: object
    b_O: object
    attn_scale: float
    mlp: tuple | None  # (W_in, b_in, W_gate or None, W_out, b_out)


def _raw_kv(attn, name):
    """[n_kv_heads, ...]: a HookedTransformer's GQA attention repeats K/V per query head under ``W_K``."""
    raw = getattr(attn, "_" + name, None)
    return raw if raw is not None else getattr(attn, name)


def _zeros_if_none(t, shape, like):
    import torch

    return torch.zeros(shape, dtype=like.dtype, device=like.device) if t is None else t.detach()


def unsupported_reason(model) -> str | None:
    cfg = model.cfg
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    checks = [
        (cfg.normalization_type not in _NORMS, f"normalization {cfg.normalization_type}"),
        (cfg.positional_embedding_type not in ("standard", "rotary"),
         f"positional embedding {cfg.positional_embedding_type}"),
        (getattr(cfg, "parallel_attn_mlp", False), "parallel attention/MLP"),
        (getattr(cfg, "use_local_attn", False), "local attention"),
        (bool(getattr(cfg, "attn_scores_soft_cap", -1.0) > 0), "attention soft cap"),
        (bool(getattr(cfg, "output_logits_soft_cap", -1.0) > 0), "logit soft cap"),
        (getattr(cfg, "use_qk_norm", False), "QK norm"),
        (getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False), "split qkv input"),
        (getattr(cfg, "post_embedding_ln", False), "post-embedding LayerNorm"),
        (getattr(cfg, "num_experts", None) not in (None, 0), "mixture of experts"),
        (not cfg.attn_only and cfg.act_fn not in SUPPORTED_ACTIVATIONS, f"activation {cfg.act_fn}"),
        (not cfg.attn_only and cfg.act_fn == "solu_ln", "SoLU-LN activation"),
        (cfg.positional_embedding_type == "rotary" and not _has_rotary_source(model), "rotary tables not found"),
    ]
    for bad, reason in checks:
        if bad:
            return reason
    return None


def _has_rotary_source(model) -> bool:
    return hasattr(model.blocks[0].attn, "rotary_cos") or "rotary_emb.hook_cos" in model.hook_dict


class Arch:
    """Weights and config of one model, read once (detached; the model keeps ownership)."""

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason:
            raise FastPathUnsupported(reason)
        from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

        cfg = model.cfg
        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.rotary = cfg.positional_embedding_type == "rotary"
        self.adjacent_pairs = bool(getattr(cfg, "rotary_adjacent_pairs", False))
        self.act = None if cfg.attn_only else SUPPORTED_ACTIVATIONS[cfg.act_fn]
        norm = cfg.normalization_type
        self.layers = []
        for l, block in enumerate(model.blocks):
            attn = block.attn
            W_Q, W_O = attn.W_Q.detach(), attn.W_O.detach()
            W_K, W_V = _raw_kv(attn, "W_K").detach(), _raw_kv(attn, "W_V").detach()
            n_kv = W_K.shape[0]
            scale = (cfg.attn_scale if cfg.attn_scale and cfg.attn_scale > 0 else math.sqrt(cfg.d_head))
            scale = scale if cfg.use_attn_scale else 1.0
            if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
                scale *= l + 1
            mlp = None
            if not cfg.attn_only:
                m = block.mlp
                W_in = m.W_in.detach()
                W_gate = m.W_gate.detach() if getattr(cfg, "gated_mlp", False) else None
                mlp = (W_in, _zeros_if_none(getattr(m, "b_in", None), W_in.shape[-1:], W_in), W_gate,
                       m.W_out.detach(), _zeros_if_none(getattr(m, "b_out", None), W_O.shape[-1:], W_O))
            self.layers.append(Layer(
                ln1=_norm(getattr(block, "ln1", None), norm, cfg.eps),
                ln2=_norm(getattr(block, "ln2", None), None if cfg.attn_only else norm, cfg.eps),
                W_Q=W_Q, b_Q=_zeros_if_none(getattr(attn, "b_Q", None), W_Q.shape[::2], W_Q),
                W_K=W_K, b_K=_zeros_if_none(_raw_kv(attn, "b_K") if hasattr(attn, "_b_K") else
                                            getattr(attn, "b_K", None), (n_kv, cfg.d_head), W_K),
                W_V=W_V, b_V=_zeros_if_none(_raw_kv(attn, "b_V") if hasattr(attn, "_b_V") else
                                            getattr(attn, "b_V", None), (n_kv, cfg.d_head), W_V),
                W_O=W_O, b_O=_zeros_if_none(getattr(attn, "b_O", None), W_O.shape[-1:], W_O),
                attn_scale=scale, mlp=mlp,
            ))
        final = norm
        if getattr(cfg, "final_rms", False) and norm in ("LN", "LNPre"):  # TL: an RMS final norm after LN blocks
            final = {"LN": "RMS", "LNPre": "RMSPre"}[norm]
        self.ln_final = _norm(getattr(model, "ln_final", None), final, cfg.eps)
        self.W_U = model.W_U.detach()
        self.b_U = _zeros_if_none(getattr(model, "b_U", None), self.W_U.shape[-1:], self.W_U)

    # ------------------------------------------------------------------------------------------------ pieces
    def rotate(self, x, cos, sin):
        """Rotary embedding on [..., P, head, d] with cos/sin [P, rotary_dim] (TL's and HF's convention)."""
        import torch

        if not self.rotary:
            return x
        rd = cos.shape[-1]
        x_rot, x_pass = x[..., :rd], x[..., rd:]
        if self.adjacent_pairs:
            flipped = torch.stack((-x_rot[..., 1::2], x_rot[..., ::2]), dim=-1).flatten(-2)
        else:
            half = rd // 2
            flipped = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat((x_rot * c + flipped * s, x_pass), dim=-1)

    def keys_values(self, l: int, resid, cos, sin):
        """Rotated keys and values [..., P, kv_head, d] of layer l from its residual input [..., P, d_model]."""
        import torch

        layer = self.layers[l]
        xn = layer.ln1(resid)
        k = torch.einsum("...pm,kmd->...pkd", xn, layer.W_K) + layer.b_K
        v = torch.einsum("...pm,kmd->...pkd", xn, layer.W_V) + layer.b_V
        return self.rotate(k, cos, sin), v

    def attention_z(self, l: int, resid, past_k, past_v, cos, sin):
        """z [N, C, P, head, d] of the block positions; resid [N, C, P, d_model], past [N, S, kv_head, d]."""
        import torch

        layer = self.layers[l]
        xn = layer.ln1(resid)
        q = self.rotate(torch.einsum("ncpm,hmd->ncphd", xn, layer.W_Q) + layer.b_Q, cos, sin)
        k, v = self.keys_values(l, resid, cos, sin)
        N, C, P, H, D = q.shape
        n_kv = k.shape[-2]
        q = q.view(N, C, P, n_kv, H // n_kv, D)
        scores = torch.einsum("ncpkgd,ncqkd->nckgpq", q, k) / layer.attn_scale
        causal = torch.ones(P, P, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        S = past_k.shape[1]
        if S:
            past = torch.einsum("ncpkgd,nskd->nckgps", q, past_k) / layer.attn_scale
            scores = torch.cat((past, scores), dim=-1)
        pattern = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        z = torch.einsum("nckgpq,ncqkd->ncpkgd", pattern[..., S:], v)
        if S:
            z = z + torch.einsum("nckgps,nskd->ncpkgd", pattern[..., :S], past_v)
        return z.reshape(N, C, P, H, D)

    def finish_block(self, l: int, resid, z):
        """resid_post of layer l from its resid_pre and its (possibly patched) z."""
        import torch

        layer = self.layers[l]
        mid = resid + torch.einsum("...hd,hdm->...m", z, layer.W_O) + layer.b_O
        if layer.mlp is None:
            return mid
        W_in, b_in, W_gate, W_out, b_out = layer.mlp
        xn = layer.ln2(mid)
        if W_gate is None:
            post = self.act(xn @ W_in + b_in)
        else:
            post = self.act(xn @ W_gate) * (xn @ W_in) + b_in
        return mid + post @ W_out + b_out

    def block(self, l: int, resid, past_k, past_v, cos, sin):
        return self.finish_block(l, resid, self.attention_z(l, resid, past_k, past_v, cos, sin))

    def final_normed(self, resid):
        return self.ln_final(resid)
