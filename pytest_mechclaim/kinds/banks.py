"""The task banks a head claim names: per stage, which seeds, families and prompts it is scored on.

* ``InductionBank``: ``banks.induction`` tokenized with the model's own tokenizer (discovery seeds 0-2, held-out
  families and seeds 10-12, characterization families and seeds 20-22), plus the metric calibrations a causal
  search needs: local-mi-lab's 72-example seed bank and the discovery bank itself;
* ``GroundTruthBank``: the hand-set induction model's tasks (``groundtruth.induction_tasks``: discovery seeds 0-2;
  held-out seeds 10-12 with lengths and prefixes never used in discovery); it has no tokenizer, so no metric
  calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..banks import induction

GROUNDTRUTH_SEEDS = {"discovery": (0, 1, 2), "heldout": (10, 11, 12)}
GROUNDTRUTH_HELDOUT_FAMILIES = {"repeat_mid": (9, 7), "repeat_tail": (14, 13)}


@dataclass(frozen=True)
class InductionBank:
    n_per_family: tuple = (("discovery", 4), ("heldout", 3), ("characterization", 2))
    calibration_banks = ("seed_bank", "discovery_bank")

    def examples(self, model, stage: str) -> list:
        _, seeds = induction.STAGES[stage]
        n = dict(self.n_per_family)[stage]
        return [e for s in seeds for e in induction.induction_bank(stage, s, n_per_family=n,
                                                                   tokenizer=model.tokenizer)]

    def tasks(self, model, stage: str) -> list:
        # A target or foil that is not one token is excluded by build_tasks, with the reason (attached nowhere:
        # the frozen set and the rows say what was scored).
        return induction.build_tasks(self.examples(model, stage), model.tokenizer).tasks

    def calibration(self, model) -> dict:
        from ..banks.calibration import calibrate_metric

        return {"seed_bank": calibrate_metric(model, induction.metric_calibration_bank(0, tokenizer=model.tokenizer),
                                              model.tokenizer),
                "discovery_bank": calibrate_metric(model, self.examples(model, "discovery"), model.tokenizer)}


@dataclass(frozen=True)
class GroundTruthBank:
    n_per_family: int = 8
    split_by_target_index: int | None = None
    token_range: tuple[int, int] | None = None
    exclude_tokens: tuple[int, ...] = ()
    transform: Callable | None = None  # tasks -> tasks (e.g. replace a control suite)
    calibration_banks = ()

    def tasks(self, model, stage: str) -> list:
        from ..groundtruth import INDUCTION_FAMILIES, induction_tasks

        if stage not in GROUNDTRUTH_SEEDS:
            raise ValueError(f"the ground-truth bank has no {stage!r} stage; stages: {sorted(GROUNDTRUTH_SEEDS)}")
        families = GROUNDTRUTH_HELDOUT_FAMILIES if stage == "heldout" else INDUCTION_FAMILIES
        kwargs = {"split_by_target_index": self.split_by_target_index, "exclude_tokens": self.exclude_tokens}
        if self.token_range is not None:
            kwargs["token_range"] = self.token_range
        tasks = [t for s in GROUNDTRUTH_SEEDS[stage]
                 for t in induction_tasks(s, self.n_per_family, families=families, **kwargs)]
        return self.transform(tasks) if self.transform is not None else tasks

    def calibration(self, model) -> dict:
        return {}
