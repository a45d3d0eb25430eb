"""The head-sweep benchmark's batched peer (plain torch, none of the engine) gives the engine's numbers."""

from __future__ import annotations

import pytest
import torch

from benchmarks.batched_peer import peer_sweep
from pytest_mechclaim.engine import head_evidence
from pytest_mechclaim.groundtruth import induction_tasks
from pytest_mechclaim.tasks import Task


def test_peer_equals_the_engine_on_the_handset_model(groundtruth_model):
    cfg = groundtruth_model.cfg
    pairs = [t.pair for t in induction_tasks(0, n_per_family=4, families={"repeat_long": (12, 10)})]
    cells = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
    columns = (torch.tensor([getattr(p, k) for p in pairs]) for k in ("clean", "corrupt", "target", "foil"))
    patched, (clean, corrupt) = peer_sweep(groundtruth_model, *columns, cells)
    rows = head_evidence(groundtruth_model, [Task(p) for p in pairs], [f"L{l}H{h}" for l, h in cells],
                         ("clean_to_corrupt",), path="fast")
    prompt = {p.prompt_id: i for i, p in enumerate(pairs)}
    assert len(rows) == len(cells) * len(pairs)
    for r in rows:
        i, c = prompt[r.prompt_id], cells.index(tuple(map(int, r.unit[1:].split("H"))))
        assert r.patched == pytest.approx(float(patched[c, i]), abs=1e-4)
        assert (r.clean, r.corrupt) == pytest.approx((float(clean[i]), float(corrupt[i])), abs=1e-4)
    assert float((patched - corrupt).abs().max()) > 1.0  # some head moves the metric: the comparison has teeth
