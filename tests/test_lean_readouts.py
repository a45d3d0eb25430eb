"""Forwards that stop at what they read (``engine.cache.captured``, ``final_logit_rows``): bank calibration's final
contrasts unembed the last position only, and attention scores stop at the last pattern they read, without
changing a number."""

from __future__ import annotations

import torch

from pytest_mechclaim.banks.calibration import final_contrasts
from pytest_mechclaim.engine.cache import captured, final_logit_rows
from pytest_mechclaim.kinds.evidence import attention_to_source
from tests.test_engine import _random_tasks, _tiny_model, gt_model, gt_tasks  # noqa: F401


def _unembedded_rows(model) -> tuple[list, object]:
    shapes = []
    handle = model.unembed.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    return shapes, handle


def test_final_logit_rows_are_the_full_forwards_last_row_from_one_unembedded_position():
    model = _tiny_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (5, 11), generator=torch.Generator().manual_seed(1))
    shapes, handle = _unembedded_rows(model)
    rows = final_logit_rows(model, tokens)
    handle.remove()
    with torch.no_grad():
        full = model(tokens)[:, -1]
    assert shapes == [(5, 1, model.cfg.d_model)]
    assert torch.allclose(rows, full, rtol=0, atol=1e-5)


def test_final_contrasts_match_the_full_forward_and_batch_by_length():
    model = _tiny_model()
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, model.cfg.d_vocab, (n,), generator=g).tolist() for n in (7, 9, 7, 12, 9)]
    targets, foils = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    got = final_contrasts(model, seqs, targets, foils, batch_size=2)
    with torch.no_grad():
        want = [float(model(torch.tensor([s]))[0, -1, t] - model(torch.tensor([s]))[0, -1, f])
                for s, t, f in zip(seqs, targets, foils)]
    assert max(abs(a - b) for a, b in zip(got, want)) <= 1e-5


def test_a_captured_forward_stops_at_its_last_hook_and_holds_the_full_forwards_values():
    model = _tiny_model()
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 9), generator=torch.Generator().manual_seed(3))
    names = {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}
    later = []
    handle = model.blocks[2].register_forward_hook(lambda *a: later.append(1))
    with torch.no_grad():
        acts = captured(model, tokens, names, "blocks.1.attn.hook_pattern")
    handle.remove()
    assert later == [] and not any(hp.fwd_hooks for hp in model.hook_dict.values())
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    for name in names:
        assert torch.equal(acts[name], cache[name])


def test_attention_to_source_is_read_off_the_stopped_forward(gt_model, gt_tasks):
    scores = attention_to_source(gt_model, gt_tasks, "L1H0")
    pairs = [t.pair for t in gt_tasks if t.pair.position("previous_occurrence") is not None]
    assert pairs and set(scores) == {p.prompt_id for p in pairs}
    for pair in pairs:
        _, cache = gt_model.run_with_cache(torch.tensor([pair.clean]))
        pattern = cache["blocks.1.attn.hook_pattern"][0, 0, -1]
        assert scores[pair.prompt_id] == float(pattern[pair.position("previous_occurrence") + 1])
