"""What a model's blocks are made of, read from the model itself and checked part by part before the tail math
(``arch.py``) is trusted with them.

A config does not always describe the model: a TransformerBridge's config says nothing of Gemma's QK norms, sandwich
norms or per-layer rotary tables. So the parts are found in the modules: every child of a block must be one the
math knows (``ln1``, ``ln1_post``, ``ln2``, ``ln2_post``, ``attn``, ``mlp``), every child of its attention too
(``q``/``k``/``v``/``o``, ``q_norm``, ``k_norm``); a bridge may not leave weights of its HF module unwrapped; the
attention must be a class whose forward the math follows; and every norm and MLP is run once on a fixed probe input
and must equal its reconstruction from the weights (which also finds the norm's weight convention, e.g. Gemma's
``1 + weight``). Any other part raises ``FastPathUnsupported`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass


class FastPathUnsupported(Exception):
    """The model has a feature the tail recompute does not reproduce."""


BLOCK_PARTS = ("ln1", "attn", "ln1_post", "ln2", "mlp", "ln2_post")
ATTENTION_PARTS = ("q", "k", "v", "o", "q_norm", "k_norm")
# A bridge's HF attention module carrying one of these (not None) computes something the tail math does not.
HF_ATTENTION_EXTRAS = ("key_multiplier", "sinks", "attn_logit_softcapping")


def detach(t):
    return None if t is None else t.detach()


def zeros_if_none(t, shape, like):
    import torch

    return torch.zeros(shape, dtype=like.dtype, device=like.device) if t is None else t.detach()


@dataclass
class Norm:
    kind: str | None  # "LN", "RMS", or None (identity)
    w: object = None  # the scale actually applied (Gemma's 1 + weight already added)
    b: object = None
    eps: float = 1e-5

    def __call__(self, x):
        if self.kind is None:
            return x
        if self.kind == "LN":
            x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        if self.w is not None:
            x = x * self.w
        if self.b is not None:
            x = x + self.b
        return x


@dataclass
class Layer:
    ln1: Norm
    ln1_post: Norm  # on the attention output, before the residual add (Gemma's sandwich norms)
    ln2: Norm
    ln2_post: Norm  # on the MLP output
    q_norm: Norm  # over d_head, before the rotary embedding
    k_norm: Norm
    W_Q: object
    b_Q: object
    W_K: object
    b_K: object
    W_V: object
    b_V: object
    W_O: object
    b_O: object
    attn_scale: float  # scores are divided by it
    window: int | None  # sliding-window attention: a query sees keys fewer than ``window`` positions back
    mlp: tuple | None  # (W_in, b_in, W_gate or None, W_out, b_out)


# ---------------------------------------------------------------------------------------------------- probing
def _probe(d: int, like):
    """A fixed input [2, 3, d] in the model's dtype and device (its own generator: the global RNG is untouched)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, d, generator=g) * 2 + 0.3).to(dtype=like.dtype, device=like.device)


def _matches(mine, theirs) -> bool:
    import torch

    rel = 1e-4 if theirs.dtype in (torch.float32, torch.float64) else 2e-2
    return mine.shape == theirs.shape and bool((mine - theirs).abs().max() <= rel * max(1.0, theirs.abs().max()))


def _run(module, x, where: str):
    import torch

    try:
        with torch.no_grad():
            return module(x)
    except Exception as exc:  # a module taking other inputs or shapes is a part the math does not cover
        raise FastPathUnsupported(f"{where} ({type(module).__name__}) does not run as the fast path expects: "
                                  f"{type(exc).__name__}: {exc}") from exc


def _eps(module, default: float) -> float:
    for m in (module, getattr(module, "original_component", None)):
        for name in ("eps", "variance_epsilon"):
            value = getattr(m, name, None)
            if isinstance(value, (float, int)) and not isinstance(value, bool):
                return float(value)
    return default


def read_norm(module, where: str, d: int, like, eps: float) -> Norm:
    """The norm ``module`` computes over its last dim (size d), found by running it on a probe input."""
    import torch

    if module is None or isinstance(module, torch.nn.Identity):
        return Norm(None)
    w, b = getattr(module, "w", None), getattr(module, "b", None)
    if w is None and b is None:  # bridge components wrap the HF module's weight/bias
        for name, p in module.named_parameters():
            if name.endswith("weight"):
                w = p
            elif name.endswith("bias"):
                b = p
    w, b, eps = detach(w), detach(b), _eps(module, eps)
    x = _probe(d, like)
    theirs = _run(module, x, where)
    for kind in ("RMS", "LN"):
        for scale in ((None,) if w is None else (w, 1 + w)):
            for bias in ((None,) if b is None else (b, None)):
                norm = Norm(kind, scale, bias, eps)
                if _matches(norm(x), theirs):
                    return norm
    raise FastPathUnsupported(f"{where} ({type(module).__name__}) is a norm the fast path does not reproduce")


def gate_and_input(W_in, W_gate):
    """A gated MLP's gate and input matrices side by side, [d_model, 2 d_mlp] (one matmul); W_in if not gated."""
    import torch

    return W_in if W_gate is None else torch.cat((W_gate, W_in), 1).contiguous()


def mlp_hidden(W_mlp_in, b_in, gated: bool, act, x):
    """The MLP's hidden activations from ``gate_and_input``'s matrix; ``b_in`` may be None (zero). TL's gated MLP
    adds b_in after the gate product. The probe check below and the tail both compute the MLP with this."""
    h = x @ W_mlp_in
    if not gated:
        return act(h if b_in is None else h + b_in)
    gate, h = h.chunk(2, -1)
    h = act(gate) * h
    return h if b_in is None else h + b_in


def read_mlp(block, where: str, act, like) -> tuple:
    m = block.mlp
    if not (hasattr(m, "W_in") and hasattr(m, "W_out")):
        raise FastPathUnsupported(f"{where} ({type(m).__name__}) has no W_in/W_out: not an MLP the fast path "
                                  "reproduces")
    W_in, W_out = m.W_in.detach(), m.W_out.detach()
    W_gate = detach(getattr(m, "W_gate", None))
    mlp = (W_in, zeros_if_none(getattr(m, "b_in", None), W_in.shape[-1:], W_in), W_gate, W_out,
           zeros_if_none(getattr(m, "b_out", None), W_out.shape[-1:], W_out))
    x = _probe(W_in.shape[0], like)
    if not _matches(mlp_hidden(gate_and_input(W_in, W_gate), mlp[1], W_gate is not None, act, x) @ W_out + mlp[4],
                    _run(m, x, where)):
        raise FastPathUnsupported(f"{where} ({type(m).__name__}) is an MLP the fast path does not reproduce "
                                  f"({'gated' if W_gate is not None else 'plain'}, activation {getattr(act, '__name__', act)})")
    return mlp


# ---------------------------------------------------------------------------------------------------- structure
def _bridge_component():
    try:
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    except ImportError:
        return None
    return GeneralizedComponent


def is_bridge(module) -> bool:
    base = _bridge_component()
    return base is not None and isinstance(module, base)


def _unknown_children(module, known, where: str) -> None:
    from transformer_lens.hook_points import HookPoint

    for name, child in module.named_children():
        if name not in known and name != "_original_component" and not isinstance(child, HookPoint):
            raise FastPathUnsupported(f"{where}.{name} ({type(child).__name__}) is a part the fast path does not "
                                      "reproduce")


def _unwrapped_hf_weights(bridge, where: str) -> None:
    """Weights of the bridged HF module that no bridge component wraps belong to computations the weights read
    here do not cover."""
    hf, base = bridge.original_component, _bridge_component()
    own = [n for n, _ in hf.named_parameters(recurse=False)]
    if own:
        raise FastPathUnsupported(f"{where}: the HF module {type(hf).__name__} has its own weights {own}")
    for name, child in hf.named_children():
        if not isinstance(child, base) and any(True for _ in child.parameters()):
            raise FastPathUnsupported(f"{where}: HF part {name} ({type(child).__name__}) is not wrapped by the "
                                      "bridge; the fast path does not reproduce it")


def _check_attention(model, attn, where: str) -> None:
    if is_bridge(attn):
        from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
            PositionEmbeddingsAttentionBridge)

        if type(attn) is not PositionEmbeddingsAttentionBridge:  # subclasses change the forward
            raise FastPathUnsupported(f"{where}: attention bridge {type(attn).__name__} is not one the fast path "
                                      "reproduces")
        hf = attn.original_component
        hf_cfg = getattr(hf, "config", None)
        rope = getattr(hf_cfg, "rope_parameters", None)
        extra = [name for name in HF_ATTENTION_EXTRAS if getattr(hf, name, None) is not None]
        extra += ["clip_qkv"] if getattr(hf_cfg, "clip_qkv", None) is not None else []
        extra += ["llama_4_scaling_beta"] if isinstance(rope, dict) and rope.get("llama_4_scaling_beta") else []
        extra += ["gated_q_proj"] if getattr(model.cfg, "gated_q_proj", False) else []
        if extra:
            raise FastPathUnsupported(f"{where}: attention with {', '.join(extra)}")
        _unwrapped_hf_weights(attn, where)
        return
    from transformer_lens.components import Attention, GroupedQueryAttention

    if type(attn) not in (Attention, GroupedQueryAttention):
        raise FastPathUnsupported(f"{where}: attention {type(attn).__name__} is not one the fast path reproduces")


def _raw_kv(attn, name):
    """[n_kv_heads, ...]: a HookedTransformer's GQA attention repeats K/V per query head under ``W_K``."""
    raw = getattr(attn, "_" + name, None)
    return raw if raw is not None else getattr(attn, name)


def _kv_bias(attn, name, shape, like):
    return zeros_if_none(_raw_kv(attn, name) if hasattr(attn, "_" + name) else getattr(attn, name, None),
                         shape, like)


def _attention_scale(attn) -> float:
    """The divisor of the scores this attention module itself uses (a bridge: HF's ``scaling`` multiplier, from
    ``query_pre_attn_scalar`` on Gemma)."""
    if is_bridge(attn):
        hf = attn.original_component
        return 1.0 / float(getattr(hf, "scaling", hf.head_dim ** -0.5))  # the bridge's own default
    return float(attn.attn_scale)


def _window(model, attn) -> int | None:
    if is_bridge(attn):
        window = getattr(attn.original_component, "sliding_window", None)  # HF: None on full-attention layers
    else:
        window = model.cfg.window_size if getattr(attn, "attn_type", "global") == "local" else None
    return None if window is None else int(window)


def read_layer(model, l: int, act, like) -> Layer:
    """Layer l's parts, each checked (``FastPathUnsupported`` names the first one the math does not cover)."""
    cfg, block, where = model.cfg, model.blocks[l], f"blocks.{l}"
    _unknown_children(block, BLOCK_PARTS, where)
    if is_bridge(block):
        _unwrapped_hf_weights(block, where)
    attn = block.attn
    _unknown_children(attn, ATTENTION_PARTS, f"{where}.attn")
    _check_attention(model, attn, f"{where}.attn")

    def norm(parent, name, d=cfg.d_model, at=where):
        return read_norm(getattr(parent, name, None), f"{at}.{name}", d, like, cfg.eps)

    W_Q, W_O = attn.W_Q.detach(), attn.W_O.detach()
    W_K, W_V = _raw_kv(attn, "W_K").detach(), _raw_kv(attn, "W_V").detach()
    n_kv = W_K.shape[0]
    return Layer(
        ln1=norm(block, "ln1"), ln1_post=norm(block, "ln1_post"), ln2=norm(block, "ln2"),
        ln2_post=norm(block, "ln2_post"), q_norm=norm(attn, "q_norm", cfg.d_head, f"{where}.attn"),
        k_norm=norm(attn, "k_norm", cfg.d_head, f"{where}.attn"),
        W_Q=W_Q, b_Q=zeros_if_none(getattr(attn, "b_Q", None), W_Q.shape[::2], W_Q),
        W_K=W_K, b_K=_kv_bias(attn, "b_K", (n_kv, cfg.d_head), W_K),
        W_V=W_V, b_V=_kv_bias(attn, "b_V", (n_kv, cfg.d_head), W_V),
        W_O=W_O, b_O=zeros_if_none(getattr(attn, "b_O", None), W_O.shape[-1:], W_O),
        attn_scale=_attention_scale(attn), window=_window(model, attn),
        mlp=None if cfg.attn_only else read_mlp(block, f"{where}.mlp", act, like))


# ---------------------------------------------------------------------------------------------------- model-wide
def _post_norm_architectures() -> tuple:
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:
        return ()
    return tuple(POST_NORM_ARCHITECTURES)


def rotary_hooks(model) -> list[tuple[str, str]] | None:
    """A bridge's per-layer (cos, sin) hook names: each layer's own table (Gemma: local and global bases)."""
    names = [(f"blocks.{l}.attn.hook_cos", f"blocks.{l}.attn.hook_sin") for l in range(model.cfg.n_layers)]
    hooks = model.hook_dict  # a bridge rebuilds it on every access
    return names if all(c in hooks and s in hooks for c, s in names) else None


def unsupported_reason(model) -> str | None:
    """The first model-wide setting the tail math does not reproduce (the blocks' parts are checked as
    ``read_layer`` reads them)."""
    cfg = model.cfg
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    checks = [
        (cfg.positional_embedding_type not in ("standard", "rotary"),
         f"positional embedding {cfg.positional_embedding_type}"),
        (getattr(cfg, "parallel_attn_mlp", False), "parallel attention/MLP"),
        (getattr(cfg, "original_architecture", None) in _post_norm_architectures(), "post-norm blocks"),
        (getattr(cfg, "attention_dir", "causal") != "causal", "non-causal attention"),
        (bool(getattr(cfg, "attn_scores_soft_cap", -1.0) > 0), "attention soft cap"),
        (bool(getattr(cfg, "output_logits_soft_cap", -1.0) > 0)
         or getattr(hf_config, "final_logit_softcapping", None) is not None, "logit soft cap"),
        (getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False), "split qkv input"),
        (getattr(cfg, "post_embedding_ln", False), "post-embedding LayerNorm"),
        (getattr(cfg, "use_logn_attn", False), "log-n attention scaling"),
        (getattr(cfg, "use_dynamic_ntk_rope", False), "dynamic NTK rotary"),
        (getattr(cfg, "use_attention_sinks", False), "attention sinks"),
        (getattr(cfg, "clip_qkv", None) is not None, "clipped QKV"),
        (getattr(cfg, "load_in_4bit", False), "4-bit weights"),
        (getattr(cfg, "num_experts", None) not in (None, 0), "mixture of experts"),
        (not cfg.attn_only and cfg.act_fn not in SUPPORTED_ACTIVATIONS, f"activation {cfg.act_fn}"),
        (not cfg.attn_only and cfg.act_fn == "solu_ln", "SoLU-LN activation"),
        (cfg.positional_embedding_type == "rotary" and rotary_hooks(model) is None
         and not hasattr(model.blocks[0].attn, "rotary_cos"), "rotary tables not found"),
    ]
    for bad, reason in checks:
        if bad:
            return reason
    return None
