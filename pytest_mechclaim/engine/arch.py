"""The transformer block math a tail recompute needs, read from the model's own (processed) weights.

A patch at layer L and positions p0..n-1 leaves every position before p0 untouched at every layer, so their keys
and values can be reused and only the block of positions p0..n-1 from layer L upward needs recomputing. This module
reads the weights once from a HookedTransformer or a TransformerBridge in compatibility mode (both expose
``W_Q``/``W_K``/... with LayerNorm folding already applied) and computes blocks on tensors shaped
``[pairs, variants, positions, d_model]``, attending to the cached prefix keys/values ``[pairs, prefix, kv_head, d]``
without copying them per variant.

The parts are read from the model itself and checked one by one (``parts.py``), not taken from its config alone.
Supported: LayerNorm / RMSNorm (with or without weights, folded or not, Gemma's ``1 + weight``), no norm; pre-,
post-attention and post-MLP (sandwich) norms; QK norm over d_head; learned absolute or rotary position embeddings
(rotate-half or adjacent pairs, partial rotary dims, one table per layer: Gemma's local and global bases); grouped-
query attention; the score scale the attention module itself uses (Gemma: ``query_pre_attn_scalar``); sliding-window
attention at any prompt length, masked as TL and HF do (a query sees the keys fewer than ``window`` positions back,
so prompts no longer than the window attend fully causally); plain or gated MLPs with TL's activation functions;
attention-only models. Embedding scales (Gemma's sqrt(d_model)) act before ``hook_resid_pre`` and need nothing here.
Anything else raises ``FastPathUnsupported`` naming the part, and the engine uses its reference path; what is
supported is still checked against the model's own forward (see ``cache.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .parts import FastPathUnsupported, Layer, Norm, gate_and_input, mlp_hidden, read_layer, read_norm, \
    rotary_hooks, unsupported_reason, zeros_if_none

__all__ = ["Arch", "FastPathUnsupported", "unsupported_reason"]


def _add_output(resid, out, bias, post_norm: Norm):
    """resid + the sublayer's output and bias (None when zero), through its post norm if it has one (without one,
    summed in the order TL does, so models without sandwich norms get bit-identical numbers)."""
    if bias is not None:
        if post_norm.kind is None:
            return resid + out + bias
        out = out + bias
    return resid + (out if post_norm.kind is None else post_norm(out))


def _nonzero(bias):
    """The bias, or None when it is all zeros (Llama-style models have none: adding zeros is a wasted pass)."""
    import torch

    return None if bias is None or not torch.count_nonzero(bias) else bias


@dataclass(frozen=True)
class Dense:
    """One layer's weights laid out as matrices, so each projection is one matmul over ``[rows, d_model]``:
    queries, keys and values side by side (``[d_model, (H + 2G) d_head]``), the output ``[H d_head, d_model]``, a
    gated MLP's gate and input side by side (``[d_model, 2 d_mlp]``); zero biases are None."""

    W_qkv: object
    b_qkv: object
    W_O: object
    b_O: object
    W_mlp_in: object  # [d_model, 2 d_mlp] (gate, then input) or [d_model, d_mlp]
    b_in: object
    W_out: object
    b_out: object
    gated: bool

    @classmethod
    def of(cls, layer: Layer) -> "Dense":
        import torch

        def columns(W):  # [heads, d_model, d_head] -> [d_model, heads d_head]
            return W.permute(1, 0, 2).flatten(1)

        W_qkv = torch.cat([columns(W) for W in (layer.W_Q, layer.W_K, layer.W_V)], 1).contiguous()
        b_qkv = _nonzero(torch.cat([b.flatten() for b in (layer.b_Q, layer.b_K, layer.b_V)]))
        W_O = layer.W_O.flatten(0, 1).contiguous()
        mlp = layer.mlp or (None,) * 5
        W_in, b_in, W_gate, W_out, b_out = mlp
        gated = W_gate is not None
        return cls(W_qkv, b_qkv, W_O, _nonzero(layer.b_O), gate_and_input(W_in, W_gate), _nonzero(b_in), W_out,
                   _nonzero(b_out), gated)

    def views_of(self, layer: Layer) -> Layer:
        """``layer`` with its projection weights as views of these matrices: the layer's weights are held once."""
        H, G = layer.W_Q.shape[0], layer.W_K.shape[0]
        heads = self.W_qkv.unflatten(1, (H + 2 * G, -1)).permute(1, 0, 2)
        W_Q, W_K, W_V = heads.split((H, G, G))
        mlp = layer.mlp
        if mlp is not None and self.gated:
            W_gate, W_in = self.W_mlp_in.chunk(2, 1)
            mlp = (W_in, mlp[1], W_gate, *mlp[3:])
        return replace(layer, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=self.W_O.unflatten(0, (H, -1)), mlp=mlp)


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
        self.rotary_hooks = rotary_hooks(model) if self.rotary else None
        self.adjacent_pairs = bool(getattr(cfg, "rotary_adjacent_pairs", False))
        self.act = None if cfg.attn_only else SUPPORTED_ACTIVATIONS[cfg.act_fn]
        like = model.W_U
        layers = [read_layer(model, l, self.act, like) for l in range(self.n_layers)]
        self.dense: list[Dense] = [Dense.of(layer) for layer in layers]
        self.layers: list[Layer] = [dense.views_of(layer) for dense, layer in zip(self.dense, layers)]
        self.ln_final = read_norm(getattr(model, "ln_final", None), "ln_final", cfg.d_model, like, cfg.eps)
        self.W_U = model.W_U.detach()
        self.b_U = zeros_if_none(getattr(model, "b_U", None), self.W_U.shape[-1:], self.W_U)

    # ------------------------------------------------------------------------------------------------ pieces
    def rotary_tables(self, model, cache, n: int) -> tuple[tuple, tuple]:
        """Per-layer (cos, sin) [n, rotary_dim] of an n-token run, one tensor per distinct table."""
        import torch

        if self.rotary_hooks is not None:
            pairs = [(cache[c][0], cache[s][0]) for c, s in self.rotary_hooks]
        else:
            pairs = [(b.attn.rotary_cos[:n].detach(), b.attn.rotary_sin[:n].detach()) for b in model.blocks]
        distinct, per_layer = [], []
        for cos, sin in pairs:
            same = next((d for d in distinct if torch.equal(cos, d[0]) and torch.equal(sin, d[1])), None)
            if same is None:
                distinct.append(same := (cos, sin))
            per_layer.append(same)
        return tuple(c for c, _ in per_layer), tuple(s for _, s in per_layer)

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

    def _qkv(self, l: int, xn, parts: slice):
        """Columns ``parts`` of layer l's fused projection of the normed residual."""
        dense = self.dense[l]
        out = xn @ dense.W_qkv[:, parts]
        return out if dense.b_qkv is None else out + dense.b_qkv[parts]

    def keys_values(self, l: int, resid, cos, sin):
        """Rotated keys and values [..., P, kv_head, d] of layer l from its residual input [..., P, d_model]."""
        layer = self.layers[l]
        n_q, (G, D) = self.n_heads * self.d_head, layer.W_K.shape[::2]
        k, v = self._qkv(l, layer.ln1(resid), slice(n_q, None)).unflatten(-1, (2 * G, D)).split(G, -2)
        return self.rotate(layer.k_norm(k), cos, sin), v

    def attention_z(self, l: int, resid, past_k, past_v, cos, sin):
        """z [N, C, P, head, d] of the block positions; resid [N, C, P, d_model], past [N, S, kv_head, d]."""
        import torch

        layer = self.layers[l]
        H, D = self.n_heads, self.d_head
        n_kv = layer.W_K.shape[0]
        q, k, v = self._qkv(l, layer.ln1(resid), slice(None)).unflatten(-1, (H + 2 * n_kv, D)).split(
            (H, n_kv, n_kv), -2)
        q, k = self.rotate(layer.q_norm(q), cos, sin), self.rotate(layer.k_norm(k), cos, sin)
        N, C, P = q.shape[:3]
        q = q.reshape(N, C, P, n_kv, H // n_kv, D)
        scores = torch.einsum("ncpkgd,ncqkd->nckgpq", q, k) / layer.attn_scale
        S = past_k.shape[1]
        if S:
            past = torch.einsum("ncpkgd,nskd->nckgps", q, past_k) / layer.attn_scale
            scores = torch.cat((past, scores), dim=-1)
        scores = scores.masked_fill(self._hidden(layer.window, S, P, q.device), float("-inf"))
        pattern = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        z = torch.einsum("nckgpq,ncqkd->ncpkgd", pattern[..., S:], v)
        if S:
            z = z + torch.einsum("nckgps,nskd->ncpkgd", pattern[..., :S], past_v)
        return z.reshape(N, C, P, H, D)

    @staticmethod
    def _hidden(window, S: int, P: int, device):
        """[P, S + P] keys the block's queries (positions S..S+P-1) may not see: later ones, and with a sliding
        window those ``window`` or more positions back."""
        import torch

        q = torch.arange(S, S + P, device=device)[:, None]
        k = torch.arange(S + P, device=device)[None, :]
        hidden = k > q
        return hidden | (q - k >= window) if window is not None else hidden

    def finish_block(self, l: int, resid, z):
        """resid_post of layer l from its resid_pre and its (possibly patched) z."""
        layer, dense = self.layers[l], self.dense[l]
        mid = _add_output(resid, z.flatten(-2) @ dense.W_O, dense.b_O, layer.ln1_post)
        if layer.mlp is None:
            return mid
        h = mlp_hidden(dense.W_mlp_in, dense.b_in, dense.gated, self.act, layer.ln2(mid))
        return _add_output(mid, h @ dense.W_out, dense.b_out, layer.ln2_post)

    def block(self, l: int, resid, past_k, past_v, cos, sin):
        return self.finish_block(l, resid, self.attention_z(l, resid, past_k, past_v, cos, sin))

    def final_normed(self, resid):
        return self.ln_final(resid)
