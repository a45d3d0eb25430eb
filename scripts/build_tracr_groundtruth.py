"""Compile a small RASP program with tracr and ship its weights as a TransformerLens-ready .npz.

Run once, in an environment that has tracr and jax (neither is a project dependency; the tests load the .npz with
numpy and torch only):

    pip install --target /tmp/tracr-site tracr-pypi jax
    PYTHONPATH=/tmp/tracr-site python scripts/build_tracr_groundtruth.py

The program (known truth, by construction):

    prev1 = Aggregate(Select(indices, indices, q == k + 1), tokens)    # one head: the previous token
    prev2 = Aggregate(Select(indices, indices, q == k + 2), tokens)    # one head: the token two back
    out   = SequenceMap(lambda a, b: a, prev1, prev2)                  # an MLP that reads both, uses only a

so ``out`` at position p is the token at p - 1. The prev2 head is a decoy with a clean previous-previous attention
pattern whose *value* never reaches the output: swapping it for another in-distribution value changes nothing.
But the MLP's lookup table needs a valid value on both inputs, so zero- or mean-ablating prev2 breaks the output:
the classic off-distribution ablation artifact, exactly.

The conversion: no LayerNorm, ReLU MLPs, attention heads padded by tracr to one size per layer, the unembedding
rebuilt from the residual labels of the output space (W_U[label "out:v", v] = 1). The script checks the converted
HookedTransformer against tracr's own residual stream and decoded output on every input it can enumerate cheaply.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "planted" / "data" / "tracr_prev_token.npz"
VOCAB = (1, 2, 3, 4, 5)
MAX_SEQ_LEN = 8


def program():
    from tracr.rasp import rasp

    prev1 = rasp.categorical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: q == k + 1),
                                            rasp.tokens, default=None)).named("prev1")
    prev2 = rasp.categorical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, lambda k, q: q == k + 2),
                                            rasp.tokens, default=None)).named("prev2")
    return rasp.categorical(rasp.SequenceMap(lambda a, b: a, prev1, prev2)).named("out")


def convert(assembled, output_label: str) -> dict:
    """tracr's haiku parameters -> arrays in TransformerLens layout (W_Q [n_heads, d_model, d_head] ...)."""
    params = {k: {n: np.asarray(v) for n, v in p.items()} for k, p in assembled.params.items()}
    labels = [str(l) for l in assembled.residual_labels]
    cfg = assembled.model_config
    n_heads, d_head = cfg.num_heads, cfg.key_size
    layers = sorted({int(k.split("/")[1].split("_")[1]) for k in params if k.startswith("transformer/layer_")})
    out = {"embed.W_E": params["token_embed"]["embeddings"], "pos_embed.W_pos": params["pos_embed"]["embeddings"]}
    for layer in layers:
        pre = f"transformer/layer_{layer}"
        for name, key in (("W_Q", "query"), ("W_K", "key"), ("W_V", "value")):
            w = params[f"{pre}/attn/{key}"]["w"]  # [d_model, n_heads * d_head]
            out[f"blocks.{layer}.attn.{name}"] = w.reshape(w.shape[0], n_heads, d_head).transpose(1, 0, 2)
            out[f"blocks.{layer}.attn.b_{name[-1]}"] = params[f"{pre}/attn/{key}"]["b"].reshape(n_heads, d_head)
        w_o = params[f"{pre}/attn/linear"]["w"]  # [n_heads * d_head, d_model]
        out[f"blocks.{layer}.attn.W_O"] = w_o.reshape(n_heads, d_head, w_o.shape[1])
        out[f"blocks.{layer}.attn.b_O"] = params[f"{pre}/attn/linear"]["b"]
        out[f"blocks.{layer}.mlp.W_in"] = params[f"{pre}/mlp/linear_1"]["w"]
        out[f"blocks.{layer}.mlp.b_in"] = params[f"{pre}/mlp/linear_1"]["b"]
        out[f"blocks.{layer}.mlp.W_out"] = params[f"{pre}/mlp/linear_2"]["w"]
        out[f"blocks.{layer}.mlp.b_out"] = params[f"{pre}/mlp/linear_2"]["b"]
    # Unembedding rebuilt from the residual labels: output value v is read from the dimension labelled "out:v".
    decoding = {i: v for v, i in assembled.output_encoder.encoding_map.items()}  # output id -> value
    W_U = np.zeros((len(labels), len(decoding)), dtype=np.float32)
    for out_id, value in decoding.items():
        W_U[labels.index(f"{output_label}:{value}"), out_id] = 1.0
    out["unembed.W_U"] = W_U
    meta = {"n_layers": len(layers), "n_heads": n_heads, "d_head": d_head, "d_model": len(labels),
            "d_mlp": int(out["blocks.0.mlp.W_in"].shape[1]), "d_vocab": int(out["embed.W_E"].shape[0]),
            "d_vocab_out": len(decoding), "n_ctx": int(out["pos_embed.W_pos"].shape[0]), "residual_labels": labels,
            "input_encoding": {str(k): v for k, v in assembled.input_encoder.encoding_map.items()},
            "output_decoding": {str(k): v for k, v in decoding.items()},
            "heads": head_roles(params, labels, n_heads, d_head, layers),
            "output_label": output_label,
            "program": "out = SequenceMap(lambda a, b: a, prev1 = shift(tokens, 1), prev2 = shift(tokens, 2))",
            "vocab": list(VOCAB), "max_seq_len": MAX_SEQ_LEN, "compiler_bos": "BOS", "causal": True}
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}, meta


def head_roles(params, labels, n_heads, d_head, layers) -> dict:
    """Which head writes which SOp: read off W_O's nonzero output dimensions (tracr names them)."""
    roles = {}
    for layer in layers:
        w_o = params[f"transformer/layer_{layer}/attn/linear"]["w"].reshape(n_heads, d_head, -1)
        for h in range(n_heads):
            written = sorted({labels[d].split(":")[0] for d in np.nonzero(np.abs(w_o[h]).sum(0) > 1e-6)[0]})
            roles[f"L{layer}H{h}"] = written
    return roles


def hooked(arrays: dict, meta: dict):
    sys.path.insert(0, str(OUT.parents[3]))
    from tests.planted.models import hooked_from_arrays

    return hooked_from_arrays(arrays, meta)


def check(assembled, arrays, meta, n_random: int = 300) -> int:
    """Converted model vs tracr: final residual stream and decoded output, on random inputs of every length."""
    import torch

    model = hooked(arrays, meta)
    enc = assembled.input_encoder.encoding_map
    rng = random.Random(0)
    inputs = [list(x) for x in itertools.product(VOCAB, repeat=3)]
    inputs += [[rng.choice(VOCAB) for _ in range(rng.randint(1, MAX_SEQ_LEN))] for _ in range(n_random)]
    for x in inputs:
        ref = assembled.apply(["BOS"] + x)
        ids = torch.tensor([[enc["BOS"]] + [enc[t] for t in x]])
        with torch.no_grad():
            logits, cache = model.run_with_cache(ids)
        resid = cache[f"blocks.{meta['n_layers'] - 1}.hook_resid_post"][0].numpy()
        err = np.abs(resid - np.asarray(ref.residuals[-1][0])).max()
        assert err < 1e-4, (x, err)
        decoded = [meta["output_decoding"][str(int(i))] for i in logits[0, 1:].argmax(-1)]
        # Position 1 has no previous token: tracr's output there is its default, not a claim anyone tests.
        assert decoded[1:] == ref.decoded[2:] == x[:-1], (x, decoded, ref.decoded)
    return len(inputs)


def main() -> None:
    from tracr.compiler import compiling

    out = program()
    assembled = compiling.compile_rasp_to_model(out, vocab=set(VOCAB), max_seq_len=MAX_SEQ_LEN,
                                                compiler_bos="BOS", causal=True)
    arrays, meta = convert(assembled, out.label)
    n = check(assembled, arrays, meta)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    OUT.with_suffix(".json").write_text(json.dumps(dict(meta, checked_inputs=n), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); heads: {meta['heads']}; matched tracr on {n} inputs")


if __name__ == "__main__":
    main()
