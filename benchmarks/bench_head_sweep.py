"""Final-position clean -> corrupt patching of ``hook_z`` on SmolLM2 (30 layers x 9 heads), three ways in one run,
at 27, 90 and 270 cells (every 10th, every 3rd and every head, layer-major order):

* the mechclaim engine (``head_evidence``, fast path), cold: no prompt run cached (``clear_activations`` before
  every call); what the engine learns once per model and prompt length in a session (the model's parts, probed;
  the self-check against one full forward) is kept, and timed on its own as the session's first call;
* the batched peer (``batched_peer.py``: plain torch on the model's own weights, none of the engine), cold by
  construction: every call runs its clean/corrupt forward again;
* TransformerLens' helper ``generic_activation_patch`` (its clean ``run_with_cache``, then one full forward of the
  corrupt batch per cell), on the first --tl-cells cells of the smallest set only, since it is slow: at larger
  sizes its time is extrapolated (clean run + cells x its measured time per cell) and marked ``~``.

For scale it also times the model's own forward over the sweep's clean and corrupt prompts (HF's base model: no
hooks, no unembedding): work every cold sweep does, whatever the method, so its share of the peak is what a cold
sweep's base runs can reach.

Every number compared is the per-prompt target - foil logit at the final position; all three must agree to 1e-4.

Timing, the same for every side and the matmul peak: ``common.timed``, one untimed warm-up call, then --reps timed
calls, reported as the median. FLOPs are counted by torch's FlopCounterMode (matmul-like ops, 2 per multiply-add;
elementwise ops and CPU fused-attention kernels are not counted) on one more cold call of each side. Achieved
FLOP/s = counted FLOPs / median time, against the matmul peak (``common.matmul_peak_flops``: 16 float32 1024^3
matmuls per timed call) measured just before each size.

Analytic minimum, same convention, for exact patching of a cell set C on N prompts of n tokens (L layers, d_model
d, H query and G key/value heads of width d_h, MLP width m):

    M = 2 d m (2 if gated else 1) + 2 m d              MLP, per token
    P = 2 d (H + 2G) d_h + 2 H d_h d + M               a block's projections, per token
    base = 2 N L (n P + 2 H d_h n (n + 1))             clean and corrupt runs over all positions (causal: the
                                                       query at position i reads i + 1 keys, 4 H d_h each)
    tail(l) = 2 d_h d + M + (L - 1 - l)(P + 4 H d_h n) one head's z patched at layer l, final position: that head's
                                                       rank-d_h change of the attention output, the MLP, then each
                                                       later block at the final position, reading n - 1 cached
                                                       keys/values and its own
    minimum = base + N sum_{c in C} (tail(l_c) + 4 d) + 8 N d
                                                       + the target and foil unembedding columns, per cell and for
                                                       the clean and corrupt baselines

At --length and --long-length tokens it also reports TL's helper time per cell against the engine's (270 cells,
cold; and warm, the clean/corrupt runs reused from the cache: tails only). TL runs a full forward per cell, so its
per-cell cost grows with the prompt; a tail recompute runs the final position only.

    python benchmarks/bench_head_sweep.py [--prompts 8] [--length 30] [--long-length 120] [--reps 3]
                                          [--tl-cells 27] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: TL's helper draws a progress bar per sweep
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batched_peer import peer_sweep  # noqa: E402
from common import counted_flops, induction_tasks, load_smollm2, matmul_peak_flops, timed  # noqa: E402

AGREEMENT = 1e-4


def tensors(tasks):
    import torch

    return tuple(torch.tensor([getattr(t.pair, k) for t in tasks]) for k in ("clean", "corrupt", "target", "foil"))


def cell_sets(cfg) -> list[list[tuple[int, int]]]:
    every = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
    return [every[::step] for step in (10, 3, 1)]


def minimum_flops(cfg, n_prompts: int, n_tokens: int, cells) -> int:
    """The analytic minimum of the module docstring."""
    d, H, d_h, L, n = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_layers, n_tokens
    G = getattr(cfg, "n_key_value_heads", None) or H
    M = 0 if cfg.attn_only else 2 * d * cfg.d_mlp * (2 if cfg.gated_mlp else 1) + 2 * cfg.d_mlp * d
    P = 2 * d * (H + 2 * G) * d_h + 2 * H * d_h * d + M
    base = 2 * n_prompts * L * (n * P + 2 * H * d_h * n * (n + 1))
    tails = sum(2 * d_h * d + M + (L - 1 - l) * (P + 4 * H * d_h * n) + 4 * d for l, _ in cells)
    return base + n_prompts * tails + 8 * n_prompts * d


def engine_sweep(model, tasks, cells):
    """[cells, prompts] patched metrics from ``head_evidence`` (whatever the session cache holds)."""
    import torch
    from pytest_mechclaim.engine import head_evidence

    rows = head_evidence(model, tasks, [f"L{l}H{h}" for l, h in cells], ("clean_to_corrupt",), path="fast")
    assert rows.meta["path"] == "fast" and all(r.ok for r in rows)
    cell = {f"L{l}H{h}": i for i, (l, h) in enumerate(cells)}
    prompt = {t.pair.prompt_id: i for i, t in enumerate(tasks)}
    out = torch.empty(len(cells), len(tasks))
    for r in rows:
        out[cell[r.unit], prompt[r.prompt_id]] = r.patched
    return out


def peer(model, tasks, cells):
    return peer_sweep(model, *tensors(tasks), cells)[0]


def model_forward(model, tasks):
    """The model's own forward over the clean and corrupt prompts, as HF runs it (no hooks, no unembedding)."""
    import torch

    clean, corrupt, _, _ = tensors(tasks)
    with torch.no_grad():
        model.original_model.base_model(torch.cat((clean, corrupt)))


def tl_sweep(model, tasks, cells, split: list | None = None):
    """[cells, prompts] from TL's generic_activation_patch restricted to the final position (its metric must be a
    scalar: the per-prompt values are kept on the side). ``split`` gets (clean run s, patching s) appended."""
    import pandas as pd
    import torch
    from transformer_lens import patching

    clean, corrupt, target, foil = tensors(tasks)
    idx = torch.arange(len(tasks))
    per_prompt = []

    def metric(logits):
        per_prompt.append(logits[idx, -1, target] - logits[idx, -1, foil])
        return per_prompt[-1].mean()

    index_df = pd.DataFrame([(l, corrupt.shape[1] - 1, h) for l, h in cells], columns=["layer", "pos", "head_index"])
    with torch.no_grad():
        start = time.perf_counter()
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("attn.hook_z"))
        mid = time.perf_counter()
        patching.generic_activation_patch(model, corrupt, clean_cache, metric,
                                          patching.layer_pos_head_vector_patch_setter, "z", index_df=index_df)
    if split is not None:
        split.append((mid - start, time.perf_counter() - mid))
    return torch.stack(per_prompt)


class Sweeps:
    """The three sweeps on one prompt set, timed with one protocol."""

    def __init__(self, model, tasks, reps: int):
        from pytest_mechclaim.engine import ACTIVATION_CACHE

        self.model, self.tasks, self.reps, self.cache = model, tasks, reps, ACTIVATION_CACHE

    def engine(self, cells, cold: bool = True):
        """(numbers, median seconds); warm: the clean/corrupt runs stay in the cache (the warm-up call fills it)."""
        out, times = timed(lambda: engine_sweep(self.model, self.tasks, cells), self.reps,
                           before=self.cache.clear_activations if cold else None)
        return out, statistics.median(times)

    def first_call(self, cells):
        """Median seconds of a session's first call: the model's parts probed and the length self-checked too."""
        _, times = timed(lambda: engine_sweep(self.model, self.tasks, cells), self.reps, before=self.cache.clear)
        return statistics.median(times)

    def peer(self, cells):
        out, times = timed(lambda: peer(self.model, self.tasks, cells), self.reps)
        return out, statistics.median(times)

    def tl(self, cells):
        """(numbers, median seconds of its clean run, median seconds per patched cell) over the timed calls."""
        split = []
        out, _ = timed(lambda: tl_sweep(self.model, self.tasks, cells, split), self.reps)
        timed_calls = split[1:]  # the first is the warm-up
        return (out, statistics.median(c for c, _ in timed_calls),
                statistics.median(p for _, p in timed_calls) / len(cells))

    def model_forward(self):
        """(median seconds, counted FLOPs) of the model's own forward over the base prompts."""
        _, times = timed(lambda: model_forward(self.model, self.tasks), self.reps)
        return statistics.median(times), counted_flops(lambda: model_forward(self.model, self.tasks))

    def flops(self, cells):
        """Counted FLOPs of one cold engine call and one peer call."""
        def cold_engine():
            self.cache.clear_activations()
            engine_sweep(self.model, self.tasks, cells)

        return counted_flops(cold_engine), counted_flops(lambda: peer(self.model, self.tasks, cells))


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def diff_at(cells, numbers, tl_cells, tl_numbers) -> float | None:
    """Max |difference| from TL's numbers over the cells both have (None when they share none)."""
    shared = [(cells.index(c), i) for i, c in enumerate(tl_cells) if c in cells]
    if not shared:
        return None
    ours, theirs = zip(*shared)
    return max_diff(numbers[list(ours)], tl_numbers[list(theirs)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--length", type=int, default=30)
    ap.add_argument("--long-length", type=int, default=120)
    ap.add_argument("--reps", type=int, default=3, help="timed calls per measurement, after one warm-up")
    ap.add_argument("--tl-cells", type=int, default=27, help="cells TL's helper runs (the smallest set's first)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 prompts, 1 rep, TL on 3 cells")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.reps, args.tl_cells = 2, 1, 3
    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)
    model = load_smollm2()
    cfg = model.cfg
    sizes = cell_sets(cfg)
    tl_cells = sizes[0][:args.tl_cells]
    print(f"SmolLM2-135M ({cfg.n_layers} layers x {cfg.n_heads} heads), {args.prompts} prompts x {args.length} "
          f"tokens, final-position hook_z clean -> corrupt, {args.threads} threads, torch {torch.__version__}\n"
          f"timing: median of {args.reps} timed calls after one untimed warm-up, for every side and the matmul "
          f"peak; engine cold (no prompt run cached before each call), peer cold (its own base runs every call)\n"
          f"TL's helper: measured on {len(tl_cells)} cells of the {len(sizes[0])}-cell set; '~' = extrapolated")
    sweeps = Sweeps(model, induction_tasks(args.prompts, args.length), args.reps)
    tl_out, tl_clean, tl_per_cell = sweeps.tl(tl_cells)
    rows, worst = [], 0.0
    for cells in sizes:
        peak = matmul_peak_flops(args.reps)
        ours, t_engine = sweeps.engine(cells)
        theirs, t_peer = sweeps.peer(cells)
        f_engine, f_peer = sweeps.flops(cells)
        f_min = minimum_flops(cfg, args.prompts, args.length, cells)
        t_tl = tl_clean + tl_per_cell * len(cells)
        diffs = (max_diff(ours, theirs), diff_at(cells, ours, tl_cells, tl_out),
                 diff_at(cells, theirs, tl_cells, tl_out))
        worst = max([worst, *(d for d in diffs if d is not None)])
        rows.append(dict(cells=len(cells), t_engine=t_engine, t_peer=t_peer, t_tl=t_tl,
                         tl_mark="" if len(cells) == len(tl_cells) else "~", f_engine=f_engine, f_peer=f_peer,
                         f_min=f_min, peak=peak, diffs=diffs))
        print(f"{len(cells):4d} cells: engine {t_engine:.3f} s, peer {t_peer:.3f} s, TL {rows[-1]['tl_mark']}"
              f"{t_tl:.2f} s; FLOPs engine {f_engine / 1e9:.2f} G, peer {f_peer / 1e9:.2f} G, minimum "
              f"{f_min / 1e9:.2f} G; matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)

    lengths = []
    for n_tokens in dict.fromkeys((args.length, args.long_length)):
        if n_tokens == args.length:  # the 270-cell cold sweep and TL's cells were measured above
            at, t_cold, per_cell = sweeps, rows[-1]["t_engine"], tl_per_cell
        else:
            at = Sweeps(model, induction_tasks(args.prompts, n_tokens), args.reps)
            ours, t_cold = at.engine(sizes[-1])
            theirs, _, per_cell = at.tl(tl_cells)
            worst = max(worst, diff_at(sizes[-1], ours, tl_cells, theirs))
        _, t_warm = at.engine(sizes[-1], cold=False)
        lengths.append(dict(tokens=n_tokens, tl=per_cell, cold=t_cold / len(sizes[-1]),
                            warm=t_warm / len(sizes[-1])))
        print(f"{n_tokens} tokens: TL {per_cell:.4f} s/cell, engine cold {lengths[-1]['cold']:.4f} s/cell, "
              f"warm {lengths[-1]['warm']:.4f} s/cell", flush=True)

    peak = matmul_peak_flops(args.reps)
    t_forward, f_forward = sweeps.model_forward()
    print(f"the model's own forward over the {2 * args.prompts} base prompts (HF, no hooks, no unembedding): "
          f"{t_forward:.3f} s, {f_forward / 1e9:.2f} GFLOP, {100 * f_forward / t_forward / peak:.0f}% of a matmul "
          f"peak of {peak / 1e9:.1f} GFLOP/s; it is {100 * f_forward / rows[0]['f_engine']:.0f}% of a cold "
          f"{rows[0]['cells']}-cell sweep's FLOPs", flush=True)
    first = sweeps.first_call(sizes[0])
    print(f"a session's first call, {len(sizes[0])} cells (parts probed, length self-checked): {first:.3f} s "
          f"(cold: {rows[0]['t_engine']:.3f} s)", flush=True)
    print_tables(rows, lengths, args)
    print(f"\nmax |difference| of the per-prompt numbers over everything compared: {worst:.2e} "
          f"({'within' if worst <= AGREEMENT else 'OUTSIDE'} {AGREEMENT})")
    return 0 if worst <= AGREEMENT else 1


def print_tables(rows, lengths, args):
    print(f"\n### Head sweep, {args.prompts} prompts x {args.length} tokens (median of {args.reps}; cold)\n")
    print("| cells | engine s | peer s | TL s | peer / engine | TL / engine | engine GFLOP | minimum GFLOP "
          "| engine / min | peer / min | matmul peak GFLOP/s | engine % of peak | peer % of peak "
          "| max abs diff engine-peer | engine-TL | peer-TL |")
    print("|" + "---|" * 16)
    for r in rows:
        e_rate, p_rate = r["f_engine"] / r["t_engine"], r["f_peer"] / r["t_peer"]
        print(f"| {r['cells']} | {r['t_engine']:.3f} | {r['t_peer']:.3f} | {r['tl_mark']}{r['t_tl']:.2f} "
              f"| {r['t_peer'] / r['t_engine']:.2f} | {r['tl_mark']}{r['t_tl'] / r['t_engine']:.1f} "
              f"| {r['f_engine'] / 1e9:.2f} | {r['f_min'] / 1e9:.2f} | {r['f_engine'] / r['f_min']:.3f} "
              f"| {r['f_peer'] / r['f_min']:.3f} | {r['peak'] / 1e9:.1f} | {100 * e_rate / r['peak']:.0f}% "
              f"| {100 * p_rate / r['peak']:.0f}% | "
              + " | ".join("n/a" if d is None else f"{d:.1e}" for d in r["diffs"]) + " |")
    print(f"\n### TL's helper per cell vs the engine's (270 cells), {args.prompts} prompts\n")
    print("| tokens | TL s/cell | engine cold s/cell | engine warm s/cell | TL / engine cold | TL / engine warm |")
    print("|" + "---|" * 6)
    for r in lengths:
        print(f"| {r['tokens']} | {r['tl']:.4f} | {r['cold']:.4f} | {r['warm']:.4f} | {r['tl'] / r['cold']:.1f} "
              f"| {r['tl'] / r['warm']:.1f} |")
    print("\nIssue criteria (every size):")
    checks = [("engine at least as fast as the peer", all(r["t_engine"] <= r["t_peer"] for r in rows)),
              ("engine FLOPs <= 1.05 x the analytic minimum", all(r["f_engine"] <= 1.05 * r["f_min"] for r in rows)),
              ("engine FLOP/s >= 75% of the matmul peak",
               all(r["f_engine"] / r["t_engine"] >= 0.75 * r["peak"] for r in rows))]
    for name, ok in checks:
        print(f"- {name}: {'yes' if ok else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
