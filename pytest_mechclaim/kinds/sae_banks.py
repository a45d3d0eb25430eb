"""The SAE kind's banks: validated, baseline-calibrated negation tasks and the engine tasks built from them.

E002 scores every token-valid task uncalibrated; E003 keeps tasks whose unpatched contrast has the intended sign
and |contrast| >= ``MIN_MARGIN``, at least ``MIN_KEPT_PER_FAMILY`` per family (SELF-GROUND's rule, fixed before any
intervention runs). SAE compatibility is checked on the prompts a stage evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..banks import negation
from ..banks.calibration import BaselineCalibration, calibrate_baseline
from ..banks.controls import ControlSuites
from ..banks.schema import ValidTask
from ..gates import GateResult
from ..sae_compat import check_sae_compatibility
from ..status import Status
from ..tasks import PromptPair, Task

FAMILIES = negation.FAMILIES
DISCOVERY_SEED = 0
HELDOUT_SEED = 1
E002_PER_FAMILY = 10
CANDIDATES_PER_FAMILY = 80
MIN_VALID_PER_FAMILY = 2  # SELF-GROUND's task-validation minimum for a generated bank
MIN_MARGIN = 0.1
MIN_KEPT_PER_FAMILY = 10
MIN_PASS_RATE = 0.5


@dataclass
class Bank:
    """Validated, baseline-scored tasks: ``calibration`` judged them all; ``tasks`` are the ones evaluated."""

    name: str
    seed: int
    calibration: BaselineCalibration
    tasks: list[ValidTask]
    rule: dict = field(default_factory=dict)  # the calibration rule beyond the pass rate (margin, per family)
    n_removed_as_seen: int = 0

    @property
    def baseline_rows(self):
        ids = {t.id for t in self.tasks}
        return [r for r in self.calibration.rows if r.task_id in ids]

    def validation_gate(self) -> GateResult:
        """Blocked when a required family has fewer than ``MIN_VALID_PER_FAMILY`` token-valid tasks."""
        counts = self.calibration.validation.counts(FAMILIES)
        short = {f: c["valid"] for f, c in counts.items() if c["valid"] < MIN_VALID_PER_FAMILY}
        details = {"counts": counts, "rejection_reasons": self.calibration.validation.reason_counts()}
        if short:
            return GateResult("task_validation", False, float(min(short.values())), float(MIN_VALID_PER_FAMILY), ">=",
                              Status.BLOCKED, f"families below {MIN_VALID_PER_FAMILY} token-valid tasks: {short}",
                              details=details)
        n = sum(c["valid"] for c in counts.values())
        return GateResult("task_validation", True, float(min(c["valid"] for c in counts.values())),
                          float(MIN_VALID_PER_FAMILY), ">=", Status.STRONG,
                          f"{n} token-valid tasks over {len(FAMILIES)} families", details=details)

    def table(self) -> list[dict]:
        return [dict(zip(self.calibration.TABLE_HEADER, row)) for row in self.calibration.table()]


def uncalibrated_bank(model, seed: int = DISCOVERY_SEED, per_family: int = E002_PER_FAMILY) -> Bank:
    """E002: every token-valid task is evaluated; the baseline gate only reports the intended-direction pass rate."""
    cal = calibrate_baseline(model, negation.negation_bank(seed, per_family), FAMILIES, min_pass_rate=MIN_PASS_RATE)
    return Bank("uncalibrated", seed, cal, list(cal.validation.valid))


def calibrated_bank(model, seed: int = DISCOVERY_SEED, per_family: int = CANDIDATES_PER_FAMILY,
                    exclude_prompts: frozenset = frozenset()) -> Bank:
    """E003: keep tasks whose unpatched contrast has the intended sign and |contrast| >= ``MIN_MARGIN``; blocked
    unless every family keeps ``MIN_KEPT_PER_FAMILY``. ``exclude_prompts`` removes (and counts) candidates whose
    prompt or control prompt another stage already used, before anything is scored."""
    bank = negation.negation_bank(seed, per_family)
    candidates = [t for t in bank if t.prompt not in exclude_prompts and t.control_prompt not in exclude_prompts]
    rule = {"min_margin": MIN_MARGIN, "min_per_family": MIN_KEPT_PER_FAMILY}
    cal = calibrate_baseline(model, candidates, FAMILIES, min_pass_rate=MIN_PASS_RATE, **rule)
    return Bank("calibrated", seed, cal, cal.kept, rule, len(bank) - len(candidates))


def prompts_of(tasks: Sequence[ValidTask]) -> frozenset:
    return frozenset(p for t in tasks for p in (t.task.prompt, t.task.control_prompt))


def engine_tasks(tasks: Sequence[ValidTask], suites: ControlSuites, seed: int) -> list[Task]:
    """Engine tasks: the negated prompt with its target/foil, and one control pair per suite.

    The engine's pairs carry a second ("corrupt") prompt; SAE edits act on the clean run, so it only sets the
    unpatched reference: the negated prompt's is its matched non-negated control, each control's the negated prompt.
    """
    by_task = suites.by_task()
    out = []
    for t in tasks:
        pair = PromptPair(t.id, t.family, t.prompt_ids, t.control_ids, t.target_id, t.foil_id, seed=seed,
                          text=t.task.prompt)
        controls = tuple(
            (suite, PromptPair(case.case_id, t.family, case.prompt_ids, t.prompt_ids, case.target_id, case.foil_id,
                               family_role="control", seed=seed, text=case.prompt))
            for suite, case in sorted(by_task.get(t.id, {}).items()))
        out.append(Task(pair, controls))
    return out


def padded_tokens(tasks: Sequence[ValidTask]):
    """Negated and control prompts as one [batch, pos] tensor, right-padded with BOS: a special token, which the
    compatibility gate's quality measurement skips, after the prompt, which a causal model never reads back."""
    import torch

    seqs = [t.prompt_ids for t in tasks] + [t.control_ids for t in tasks]
    bos = seqs[0][0]
    width = max(map(len, seqs))
    return torch.tensor([list(s) + [bos] * (width - len(s)) for s in seqs])


def compatibility(model, sae, tasks: Sequence[ValidTask], model_name: str | None = None) -> GateResult:
    return check_sae_compatibility(model, sae, padded_tokens(tasks), hook_name=sae.cfg.metadata.hook_name,
                                   model_name=model_name)
