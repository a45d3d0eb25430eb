"""The evidence policy: which gates a claim of a given kind, stage and level must pass, at which floor, and why.

The policy is ONE table (``LINES``); ``python -m pytest_mechclaim.policy`` prints it as Markdown. The plugin runs
every line that applies to a claim on the claim's own recorded rows (verdict.judge), at the line's floors or at the
claim's stricter thresholds when its author called the same gate stricter. What a claim cannot show is a *debt*
(verdict.Debt): a required gate missing from ``pytest_mechclaim.gates``, a line the rows cannot feed (no paired
controls, one seed, one control suite, no control units, no baseline rows), a waiver (``waive={"gate": "reason"}``
on the claim marker) or an author call looser than the floor. A debt caps the verdict at ``insufficient``.

A project may tighten the policy (ini ``mechclaim_policy_tighten``: ``gate.arg = value`` raises a floor, a bare
``gate`` adds a required gate); it can never loosen it: a value looser than the floor is a usage error.

Sources cite reference/seed-systems.md: SELF-GROUND's report gate and strong floor (§1.9), local-mi-lab's ladder
(§2.6), MechLedger's evidence gate (§3.5) and debts (§3.6), the normalized gate definitions (§5).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace

from . import gates as gate_module

KINDS = ("head", "sae_features", "other")
CALIBRATION = "calibration"
EVIDENCE_STAGES = ("discovery", "replication", "heldout", "characterization", None)
LATER_STAGES = ("replication", "heldout", "characterization", None)  # None: an unstaged claim is judged in full
HEAD_UNIT = re.compile(r"^L\d+H\d+$")
HEAD_SCOPES = ("single_head_z", "single_head_result")  # §2.6 / §5: only these are head-specific
SAE_SCOPES = ("sae_features",)  # reconstruction-replace rows move more than the features (engine/__init__.py)
ALL_KINDS, HEAD, SAE, OTHER = KINDS, ("head",), ("sae_features",), ("other",)


@dataclass(frozen=True)
class Line:
    """One policy line: gate ``gate`` (its result name; ``fn`` in pytest_mechclaim.gates, called with ``fixed`` and
    the floors) must run for claims of ``kinds`` at ``stages`` asserting ``level`` or above."""

    gate: str
    kinds: tuple[str, ...]
    stages: tuple[str | None, ...]
    level: str  # candidate | strong
    floors: tuple[tuple[str, object], ...] = ()
    source: str = ""
    fn: str | None = None  # defaults to ``gate``
    fixed: tuple[tuple[str, object], ...] = ()
    needs: tuple[str, ...] = ()  # what the rows must contain for the line to be evaluable (else a debt)
    reads: str = "rows"  # rows | baseline | metric | null | mechanism (judged across claims, never from rows)
    if_recorded: bool = False  # calibration lines: judged only when their input kind was recorded
    carries_only: bool = False  # the gate's score assumes direction "carries" (normalized effect > 0)

    @property
    def function(self) -> str:
        return self.fn or self.gate

    def to_dict(self) -> dict:
        return {"gate": self.gate, "function": self.function, "level": self.level, "floors": dict(self.floors),
                "fixed": dict(self.fixed), "needs": list(self.needs), "reads": self.reads, "source": self.source,
                **({"carries_only": True} if self.carries_only else {})}


_SG, _LOCAL, _ML, _NORM = "SELF-GROUND §1.9", "local-mi-lab §2.6", "MechLedger §3.5", "§5"

# fmt: off
LINES: tuple[Line, ...] = (
    # -- calibration stages: the unpatched model before any intervention ------------------------------------------
    Line("baseline_calibration", ALL_KINDS, (CALIBRATION,), "candidate", (("min_pass_rate", 0.5),),
         f"{_SG} check 2 (intended-direction pass rate >= 0.5); {_ML} DPT003", reads="baseline", if_recorded=True),
    Line("metric_calibration", ALL_KINDS, (CALIBRATION,), "candidate",
         (("min_gap", 0.25), ("min_positive_fraction", 0.8), ("max_control_fraction", 0.2)),
         f"{_LOCAL} I (metric_calibrated_for_next_spec)", reads="metric", if_recorded=True),
    # -- candidate lines, every evidence stage ----------------------------------------------------------------------
    Line("signed_effect", ALL_KINDS, EVIDENCE_STAGES, "candidate", (("min", 0.0),),
         f"DESIGN (effect has the predicted sign); {_LOCAL} D3/F (no positive effect, sign flip falsify)"),
    Line("specificity_gap", ALL_KINDS, EVIDENCE_STAGES, "candidate", (("min", 0.0),),
         f"{_SG} (gap > 0); {_ML} DPT013/DPT014; {_NORM}", needs=("paired",)),
    Line("family_minimum", ALL_KINDS, EVIDENCE_STAGES, "candidate", (("min", 0.0), ("min_families", 2)),
         f"{_SG} check 3 (>= 2 families) and E004 family min gap > 0; {_ML} DPT017", needs=("families>=2",)),
    Line("collateral_ratio", ALL_KINDS, EVIDENCE_STAGES, "candidate", (("max", 1.0), ("strong_max", 0.5)),
         f"{_SG} check 4 (<= 1.0; <= 0.5 for strong)", needs=("paired",)),
    Line("norm_drift", ALL_KINDS, EVIDENCE_STAGES, "candidate", (("max_warning_rate", 0.5), ("max_mean", 0.5)),
         f"{_SG} check 5 (warning rate < 0.5; strong: none, mean drift <= 0.5); {_ML} DPT005",
         needs=("telemetry",)),
    # The decoded-delta ratio (SELF-GROUND §1.7) measures an SAE/residual *edit* against the residual it edits. A
    # head's in-distribution write can be most of a small residual (tracr's L0H0: 0.81; the hand-set induction
    # head: 0.70) without any shove, so for heads it is a strong-level requirement, never a candidate rejection.
    Line("decoded_delta_ratio", SAE + OTHER, EVIDENCE_STAGES, "candidate", (("max", 0.5), ("max_warning_rate", 0.5)),
         f"SELF-GROUND §1.7 (decoded-delta ratio > 0.5 warns); {_NORM} (split from norm drift)",
         needs=("delta_ratio_telemetry",)),
    Line("decoded_delta_ratio", HEAD, EVIDENCE_STAGES, "strong", (("max", 0.5), ("max_warning_rate", 0.5)),
         f"SELF-GROUND §1.7 at the strong floor only for heads (a head's own write is not an edit)",
         needs=("delta_ratio_telemetry",)),
    Line("stratum_minimum", ALL_KINDS, EVIDENCE_STAGES, "candidate", (("min", 0.0), ("min_prompts", 3)),
         f"DESIGN (holds in the worst stratum of its own tasks); {_LOCAL} I (domain/length means), §2.7",
         needs=("strata",)),
    Line("unit_controls", HEAD + SAE, EVIDENCE_STAGES, "candidate", (("min_ratio", 1.05),),
         f"{_SG} check 6 (top beats control feature sets by 1.05); {_LOCAL} C (random comparison heads)",
         needs=("control_units",)),
    Line("normalized_effect", HEAD, EVIDENCE_STAGES, "candidate", (("min", 0.0),),
         f"{_LOCAL} A4/B/D3 (positive normalized effect)", needs=("patching_numbers",), carries_only=True),
    Line("family_minimum[effect]", HEAD, EVIDENCE_STAGES, "candidate", (("min", 0.0), ("min_families", 2)),
         f"{_LOCAL} D5/E4 (>= 2 positive families with mean effect > 0)", fn="family_minimum",
         fixed=(("score", "effect"),), needs=("patching_numbers", "families>=2"), carries_only=True),
    Line("baseline_calibration", SAE + OTHER, EVIDENCE_STAGES, "candidate", (("min_pass_rate", 0.5),),
         f"{_SG} check 2; {_ML} DPT003 (missing_baseline_calibration)", reads="baseline", needs=("baseline_rows",)),
    # -- candidate lines after discovery: replication and breadth -------------------------------------------------
    Line("multi_control_minimum", ALL_KINDS, LATER_STAGES, "candidate", (("min", 0.0), ("min_suites", 2)),
         f"{_SG} multi_control and E004 (>= 2 suites, every suite gap > 0); {_ML} DPT016",
         needs=("paired", "suites>=2")),
    Line("seed_replication", HEAD, LATER_STAGES, "candidate", (("min_passing", 2), ("min", 0.0)),
         f"{_LOCAL} C/E/G (>= 2 seeds survive, none nonspecific); {_ML} DPT021", needs=("seeds>=2",)),
    Line("seed_replication", SAE + OTHER, ("replication", "heldout", None), "candidate",
         (("min_passing", 2), ("min", 0.0)), f"{_LOCAL} C; {_ML} DPT021 (singleton_seed)", needs=("seeds>=2",)),
    Line("intervention_replication", HEAD, ("heldout",), "candidate", (("min_passing", 2), ("min", 0.0)),
         f"{_LOCAL} E4 (>= 2 interventions survive, else heldout_downgraded)", fn="replication",
         fixed=(("axis", "intervention"),), needs=("interventions>=2",)),
    # -- strong lines ---------------------------------------------------------------------------------------------
    Line("strong_floor", SAE + OTHER, EVIDENCE_STAGES, "strong",
         (("min_tasks", 30), ("min_families", 3), ("min_random_sets", 3), ("min_density_sets", 3)),
         f"{_SG} strong floor (30 tasks, 3 families, 3 random + 3 density-matched sets, ablate and amplify)"),
    Line("strong_floor", HEAD, EVIDENCE_STAGES, "strong",
         (("min_tasks", 30), ("min_families", 3), ("min_random_sets", 3), ("min_density_sets", 0)),
         f"{_SG} strong floor for heads: density matching is an SAE notion; patch and ablation both "
         f"({_LOCAL} G: consistent patch/ablation direction)",
         fixed=(("required_interventions", ("clean_to_corrupt", "zero")),)),
    Line("empirical_null", ALL_KINDS, EVIDENCE_STAGES, "strong", (("min_percentile", 0.95), ("min_null_sets", 30)),
         f"{_ML} DPT006-DPT008 (>= 30 null sets, percentile >= 0.95)", reads="null", needs=("null",)),
    Line("paired_test", ALL_KINDS, EVIDENCE_STAGES, "strong", (("alpha", 0.05), ("min_pairs", 10)),
         f"{_ML} DPT009-DPT012 (>= 10 pairs, p <= 0.05, positive direction)", needs=("paired", "control_units")),
    # Strong generalization is a property of a mechanism, not of one model: the same mechanism (kind, task, rule
    # for choosing units; kinds.Mechanism) must hold out in >= 2 models. One claim's rows cannot show it, so at
    # a held-out stage it is a debt capping at candidate ("across_claims"); mechanisms.py judges it over every
    # model's held-out verdict (gates.cross_model_replication) in the ledger's and the run's mechanisms tables.
    Line("cross_model_replication", ALL_KINDS, ("heldout", None), "strong", (("min_models", 2),),
         "issue 15 (a mechanism tested in another model family); local-mi-lab §2.6 H (held-out generalization)",
         reads="mechanism"),
)
# fmt: on


class PolicyError(ValueError):
    """A malformed or loosening policy tightening."""


def stricter(arg: str, a, b) -> bool:
    """Is ``a`` strictly stricter than ``b`` for threshold ``arg``? ``None`` is "no requirement"."""
    if a == b:
        return False
    if b is None:
        return a is not None
    if a is None:
        return False
    direction = threshold_direction(arg)
    if direction is None:
        return False
    return a > b if direction == "higher" else a < b


def threshold_direction(arg: str) -> str | None:
    """'higher' when a higher value is stricter, 'lower' when lower is, None when ``arg`` is not a threshold."""
    if arg.startswith("min"):
        return "higher"
    if arg.startswith(("max", "strong_max")) or arg == "alpha":
        return "lower"
    return None


@dataclass(frozen=True)
class Policy:
    lines: tuple[Line, ...] = LINES
    tightenings: tuple[str, ...] = field(default=())

    def lines_for(self, kind: str, stage: str | None, level: str) -> tuple[Line, ...]:
        """The lines a claim of ``kind`` at ``stage`` asserting ``level`` must pass (strong adds the strong lines)."""
        levels = ("candidate", "strong") if level == "strong" else ("candidate",)
        return tuple(l for l in self.lines if kind in l.kinds and stage in l.stages and l.level in levels)

    def strong_lines(self, kind: str, stage: str | None) -> tuple[Line, ...]:
        return tuple(l for l in self.lines if kind in l.kinds and stage in l.stages and l.level == "strong")

    def gate_names(self) -> set[str]:
        return {l.gate for l in self.lines}

    def tighten(self, text: str) -> "Policy":
        """Apply one ini line: ``gate.arg = value`` raises ``arg``'s floor on every line of ``gate``; a bare ``gate``
        adds it as a required candidate line for every kind and evidence stage."""
        text = text.strip()
        if not text or text.startswith("#"):
            return self
        name, sep, value_text = text.partition("=")
        gate, dot, arg = name.strip().partition(".")
        if not sep:
            if dot or not callable(getattr(gate_module, gate, None)):
                raise PolicyError(f"policy tightening {text!r}: expected 'gate.arg = value' or the name of a gate "
                                  "in pytest_mechclaim.gates to require")
            if gate in self.gate_names():
                return replace(self, tightenings=self.tightenings + (text,))
            added = Line(gate, ALL_KINDS, EVIDENCE_STAGES, "candidate", (), "project policy (ini)")
            return replace(self, lines=self.lines + (added,), tightenings=self.tightenings + (text,))
        arg = arg.strip()
        try:
            value = ast.literal_eval(value_text.strip())
        except (ValueError, SyntaxError):
            raise PolicyError(f"policy tightening {text!r}: the value must be a number or literal") from None
        matching = [l for l in self.lines if l.gate == gate]
        if not matching or not arg:
            raise PolicyError(f"policy tightening {text!r}: no policy line for gate {gate!r}; gates with lines: "
                              f"{', '.join(sorted(self.gate_names()))}")
        if threshold_direction(arg) is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(f"policy tightening {text!r}: {arg!r} is not a numeric threshold (min*, max*, alpha)")
        new_lines = []
        for l in self.lines:
            if l.gate != gate:
                new_lines.append(l)
                continue
            floors = dict(l.floors)
            floor = floors[arg] if arg in floors else _signature_default(l.function, arg)
            if floor is _NO_ARG:
                raise PolicyError(f"policy tightening {text!r}: gate {l.function} has no argument {arg!r}")
            if _looser(arg, value, floor):
                raise PolicyError(f"policy tightening {text!r} would loosen {gate}'s floor {arg}={floor!r} "
                                  f"({l.source or 'gate default'}); a project may only tighten the policy")
            floors[arg] = value
            new_lines.append(replace(l, floors=tuple(floors.items()), source=l.source + f"; tightened: {text}"))
        return replace(self, lines=tuple(new_lines), tightenings=self.tightenings + (text,))

    def describe(self, kind: str, stage: str | None, level: str, direction: str) -> dict:
        """The policy as applied to one claim stage (JSON-able; part of the verdict and of the spec hash)."""
        return {"kind": kind, "stage": stage, "level": level, "direction": direction,
                "tightenings": list(self.tightenings),
                "lines": [l.to_dict() for l in self.lines_for(kind, stage, level)]}

    def markdown(self) -> str:
        header = "| gate | kinds | stages | level | floors | needs | source |"
        out = ["# mechclaim evidence policy", "", header, "|---|---|---|---|---|---|---|"]
        for l in self.lines:
            stages = ", ".join("unstaged" if s is None else s for s in l.stages)
            floors = ", ".join(f"{k}={v!r}" for k, v in l.floors + l.fixed) or "gate defaults"
            out.append(f"| {l.gate} | {', '.join(l.kinds)} | {stages} | {l.level} | {floors} | "
                       f"{', '.join(l.needs) or '-'} | {l.source} |")
        out += ["", "A debt (missing gate, unmet need, waiver, author call looser than a floor) caps the verdict at "
                    "insufficient; a line judged across claims (reads=mechanism) caps one claim at candidate and is "
                    "judged over the mechanism's per-model verdicts. Tightenings: " + (", ".join(self.tightenings) or "none") + "."]
        return "\n".join(out)


def _looser(arg: str, value, floor) -> bool:
    """``value`` is looser than ``floor`` (a threshold with no requirement is looser than any floor)."""
    if floor is None:
        return False
    if value is None:
        return True
    return stricter(arg, floor, value)


_NO_ARG = object()


def _signature_default(fn_name: str, arg: str):
    """The gate function's default for ``arg`` (None when it has none), _NO_ARG when it takes no such argument.
    A missing function (another gate not written yet) accepts the floor; its line becomes a debt when run."""
    import inspect

    fn = getattr(gate_module, fn_name, None)
    if fn is None:
        return None
    params = inspect.signature(fn).parameters
    if arg not in params:
        return _NO_ARG
    default = params[arg].default
    return None if default is inspect.Parameter.empty else default


def policy_from_lines(lines) -> Policy:
    policy = Policy()
    for line in lines or ():
        policy = policy.tighten(line)
    return policy


DEFAULT_POLICY = Policy()


# -------------------------------------------------------------------------------------------------- claim kinds
def claim_kind(spec) -> str:
    """Explicit ``kind=``; else an SAE claim -> sae_features; units that are all heads ("L1H0") -> head; else other."""
    if getattr(spec, "kind", None):
        return spec.kind
    if spec.sae:
        return "sae_features"
    if spec.units and all(HEAD_UNIT.match(u) for u in spec.units):
        return "head"
    return "other"


def claim_direction(spec) -> tuple:
    """(direction, where it came from), in gates/direction.py's words. The default ``"carries"``: the unit carries
    the behaviour, so removing it from the clean run lowers target - foil and restoring it into the corrupt run
    raises it (engine sign conventions: target_delta = patched - the edited run's baseline)."""
    direction = getattr(spec, "direction", None)
    if isinstance(direction, tuple):
        return dict(direction), "declared"
    if direction:
        return direction, "declared"
    return "carries", f"default for kind {claim_kind(spec)}: removing the unit lowers target - foil"


def check_spec(spec, policy: Policy = DEFAULT_POLICY) -> str | None:
    """A problem with the claim's policy kwargs (a marker error), or None."""
    kind = claim_kind(spec)
    if kind == "head" and not spec.units:
        return f"claim {spec.id!r}: a head claim needs units=[...] naming its heads (e.g. 'L1H0')"
    if kind == "head" and not all(HEAD_UNIT.match(u) for u in spec.units):
        return f"claim {spec.id!r}: kind='head' but units {list(spec.units)} are not all heads like 'L1H0'"
    unknown = sorted(set(dict(getattr(spec, "waive", ()) or ())) - policy.gate_names())
    if unknown:
        return (f"claim {spec.id!r}: waive= names gates the policy does not require: {unknown}; policy gates: "
                f"{', '.join(sorted(policy.gate_names()))}")
    return None


def split_rows(spec, rows) -> tuple[list, list, list]:
    """(supporting target rows, control-unit rows of the same scope, context rows) for the claim's kind.

    A head claim is supported only by single-head rows of its own units, an SAE claim only by ``sae_features`` rows
    (of its own feature sets when ``units`` names them); rows at a position the claim does not assert are context.
    Control-unit rows count when they were patched the same way (same scope family)."""
    kind = claim_kind(spec)
    scopes = HEAD_SCOPES if kind == "head" else SAE_SCOPES if kind == "sae_features" else None
    positions = set(getattr(spec, "positions", ()) or ())
    target, controls, context = [], [], []
    for r in rows:
        same_scope = scopes is None or r.scope in scopes
        at_position = not positions or r.position in positions
        if r.unit_set == "target":
            own_unit = not spec.units or r.unit in spec.units
            (target if same_scope and own_unit and at_position else context).append(r)
        else:
            (controls if same_scope and at_position else context).append(r)
    return target, controls, context


# What a line needs from the rows; an unmet need is a debt ("the rows cannot show it"), the line is not run.
NEEDS = {
    "paired": ("no supporting row has a paired control delta (no matched control prompts)",
               lambda i: any(r.ok and r.paired for r in i["target"])),
    "families>=2": ("fewer than 2 positive families among the supporting rows",
                    lambda i: len({r.family for r in i["target"] if r.family_role == "positive"}) >= 2),
    "suites>=2": ("fewer than 2 control suites among the supporting rows",
                  lambda i: len({r.control_suite for r in i["target"] if r.control_suite}) >= 2),
    "seeds>=2": ("fewer than 2 seeds among the supporting rows (one seed re-measures, it cannot replicate)",
                 lambda i: len({r.seed for r in i["target"] if r.seed is not None}) >= 2),
    "interventions>=2": ("fewer than 2 interventions among the supporting rows",
                         lambda i: len({r.intervention for r in i["target"]}) >= 2),
    "control_units": ("no control unit set (random comparison units, control feature sets) was recorded",
                      lambda i: any(r.ok for r in i["controls"])),
    "telemetry": ("no supporting row carries norm telemetry",
                  lambda i: any(r.norm_drift is not None for r in i["target"])),
    "delta_ratio_telemetry": ("no supporting row carries a decoded-delta ratio",
                              lambda i: any(r.decoded_delta_ratio is not None for r in i["target"])),
    "patching_numbers": ("no supporting row carries clean/corrupt/patched numbers",
                         lambda i: any(None not in (r.clean, r.corrupt, r.patched) for r in i["target"])),
    "strata": ("no supporting row carries strata (target token, length bin, domain)",
               lambda i: any(getattr(r, "strata", ()) for r in i["target"])),
    "baseline_rows": ("no baseline rows were recorded (mechclaim.record_baseline)", lambda i: bool(i["baseline"])),
    "null": ("no empirical null was recorded (mechclaim.record_null)", lambda i: i["null"] is not None),
}


def main(argv=None) -> int:
    """``python -m pytest_mechclaim.policy``: the whole table; ``... KIND STAGE LEVEL`` (stage ``unstaged`` for none):
    the lines one claim stage must pass."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(DEFAULT_POLICY.markdown())
        return 0
    if len(args) != 3 or args[0] not in KINDS or args[2] not in ("insufficient", "candidate", "strong"):
        print(f"usage: python -m pytest_mechclaim.policy [KIND STAGE LEVEL]; kinds {list(KINDS)}", file=sys.stderr)
        return 2
    stage = None if args[1] == "unstaged" else args[1]
    for l in DEFAULT_POLICY.lines_for(args[0], stage, args[2]):
        floors = ", ".join(f"{k}={v!r}" for k, v in l.floors + l.fixed) or "gate defaults"
        print(f"{l.gate}: {floors}" + (f"; needs {', '.join(l.needs)}" if l.needs else "") + f"  [{l.source}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
