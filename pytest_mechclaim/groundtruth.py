"""Hand-set transformers whose mechanism is known exactly: ground truth for testing the plugin itself.

A 2-layer attention-only HookedTransformer (no LayerNorm, d_vocab 32, d_model 64, 2 heads of d_head 16):

* token t is coded as +e_(t mod 16) (t < 16) or -e_(t mod 16) (t >= 16) in residual dims 0-15;
* dims 32-43 hold a sinusoidal position code; L0H0 is a previous-token head: its query rotates the position code
  back one step, so it attends to position p-1 and copies that token's code into dims 16-31;
* L1H0 is the induction head: it matches the current token code against the previous-token code, attends to the
  position right after the previous occurrence, and copies that token's code into dims 48-63, which W_U reads;
* L1H1 is a decoy with the *same* attention pattern whose output lands in dims 44-47, which nothing reads: it looks
  like an induction head and has no effect on the logits;
* L0H1 writes nothing.

Not a substitute for a real model: it is the known truth the gates are tested against.
"""

from __future__ import annotations

import math

from .quiet import dependency_deprecations

BOS = 0
D_VOCAB = 32
D_MODEL = 64
N_CTX = 64
TOKEN_DIMS = slice(0, 16)
PREV_DIMS = slice(16, 32)
POS_DIMS = slice(32, 44)
DECOY_DIMS = slice(44, 48)
OUT_DIMS = slice(48, 64)
N_FREQ = 6
# Attention sharpness: scores are multiplied by this before the softmax (TL divides by sqrt(d_head) = 4).
QK_SCALE = 40.0
# Logit scale of the induction head's output.
UNEMBED_SCALE = 10.0
# The previous-token head compares 6 frequencies whose neighbours differ little: it needs a sharper softmax.
PREV_QK_SCALE = 60.0


def token_code(token: int):
    import torch

    code = torch.zeros(16)
    code[token % 16] = 1.0 if token < 16 else -1.0
    return code


def _frequencies():
    return [2 * math.pi / period for period in (67.0, 41.0, 29.0, 19.0, 13.0, 7.0)]


def position_code(pos: int):
    import torch

    out = []
    for w in _frequencies():
        out += [math.sin(w * pos), math.cos(w * pos)]
    return torch.tensor(out)


def _rotate_back_one(d_head: int = 16):
    """Matrix R with R @ pos(p) = pos(p - 1) on the 12 position dims (a block rotation per frequency)."""
    import torch

    R = torch.zeros(12, 12)
    for k, w in enumerate(_frequencies()):
        c, s = math.cos(w), math.sin(w)
        # [sin(w(p-1)), cos(w(p-1))] = [[c, -s], [s, c]] @ [sin(wp), cos(wp)]
        R[2 * k: 2 * k + 2, 2 * k: 2 * k + 2] = torch.tensor([[c, -s], [s, c]])
    return R


VARIANTS = ("standard", "cancelling", "norm_shove")
# The cancelling L1H1 helps targets whose index (token mod 16) is below this and hurts the rest.
CANCEL_SPLIT = 12
# A norm-shoving L1H1 writes this much into the unread dims 44-47 for every copied token (the residual norm is ~3).
SHOVE_SCALE = 25.0


def build_induction_model(device: str = "cpu", variant: str = "standard"):
    """The hand-set induction model described in the module docstring, as a real HookedTransformer.

    Variants change only L1H1, for planted false claims with a known failure:
    * ``cancelling``: L1H1 also copies the source token into the output dims, with weight +1 for token indices
      0-11 and -0.5 for 12-15 (index = token mod 16): it helps most targets and hurts the rest;
    * ``norm_shove``: L1H1 copies like L1H0 and also writes a large vector into the unread dims 44-47, so ablating
      it moves the target *and* shoves the residual norm.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ground-truth variant {variant!r}; known: {VARIANTS}")
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D_MODEL, d_head=16, n_heads=2, d_vocab=D_VOCAB, n_ctx=N_CTX, attn_only=True,
        normalization_type=None, positional_embedding_type="standard", act_fn=None, device=device,
        default_prepend_bos=False, seed=0,
    )
    with dependency_deprecations():
        model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for t in range(D_VOCAB):
            model.W_E[t, TOKEN_DIMS] = token_code(t)
            model.W_U[OUT_DIMS, t] = token_code(t) * UNEMBED_SCALE
        for p in range(N_CTX):
            model.W_pos[p, POS_DIMS] = position_code(p)
        eye16 = torch.eye(16)
        # L0H0: previous-token head. q = R pos(p), k = pos(j): score peaks at j = p - 1.
        R = _rotate_back_one()
        model.blocks[0].attn.W_Q[0, POS_DIMS, :12] = R.T * PREV_QK_SCALE
        model.blocks[0].attn.W_K[0, POS_DIMS, :12] = torch.eye(12)
        model.blocks[0].attn.W_V[0, TOKEN_DIMS, :] = eye16
        model.blocks[0].attn.W_O[0, :, PREV_DIMS] = eye16
        # L1H0 (induction) and L1H1 (decoy): identical QK, current token code vs previous-token code.
        for head in (0, 1):
            model.blocks[1].attn.W_Q[head, TOKEN_DIMS, :] = eye16 * QK_SCALE
            model.blocks[1].attn.W_K[head, PREV_DIMS, :] = eye16
            model.blocks[1].attn.W_V[head, TOKEN_DIMS, :] = eye16
        model.blocks[1].attn.W_O[0, :, OUT_DIMS] = eye16
        if variant == "standard":
            model.blocks[1].attn.W_O[1, :4, DECOY_DIMS] = torch.eye(4)
        elif variant == "cancelling":
            signs = torch.tensor([1.0] * CANCEL_SPLIT + [-0.5] * (16 - CANCEL_SPLIT))
            model.blocks[1].attn.W_O[1, :, OUT_DIMS] = torch.diag(signs)
        else:
            model.blocks[1].attn.W_O[1, :, OUT_DIMS] = eye16
            model.blocks[1].attn.W_O[1, :, DECOY_DIMS] = SHOVE_SCALE * torch.ones(16, 4)
    model.eval()
    return model


# Positive families: the repeated sequence's length and how much of the second copy the prompt shows.
INDUCTION_FAMILIES = {"repeat_short": (6, 5), "repeat_long": (12, 10)}
CONTROL_SUITES = ("no_repeat", "distractor")


def induction_tasks(seed: int, n_per_family: int = 8, families=INDUCTION_FAMILIES,
                    split_by_target_index: int | None = None, token_range=(1, D_VOCAB), exclude_tokens=()):
    """Tasks for the hand-set induction model; every prompt is drawn from ``random.Random(seed)``.

    Positive pair: clean = BOS + r + r[:k] (target r[k]), corrupt = BOS + r + s[:k] with s sharing no token with r.
    Matched controls, scored on the same target/foil:
    * ``no_repeat``: BOS + r + s[:k] vs BOS + r + s'[:k]: nothing licenses the target;
    * ``distractor``: the second half ends on r[j] whose successor is neither target nor foil, so the induction
      head predicts r[j+1], not the target.
    The foil is a token of r other than the target and the last token.
    ``split_by_target_index=n`` suffixes each family with ``_low``/``_high`` by whether the target's index (token
    mod 16) is below n; ``token_range`` restricts the tokens r is drawn from; ``exclude_tokens`` are never used.
    """
    import random

    from .tasks import PromptPair, Task

    rng = random.Random(f"groundtruth-induction:{seed}")
    tasks = []
    for family, (length, k) in families.items():
        for i in range(n_per_family):
            r = rng.sample([t for t in range(*token_range) if t not in exclude_tokens], length)
            outside = [t for t in range(1, D_VOCAB) if t not in r and t not in exclude_tokens]
            s = rng.sample(outside, k)
            s2 = rng.sample(outside, k)
            while s2 == s:
                s2 = rng.sample(outside, k)
            target = r[k]
            foil = rng.choice([t for t in r if t not in (target, r[k - 1])])
            head = [BOS] + r
            if split_by_target_index is not None:
                family_name = f"{family}_{'low' if target % 16 < split_by_target_index else 'high'}"
            else:
                family_name = family
            pid = f"{family_name}-s{seed}-{i}"
            # The final token r[k-1] first occurred at index k (BOS is index 0).
            pair = PromptPair(pid, family_name, head + r[:k], head + s, target, foil, seed=seed,
                              positions=(("previous_occurrence", k),), text=" ".join(map(str, head + r[:k])))
            no_repeat = PromptPair(f"{pid}-no_repeat", "no_repeat", head + s, head + s2, target, foil,
                                   family_role="control", seed=seed)
            # Distractor: end on a token of r whose successor is neither target nor foil.
            j = rng.choice([j for j in range(length - 1) if r[j + 1] not in (target, foil) and j != k - 1])
            distractor = PromptPair(f"{pid}-distractor", "distractor", head + s[: k - 1] + [r[j]], head + s2,
                                    target, foil, family_role="control", seed=seed,
                                    positions=(("previous_occurrence", 1 + j),))
            tasks.append(Task(pair, (("no_repeat", no_repeat), ("distractor", distractor))))
    return tasks


def mirror_token(token: int) -> int:
    """The token whose code is the negation of this one's (t XOR 16); BOS (0) and 16 mirror each other."""
    return token ^ 16


def mirror_pair(pair, family: str, family_role: str = "control"):
    """The same prompt pair with every non-BOS token mirrored: the model computes exactly the same contrast on it,
    by the symmetry of the codes. A control built this way carries the claimed mechanism itself: it leaks."""
    import dataclasses

    def mirror(tokens):
        if any(t == 16 for t in tokens[1:]):
            raise ValueError(f"{pair.prompt_id}: token 16 mirrors onto BOS; build the pair with exclude_tokens=(16,)")
        return tuple(tokens[:1]) + tuple(mirror_token(t) for t in tokens[1:])

    return dataclasses.replace(pair, prompt_id=f"{pair.prompt_id}-mirror", family=family, family_role=family_role,
                               clean=mirror(pair.clean), corrupt=mirror(pair.corrupt),
                               target=mirror_token(pair.target), foil=mirror_token(pair.foil), text=None)


INDUCTION_SAE_HOOK = "blocks.0.hook_resid_post"
# A token feature is on when its code matches fully (dot product ~1); other tokens give 0, the token of opposite
# sign -1, and L0H0's small attention leak to older positions stays far below this.
INDUCTION_SAE_THRESHOLD = 0.5
PREV_TOKEN_FEATURES = range(0, D_VOCAB)
CURRENT_TOKEN_FEATURES = range(D_VOCAB, 2 * D_VOCAB)
POSITION_FEATURES = range(2 * D_VOCAB, 2 * D_VOCAB + 24)
INDUCTION_SAE_D_SAE = 2 * D_VOCAB + 24


def build_induction_sae(device: str = "cpu"):
    """A hand-set SAELens SAE (JumpReLU) on the induction model's ``blocks.0.hook_resid_post`` with known features.

    After layer 0 the residual is exactly token code (dims 0-15) + position code (32-43) + the previous-token code
    L0H0 copies into dims 16-31; the dictionary spans all of it, so the SAE reconstructs the residual:

    * features 0-31: feature t = "the previous token is t" (reads +-e_(t mod 16) in dims 16-31, fires exactly when
      the previous token is t, activation ~1, writes the code back);
    * features 32-63: feature 32 + t = "the current token is t" (dims 0-15, same coding);
    * features 64-87: the positive and negative part of each of the 12 position dims (plain ReLU, exact).

    Ablating feature t removes the key the induction head matches when the current token is t: only the
    predictions made at token t (of the token that followed t earlier) break.
    """
    import torch

    with dependency_deprecations():
        from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
        from sae_lens.saes.sae import SAEMetadata

    cfg = JumpReLUSAEConfig(
        d_in=D_MODEL, d_sae=INDUCTION_SAE_D_SAE, device=device, apply_b_dec_to_input=False,
        metadata=SAEMetadata(model_name="groundtruth:induction", hook_name=INDUCTION_SAE_HOOK, prepend_bos=False),
    )
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
        for t in range(D_VOCAB):
            for feature, dims in ((PREV_TOKEN_FEATURES[t], PREV_DIMS), (CURRENT_TOKEN_FEATURES[t], TOKEN_DIMS)):
                sae.W_enc[dims, feature] = token_code(t)
                sae.W_dec[feature, dims] = token_code(t)
                sae.threshold[feature] = INDUCTION_SAE_THRESHOLD
        for i in range(12):
            for sign, feature in ((1.0, POSITION_FEATURES[2 * i]), (-1.0, POSITION_FEATURES[2 * i + 1])):
                sae.W_enc[POS_DIMS.start + i, feature] = sign
                sae.W_dec[feature, POS_DIMS.start + i] = sign
    sae.eval()
    return sae
