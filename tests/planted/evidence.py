"""Task banks and evidence recipes for the planted-claim corpus (the rows an author would record).

Every recipe returns the claim's rows (``unit_set="target"``) plus its comparison units (other heads, control
feature sets), computed once per process: behaviours re-judge the same rows, they never re-measure them.
"""

from __future__ import annotations

import dataclasses
import random

from pytest_mechclaim.engine import head_evidence, resid_evidence, sae_evidence
from pytest_mechclaim.groundtruth import D_VOCAB, induction_tasks, mirror_pair
from pytest_mechclaim.tasks import PromptPair, Task

INTERVENTIONS = ("clean_to_corrupt", "zero")
DISCOVERY_SEEDS = (0, 1, 2)


# Six prompts per family and seed (groundtruth's claims use 8): the corpus judges 31 claims in well under a minute.
N_PER_FAMILY = 6


def tasks_for(seeds=DISCOVERY_SEEDS, **kwargs) -> list[Task]:
    kwargs.setdefault("n_per_family", N_PER_FAMILY)
    return [t for s in seeds for t in induction_tasks(s, **kwargs)]


def _heads(model) -> list[str]:
    return [f"L{l}H{h}" for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]


def head_rows(model, unit, tasks, positions=("final",), interventions=INTERVENTIONS, comparison=None,
              target_unit=None):
    """The claimed head's rows plus the same interventions on ``comparison`` heads (default: every other head).
    ``target_unit`` records another head's rows as the claim's (a mislabeled-unit author)."""
    rows = list(head_evidence(model, tasks, [target_unit or unit], interventions=interventions, positions=positions))
    others = [h for h in _heads(model) if h != unit] if comparison is None else list(comparison)
    if others:
        rows += head_evidence(model, tasks, others, interventions=interventions, positions=positions,
                              unit_set="random_comparison")
    return rows


def layer_rows(model, unit, tasks, layer):
    """A residual-stream patch of a whole layer recorded as the claim's evidence, with head comparisons."""
    rows = list(resid_evidence(model, tasks, [layer]))
    return rows + list(head_evidence(model, tasks, [h for h in _heads(model) if h != unit],
                                     interventions=("clean_to_corrupt",), unit_set="random_comparison"))


def sae_rows(model, sae, tasks, target, controls: dict, positions=("final",)):
    """Ablation rows of the ``target`` feature set (the claim's) and of each labelled control set."""
    ev = sae_evidence(model, tasks, sae, {"top": list(target), **controls}, operations=("ablate",),
                      positions=positions)
    return [dataclasses.replace(r, unit_set="target" if r.unit == "top" else r.unit) for r in ev]


# ---------------------------------------------------------------------------------------------- task variants
def _replace_tokens(pair: PromptPair, mapping: dict, **changes) -> PromptPair:
    m = lambda t: mapping.get(t, t)
    return dataclasses.replace(pair, clean=tuple(map(m, pair.clean)), corrupt=tuple(map(m, pair.corrupt)),
                               target=m(pair.target), foil=m(pair.foil), text=None, **changes)


def ending_on(token: int, seeds=DISCOVERY_SEEDS) -> list[Task]:
    """Induction tasks relabelled (a token swap, which the model treats symmetrically) to end on ``token``."""
    out = []
    for t in tasks_for(seeds):
        swap = {t.pair.clean[-1]: token, token: t.pair.clean[-1]}
        out.append(Task(_replace_tokens(t.pair, swap), tuple((s, _replace_tokens(c, swap)) for s, c in t.controls)))
    return out


def foil_is_current_token(seeds=DISCOVERY_SEEDS) -> list[Task]:
    """The foil becomes the prompt's last token ("repeat the current token" vs "continue the sequence")."""
    out = []
    for t in tasks_for(seeds):
        foil = t.pair.clean[-1]
        out.append(Task(dataclasses.replace(t.pair, foil=foil),
                        tuple((s, dataclasses.replace(c, foil=foil)) for s, c in t.controls)))
    return out


def with_near_repeat(seeds=DISCOVERY_SEEDS) -> list[Task]:
    """Adds a ``near_repeat`` control: the second copy's earlier tokens differ, its last token repeats; induction
    reads only the last token, so this control moves exactly as much as the target."""
    out = []
    for t in tasks_for(seeds):
        no_repeat = dict(t.controls)["no_repeat"]
        near = dataclasses.replace(no_repeat, prompt_id=f"{t.pair.prompt_id}-near_repeat", family="near_repeat",
                                   clean=no_repeat.clean[:-1] + (t.pair.clean[-1],), text=None)
        out.append(Task(t.pair, (("no_repeat", no_repeat), ("near_repeat", near))))
    return out


def mirrored(seeds=DISCOVERY_SEEDS, controls=True) -> list[Task]:
    """Tokens 1-15 only; the control suite is the same prompt with every token mirrored (it carries the mechanism)."""
    tasks = tasks_for(seeds, token_range=(1, 16), exclude_tokens=(16,))
    if not controls:
        return [Task(t.pair) for t in tasks]
    return [Task(t.pair, (("mirror_tokens", mirror_pair(t.pair, "mirror_tokens")),
                          ("no_repeat", dict(t.controls)["no_repeat"]))) for t in tasks]


# Shorter repeats for banks drawn from a few tokens (r and the corrupt's s must both fit in the allowed tokens).
SMALL_FAMILIES = {"repeat_short": (6, 5), "repeat_five": (5, 4)}


def index_tasks(indices, seeds=DISCOVERY_SEEDS) -> list[Task]:
    """Tasks whose tokens all have index (token mod 16) in ``indices``."""
    exclude = tuple(t for t in range(1, D_VOCAB) if t % 16 not in indices)
    return tasks_for(seeds, exclude_tokens=exclude, families=SMALL_FAMILIES)


# ------------------------------------------------------------------------------------------------ tracr tasks
TRACR_FAMILIES = {"len5": 5, "len8": 8}


def tracr_tasks(meta, seeds=DISCOVERY_SEEDS, n_per_family=N_PER_FAMILY) -> list[Task]:
    """The compiled program outputs the previous token. Positive pair: the final position's previous token differs
    (target = clean's, foil = corrupt's). Controls (scored on the same target/foil): prompts whose previous token is
    neither, changed at the previous token (``other_token``) or at the first token (``early_change``)."""
    enc, out_id = meta["input_encoding"], {int(v): int(k) for k, v in meta["output_decoding"].items()}
    vocab = meta["vocab"]
    ids = lambda xs: (enc["BOS"],) + tuple(enc[str(x)] for x in xs)
    tasks = []
    for seed in seeds:
        rng = random.Random(f"planted-tracr:{seed}")
        for family, n in TRACR_FAMILIES.items():
            for i in range(n_per_family):
                x = [rng.choice(vocab) for _ in range(n)]
                t, f = x[-2], rng.choice([v for v in vocab if v != x[-2]])
                corrupt = x[:-2] + [f, x[-1]]
                pid = f"tracr-{family}-s{seed}-{i}"
                pair = PromptPair(pid, family, ids(x), ids(corrupt), out_id[t], out_id[f], seed=seed)
                a, b = rng.sample([v for v in vocab if v not in (t, f)], 2)
                y = [rng.choice(vocab) for _ in range(n)]
                other = PromptPair(f"{pid}-other", "other_token", ids(y[:-2] + [a, y[-1]]),
                                   ids(y[:-2] + [b, y[-1]]), out_id[t], out_id[f], "control", seed)
                y0 = [v for v in vocab if v != y[0]]
                early = PromptPair(f"{pid}-early", "early_change", ids(y[:-2] + [a, y[-1]]),
                                   ids([rng.choice(y0)] + y[1:-2] + [a, y[-1]]), out_id[t], out_id[f], "control",
                                   seed)
                tasks.append(Task(pair, (("other_token", other), ("early_change", early))))
    return tasks


def baseline_rows(rows):
    """One unpatched score per claimed task (the clean run's target - foil contrast the rows already carry)."""
    from pytest_mechclaim.evidence import BaselineRow

    seen = {}
    for r in rows:
        if r.unit_set == "target" and r.clean is not None and r.prompt_id not in seen:
            seen[r.prompt_id] = BaselineRow(r.prompt_id, r.family, r.clean)
    return list(seen.values())
