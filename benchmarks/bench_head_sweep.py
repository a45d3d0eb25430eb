"""Every head of SmolLM2 (30 x 9 = 270), final-position clean -> corrupt patching of hook_z, two ways in one run:

* TransformerLens' own helper ``transformer_lens.patching.generic_activation_patch`` with an index_df restricted to
  the final position (one full forward over the whole corrupt batch per head), after its clean ``run_with_cache``;
* the mechclaim engine (``head_evidence``), cold cache: it runs clean and corrupt once, then patches all heads.

Both give the mean over prompts of logit[target] - logit[foil] at the final position; the script checks they agree
to 1e-4 and prints the speed ratio and the engine's achieved FLOP/s (FLOPs counted by torch's FlopCounterMode)
against a float32 matmul peak measured in the same run.

    python benchmarks/bench_head_sweep.py [--prompts 8] [--length 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import counted_flops, induction_tasks, load_smollm2, matmul_peak_flops  # noqa: E402


def tl_sweep(model, tasks):
    import pandas as pd
    import torch
    from transformer_lens import patching

    clean = torch.tensor([t.pair.clean for t in tasks])
    corrupt = torch.tensor([t.pair.corrupt for t in tasks])
    target = torch.tensor([t.pair.target for t in tasks])
    foil = torch.tensor([t.pair.foil for t in tasks])
    idx = torch.arange(len(tasks))
    final = clean.shape[1] - 1

    def metric(logits):
        return (logits[idx, -1, target] - logits[idx, -1, foil]).mean()

    index_df = pd.DataFrame([(l, final, h) for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)],
                            columns=["layer", "pos", "head_index"])
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
        out = patching.generic_activation_patch(model, corrupt, clean_cache, metric,
                                                patching.layer_pos_head_vector_patch_setter, "z", index_df=index_df)
    return out.reshape(model.cfg.n_layers, model.cfg.n_heads)


def engine_sweep(model, tasks):
    import torch
    from pytest_mechclaim.engine import ACTIVATION_CACHE, head_evidence

    ACTIVATION_CACHE.clear()
    heads = [f"L{l}H{h}" for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    rows = head_evidence(model, tasks, heads, ("clean_to_corrupt",), path="fast")
    assert rows.meta["path"] == "fast" and all(r.ok for r in rows)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for r in rows:
        l, h = map(int, r.unit[1:].split("H"))
        out[l, h] += r.patched / len(tasks)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--length", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)
    model = load_smollm2()
    tasks = induction_tasks(args.prompts, args.length)
    print(f"SmolLM2-135M, {args.prompts} prompts x {args.length} tokens, 270 heads, final position, "
          f"{args.threads} threads")
    peak = matmul_peak_flops()

    t = time.perf_counter()
    ours = engine_sweep(model, tasks)
    t_ours = time.perf_counter() - t
    flops = counted_flops(lambda: engine_sweep(model, tasks))
    t = time.perf_counter()
    theirs = tl_sweep(model, tasks)
    t_tl = time.perf_counter() - t
    peak = max(peak, matmul_peak_flops())

    diff = float((ours - theirs).abs().max())
    print(f"TransformerLens generic_activation_patch: {t_tl:8.2f} s  (270 full forwards + clean run)")
    print(f"mechclaim engine (cold cache):            {t_ours:8.2f} s  (clean + corrupt runs + tail recompute)")
    print(f"speed ratio: {t_tl / t_ours:.1f}x   max |difference| of the 270 numbers: {diff:.2e}")
    print(f"engine FLOPs {flops / 1e9:.2f} GFLOP -> {flops / t_ours / 1e9:.2f} GFLOP/s; "
          f"matmul peak {peak / 1e9:.2f} GFLOP/s ({100 * flops / t_ours / peak:.0f}% of peak)")
    if not diff <= 1e-4:
        print("FAIL: the two sweeps disagree")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
