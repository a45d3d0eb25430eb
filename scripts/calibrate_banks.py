"""Full-size calibration of the task banks on SmolLM2 (the tests run small slices of the same code).

    python scripts/calibrate_banks.py [--cache-dir .mechclaim/cache] [--out .mechclaim/runs/calibration] [--threads 2]

Prints and writes (JSON + JSONL of every excluded task):
* the baseline calibration table of the negation bank (seed 0, 80 candidates per family; SELF-GROUND E003's
  preregistered rule: intended direction, |contrast| >= 0.1, >= 10 tasks kept per family);
* the metric calibration result of local-mi-lab's 72-example bank (seed 0) and whether it allows a search;
* for comparison, the same metric on the discovery induction bank's positives and controls (seeds 0-2), which put
  a newline between the copies.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pytest_mechclaim.banks import induction, negation
from pytest_mechclaim.banks.calibration import calibrate_baseline, calibrate_metric
from pytest_mechclaim.banks.schema import write_jsonl
from pytest_mechclaim.models import load_smollm2
from pytest_mechclaim.report import table

MIN_MARGIN = 0.1
MIN_PER_FAMILY = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".mechclaim/cache")
    parser.add_argument("--out", default=".mechclaim/runs/calibration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-family", type=int, default=80)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_smollm2(args.cache_dir)

    start = time.perf_counter()
    bank = negation.negation_bank(seed=0, per_family=args.per_family)
    base = calibrate_baseline(model, bank, negation.FAMILIES, min_pass_rate=0.5, min_margin=MIN_MARGIN,
                              min_per_family=MIN_PER_FAMILY)
    print(f"baseline calibration: {len(bank)} candidates, margin {MIN_MARGIN}, min {MIN_PER_FAMILY} per family "
          f"({time.perf_counter() - start:.0f} s)")
    print("\n".join(table(base.TABLE_HEADER, base.table())))
    print(f"gate: {base.gate.caps_at.label} - {base.gate.reason}\n")
    write_jsonl(out / "negation_excluded.jsonl", base.excluded())
    write_jsonl(out / "negation_baseline_rows.jsonl", base.rows)

    results = {"baseline": base.gate.to_dict()}
    for name, examples in (
        ("metric_calibration_bank", induction.metric_calibration_bank(seed=0, tokenizer=model)),
        ("discovery_bank", [ex for s in induction.DISCOVERY_SEEDS
                            for ex in induction.induction_bank("discovery", s, tokenizer=model)]),
    ):
        start = time.perf_counter()
        metric = calibrate_metric(model, examples)
        print(f"metric calibration on the {name}: {len(examples)} examples ({time.perf_counter() - start:.0f} s)")
        print("\n".join(table(metric.TABLE_HEADER, metric.table())))
        print(f"gate: {metric.gate.caps_at.label} - {metric.gate.reason}")
        print(f"search_allowed: {metric.search_allowed}; domain means {metric.gate.details.get('domain_means')}; "
              f"length means {metric.gate.details.get('length_means')}\n")
        results[name] = metric.gate.to_dict()
    (out / "calibration.json").write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
