"""Shared pieces of the engine benchmarks: SmolLM2, induction-style prompts, one timing protocol, and a matmul peak
measured in-run with it."""

from __future__ import annotations

import random
import statistics
import time


def induction_tasks(n_prompts: int, length: int, seed: int = 0, vocab=(1000, 20000)):
    """BOS + r + r[:k] (clean) vs BOS + r + s[:k] (corrupt), ``length`` tokens; target r[k], foil r[0]."""
    from pytest_mechclaim.tasks import PromptPair, Task

    rng = random.Random(f"bench:{seed}")
    half = length // 2
    k = length - 1 - half
    tasks = []
    for i in range(n_prompts):
        r = rng.sample(range(*vocab), half + 1)
        s = rng.sample([t for t in range(*vocab) if t not in r], k)
        tasks.append(Task(PromptPair(f"bench-{i}", "induction", [1] + r[:half] + r[:k], [1] + r[:half] + s,
                                     r[k], r[0])))
    return tasks


def timed(fn, repeats: int, before=None):
    """(result of an untimed warm-up call, [seconds of each of ``repeats`` timed calls]); ``before()`` runs untimed
    ahead of every call, the warm-up included (e.g. emptying a cache for cold timings). Every side of a comparison
    is timed this way."""
    before = before or (lambda: None)
    before()
    result = fn()
    times = []
    for _ in range(repeats):
        before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return result, times


def matmul_peak_flops(repeats: int = 5, n: int = 1024, per_call: int = 16) -> float:
    """float32 FLOP/s of n x n matmuls on this machine, right now: 2 n^3 per_call / the median of ``timed`` calls.

    Each timed call runs ``per_call`` matmuls (about a fifth of a second on a 2-core CPU), so one call spans time
    comparable to the sweeps it is set against and one scheduler pause cannot set the peak."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)

    def matmuls():
        for _ in range(per_call):
            a @ b

    _, times = timed(matmuls, repeats)
    return 2 * n ** 3 * per_call / statistics.median(times)


def counted_flops(fn) -> int:
    """FLOPs of the matmul-like ops fn actually executes (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def load_smollm2():
    from pytest_mechclaim.models import load_smollm2 as load

    return load(cache_dir=".mechclaim/cache")
