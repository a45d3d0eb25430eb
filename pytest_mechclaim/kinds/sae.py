"""SAE feature-set claims: "these SAE features carry the behaviour", as stage tests the kind generates.

    NEGATION = SAEStudy("smollm2", "smollm2_sae", candidates_per_family=40)
    TestCalibrated = SAEFeatureClaim("smollm2-negation-sae-L15", "On the calibrated bank, ablating ...", NEGATION,
                                     bank="e003", heldout=True).tests()

The declaration names the model and SAE (fixtures), the bank (``e002`` uncalibrated, ``e003`` calibrated), the
selection modes, control suites and operations; the kind does SELF-GROUND's path (seed-systems §1) for every claim:
token validation, baseline calibration (recorded as baseline rows), SAE compatibility on the prompts it evaluates
(blocked when incompatible: no intervention runs), ranking and selection (``sae_select``), density-matched, random
and bottom-active control feature sets by default, ablation (and amplification) in delta mode, the label-permutation
null where declared, and held-out: the feature sets frozen at discovery on a bank seed whose prompts discovery
never saw. The policy runs the gates it requires; the kind adds the family minimum over every family, the unit
controls over every control set and, with several suites, suite coverage, the strong floor and the paired test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..banks.controls import SUITES, build_control_suites
from ..banks.feature_sets import FeatureSet, FeatureSetError
from ..banks.schema import as_tokenizer
from ..gates import GateResult
from ..status import Status
from . import _tests
from . import sae_banks as banks
from . import sae_select as select

MATCHED = ("matched_non_negation",)
ABLATE = ("ablate",)
AMPLIFY_FACTOR = 2.0
ABLATE_AMPLIFY = ("ablate", ("amplify", AMPLIFY_FACTOR))
SELECTION_MODES = select.SELECTION_MODES
HELDOUT_AXES = ("prompts", "seeds")  # the claim is about its families: held-out reuses them on unseen prompts


@dataclass(frozen=True)
class SAEStudy:
    """One model + SAE: its banks, rankings and evaluations, computed once per process and shared by its claims."""

    model: str | Callable  # fixture names (or zero-argument builders)
    sae: str | Callable | None  # None: a bank-only study (its calibration claims; no SAE stage can run)
    candidates_per_family: int = banks.CANDIDATES_PER_FAMILY
    model_name: str | None = None
    bank: object | None = None  # an engine task bank (kinds.banks) for preregistered features; None: negation
    positions: tuple[str, ...] = ("final",)  # where feature edits act (task-bank claims)

    def compute(self, request) -> "Study":
        return _tests.cached(request, ("sae-study", self), lambda: Study(
            _tests.load(request, self.model), None if self.sae is None else _tests.load(request, self.sae),
            self.candidates_per_family, self.model_name))


class Study:
    def __init__(self, model, sae, candidates_per_family: int, model_name: str | None) -> None:
        self.model, self.sae, self.model_name = model, sae, model_name
        self.tokenizer = as_tokenizer(model)
        banks_ = {"e002": lambda: banks.uncalibrated_bank(model),
                  "e003": lambda: banks.calibrated_bank(model, banks.DISCOVERY_SEED, candidates_per_family)}
        banks_["heldout"] = lambda: banks.calibrated_bank(
            model, banks.HELDOUT_SEED, candidates_per_family,
            exclude_prompts=banks.prompts_of(self.bank("e003").calibration.validation.valid))
        self._build, self._cells = banks_, {}

    def _once(self, key, build):
        if key not in self._cells:
            self._cells[key] = build()
        return self._cells[key]

    def bank(self, name: str) -> banks.Bank:
        return self._once(("bank", name), self._build[name])

    def compatibility(self, name: str) -> GateResult:
        return self._once(("compat", name), lambda: banks.compatibility(self.model, self.sae, self.bank(name).tasks,
                                                                        self.model_name))

    def suites(self, name: str, suites):
        return self._once(("suites", name, tuple(suites)),
                          lambda: build_control_suites(self.bank(name).tasks, self.tokenizer, suites=suites))

    def tasks(self, name: str, suites):
        bank = self.bank(name)
        return self._once(("tasks", name, tuple(suites)),
                          lambda: banks.engine_tasks(bank.tasks, self.suites(name, suites), bank.seed))

    def ranking(self, name: str) -> select.Ranking:
        return self._once(("ranking", name), lambda: select.rank_features(self.model, self.sae, self.bank(name).tasks,
                                                                          banks.FAMILIES))

    def runnable(self, name: str) -> bool:
        bank = self.bank(name)
        return not bank.calibration.blocked and bool(bank.tasks) and self.compatibility(name).caps_at > Status.BLOCKED

    def sets(self, name: str, mode: str) -> list[FeatureSet] | str:
        """The selected set and its control sets, or why the mode cannot fill one."""
        try:
            return self._once(("sets", name, mode), lambda: select.control_sets(self.ranking(name), mode))
        except FeatureSetError as exc:
            return str(exc)

    def rows(self, name: str, sets: Sequence[FeatureSet], suites, operations) -> list:
        key = ("rows", name, tuple(s.features for s in sets), tuple(suites), tuple(map(str, operations)))
        return self._once(key, lambda: select.evaluate(self.model, self.sae, self.tasks(name, suites), sets,
                                                       operations))

    def null(self, name: str, mode: str, suites, operations):
        return self._once(("null", name, mode, tuple(suites), tuple(map(str, operations))), lambda: select.selection_null(
            self.model, self.sae, self.tasks(name, suites), self.ranking(name), mode, operations))


@dataclass(frozen=True)
class SAEFeatureClaim:
    id: str
    statement: str
    study: SAEStudy
    bank: str = "e003"  # the discovery bank: e002 (uncalibrated) or e003 (calibrated)
    modes: tuple[str, ...] = ("top",)
    suites: tuple[str, ...] = MATCHED
    operations: tuple = ABLATE
    null_modes: tuple[str, ...] = ()  # modes whose cell also runs the label-permutation null
    heldout: bool = False
    features: tuple[int, ...] = ()  # preregistered features (a task-bank study); () = ranked and selected by mode
    calibration: tuple[str, ...] = ()  # banks a calibration-only claim calibrates (no discovery stage)
    expect: str = "supported"
    level: str = "candidate"
    model: str | None = None
    hook: str | None = None
    sae: str | None = None
    requires: tuple[str, ...] = ()

    def tests(self) -> type:
        if self.study.sae is None and not self.calibration:
            raise ValueError(f"claim {self.id!r}: a study without an SAE has only calibration claims")
        if self.heldout and len(self.modes) != 1:
            raise ValueError(f"claim {self.id!r}: a held-out stage scores one frozen selection; give one mode")
        marker = {"statement": self.statement, "level": self.level, "expect": self.expect, "model": self.model,
                  "hook": self.hook, "sae": self.sae, "requires": list(self.requires),
                  "kind": "sae_features" if self.study.sae is not None else "other"}
        if self.features:
            from .sae_tasks import record_stage

            stages = ("discovery", "heldout") if self.heldout else ("discovery",)
            tests = [_tests.stage_test(stage, lambda m, r, s=stage: record_stage(self, m, r, s)) for stage in stages]
        elif self.calibration:
            tests = [_tests.stage_test("calibration", self.record_calibration, self.calibration)]
        else:
            tests = [_tests.stage_test("discovery", self.record_discovery, self.modes if len(self.modes) > 1 else None)]
            if self.heldout:
                tests.append(_tests.stage_test("heldout", self.record_heldout))
        return _tests.claim_class(self.id, marker, tests, self.statement)

    # -- stages ----------------------------------------------------------------------------------------------------
    def record_calibration(self, mechclaim, request, bank_name: str) -> None:
        prerequisites(mechclaim, self.study.compute(request), bank_name, calibration_stage=True)

    def record_discovery(self, mechclaim, request, mode: str | None = None) -> None:
        mode = mode or self.modes[0]
        study = self.study.compute(request)
        if not prerequisites(mechclaim, study, self.bank):
            return  # fail closed: no intervention on a blocked bank or an incompatible SAE
        sets = study.sets(self.bank, mode)
        if not mechclaim.gate.add(selection_gate(mode, sets)).passed:
            return
        mechclaim.declare("selection_mode", mode)
        mechclaim.declare("feature_sets", select.feature_ids(sets))
        mechclaim.attach("feature_sets", [s.to_dict() for s in sets])
        mechclaim.attach("selected_feature_rationale", study.ranking(self.bank).rows(sets[0].features))
        if self.heldout:
            _tests.use_store(mechclaim, request)
            mechclaim.freeze(["top"], study.tasks(self.bank, MATCHED), **self.frozen_about(mode, sets))
        rows = mechclaim.record(study.rows(self.bank, sets, self.suites, self.operations))
        family_gates(mechclaim)
        if len(self.suites) > 1:
            mechclaim.gate.add(study.suites(self.bank, self.suites).coverage())
            mechclaim.gate.multi_control_minimum(min_suites=2)
            mechclaim.gate.strong_floor()
            mechclaim.gate.paired_test()
        if mode in self.null_modes:
            null = study.null(self.bank, mode, self.suites, self.operations)
            mechclaim.record_null(null.values, search_size=null.search_size, kind="selection_under_permuted_labels")
            mechclaim.attach("empirical_null", dict(null.to_dict(), kind="selection_under_permuted_labels",
                                                    score="mean specificity gap over the claim's rows"))
            target = [r for r in rows if r.unit_set == "target"]
            mechclaim.gate.empirical_null(select.mean_gap(target), null.values, search_size=null.search_size)

    def record_heldout(self, mechclaim, request) -> None:
        """The feature sets frozen at discovery (recomputed, identically, if this process has not), on the held-out
        bank: a bank seed discovery did not use, every prompt it saw removed before scoring."""
        study, store = self.study.compute(request), _tests.use_store(mechclaim, request)
        if not prerequisites(mechclaim, study, "heldout"):
            return
        sets = study.sets(self.bank, self.modes[0])
        if isinstance(sets, str) or not study.runnable(self.bank):
            mechclaim.gate.add(GateResult("frozen_feature_sets", False, None, None, "exists", Status.BLOCKED,
                                          f"discovery on the {self.bank} bank could not run or select, so nothing "
                                          "was frozen for the held-out stage to score"))
            return
        frozen = store.freeze(self.id, ["top"], study.tasks(self.bank, MATCHED), **self.frozen_about(self.modes[0], sets))
        frozen_sets = [FeatureSet(d["label"], d["kind"], tuple(d["features"]), d["seed"])
                       for d in frozen.detail["feature_sets"]]
        mechclaim.declare("frozen_feature_sets", frozen.detail["feature_sets"])
        tasks = study.tasks("heldout", MATCHED)
        if not mechclaim.gate.add(store.check_tasks(self.id, tasks)).passed:
            return
        if study.bank("heldout").n_removed_as_seen:
            mechclaim.attach("candidates_removed_as_seen_at_discovery", study.bank("heldout").n_removed_as_seen)
        mechclaim.record(study.rows("heldout", frozen_sets, MATCHED, ABLATE))
        family_gates(mechclaim)

    def frozen_about(self, mode: str, sets) -> dict:
        return {"heldout_axes": HELDOUT_AXES, "detail": {"mode": mode, "feature_sets": select.feature_ids(sets)}}


def prerequisites(mechclaim, study: Study, bank_name: str, calibration_stage: bool = False) -> bool:
    """Task validation, the bank's baseline calibration (its rows recorded: the policy judges them) and SAE
    compatibility on the bank's prompts. Returns whether an evaluation may run."""
    bank = study.bank(bank_name)
    mechclaim.attach("baseline_calibration_table", bank.table())
    mechclaim.attach("baseline_excluded", bank.calibration.excluded())
    # Calibration judges every scored task; an evaluation stage the ones it evaluates.
    mechclaim.record_baseline(bank.calibration.rows if calibration_stage else bank.baseline_rows)
    mechclaim.gate.baseline_calibration(min_pass_rate=banks.MIN_PASS_RATE, families=list(banks.FAMILIES), **bank.rule)
    results = [mechclaim.gate.add(bank.validation_gate())]
    if bank.calibration.blocked:
        results.append(mechclaim.gate.add(bank.calibration.gate))
    if bank.calibration.blocked or not bank.tasks:
        return False
    if study.sae is None:  # a bank-only study: nothing is edited, so there is no SAE to fit the prompts
        return calibration_stage and all(r.caps_at > Status.BLOCKED for r in results)
    results.append(mechclaim.gate.add(study.compatibility(bank_name)))
    return all(r.caps_at > Status.BLOCKED for r in results)


def selection_gate(mode: str, sets) -> GateResult:
    if isinstance(sets, str):
        return GateResult("feature_selection", False, None, float(select.TOP_K), ">=", Status.BLOCKED, sets)
    return GateResult("feature_selection", True, float(select.TOP_K), float(select.TOP_K), ">=", Status.STRONG,
                      f"{mode}: features {list(sets[0].features)}; {len(sets) - 1} control feature sets",
                      details={"relaxed_density_sets": [s.label for s in sets if s.relaxed]})


def family_gates(mechclaim) -> None:
    """E004's family minimum over every family (the policy's floor is 2; the policy adopts the stricter 3)."""
    mechclaim.gate.family_minimum(min_families=len(banks.FAMILIES))


__all__ = ["ABLATE", "ABLATE_AMPLIFY", "MATCHED", "SAEFeatureClaim", "SAEStudy", "SELECTION_MODES", "SUITES"]
