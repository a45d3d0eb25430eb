"""Ablate and amplify (x2) over 10 SAE feature sets of 5 features on SmolLM2, final position, delta mode, two ways
in one run: the engine's reference path (one plain ``run_with_hooks`` full forward per feature set x operation, the
SAE's encode/decode inside the hook) and its fast path (cached clean run, one SAE encode shared by all sets, tail
recompute from the SAE's layer), cold (clean/corrupt runs computed) and warm (reused from the session cache, as for
every later claim on the same prompts). Checks the numbers agree to 1e-4 and prints the speed ratios.

The SAE is the trained SmolLM2 TopK SAE (``blocks.15.hook_resid_post``, d_sae 2304, k 32) when it is already built
in the cache; otherwise a SAELens TopK SAE of the same shape with random weights (timing-grade only) -- the script
says which.

    python benchmarks/bench_sae_sweep.py [--prompts 8] [--length 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import counted_flops, induction_tasks, load_smollm2, matmul_peak_flops  # noqa: E402

CACHE_DIR = Path(".mechclaim/cache")


def load_sae():
    import torch
    from pytest_mechclaim.models import COMPLETE_MARKER, SMOLLM2_NAME

    try:
        from pytest_mechclaim.saes import load_sae_from_disk, smollm2_sae_spec

        folder = CACHE_DIR / "saes" / smollm2_sae_spec(0).dirname(SMOLLM2_NAME)
        if (folder / COMPLETE_MARKER).is_file():
            return load_sae_from_disk(folder), f"trained SmolLM2 TopK SAE ({folder})"
    except ImportError:
        pass
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=576, d_sae=2304, k=32,
                                metadata=SAEMetadata(hook_name="blocks.15.hook_resid_post")))
    with torch.no_grad():
        sae.W_enc.normal_(0, 576 ** -0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    return sae.eval(), "random-init SAELens TopKSAE (d_sae 2304, k 32, blocks.15.hook_resid_post): timing only"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--length", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from pytest_mechclaim.engine import ACTIVATION_CACHE, sae_evidence

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(args.threads)
    model = load_smollm2()
    sae, which = load_sae()
    tasks = induction_tasks(args.prompts, args.length)
    rng = random.Random(0)
    sets = {f"set{i}": rng.sample(range(sae.cfg.d_sae), 5) for i in range(10)}
    ops = ("ablate", ("amplify", 2.0))
    print(f"SmolLM2-135M, {args.prompts} prompts x {args.length} tokens, 10 feature sets x 5 features x "
          f"(ablate, amplify x2), {args.threads} threads\nSAE: {which}")
    peak = matmul_peak_flops()

    def fast():
        ACTIVATION_CACHE.clear()
        return sae_evidence(model, tasks, sae, sets, ops, path="fast")

    t = time.perf_counter()
    ref = sae_evidence(model, tasks, sae, sets, ops, path="reference")
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    ours = fast()
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    warm = sae_evidence(model, tasks, sae, sets, ops, path="fast")  # clean/corrupt runs reused from the cache
    t_warm = time.perf_counter() - t
    assert [r.patched for r in warm] == [r.patched for r in ours]
    flops = counted_flops(fast)
    diff = max(abs(a.patched - b.patched) for a, b in zip(ours, ref))
    moved = max(abs(a.target_delta) for a in ours)
    print(f"reference path (run_with_hooks per cell): {t_ref:8.2f} s")
    print(f"fast path (cold cache):                   {t_fast:8.2f} s")
    print(f"fast path (warm cache: runs reused):      {t_warm:8.2f} s")
    print(f"speed ratio: cold {t_ref / t_fast:.1f}x, warm {t_ref / t_warm:.1f}x   rows {len(ours)}, max |difference| {diff:.2e}, "
          f"largest |target delta| {moved:.3g}")
    print(f"fast-path FLOPs {flops / 1e9:.2f} GFLOP -> {flops / t_fast / 1e9:.2f} GFLOP/s; "
          f"matmul peak {peak / 1e9:.2f} GFLOP/s")
    if not diff <= 1e-4:
        print("FAIL: the two paths disagree")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
