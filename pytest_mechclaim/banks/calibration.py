"""Calibration before any intervention: score unpatched prompts on the model, then let the pure gates judge.

* Baseline calibration (SELF-GROUND §1.3): each validated task's unpatched contrast logit[target] - logit[foil]
  at the final position (and its control's) -> ``BaselineRow`` -> ``gates.baseline_calibration``, which may only
  read baseline rows. Failing it blocks the claim, naming the families that fell short and why.
* Metric calibration (local-mi-lab §2.6 I): the induction metric on the calibration bank -> ``MetricCalibrationRow``
  -> ``gates.metric_calibration``; a token that is not one token blocks (``blocked_tokenization``). A search may
  only run when the result says ``search_allowed`` (``require_search_allowed``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from .. import gates
from ..evidence import BaselineRow
from ..gates import GateResult, MetricCalibrationRow
from ..status import Status
from .induction import EncodedExample, InductionExample, encode_example
from .schema import BankTask, Rejection, ValidTask, Validation, as_tokenizer, validate_tasks


def final_contrasts(model, sequences: Sequence[Sequence[int]], targets: Sequence[int], foils: Sequence[int],
                    batch_size: int = 32) -> list[float]:
    """logit[target] - logit[foil] at the last position of each token sequence (BOS included by the caller).

    Sequences are batched by length, so no padding token ever enters a forward pass; only the last position is
    unembedded (``engine.cache.final_logit_rows``)."""
    import torch

    from ..engine.cache import final_logit_rows

    if not (len(sequences) == len(targets) == len(foils)):
        raise ValueError("sequences, targets and foils must have the same length")
    by_length = defaultdict(list)
    for i, seq in enumerate(sequences):
        by_length[len(seq)].append(i)
    out = [0.0] * len(sequences)
    device = model.cfg.device
    for _, idx in sorted(by_length.items()):
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            tokens = torch.tensor([list(sequences[i]) for i in chunk], device=device)
            final = final_logit_rows(model, tokens)
            rows = torch.arange(len(chunk), device=device)
            t = torch.tensor([targets[i] for i in chunk], device=device)
            f = torch.tensor([foils[i] for i in chunk], device=device)
            for i, v in zip(chunk, (final[rows, t] - final[rows, f]).tolist()):
                out[i] = float(v)
    return out


def baseline_rows(model, tasks: Sequence[ValidTask], batch_size: int = 32) -> list[BaselineRow]:
    """One unpatched row per validated task: prompt contrast and control contrast."""
    tasks = list(tasks)
    seqs = [t.prompt_ids for t in tasks] + [t.control_ids for t in tasks]
    targets = [t.target_id for t in tasks] + [t.control_target_id for t in tasks]
    foils = [t.foil_id for t in tasks] + [t.control_foil_id for t in tasks]
    scores = final_contrasts(model, seqs, targets, foils, batch_size)
    n = len(tasks)
    return [BaselineRow(t.id, t.family, scores[i], t.task.expected_baseline_direction, scores[n + i])
            for i, t in enumerate(tasks)]


@dataclass
class BaselineCalibration:
    validation: Validation
    rows: list[BaselineRow]
    gate: GateResult
    families: tuple[str, ...]

    @property
    def blocked(self) -> bool:
        return self.gate.caps_at == Status.BLOCKED

    @property
    def kept(self) -> list[ValidTask]:
        """Validated tasks whose baseline passed (empty when the gate could not judge)."""
        if "excluded" not in self.gate.details:
            return []
        dropped = {e["task_id"] for e in self.gate.details["excluded"]}
        return [t for t in self.validation.valid if t.id not in dropped]

    def excluded(self) -> list[dict]:
        """Every task that will not be used, with its reason: token validation first, then baseline."""
        out = [{"task_id": r.id, "family": r.family, "reason": "token_validation_failed", "details": list(r.reasons)}
               for r in self.validation.rejected]
        return out + [dict(e) for e in self.gate.details.get("excluded", [])]

    def table(self) -> list[list[str]]:
        """Rows: family, candidates, token-invalid, wrong direction, below margin, kept, pass rate."""
        per_family = self.gate.details.get("per_family", {})
        invalid = self.validation.counts(self.families)
        out = []
        for f in self.families:
            c = per_family.get(f, {"kept": 0, "total": 0, "wrong_direction": 0, "below_margin": 0})
            scored = c["total"]
            rate = f"{(scored - c['wrong_direction']) / scored:.2f}" if scored else "-"
            out.append([f, str(scored + invalid[f]["rejected"]), str(invalid[f]["rejected"]), str(c["wrong_direction"]),
                        str(c["below_margin"]), str(c["kept"]), rate])
        return out

    TABLE_HEADER = ["family", "candidates", "token_invalid", "wrong_direction", "below_margin", "kept",
                    "direction_pass_rate"]


def calibrate_baseline(model, tasks: Iterable[BankTask], families: Sequence[str], min_pass_rate: float = 0.5,
                       min_margin: float | None = None, min_per_family: int | None = None,
                       tokenizer=None, batch_size: int = 32) -> BaselineCalibration:
    """Validate ``tasks`` against the model's tokenizer, score the valid ones unpatched, and judge them with
    ``gates.baseline_calibration`` (thresholds fixed here, before any intervention runs)."""
    validation = validate_tasks(tasks, as_tokenizer(tokenizer if tokenizer is not None else model))
    rows = baseline_rows(model, validation.valid, batch_size) if validation.valid else []
    gate = gates.baseline_calibration(rows, min_pass_rate=min_pass_rate, min_margin=min_margin,
                                      min_per_family=min_per_family, families=list(families))
    return BaselineCalibration(validation, rows, gate, tuple(families))


# --------------------------------------------------------------------------------------------------------------
# Metric calibration
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MetricCalibration:
    rows: list[MetricCalibrationRow]
    rejected: list[Rejection]
    gate: GateResult

    @property
    def search_allowed(self) -> bool:
        return bool(self.gate.details.get("search_allowed"))

    def table(self) -> list[list[str]]:
        """Rows: family, role, n, mean value, fraction > 0."""
        groups = defaultdict(list)
        for r in self.rows:
            groups[(r.family_role, r.family)].append(r.value)
        return [[family, role, str(len(v)), f"{sum(v) / len(v):.3f}", f"{sum(x > 0 for x in v) / len(v):.2f}"]
                for (role, family), v in sorted(groups.items(), key=lambda kv: (kv[0][0] != "positive", kv[0][1]))]

    TABLE_HEADER = ["family", "role", "n", "mean_logit_diff", "fraction_positive"]


def metric_calibration_rows(model, encoded: Sequence[EncodedExample], batch_size: int = 32
                            ) -> list[MetricCalibrationRow]:
    values = final_contrasts(model, [e.ids for e in encoded], [e.target_id for e in encoded],
                             [e.foil_id for e in encoded], batch_size)
    return [MetricCalibrationRow(e.example.example_id, e.example.family, e.example.family_role, v,
                                 e.example.token_domain, e.example.length_bucket) for e, v in zip(encoded, values)]


def calibrate_metric(model, examples: Iterable[InductionExample], tokenizer=None, batch_size: int = 32,
                     **thresholds) -> MetricCalibration:
    """Score the unpatched metric on every example and judge it with ``gates.metric_calibration``.

    Any example that fails tokenization blocks the calibration (local-mi-lab's ``blocked_tokenization``): a metric
    calibrated on a bank with holes is not calibrated."""
    tok = as_tokenizer(tokenizer if tokenizer is not None else model)
    encoded, rejected = [], []
    for ex in examples:
        enc = encode_example(ex, tok)
        (rejected if isinstance(enc, Rejection) else encoded).append(enc)
    if rejected:
        gate = GateResult("metric_calibration", False, None, thresholds.get("min_gap", 0.25), ">", Status.BLOCKED,
                          f"blocked_tokenization: {len(rejected)} examples fail tokenization "
                          f"(first: {rejected[0].id}: {rejected[0].reasons[0]})",
                          tuple(r.to_dict() for r in rejected[:gates.WORST_K]),
                          {"status": "blocked_tokenization", "search_allowed": False, "n_rejected": len(rejected)})
        return MetricCalibration([], rejected, gate)
    rows = metric_calibration_rows(model, encoded, batch_size)
    return MetricCalibration(rows, [], gates.metric_calibration(rows, **thresholds))


class SearchNotAllowed(RuntimeError):
    """A unit search was requested on a metric that failed (or never ran) its calibration."""


def require_search_allowed(result: GateResult | MetricCalibration) -> GateResult:
    """Call before any head or feature search: raises unless the metric calibration allows a search."""
    gate = result.gate if isinstance(result, MetricCalibration) else result
    if not isinstance(gate, GateResult) or gate.name != "metric_calibration":
        raise SearchNotAllowed("a search needs a metric_calibration result; none was given")
    if not gate.details.get("search_allowed"):
        raise SearchNotAllowed(f"metric calibration does not allow a search: {gate.reason}")
    return gate


def search_permission(result: GateResult | MetricCalibration) -> GateResult:
    """The same check as a gate for a claim's verdict: ``blocked`` unless the metric calibration allows a search."""
    try:
        gate = require_search_allowed(result)
    except SearchNotAllowed as exc:
        return GateResult("search_permission", False, None, None, "==", Status.BLOCKED, str(exc))
    return GateResult("search_permission", True, 1.0, None, "==", Status.STRONG,
                      f"metric calibration allows a search: {gate.reason}")
