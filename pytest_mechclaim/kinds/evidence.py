"""Head evidence beyond the engine's rows: the induction attention score (the descriptive prior a head claim may
be chosen by) and local-mi-lab's attention/effect alignment (a characterization gate)."""

from __future__ import annotations

import random

from .. import gates
from ..engine.cache import captured
from ..gates import GateResult
from ..status import Status


def induction_attention_scores(model, layers=None, n_sequences: int = 8, length: int = 20, seed: int = 0) -> dict:
    """Per head: mean attention from each second-copy position of BOS + r + r (r random tokens) to the token after
    that position's first occurrence. Descriptive only: attention is not an effect."""
    import torch

    rng = random.Random(f"induction-attention:{seed}")
    bos = model.tokenizer.bos_token_id
    vocab = range(1000, min(model.cfg.d_vocab, 20000))
    tokens = []
    for _ in range(n_sequences):
        r = rng.sample(vocab, length)
        tokens.append([bos] + r + r)
    layers = range(model.cfg.n_layers) if layers is None else layers
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in layers}
    with torch.no_grad():  # stops at the last pattern read: no later block, no vocabulary at every position
        cache = captured(model, torch.tensor(tokens, device=model.cfg.device), names,
                         f"blocks.{max(layers)}.attn.hook_pattern")
    dest = torch.arange(length + 1, 2 * length + 1)
    source = dest - length + 1
    scores = {}
    for name in sorted(names, key=lambda n: int(n.split(".")[1])):
        layer = int(name.split(".")[1])
        pattern = cache[name]  # [batch, head, dest, src]
        per_head = pattern[:, :, dest, source].mean(dim=(0, 2))
        for head, value in enumerate(per_head.tolist()):
            scores[f"L{layer}H{head}"] = value
    return scores


def attention_to_source(model, tasks, unit: str) -> dict[str, float]:
    """Per positive prompt: the head's attention from the final position to the previous occurrence's successor
    (where an induction head reads the token it copies). One batched run per prompt length."""
    import torch

    layer, head = (int(x) for x in unit[1:].split("H"))
    name = f"blocks.{layer}.attn.hook_pattern"
    by_length: dict = {}
    for task in tasks:
        if task.pair.position("previous_occurrence") is not None:
            by_length.setdefault(len(task.pair.clean), []).append(task.pair)
    out = {}
    for pairs in by_length.values():
        with torch.no_grad():
            cache = captured(model, torch.tensor([p.clean for p in pairs], device=model.cfg.device), {name}, name)
        for i, pair in enumerate(pairs):
            out[pair.prompt_id] = float(cache[name][i, head, -1, pair.position("previous_occurrence") + 1])
    return out


def attention_alignment(model, tasks, unit: str, rows) -> GateResult:
    """local-mi-lab's attention/effect alignment: Spearman(attention to the source, normalized effect) > 0."""
    from scipy import stats

    attention = attention_to_source(model, tasks, unit)
    effects = {}
    for r in rows:
        e, status = gates.normalized_effect_of(r, 0.1)
        if status == "ok" and r.prompt_id in attention and r.family_role == "positive":
            effects.setdefault(r.prompt_id, e)
    ids = sorted(effects)
    if len(ids) < 4:
        return GateResult("attention_alignment", False, None, 0.0, ">", Status.INSUFFICIENT,
                          f"only {len(ids)} prompts with both an attention score and a usable effect (need 4)")
    a, e = [attention[i] for i in ids], [effects[i] for i in ids]
    corr = stats.spearmanr(a, e).statistic
    mean_attention = sum(a) / len(a)
    details = {"n": len(ids), "mean_attention_to_source": mean_attention}
    if corr != corr:  # constant input: no correlation is defined
        return GateResult("attention_alignment", False, None, 0.0, ">", Status.INSUFFICIENT,
                          "attention or effect is constant across prompts: no alignment to measure", details=details)
    ok = bool(corr > 0)  # a numpy bool is not JSON (report schema: passed is a bool)
    return GateResult("attention_alignment", ok, float(corr), 0.0, ">", Status.STRONG if ok else Status.FALSIFIED,
                      f"Spearman(attention to source, effect) = {corr:.3f} over {len(ids)} prompts; "
                      f"mean attention {mean_attention:.3f}", details=details)
