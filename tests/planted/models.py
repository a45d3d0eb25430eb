"""Model variants for the planted-claim corpus: each a few explicit weight edits of the hand-set induction model
(``pytest_mechclaim.groundtruth``), plus the tracr-compiled program loaded from shipped weights (no jax, no tracr).

In the standard model L1H0 copies the token after the previous occurrence into dims 48-63 (read by W_U), L1H1 has
the same attention pattern and writes into unread dims 44-47. Every variant below only rewrites L1H1's or L1H0's
output (W_O) or L1H1's query/key; what each head then does is the variant's known truth.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pytest_mechclaim.groundtruth import (DECOY_DIMS, OUT_DIMS, QK_SCALE, TOKEN_DIMS, build_induction_model)

DATA = Path(__file__).parent / "data"
TRACR_WEIGHTS = DATA / "tracr_prev_token.npz"
# The split variant: L1H1 copies targets whose index (token mod 16) is below this, L1H0 copies the rest.
SPLIT_AT = 10
TINY = 1e-3


def _eye16():
    import torch

    return torch.eye(16)


def _edit(build):
    """Build the standard model, apply ``build(blocks)`` under no_grad, cache the result (models are read-only)."""

    @functools.cache
    def make():
        import torch

        model = build_induction_model()
        with torch.no_grad():
            build(model.blocks)
        return model

    make.__name__ = build.__name__
    make.__doc__ = build.__doc__
    return make


@functools.cache
def standard():
    """L1H0 the induction head, L0H0 the previous-token head, L1H1 a decoy (same pattern, unread output)."""
    return build_induction_model()


@functools.cache
def cancelling():
    """groundtruth's ``cancelling`` variant: L1H1 copies with +1 for target indices 0-11 and -0.5 for 12-15."""
    return build_induction_model(variant="cancelling")


@functools.cache
def norm_shove():
    """groundtruth's ``norm_shove`` variant: L1H1 copies like L1H0 and writes 25x into unread dims 44-47."""
    return build_induction_model(variant="norm_shove")


@_edit
def wrong_sign(blocks):
    """L1H1 is an anti-induction head: it writes minus the target's code at half strength (lowers the target)."""
    blocks[1].attn.W_O[1] = 0.0
    blocks[1].attn.W_O[1, :, OUT_DIMS] = -0.5 * _eye16()


@_edit
def foil_writer(blocks):
    """L1H1 attends to earlier copies of the *current* token and writes it (half strength): with the current token
    as the foil, it pushes the foil, i.e. against the induction prediction."""
    blocks[1].attn.W_K[1] = 0.0
    blocks[1].attn.W_K[1, TOKEN_DIMS, :] = _eye16()
    blocks[1].attn.W_Q[1, TOKEN_DIMS, :] = _eye16() * QK_SCALE
    blocks[1].attn.W_O[1] = 0.0
    blocks[1].attn.W_O[1, :, OUT_DIMS] = 0.5 * _eye16()


@_edit
def tiny(blocks):
    """L1H1 copies like the induction head at 1e-3 of its weight: a real effect, 1000x smaller than L1H0's."""
    blocks[1].attn.W_O[1] = 0.0
    blocks[1].attn.W_O[1, :, OUT_DIMS] = TINY * _eye16()


@_edit
def split(blocks):
    """Induction shared by target index: L1H1 copies indices 0-9, L1H0 copies 10-15 (each the only copier)."""
    import torch

    low = torch.diag((torch.arange(16) < SPLIT_AT).float())
    blocks[1].attn.W_O[1] = 0.0
    blocks[1].attn.W_O[1, :, OUT_DIMS] = low
    blocks[1].attn.W_O[0, :, OUT_DIMS] = _eye16() - low


VARIANTS = {f.__name__: f for f in (standard, cancelling, norm_shove, wrong_sign, foil_writer, tiny, split)}
assert DECOY_DIMS.stop == OUT_DIMS.start  # the decoy's unread dims sit right below the read ones


# ------------------------------------------------------------------------------------------------------ tracr
def hooked_from_arrays(arrays: dict, meta: dict):
    """A HookedTransformer (no LayerNorm, ReLU MLPs, causal) holding a tracr program's converted weights."""
    import numpy as np
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=meta["n_layers"], d_model=meta["d_model"], d_head=meta["d_head"], n_heads=meta["n_heads"],
        d_mlp=meta["d_mlp"], d_vocab=meta["d_vocab"], d_vocab_out=meta["d_vocab_out"], n_ctx=meta["n_ctx"],
        act_fn="relu", normalization_type=None, positional_embedding_type="standard", default_prepend_bos=False,
        device="cpu", seed=0,
    )
    model = HookedTransformer(cfg)
    state = model.state_dict()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, value in arrays.items():
            target = state[name]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"tracr weight {name}: shape {value.shape}, model expects {tuple(target.shape)}")
            target.copy_(torch.tensor(np.array(value)))
    model.eval()
    return model


@functools.cache
def tracr_prev_token():
    """(model, meta): the compiled ``out = prev1`` program (see scripts/build_tracr_groundtruth.py)."""
    import numpy as np

    meta = json.loads(TRACR_WEIGHTS.with_suffix(".json").read_text())
    with np.load(TRACR_WEIGHTS) as data:
        arrays = {k: data[k] for k in data.files}
    return hooked_from_arrays(arrays, meta), meta
